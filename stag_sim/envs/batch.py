"""The env's per-step arithmetic over N rows: actions to controls, reward and termination, the route points and the
``state`` vector's agent part. The single env calls it with N = 1, the batched vector env with all its rows: one
implementation of each rule (README, "Reward"; :mod:`stag_sim.envs.observations`).
"""

from __future__ import annotations

import numpy as np

from stag_sim.errors import ValidationError

TERMINATION_REASONS = ("collision", "offroad", "route_completed")


def controls(actions, vehicle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) accelerations [m/s^2], steering angles [rad] and clipped-component counts of ``control`` actions
    (N, 2) in [-1, 1] (:func:`stag_sim.control.control_inputs`: ``u_acc`` scales ``max_accel`` when positive and
    ``max_decel`` otherwise). Out-of-range components are clipped and counted; NaN or inf is an error."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValidationError(f"action: expected shape (N, 2), got {a.shape}")
    bad = ~np.isfinite(a).all(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"action: contains NaN or inf (env {i}: {a[i].tolist()})")
    from stag_sim.control import control_inputs

    u = np.clip(a, -1.0, 1.0)
    return (*control_inputs(u[:, 0], u[:, 1], vehicle), np.count_nonzero(u != a, axis=1))


def road_free(x, y, yaw, agent_xy, valid, free_distance: float) -> np.ndarray:
    """(N,) bool: no valid agent ahead in the ego's lane within ``free_distance`` [m] (+ 3 m of car) and 2 m to
    either side (an idling ego has no reason to wait). ``agent_xy`` (N, K, 2) [m], ``valid`` (N, K)."""
    dx, dy = agent_xy[..., 0] - np.asarray(x)[:, None], agent_xy[..., 1] - np.asarray(y)[:, None]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    ahead, side = dx * c + dy * s, -dx * s + dy * c
    return ~np.any(valid & (ahead > 0) & (ahead < free_distance + 3.0) & (np.abs(side) < 2.0), axis=1)


def outcome(rc, prev_route_s, route_s, usable, speed, free, collision, offroad, completed, n_clipped, step,
            max_steps) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray, np.ndarray]:
    """(reward (N,), reward terms {name: (N,)}, terminated (N,), truncated (N,), termination reason (N,) object)
    of a step that moved route progress from ``prev_route_s`` to ``route_s`` (N,) [m] on routes of ``usable``
    length (N,) [m]. The progress reward is paid on the usable length only, so an episode's sum stays at most
    ``rc.progress``; idling (``speed`` below ``rc.idle_speed`` with the road ``free``) costs ``rc.idle`` spread
    over ``max_steps`` (N,); collision / off-road penalties on the terminating step; truncated when ``step``
    reaches ``max_steps``."""
    collision, offroad, completed = (np.asarray(v, bool) for v in (collision, offroad, completed))
    terminated = collision | offroad | completed
    truncated = ~terminated & (np.asarray(step) >= max_steps)
    paid = np.minimum(np.maximum(route_s, 0.0), usable) - np.minimum(np.maximum(prev_route_s, 0.0), usable)
    idle = (np.asarray(speed) < rc.idle_speed) & ~terminated & free
    terms = {
        "progress": rc.progress * paid / usable,
        "idle": np.where(idle, -rc.idle / np.maximum(max_steps, 1), 0.0),
        "collision": -rc.collision * collision,
        "offroad": -rc.offroad * offroad,
        "clipped": -rc.clipped * np.asarray(n_clipped),
    }
    reward = terms["progress"] + terms["idle"] + terms["collision"] + terms["offroad"] + terms["clipped"]
    reason = np.full(len(terminated), None, object)  # the first that applies: collision, offroad, completed
    for name, flag in (("truncated", truncated), ("route_completed", completed), ("offroad", offroad),
                       ("collision", collision)):
        reason[flag] = name
    return reward, terms, terminated, truncated, reason


def to_ego_frame(xy, x, y, yaw) -> np.ndarray:
    """(N, Q, 2) world points ``xy`` [m] in the frames of egos at (x, y, yaw) (N,) (x ahead, y left)."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    dx, dy = xy[..., 0] - np.asarray(x)[:, None], xy[..., 1] - np.asarray(y)[:, None]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], -1)


def route_errors(route_xy, route_yaw, x, y, yaw) -> tuple[np.ndarray, np.ndarray]:
    """(N,) signed lateral offsets [m] (left positive) of egos at (x, y, yaw) from their route points ``route_xy``
    (N, 2), and heading errors [rad] against the route headings ``route_yaw`` (N,)."""
    dx, dy = np.asarray(x) - route_xy[:, 0], np.asarray(y) - route_xy[:, 1]
    lateral = -np.sin(route_yaw) * dx + np.cos(route_yaw) * dy
    return lateral, (np.asarray(yaw) - route_yaw + np.pi) % (2 * np.pi) - np.pi


def velocities(xy, valid, later_xy, later_valid, dt: float, simulated=None, speed=None, yaw=None) -> np.ndarray:
    """(N, K, 2) world-frame agent velocities [m/s]: from the logged positions ``dt`` [s] later (0 where either is
    invalid), or for ``simulated`` (N, K) agents along their heading ``yaw`` at their ``speed`` (N, K)."""
    vel = np.where((valid & later_valid)[..., None], (later_xy - xy) / dt, 0.0)
    if simulated is not None and simulated.any():
        sim = simulated & valid
        along = np.stack([np.cos(yaw), np.sin(yaw)], -1) * np.asarray(speed)[..., None]
        vel = np.where(sim[..., None], along, vel)
    return vel
