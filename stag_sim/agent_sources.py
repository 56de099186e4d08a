"""The other agents of an episode: where they are in a :class:`~stag_sim.world.SimState`, and how they move.

One protocol, :class:`AgentSource`, hides where the other agents come from; a :class:`~stag_sim.world.World`
holds one, and :func:`stag_sim.world.step` asks it to advance the agents. Two sources ship:

* :class:`ScriptedAgents`: the log's agents, replayed (poses interpolated at the simulation time) or driven by IDM
  along their own logged path (extended straight past its end), plus the scenario's :class:`AgentEvent` s:
  ``insert`` places a vehicle (the object cloud of a logged instance, moved away from where it was logged) on the
  ego route, ``remove`` takes an agent out, ``hard_brake`` makes an agent brake at a given time, ``cut_in`` moves an
  inserted agent sideways into the ego lane. Agents touched by an event are *simulated*: they move by arc length
  along a path (their logged path, or the ego route for inserted ones) in any agent mode, with IDM before their
  scripted behaviour takes over. Their changing part is ``SimState.agent_s`` / ``agent_speed``.
* :class:`ExternalAgents`: an external simulator (CARLA) moves the agents; the env writes where they are into
  ``SimState.external_agents`` after every tick, and the source reads them from there.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping, Protocol

import numpy as np

from stag_sim.errors import ScenarioError, ValidationError
from stag_sim.geometry import pose_xy_yaw, yaw_of
from stag_sim.traffic import Obstacle, PolylinePath, idm_step

if TYPE_CHECKING:
    from stag_sim.scene_log import SceneLog
    from stag_sim.world import SimState, World, WorldConfig

AGENT_MODES = ("log_replay", "idm")
EVENT_TYPES = ("insert", "remove", "hard_brake", "cut_in")
BEHAVIORS = ("idm", "constant", "stopped")
MOVING_THRESHOLD = 1.0  # [m] an object that travels less than this over the log is parked (never driven by IDM)
PATH_EXTENSION = 200.0  # [m] paths (route, IDM) continue straight past their logged end


@dataclass(frozen=True)
class AgentEvent:
    """One scripted change to the other agents (see the module docstring).

    Attributes:
        type: ``insert``, ``remove``, ``hard_brake`` or ``cut_in``.
        agent: instance id of the scene object the event acts on; for ``insert`` also ``auto`` (a parked vehicle
            of the scene, moved away from its logged place); for the others also the ``name`` of an insert.
        name: (insert) a name other events can refer to, e.g. ``lead``.
        at_s: (hard_brake, cut_in) when it starts, after the episode start [s].
        ahead_m: (insert) distance along the ego route from the ego's start [m] (with ``lanes``: along those lanes
            from their start).
        lateral_m: (insert) offset to the left of the route [m] (e.g. 3.5 = the next lane on the left).
        lanes: (insert) map lane ids the agent drives along (centrelines joined in order) instead of the ego route:
            cross traffic, oncoming traffic on a mapped road.
        yaw_deg: (insert) heading relative to the route at the insertion point [deg], counter-clockwise; 0 drives
            along the route; 180 drives the route backwards (oncoming, offset ``lateral_m`` to the route's left);
            any other angle drives a straight line from the insertion point (e.g. 90 / -90 crossing from the right
            / left).
        speed: (insert) initial speed [m/s].
        behavior: (insert) ``idm`` (follows whatever is ahead), ``constant`` (keeps its speed) or ``stopped``.
        decel: (hard_brake) deceleration until standstill [m/s^2].
        duration_s: (cut_in) time to move sideways [s].
        to_lateral_m: (cut_in) final offset from the route [m] (0 = the ego lane).
    """

    type: str
    agent: str = "auto"
    name: str | None = None
    at_s: float = 0.0  # [s]
    ahead_m: float = 20.0  # [m]
    lateral_m: float = 0.0  # [m]
    speed: float = 0.0  # [m/s]
    behavior: str = "idm"
    decel: float = 6.0  # [m/s^2]
    duration_s: float = 2.0  # [s]
    to_lateral_m: float = 0.0  # [m]
    lanes: tuple[str, ...] = ()
    yaw_deg: float = 0.0  # [deg]

    def validate(self) -> "AgentEvent":
        if self.type not in EVENT_TYPES:
            raise ValidationError(f"event type: {self.type!r} is not one of {', '.join(EVENT_TYPES)}")
        if self.behavior not in BEHAVIORS:
            raise ValidationError(f"event behavior: {self.behavior!r} is not one of {', '.join(BEHAVIORS)}")
        if self.lanes and self.yaw_deg:
            raise ValidationError("event insert: give lanes or yaw_deg, not both")
        for name in ("at_s", "ahead_m", "lateral_m", "speed", "decel", "duration_s", "to_lateral_m", "yaw_deg"):
            if not np.isfinite(getattr(self, name)):
                raise ValidationError(f"event {self.type}.{name}: must be finite, got {getattr(self, name)}")
        for name in ("at_s", "speed"):
            if getattr(self, name) < 0:
                raise ValidationError(f"event {self.type}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("decel", "duration_s"):
            if getattr(self, name) <= 0:
                raise ValidationError(f"event {self.type}.{name}: must be > 0, got {getattr(self, name)}")
        return self


class AgentSource(Protocol):
    """Where the other agents are, and how they move (see the module docstring). Stateless: everything that changes
    lives in the :class:`~stag_sim.world.SimState`."""

    def initial(self, world: "World", time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(K,) ``agent_s`` [m] and (K,) ``agent_speed`` [m/s] of the first state, at ``time_s`` [s]."""

    def poses(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        """Agent poses (K, 4, 4) and validity (K,) in ``state``, in scene object order."""

    def advance(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        """(K,) ``agent_s`` and ``agent_speed`` one step after ``state``."""


def extended_path(xy: np.ndarray, extension: float) -> PolylinePath:
    """The path through logged positions ``xy`` (n, 2) [m] (repeats dropped), continued straight ``extension`` [m]."""
    xy = np.asarray(xy, dtype=np.float64)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 0.05]) if len(xy) > 1 else np.ones(len(xy), bool)
    xy = xy[keep]
    if len(xy) < 2:
        raise ScenarioError("a path needs at least two distinct logged positions (the object or ego never moves)")
    if extension > 0:
        d = xy[-1] - xy[-2]
        xy = np.vstack([xy, xy[-1] + d / np.linalg.norm(d) * extension])
    return PolylinePath(xy)


#: per log: the agents' logged paths and moving flags (every world of a log shares them)
_PATHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _logged_paths(log) -> tuple[tuple, np.ndarray]:
    """(K,) each agent's logged path extended :data:`PATH_EXTENSION` past its end (None for one that is not a
    moving vehicle) and (K,) moving flags; computed once per log (a random-start reset builds a world)."""
    if log not in _PATHS:
        P, V = np.asarray(log.objects.poses), np.asarray(log.objects.valid)
        paths, moving = [], np.zeros(len(log.objects), bool)
        for k in range(len(log.objects)):
            xy = P[V[:, k], k, :2, 3]
            travelled = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) if len(xy) > 1 else 0.0
            moving[k] = travelled > MOVING_THRESHOLD and log.objects.categories[k].startswith("vehicle")
            paths.append(extended_path(xy, PATH_EXTENSION) if moving[k] else None)
        _PATHS[log] = (tuple(paths), moving)
    return _PATHS[log]


