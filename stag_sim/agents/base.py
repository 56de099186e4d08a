"""The agent protocol every ego policy follows."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """An ego policy: ``reset`` at the start of an episode, then ``act`` once per step."""

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        ...

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        ...
