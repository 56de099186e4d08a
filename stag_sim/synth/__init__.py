"""The synthetic town: the embedded default scene of StagDrive and its exact ground-truth oracle.

* :func:`build_town` - procedural town (roads with curves and junctions, buildings, trees, parked and moving cars)
  from a seed; :class:`Town` is its frozen description.
* :class:`TownOracle` - ray-casts RGB + z-depth for any camera pose and time, LiDAR sweeps, and gives the ego and
  object poses at any time; :func:`oracle_for_scene` rebuilds it for a generated scene.
* :func:`generate_scene` - the ego's drive through the town as a :class:`~stag_sim.scene_log.SceneLog`.
"""

from stag_sim.synth.generate import GENERATOR_NAME, GENERATOR_VERSION, generate_scene
from stag_sim.synth.oracle import (
    LIDAR_T_EGO_FROM_SENSOR, RENDER_RANGE, TownOracle, oracle_for_scene,
)
from stag_sim.synth.town import Town, build_town

__all__ = [
    "GENERATOR_NAME", "GENERATOR_VERSION", "LIDAR_T_EGO_FROM_SENSOR", "RENDER_RANGE", "Town", "TownOracle",
    "build_town", "generate_scene", "oracle_for_scene",
]
