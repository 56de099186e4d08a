"""Privileged observations for RL teachers: the ``state`` vector and the ``bev`` raster (CARLA-teacher style).

Both are computed from the :class:`~stag_sim.world.World` and the :class:`~stag_sim.world.SimState` alone (no
rendering), so a camera-free env steps at world speed.

``state`` (float32, every entry in [-1, 1]): the ego (speed / 20 m/s, accel / 5 m/s^2, yaw rate / 1 rad/s,
steer / max steer), the route ahead (``num_route_points`` points ``route_spacing`` apart, ego frame, / 50 m),
the ego's lateral offset from the route (/ 5 m) and heading error (/ pi), route completion and elapsed time
(fractions), then the ``num_agents`` nearest agents within 50 m, nearest first: position and velocity relative to
the ego in the ego frame (/ 50 m, / 20 m/s), relative heading (cos, sin), length / 10 m, width / 5 m, and a
present flag (0 for empty slots). Values beyond a scale are clipped.

``bev`` (uint8, (C, S, S), 0 or 255, channels :data:`BEV_CHANNELS`): an ego-centred top view, ego heading up,
``resolution_m`` metres per pixel, the ego ``ego_row_fraction`` of the way down: drivable area, lane centrelines,
the route, the other agents now, where they will be in ``motion_horizon_s`` at their current velocity, the ego, and
the traffic lights' stop lines at the state's time (:attr:`stag_sim.world.World.rules`, the episode's schedules),
each a line :data:`STOP_LINE_WIDTH` thick across its lane: ``light_stop`` those of red and yellow lights,
``light_go`` those of green ones (a light of unknown state is in neither; a world without a map or lights leaves
both empty). The static layers are rasterised once per world into a world-aligned image and warped per step.
"""

from __future__ import annotations

import numpy as np

from stag_sim.env_config import BevConfig

BEV_CHANNELS = ("drivable", "lanes", "route", "agents", "agents_future", "ego", "light_stop", "light_go")
STOP_LINE_WIDTH = 1.0  # [m] drawn width of a stop line in the bev (at least 2 px)
AGENT_FEATURES = 9
AGENT_RANGE = 50.0  # [m]
SPEED_SCALE, ACCEL_SCALE, YAW_RATE_SCALE, ROUTE_SCALE, LATERAL_SCALE = 20.0, 5.0, 1.0, 50.0, 5.0


def state_size(num_route_points: int, num_agents: int) -> int:
    """Length of the ``state`` vector."""
    return 4 + 2 * num_route_points + 2 + 2 + AGENT_FEATURES * num_agents