@dataclass(frozen=True, eq=False)
class ScriptedAgents:
    """The log's agents, replayed or driven by IDM, with the scenario's events (see the module docstring).

    Attributes:
        agent_paths: per agent, the path it is simulated along (None: never simulated).
        agent_moving: (K,) bool, the agent travels in the log (a vehicle).
        simulated: (K,) bool, moved along its path by this source (IDM mode, or touched by an event).
        removed: (K,) bool, taken out by a ``remove`` event.
        inserted, brakes, cut_ins: agent index -> its ``insert`` / ``hard_brake`` / ``cut_in`` event.
        route_path: the ego route extended past its end (inserted agents drive along it by default).
        insert_start: inserted agent index -> (arc length [m] on its path at the episode start, offset [m] to the
            left of its path).
    """

    agent_paths: tuple[PolylinePath | None, ...]
    agent_moving: np.ndarray
    simulated: np.ndarray
    removed: np.ndarray
    inserted: Mapping[int, AgentEvent]
    brakes: Mapping[int, AgentEvent]
    cut_ins: Mapping[int, AgentEvent]
    route_path: PolylinePath
    insert_start: Mapping[int, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, log: "SceneLog", config: "WorldConfig", route: PolylinePath) -> "ScriptedAgents":
        """The agents of ``log`` with ``config``'s agent mode and events, inserted ones along ``route``."""
        K = len(log.objects)
        P = np.asarray(log.objects.poses)
        V = np.asarray(log.objects.valid)
        logged_paths, moving = _logged_paths(log)
        paths, moving = list(logged_paths), moving.copy()
        simulated = moving.copy() if config.agents == "idm" else np.zeros(K, bool)
        removed = np.zeros(K, bool)
        route_path = extended_path(route.points, PATH_EXTENSION)  # inserted agents drive past its end
        inserted, brakes, cut_ins = _resolve_events(log, config, P, V, moving, simulated, removed, paths, route_path)
        logged_start_s = float(route_path.project(np.asarray(log.ego_poses[config.start_frame])[:2, 3][None])[0][0])
        starts = {}
        for k, e in inserted.items():
            paths[k], starts[k] = _insert_path(log, e, route_path, logged_start_s)
        return cls(tuple(paths), moving, simulated, removed, MappingProxyType(inserted), MappingProxyType(brakes),
                   MappingProxyType(cut_ins), route_path, MappingProxyType(starts))

    def lateral_offset(self, world: "World", k: int, time_s: float) -> tuple[float, float]:
        """Offset [m] of inserted agent ``k`` to the left of the route at ``time_s`` [s], and its rate [m/s]
        (a cosine blend during a cut-in)."""
        ins = self.inserted.get(k)
        if ins is None:
            return 0.0, 0.0
        cut = self.cut_ins.get(k)
        t_rel = time_s - world.start_time_s
        if cut is None or t_rel <= cut.at_s:
            return self.insert_start[k][1], 0.0
        u = min((t_rel - cut.at_s) / cut.duration_s, 1.0)
        delta = cut.to_lateral_m - ins.lateral_m
        rate = delta * 0.5 * np.pi * np.sin(np.pi * u) / cut.duration_s if u < 1.0 else 0.0
        return ins.lateral_m + delta * 0.5 * (1.0 - np.cos(np.pi * u)), float(rate)

    def initial(self, world: "World", time_s: float) -> tuple[np.ndarray, np.ndarray]:
        log, cfg = world.log, world.config
        K = len(log.objects)
        agent_s = np.zeros(K)
        agent_speed = np.zeros(K)
        poses, _ = world.logged_object_poses(time_s)
        later, _ = world.logged_object_poses(time_s + cfg.dt)
        for k in np.flatnonzero(self.simulated):
            if k in self.inserted:
                agent_s[k] = self.insert_start[k][0]
                agent_speed[k] = 0.0 if self.inserted[k].behavior == "stopped" else self.inserted[k].speed
            else:
                agent_s[k] = self.agent_paths[k].project(poses[k, :2, 3][None])[0][0]
                agent_speed[k] = np.linalg.norm(later[k, :2, 3] - poses[k, :2, 3]) / cfg.dt
        return agent_s, agent_speed

    def poses(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        poses, valid = world.logged_object_poses(state.time_s)
        ks = np.flatnonzero(self.simulated)
        if len(ks):
            from stag_sim.world_batch import row_arrays
            from stag_sim.world_batch_ops import path_points

            xy, yaws = path_points(row_arrays(world), np.asarray(state.agent_s)[ks][None])  # all paths at once
            xy, yaws = xy[0], yaws[0]
            z = poses[ks, 2, 3]
            for i, k in enumerate(ks):
                if k in self.inserted:
                    lat, rate = self.lateral_offset(world, k, state.time_s)
                    xy[i] = xy[i] + lat * np.array([-np.sin(yaws[i]), np.cos(yaws[i])])
                    yaws[i] = yaws[i] + np.arctan2(rate, max(state.agent_speed[k], 1.0))
                    z[i] = world.sizes[k, 2] / 2.0  # box centre above the (flat) ground [m]
            poses[ks] = pose_xy_yaw(xy[:, 0], xy[:, 1], yaws, z)  # one call for all: pose building is the cost
            valid[ks] = True
        valid[self.removed] = False
        return poses, valid

    def advance(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        """Advance the simulated agents one step: IDM, constant speed, stopped, or a scripted hard brake."""
        if not self.simulated.any():
            return state.agent_s.copy(), state.agent_speed.copy()
        cfg = world.config
        poses, valid = self.poses(world, state)
        v = cfg.vehicle
        ego_obs = Obstacle((state.ego.x + v.centre_offset * np.cos(state.ego.yaw), state.ego.y + v.centre_offset * np.sin(state.ego.yaw)),
                           v.length, state.ego.speed, state.ego.yaw)
        agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
        gaps, leads = self._leaders(world, state, poses, valid, ego_obs)
        t_rel = state.time_s - world.start_time_s
        for k in np.flatnonzero(self.simulated):
            s0, v0 = state.agent_s[k], state.agent_speed[k]
            brake = self.brakes.get(k)
            behavior = self.inserted[k].behavior if k in self.inserted else "idm"
            if brake is not None and t_rel + 1e-9 >= brake.at_s:
                v1 = max(v0 - brake.decel * cfg.dt, 0.0)
                agent_s[k], agent_speed[k] = s0 + (v0 + v1) / 2.0 * cfg.dt, v1
            elif behavior == "stopped":
                agent_speed[k] = 0.0
            elif behavior == "constant":
                agent_s[k] = s0 + v0 * cfg.dt
            else:
                params = cfg.idm
                if k in self.inserted and self.inserted[k].speed > 0:
                    params = replace(params, target_speed=self.inserted[k].speed)
                agent_s[k], agent_speed[k], _ = idm_step(s0, v0, gaps[k], leads[k], cfg.dt, params)
        return agent_s, agent_speed

    def _leaders(self, world, state, poses, valid, ego: Obstacle) -> tuple[dict, dict]:
        """Gap [m] and leader speed [m/s] of every simulated agent (index -> value): the nearest of the other
        agents, the ego and a stop line whose light says stop (:func:`stag_sim.world_batch_ops.stop_at_lights`) ahead
        on its path (:func:`stag_sim.world_batch_ops.leaders`, all agents at once; the
        rule of :func:`~stag_sim.traffic.find_leaders`)."""
        from stag_sim.world_batch import row_arrays
        from stag_sim.world_batch_ops import leaders, stop_at_lights

        A = row_arrays(world)
        ks = A["sim_idx"][0]
        obs_xy = np.concatenate([poses[:, :2, 3], [ego.xy]])[None]
        obs_len = np.append(world.sizes[:, 0], ego.length)[None]
        obs_speed = np.append(np.where(self.simulated, state.agent_speed, 0.0), ego.speed)[None]
        obs_yaw = np.append(yaw_of(poses), ego.yaw)[None]
        s0 = np.asarray(state.agent_s)[ks][None]
        gap, lead = leaders(A, s0, obs_xy, obs_len, obs_speed, obs_yaw, np.append(valid, True)[None])
        gap, lead = stop_at_lights(A, s0, np.array([state.time_s]), np.asarray(state.agent_speed)[ks][None],
                                   world.config.idm.decel_comfort, gap, lead)
        return dict(zip(ks.tolist(), gap[0].tolist())), dict(zip(ks.tolist(), lead[0].tolist()))


@dataclass(frozen=True, eq=False)
class ExternalAgents:
    """Agents an external simulator moves (CARLA co-simulation): their poses are what the env last wrote into
    ``SimState.external_agents`` (none drawn before the first report). ``scripted`` keeps the scenario's own
    agents, e.g. to spawn its inserted vehicles in the external simulator at their start poses."""

    scripted: ScriptedAgents

    def initial(self, world: "World", time_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self.scripted.initial(world, time_s)

    def poses(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        if state.external_agents is None:
            K = len(world.log.objects)
            return np.tile(np.eye(4), (K, 1, 1)), np.zeros(K, bool)
        poses, valid = state.external_agents
        return np.array(poses, copy=True), np.array(valid, copy=True)

    def advance(self, world: "World", state: "SimState") -> tuple[np.ndarray, np.ndarray]:
        return state.agent_s.copy(), state.agent_speed.copy()


def _insert_path(log, e: AgentEvent, route_path: PolylinePath, logged_start_s: float):
    """The path an inserted agent drives and (arc length at the episode start [m], offset to its left [m])
    (see :class:`AgentEvent`: the route, map lanes, the route backwards, or a straight line)."""
    from stag_sim.road_rules import lane_polyline

    if e.lanes:
        return extended_path(lane_polyline(log.map, e.lanes, "event insert.lanes", log.name), PATH_EXTENSION), \
            (e.ahead_m, e.lateral_m)
    s0 = logged_start_s + e.ahead_m
    if not e.yaw_deg:
        return route_path, (s0, e.lateral_m)
    if abs(abs(e.yaw_deg) - 180.0) < 1e-9:  # oncoming along the road: the route backwards
        back = PolylinePath(route_path.points[::-1])
        return back, (route_path.length - s0, -e.lateral_m)
    xy, route_yaw = route_path.interpolate(np.array([s0]))
    h = float(route_yaw[0])
    start = xy[0] + e.lateral_m * np.array([-np.sin(h), np.cos(h)])
    d = np.array([np.cos(h + np.deg2rad(e.yaw_deg)), np.sin(h + np.deg2rad(e.yaw_deg))])
    return PolylinePath(np.stack([start, start + d * PATH_EXTENSION])), (0.0, 0.0)


def _resolve_events(log, config, P, V, moving, simulated, removed, paths, route_path):
    """Apply ``config.events`` to the agent arrays (in place) and return the inserted / brakes / cut-ins maps."""
    ids = list(log.objects.instance_ids)
    names: dict[str, int] = {}
    used: set[int] = set()
    start_xy = np.asarray(log.ego_poses[config.start_frame])[:2, 3]
    inserted: dict[int, AgentEvent] = {}
    brakes: dict[int, AgentEvent] = {}
    cut_ins: dict[int, AgentEvent] = {}

    def lookup(ref: str, event: AgentEvent) -> int:
        if ref in names:
            return names[ref]
        if ref in ids:
            return ids.index(ref)
        known = sorted(names) + ids[:5] + (["..."] if len(ids) > 5 else [])
        raise ScenarioError(f"event {event.type}: no agent {ref!r} in scene {log.name!r} (known: {', '.join(known)})")

    for e in config.events:
        if e.type == "insert":
            if e.agent == "auto":
                # a parked vehicle far from the ego's start, so that moving it changes nothing the cameras see
                parked = [k for k in range(len(ids)) if not moving[k] and k not in used
                          and log.objects.categories[k].startswith("vehicle") and V[:, k].any()]
                if not parked:
                    raise ScenarioError(f"event insert: scene {log.name!r} has no parked vehicle left to insert "
                                        "(name one with agent: <instance id>)")
                dist = [np.linalg.norm(P[V[:, k], k, :2, 3].mean(0) - start_xy) for k in parked]
                k = parked[int(np.argmax(dist))]
            else:
                k = lookup(e.agent, e)
            if k in used:
                raise ScenarioError(f"event insert: agent {ids[k]!r} is already used by another event")
            used.add(k)
            inserted[k] = e
            simulated[k] = True
            paths[k] = route_path
            if e.name:
                if e.name in names:
                    raise ScenarioError(f"event insert: name {e.name!r} is given twice")
                names[e.name] = k
            continue
        k = lookup(e.agent, e)
        if e.type == "remove":
            removed[k] = True
            simulated[k] = False
        elif e.type == "hard_brake":
            if paths[k] is None:
                raise ScenarioError(f"event hard_brake: agent {ids[k]!r} never moves in the log (insert it to script it)")
            brakes[k] = e
            simulated[k] = True
        elif e.type == "cut_in":
            if k not in inserted:
                raise ScenarioError(f"event cut_in: agent {ids[k]!r} must be inserted by an earlier insert event")
            if inserted[k].yaw_deg or inserted[k].lanes:
                raise ScenarioError(f"event cut_in: agent {ids[k]!r} must be inserted along the ego route "
                                    "(no lanes / yaw_deg) to cut in")
            cut_ins[k] = e
    return inserted, brakes, cut_ins
