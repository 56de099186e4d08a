"""stag_sim.agents: ego policies, all following :class:`~stag_sim.agents.base.Agent` (``reset(obs, info)``,
``act(obs) -> action``). Installed as ``stag_sim.agents``.

Built-ins, by short name (``stag-sim eval --agent NAME``): ``log_replay`` (the expert: the log's own actions),
``pure_pursuit`` (route follower), ``constant_velocity`` and ``random``. Any other policy is given as
``pkg.module:Class`` and built by :func:`make_agent`.
"""

from __future__ import annotations

import importlib
import inspect

from stag_sim.agents.base import Agent
from stag_sim.errors import AgentError

BUILTIN_AGENTS = ("log_replay", "pure_pursuit", "constant_velocity", "random")


def make_agent(spec: str, env, seed: int | None = 0) -> Agent:
    """Build the agent ``spec`` (a built-in short name or ``pkg.module:Class``) for ``env``.

    A ``pkg.module:Class`` is constructed with the keyword arguments its signature names among ``env``,
    ``action_space``, ``observation_space`` and ``seed`` (and none otherwise).
    """
    base = env.unwrapped
    if spec == "log_replay":
        from stag_sim.agents.log_replay import LogReplayAgent

        return LogReplayAgent(env)
    if spec == "pure_pursuit":
        from stag_sim.agents.pure_pursuit import PurePursuitAgent

        if base.config.action_mode != "control":
            raise AgentError("agent pure_pursuit: needs action_mode='control'")
        return PurePursuitAgent(vehicle=base.world.config.vehicle)
    if spec == "constant_velocity":
        from stag_sim.agents.constant_velocity import ConstantVelocityAgent

        return ConstantVelocityAgent(base.config.action_mode, base.config.num_waypoints, base.config.waypoint_dt)
    if spec == "random":
        from stag_sim.agents.random_agent import RandomAgent

        return RandomAgent(env.action_space, seed=seed)
    if ":" not in spec:
        raise AgentError(f"agent {spec!r}: not a built-in ({', '.join(BUILTIN_AGENTS)}) nor pkg.module:Class")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module's; name it in one line
        raise AgentError(f"agent {spec!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise AgentError(f"agent {spec!r}: module {module_name!r} has no attribute {attr!r}")
    available = {"env": env, "action_space": env.action_space, "observation_space": env.observation_space, "seed": seed}
    try:
        params = inspect.signature(cls).parameters
        agent = cls(**{k: v for k, v in available.items() if k in params})
    except Exception as e:  # noqa: BLE001
        raise AgentError(f"agent {spec!r}: constructor failed: {type(e).__name__}: {e}") from None
    if not (callable(getattr(agent, "act", None)) and callable(getattr(agent, "reset", None))):
        raise AgentError(f"agent {spec!r}: needs reset(obs, info) and act(obs) methods")
    return agent
