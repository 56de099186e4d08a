"""The expert: the logged ego's own actions (inverse bicycle), as a policy.

Each step it asks the env for the action that carries the *current* simulated ego onto the logged pose one step
ahead (closed loop, so small deviations are corrected instead of accumulating). The same action is in every step's
``info["expert_action"]`` for imitation learning and offline RL.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LogReplayAgent:
    """Expert policy for a StagDrive-v0 env (``env`` may be wrapped); works in both action modes."""

    def __init__(self, env) -> None:
        self.env = env.unwrapped

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Stateless: the env holds the state the expert reads."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.env.expert_action()
