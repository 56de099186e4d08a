"""An offline, in-process stand-in for the handful of ``carla`` client calls the bridge uses (tests, no server).

:func:`make_standin` returns a module-like namespace with the same class names as ``carla`` and *only* the
attributes listed in :data:`stag_sim.carla_bridge.api.CARLA_API` (a test checks both directions against the real
installed ``carla``). Register a server with :meth:`StandinModule.serve` (host, port) -> :class:`World`; a client
pointed anywhere else times out with the real client's RuntimeError message. Physics is a toy: vehicles under
``apply_control`` move as a bicycle in CARLA's left-handed numbers (positive steer turns right), autopilot
vehicles drive straight at 5 m/s, vehicles without physics stay where they are put, and two vehicles closer than 2 m raise a collision event on the first
vehicle's collision sensors. Underscore-prefixed members are stand-in internals (test hooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace


@dataclass
class Location:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class Vector3D:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class Rotation:
    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0


@dataclass
class Transform:
    location: Location = field(default_factory=Location)
    rotation: Rotation = field(default_factory=Rotation)


@dataclass
class BoundingBox:
    location: Location = field(default_factory=Location)
    extent: Vector3D = field(default_factory=Vector3D)
    rotation: Rotation = field(default_factory=Rotation)


@dataclass
class VehicleControl:
    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0


@dataclass
class WorldSettings:
    synchronous_mode: bool = False
    fixed_delta_seconds: float | None = None
    no_rendering_mode: bool = False


@dataclass
class WorldSnapshot:
    frame: int = 0


@dataclass
class LaneMarking:
    type: str = "Solid"


@dataclass
class CollisionEvent:
    frame: int = 0
    other_actor: object = None
    normal_impulse: Vector3D = field(default_factory=Vector3D)


@dataclass
class LaneInvasionEvent:
    frame: int = 0
    crossed_lane_markings: list = field(default_factory=list)


class ActorBlueprint:
    id = ""

    def __init__(self, bp_id: str, extent=(2.4, 1.0, 0.75)) -> None:
        self.id = bp_id
        self._extent = extent
        self._attrs = {"role_name": ""} if not bp_id.startswith("sensor.") else {}

    def has_attribute(self, name: str) -> bool:
        return name in self._attrs

    def set_attribute(self, name: str, value: str) -> None:
        self._attrs[name] = value


class BlueprintLibrary:
    def __init__(self, blueprints) -> None:
        self._bps = list(blueprints)

    def __iter__(self):
        return iter(self._bps)

    def filter(self, pattern: str) -> list:
        import fnmatch

        return [b for b in self._bps if fnmatch.fnmatch(b.id, pattern)]

    def find(self, bp_id: str) -> ActorBlueprint:
        for b in self._bps:
            if b.id == bp_id:
                return b
        raise IndexError(f"blueprint {bp_id!r} not found")


class Actor:
    id = 0
    type_id = ""
    attributes: dict = {}
    bounding_box = None

    def __init__(self, world: "World", actor_id: int, bp: ActorBlueprint, transform: Transform, parent=None) -> None:
        self._world, self.id, self.type_id = world, actor_id, bp.id
        self.attributes = dict(bp._attrs)
        ex = bp._extent
        self.bounding_box = BoundingBox(Location(0.1, 0.0, ex[2]), Vector3D(*ex), Rotation())
        self._tf = Transform(Location(**vars(transform.location)), Rotation(**vars(transform.rotation)))
        self._velocity = Vector3D()
        self._parent = parent
        self._alive = True
        self._physics = True

    def get_transform(self) -> Transform:
        return Transform(Location(**vars(self._tf.location)), Rotation(**vars(self._tf.rotation)))

    def set_transform(self, transform: Transform) -> None:
        self._tf = Transform(Location(**vars(transform.location)), Rotation(**vars(transform.rotation)))

    def get_velocity(self) -> Vector3D:
        return Vector3D(**vars(self._velocity))

    def set_target_velocity(self, v: Vector3D) -> None:
        self._velocity = Vector3D(**vars(v))

    def set_simulate_physics(self, enabled: bool = True) -> None:
        self._physics = bool(enabled)

    def destroy(self) -> bool:
        if not self._alive:
            return False
        self._alive = False
        self._world._actors.pop(self.id, None)
        return True

    def is_alive(self) -> bool:
        return self._alive


class Vehicle(Actor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._control = VehicleControl()
        self._autopilot = False
        self._speed = 0.0

    def apply_control(self, control: VehicleControl) -> None:
        self._control = control

    def set_target_velocity(self, v: Vector3D) -> None:
        super().set_target_velocity(v)
        self._speed = math.hypot(v.x, v.y)

    def set_autopilot(self, enabled: bool = True, port: int = 8000) -> None:
        self._autopilot = bool(enabled)

    def _advance(self, dt: float) -> None:
        if not self._physics:  # kinematic: stays where it was put
            return
        c = self._control
        if self._autopilot:
            self._speed = 5.0
        else:
            self._speed = max(0.0, self._speed + (4.0 * c.throttle - 8.0 * c.brake) * dt)
        r = self._tf.rotation
        r.yaw += math.degrees(self._speed * math.tan(0.6 * c.steer) / 2.9 * dt) if not self._autopilot else 0.0
        yaw = math.radians(r.yaw)
        self._velocity = Vector3D(self._speed * math.cos(yaw), self._speed * math.sin(yaw), 0.0)
        self._tf.location.x += self._velocity.x * dt
        self._tf.location.y += self._velocity.y * dt


class Sensor(Actor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._callback = None

    def listen(self, callback) -> None:
        self._callback = callback

    def stop(self) -> None:
        self._callback = None


class Map:
    name = ""

    def __init__(self, name: str, spawn_points) -> None:
        self.name = name
        self._spawn_points = list(spawn_points)

    def get_spawn_points(self) -> list:
        return [Transform(Location(**vars(t.location)), Rotation(**vars(t.rotation))) for t in self._spawn_points]


class TrafficManager:
    def __init__(self, port: int) -> None:
        self._port, self._sync, self._seed = port, False, None

    def set_synchronous_mode(self, mode: bool) -> None:
        self._sync = bool(mode)

    def set_random_device_seed(self, seed: int) -> None:
        self._seed = int(seed)

    def get_port(self) -> int:
        return self._port


class World:
    """The stand-in server state: settings, actors, a map with spawn points, a frame counter."""

    def __init__(self, spawn_points=None, blueprints=None) -> None:
        pts = spawn_points or [Transform(Location(10.0 * i, 5.0, 0.5), Rotation(0.0, 90.0 * (i % 4), 0.0)) for i in range(8)]
        self._map = Map("Town_Standin", pts)
        bps = blueprints or ["vehicle.lincoln.mkz_2020", "vehicle.tesla.model3", "walker.pedestrian.0001",
                             "sensor.other.collision", "sensor.other.lane_invasion"]
        self._library = BlueprintLibrary(ActorBlueprint(b, (0.3, 0.3, 0.9) if b.startswith("walker.") else (2.4, 1.0, 0.75))
                                         for b in bps)
        self._settings = WorldSettings()
        self._actors: dict[int, Actor] = {}
        self._next_id = 100
        self._frame = 0
        self._tms: dict[int, TrafficManager] = {}
        self._fail_tick = False  # test hook: make tick() raise like a dead server

    def get_settings(self) -> WorldSettings:
        return WorldSettings(**vars(self._settings))

    def apply_settings(self, settings: WorldSettings) -> int:
        self._settings = WorldSettings(**vars(settings))
        return self._frame

    def get_blueprint_library(self) -> BlueprintLibrary:
        return self._library

    def get_map(self) -> Map:
        return self._map

    def _occupied(self, t: Transform) -> bool:
        return any(not isinstance(a, Sensor) and math.dist((a._tf.location.x, a._tf.location.y), (t.location.x, t.location.y)) < 2.0
                   for a in self._actors.values())

    def spawn_actor(self, blueprint: ActorBlueprint, transform: Transform, attach_to=None) -> Actor:
        actor = self.try_spawn_actor(blueprint, transform, attach_to=attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, blueprint: ActorBlueprint, transform: Transform, attach_to=None):
        if attach_to is None and self._occupied(transform):
            return None
        kind = Vehicle if blueprint.id.startswith("vehicle.") else Sensor if blueprint.id.startswith("sensor.") else Actor
        actor = kind(self, self._next_id, blueprint, transform, parent=attach_to)
        self._actors[actor.id] = actor
        self._next_id += 1
        return actor

    def get_actors(self) -> list:
        return list(self._actors.values())

    def tick(self, seconds: float = 10.0) -> int:
        if self._fail_tick:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator")
        if not self._settings.synchronous_mode:
            raise RuntimeError("stand-in: tick() outside synchronous mode")
        dt = self._settings.fixed_delta_seconds or 0.05
        self._frame += 1
        vehicles = [a for a in self._actors.values() if isinstance(a, Vehicle)]
        for v in vehicles:
            v._advance(dt)
        for i, a in enumerate(vehicles):
            for b in vehicles[i + 1:]:
                if math.dist((a._tf.location.x, a._tf.location.y), (b._tf.location.x, b._tf.location.y)) < 2.0:
                    self._notify(a, "sensor.other.collision", CollisionEvent(self._frame, b, Vector3D(100.0, 0.0, 0.0)))
        return self._frame

    def wait_for_tick(self, seconds: float = 10.0) -> WorldSnapshot:
        """Stands in for another client (e.g. scenario_runner) ticking the world."""
        return WorldSnapshot(self.tick(seconds))

    def _notify(self, parent, sensor_type: str, event) -> None:
        for s in list(self._actors.values()):
            if isinstance(s, Sensor) and s._parent is parent and s.type_id == sensor_type and s._callback is not None:
                s._callback(event)

    def _invade_lane(self, vehicle, marking: str = "Broken") -> None:
        """Test hook: the vehicle's lane-invasion sensors report crossing a marking."""
        self._notify(vehicle, "sensor.other.lane_invasion", LaneInvasionEvent(self._frame, [LaneMarking(marking)]))


