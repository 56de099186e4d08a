"""Scenario files: what one closed-loop test is, written down in YAML and validated with clear errors.

A scenario names a scene (the synthetic town by seed, or a scene cache path), a start time and duration, the ego's
start (the logged pose plus an offset and a speed), the route (the logged ego path or a list of map lanes), how the
other agents move (log replay or IDM) plus scripted events (insert a vehicle, remove one, a hard brake, a cut-in;
an insert may drive map ``lanes`` or come at a ``yaw_deg`` to the route), schedules for the scene's traffic
``lights`` (``- {light: "jE:ring-ccw-s", states: [red, green], at_s: [0, 9]}``, times after the start), lane
``speed_limits`` (``- {lane: ring-ccw-n, limit_mps: 5.56}``), success criteria and the metrics to compute. The shipped ones live in ``scenarios/`` (installed as
``stag_sim.scenarios``)::

    name: lead_hard_brake
    description: A lead car 25 m ahead in the ego lane brakes at 6 m/s^2 after 3 s.
    scene: {synthetic: {seed: 0}}
    start_time_s: 0.0
    duration_s: 12.0
    ego: {speed: 8.0}
    agents: log_replay
    events:
      - {type: insert, name: lead, ahead_m: 25.0, speed: 8.0, behavior: constant}
      - {type: hard_brake, agent: lead, at_s: 3.0, decel: 6.0}
    success: {min_route_completion: 0.3}

Every error names the file, the line and the field: ``lead.yaml:7: events[1].decel: expected a number, got 'fast'``.
Unknown keys are errors (a typo never silently does nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from stag_sim.agent_sources import AGENT_MODES, BEHAVIORS, EVENT_TYPES, AgentEvent
from stag_sim.config import field_kinds, from_mapping
from stag_sim.env_config import EnvConfig
from stag_sim.errors import ScenarioError, StagSimError
from stag_sim.road_rules import LaneLimit, LightOverride
from stag_sim.world import logged_mean_speed

#: Where the shipped scenarios are (``scenarios/`` of the repository, installed as ``stag_sim.scenarios``).
METRIC_NAMES = ("pdms", "epdms", "speed_limit_compliance", "driving_score", "log_divergence")


def shipped_dir() -> Path:
    try:
        import stag_sim.scenarios

        return Path(stag_sim.scenarios.__file__).parent
    except ImportError:  # a source checkout on sys.path without an install: the repository's scenarios/
        return Path(__file__).resolve().parent.parent / "scenarios"


@dataclass(frozen=True)
class SceneSpec:
    """Which scene: the synthetic town (``synthetic_seed``, ``synthetic_duration_s``) or a scene cache ``path``."""

    synthetic_seed: int | None = 0
    synthetic_duration_s: float = 20.0  # [s]
    path: str | None = None


@dataclass(frozen=True)
class EgoSpec:
    """The ego's start: the logged pose at the start time moved by ``longitudinal`` / ``lateral`` [m] (lateral
    positive to the left) and turned by ``yaw`` [rad], at ``speed`` [m/s] (None: the logged speed)."""

    longitudinal: float = 0.0  # [m]
    lateral: float = 0.0  # [m]
    yaw: float = 0.0  # [rad]
    speed: float | None = None  # [m/s]


@dataclass(frozen=True)
class SuccessSpec:
    """When a run counts as a success: at least ``min_route_completion`` [0, 1] of the route, and no collision /
    no off-road unless allowed."""

    min_route_completion: float = 0.8
    allow_collision: bool = False
    allow_offroad: bool = False


@dataclass(frozen=True)
class Scenario:
    """One validated scenario (see the module docstring for the file format).

    Attributes:
        name: scenario name (defaults to the file stem).
        description: one line for tables and reports.
        scene: which scene.
        start_time_s: episode start after the log's first frame [s] (snapped to the logged frame at or before it).
        duration_s: episode length [s] (the episode also ends at the end of the log).
        ego: the ego's start.
        route: ``"logged"`` or a tuple of map lane ids.
        agents: ``log_replay`` or ``idm``.
        events: scripted agent events.
        lights: schedules for some of the scene's traffic lights (times after the episode start; see
            :class:`~stag_sim.road_rules.LightOverride`).
        speed_limits: speed limits for some map lanes (:class:`~stag_sim.road_rules.LaneLimit`: a zone).
        success: success criteria.
        metrics: metric groups to report (``pdms``, ``driving_score``, ``log_divergence``).
        seed: the episode seed (env reset, random agents).
        env: extra StagDrive-v0 settings (image size, cameras, ...); explicit ``gym.make`` arguments win.
        source: the file it was read from ('' if built in code).
    """

    name: str
    description: str = ""
    scene: SceneSpec = field(default_factory=SceneSpec)
    start_time_s: float = 0.0  # [s]
    duration_s: float = 10.0  # [s]
    ego: EgoSpec = field(default_factory=EgoSpec)
    route: str | tuple[str, ...] = "logged"
    agents: str = "log_replay"
    events: tuple[AgentEvent, ...] = ()
    lights: tuple[LightOverride, ...] = ()
    speed_limits: tuple[LaneLimit, ...] = ()
    success: SuccessSpec = field(default_factory=SuccessSpec)
    metrics: tuple[str, ...] = METRIC_NAMES
    seed: int = 0
    env: dict = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict:
        """Plain values in the file format (``load_scenario_text(yaml.safe_dump(s.to_dict()))`` gives ``s`` back)."""
        scene = ({"path": self.scene.path} if self.scene.path is not None else
                 {"synthetic": {"seed": self.scene.synthetic_seed, "duration_s": self.scene.synthetic_duration_s}})
        default_event = AgentEvent(type="insert")
        events = [{"type": e.type, **{f.name: getattr(e, f.name) for f in fields(e)
                                      if f.name != "type" and getattr(e, f.name) != getattr(default_event, f.name)}}
                  for e in self.events]
        return {
            "name": self.name, "description": self.description, "scene": scene, "start_time_s": self.start_time_s,
            "duration_s": self.duration_s, "ego": {f.name: getattr(self.ego, f.name) for f in fields(self.ego)},
            "route": self.route if isinstance(self.route, str) else {"lanes": list(self.route)},
            "agents": self.agents, "events": events,
            "lights": [{"light": o.light, "states": list(o.states), "at_s": list(o.at_s), "period_s": o.period_s}
                       for o in self.lights],
            "speed_limits": [{"lane": lim.lane, "limit_mps": lim.limit_mps} for lim in self.speed_limits],
            "success": {f.name: getattr(self.success, f.name) for f in fields(self.success)},
            "metrics": list(self.metrics), "seed": self.seed, "env": dict(self.env),
        }


# --- the schema: key -> (kind, required) per section ----------------------------------------------------------------

_NUM, _INT, _STR, _BOOL = "number", "integer", "string", "boolean"
_TOP = {
    "name": (_STR, False), "description": (_STR, False), "scene": ("scene", True), "start_time_s": (_NUM, False),
    "duration_s": (_NUM, True), "ego": ("ego", False), "route": ("route", False), "agents": (_STR, False),
    "events": ("events", False), "lights": ("lights", False),
    "speed_limits": ("speed_limits", False), "success": ("success", False), "metrics": ("metrics", False),
    "seed": (_INT, False), "env": ("env", False),
}
_EGO = {"longitudinal": (_NUM, False), "lateral": (_NUM, False), "yaw": (_NUM, False), "speed": (_NUM + "|null", False)}
_SUCCESS = {"min_route_completion": (_NUM, False), "allow_collision": (_BOOL, False), "allow_offroad": (_BOOL, False)}
#: event fields and their kinds, from :class:`~stag_sim.agent_sources.AgentEvent` (``type`` is required)
_EVENT = {k: (kind, k == "type") for k, kind in field_kinds(AgentEvent).items()}
_EVENT_KEYS = {  # which keys each event type takes (besides type)
    "insert": {"agent", "name", "ahead_m", "lateral_m", "speed", "behavior", "lanes", "yaw_deg"},
    "remove": {"agent"},
    "hard_brake": {"agent", "at_s", "decel"},
    "cut_in": {"agent", "at_s", "duration_s", "to_lateral_m"},
}
_EVENT_REQUIRED = {"remove": {"agent"}, "hard_brake": {"agent", "at_s"}, "cut_in": {"agent", "at_s"}}
#: StagDrive-v0 settings the scenario itself sets: not allowed in its ``env:`` block.
SCENARIO_OWNED = ("max_steps",)
SCENARIO_OWNED_WORLD = ("agents", "start_frame", "events", "route_lanes", "route_max_length", "lights",
                        "speed_limits")
#: StagDrive-v0 settings a scenario may set in its ``env:`` block: the fields of :class:`EnvConfig` it does not own.
ENV_KEYS = tuple(f.name for f in fields(EnvConfig) if f.name not in SCENARIO_OWNED)


class _Where:
    """Line numbers of a parsed YAML document, by key path (for error messages)."""

    def __init__(self, source: str, root) -> None:
        self.source = source
        self.lines: dict[tuple, int] = {}
        self._walk(root, ())

    def _walk(self, node, path: tuple) -> None:
        import yaml

        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                self.lines[path + (key,)] = k.start_mark.line + 1
                self._walk(v, path + (key,))
                self.lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))

    def error(self, path: tuple, message: str) -> ScenarioError:
        line = None
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                break
        dotted = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
        where = f"{self.source}:{line}" if line else self.source
        return ScenarioError(f"{where}: {dotted + ': ' if dotted else ''}{message}")


def _check_kind(value, kind: str) -> bool:
    if kind.endswith("|null"):
        return value is None or _check_kind(value, kind[:-5])
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    raise AssertionError(kind)


def _section(where: _Where, data, schema: dict, path: tuple) -> dict:
    if not isinstance(data, dict):
        raise where.error(path, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(schema))
    if unknown:
        raise where.error(path + (unknown[0],), f"unknown key; expected one of {', '.join(sorted(schema))}")
    for key, (kind, required) in schema.items():
        if required and key not in data:
            raise where.error(path, f"missing required field {key!r}")
        if key in data and kind.removesuffix("|null") in (_NUM, _INT, _STR, _BOOL) and not _check_kind(data[key], kind):
            raise where.error(path + (key,), f"expected {kind.replace('|null', ' or null')}, got {data[key]!r}")
    return data


def load_scenario_text(text: str, source: str = "<string>", name: str | None = None) -> Scenario:
    """Parse and validate a scenario from YAML text (``source`` names it in errors)."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{source}{line}: not valid YAML: {problem}") from None
    if root is None:
        raise ScenarioError(f"{source}: empty scenario file")
    data = yaml.safe_load(text)
    where = _Where(source, root)
    _section(where, data, _TOP, ())

    scene_data = data["scene"]
    if not isinstance(scene_data, dict) or len(scene_data) != 1 or next(iter(scene_data)) not in ("synthetic", "path"):
        raise where.error(("scene",), "expected {synthetic: {seed: N, duration_s: S}} or {path: DIR}")
    if "path" in scene_data:
        if not _check_kind(scene_data["path"], _STR):
            raise where.error(("scene", "path"), f"expected a string, got {scene_data['path']!r}")
        scene = SceneSpec(synthetic_seed=None, path=scene_data["path"])
    else:
        syn = _section(where, scene_data["synthetic"] or {}, {"seed": (_INT, False), "duration_s": (_NUM, False)},
                       ("scene", "synthetic"))
        scene = SceneSpec(synthetic_seed=syn.get("seed", 0), synthetic_duration_s=float(syn.get("duration_s", 20.0)))

    ego = EgoSpec(**_section(where, data.get("ego") or {}, _EGO, ("ego",)))
    for key in ("longitudinal", "lateral", "yaw", "speed"):
        value = getattr(ego, key)
        if value is not None and (not np.isfinite(value) or (key == "speed" and value < 0)):
            raise where.error(("ego", key), f"expected a finite number{' >= 0 [m/s]' if key == 'speed' else ''}, "
                                            f"got {value}")
    success = SuccessSpec(**_section(where, data.get("success") or {}, _SUCCESS, ("success",)))
    if not 0.0 <= success.min_route_completion <= 1.0:
        raise where.error(("success", "min_route_completion"), f"expected a number in [0, 1], got {success.min_route_completion}")

    route = data.get("route", "logged")
    if isinstance(route, dict):
        _section(where, route, {"lanes": ("lanes", True)}, ("route",))
        lanes = route["lanes"]
        if not isinstance(lanes, list) or not lanes or not all(isinstance(x, str) for x in lanes):
            raise where.error(("route", "lanes"), f"expected a non-empty list of lane ids, got {lanes!r}")
        route = tuple(lanes)
    elif route != "logged":
        raise where.error(("route",), f"expected 'logged' or {{lanes: [...]}}, got {route!r}")

    agents = data.get("agents", "log_replay")
    if agents not in AGENT_MODES:
        raise where.error(("agents",), f"expected one of {', '.join(AGENT_MODES)}, got {agents!r}")

    events = []
    raw_events = data.get("events") or []
    if not isinstance(raw_events, list):
        raise where.error(("events",), f"expected a list of events, got {type(raw_events).__name__}")
    for i, ev in enumerate(raw_events):
        path = ("events", i)
        _section(where, ev, _EVENT, path)
        if ev["type"] not in EVENT_TYPES:
            raise where.error(path + ("type",), f"expected one of {', '.join(EVENT_TYPES)}, got {ev['type']!r}")
        allowed = _EVENT_KEYS[ev["type"]]
        extra = sorted(set(ev) - allowed - {"type"})
        if extra:
            raise where.error(path + (extra[0],), f"not a field of a {ev['type']} event (it takes {', '.join(sorted(allowed))})")
        missing = sorted(_EVENT_REQUIRED.get(ev["type"], set()) - set(ev))
        if missing:
            raise where.error(path, f"{ev['type']} event: missing required field {missing[0]!r}")
        if "behavior" in ev and ev["behavior"] not in BEHAVIORS:
            raise where.error(path + ("behavior",), f"expected one of {', '.join(BEHAVIORS)}, got {ev['behavior']!r}")
        try:
            events.append(AgentEvent(**{k: (float(v) if _check_kind(v, _NUM) and not isinstance(v, str)
                                            else tuple(v) if isinstance(v, list) else v)
                                        for k, v in ev.items()}).validate())
        except StagSimError as e:
            raise where.error(path, str(e)) from None

    rules = {}
    for key, cls in (("lights", LightOverride), ("speed_limits", LaneLimit)):
        raw = data.get(key) or []
        if not isinstance(raw, list):
            raise where.error((key,), f"expected a list, got {type(raw).__name__}")
        rules[key] = tuple(from_mapping(cls, item, (key, i), where.error) for i, item in enumerate(raw))

    metrics = data.get("metrics", list(METRIC_NAMES))
    if not isinstance(metrics, list) or not all(m in METRIC_NAMES for m in metrics):
        raise where.error(("metrics",), f"expected a list drawn from {', '.join(METRIC_NAMES)}, got {metrics!r}")
    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise where.error(("env",), f"expected a mapping, got {type(env).__name__}")
    bad = sorted(set(env) - set(ENV_KEYS))
    if bad:
        raise where.error(("env", bad[0]), f"not a scenario env setting; expected one of {', '.join(ENV_KEYS)}")
    owned = sorted(set(env.get("world") or {}) & set(SCENARIO_OWNED_WORLD)) if isinstance(env.get("world"), dict) else []
    if owned:
        raise where.error(("env", "world", owned[0]), "set by the scenario itself (agents:, start_time_s, events:, "
                                                      "lights:, speed_limits:, route:, duration_s), not in its env block")
    from_mapping(EnvConfig, env, ("env",), where.error)  # gym.make's checks, with the file's lines

    for key in ("start_time_s", "duration_s"):
        value = data.get(key, 0.0)
        if key == "duration_s" and value <= 0 or value < 0:
            raise where.error((key,), f"expected a {'positive' if key == 'duration_s' else 'non-negative'} number [s], got {value}")
    return Scenario(
        name=data.get("name") or name or Path(source).stem, description=data.get("description", ""), scene=scene,
        start_time_s=float(data.get("start_time_s", 0.0)), duration_s=float(data["duration_s"]), ego=ego, route=route,
        agents=agents, events=tuple(events), **rules, success=success, metrics=tuple(metrics), seed=int(data.get("seed", 0)),
        env=dict(env), source=source,
    )


