"""CARLA co-simulation: CARLA supplies the ego pose (or mirrors ours) and the other actors, StagDrive renders.

``import stag_sim.carla_bridge`` does not import ``carla``; the real client is imported lazily in exactly one
place (:func:`stag_sim.carla_bridge.api.load_carla`) when a bridge connects. See docs/carla.md.
"""

from stag_sim.carla_bridge.api import CARLA_API, load_carla
from stag_sim.carla_bridge.bridge import BridgeConfig, CarlaAgent, CarlaBridge, SensorEvents, parse_address
from stag_sim.carla_bridge.frames import (
    Alignment,
    box_in_actor,
    carla_from_matrix,
    carla_matrix,
    carla_transform_from_matrix,
    T_rh_from_carla_transform,
)

__all__ = [
    "CARLA_API", "load_carla", "BridgeConfig", "CarlaAgent", "CarlaBridge", "SensorEvents", "parse_address",
    "Alignment", "box_in_actor", "carla_from_matrix", "carla_matrix", "carla_transform_from_matrix",
    "T_rh_from_carla_transform",
]