class Client:
    def __init__(self, host: str, port: int, worker_threads: int = 0) -> None:
        self._host, self._port, self._timeout = host, int(port), 5.0

    def set_timeout(self, seconds: float) -> None:
        self._timeout = float(seconds)

    def _world(self) -> World:
        world = _SERVERS.get((self._host, self._port))
        if world is None:  # what the real client says when nothing answers
            raise RuntimeError(f"time-out of {int(self._timeout * 1000)}ms while waiting for the simulator, make sure the "
                               f"simulator is ready and connected to {self._host}:{self._port}")
        return world

    def get_server_version(self) -> str:
        self._world()
        return "0.9.16-standin"

    def get_world(self) -> World:
        return self._world()

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        return self._world()._tms.setdefault(int(client_connection), TrafficManager(int(client_connection)))


_SERVERS: dict[tuple[str, int], World] = {}

CLASSES = (Client, World, WorldSettings, TrafficManager, Map, BlueprintLibrary, ActorBlueprint, Actor, Vehicle, Sensor,
           Transform, Location, Vector3D, Rotation, BoundingBox, VehicleControl, CollisionEvent, LaneInvasionEvent,
           LaneMarking, WorldSnapshot)


def make_standin() -> SimpleNamespace:
    """A module-like namespace usable as ``carla_module=`` of :class:`~stag_sim.carla_bridge.CarlaBridge`."""
    ns = SimpleNamespace(**{c.__name__: c for c in CLASSES})

    def serve(host: str, port: int, world: World | None = None) -> World:
        world = world or World()
        _SERVERS[(host, int(port))] = world
        return world

    def shutdown(host: str, port: int) -> None:
        _SERVERS.pop((host, int(port)), None)

    ns._serve, ns._shutdown = serve, shutdown
    return ns
