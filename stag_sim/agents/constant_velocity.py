"""Constant velocity: keep the current speed and heading (zero acceleration, zero steering).

The simplest baseline of the motion-forecasting literature; it drives straight off the road at the first curve,
which is what it is for: a floor any planner must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ConstantVelocityAgent:
    """Zero acceleration and zero steering in ``control`` mode; in ``trajectory`` mode, waypoints straight ahead at
    the current speed (``waypoint_dt`` [s] apart)."""

    def __init__(self, action_mode: str = "control", num_waypoints: int = 8, waypoint_dt: float = 0.5) -> None:
        self.action_mode = action_mode
        self.num_waypoints = int(num_waypoints)
        self.waypoint_dt = float(waypoint_dt)

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Stateless: nothing to reset."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.action_mode == "control":
            return np.zeros(2, np.float32)
        speed = float(obs["ego"][0])
        x = speed * self.waypoint_dt * np.arange(1, self.num_waypoints + 1)
        return np.stack([x, np.zeros_like(x)], 1).astype(np.float32)
