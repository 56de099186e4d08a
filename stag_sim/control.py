"""Trajectory tracking: pure pursuit for steering and a PI speed loop, at the simulation rate.

Used by the env's ``trajectory`` action mode (NAVSIM-style: N future poses in the ego frame); the pure-pursuit
route-following agent steers with the same :func:`lookahead_point` and :func:`pure_pursuit_steer`. Stateless apart from the speed integrator, which lives in
:class:`TrackerState` and is passed in and out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.dynamics import EgoState, VehicleParameters


@dataclass(frozen=True)
class TrackerParameters:
    """Gains of the tracker.

    Attributes:
        lookahead_time: pure-pursuit look-ahead as a time along the trajectory [s].
        min_lookahead: shortest look-ahead distance [m].
        kp: speed error gain [1/s]; ki: integral gain [1/s^2]; integral_limit: anti-windup bound [m/s].
    """

    lookahead_time: float = 0.8  # [s]
    min_lookahead: float = 2.5  # [m]
    kp: float = 1.5  # [1/s]
    ki: float = 0.2  # [1/s^2]
    integral_limit: float = 2.0  # [m/s]


@dataclass(frozen=True)
class TrackerState:
    speed_error_integral: float = 0.0  # [m s]


def track(ego: EgoState, waypoints_ego: np.ndarray, waypoint_dt: float, dt: float, vehicle: VehicleParameters,
          params: TrackerParameters = TrackerParameters(), state: TrackerState = TrackerState()):
    """(accel [m/s^2], steer [rad], new TrackerState) that follow ``waypoints_ego`` (N, 2+) [m], future
    positions in the current ego frame spaced ``waypoint_dt`` [s] apart (the first one ``waypoint_dt`` ahead)."""
    wp = np.asarray(waypoints_ego, dtype=np.float64)[:, :2]
    pts = np.vstack([[0.0, 0.0], wp])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    # target speed: how fast the plan moves over its first segment(s), blended over the first second
    n_first = max(1, min(len(seg), int(round(1.0 / waypoint_dt))))
    v_target = float(seg[:n_first].sum() / (n_first * waypoint_dt))
    err = v_target - ego.speed
    integral = float(np.clip(state.speed_error_integral + err * dt, -params.integral_limit, params.integral_limit))
    accel = params.kp * err + params.ki * integral
    if v_target < 0.2 and ego.speed < 0.5:  # hold still
        accel = -vehicle.max_decel
    # pure pursuit on the polyline: the point at arc length L ahead (continued straight past the plan's end)
    L = max(params.min_lookahead, params.lookahead_time * max(ego.speed, v_target))
    if np.cumsum(seg)[-1] < 1e-3:
        return float(accel), 0.0, TrackerState(integral)
    return float(accel), pure_pursuit_steer(lookahead_point(pts, L, extend=True), vehicle.wheelbase), TrackerState(integral)


def control_inputs(u_acc, u_steer, vehicle: VehicleParameters):
    """(accel [m/s^2], steer [rad]) of a ``control`` action (u_acc, u_steer) in [-1, 1]: ``u_acc`` scales the
    vehicle's ``max_accel`` when positive and ``max_decel`` otherwise, ``u_steer`` its ``max_steer``. Floats for
    floats, (N,) arrays for (N,) arrays."""
    u_acc, u_steer = np.asarray(u_acc, np.float64), np.asarray(u_steer, np.float64)
    accel = u_acc * np.where(u_acc > 0, vehicle.max_accel, vehicle.max_decel)
    steer = u_steer * vehicle.max_steer
    return (float(accel), float(steer)) if accel.ndim == 0 else (accel, steer)


def lookahead_point(pts: np.ndarray, distance: float, extend: bool = False) -> np.ndarray:
    """The point (2,) [m] at arc length ``distance`` [m] along the polyline ``pts`` (N >= 2, 2) [m], which starts
    at the vehicle (the origin of its frame). Past the end: the end point, or with ``extend`` the last segment
    continued straight."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if extend and distance > cum[-1]:
        d = pts[-1] - pts[-2] if seg[-1] > 1e-6 else np.array([1.0, 0.0])
        return pts[-1] + d / max(np.linalg.norm(d), 1e-9) * (distance - cum[-1])
    L = min(distance, cum[-1])
    i = int(np.clip(np.searchsorted(cum, L) - 1, 0, len(pts) - 2))
    w = (L - cum[i]) / max(cum[i + 1] - cum[i], 1e-9)
    return pts[i] + w * (pts[i + 1] - pts[i])


def pure_pursuit_steer(goal: np.ndarray, wheelbase: float) -> float:
    """Rear-axle pure pursuit: the steering angle [rad] whose arc (curvature 2 y / d^2) passes through ``goal``
    (2,) [m] in the vehicle frame (x forward, y left); ``wheelbase`` [m]."""
    d2 = float(goal @ goal)
    curvature = 2.0 * goal[1] / d2 if d2 > 1e-9 else 0.0
    return float(np.arctan(curvature * wheelbase))