def load_scenario(path_or_name: str | os.PathLike) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (``lead_hard_brake``)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix == "" and (shipped_dir() / f"{path.name}.yaml").is_file():
        path = shipped_dir() / f"{path.name}.yaml"
    if not path.is_file():
        raise ScenarioError(f"{path}: no such scenario file{_shipped_hint(path.stem)}")
    return load_scenario_text(path.read_text(encoding="utf-8"), source=str(path))


def _shipped_hint(name: str) -> str:
    """`` (did you mean 'cut_in'?; shipped: ...)``: the closest shipped scenario name and the list of them."""
    import difflib

    shipped = [p.stem for p in sorted(shipped_dir().glob("*.yaml"))]
    close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.6)
    return f" ({f'did you mean {close[0]!r}? ' if close else ''}shipped scenarios: {', '.join(shipped)})"


def find_scenarios(paths) -> list[Path]:
    """Scenario files from files and directories (``*.yaml`` / ``*.yml`` in a directory, sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise ScenarioError(f"{p}: no *.yaml scenario files in this directory")
            out.extend(found)
        elif p.is_file() or (shipped_dir() / f"{p.name}.yaml").is_file():
            out.append(p if p.is_file() else shipped_dir() / f"{p.name}.yaml")
        else:
            raise ScenarioError(f"{p}: no such scenario file or directory{_shipped_hint(p.stem)}")
    return out


def resolve_scene(scenario: Scenario, progress: bool = True) -> Path:
    """The scene cache directory of ``scenario`` (generating the synthetic town on first use)."""
    if scenario.scene.path is not None:
        p = Path(scenario.scene.path).expanduser()
        if not p.is_absolute() and not p.exists() and scenario.source:
            p = Path(scenario.source).parent / p
        if not (p / "scene.json").is_file():
            raise ScenarioError(f"{scenario.source or scenario.name}: scene.path: {scenario.scene.path}: not a scene "
                                "cache (no scene.json); make one with `stag-sim synth` or `stag-sim ingest`")
        return p
    from stag_sim.paths import ensure_default_scene

    return ensure_default_scene(seed=scenario.scene.synthetic_seed, duration_s=scenario.scene.synthetic_duration_s,
                                progress=progress)


def env_settings(scenario: Scenario, log, dt: float = 0.1) -> tuple[dict[str, Any], dict[str, Any]]:
    """StagDrive-v0 settings and default reset options for ``scenario`` on its loaded scene ``log``."""
    rel = (np.asarray(log.timestamps_us) - log.timestamps_us[0]) * 1e-6
    start_frame = int(np.searchsorted(rel, scenario.start_time_s + 1e-6, side="right") - 1)
    if start_frame >= log.num_frames - 1:
        raise ScenarioError(f"{scenario.source or scenario.name}: start_time_s: {scenario.start_time_s} s is at or past "
                            f"the end of scene {log.name!r} ({rel[-1]:.1f} s)")
    # the route is as long as the logged driver drove in the scenario's duration (at the log's mean speed), so
    # "route completed" means "got where the log got, in time"
    mean_speed = logged_mean_speed(log)  # [m/s]
    world = dict(scenario.env.get("world", {}))
    world.update(start_frame=start_frame, events=scenario.events, lights=scenario.lights,
                 speed_limits=scenario.speed_limits,
                 route_lanes=() if scenario.route == "logged" else tuple(scenario.route),
                 route_max_length=max(mean_speed * scenario.duration_s, 2.0))
    world["agents"] = scenario.agents
    settings = {k: v for k, v in scenario.env.items() if k != "world"}
    settings.update(world=world, max_steps=max(1, int(round(scenario.duration_s / dt))))
    options = {"ego_offset": (scenario.ego.longitudinal, scenario.ego.lateral, scenario.ego.yaw), "speed": scenario.ego.speed}
    return settings, options
