"""CarlaBridge: a synchronous-mode session with a CARLA server that always cleans up after itself.

Lifecycle: :meth:`CarlaBridge.connect` switches the world to synchronous mode with ``fixed_delta_seconds = dt``
and the Traffic Manager to synchronous mode (seeded); :meth:`spawn_ego` / :meth:`attach_ego` give an ego with
collision and lane-invasion sensors; :meth:`tick` advances the server one step; :meth:`close` (also run by
``with``, on errors, on Ctrl-C and at interpreter exit) destroys everything the bridge spawned and restores the
world's previous settings. Poses cross the bridge as scene-frame 4x4 matrices through an :class:`Alignment`.

Only the calls listed in :data:`stag_sim.carla_bridge.api.CARLA_API` are used.
"""

from __future__ import annotations

import atexit
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from stag_sim.carla_bridge.api import load_carla
from stag_sim.carla_bridge.frames import Alignment, T_rh_from_carla_transform, box_in_actor
from stag_sim.errors import BridgeError
from stag_sim.geometry import check_positive, invert_transform, pose_xy_yaw

DEFAULT_PORT = 2000
DEFAULT_TM_PORT = 8000
DEFAULT_EGO_FILTER = "vehicle.lincoln.mkz*"  # in CARLA 0.9.15 and 0.9.16
AGENT_PREFIXES = ("vehicle.", "walker.")


def check_server(address: str, timeout: float = 10.0, carla_module=None) -> str:
    """The version of the CARLA server at ``address`` (``HOST:PORT``), asked once; one :class:`BridgeError` line
    when none answers within ``timeout`` [s] (so a run over many scenarios fails once, not once per scenario)."""
    host, port = parse_address(address)
    carla = carla_module or load_carla()
    try:
        client = carla.Client(host, int(port))
        client.set_timeout(float(timeout))
        return str(client.get_server_version())
    except RuntimeError as e:
        raise BridgeError(f"no CARLA server answered at {host}:{port} within {timeout:g} s ({_first_line(e)}); "
                          f"start one, e.g. ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}") from None


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"HOST"``, port 2000) -> (host, port)."""
    host, sep, port = str(address).strip().rpartition(":")
    if not sep:
        host, port = port, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BridgeError(f"carla address: expected HOST:PORT (e.g. 127.0.0.1:2000), got {address!r}")
    return host, int(port)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _attempt_all(steps) -> list[str]:
    """Run every (description, callable) even when some fail (cleanup must go on); the failures, one line each."""
    failures = []
    for what, fn in steps:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            failures.append(f"{what}: {_first_line(e)}")
    return failures


@dataclass(frozen=True)
class BridgeConfig:
    """Connection and world settings.

    Attributes:
        host, port: the CARLA server's RPC address.
        timeout: client timeout for every server call [s] (a missing server fails after this long).
        dt: fixed simulation step, ``fixed_delta_seconds`` [s].
        tm_port: Traffic Manager port.
        seed: Traffic Manager random device seed.
        no_rendering: set the server's ``no_rendering_mode`` (StagDrive renders the cameras itself).
        external_clock: another client (e.g. scenario_runner in synchronous mode) owns the world's settings and
            ticks it; the bridge then changes no settings and :meth:`tick` waits for that client's next tick.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    timeout: float = 10.0  # [s]
    dt: float = 0.1  # [s]
    tm_port: int = DEFAULT_TM_PORT
    seed: int = 0
    no_rendering: bool = False
    external_clock: bool = False

    def validate(self) -> "BridgeConfig":
        check_positive(self, ("timeout", "dt"), error=BridgeError)
        if not 0 < int(self.port) < 65536 or not 0 < int(self.tm_port) < 65536:
            raise BridgeError(f"BridgeConfig: ports must be in 1..65535, got port={self.port} tm_port={self.tm_port}")
        return self


