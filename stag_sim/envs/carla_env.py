"""CARLA co-simulation env: CARLA runs the world (physics, traffic, scenario actors), StagDrive renders the cameras.

Two modes (``cosim={"mode": ...}``):

- ``carla_drives``: the env action becomes a ``carla.VehicleControl`` (throttle / brake / steer, normalised by the
  ego's limits) on CARLA's ego; after ``world.tick()`` the ego pose is read back through the alignment.
- ``stag_drives``: StagDrive's kinematic bicycle moves the ego, and the CARLA ego (physics off, as CARLA's own SUMO
  co-simulation does with mirrored vehicles) is teleported to match, keeping CARLA's road height, so CARLA's Traffic
  Manager and scenario actors react to where it is. Its velocity is sent too (``set_target_velocity``); whether a
  live server reports it for a kinematic actor has not been checked.

In both, CARLA's other vehicles and walkers are drawn with the scene's object clouds (each CARLA actor near the ego
borrows the free scene object of its category with the closest size, for as long as it stays in range) at their
CARLA poses; the log's own agents are not drawn and not collided with (CARLA owns the traffic). A collision (it
terminates the episode) is a hit on CARLA's collision sensor or our ego box overlapping a CARLA actor's box (a
kinematic ego may not raise sensor hits); lane invasions (CARLA's sensor) are reported in ``info``; off-road and
route progress are measured on the scene's map as in StagDrive-v0.

The scene and CARLA's map are different places: the :class:`~stag_sim.carla_bridge.Alignment` puts the log's
start pose on the CARLA ego's spawn point (or use ``cosim={"alignment": T_scene_from_carla}``). See docs/carla.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stag_sim.agent_sources import ExternalAgents
from stag_sim.carla_bridge import Alignment, BridgeConfig, CarlaAgent, CarlaBridge, parse_address
from stag_sim.carla_bridge.bridge import DEFAULT_EGO_FILTER, DEFAULT_TM_PORT
from stag_sim.config import from_mapping
from stag_sim.dynamics import EgoState, bicycle_step, wrap_angle
from stag_sim.envs.stag_drive import StagDriveEnv
from stag_sim.errors import BridgeError, ValidationError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.world import SimState, advance_route

COSIM_MODES = ("carla_drives", "stag_drives")


@dataclass(frozen=True)
class CoSimConfig:
    """How the env and CARLA share the episode.

    Attributes:
        mode: ``carla_drives`` or ``stag_drives`` (module docstring).
        spawn_point: index of the CARLA map spawn point for the ego (ignored with ``attach_role_name``).
        ego_filter: blueprint filter of the ego vehicle.
        attach_role_name: use an existing vehicle with this ``role_name`` (e.g. scenario_runner's ``hero``)
            instead of spawning one; it is never destroyed by StagDrive.
        alignment: (4, 4) ``T_scene_from_carla`` (right-handed, see stag_sim.carla_bridge.frames); None: put the
            log's start pose on the CARLA ego where it stands after ``settle_ticks``.
        num_traffic: Traffic-Manager vehicles spawned at random spawn points each episode (from the env's seed).
        settle_ticks: ticks (>= 1) after spawning so the ego drops onto CARLA's road before the episode starts.
        match_range: CARLA actors within this distance of the ego are drawn [m].
        tm_port: Traffic Manager port.
        timeout: client timeout [s].
        no_rendering: switch CARLA's own rendering off (StagDrive renders the cameras).
        external_clock: another client (scenario_runner) runs synchronous mode and ticks; the env follows its
            ticks (see :class:`~stag_sim.carla_bridge.BridgeConfig`).
    """

    mode: str = "stag_drives"
    spawn_point: int = 0
    ego_filter: str = DEFAULT_EGO_FILTER
    attach_role_name: str | None = None
    alignment: Any = None
    num_traffic: int = 0
    settle_ticks: int = 5
    match_range: float = 80.0  # [m]
    tm_port: int = DEFAULT_TM_PORT
    timeout: float = 10.0  # [s]
    no_rendering: bool = False
    external_clock: bool = False

    def validate(self) -> "CoSimConfig":
        if self.mode not in COSIM_MODES:
            raise ValidationError(f"cosim.mode: {self.mode!r} is not one of {', '.join(COSIM_MODES)}")
        for name in ("num_traffic", "spawn_point"):
            if int(getattr(self, name)) < 0:
                raise ValidationError(f"cosim.{name}: must be >= 0, got {getattr(self, name)}")
        if int(self.settle_ticks) < 1:  # a freshly spawned actor has no pose on the client before one tick
            raise ValidationError(f"cosim.settle_ticks: must be >= 1, got {self.settle_ticks}")
        if not self.match_range > 0:
            raise ValidationError(f"cosim.match_range: must be > 0 m, got {self.match_range}")
        if self.alignment is not None:
            Alignment(np.asarray(self.alignment, np.float64)).validate()
        return self

    @classmethod
    def from_value(cls, value) -> "CoSimConfig":
        if isinstance(value, cls):
            return value.validate()
        return from_mapping(cls, dict(value or {}), ("cosim",))


def _footprint(agent: CarlaAgent):
    """Shapely polygon of a CARLA actor's box seen from above [m]."""
    from shapely.geometry import Polygon

    half = agent.size[:2] / 2.0
    corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * half
    T = agent.T_scene_from_box
    return Polygon(corners @ T[:2, :2].T + T[:2, 3])


def _category_kind(category: str) -> str:
    """``vehicle`` / ``pedestrian`` / other, for nuScenes-style scene categories."""
    if category.startswith("vehicle"):
        return "vehicle"
    if category.startswith("human") or "pedestrian" in category:
        return "pedestrian"
    return "other"


class CarlaCoSimEnv(StagDriveEnv):
    """StagDrive-v0 with CARLA as the world (module docstring). Same spaces, reward and info as
    :class:`~stag_sim.envs.stag_drive.StagDriveEnv`, plus ``info["lane_invasion"]`` and ``info["carla"]``: ``mode``,
    ``collisions`` [{with, type, impulse [N s]}], ``lane_invasions`` [[marking types]], ``agents_drawn`` /
    ``agents_not_drawn`` and ``assignment`` {actor: scene instance id}. CARLA actors are named by episode-local
    labels (``carla-0``, ``carla-1``, ... in order of first sight) so the same seed gives the same info on a
    server whose frame counter and actor ids keep growing; :attr:`carla_actor_ids` maps labels to CARLA actor ids
    and :attr:`carla_frame` is the server frame of the last tick.

    Args:
        carla: ``"HOST:PORT"`` or a connected/unconnected :class:`CarlaBridge` (then the caller owns and closes it;
            its ``dt`` must equal the env step).
        cosim: :class:`CoSimConfig` or a dict of its fields.
        carla_module: the ``carla`` module (tests pass the offline stand-in); default the real client.
        **kwargs: everything :class:`StagDriveEnv` accepts (scene, render_mode, renderer, settings).

    Reset options (besides StagDrive-v0's): ``carla_actors``: a list of ``{"type_filter": "vehicle.*",
    "pose": (4, 4) T_scene_from_actor, "autopilot": False}`` spawned in CARLA for this episode.
    """

    def __init__(self, carla: str | CarlaBridge = "127.0.0.1:2000", cosim=None, carla_module=None, **kwargs: Any) -> None:
        self.cosim = CoSimConfig.from_value(cosim)
        self.bridge = None
        super().__init__(**kwargs)
        timed = sorted({e.type for e in self.world.config.events if e.type in ("hard_brake", "cut_in")})
        if timed:
            raise ValidationError(f"CarlaCoSimEnv: scenario events {', '.join(timed)} cannot be scripted through the "
                                  "Traffic Manager; run them with scenario_runner (cosim attach_role_name) instead")
        dt = self.world.config.dt
        if isinstance(carla, CarlaBridge):
            if not np.isclose(carla.config.dt, dt):
                raise BridgeError(f"CarlaCoSimEnv: the bridge steps {carla.config.dt} s but the env steps {dt} s")
            self.bridge, self._owns_bridge = carla, False
        else:
            host, port = parse_address(carla)
            c = self.cosim
            self.bridge = CarlaBridge(BridgeConfig(host=host, port=port, timeout=c.timeout, dt=dt, tm_port=c.tm_port,
                                                   no_rendering=c.no_rendering, external_clock=c.external_clock),
                                      carla_module=carla_module)
            self._owns_bridge = True
        if self.bridge.world is None:
            self.bridge.connect()
        K = len(self.log.objects)
        self._kinds = [_category_kind(c) for c in self.log.objects.categories]
        self._sizes = np.asarray(self.log.objects.sizes, np.float64).reshape(K, 3)
        self._assigned: dict[int, int] = {}  # CARLA actor id -> scene object index
        self.carla_actor_ids: dict[str, int] = {}  # episode label -> CARLA actor id
        self._labels: dict[int, str] = {}
        self.carla_frame = -1
        # the agents are CARLA's actors: the parent's observation, BEV and events then draw and test them
        self.world = self.world.with_agents(ExternalAgents(self.world.agents))
        self._carla_info: dict = {}

    # ---- episode -----------------------------------------------------------------------------------------------
    def _reset_state(self, options: dict | None) -> dict:
        options = dict(options or {})
        actors = [dict(spec) for spec in options.pop("carla_actors", [])]
        for spec in actors:
            if set(spec) - {"type_filter", "pose", "autopilot"} or "pose" not in spec:
                raise ValidationError(f"reset option carla_actors: each needs 'pose' (+ 'type_filter', 'autopilot'), got keys {sorted(spec)}")
        super()._reset_state(options)
        b, c = self.bridge, self.cosim
        b.destroy_spawned()
        veh = self.world.config.vehicle
        if c.attach_role_name:
            b.attach_ego(c.attach_role_name, rear_axle_to_centre=veh.centre_offset)
        elif c.alignment is None:
            b.spawn_ego(c.spawn_point, c.ego_filter, rear_axle_to_centre=veh.centre_offset)
        else:
            b.alignment = Alignment(np.asarray(c.alignment, np.float64)).validate()
            loc, rot = b.alignment.carla_from_scene(self._start_pose() @ pose_xy_yaw(veh.centre_offset, 0.0, 0.0))
            b.spawn_ego((loc + [0.0, 0.0, 0.5], rot), c.ego_filter, rear_axle_to_centre=veh.centre_offset)
        for _ in range(c.settle_ticks):
            b.tick()
        if c.alignment is None:
            b.align_ego_to(self._start_pose())
        b.set_ego_physics(c.mode == "carla_drives")
        rng = np.random.default_rng(self.np_random.integers(2**63))
        if c.num_traffic:
            b.spawn_traffic(c.num_traffic, rng)
        for spec in actors + self._scenario_actors():
            b.spawn_actor(spec.get("type_filter", "vehicle.*"), spec["pose"], bool(spec.get("autopilot", False)), rng=rng)
        e = self._state.ego
        b.set_ego_pose(e.pose(), velocity=self._velocity(e))
        self.carla_frame = b.tick()
        if c.mode == "carla_drives":
            self._state = replace(self._state, ego=replace(self._ego_from_carla(e, e.steer), accel=0.0, yaw_rate=0.0))
        b.pop_events()  # spawning and settling are not the policy's fault
        self._assigned, self._labels, self.carla_actor_ids = {}, {}, {}
        self._update_agents(b.agents(), [], [])
        return self._info(self._state, None)

    def _scenario_actors(self) -> list[dict]:
        """The scenario's ``insert`` events as CARLA actors at their start poses (scene frame): Traffic-Manager
        autopilot unless ``behavior: stopped``. Timed events (hard brake, cut-in) need a scenario runner in
        CARLA (e.g. scenario_runner with ``attach_role_name``): they are refused in ``__init__``."""
        w, scripted = self.world, self.world.agents.scripted
        if not scripted.inserted:
            return []
        poses, _ = scripted.poses(w, self._state)  # the scripted start poses, not CARLA's
        return [{"type_filter": "vehicle.*", "pose": poses[k], "autopilot": e.behavior != "stopped"}
                for k, e in sorted(scripted.inserted.items())]

    def _start_pose(self) -> np.ndarray:
        """The log's start ego pose (with its ground height) in the scene frame."""
        return np.asarray(self.log.ego_poses[self.world.config.start_frame], np.float64)

    @staticmethod
    def _velocity(ego: EgoState) -> np.ndarray:
        return np.array([ego.speed * np.cos(ego.yaw), ego.speed * np.sin(ego.yaw), 0.0])

    def _ego_from_carla(self, prev: EgoState, steer: float) -> EgoState:
        T = self.bridge.ego_pose()
        ego = EgoState.from_pose(T)
        speed = max(0.0, float(self.bridge.ego_velocity() @ T[:3, 0]))
        dt = self.world.config.dt
        return replace(ego, speed=speed, accel=(speed - prev.speed) / dt, steer=float(steer),
                       yaw_rate=float(wrap_angle(ego.yaw - prev.yaw)) / dt)

    def _step_state(self, action) -> tuple[float, bool, bool, dict]:
        if self._state is None:
            raise ValidationError("step() called before reset()")
        accel, steer, n_clipped = self._to_controls(action)
        self._clipped += n_clipped
        prev, b, veh = self._state, self.bridge, self.world.config.vehicle
        if self.cosim.mode == "stag_drives":
            ego = bicycle_step(prev.ego, accel, steer, self.world.config.dt, veh)
            b.set_ego_pose(ego.pose(), velocity=self._velocity(ego))
            self.carla_frame = b.tick()
        else:  # CARLA's steer is positive to the right: the opposite of our (counter-clockwise) steering angle
            b.apply_control(throttle=max(accel, 0.0) / veh.max_accel, steer=-steer / veh.max_steer,
                            brake=max(-accel, 0.0) / veh.max_decel)
            self.carla_frame = b.tick()
            ego = self._ego_from_carla(prev.ego, float(np.clip(steer, -veh.max_steer, veh.max_steer)))
        events, agents = b.pop_events(), b.agents()
        self._state = self._advance(prev, ego, events.collisions, agents)
        self._trail.append((ego.x, ego.y))
        self._update_agents(agents, events.collisions, events.lane_invasions)
        return self._finish_step(prev, n_clipped)

    def _advance(self, prev: SimState, ego: EgoState, collisions: list[dict], agents: list[CarlaAgent]) -> SimState:
        """The next state around a given ego: route progress (as stag_sim.world.step), events from the scene map
        (off-road, route completion), and collisions: CARLA's collision sensor or our ego box overlapping a CARLA
        actor's box (a kinematic, mirrored ego may not raise sensor hits)."""
        w = self.world
        route_s = advance_route(w, prev.route_s, ego)
        ego_box = w.ego_box(ego)
        offroad = w.drivable is not None and not w.drivable.contains(ego_box)
        hits = {f"{self._label(c['other_id'])}:{c['other_type']}" for c in collisions}
        hits |= {f"{self._label(a.actor_id)}:{a.type_id}" for a in agents if _footprint(a).intersects(ego_box)}
        hits = sorted(hits)
        events = {"collision": bool(hits), "collided_with": hits, "offroad": bool(offroad),
                  "route_completed": bool(route_s >= w.usable_route_length)}
        return SimState(prev.step + 1, prev.time_s + w.config.dt, ego, prev.agent_s, prev.agent_speed, route_s, events,
                        prev.external_agents)

    def _info(self, state, reason) -> dict:
        info = super()._info(state, reason)
        info["carla"] = dict(self._carla_info)
        info["lane_invasion"] = bool(self._carla_info.get("lane_invasions"))
        return info

    # ---- CARLA actors -> scene object clouds -------------------------------------------------------------------
    def _label(self, actor_id: int) -> str:
        """The episode-local name of a CARLA actor (``carla-<n>`` in order of first sight; ``carla-static`` for
        the map itself, actor id 0 or less)."""
        if actor_id <= 0:
            return "carla-static"
        if actor_id not in self._labels:
            self._labels[actor_id] = f"carla-{len(self._labels)}"
            self.carla_actor_ids[self._labels[actor_id]] = int(actor_id)
        return self._labels[actor_id]

    def _update_agents(self, agents: list[CarlaAgent], collisions: list, lane_invasions: list) -> None:
        """Place the scene's object clouds at CARLA's actors' poses (stable assignment)."""
        ego_xy = np.array([self._state.ego.x, self._state.ego.y])
        agents = [a for a in agents
                  if np.linalg.norm(a.T_scene_from_box[:2, 3] - ego_xy) <= self.cosim.match_range]
        agents.sort(key=lambda a: (float(np.linalg.norm(a.T_scene_from_box[:2, 3] - ego_xy)), a.actor_id))
        present = {a.actor_id for a in agents}
        names = self._label
        for a in agents:
            names(a.actor_id)  # labels in order of first sight (nearest first)
        self._assigned = {i: k for i, k in self._assigned.items() if i in present}
        free = set(range(len(self._kinds))) - set(self._assigned.values())
        poses = np.tile(np.eye(4), (len(self._kinds), 1, 1))
        valid = np.zeros(len(self._kinds), bool)
        drawn = []
        for a in agents:
            k = self._assigned.get(a.actor_id)
            if k is None:
                candidates = [j for j in sorted(free) if self._kinds[j] == a.category]
                if not candidates:
                    continue
                k = min(candidates, key=lambda j: float(np.abs(np.log(self._sizes[j] / np.maximum(a.size, 1e-3))).sum()))
                free.discard(k)
                self._assigned[a.actor_id] = k
            poses[k], valid[k] = a.T_scene_from_box, True
            drawn.append(a.actor_id)
        self._state = replace(self._state, external_agents=(poses, valid))
        self._carla_info = {
            "mode": self.cosim.mode,
            "collisions": [{"with": names(c["other_id"]), "type": c["other_type"], "impulse": c["impulse"]} for c in collisions],
            "lane_invasions": [e["markings"] for e in lane_invasions],
            "agents_drawn": [names(i) for i in drawn],
            "agents_not_drawn": [names(i) for i in sorted(present - set(drawn))],
            "assignment": {names(i): self.log.objects.instance_ids[k] for i, k in sorted(self._assigned.items())},
        }

    def close(self) -> None:
        if self.bridge is not None and getattr(self, "_owns_bridge", False):
            self.bridge.close()
        super().close()


def make_carla_env(address: str, cosim=None, carla_module=None, **env_kwargs: Any) -> CarlaCoSimEnv:
    """The env ``stag-sim eval --carla HOST:PORT`` runs: a :class:`CarlaCoSimEnv` connected to ``address``.

    Raises one :class:`~stag_sim.errors.BridgeError` line when no server answers within ``cosim["timeout"]``."""
    return CarlaCoSimEnv(carla=address, cosim=cosim, carla_module=carla_module, **env_kwargs)
