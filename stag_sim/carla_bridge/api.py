"""The one place ``carla`` is imported (lazily), and the exact list of carla API the bridge touches.

:data:`CARLA_API` names every (class, attribute) the bridge and the co-simulation env use. A test checks that each
exists on the real installed ``carla`` classes and on the offline stand-in (:mod:`.standin`), and that the stand-in
has nothing else, so the stand-in cannot drift from the real API and the bridge cannot use a call nobody checked.
``(None, name)`` is a module-level name (``carla.Client``, ...).
"""

from __future__ import annotations

from stag_sim.errors import MissingExtraError

CARLA_API: tuple[tuple[str | None, str], ...] = (
    (None, "Client"), (None, "Transform"), (None, "Location"), (None, "Rotation"), (None, "VehicleControl"),
    (None, "Vector3D"),
    ("Client", "set_timeout"), ("Client", "get_server_version"), ("Client", "get_world"),
    ("Client", "get_trafficmanager"),
    ("World", "get_settings"), ("World", "apply_settings"), ("World", "tick"), ("World", "get_blueprint_library"),
    ("World", "get_map"), ("World", "spawn_actor"), ("World", "try_spawn_actor"), ("World", "get_actors"),
    ("World", "wait_for_tick"), ("WorldSnapshot", "frame"),
    ("WorldSettings", "synchronous_mode"), ("WorldSettings", "fixed_delta_seconds"),
    ("WorldSettings", "no_rendering_mode"),
    ("TrafficManager", "set_synchronous_mode"), ("TrafficManager", "set_random_device_seed"),
    ("TrafficManager", "get_port"),
    ("Map", "get_spawn_points"), ("Map", "name"),
    ("BlueprintLibrary", "filter"), ("BlueprintLibrary", "find"),
    ("ActorBlueprint", "id"), ("ActorBlueprint", "has_attribute"), ("ActorBlueprint", "set_attribute"),
    ("Actor", "id"), ("Actor", "type_id"), ("Actor", "attributes"), ("Actor", "bounding_box"),
    ("Actor", "get_transform"), ("Actor", "set_transform"), ("Actor", "get_velocity"),
    ("Actor", "set_target_velocity"), ("Actor", "set_simulate_physics"), ("Actor", "destroy"), ("Actor", "is_alive"),
    ("Vehicle", "apply_control"), ("Vehicle", "set_autopilot"),
    ("Sensor", "listen"), ("Sensor", "stop"),
    ("Transform", "location"), ("Transform", "rotation"),
    ("Location", "x"), ("Location", "y"), ("Location", "z"),
    ("Vector3D", "x"), ("Vector3D", "y"), ("Vector3D", "z"),
    ("Rotation", "pitch"), ("Rotation", "yaw"), ("Rotation", "roll"),
    ("BoundingBox", "location"), ("BoundingBox", "extent"), ("BoundingBox", "rotation"),
    ("VehicleControl", "throttle"), ("VehicleControl", "steer"), ("VehicleControl", "brake"),
    ("CollisionEvent", "frame"), ("CollisionEvent", "other_actor"), ("CollisionEvent", "normal_impulse"),
    ("LaneInvasionEvent", "frame"), ("LaneInvasionEvent", "crossed_lane_markings"),
    ("LaneMarking", "type"),
)

# keyword arguments the bridge passes by name: (class, method, keyword); checked against the real signatures
CARLA_KEYWORDS: tuple[tuple[str, str, str], ...] = (
    ("World", "spawn_actor", "attach_to"), ("World", "try_spawn_actor", "attach_to"),
    ("VehicleControl", "__init__", "throttle"), ("VehicleControl", "__init__", "steer"),
    ("VehicleControl", "__init__", "brake"),
)


def load_carla():
    """The real ``carla`` client module; :class:`MissingExtraError` naming the ``carla`` extra when absent."""
    try:
        import carla
    except ImportError:
        raise MissingExtraError("carla", "carla", "the CARLA bridge") from None
    return carla
