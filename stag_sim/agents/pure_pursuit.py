"""Route follower: pure pursuit on the route observation for steering, a P speed loop for acceleration.

Works in StagDrive-v0's ``control`` action mode, from the observation alone (``route`` and ``ego``), so it runs
unchanged in any env that exposes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stag_sim.control import lookahead_point, pure_pursuit_steer
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
        goal = lookahead_point(pts, max(self.min_lookahead, self.lookahead_time * speed))
        steer = pure_pursuit_steer(goal, self.vehicle.wheelbase)
        accel = self.kp * (self.target_speed - speed)
        v = self.vehicle
        u_acc = accel / (v.max_accel if accel > 0 else v.max_decel)
        return np.clip(np.array([u_acc, steer / v.max_steer], np.float32), -1.0, 1.0)
