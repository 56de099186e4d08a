"""Road rules of a scene: traffic lights, lane directions, lanes inside intersections, speed limits.

A scene's :class:`~stag_sim.scene_log.SceneMap` carries them (``traffic_lights``, ``lights_complete``,
``in_intersection``, ``speed_limits``; lanes are stored in their driving direction and ``successors`` is the lane
graph). :class:`RoadRules` is the bundle the world, the agents and the metrics read: the map's lanes with those facts,
and the lights with their schedules for one episode (a scenario may replace a light's schedule,
:class:`LightOverride`).

What a log may not know, and what that means downstream (never a silent "compliant"):

* no map (DGP / DDAD): no lanes, no lights; lane keeping, driving direction, traffic lights and speed limits are
  not scored;
* lights listed without states (nuScenes maps have stop lines but no signal states): state ``unknown``;
  traffic-light compliance is not scored;
* ``lights_complete`` False (a map that does not say whether it lists every signal): no lights does not mean no
  signals; traffic-light compliance is not scored;
* a NaN speed limit: unknown on that lane.

Times are seconds after the log's first frame, as :attr:`stag_sim.world.SimState.time_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stag_sim.errors import ValidationError

LIGHT_STATES = ("green", "yellow", "red", "unknown")
GREEN, YELLOW, RED, UNKNOWN = 0, 1, 2, 3  # state codes: indices into LIGHT_STATES
LANE_WIDTH = 3.5  # [m] lane width where the map gives none


def must_stop(code, gap, speed, decel):
    """Whether traffic ``gap`` [m] before a stop line at ``speed`` [m/s] stops for a light showing ``code``: at red,
    and at yellow where it can still stop at ``decel`` [m/s^2] (``gap >= v^2 / 2 decel``). Scalars or arrays
    (broadcast)."""
    code, gap, speed = np.asarray(code), np.asarray(gap, np.float64), np.asarray(speed, np.float64)
    return (code == RED) | ((code == YELLOW) & (gap >= speed * speed / (2.0 * decel)))


def light_code(state: str, where: str = "light state") -> int:
    """The code of ``state`` (an entry of :data:`LIGHT_STATES`); a ValidationError naming ``where`` otherwise."""
    if state not in LIGHT_STATES:
        raise ValidationError(f"{where}: {state!r} is not one of {', '.join(LIGHT_STATES)}")
    return LIGHT_STATES.index(state)


@dataclass(frozen=True, eq=False)
class TrafficLight:
    """One signal and the lanes it controls.

    Attributes:
        light_id: unique id, e.g. ``"jE:ring-ccw-s"``.
        lane_ids: the lanes it controls: those entering the intersection past its stop line (their state is the
            light's).
        stop_line: (2, 2) float [m] world xy end points of the stop line (across the incoming lane).
        head_xyz: (3,) float [m] world position of the signal head (drawn in the renders).
        change_s: (M,) float [s] times the state changes (after the log's first frame), strictly increasing;
            before ``change_s[0]`` the light shows ``states[0]``.
        states: (M,) str, entries of :data:`LIGHT_STATES`: the state from ``change_s[i]`` on.
        period_s: > 0: the schedule repeats every ``period_s`` [s] (``change_s`` within [0, period_s)); 0: it does
            not repeat (the last state holds).
    """

    light_id: str
    lane_ids: tuple[str, ...]
    stop_line: np.ndarray
    head_xyz: np.ndarray
    change_s: np.ndarray
    states: tuple[str, ...]
    period_s: float = 0.0

    def validate(self) -> "TrafficLight":
        where = f"traffic light {self.light_id!r}"
        if np.asarray(self.stop_line).shape != (2, 2) or not np.all(np.isfinite(self.stop_line)):
            raise ValidationError(f"{where}: stop_line must be (2, 2) finite [m], got {np.asarray(self.stop_line).shape}")
        if np.asarray(self.head_xyz).shape != (3,) or not np.all(np.isfinite(self.head_xyz)):
            raise ValidationError(f"{where}: head_xyz must be (3,) finite [m]")
        c = np.asarray(self.change_s, np.float64)
        if c.ndim != 1 or len(c) == 0 or len(c) != len(self.states):
            raise ValidationError(f"{where}: change_s and states must be non-empty and of one length, got "
                                  f"{c.shape} and {len(self.states)}")
        if not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
            raise ValidationError(f"{where}: change_s must be finite and strictly increasing, got {c.tolist()}")
        for s in self.states:
            light_code(s, f"{where}: states")
        if not (np.isfinite(self.period_s) and self.period_s >= 0):
            raise ValidationError(f"{where}: period_s must be >= 0 s, got {self.period_s}")
        if self.period_s > 0 and (c[0] < 0 or c[-1] >= self.period_s):
            raise ValidationError(f"{where}: a repeating schedule's change_s must lie in [0, {self.period_s}) s")
        return self

    @property
    def codes(self) -> np.ndarray:
        """(M,) int state codes of :attr:`states`."""
        return np.array([LIGHT_STATES.index(s) for s in self.states], np.int64)

    def code_at(self, time_s) -> np.ndarray:
        """State code(s) (:data:`GREEN`, :data:`YELLOW`, :data:`RED`, :data:`UNKNOWN`) at ``time_s`` [s] (scalar or
        array; the result has its shape)."""
        t = np.asarray(time_s, np.float64)
        if self.period_s > 0:
            t = np.mod(t, self.period_s)
        i = np.searchsorted(np.asarray(self.change_s, np.float64), t, side="right") - 1
        codes = self.codes
        if self.period_s > 0:  # before the first change of a cycle: the cycle's last state
            return codes[np.where(i < 0, len(codes) - 1, i)]
        return codes[np.clip(i, 0, None)]

    def state_at(self, time_s: float) -> str:
        """The state at ``time_s`` [s]: an entry of :data:`LIGHT_STATES`."""
        return LIGHT_STATES[int(self.code_at(float(time_s)))]

    def with_schedule(self, change_s, states, period_s: float = 0.0) -> "TrafficLight":
        return replace(self, change_s=np.asarray(change_s, np.float64), states=tuple(states),
                       period_s=float(period_s)).validate()

    @property
    def stop_direction(self) -> np.ndarray:
        """(2,) unit vector [-] of the controlled traffic's direction across the stop line (the stop line's normal,
        pointing into the intersection: its end points run from the right kerb side to the left)."""
        d = np.asarray(self.stop_line[1], np.float64) - np.asarray(self.stop_line[0], np.float64)
        n = np.array([d[1], -d[0]])
        return n / max(float(np.linalg.norm(n)), 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {"light_id": self.light_id, "lane_ids": list(self.lane_ids),
                "stop_line": np.asarray(self.stop_line, np.float64).tolist(),
                "head_xyz": np.asarray(self.head_xyz, np.float64).tolist(),
                "change_s": np.asarray(self.change_s, np.float64).tolist(), "states": list(self.states),
                "period_s": float(self.period_s)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrafficLight":
        return cls(str(d["light_id"]), tuple(d["lane_ids"]), np.asarray(d["stop_line"], np.float64),
                   np.asarray(d["head_xyz"], np.float64), np.asarray(d["change_s"], np.float64), tuple(d["states"]),
                   float(d.get("period_s", 0.0))).validate()


def check_map_rules(m) -> None:
    """Check the rule fields of a :class:`~stag_sim.scene_log.SceneMap` ``m`` (one entry per lane or none, limits
    > 0 or NaN, lights valid, unique and controlling known lanes); a ValidationError naming the field otherwise."""
    known = set(m.lane_ids)
    for name in ("in_intersection", "speed_limits"):
        if len(getattr(m, name)) not in (0, len(m.lanes)):
            raise ValidationError(f"SceneMap.{name}: expected one entry per lane ({len(m.lanes)}) or none, "
                                  f"got {len(getattr(m, name))}")
    limits = np.asarray(m.speed_limits, np.float64)
    if np.any(limits[np.isfinite(limits)] <= 0) or np.any(np.isinf(limits)):
        raise ValidationError(f"SceneMap.speed_limits: must be > 0 m/s or NaN (unknown), got {limits.tolist()}")
    ids = set()
    for light in m.traffic_lights:
        light.validate()
        if light.light_id in ids:
            raise ValidationError(f"SceneMap.traffic_lights: duplicate light id {light.light_id!r}")
        ids.add(light.light_id)
        bad = [lid for lid in light.lane_ids if lid not in known]
        if bad:
            raise ValidationError(f"SceneMap: traffic light {light.light_id!r} controls unknown lane(s) {bad}")


def map_rules_json(m) -> dict[str, Any]:
    """The rule fields of a :class:`~stag_sim.scene_log.SceneMap` as plain JSON values (``map.json``'s)."""
    return {"in_intersection": [bool(v) for v in m.in_intersection],
            "speed_limits": [None if not np.isfinite(v) else float(v) for v in m.speed_limits],
            "traffic_lights": [lt.to_json() for lt in m.traffic_lights], "lights_complete": bool(m.lights_complete)}


@dataclass(frozen=True)
class LightOverride:
    """A scenario's schedule for one light (``world.lights`` in a scenario): ``states[i]`` from ``at_s[i]`` [s]
    after the episode start on; before ``at_s[0]``, ``states[0]``. ``period_s`` > 0 repeats it."""

    light: str
    states: tuple[str, ...] = ()
    at_s: tuple[float, ...] = ()
    period_s: float = 0.0

    def validate(self) -> "LightOverride":
        if len(self.states) == 0 or len(self.states) != len(self.at_s):
            raise ValidationError(f"lights.{self.light}: states and at_s must be non-empty and of one length, got "
                                  f"{len(self.states)} and {len(self.at_s)}")
        for s in self.states:
            light_code(s, f"lights.{self.light}.states")
        return self


@dataclass(frozen=True)
class LaneLimit:
    """A scenario's speed limit for one map lane (``world.speed_limits`` in a scenario: a work or school zone)."""

    lane: str
    limit_mps: float  # [m/s]

    def validate(self) -> "LaneLimit":
        if not (np.isfinite(self.limit_mps) and self.limit_mps > 0):
            raise ValidationError(f"speed_limits.{self.lane}: limit_mps must be > 0 m/s, got {self.limit_mps}")
        return self


def stop_crossings(path_xy: np.ndarray, lights) -> list[tuple[float, int]]:
    """Where a path crosses stop lines in their controlled direction: (arc length [m] along ``path_xy`` (N, 2),
    light index) pairs sorted by arc length. A crossing counts when the path's direction there has a positive
    component along the light's :attr:`TrafficLight.stop_direction`."""
    p = np.asarray(path_xy, np.float64)
    if len(p) < 2 or not lights:
        return []
    seg = np.diff(p, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    s0 = np.concatenate([[0.0], np.cumsum(seg_len)])[:-1]
    out = []
    for j, light in enumerate(lights):
        a, b = np.asarray(light.stop_line, np.float64)
        e = b - a
        denom = seg[:, 0] * e[1] - seg[:, 1] * e[0]
        ok = np.abs(denom) > 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            d = a - p[:-1]
            u = (d[:, 0] * e[1] - d[:, 1] * e[0]) / denom  # along the path segment
            v = (d[:, 0] * seg[:, 1] - d[:, 1] * seg[:, 0]) / denom  # along the stop line
        hit = ok & (u >= 0) & (u < 1) & (v >= 0) & (v <= 1) & (seg @ light.stop_direction > 0)
        out.extend((float(s0[i] + u[i] * seg_len[i]), j) for i in np.flatnonzero(hit))
    return sorted(out)


@dataclass(frozen=True, eq=False)
class RoadRules:
    """The rules an episode is driven and scored under (see the module docstring).

    Attributes:
        lane_ids: (L,) str.
        lanes: (L,) shapely LineString centrelines in driving direction [m].
        successors: (L,) tuples of successor lane ids (the lane graph; may be empty tuples).
        in_intersection: (L,) bool, the lane lies inside an intersection (a connector); None: unknown.
        speed_limits: (L,) float [m/s], NaN where unknown.
        lights: the signals, with this episode's schedules.
        lights_complete: ``lights`` lists every signal of the scene with known states (traffic-light compliance can
            be scored); False: it may not (not scored).
        lane_width: [m] lane width (the corridor around a centreline that counts as in the lane).
    """

    lane_ids: tuple[str, ...]
    lanes: tuple[Any, ...]
    successors: tuple[tuple[str, ...], ...]
    in_intersection: np.ndarray | None
    speed_limits: np.ndarray
    lights: tuple[TrafficLight, ...] = ()
    lights_complete: bool = False
    lane_width: float = LANE_WIDTH

    @classmethod
    def from_map(cls, scene_map, lights: tuple[TrafficLight, ...] | None = None,
                 limits: tuple[LaneLimit, ...] = ()) -> "RoadRules | None":
        """The rules of a :class:`~stag_sim.scene_log.SceneMap` (None for None or a map without lanes); ``lights``
        replaces the map's lights (an episode's schedules, :func:`episode_lights`), ``limits`` some lanes' speed
        limits (a lane not in the map is a ValidationError listing a few that are)."""
        if scene_map is None or not scene_map.lanes:
            if limits:
                raise ValidationError(f"speed_limits: the scene has no lane map (got lane {limits[0].lane!r})")
            return None
        n = len(scene_map.lanes)
        inter = np.asarray(scene_map.in_intersection, bool) if len(scene_map.in_intersection) == n else None
        limits_mps = (np.array(scene_map.speed_limits, np.float64) if len(scene_map.speed_limits) == n
                      else np.full(n, np.nan))
        for lim in limits:
            lim.validate()
            if lim.lane not in scene_map.lane_ids:
                raise ValidationError(f"speed_limits: lane {lim.lane!r} is not in the map (it has "
                                      f"{', '.join(scene_map.lane_ids[:4])}{', ...' if n > 4 else ''})")
            limits_mps[scene_map.lane_ids.index(lim.lane)] = lim.limit_mps
        succ = scene_map.successors if scene_map.successors else tuple(() for _ in range(n))
        return cls(tuple(scene_map.lane_ids), tuple(scene_map.lanes), tuple(succ), inter, limits_mps,
                   tuple(scene_map.traffic_lights if lights is None else lights), bool(scene_map.lights_complete))

    @property
    def lights_scorable(self) -> str | None:
        """None when traffic-light compliance can be scored, else the reason it cannot."""
        unknown = [lt.light_id for lt in self.lights if "unknown" in lt.states]
        if unknown:
            return (f"the log has no traffic-light states ({len(unknown)} light(s) of unknown state, e.g. "
                    f"{unknown[0]!r})")
        if not self.lights_complete:
            return "the map does not list its traffic lights"
        return None

    def lane_index(self, lane_id: str) -> int:
        return self.lane_ids.index(lane_id)

    def light_for_lane(self) -> dict[str, int]:
        """lane id -> index of the light that controls it."""
        return {lid: j for j, lt in enumerate(self.lights) for lid in lt.lane_ids}


def lane_polyline(scene_map, lane_ids, what: str, scene_name: str) -> np.ndarray:
    """(N, 2) [m] the centrelines of map lanes ``lane_ids`` joined in order; a ScenarioError naming ``what`` and
    the scene where the scene has no map or a lane is not in it."""
    from stag_sim.errors import ScenarioError

    if scene_map is None:
        raise ScenarioError(f"{what}: scene {scene_name!r} has no map")
    known = list(scene_map.lane_ids)
    missing = [lid for lid in lane_ids if lid not in known]
    if missing:
        raise ScenarioError(f"{what}: {', '.join(map(repr, missing))} not in the map of scene {scene_name!r}")
    return np.concatenate([np.asarray(scene_map.lanes[known.index(lid)].coords)[:, :2] for lid in lane_ids])


def episode_lights(lights: tuple[TrafficLight, ...], overrides, start_time_s: float) -> tuple[TrafficLight, ...]:
    """``lights`` with the schedules of ``overrides`` (:class:`LightOverride`, times after the episode start at
    ``start_time_s`` [s]) put in; an override naming no light is a ValidationError listing the known ones."""
    if not overrides:
        return tuple(lights)
    by_id = {lt.light_id: i for i, lt in enumerate(lights)}
    out = list(lights)
    for o in overrides:
        o.validate()
        if o.light not in by_id:
            known = ", ".join(by_id) or "none: the scene has no traffic lights"
            raise ValidationError(f"lights: unknown light {o.light!r}; known: {known}")
        at = np.asarray(o.at_s, np.float64)
        if o.period_s > 0:
            change = np.mod(at + start_time_s, o.period_s)
            order = np.argsort(change, kind="stable")
            out[by_id[o.light]] = out[by_id[o.light]].with_schedule(change[order], [o.states[i] for i in order],
                                                                    o.period_s)
        else:
            out[by_id[o.light]] = out[by_id[o.light]].with_schedule(at + start_time_s, o.states)
    return tuple(out)
