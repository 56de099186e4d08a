"""Route follower: pure pursuit on the route observation for steering, a P speed loop for acceleration.

Works in StagDrive-v0's ``control`` action mode, from the observation alone (``route`` and ``ego``), so it runs
unchanged in any env that exposes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stag_sim.dynamics import VehicleParameters


class PurePursuitAgent:
    """Follow the route at ``target_speed`` [m/s] with a look-ahead of ``lookahead_time`` [s] (at least
    ``min_lookahead`` [m]); ``kp`` [1/s] is the speed gain."""

    def __init__(self, target_speed: float = 8.0, lookahead_time: float = 1.0, min_lookahead: float = 4.0,
                 kp: float = 0.8, vehicle: VehicleParameters | None = None) -> None:
        self.target_speed = float(target_speed)
        self.lookahead_time = float(lookahead_time)
        self.min_lookahead = float(min_lookahead)
        self.kp = float(kp)
        self.vehicle = vehicle or VehicleParameters()

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Stateless: nothing to reset."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        speed = float(obs["ego"][0])
        route = np.asarray(obs["route"], dtype=np.float64).reshape(-1, 2)
        pts = np.vstack([[0.0, 0.0], route])
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        L = min(max(self.min_lookahead, self.lookahead_time * speed), cum[-1])
        i = int(np.clip(np.searchsorted(cum, L) - 1, 0, len(pts) - 2))
        w = (L - cum[i]) / max(cum[i + 1] - cum[i], 1e-9)
        goal = pts[i] + w * (pts[i + 1] - pts[i])
        d2 = float(goal @ goal)
        steer = np.arctan(2.0 * goal[1] / d2 * self.vehicle.wheelbase) if d2 > 1e-9 else 0.0
        accel = self.kp * (self.target_speed - speed)
        v = self.vehicle
        u_acc = accel / (v.max_accel if accel > 0 else v.max_decel)
        return np.clip(np.array([u_acc, steer / v.max_steer], np.float32), -1.0, 1.0)
