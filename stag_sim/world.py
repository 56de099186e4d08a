"""The closed-loop world: the stateless core of a StagDrive episode (Waymax style).

:class:`World` is a frozen record of everything fixed for an episode: the scene's logged tracks, the route (the
logged ego path, or map lanes), the drivable area, and the :class:`~stag_sim.agent_sources.AgentSource` that
places and moves the other agents (the log's agents with the scenario's events, or an external simulator's).
Everything that changes lives in :class:`SimState`; :func:`reset` and :func:`step` map a state and an action to
the next state without mutating anything. The Gymnasium env (``stag_sim.envs``) is the only stateful layer
around it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace

import numpy as np

from stag_sim.agent_sources import AGENT_MODES, AgentEvent, AgentSource, ScriptedAgents, extended_path
from stag_sim.dynamics import EgoState, VehicleParameters, bicycle_step, expert_action
from stag_sim.errors import ValidationError
from stag_sim.ground import GroundModel
from stag_sim.road_rules import LaneLimit, LightOverride, RoadRules, episode_lights
from stag_sim.geometry import interpolate_poses, matrix_to_quat, yaw_of
from stag_sim.scene_log import SceneLog
from stag_sim.traffic import IDMParameters, PolylinePath

DRIVABLE_SOURCES = ("auto", "map", "lidar", "none")  # WorldConfig.drivable_source
LIDAR_GROUND = "lidar ground"  # World.drivable_source of a drivable area from the LiDAR (no map)


#: The route of a log whose ego never moves: this far straight ahead of its logged pose [m].
STANDSTILL_ROUTE_M = 10.0


@dataclass(frozen=True)
class WorldConfig:
    """Episode settings shared by every step.

    Attributes:
        dt: simulation step [s].
        agents: ``log_replay`` or ``idm``.
        idm: IDM constants for ``agents="idm"``.
        vehicle: ego vehicle geometry and limits.
        start_frame: logged frame the episode starts at.
        route_completion_margin: the route is complete this close to its end [m], at most a quarter of the route
            (:attr:`World.completion_margin`: a 2.5 m real log is not complete after 0.5 m).
        offroad_tolerance: the ego footprint may leave the drivable area by this much [m].
        route_lanes: map lane ids whose centrelines, joined, are the route (from the ego's start on); empty: the
            logged ego path (:data:`STANDSTILL_ROUTE_M` straight ahead where the logged ego never moves).
        route_max_length: the route ends this far from its start [m] (None: where the path ends).
        events: scripted agent events (scenarios).
        drivable_source: where the drivable area (the off-road check and DAC) comes from: ``"map"`` (the log's
            map; none without one), ``"lidar"`` (the LiDAR ground connected to the driven corridor,
            :func:`stag_sim.drivable.lidar_drivable_area`; an error without LiDAR), ``"auto"`` (the map where the
            log has one, else the LiDAR ground where it has LiDAR, else none) or ``"none"`` (nothing is off-road).
        lights: a scenario's schedules for some of the map's traffic lights (:class:`~stag_sim.road_rules.
            LightOverride`, times after the episode start).
        speed_limits: a scenario's speed limits for some map lanes (:class:`~stag_sim.road_rules.LaneLimit`).
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
    drivable_source: str = "auto"
    lights: tuple[LightOverride, ...] = ()
    speed_limits: tuple[LaneLimit, ...] = ()

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
        if self.drivable_source not in DRIVABLE_SOURCES:
            raise ValidationError(f"WorldConfig.drivable_source: {self.drivable_source!r} is not one of "
                                  f"{', '.join(DRIVABLE_SOURCES)}")
        for e in self.events:
            if not isinstance(e, AgentEvent):
                raise ValidationError(f"WorldConfig.events: expected AgentEvent items, got {type(e).__name__}")
            e.validate()
        for o in self.lights:
            if not isinstance(o, LightOverride):
                raise ValidationError(f"WorldConfig.lights: expected LightOverride items, got {type(o).__name__}")
            o.validate()
        for lim in self.speed_limits:
            if not isinstance(lim, LaneLimit):
                raise ValidationError(f"WorldConfig.speed_limits: expected LaneLimit items, got {type(lim).__name__}")
            lim.validate()
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "WorldConfig":
        """Build from plain values (nested ``idm`` / ``vehicle`` mappings, ``events`` as mappings); an unknown key is
        an error naming its path, e.g. ``world.idm.v0: unknown setting`` (:func:`stag_sim.config.from_mapping`)."""
        from stag_sim.config import from_mapping

        return from_mapping(cls, values, ("world",))


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
        external_agents: (K, 4, 4) poses and (K,) validity of the agents an external simulator reported for this
            state (:class:`~stag_sim.agent_sources.ExternalAgents`); None otherwise.
    """

    step: int
    time_s: float
    ego: EgoState
    agent_s: np.ndarray
    agent_speed: np.ndarray
    route_s: float
    events: dict = field(default_factory=dict)
    external_agents: tuple[np.ndarray, np.ndarray] | None = None


def _interp_poses(log: SceneLog, t_us: float) -> tuple[np.ndarray, np.ndarray]:
    """Object poses (K, 4, 4) and validity (K,) at time ``t_us`` [us] (:func:`~stag_sim.geometry.interpolate_poses`)."""
    ts = log.timestamps_us
    i = min(max(int(np.searchsorted(ts, t_us, side="right")) - 1, 0), len(ts) - 1)
    j = min(i + 1, len(ts) - 1)
    w = 0.0 if j == i else min(max(float((t_us - ts[i]) / (ts[j] - ts[i])), 0.0), 1.0)
    P = np.asarray(log.objects.poses)
    V = np.asarray(log.objects.valid)
    Pi, Pj = P[i], P[j]
    both = V[i] & V[j]
    out = Pi.copy()
    if w > 0 and len(Pi):
        out = np.where(both[:, None, None], interpolate_poses(Pi, Pj, w), Pi)
    valid = V[i] if w < 0.5 else V[j]
    return out, valid | both


@dataclass(frozen=True, eq=False)
class World:
    """Fixed facts of an episode on one scene (see the module docstring); build one with :meth:`build`.

    Attributes:
        log: the scene log.
        config: the episode settings.
        t0_us: timestamp of the log's first frame [us].
        route: the ego's route; route_length: its length [m].
        sizes: (K, 3) object box sizes (length, width, height) [m].
        drivable: :attr:`drivable_area` grown by ``config.offroad_tolerance`` (a prepared shapely geometry), or None.
        agents: where the other agents are and how they move (:class:`~stag_sim.agent_sources.AgentSource`).
        ego_quats: (T, 4) quaternions of the logged ego rotations (for fast interpolation).
        ground: lifts the planar ego state into the log's 3D frame (:class:`~stag_sim.ground.GroundModel`: logged
            height, roll and pitch near the logged path, the LiDAR ground away from it); None for a planar log.
        drivable_area: the drivable area (shapely Polygon / MultiPolygon, world xy [m]) or None (nothing is
            off-road); drivable_source: where it came from, ``"map"`` or ``"lidar ground"`` (None without one).
        rules: lanes, lane graph, speed limits and traffic lights with this episode's schedules
            (:class:`~stag_sim.road_rules.RoadRules`), or None for a log without a lane map.
    """

    log: SceneLog
    config: WorldConfig
    t0_us: int
    route: PolylinePath
    route_length: float
    sizes: np.ndarray
    drivable: object
    agents: AgentSource
    ego_quats: np.ndarray
    ground: GroundModel | None = None
    drivable_area: object = None
    drivable_source: str | None = None
    rules: RoadRules | None = None

    @classmethod
    def build(cls, log: SceneLog, config: WorldConfig | None = None, agents: AgentSource | None = None) -> "World":
        """The world of an episode on ``log`` with ``config``; ``agents`` default to the log's agents with the
        config's agent mode and events (:class:`~stag_sim.agent_sources.ScriptedAgents`). Worlds are immutable:
        one log and config give one world, shared while anyone holds it (sub-envs, random-start resets)."""
        config = (config or WorldConfig()).validate()
        if agents is None:
            key = (id(log), config)
            world = _WORLDS.get(key)
            if world is None or world.log is not log:
                world = _WORLDS[key] = cls._build(log, config, None)
            return world
        return cls._build(log, config, agents)

    @classmethod
    def _build(cls, log: SceneLog, config: WorldConfig, agents: AgentSource | None) -> "World":
        T = log.num_frames
        if config.start_frame >= T - 1:
            raise ValidationError(f"WorldConfig.start_frame: {config.start_frame} leaves no logged frame to drive toward (scene has {T})")
        ego = np.asarray(log.ego_poses)
        start_xy = ego[config.start_frame, :2, 3]
        if config.route_lanes:
            route = lane_route(log, config.route_lanes, start_xy)
        else:
            xy = ego[config.start_frame:, :2, 3]
            if np.linalg.norm(xy - xy[0], axis=1).max() > 0.05:
                route = extended_path(xy, extension=0.0)
            else:  # the logged ego stands still: the route is the road straight ahead of it
                heading = float(yaw_of(ego[config.start_frame]))
                route = PolylinePath(np.array([xy[0], xy[0] + STANDSTILL_ROUTE_M * np.array([np.cos(heading),
                                                                                              np.sin(heading)])]))
        if config.route_max_length is not None and route.length > config.route_max_length:
            keep = route.s[route.s < config.route_max_length]
            route = PolylinePath(route.interpolate(np.append(keep, config.route_max_length))[0])
        if log not in _LOG_FACTS:
            _LOG_FACTS[log] = (GroundModel.from_log(log), matrix_to_quat(ego[:, :3, :3]))
        ground, ego_quats = _LOG_FACTS[log]
        area, source, drivable = _drivable(log, config, ground)
        rules = None
        if log.map is not None:
            start_s = float(log.timestamps_us[config.start_frame] - log.timestamps_us[0]) * 1e-6
            rules = RoadRules.from_map(log.map, episode_lights(log.map.traffic_lights, config.lights, start_s),
                                       config.speed_limits)
        elif config.lights or config.speed_limits:
            what = config.lights[0].light if config.lights else config.speed_limits[0].lane
            raise ValidationError(f"WorldConfig.{'lights' if config.lights else 'speed_limits'}: the scene has no "
                                  f"map (got {what!r})")
        if agents is None:
            agents = ScriptedAgents.build(log, config, route)
        return cls(log, config, int(log.timestamps_us[0]), route, route.length, np.asarray(log.objects.sizes),
                   drivable, agents, ego_quats, ground, area, source, rules)

    def with_agents(self, agents: AgentSource) -> "World":
        """The same world with another agent source."""
        return replace(self, agents=agents)

    def ego_pose(self, ego: EgoState) -> np.ndarray:
        """(4, 4) ``T_world_from_ego`` of the planar ``ego`` in the log's 3D frame: on the logged ground (height,
        roll, pitch; :attr:`ground`), or the planar pose on a planar log. Cameras and the ego body hang off it."""
        return ego.pose() if self.ground is None else self.ground.pose(ego.x, ego.y, ego.yaw)

    @property
    def completion_margin(self) -> float:
        """How close to the route's end it counts as completed [m]: ``config.route_completion_margin``, at most a
        quarter of the route (a short real log keeps most of its route to drive)."""
        return float(min(self.config.route_completion_margin, 0.25 * self.route_length))

    @property
    def usable_route_length(self) -> float:
        """The route length that counts as driving it all [m]: its length less :attr:`completion_margin`."""
        return float(max(self.route_length - self.completion_margin, 1e-9))

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
        q = self.ego_quats
        return interpolate_poses(self.log.ego_poses[i], self.log.ego_poses[i + 1], w, q[i], q[i + 1])

    @property
    def end_time_s(self) -> float:
        return float(self.log.timestamps_us[-1] - self.t0_us) * 1e-6

    # ---- agents ----------------------------------------------------------------------------------------------
    def agent_poses(self, state: SimState) -> tuple[np.ndarray, np.ndarray]:
        """Agent poses (K, 4, 4) and validity (K,) in ``state`` (from :attr:`agents`)."""
        return self.agents.poses(self, state)

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


#: (log, WorldConfig) -> World (World.build with the log's own agents) while anyone holds it: the sub-envs of a
#: vector env share their worlds, and a world (which holds its log) never outlives its users here
_WORLDS: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
#: per log: its GroundModel (or None) and logged ego quaternions, shared by every world of the log
_LOG_FACTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: per log: (drivable source, tolerance, vehicle) -> (area, source, prepared grown area); every world of a log
#: shares them (a random-start reset builds a world; growing and preparing the area is most of that)
_DRIVABLE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _drivable(log: SceneLog, config: WorldConfig, ground: GroundModel | None) -> tuple[object, str | None, object]:
    """The drivable area, its source and the prepared area grown by ``offroad_tolerance`` (None, None, None
    without one); computed once per log and settings."""
    key = (config.drivable_source, config.offroad_tolerance, config.vehicle)
    per_log = _DRIVABLE.setdefault(log, {})
    if key not in per_log:
        area, source = _drivable_area(log, config, ground)
        drivable = None
        if area is not None:
            from shapely.prepared import prep

            drivable = prep(area.buffer(config.offroad_tolerance))
        per_log[key] = (area, source, drivable)
    return per_log[key]


def _drivable_area(log: SceneLog, config: WorldConfig, ground: GroundModel | None) -> tuple[object, str | None]:
    """The drivable area of ``log`` as ``config.drivable_source`` asks, and its source (``"map"`` /
    ``"lidar ground"``); (None, None) for none."""
    src = config.drivable_source
    if src == "none" or (src == "map" and log.map is None):
        return None, None
    if log.map is not None and src in ("map", "auto"):
        return log.map.drivable_area, "map"
    if log.lidar is None:
        if src == "lidar":
            raise ValidationError(f"WorldConfig.drivable_source: 'lidar' needs LiDAR, scene {log.name!r} has none")
        return None, None
    from stag_sim.drivable import lidar_drivable_area

    v = config.vehicle
    area = lidar_drivable_area(log, v.length, v.width, v.centre_offset, grid=ground.grid if ground else None)
    return (area, LIDAR_GROUND) if area is not None else (None, None)


def lane_route(log: SceneLog, lane_ids, start_xy) -> PolylinePath:
    """The route along the named map lanes (centrelines joined in order), from the ego's start projection on."""
    from stag_sim.road_rules import lane_polyline

    pts = lane_polyline(log.map, lane_ids, "route lanes", log.name)
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


