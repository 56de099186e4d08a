"""stag_sim.agents: ego policies, all following :class:`~stag_sim.agents.base.Agent` (``reset(obs, info)``,
``act(obs) -> action``). Installed as ``stag_sim.agents``.

Agents are found by name in a registry (``stag-sim eval --agent NAME``): the built-ins ``log_replay`` (the expert:
the log's own actions), ``pure_pursuit`` (route follower), ``rule_following`` (route follower that keeps lights,
speed limits, distance and right of way), ``constant_velocity`` and ``random``; any registered
with :func:`register_agent`; and those third-party packages declare as entry points of the ``stag_sim.agents``
group (``[project.entry-points."stag_sim.agents"] my_planner = "my_pkg.planner:Planner"``). Any other policy is
given as ``pkg.module:Class``, and a planner served over AlpaSim's egodriver gRPC contract as
``egodriver://HOST:PORT[?timeout=S]`` (:mod:`stag_sim.agents.egodriver`). :func:`make_agent` builds all of them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from stag_sim.agents.base import Agent
from stag_sim.errors import AgentError

#: Entry-point group third-party packages use to register agents by name (``name = "pkg.module:factory"``).
ENTRY_POINT_GROUP = "stag_sim.agents"

_REGISTRY: dict[str, Callable[..., Agent]] = {}


def register_agent(name: str, factory: Callable[..., Agent]) -> None:
    """Make ``factory(env, seed)`` available as agent ``name`` (``stag-sim eval --agent NAME``, :func:`make_agent`).
    A name registered twice is an :class:`AgentError`."""
    if name in _REGISTRY:
        raise AgentError(f"agent {name!r}: already registered")
    if ":" in name:
        raise AgentError(f"agent {name!r}: a registered name cannot contain ':' (that is the pkg.module:Class form)")
    _REGISTRY[name] = factory


def agent_names() -> tuple[str, ...]:
    """The registered agent names: built-ins first, then the entry points of installed packages."""
    _load_entry_points()
    return tuple(_REGISTRY)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = _lazy(ep)


def _lazy(ep):
    def factory(env, seed):
        try:
            target = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is named in one line
            raise AgentError(f"agent {ep.name!r}: entry point {ep.value!r} does not load: {type(e).__name__}: {e}") from None
        return _construct(ep.name, target, env, seed)
    return factory


def _log_replay(env, seed):
    from stag_sim.agents.log_replay import LogReplayAgent

    return LogReplayAgent(env)


def _pure_pursuit(env, seed):
    from stag_sim.agents.pure_pursuit import PurePursuitAgent

    base = env.unwrapped
    if base.config.action_mode != "control":
        raise AgentError("agent pure_pursuit: needs action_mode='control'")
    return PurePursuitAgent(vehicle=base.world.config.vehicle)


def _constant_velocity(env, seed):
    from stag_sim.agents.constant_velocity import ConstantVelocityAgent

    c = env.unwrapped.config
    return ConstantVelocityAgent(c.action_mode, c.num_waypoints, c.waypoint_dt)


def _rule_following(env, seed):
    from stag_sim.agents.rule_following import RuleFollowingAgent

    return RuleFollowingAgent(env)


def _random(env, seed):
    from stag_sim.agents.random_agent import RandomAgent

    return RandomAgent(env.action_space, seed=seed)


for _name, _factory in (("log_replay", _log_replay), ("pure_pursuit", _pure_pursuit),
                        ("rule_following", _rule_following), ("constant_velocity", _constant_velocity),
                        ("random", _random)):
    register_agent(_name, _factory)
#: The built-in agents' names.
BUILTIN_AGENTS = tuple(_REGISTRY)


def check_agent(spec: str) -> None:
    """One :class:`AgentError` line unless ``spec`` names a registered agent or an importable ``pkg.module:Class``
    (checked before an evaluation starts; the agent is not built). An ``egodriver://`` server is connected to once,
    within its timeout."""
    from stag_sim.agents.egodriver import check_driver, is_driver_spec

    if is_driver_spec(spec):
        check_driver(spec)
        return
    if ":" not in spec:
        if spec not in agent_names():
            raise AgentError(f"agent {spec!r}: not a registered agent ({', '.join(_REGISTRY)}) nor pkg.module:Class")
        return
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001
        raise AgentError(f"agent {spec!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}") from None
    if getattr(module, attr, None) is None:
        raise AgentError(f"agent {spec!r}: module {module_name!r} has no attribute {attr!r}")


def make_agent(spec: str, env, seed: int | None = 0) -> Agent:
    """Build the agent ``spec`` for ``env``: a registered name (built-ins, :func:`register_agent`, entry points of
    the ``stag_sim.agents`` group) or ``pkg.module:Class``.

    A ``pkg.module:Class`` (or an entry point naming a class) is constructed with the keyword arguments its
    signature names among ``env``, ``action_space``, ``observation_space`` and ``seed`` (and none otherwise).
    """
    from stag_sim.agents.egodriver import EgodriverAgent, is_driver_spec, parse_driver_spec

    if is_driver_spec(spec):
        target, timeout = parse_driver_spec(spec)
        return _check(spec, EgodriverAgent(env, target, timeout_s=timeout))
    if ":" not in spec:
        if spec not in _REGISTRY:
            _load_entry_points()
        factory = _REGISTRY.get(spec)
        if factory is None:
            raise AgentError(f"agent {spec!r}: not a registered agent ({', '.join(_REGISTRY)}) nor pkg.module:Class")
        return _check(spec, factory(env, seed))
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module's; name it in one line
        raise AgentError(f"agent {spec!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise AgentError(f"agent {spec!r}: module {module_name!r} has no attribute {attr!r}")
    return _construct(spec, cls, env, seed)


def _construct(spec: str, cls, env, seed) -> Agent:
    available = {"env": env, "action_space": env.action_space, "observation_space": env.observation_space, "seed": seed}
    try:
        params = inspect.signature(cls).parameters
        agent = cls(**{k: v for k, v in available.items() if k in params})
    except Exception as e:  # noqa: BLE001
        raise AgentError(f"agent {spec!r}: constructor failed: {type(e).__name__}: {e}") from None
    return _check(spec, agent)


def _check(spec: str, agent) -> Agent:
    if not (callable(getattr(agent, "act", None)) and callable(getattr(agent, "reset", None))):
        raise AgentError(f"agent {spec!r}: needs reset(obs, info) and act(obs) methods")
    return agent