def agent_velocities(world, state, poses: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(K, 2) world-frame velocities [m/s] of the agents in ``state``: along their heading at their simulated speed
    for agents the world's source drives, else from the logged poses one step later
    (:func:`stag_sim.envs.batch.velocities`)."""
    from stag_sim.envs.batch import velocities

    dt = world.config.dt
    later, later_valid = world.logged_object_poses(state.time_s + dt)
    simulated = getattr(world.agents, "simulated", None)
    yaw = np.arctan2(poses[:, 1, 0], poses[:, 0, 0])
    return velocities(poses[None, :, :2, 3], valid[None], later[None, :, :2, 3], later_valid[None], dt,
                      None if simulated is None else simulated[None], state.agent_speed[None], yaw[None])[0]


def state_vector(world, state, poses: np.ndarray, valid: np.ndarray, velocities: np.ndarray, route_ahead: np.ndarray,
                 completion: float, time_fraction: float, num_agents: int) -> np.ndarray:
    """The ``state`` observation of one env (see the module docstring; :func:`state_vectors` with N = 1).
    ``route_ahead``: (P, 2) route points in the ego frame [m]; ``poses`` / ``valid`` / ``velocities``: the agents
    (K, 4, 4) / (K,) / (K, 2) [m/s] (:func:`agent_velocities`)."""
    e = state.ego
    lateral, heading = route_error(world, state)
    one = lambda v: np.array([v], np.float64)
    return state_vectors(np.array([[e.speed, e.accel, e.yaw_rate, e.steer]]), one(e.x), one(e.y), one(e.yaw),
                         np.asarray(route_ahead, np.float64)[None], one(lateral), one(heading), one(completion),
                         one(time_fraction), poses[None, :, :2, 3], np.arctan2(poses[:, 1, 0], poses[:, 0, 0])[None],
                         valid[None], velocities[None], np.asarray(world.sizes, float).reshape(1, -1, 3), num_agents,
                         world.config.vehicle.max_steer)[0]


def state_vectors(ego, x, y, yaw, route_ahead, lateral, heading, completion, time_fraction, agent_xy, agent_yaw,
                  valid, velocities, sizes, num_agents: int, max_steer: float) -> np.ndarray:
    """(N, D) float32 ``state`` observations (see the module docstring) of N egos: ``ego`` (N, 4) = (speed [m/s],
    accel [m/s^2], yaw rate [rad/s], steer [rad]), pose (x, y, yaw) (N,) [m, rad], ``route_ahead`` (N, P, 2) route
    points in the ego frame [m], ``lateral`` / ``heading`` (N,) route errors [m, rad], ``completion`` and
    ``time_fraction`` (N,); the agents: ``agent_xy`` (N, K, 2) [m], ``agent_yaw`` (N, K) [rad], ``valid`` (N, K),
    ``velocities`` (N, K, 2) [m/s], ``sizes`` (N, K, 3) [m]."""
    N = len(x)
    head = np.concatenate([ego / np.array([SPEED_SCALE, ACCEL_SCALE, YAW_RATE_SCALE, max_steer]),
                           np.asarray(route_ahead, np.float64).reshape(N, -1) / ROUTE_SCALE,
                           np.stack([lateral / LATERAL_SCALE, heading / np.pi, completion, time_fraction], 1)], 1)
    feats = np.zeros((N, num_agents, AGENT_FEATURES))
    if num_agents and valid.any():
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        dx, dy = agent_xy[..., 0] - x[:, None], agent_xy[..., 1] - y[:, None]
        dist = np.where(valid, np.hypot(dx, dy), np.inf)
        near = np.argsort(dist, axis=1, kind="stable")[:, :num_agents]
        n = min(num_agents, dist.shape[1])
        rows = np.arange(N)[:, None]
        take = lambda a: a[rows, near]
        keep = take(dist) <= AGENT_RANGE  # nearest first: the kept ones are a prefix of each row
        dx, dy, vx, vy = take(dx), take(dy), take(velocities[..., 0]), take(velocities[..., 1])
        vx, vy = vx - ego[:, :1] * c, vy - ego[:, :1] * s
        rel_yaw = take(agent_yaw) - yaw[:, None]
        f = np.stack([(c * dx + s * dy) / AGENT_RANGE, (-s * dx + c * dy) / AGENT_RANGE,
                      (c * vx + s * vy) / SPEED_SCALE, (-s * vx + c * vy) / SPEED_SCALE, np.cos(rel_yaw),
                      np.sin(rel_yaw), take(sizes[..., 0]) / 10.0, take(sizes[..., 1]) / 5.0, np.ones_like(dx)], -1)
        feats[:, :n] = np.where(keep[..., None], f, 0.0)
    return np.minimum(np.maximum(np.concatenate([head, feats.reshape(N, -1)], 1), -1.0), 1.0).astype(np.float32)


def route_error(world, state) -> tuple[float, float]:
    """The ego's signed lateral offset from the route [m] (left positive) and heading error [rad] there."""
    from stag_sim.envs.batch import route_errors

    e = state.ego
    xy, yaw = world.route.interpolate(np.array([state.route_s]))
    lateral, heading = route_errors(xy, np.atleast_1d(yaw), np.array([e.x]), np.array([e.y]), np.array([e.yaw]))
    return float(lateral[0]), float(heading[0])


class BevRasterizer:
    """Draws the ``bev`` observation of one world (static layers rasterised once, see the module docstring)."""

    def __init__(self, world, config: BevConfig) -> None:
        import cv2

        self.world, self.config = world, config.validate()
        res = config.resolution_m
        pts = [np.asarray(world.route.points)]
        m, area = world.log.map, world.drivable_area  # the map's drivable area, or the LiDAR ground's
        geoms = getattr(area, "geoms", [area]) if area is not None else []
        pts += [np.asarray(g.exterior.coords)[:, :2] for g in geoms]
        if m is not None:
            pts += [np.asarray(lane.coords)[:, :2] for lane in m.lanes]
        allp = np.concatenate(pts)
        margin = config.size_px * res
        self.origin = allp.min(0) - margin  # world xy of pixel (0, 0)'s corner [m]
        W, H = (np.ceil((allp.max(0) + margin - self.origin) / res).astype(int) + 1).tolist()
        self.static = np.zeros((3, H, W), np.uint8)

        def px(xy):
            return np.round((np.asarray(xy)[:, :2] - self.origin) / res).astype(np.int32)

        for g in geoms:
            cv2.fillPoly(self.static[0], [px(np.asarray(g.exterior.coords))], 255)
            for hole in g.interiors:
                cv2.fillPoly(self.static[0], [px(np.asarray(hole.coords))], 0)
        if m is not None:
            for lane in m.lanes:
                cv2.polylines(self.static[1], [px(np.asarray(lane.coords))], False, 255, 1)
        cv2.polylines(self.static[2], [px(world.route.points)], False, 255, max(1, int(round(1.0 / res))))

    def _affine(self, ego) -> np.ndarray:
        """(2, 3) map from world-raster pixels (p, q) to BEV pixels (u, v): with the ego-frame point (x_e, y_e),
        u = S / 2 - y_e / res (left is left), v = row - x_e / res (ahead is up)."""
        c, s = np.cos(ego.yaw), np.sin(ego.yaw)
        S, res = self.config.size_px, self.config.resolution_m
        row = self.config.ego_row_fraction * S
        Mw = np.array([[s, -c], [-c, -s]]) / res  # world xy -> BEV px
        b = np.array([S / 2 - (ego.x * s - ego.y * c) / res, row + (ego.x * c + ego.y * s) / res])
        return np.hstack([Mw * res, (b + Mw @ self.origin)[:, None]])  # world xy = origin + res * (p, q)

    def draw(self, state, poses: np.ndarray, valid: np.ndarray, velocities: np.ndarray) -> np.ndarray:
        import cv2

        S = self.config.size_px
        M = self._affine(state.ego)
        out = np.zeros((len(BEV_CHANNELS), S, S), np.uint8)
        for i in range(3):
            out[i] = cv2.warpAffine(self.static[i], M, (S, S), flags=cv2.INTER_NEAREST, borderValue=0)
        # boxes: world corners -> BEV pixels with the same map (world xy -> raster px -> BEV px)
        res = self.config.resolution_m
        Mw = M[:, :2] / res
        bw = M[:, 2] - Mw @ self.origin
        e = state.ego
        reach = 0.75 * S * res + 5.0
        ks = np.flatnonzero(valid)
        ks = ks[(np.abs(poses[ks, 0, 3] - e.x) <= reach) & (np.abs(poses[ks, 1, 3] - e.y) <= reach)]
        if len(ks):
            yaw = np.arctan2(poses[ks, 1, 0], poses[ks, 0, 0])
            xy = poses[ks, :2, 3]
            h = self.config.motion_horizon_s
            cv2.fillPoly(out[3], list(_boxes(xy, yaw, self.world.sizes[ks, :2], Mw, bw)), 255)
            cv2.fillPoly(out[4], list(_boxes(xy + velocities[ks] * h, yaw, self.world.sizes[ks, :2], Mw, bw)), 255)
        v = self.world.config.vehicle
        centre = np.array([[e.x + v.centre_offset * np.cos(e.yaw), e.y + v.centre_offset * np.sin(e.yaw)]])
        cv2.fillPoly(out[5], list(_boxes(centre, np.array([e.yaw]), np.array([[v.length, v.width]]), Mw, bw)), 255)
        self._draw_lights(out, state.time_s, np.array([e.x, e.y]), Mw, bw, reach)
        return out

    def _draw_lights(self, out, time_s: float, ego_xy: np.ndarray, Mw: np.ndarray, bw: np.ndarray, reach: float):
        """The stop lines (centres) within ``reach`` [m] of ``ego_xy`` into ``light_stop`` / ``light_go`` by their
        state at ``time_s`` [s]."""
        import cv2

        from stag_sim.road_rules import GREEN, RED, YELLOW

        rules = self.world.rules
        if rules is None or not rules.lights:
            return
        th = max(2, int(round(STOP_LINE_WIDTH / self.config.resolution_m)))
        channel = {RED: BEV_CHANNELS.index("light_stop"), YELLOW: BEV_CHANNELS.index("light_stop"),
                   GREEN: BEV_CHANNELS.index("light_go")}
        for light in rules.lights:
            line = np.asarray(light.stop_line, np.float64)
            if np.abs(line.mean(0) - ego_xy).max() > reach:
                continue
            ch = channel.get(int(light.code_at(time_s)))
            if ch is not None:
                a, b = np.round(line @ Mw.T + bw).astype(np.int32)
                cv2.line(out[ch], (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, th)


def _boxes(xy: np.ndarray, yaw: np.ndarray, size: np.ndarray, Mw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """(n, 4, 2) int32 BEV pixel corners of n boxes: centres ``xy`` (n, 2) [m], headings (n,) [rad], (length,
    width) (n, 2) [m], mapped by world xy -> ``Mw @ xy + bw``."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    hl, hw = size[:, :1] / 2, size[:, 1:2] / 2
    lx = np.concatenate([hl, -hl, -hl, hl], 1)  # (n, 4) corner offsets in the box frame
    ly = np.concatenate([hw, hw, -hw, -hw], 1)
    wx = xy[:, :1] + c * lx - s * ly
    wy = xy[:, 1:2] + s * lx + c * ly
    u = Mw[0, 0] * wx + Mw[0, 1] * wy + bw[0]
    v = Mw[1, 0] * wx + Mw[1, 1] * wy + bw[1]
    return np.round(np.stack([u, v], -1)).astype(np.int32)
