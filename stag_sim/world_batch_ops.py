"""Array operations of the batched world (:mod:`stag_sim.world_batch`): the bicycle, logged and simulated agents,
IDM leaders, route projection, box collisions and off-road, each over N rows of a
:class:`~stag_sim.world_batch.WorldBatch` (its ``arrays``). Shapes: N rows, K agents, S simulated agents, M route
segments; distances [m], angles [rad].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stag_sim.geometry import quat_slerp, quat_to_matrix

if TYPE_CHECKING:
    from stag_sim.world_batch import BatchState, WorldBatch

#: find_leaders' lateral tolerance and horizon [m] (:func:`stag_sim.traffic.find_leaders` defaults)
LEADER_LATERAL, LEADER_HORIZON = 1.8, 100.0
STOP_LINE_SLACK = 0.5  # [m] an agent this far past a stop line when its light turns red still stops; farther, it goes on


def bicycle(state: "BatchState", accel, steer, dt: float, v) -> dict:
    """:func:`stag_sim.dynamics.bicycle_step` of every row: the next (x, y, yaw, speed, accel, steer, yaw_rate)."""
    a = np.clip(np.asarray(accel, float), -v.max_decel, v.max_accel)
    delta = np.clip(np.asarray(steer, float), -v.max_steer, v.max_steer)
    v0 = state.speed
    v1 = v0 + a * dt
    stop = v1 < 0.0
    cap = ~stop & (v1 > v.max_speed)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_stop = np.where(a < 0, v0 * v0 / (2.0 * -a), 0.0)
    v1 = np.where(stop, 0.0, np.where(cap, v.max_speed, v1))
    s = np.where(stop, s_stop, (v0 + v1) / 2.0 * dt)
    curvature = np.tan(delta) / v.wheelbase
    dyaw = s * curvature
    arc = np.abs(dyaw) > 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(arc, 1.0 / np.where(arc, curvature, 1.0), 0.0)
    yaw0 = state.yaw
    x = np.where(arc, state.x + r * (np.sin(yaw0 + dyaw) - np.sin(yaw0)), state.x + s * np.cos(yaw0))
    y = np.where(arc, state.y - r * (np.cos(yaw0 + dyaw) - np.cos(yaw0)), state.y + s * np.sin(yaw0))
    return {"x": x, "y": y, "yaw": (yaw0 + dyaw + np.pi) % (2 * np.pi) - np.pi, "speed": v1, "accel": (v1 - v0) / dt,
            "steer": delta, "yaw_rate": dyaw / dt}


def logged_agents(wb: "WorldBatch", time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logged agent positions (N, K, 2) [m], headings (N, K) [rad] and validity (N, K) at ``time_s`` (N,) [s]
    (:meth:`stag_sim.world.World.logged_object_poses` of every row)."""
    A = wb.arrays
    L = A["log_row"]
    t_us = A["t0_us"] + np.asarray(time_s) * 1e6
    T = A["log_T"][L]
    i = np.clip((A["log_ts"][L] <= t_us[:, None]).sum(1) - 1, 0, T - 1)
    j = np.minimum(i + 1, T - 1)
    ts_i, ts_j = A["log_ts"][L, i], A["log_ts"][L, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(j == i, 0.0, np.clip((t_us - ts_i) / (ts_j - ts_i), 0.0, 1.0))
    Vi, Vj = A["log_valid"][L, i], A["log_valid"][L, j]
    both = Vi & Vj & (w > 0)[:, None]
    xy_i, xy_j = A["log_xy"][L, i], A["log_xy"][L, j]
    xy = np.where(both[..., None], (1.0 - w)[:, None, None] * xy_i + w[:, None, None] * xy_j, xy_i)
    yaw = A["log_yaw"][L, i]
    if both.any():
        q = quat_slerp(A["log_quat"][L, i], A["log_quat"][L, j], np.broadcast_to(w[:, None], both.shape))
        R = quat_to_matrix(q)
        yaw = np.where(both, np.arctan2(R[..., 1, 0], R[..., 0, 0]), yaw)
    valid = np.where((w < 0.5)[:, None], Vi, Vj) | (Vi & Vj)
    return xy, yaw, valid


def _path_at(A: dict, s: np.ndarray, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (..., Q, 2), headings (..., Q) and segment indices on the rows' paths at arc lengths ``s`` (..., Q):
    ``route_`` (N, Q) queries, or ``path_`` (N, S, Q) on the simulated agents' paths; extrapolated at the ends
    (:meth:`~stag_sim.traffic.PolylinePath.interpolate`)."""
    arc, nseg = A[prefix + "s"], A[prefix + "nseg"]
    i = np.clip((arc[..., None, :] <= s[..., None]).sum(-1) - 1, 0, nseg[..., None] - 1)
    s0 = np.take_along_axis(arc, i, -1)
    heading = np.take_along_axis(A[prefix + "heading"], i, -1)
    pts = np.take_along_axis(A[prefix + "pts"], i[..., None], -2)
    d = np.take_along_axis(A[prefix + "dir"], i[..., None], -2)
    with np.errstate(invalid="ignore"):  # padding (no path) holds inf arc lengths
        return pts + d * (s - s0)[..., None], heading, i


def path_points(A: dict, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, S, 2) [m] and headings (N, S) [rad] of the simulated agents at arc lengths ``s`` (N, S) [m]
    along their paths (``A``: a batch's arrays)."""
    xy, heading, _ = _path_at(A, s[..., None], "path_")
    return xy[..., 0, :], heading[..., 0]


def route_points(wb: "WorldBatch", s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Route points (N, Q, 2) [m] and headings (N, Q) [rad] at arc lengths ``s`` (N, Q) [m]."""
    xy, heading, _ = _path_at(wb.arrays, s, "route_")
    return xy, heading


def _project(pts, dirs, seg, arc, xy, mask):
    """Arc length and signed lateral offset of points ``xy`` (..., 2) on padded paths (..., M, ...), segments
    outside ``mask`` (..., M) ignored (:meth:`PolylinePath.project`)."""
    rx = xy[..., None, 0] - pts[..., 0]
    ry = xy[..., None, 1] - pts[..., 1]
    t = np.clip(rx * dirs[..., 0] + ry * dirs[..., 1], 0.0, seg)
    fx, fy = xy[..., None, 0] - (pts[..., 0] + dirs[..., 0] * t), xy[..., None, 1] - (pts[..., 1] + dirs[..., 1] * t)
    d2 = np.where(mask, fx * fx + fy * fy, np.inf)
    j = np.argmin(d2, axis=-1)[..., None]
    g = lambda a: np.take_along_axis(a, j, axis=-1)[..., 0]
    cross = g(dirs[..., 0]) * g(ry) - g(dirs[..., 1]) * g(rx)
    return g(arc) + g(t), cross


def agents(wb: "WorldBatch", time_s: np.ndarray, agent_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Agent positions (N, K, 2) [m], headings (N, K) [rad] and validity (N, K) at ``time_s`` (N,) [s] with the
    simulated agents at ``agent_s`` (N, K) [m] along their paths (:meth:`ScriptedAgents.poses` of every row)."""
    A = wb.arrays
    xy, yaw, valid = logged_agents(wb, time_s)
    if A["sim_mask"].any():
        rows, cols = np.nonzero(A["sim_mask"])
        k = A["sim_idx"][rows, cols]
        pxy, ph = path_points(A, np.take_along_axis(agent_s, A["sim_idx"], 1))
        xy[rows, k], yaw[rows, k], valid[rows, k] = pxy[rows, cols], ph[rows, cols], True
    return xy, yaw, valid & ~A["removed"]


def ego_centres(wb: "WorldBatch", x, y, yaw) -> np.ndarray:
    """(N, 2) ego box centres [m] (the rear axle moved ``centre_offset`` ahead)."""
    co = wb.config.vehicle.centre_offset
    return np.stack([x + co * np.cos(yaw), y + co * np.sin(yaw)], -1)


def _leaders(wb: "WorldBatch", state: "BatchState") -> tuple[np.ndarray, np.ndarray]:
    """(N, S) gap [m] and speed [m/s] of each simulated agent's leader in ``state`` (:func:`leaders` with the
    other agents and the ego as obstacles)."""
    A, v = wb.arrays, wb.config.vehicle
    N = len(state.x)
    obs_xy = np.concatenate([state.agent_xy, ego_centres(wb, state.x, state.y, state.yaw)[:, None]], 1)
    obs_len = np.concatenate([A["sizes"][..., 0], np.full((N, 1), v.length)], 1)
    obs_speed = np.concatenate([np.where(A["simulated"], state.agent_speed, 0.0), state.speed[:, None]], 1)
    obs_yaw = np.concatenate([state.agent_yaw, state.yaw[:, None]], 1)
    obs_ok = np.concatenate([state.agent_valid, np.ones((N, 1), bool)], 1)
    return leaders(A, np.take_along_axis(state.agent_s, A["sim_idx"], 1), obs_xy, obs_len, obs_speed, obs_yaw, obs_ok)


def leaders(A: dict, s0, obs_xy, obs_len, obs_speed, obs_yaw, obs_ok) -> tuple[np.ndarray, np.ndarray]:
    """(N, S) bumper-to-bumper gap [m] and speed along the path [m/s] of the nearest obstacle ahead of each
    simulated agent on its own path (:func:`stag_sim.traffic.find_leaders`, for all agents of all rows at once;
    ``(inf, 0)`` on a free road). ``A``: a batch's arrays (``path_*``, ``sim_idx``, ``sim_mask``, ``sizes``);
    ``s0`` (N, S) the agents' arc lengths [m]; obstacles (N, O): the K agents then the ego, centres ``obs_xy``
    (N, O, 2) [m], lengths [m], speeds [m/s], headings [rad], ``obs_ok`` present. An agent is never its own
    obstacle. Compiled loops (:mod:`stag_sim.traffic_kernel`): they skip far obstacles before projecting them."""
    from stag_sim.traffic_kernel import leaders_kernel

    idx = A["sim_idx"]
    f64 = lambda x: np.ascontiguousarray(x, np.float64)
    gap, lead = np.empty(idx.shape), np.empty(idx.shape)
    leaders_kernel(np.ascontiguousarray(A["sim_mask"]), np.ascontiguousarray(idx, np.int64), f64(s0),
                   f64(np.take_along_axis(A["sizes"][..., 0], idx, 1)), f64(A["path_pts"]), f64(A["path_dir"]),
                   f64(A["path_seg"]), f64(A["path_s"]), f64(A["path_heading"]),
                   np.ascontiguousarray(A["path_nseg"], np.int64), f64(obs_xy), f64(obs_len), f64(obs_speed),
                   f64(obs_yaw), np.ascontiguousarray(obs_ok, np.bool_), LEADER_LATERAL, LEADER_HORIZON, gap, lead)
    return gap, lead


def light_codes(A: dict, time_s) -> np.ndarray:
    """(N, L) state codes (:mod:`stag_sim.road_rules`) of every row's traffic lights at ``time_s`` (N,) [s]
    (:meth:`~stag_sim.road_rules.TrafficLight.code_at` of all of them)."""
    period = A["light_period"]
    t = np.asarray(time_s, np.float64)[:, None]
    t = np.where(period > 0, np.mod(t, np.where(period > 0, period, 1.0)), t)
    i = np.sum(A["light_change"] <= t[..., None], axis=-1) - 1
    i = np.where(i < 0, np.where(period > 0, A["light_n"] - 1, 0), i)
    return np.take_along_axis(A["light_code"], i[..., None], axis=-1)[..., 0]


def stop_at_lights(A: dict, s0, time_s, speed, decel_comfort: float, gap, lead) -> tuple[np.ndarray, np.ndarray]:
    """Each simulated agent's leader (``gap`` [m] / ``lead`` speed [m/s], (N, S), from :func:`leaders`) with the
    first stop line ahead on its path whose light tells it to stop as a standing leader where it is nearer: red, or
    yellow where it can still stop at ``decel_comfort`` [m/s^2] (:func:`stag_sim.road_rules.must_stop`). An agent
    whose front is past a stop line (by more than :data:`STOP_LINE_SLACK`) goes on. ``s0`` (N, S) [m], ``time_s``
    (N,) [s], ``speed`` (N, S) [m/s]."""
    at_light = _light_gaps(A, s0, time_s, speed, decel_comfort)
    return np.minimum(gap, at_light), np.where(at_light < gap, 0.0, lead)


def _light_gaps(A: dict, s0, time_s, speed, decel_comfort: float) -> np.ndarray:
    """(N, S) gap [m] from each simulated agent's front to the stop line it must stop at (+inf where none)."""
    from stag_sim.road_rules import must_stop

    stop_s = A["stop_s"]
    if not np.isfinite(stop_s).any():
        return np.full(np.shape(s0), np.inf)
    front = np.asarray(s0) + np.take_along_axis(A["sizes"][..., 0], A["sim_idx"], 1) / 2.0
    gap = stop_s - front[..., None]
    code = light_codes(A, time_s)
    N = code.shape[0]
    c = np.take_along_axis(code, A["stop_light"].reshape(N, -1), 1).reshape(stop_s.shape)
    stop = must_stop(c, gap, np.asarray(speed, np.float64)[..., None], decel_comfort)
    return np.where(stop & (gap >= -STOP_LINE_SLACK), np.maximum(gap, 0.0), np.inf).min(axis=-1)


def advance_agents(wb: "WorldBatch", state: "BatchState") -> tuple[np.ndarray, np.ndarray]:
    """(N, K) ``agent_s`` and ``agent_speed`` one step after ``state`` (:meth:`ScriptedAgents.advance`: IDM, or a
    scripted hard brake)."""
    A, cfg = wb.arrays, wb.config
    if not A["sim_mask"].any():
        return state.agent_s.copy(), state.agent_speed.copy()
    from stag_sim.traffic import idm_acceleration

    dt, idx, mask = cfg.dt, A["sim_idx"], A["sim_mask"]
    s0, v0 = np.take_along_axis(state.agent_s, idx, 1), np.take_along_axis(state.agent_speed, idx, 1)
    gap, lead = _leaders(wb, state)
    gap, lead = stop_at_lights(A, s0, state.time_s, v0, cfg.idm.decel_comfort, gap, lead)
    a = idm_acceleration(v0, gap, lead, cfg.idm)
    v1 = v0 + a * dt
    with np.errstate(divide="ignore", invalid="ignore"):
        ds = np.where(a < 0, v0 * v0 / (2.0 * -a), 0.0)
    s1 = np.where(v1 < 0.0, s0 + ds, s0 + (v0 + v1) / 2.0 * dt)
    v1 = np.maximum(v1, 0.0)
    braking = (state.time_s - A["start_time_s"])[:, None] + 1e-9 >= A["brake_at"]
    vb = np.maximum(v0 - A["brake_decel"] * dt, 0.0)
    s1, v1 = np.where(braking, s0 + (v0 + vb) / 2.0 * dt, s1), np.where(braking, vb, v1)
    agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
    rows = np.nonzero(mask)[0]
    agent_s[rows, idx[mask]], agent_speed[rows, idx[mask]] = s1[mask], v1[mask]
    return agent_s, agent_speed


def advance_route(wb: "WorldBatch", route_s: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) route progress [m] after moving to (x, y) (:func:`stag_sim.world.advance_route` of every row)."""
    A, cfg = wb.arrays, wb.config
    s_new, _ = _project(A["route_pts"][:, :-1], A["route_dir"], A["route_seg"], A["route_s"][:, :-1],
                        np.stack([x, y], -1), np.arange(A["route_seg"].shape[1]) < A["route_nseg"][:, None])
    near = np.abs(s_new - route_s) < 5.0 + cfg.vehicle.max_speed * cfg.dt
    return np.where(near, np.maximum(route_s, s_new), route_s)


def box_corners(cx, cy, yaw, length, width) -> np.ndarray:
    """(..., 5, 2) closed footprints [m] (the corners of :func:`stag_sim.world._box_polygon`, first repeated)."""
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    lx = np.array([1.0, -1.0, -1.0, 1.0, 1.0]) * (np.asarray(length)[..., None] / 2.0)
    ly = np.array([1.0, 1.0, -1.0, -1.0, 1.0]) * (np.asarray(width)[..., None] / 2.0)
    return np.stack([cx[..., None] + c * lx - s * ly, cy[..., None] + s * lx + c * ly], -1)


def collisions(wb: "WorldBatch", centre: np.ndarray, yaw: np.ndarray, agent_xy, agent_yaw, valid) -> np.ndarray:
    """(N, K) bool: the ego footprint (centre (N, 2) [m], heading (N,)) overlaps agent k's (touching counts;
    separating axes, as shapely's ``intersects`` of the two rectangles)."""
    v, sizes = wb.config.vehicle, wb.arrays["sizes"]
    u1 = np.stack([np.cos(yaw), np.sin(yaw)], -1)[:, None]
    w1 = np.stack([-np.sin(yaw), np.cos(yaw)], -1)[:, None]
    u2 = np.stack([np.cos(agent_yaw), np.sin(agent_yaw)], -1)
    w2 = np.stack([-np.sin(agent_yaw), np.cos(agent_yaw)], -1)
    d = agent_xy - centre[:, None]
    h2l, h2w = sizes[..., 0] / 2.0, sizes[..., 1] / 2.0
    dot = lambda a, b: a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]
    sep = np.zeros(valid.shape, bool)
    for ax in (u1, w1, u2, w2):
        r1 = v.length / 2.0 * np.abs(dot(ax, u1)) + v.width / 2.0 * np.abs(dot(ax, w1))
        r2 = h2l * np.abs(dot(ax, u2)) + h2w * np.abs(dot(ax, w2))
        sep |= np.abs(dot(d, ax)) > r1 + r2
    return valid & ~sep


def offroad(wb: "WorldBatch", centre: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(N,) bool: the ego footprint is not inside its row's drivable area (grown by the tolerance); False where the
    world has none. One vectorised shapely ``contains`` over every row's (prepared) area and footprint."""
    import shapely

    v = wb.config.vehicle
    out = np.zeros(len(yaw), bool)
    rows = np.array([i for i, d in enumerate(wb.arrays["drivable"]) if d is not None], int)
    if len(rows):
        areas = np.array([getattr(d, "context", d) for d in wb.arrays["drivable"] if d is not None], dtype=object)
        shapely.prepare(areas)  # a no-op for an area prepared before
        polys = shapely.polygons(box_corners(centre[rows, 0], centre[rows, 1], yaw[rows], v.length, v.width))
        out[rows] = ~shapely.contains(areas, polys)
    return out
