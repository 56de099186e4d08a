"""Uniformly random actions from the env's action space, drawn from a seeded ``numpy.random.Generator``."""

from __future__ import annotations

from typing import Any

import numpy as np


class RandomAgent:
    """Samples ``action_space`` uniformly (Box bounds) with its own Generator: same seed, same actions."""

    def __init__(self, action_space, seed: int | None = 0) -> None:
        self.low = np.asarray(action_space.low, np.float64)
        self.high = np.asarray(action_space.high, np.float64)
        self.dtype = action_space.dtype
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Restart the action sequence, so every episode with the same seed draws the same actions."""
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(self.dtype)