@dataclass(frozen=True)
class CarlaAgent:
    """One CARLA actor (vehicle or walker) as the scene sees it.

    Attributes:
        actor_id: CARLA actor id.
        type_id: blueprint id, e.g. ``vehicle.tesla.model3``.
        category: ``vehicle`` or ``pedestrian``.
        T_scene_from_box: (4, 4) pose of its bounding-box centre in the scene frame (x forward, y left, z up).
        size: (3,) (length, width, height) [m].
        velocity: (3,) in the scene frame [m/s].
    """

    actor_id: int
    type_id: str
    category: str
    T_scene_from_box: np.ndarray
    size: np.ndarray
    velocity: np.ndarray


@dataclass
class SensorEvents:
    """Collision and lane-invasion events since the last :meth:`CarlaBridge.pop_events` (sensor threads append)."""

    collisions: list[dict] = field(default_factory=list)
    lane_invasions: list[dict] = field(default_factory=list)


def _vec(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z], np.float64)


def _rot(r) -> np.ndarray:
    return np.array([r.pitch, r.yaw, r.roll], np.float64)


class CarlaBridge:
    """A session with one CARLA server (see the module docstring).

    Args:
        config: :class:`BridgeConfig`.
        carla_module: the ``carla`` module to use (default: the real client; tests pass the offline stand-in).
    """

    def __init__(self, config: BridgeConfig | None = None, carla_module=None, **kwargs) -> None:
        if config is not None and kwargs:
            raise BridgeError("CarlaBridge: pass either config= or keyword settings, not both")
        self.config = (config or BridgeConfig(**kwargs)).validate()
        self._carla = carla_module
        self.client = self.world = self.tm = None
        self.alignment = Alignment.identity()
        self.ego = None
        self.T_actor_from_ego = np.eye(4)
        self._ego_physics_changed = False
        self._saved_settings: tuple | None = None
        self._spawned: list = []  # actors this bridge created, destroyed in reverse order on close
        self._sensors: list = []
        self._events = SensorEvents()
        self._lock = threading.Lock()
        self._closed = False
        self._atexit = False

    # ---- lifecycle -----------------------------------------------------------------------------------------
    @property
    def carla(self):
        if self._carla is None:
            self._carla = load_carla()
        return self._carla

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def connect(self) -> "CarlaBridge":
        """Connect, switch the world and the Traffic Manager to synchronous mode. One :class:`BridgeError` when no
        server answers within ``timeout``."""
        cfg = self.config
        carla = self.carla
        try:
            self.client = carla.Client(cfg.host, int(cfg.port))
            self.client.set_timeout(float(cfg.timeout))
            self.server_version = self.client.get_server_version()
            self.world = self.client.get_world()
        except RuntimeError as e:
            self.client = self.world = None
            raise BridgeError(f"no CARLA server answered at {self.address} within {cfg.timeout:g} s ({_first_line(e)}); "
                              f"start one, e.g. ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={cfg.port}") from None
        self._closed = False
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        if cfg.external_clock:
            return self
        try:
            s = self.world.get_settings()
            self._saved_settings = (s.synchronous_mode, s.fixed_delta_seconds, s.no_rendering_mode)
            s.synchronous_mode = True
            s.fixed_delta_seconds = float(cfg.dt)
            s.no_rendering_mode = bool(cfg.no_rendering) or s.no_rendering_mode
            self.world.apply_settings(s)
            self.tm = self.client.get_trafficmanager(int(cfg.tm_port))
            self.tm.set_synchronous_mode(True)
            self.tm.set_random_device_seed(int(cfg.seed))
        except RuntimeError as e:
            self.close()
            raise BridgeError(f"CARLA server at {self.address}: could not set synchronous mode ({_first_line(e)})") from None
        return self

    def __enter__(self) -> "CarlaBridge":
        return self if self.world is not None else self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def _need_world(self):
        if self.world is None:
            raise BridgeError("CarlaBridge: not connected (call connect() first)")
        return self.world

    def close(self) -> list[str]:
        """Destroy what this bridge spawned, hand the Traffic Manager back, restore the world's settings.

        Best effort and idempotent: every step is tried; failures are returned (and warned), never raised, so
        closing after an error or Ctrl-C does not hide the original exception."""
        if self._closed or self.world is None:
            return []
        self._closed = True

        def restore():
            s = self.world.get_settings()
            s.synchronous_mode, s.fixed_delta_seconds, s.no_rendering_mode = self._saved_settings
            self.world.apply_settings(s)

        failures = self.destroy_spawned()
        failures += _attempt_all(([("traffic manager", lambda: self.tm.set_synchronous_mode(False))] if self.tm is not None else [])
                                 + ([("restore world settings", restore)] if self._saved_settings is not None else []))
        if self._atexit:
            atexit.unregister(self.close)
            self._atexit = False
        if failures:
            warnings.warn(f"CarlaBridge.close at {self.address}: " + "; ".join(failures), RuntimeWarning, stacklevel=2)
        return failures

    def destroy_spawned(self) -> list[str]:
        """Stop this bridge's sensors and destroy every actor it spawned (newest first); forget the ego. Returns
        the failures (best effort: one failing actor does not keep the others alive)."""
        steps = [("stop sensor", s.stop) for s in self._sensors]
        if self.ego is not None and self.ego not in self._spawned and self._ego_physics_changed:
            steps.append(("ego physics back on", lambda: self.ego.set_simulate_physics(True)))  # someone else's ego
        steps += [(f"destroy actor {getattr(a, 'id', '?')}", a.destroy) for a in reversed(self._spawned)]
        failures = _attempt_all(steps)
        self._ego_physics_changed = False
        self._spawned.clear()
        self._sensors.clear()
        self.ego = None
        self.pop_events()
        return failures

    # ---- stepping ------------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Advance the server one ``dt`` (or, with ``external_clock``, wait for the next tick); the frame number."""
        world = self._need_world()
        try:
            if self.config.external_clock:
                return int(world.wait_for_tick(float(self.config.timeout)).frame)
            return int(world.tick(float(self.config.timeout)))
        except RuntimeError as e:
            raise BridgeError(f"CARLA server at {self.address}: tick failed ({_first_line(e)})") from None

    # ---- spawning ------------------------------------------------------------------------------------------
    def _blueprint(self, type_filter: str, rng: np.random.Generator | None = None):
        bps = sorted(self._need_world().get_blueprint_library().filter(type_filter), key=lambda b: b.id)
        if not bps:
            raise BridgeError(f"CARLA server at {self.address}: no blueprint matches {type_filter!r}")
        return bps[int(rng.integers(len(bps)))] if rng is not None else bps[0]

    def _carla_transform(self, location, rotation):
        c = self.carla
        return c.Transform(c.Location(*(float(v) for v in location)), c.Rotation(*(float(v) for v in rotation)))

    def _spawn(self, bp, location, rotation, what: str, attach_to=None, must: bool = True):
        tf = self._carla_transform(location, rotation)
        world = self._need_world()
        if attach_to is not None:
            actor = world.spawn_actor(bp, tf, attach_to=attach_to)
        else:
            actor = world.try_spawn_actor(bp, tf)
        if actor is None:
            if must:
                raise BridgeError(f"CARLA: could not spawn {what} ({bp.id}) at location {np.round(location, 2).tolist()} "
                                  f"rotation {np.round(rotation, 1).tolist()} (occupied or off the map)")
            return None
        self._spawned.append(actor)
        return actor

    def spawn_points(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The map's spawn points as (location [m], (pitch, yaw, roll) [deg]) in CARLA numbers."""
        return [(_vec(t.location), _rot(t.rotation)) for t in self._need_world().get_map().get_spawn_points()]

    def spawn_ego(self, spawn_point: int | tuple = 0, type_filter: str = DEFAULT_EGO_FILTER,
                  role_name: str = "hero", rear_axle_to_centre: float = 0.0):
        """Spawn the ego at a map spawn point (index) or a CARLA (location, rotation), with its sensors.

        ``rear_axle_to_centre`` [m]: where our ego frame (rear axle) sits behind the CARLA box centre."""
        if isinstance(spawn_point, (int, np.integer)):
            points = self.spawn_points()
            if not points:
                raise BridgeError(f"CARLA map at {self.address} has no spawn points")
            location, rotation = points[int(spawn_point) % len(points)]
        else:
            location, rotation = spawn_point
        bp = self._blueprint(type_filter)
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", role_name)
        ego = self._spawn(bp, location, rotation, "the ego")
        return self._adopt_ego(ego, rear_axle_to_centre)

    def attach_ego(self, role_name: str = "hero", rear_axle_to_centre: float = 0.0):
        """Use an ego someone else spawned (e.g. scenario_runner's ``hero``); it is not destroyed on close."""
        for a in self._need_world().get_actors():
            if a.type_id.startswith("vehicle.") and a.attributes.get("role_name") == role_name:
                return self._adopt_ego(a, rear_axle_to_centre)
        raise BridgeError(f"CARLA server at {self.address}: no vehicle with role_name {role_name!r} to attach to")

    def _adopt_ego(self, ego, rear_axle_to_centre: float):
        self.ego = ego
        bb = ego.bounding_box
        self.T_actor_from_ego = pose_xy_yaw(bb.location.x - rear_axle_to_centre, 0.0, 0.0)
        lib = self._need_world().get_blueprint_library()
        for name, callback in (("sensor.other.collision", self._on_collision),
                               ("sensor.other.lane_invasion", self._on_lane_invasion)):
            sensor = self._spawn(lib.find(name), (0, 0, 0), (0, 0, 0), name, attach_to=ego)
            self._sensors.append(sensor)
            sensor.listen(callback)
        return ego

    def spawn_actor(self, type_filter: str, T_scene_from_actor, autopilot: bool = False,
                    rng: np.random.Generator | None = None) -> int:
        """Spawn a scenario actor (blueprint matching ``type_filter``, e.g. ``vehicle.*`` or ``walker.*``) with its
        CARLA origin at ``T_scene_from_actor`` (scene frame, through :attr:`alignment`); returns its actor id.
        ``autopilot`` hands a vehicle to the Traffic Manager."""
        location, rotation = self.alignment.carla_from_scene(T_scene_from_actor)
        actor = self._spawn(self._blueprint(type_filter, rng), location, rotation, f"actor {type_filter!r}")
        if autopilot:
            if not actor.type_id.startswith("vehicle."):
                raise BridgeError(f"spawn_actor: autopilot needs a vehicle, {actor.type_id!r} is not one")
            actor.set_autopilot(True, self.tm.get_port())
        return int(actor.id)

    def spawn_traffic(self, count: int, rng: np.random.Generator, type_filter: str = "vehicle.*") -> list[int]:
        """Spawn up to ``count`` Traffic-Manager vehicles at random free spawn points; returns their ids."""
        points = self.spawn_points()
        ids = []
        for i in rng.permutation(len(points)):
            if len(ids) >= count:
                break
            actor = self._spawn(self._blueprint(type_filter, rng), *points[i], "traffic", must=False)
            if actor is not None:
                actor.set_autopilot(True, self.tm.get_port())
                ids.append(int(actor.id))
        return ids

    # ---- the ego ---------------------------------------------------------------------------------------------
    def _need_ego(self):
        if self.ego is None:
            raise BridgeError("CarlaBridge: no ego (call spawn_ego() or attach_ego() first)")
        return self.ego

    def ego_carla_transform(self) -> tuple[np.ndarray, np.ndarray]:
        tf = self._need_ego().get_transform()
        return _vec(tf.location), _rot(tf.rotation)

    def ego_pose(self) -> np.ndarray:
        """(4, 4) ``T_scene_from_ego`` (our ego frame: rear axle, x forward, y left)."""
        return self.alignment.scene_from_carla(*self.ego_carla_transform()) @ self.T_actor_from_ego

    def align_ego_to(self, T_scene_from_ego) -> Alignment:
        """Set :attr:`alignment` so the CARLA ego, where it stands now (heading only: its pitch and roll are
        ignored), is at ``T_scene_from_ego`` in the scene (e.g. the log's start pose)."""
        location, rotation = self.ego_carla_transform()
        T_rh_from_ego = T_rh_from_carla_transform(location, (0.0, rotation[1], 0.0)) @ self.T_actor_from_ego
        self.alignment = Alignment(np.asarray(T_scene_from_ego, np.float64) @ invert_transform(T_rh_from_ego)).validate()
        return self.alignment

    def ego_velocity(self) -> np.ndarray:
        """(3,) ego velocity in the scene frame [m/s]."""
        return self.alignment.vector_to_scene(_vec(self._need_ego().get_velocity()))

    def set_ego_pose(self, T_scene_from_ego, velocity=None, keep_height: bool = True) -> None:
        """Teleport the CARLA ego to ``T_scene_from_ego``; ``keep_height`` keeps CARLA's z, pitch and roll (so
        physics keeps the car on CARLA's road); ``velocity`` (3,) [m/s] in the scene frame is mirrored too, so the
        Traffic Manager sees the ego's speed."""
        ego = self._need_ego()
        T_scene_from_actor = np.asarray(T_scene_from_ego, np.float64) @ invert_transform(self.T_actor_from_ego)
        location, rotation = self.alignment.carla_from_scene(T_scene_from_actor)
        if keep_height:
            cur_loc, cur_rot = self.ego_carla_transform()
            location[2], rotation[0], rotation[2] = cur_loc[2], cur_rot[0], cur_rot[2]
        ego.set_transform(self._carla_transform(location, rotation))
        if velocity is not None:
            v = np.asarray(velocity, np.float64) @ np.asarray(self.alignment.T_scene_from_carla)[:3, :3]
            ego.set_target_velocity(self.carla.Vector3D(float(v[0]), float(-v[1]), float(v[2])))

    def set_ego_physics(self, enabled: bool) -> None:
        """Physics on (CARLA drives the ego) or off (kinematic: the ego goes exactly where :meth:`set_ego_pose`
        puts it, as CARLA's own SUMO co-simulation does with mirrored vehicles). An attached ego gets physics back
        on close."""
        self._need_ego().set_simulate_physics(bool(enabled))
        self._ego_physics_changed = self._ego_physics_changed or not enabled

    def apply_control(self, throttle: float, steer: float, brake: float) -> None:
        """CARLA ``VehicleControl`` on the ego: throttle, brake in [0, 1]; ``steer`` in [-1, 1], CARLA sign
        (positive = right)."""
        ctrl = self.carla.VehicleControl(throttle=float(np.clip(throttle, 0, 1)), steer=float(np.clip(steer, -1, 1)),
                                         brake=float(np.clip(brake, 0, 1)))
        self._need_ego().apply_control(ctrl)

    # ---- the others ------------------------------------------------------------------------------------------
    def agents(self) -> list[CarlaAgent]:
        """Every vehicle and walker in the world except the ego, in the scene frame, sorted by actor id."""
        ego_id = getattr(self.ego, "id", None)
        out = []
        for a in self._need_world().get_actors():
            tid = a.type_id
            if a.id == ego_id or not tid.startswith(AGENT_PREFIXES):
                continue
            tf, bb = a.get_transform(), a.bounding_box
            T_actor_from_box, size = box_in_actor(_vec(bb.location), _vec(bb.extent), _rot(bb.rotation))
            T = self.alignment.scene_from_carla(_vec(tf.location), _rot(tf.rotation)) @ T_actor_from_box
            out.append(CarlaAgent(int(a.id), tid, "vehicle" if tid.startswith("vehicle.") else "pedestrian", T, size,
                                  self.alignment.vector_to_scene(_vec(a.get_velocity()))))
        return sorted(out, key=lambda g: g.actor_id)

    # ---- sensors -------------------------------------------------------------------------------------------
    def _on_collision(self, event) -> None:
        other = event.other_actor
        with self._lock:
            self._events.collisions.append({"frame": int(event.frame), "other_id": int(getattr(other, "id", -1)),
                                            "other_type": str(getattr(other, "type_id", "")),
                                            "impulse": float(np.linalg.norm(_vec(event.normal_impulse)))})

    def _on_lane_invasion(self, event) -> None:
        with self._lock:
            self._events.lane_invasions.append({"frame": int(event.frame),
                                                "markings": [str(m.type) for m in event.crossed_lane_markings]})

    def pop_events(self) -> SensorEvents:
        """The sensor events received since the last call."""
        with self._lock:
            ev, self._events = self._events, SensorEvents()
        return ev