def _reset_values(offset, speed) -> tuple[tuple[float, float, float], float | None]:
    """The reset's ``ego_offset`` and ``speed`` as numbers; one line naming them otherwise."""
    try:
        out = tuple(float(v) for v in offset)
        v = None if speed is None else float(speed)
    except (TypeError, ValueError):
        out, v = (), None
    if len(out) != 3 or not all(np.isfinite(out)) or (speed is not None and not (v is not None and v >= 0)):
        raise ValidationError(f"reset options: expected ego_offset=(longitudinal [m], lateral [m], yaw [rad]) and "
                              f"speed >= 0 [m/s] or None, got ego_offset={offset!r}, speed={speed!r}")
    return out, v


def reset(world: World, ego_offset=(0.0, 0.0, 0.0), speed: float | None = None) -> SimState:
    """Initial state: the ego at the logged pose of ``start_frame`` moved by ``ego_offset`` = (longitudinal [m],
    lateral [m], yaw [rad]) in its own frame, at the logged speed unless ``speed`` [m/s] is given."""
    cfg = world.config
    f = cfg.start_frame
    log = world.log
    time_s = float(log.timestamps_us[f] - world.t0_us) * 1e-6
    ego_offset, speed = _reset_values(ego_offset, speed)
    offset = EgoState(*ego_offset, 0.0).pose()  # = pose_xy_yaw
    T0 = np.asarray(log.ego_poses[f]) @ offset
    if speed is None:
        dxy = np.linalg.norm(log.ego_poses[f + 1][:2, 3] - log.ego_poses[f][:2, 3])
        speed = float(dxy / ((log.timestamps_us[f + 1] - log.timestamps_us[f]) * 1e-6))
    ego = EgoState.from_pose(T0, speed).validate()
    agent_s, agent_speed = world.agents.initial(world, time_s)
    route_s = float(world.route.project([[ego.x, ego.y]])[0][0])
    return SimState(0, time_s, ego, agent_s, agent_speed, route_s, {})


def step(world: World, state: SimState, accel: float, steer: float) -> SimState:
    """Advance one step with ego acceleration ``accel`` [m/s^2] and steering ``steer`` [rad]."""
    cfg = world.config
    ego = bicycle_step(state.ego, accel, steer, cfg.dt, cfg.vehicle)
    time_s = state.time_s + cfg.dt
    agent_s, agent_speed = world.agents.advance(world, state)
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


def _events(world: World, state: SimState) -> dict:
    ego_poly = world.ego_box(state.ego)
    poses, valid = world.agent_poses(state)
    v = world.config.vehicle
    centre = (state.ego.x + v.centre_offset * np.cos(state.ego.yaw), state.ego.y + v.centre_offset * np.sin(state.ego.yaw))
    near = world.agent_boxes(poses, valid, near=centre, reach=0.5 * float(np.hypot(v.length, v.width)) + 0.01)
    hits = [world.log.objects.instance_ids[k] for k, poly in near if poly.intersects(ego_poly)]
    offroad = world.drivable is not None and not world.drivable.contains(ego_poly)
    completed = state.route_s >= world.usable_route_length
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
