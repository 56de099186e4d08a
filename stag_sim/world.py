"""The closed-loop world: the stateless core of a StagDrive episode (Waymax style).

:class:`World` holds everything fixed for an episode — the scene's logged tracks, the route (the logged ego
path), the drivable area, the agents' paths — and :func:`reset` / :func:`step` map a :class:`SimState` and an
action to the next :class:`SimState` without mutating anything. The Gymnasium env (``stag_sim.envs``) is the
only stateful layer around it.

Other agents are either replayed from the log (poses interpolated at the simulation time) or driven by IDM
along their own logged path (extended straight past its end), reacting to each other and to the ego.
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
MOVING_THRESHOLD = 1.0  # [m] an object that travels less than this over the log is parked (never driven by IDM)
PATH_EXTENSION = 200.0  # [m] paths (route, IDM) continue straight past their logged end


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
    """

    dt: float = 0.1  # [s]
    agents: str = "log_replay"
    idm: IDMParameters = field(default_factory=IDMParameters)
    vehicle: VehicleParameters = field(default_factory=VehicleParameters)
    start_frame: int = 0
    route_completion_margin: float = 2.0  # [m]
    offroad_tolerance: float = 0.1  # [m]

    def validate(self) -> "WorldConfig":
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValidationError(f"WorldConfig.dt: must be > 0 s, got {self.dt}")
        if self.agents not in AGENT_MODES:
            raise ValidationError(f"WorldConfig.agents: {self.agents!r} is not one of {', '.join(AGENT_MODES)}")
        self.idm.validate()
        self.vehicle.validate()
        if self.start_frame < 0:
            raise ValidationError(f"WorldConfig.start_frame: must be >= 0, got {self.start_frame}")
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
        self.route = _extended_path(ego[self.config.start_frame:, :2, 3], extension=0.0)
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
        self.drivable = None
        if log.map is not None:
            from shapely.prepared import prep

            area = log.map.drivable_area.buffer(self.config.offroad_tolerance)
            self.drivable = prep(area)

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
        if self.config.agents == "idm":
            for k in np.flatnonzero(self.agent_moving):
                xy, yaw = self.agent_paths[k].interpolate(state.agent_s[k])
                poses[k] = pose_xy_yaw(xy[0], xy[1], yaw, poses[k][2, 3])
                valid[k] = True
        return poses, valid

    def ego_box(self, ego: EgoState):
        """Shapely polygon of the ego footprint [m]."""
        v = self.config.vehicle
        return _box_polygon(ego.x + v.centre_offset * np.cos(ego.yaw), ego.y + v.centre_offset * np.sin(ego.yaw),
                            ego.yaw, v.length, v.width)

    def agent_boxes(self, poses: np.ndarray, valid: np.ndarray) -> list[tuple[int, object]]:
        return [(k, _box_polygon(poses[k, 0, 3], poses[k, 1, 3], yaw_of(poses[k]), self.sizes[k, 0], self.sizes[k, 1]))
                for k in np.flatnonzero(valid)]


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
    if cfg.agents == "idm":
        poses, _ = world.logged_object_poses(time_s)
        later, _ = world.logged_object_poses(time_s + cfg.dt)
        for k in np.flatnonzero(world.agent_moving):
            agent_s[k] = world.agent_paths[k].project(poses[k, :2, 3][None])[0][0]
            agent_speed[k] = np.linalg.norm(later[k, :2, 3] - poses[k, :2, 3]) / cfg.dt
    route_s = float(world.route.project([[ego.x, ego.y]])[0][0])
    return SimState(0, time_s, ego, agent_s, agent_speed, route_s, {})


def step(world: World, state: SimState, accel: float, steer: float) -> SimState:
    """Advance one step with ego acceleration ``accel`` [m/s^2] and steering ``steer`` [rad]."""
    cfg = world.config
    ego = bicycle_step(state.ego, accel, steer, cfg.dt, cfg.vehicle)
    time_s = state.time_s + cfg.dt
    agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
    if cfg.agents == "idm":
        agent_s, agent_speed = _idm_update(world, state, ego)
    nxt = SimState(state.step + 1, time_s, ego, agent_s, agent_speed, state.route_s, {})
    # progress: projection onto the route, never jumping back more than the step could have moved
    s_new = float(world.route.project([[ego.x, ego.y]])[0][0])
    route_s = max(state.route_s, s_new) if abs(s_new - state.route_s) < 5.0 + cfg.vehicle.max_speed * cfg.dt else state.route_s
    events = _events(world, replace(nxt, route_s=route_s))
    return replace(nxt, route_s=route_s, events=events)


def _idm_update(world: World, state: SimState, ego_next: EgoState):
    cfg = world.config
    poses, valid = world.agent_poses(state)
    v = cfg.vehicle
    ego_obs = Obstacle((state.ego.x + v.centre_offset * np.cos(state.ego.yaw), state.ego.y + v.centre_offset * np.sin(state.ego.yaw)),
                       v.length, state.ego.speed, state.ego.yaw)
    agent_s, agent_speed = state.agent_s.copy(), state.agent_speed.copy()
    others = [(k, Obstacle((poses[k, 0, 3], poses[k, 1, 3]), world.sizes[k, 0],
                           state.agent_speed[k] if world.agent_moving[k] else 0.0, yaw_of(poses[k]))) for k in np.flatnonzero(valid)]
    for k in np.flatnonzero(world.agent_moving):
        obstacles = [o for j, o in others if j != k] + [ego_obs]
        gap, lead_speed = find_leaders(world.agent_paths[k], state.agent_s[k], world.sizes[k, 0], obstacles)
        agent_s[k], agent_speed[k], _ = idm_step(state.agent_s[k], state.agent_speed[k], gap, lead_speed, cfg.dt, cfg.idm)
    return agent_s, agent_speed


def _events(world: World, state: SimState) -> dict:
    ego_poly = world.ego_box(state.ego)
    poses, valid = world.agent_poses(state)
    hits = [world.log.objects.instance_ids[k] for k, poly in world.agent_boxes(poses, valid) if poly.intersects(ego_poly)]
    offroad = world.drivable is not None and not world.drivable.contains(ego_poly)
    completed = state.route_s >= world.route_length - world.config.route_completion_margin
    return {"collision": bool(hits), "collided_with": hits, "offroad": bool(offroad), "route_completed": bool(completed)}


def expert(world: World, state: SimState) -> tuple[float, float]:
    """The log's action from ``state``: aim at the logged ego pose one step ahead (inverse bicycle, closed loop)."""
    target = world.logged_ego_pose(min(state.time_s + world.config.dt, world.end_time_s))
    return expert_action(state.ego, target, world.config.dt, world.config.vehicle)
