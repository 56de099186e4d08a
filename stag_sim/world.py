"""The closed-loop world: the stateless core of a StagDrive episode (Waymax style).

:class:`World` holds everything fixed for an episode — the scene's logged tracks, the route (the logged ego
path), the drivable area, the agents' paths — and :func:`reset` / :func:`step` map a :class:`SimState` and an
action to the next :class:`SimState` without mutating anything. The Gymnasium env (``stag_sim.envs``) is the
only stateful layer around it.

Other agents are either replayed from the log (poses interpolated at the simulation time) or driven by IDM
along their own logged path (extended straight past its end), reacting to each other and to the ego.

Scenarios add :class:`AgentEvent` s on top: ``insert`` places a vehicle (the object cloud of a logged instance,
moved away from where it was logged) on the ego route, ``remove`` takes an agent out, ``hard_brake`` makes an agent
brake at a given time, ``cut_in`` moves an inserted agent sideways into the ego lane. Agents touched by an event are
*simulated*: they move by arc length along a path (their logged path, or the ego route for inserted ones) in any
agent mode, with IDM before their scripted behaviour takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from stag_sim.dynamics import EgoState, VehicleParameters, bicycle_step, expert_action, wrap_angle
from stag_sim.errors import ScenarioError, ValidationError
from stag_sim.geometry import pose_xy_yaw, yaw_of
from stag_sim.scene_log import SceneLog
from stag_sim.traffic import IDMParameters, Obstacle, PolylinePath, find_leaders, idm_step

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
        ahead_m: (insert) distance along the ego route from the ego's start [m].
        lateral_m: (insert) offset to the left of the route [m] (e.g. 3.5 = the next lane on the left).
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

    def validate(self) -> "AgentEvent":
        if self.type not in EVENT_TYPES:
            raise ValidationError(f"event type: {self.type!r} is not one of {', '.join(EVENT_TYPES)}")
        if self.behavior not in BEHAVIORS:
            raise ValidationError(f"event behavior: {self.behavior!r} is not one of {', '.join(BEHAVIORS)}")
        for name in ("at_s", "ahead_m", "lateral_m", "speed", "decel", "duration_s", "to_lateral_m"):
            if not np.isfinite(getattr(self, name)):
                raise ValidationError(f"event {self.type}.{name}: must be finite, got {getattr(self, name)}")
        for name in ("at_s", "speed"):
            if getattr(self, name) < 0:
                raise ValidationError(f"event {self.type}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("decel", "duration_s"):
            if getattr(self, name) <= 0:
                raise ValidationError(f"event {self.type}.{name}: must be > 0, got {getattr(self, name)}")
        return self


@dataclass(frozen=True)
class WorldConfig:
    """Episode settings shared by every step.

    Attributes:
        dt: simulation step [s].
        agents: ``log_replay`` or ``idm``.
        idm: IDM constants for ``agents="idm"``.
        vehicle: ego vehicle geometry and limits.
        start_frame: logged frame the episode starts at.
        route_completion_margin: the route is complete this close to its end [m].
        offroad_tolerance: the ego footprint may leave the drivable area by this much [m].
        route_lanes: map lane ids whose centrelines, joined, are the route (from the ego's start on); empty: the
            logged ego path.
        route_max_length: the route ends this far from its start [m] (None: where the path ends).
        events: scripted agent events (scenarios).
    """

    dt: float = 0.1  # [s]
    agents: str = "log_replay"
    idm: IDMParameters = field(default_factory=IDMParameters)
    vehicle: VehicleParameters = field(default_factory=VehicleParameters)
    start_frame: int = 0
    route_completion_margin: float = 2.0  # [m]
    offroad_tolerance: float = 0.1  # [m]
    route_lanes: tuple[str, ...] = ()
    route_max_length: float | None = None  # [m]
    events: tuple[AgentEvent, ...] = ()

    def validate(self) -> "WorldConfig":
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValidationError(f"WorldConfig.dt: must be > 0 s, got {self.dt}")
        if self.agents not in AGENT_MODES:
            raise ValidationError(f"WorldConfig.agents: {self.agents!r} is not one of {', '.join(AGENT_MODES)}")
        self.idm.validate()
        self.vehicle.validate()
        if self.start_frame < 0:
            raise ValidationError(f"WorldConfig.start_frame: must be >= 0, got {self.start_frame}")
        if self.route_max_length is not None and not (np.isfinite(self.route_max_length) and self.route_max_length > 1.0):
            raise ValidationError(f"WorldConfig.route_max_length: must be > 1 m or None, got {self.route_max_length}")
        for e in self.events:
            if not isinstance(e, AgentEvent):
                raise ValidationError(f"WorldConfig.events: expected AgentEvent items, got {type(e).__name__}")
            e.validate()
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "WorldConfig":
        """Build from plain values; an unknown key is an error (never silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValidationError(f"unknown world setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        for name, kind in (("idm", IDMParameters), ("vehicle", VehicleParameters)):
            if isinstance(values.get(name), dict):
                sub = values[name]
                bad = sorted(set(sub) - {f.name for f in fields(kind)})
                if bad:
                    raise ValidationError(f"unknown {name} setting(s) {', '.join(bad)}")
                values[name] = kind(**sub)
        if "events" in values:
            values["events"] = tuple(e if isinstance(e, AgentEvent) else AgentEvent(**e) for e in values["events"])
        if "route_lanes" in values:
            values["route_lanes"] = tuple(values["route_lanes"])
        return cls(**values).validate()


@dataclass(frozen=True)
class SimState:
    """Everything that changes during an episode.

    Attributes:
        step: steps taken since reset.
        time_s: simulation time since the log's first frame [s].
        ego: the ego's planar state.
        agent_s: (K,) arc length of each agent along its path [m] (IDM mode; log position otherwise).
        agent_speed: (K,) [m/s].
        route_s: the ego's progress along the route [m].
        events: what happened on the last step (``collision``, ``offroad``, ``route_completed``, ``collided_with``).
    """

    step: int
    time_s: float
    ego: EgoState
    agent_s: np.ndarray
    agent_speed: np.ndarray
    route_s: float
    events: dict = field(default_factory=dict)


def _interp_poses(log: SceneLog, t_us: float) -> tuple[np.ndarray, np.ndarray]:
    """Object poses (K, 4, 4) and validity (K,) at time ``t_us`` [us] (linear position, shortest-arc yaw)."""
    ts = log.timestamps_us
    i = int(np.clip(np.searchsorted(ts, t_us, side="right") - 1, 0, len(ts) - 1))
    j = min(i + 1, len(ts) - 1)
    w = 0.0 if j == i else float(np.clip((t_us - ts[i]) / (ts[j] - ts[i]), 0.0, 1.0))
    P = np.asarray(log.objects.poses)
    V = np.asarray(log.objects.valid)
    Pi, Pj = P[i], P[j]
    both = V[i] & V[j]
    out = Pi.copy()
    if w > 0 and len(Pi):
        yi, yj = yaw_of(Pi), yaw_of(Pj)
        yaw = yi + w * wrap_angle(yj - yi)
        pos = (1 - w) * Pi[:, :3, 3] + w * Pj[:, :3, 3]
        interp = pose_xy_yaw(pos[:, 0], pos[:, 1], yaw, pos[:, 2])
        out = np.where(both[:, None, None], interp, Pi)
    valid = V[i] if w < 0.5 else V[j]
    return out, valid | both


class World:
    """Fixed facts of an episode on one scene (see the module docstring)."""

    def __init__(self, log: SceneLog, config: WorldConfig | None = None) -> None:
        self.log = log
        self.config = (config or WorldConfig()).validate()
        T = log.num_frames
        if self.config.start_frame >= T - 1:
            raise ValidationError(f"WorldConfig.start_frame: {self.config.start_frame} leaves no logged frame to drive toward (scene has {T})")
        ego = np.asarray(log.ego_poses)
        self.t0_us = int(log.timestamps_us[0])
        start_xy = ego[self.config.start_frame, :2, 3]
        if self.config.route_lanes:
            self.route = _lane_route(log, self.config.route_lanes, start_xy)
        else:
            self.route = _extended_path(ego[self.config.start_frame:, :2, 3], extension=0.0)
        if self.config.route_max_length is not None and self.route.length > self.config.route_max_length:
            keep = self.route.s[self.route.s < self.config.route_max_length]
            self.route = PolylinePath(self.route.interpolate(np.append(keep, self.config.route_max_length))[0])
        self.route_length = self.route.length
        self.sizes = np.asarray(log.objects.sizes)
        K = len(log.objects)
        P = np.asarray(log.objects.poses)
        V = np.asarray(log.objects.valid)
        self.agent_paths: list[PolylinePath | None] = []
        self.agent_moving = np.zeros(K, bool)
        for k in range(K):
            xy = P[V[:, k], k, :2, 3]
            travelled = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) if len(xy) > 1 else 0.0
            self.agent_moving[k] = travelled > MOVING_THRESHOLD and log.objects.categories[k].startswith("vehicle")
            self.agent_paths.append(_extended_path(xy, PATH_EXTENSION) if self.agent_moving[k] else None)
        # scripted agents (scenario events): which agents are simulated along a path, and how
        self.simulated = self.agent_moving.copy() if self.config.agents == "idm" else np.zeros(K, bool)
        self.removed = np.zeros(K, bool)
        self.inserted: dict[int, AgentEvent] = {}
        self.brakes: dict[int, AgentEvent] = {}
        self.cut_ins: dict[int, AgentEvent] = {}
        self._route_path = _extended_path(self.route.points, PATH_EXTENSION)  # inserted agents drive past its end
        self._resolve_events(log, P, V)
        self.drivable = None
        if log.map is not None:
            from shapely.prepared import prep

            area = log.map.drivable_area.buffer(self.config.offroad_tolerance)
            self.drivable = prep(area)

    def _resolve_events(self, log: SceneLog, P: np.ndarray, V: np.ndarray) -> None:
        ids = list(log.objects.instance_ids)
        names: dict[str, int] = {}
        used: set[int] = set()
        start_xy = np.asarray(log.ego_poses[self.config.start_frame])[:2, 3]

        def lookup(ref: str, event: AgentEvent) -> int:
            if ref in names:
                return names[ref]
            if ref in ids:
                return ids.index(ref)
            known = sorted(names) + ids[:5] + (["..."] if len(ids) > 5 else [])
            raise ScenarioError(f"event {event.type}: no agent {ref!r} in scene {log.name!r} (known: {', '.join(known)})")

        for e in self.config.events:
            if e.type == "insert":
                if e.agent == "auto":
                    # a parked vehicle far from the ego's start, so that moving it changes nothing the cameras see
                    parked = [k for k in range(len(ids)) if not self.agent_moving[k] and k not in used
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
                self.inserted[k] = e
                self.simulated[k] = True
                self.agent_paths[k] = self._route_path
                if e.name:
                    if e.name in names:
                        raise ScenarioError(f"event insert: name {e.name!r} is given twice")
                    names[e.name] = k
                continue
            k = lookup(e.agent, e)
            if e.type == "remove":
                self.removed[k] = True
                self.simulated[k] = False
            elif e.type == "hard_brake":
                if self.agent_paths[k] is None:
                    raise ScenarioError(f"event hard_brake: agent {ids[k]!r} never moves in the log (insert it to script it)")
                self.brakes[k] = e
                self.simulated[k] = True
            elif e.type == "cut_in":
                if k not in self.inserted:
                    raise ScenarioError(f"event cut_in: agent {ids[k]!r} must be inserted by an earlier insert event")
                self.cut_ins[k] = e

    def lateral_offset(self, k: int, time_s: float) -> tuple[float, float]:
        """Offset [m] of inserted agent ``k`` to the left of the route at ``time_s`` [s], and its rate [m/s]
        (a cosine blend during a cut-in)."""
        ins = self.inserted.get(k)
        if ins is None:
            return 0.0, 0.0
        cut = self.cut_ins.get(k)
        t_rel = time_s - self.start_time_s
        if cut is None or t_rel <= cut.at_s:
            return ins.lateral_m, 0.0
        u = min((t_rel - cut.at_s) / cut.duration_s, 1.0)
        delta = cut.to_lateral_m - ins.lateral_m
        rate = delta * 0.5 * np.pi * np.sin(np.pi * u) / cut.duration_s if u < 1.0 else 0.0
        return ins.lateral_m + delta * 0.5 * (1.0 - np.cos(np.pi * u)), float(rate)

    @property
    def start_time_s(self) -> float:
        return float(self.log.timestamps_us[self.config.start_frame] - self.t0_us) * 1e-6

    # ---- time and logged facts -------------------------------------------------------------------------------
    def log_time_us(self, time_s: float) -> float:
        return self.t0_us + time_s * 1e6

    def logged_object_poses(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Logged object poses (K, 4, 4) and validity (K,) at ``time_s`` [s] (interpolated)."""
        return _interp_poses(self.log, self.log_time_us(time_s))

    def logged_ego_pose(self, time_s: float) -> np.ndarray:
        ts = self.log.timestamps_us
        t = self.log_time_us(time_s)
        i = int(np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2))
        w = float(np.clip((t - ts[i]) / (ts[i + 1] - ts[i]), 0.0, 1.0))
        Pi, Pj = self.log.ego_poses[i], self.log.ego_poses[i + 1]
        yaw = yaw_of(Pi) + w * wrap_angle(yaw_of(Pj) - yaw_of(Pi))
        pos = (1 - w) * Pi[:3, 3] + w * Pj[:3, 3]
        return pose_xy_yaw(pos[0], pos[1], yaw, pos[2])

    @property
    def end_time_s(self) -> float:
        return float(self.log.timestamps_us[-1] - self.t0_us) * 1e-6

    # ---- agents ----------------------------------------------------------------------------------------------
    def agent_poses(self, state: SimState) -> tuple[np.ndarray, np.ndarray]:
        """Agent poses (K, 4, 4) and validity (K,) in ``state`` (IDM agents at their simulated positions)."""
        poses, valid = self.logged_object_poses(state.time_s)
        ks = np.flatnonzero(self.simulated)
        if len(ks):
            xyz, yaws = np.empty((len(ks), 3)), np.empty(len(ks))
            for i, k in enumerate(ks):
                xy, yaw = self.agent_paths[k].interpolate(state.agent_s[k])
                if k in self.inserted:
                    lat, rate = self.lateral_offset(k, state.time_s)
                    xy = xy + lat * np.array([-np.sin(yaw), np.cos(yaw)])
                    yaw = yaw + np.arctan2(rate, max(state.agent_speed[k], 1.0))
                    z = self.sizes[k, 2] / 2.0  # box centre above the (flat) ground [m]
                else:
                    z = poses[k][2, 3]
                xyz[i], yaws[i] = (xy[0], xy[1], z), yaw
            poses[ks] = pose_xy_yaw(xyz[:, 0], xyz[:, 1], yaws, xyz[:, 2])  # one call for all: pose building is the cost
            valid[ks] = True
        valid[self.removed] = False
        return poses, valid

    def ego_box(self, ego: EgoState):
        """Shapely polygon of the ego footprint [m]."""
        v = self.config.vehicle
        return _box_polygon(ego.x + v.centre_offset * np.cos(ego.yaw), ego.y + v.centre_offset * np.sin(ego.yaw),
                            ego.yaw, v.length, v.width)

    def agent_boxes(self, poses: np.ndarray, valid: np.ndarray, near=None, reach: float = np.inf) -> list[tuple[int, object]]:
        """Shapely footprints of the valid agents; with ``near`` = (x, y) [m], only those whose box could reach within
        ``reach`` [m] of it (centre distance <= reach + half diagonal)."""
        ks = np.flatnonzero(valid)
        if near is not None and len(ks):
            d = np.hypot(poses[ks, 0, 3] - near[0], poses[ks, 1, 3] - near[1])
            ks = ks[d <= reach + 0.5 * np.hypot(self.sizes[ks, 0], self.sizes[ks, 1])]
        return [(k, _box_polygon(poses[k, 0, 3], poses[k, 1, 3], yaw_of(poses[k]), self.sizes[k, 0], self.sizes[k, 1]))
                for k in ks]


def logged_mean_speed(log: SceneLog) -> float:
    """The logged ego's mean speed over the whole log [m/s] (path length / duration)."""
    xy = np.asarray(log.ego_poses)[:, :2, 3]
    duration = float(log.timestamps_us[-1] - log.timestamps_us[0]) * 1e-6
    return float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum() / max(duration, 1e-9))


def _extended_path(xy: np.ndarray, extension: float) -> PolylinePath:
    xy = np.asarray(xy, dtype=np.float64)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 0.05]) if len(xy) > 1 else np.ones(len(xy), bool)
    xy = xy[keep]
    if len(xy) < 2:
        raise ScenarioError("a path needs at least two distinct logged positions (the object or ego never moves)")
    if extension > 0:
        d = xy[-1] - xy[-2]
        xy = np.vstack([xy, xy[-1] + d / np.linalg.norm(d) * extension])
    return PolylinePath(xy)


def _lane_route(log: SceneLog, lane_ids, start_xy) -> PolylinePath:
    """The route along the named map lanes (centrelines joined in order), from the ego's start projection on."""
    if log.map is None:
        raise ScenarioError(f"route lanes: scene {log.name!r} has no map")
    known = list(log.map.lane_ids)
    missing = [lid for lid in lane_ids if lid not in known]
    if missing:
        raise ScenarioError(f"route lanes: {', '.join(map(repr, missing))} not in the map of scene {log.name!r}")
    pts = np.concatenate([np.asarray(log.map.lanes[known.index(lid)].coords)[:, :2] for lid in lane_ids])
    full = PolylinePath(pts)
    s0 = float(full.project(np.asarray(start_xy)[None])[0][0])
    s = np.concatenate([[s0], full.s[full.s > s0 + 0.05]])
    return PolylinePath(full.interpolate(s)[0])


def _box_polygon(cx, cy, yaw, length, width):
    from shapely.geometry import Polygon

    c, s = np.cos(yaw), np.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    corners = [(hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw)]
    return Polygon([(cx + c * x - s * y, cy + s * x + c * y) for x, y in corners])


def reset(world: World, ego_offset=(0.0, 0.0, 0.0), speed: float | None = None) -> SimState:
    """Initial state: the ego at the logged pose of ``start_frame`` moved by ``ego_offset`` = (longitudinal [m],
    lateral [m], yaw [rad]) in its own frame, at the logged speed unless ``speed`` [m/s] is given."""
    cfg = world.config
    f = cfg.start_frame
    log = world.log
    time_s = float(log.timestamps_us[f] - world.t0_us) * 1e-6
    T0 = np.asarray(log.ego_poses[f]) @ pose_xy_yaw(ego_offset[0], ego_offset[1], ego_offset[2])
    if speed is None:
        dxy = np.linalg.norm(log.ego_poses[f + 1][:2, 3] - log.ego_poses[f][:2, 3])
        speed = float(dxy / ((log.timestamps_us[f + 1] - log.timestamps_us[f]) * 1e-6))
    ego = EgoState.from_pose(T0, speed).validate()
    K = len(log.objects)
    agent_s = np.zeros(K)
    agent_speed = np.zeros(K)
    poses, _ = world.logged_object_poses(time_s)
    later, _ = world.logged_object_poses(time_s + cfg.dt)
    route_s = float(world.route.project([[ego.x, ego.y]])[0][0])
    logged_start_s = float(world._route_path.project(log.ego_poses[f][:2, 3][None])[0][0])
    for k in np.flatnonzero(world.simulated):
        if k in world.inserted:
            agent_s[k] = logged_start_s + world.inserted[k].ahead_m
            agent_speed[k] = 0.0 if world.inserted[k].behavior == "stopped" else world.inserted[k].speed
        else:
            agent_s[k] = world.agent_paths[k].project(poses[k, :2, 3][None])[0][0]
            agent_speed[k] = np.linalg.norm(later[k, :2, 3] - poses[k, :2, 3]) / cfg.dt
    return SimState(0, time_s, ego, agent_s, agent_speed, route_s, {})


def step(world: World, state: SimState, accel: float, steer: float) -> SimState:
    """Advance one step with ego acceleration ``accel`` [m/s^2] and steering ``steer`` [rad]."""
    cfg = world.config
    ego = bicycle_step(state.ego, accel, steer, cfg.dt, cfg.vehicle)
    time_s = state.time_s + cfg.dt
    agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
    if world.simulated.any():
        agent_s, agent_speed = _agents_update(world, state)
    nxt = SimState(state.step + 1, time_s, ego, agent_s, agent_speed, state.route_s, {})
    route_s = advance_route(world, state.route_s, ego)
    events = _events(world, replace(nxt, route_s=route_s))
    return replace(nxt, route_s=route_s, events=events)


def advance_route(world: World, route_s: float, ego: EgoState) -> float:
    """Route progress [m] after moving to ``ego`` from progress ``route_s``: the projection onto the route, never
    going back, and ignoring projections that jump farther than one step could move (e.g. onto a crossing part)."""
    cfg = world.config
    s_new = float(world.route.project([[ego.x, ego.y]])[0][0])
    return max(route_s, s_new) if abs(s_new - route_s) < 5.0 + cfg.vehicle.max_speed * cfg.dt else route_s


def _agents_update(world: World, state: SimState):
    """Advance the simulated agents one step: IDM, constant speed, stopped, or a scripted hard brake."""
    cfg = world.config
    poses, valid = world.agent_poses(state)
    v = cfg.vehicle
    ego_obs = Obstacle((state.ego.x + v.centre_offset * np.cos(state.ego.yaw), state.ego.y + v.centre_offset * np.sin(state.ego.yaw)),
                       v.length, state.ego.speed, state.ego.yaw)
    agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
    others = [(k, Obstacle((poses[k, 0, 3], poses[k, 1, 3]), world.sizes[k, 0],
                           state.agent_speed[k] if world.simulated[k] else 0.0, yaw_of(poses[k]))) for k in np.flatnonzero(valid)]
    t_rel = state.time_s - world.start_time_s
    for k in np.flatnonzero(world.simulated):
        s0, v0 = state.agent_s[k], state.agent_speed[k]
        brake = world.brakes.get(k)
        behavior = world.inserted[k].behavior if k in world.inserted else "idm"
        if brake is not None and t_rel + 1e-9 >= brake.at_s:
            v1 = max(v0 - brake.decel * cfg.dt, 0.0)
            agent_s[k], agent_speed[k] = s0 + (v0 + v1) / 2.0 * cfg.dt, v1
        elif behavior == "stopped":
            agent_speed[k] = 0.0
        elif behavior == "constant":
            agent_s[k] = s0 + v0 * cfg.dt
        else:
            obstacles = [o for j, o in others if j != k] + [ego_obs]
            params = cfg.idm
            if k in world.inserted and world.inserted[k].speed > 0:
                params = replace(params, target_speed=world.inserted[k].speed)
            gap, lead_speed = find_leaders(world.agent_paths[k], s0, world.sizes[k, 0], obstacles)
            agent_s[k], agent_speed[k], _ = idm_step(s0, v0, gap, lead_speed, cfg.dt, params)
    return agent_s, agent_speed


def _events(world: World, state: SimState) -> dict:
    ego_poly = world.ego_box(state.ego)
    poses, valid = world.agent_poses(state)
    v = world.config.vehicle
    centre = (state.ego.x + v.centre_offset * np.cos(state.ego.yaw), state.ego.y + v.centre_offset * np.sin(state.ego.yaw))
    near = world.agent_boxes(poses, valid, near=centre, reach=0.5 * float(np.hypot(v.length, v.width)) + 0.01)
    hits = [world.log.objects.instance_ids[k] for k, poly in near if poly.intersects(ego_poly)]
    offroad = world.drivable is not None and not world.drivable.contains(ego_poly)
    completed = state.route_s >= world.route_length - world.config.route_completion_margin
    return {"collision": bool(hits), "collided_with": hits, "offroad": bool(offroad), "route_completed": bool(completed)}


EXPERT_RECOVERY_ERROR = 0.25  # [m] farther than this from the logged pose, the expert rejoins the log gently
EXPERT_RECOVERY_HORIZON = 1.0  # [s] ... aiming at the logged pose this far ahead instead of one step ahead


def expert(world: World, state: SimState) -> tuple[float, float]:
    """The log's action from ``state``: aim at the logged ego pose one step ahead (inverse bicycle, closed loop).

    Off the log (more than ``EXPERT_RECOVERY_ERROR`` from the logged pose at this time, e.g. a scenario that starts
    the ego 1.5 m to the side) it aims ``EXPERT_RECOVERY_HORIZON`` ahead instead: reaching the log in a single
    0.1 s step would need full steering lock and drive it into whatever stands beside the lane."""
    dt = world.config.dt
    here = world.logged_ego_pose(min(state.time_s, world.end_time_s))
    off = float(np.hypot(here[0, 3] - state.ego.x, here[1, 3] - state.ego.y))
    horizon = dt if off <= EXPERT_RECOVERY_ERROR else max(dt, min(EXPERT_RECOVERY_HORIZON, world.end_time_s - state.time_s))
    target = world.logged_ego_pose(min(state.time_s + horizon, world.end_time_s))
    return expert_action(state.ego, target, horizon, world.config.vehicle)
