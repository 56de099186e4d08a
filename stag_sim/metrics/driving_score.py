"""The CARLA leaderboard 2.0 driving score: route completion times the product of the infraction penalties
(collisions by class, route travelled off the drivable area)."""

from __future__ import annotations

import numpy as np

from stag_sim.metrics.collisions import NO_DRIVABLE_AREA, _class_counts, _find_collisions, _offroad_steps
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace

# CARLA leaderboard 2.0 PENALTY_VALUE_DICT entries we can observe. Not observable here (no lights/signs/scenarios):
# red light 0.7, stop sign 0.8, scenario timeout 0.7, yield to emergency vehicle 0.7; min speed is unused in 2.0.
CARLA_COLLISION_PENALTY = {"pedestrian": 0.50, "vehicle": 0.60, "static": 0.65}


@register_metric("driving_score")
def driving_score(trace: EpisodeTrace) -> MetricResult:
    """CARLA leaderboard 2.0 driving score: ``route_completion * infraction_penalty`` in [0, 1].

    Source: ``leaderboard/utils/statistics_manager.py`` (``compute_route_statistics``):

    * route completion = furthest ``route_progress`` / route length (clipped to [0, 1]); 1 when
      ``route_completed``. (The leaderboard reports it in percent; we report a fraction.)
    * penalty = product over collisions with distinct agents of 0.50 (pedestrian), 0.60 (vehicle),
      0.65 (static / layout) — every collision counts, at fault or not, as in CARLA; a long overlap with one
      agent counts once.
    * outside route lanes (``OUTSIDE_ROUTE_LANES_INFRACTION``, penalty value 0, "increases"): the penalty is
      multiplied by ``1 - offroad_fraction``, so route travelled outside the lanes does not count. Our analogue:
      ``offroad_fraction`` = route progress gained at steps where the ego box is off the drivable area, divided by
      the route length. The leaderboard puts this factor in the penalty and leaves route completion as is; we do
      the same (route completion is reported unreduced; the score is the same either way). Without a drivable area
      (no map, no LiDAR ground) ``offroad_fraction`` is None, the factor is left out of the penalty, and
      ``details["unscored"]`` says so.

    Not modelled (no traffic lights, stop signs, scenarios): red light 0.7, stop 0.8, scenario timeout 0.7,
    yield to emergency vehicle 0.7, minimum speed; route deviation / blocked termination is up to the simulator.
    """
    trace.validate()
    length = trace.route_length
    completion = 1.0 if trace.route_completed else float(np.clip(np.max(trace.route_progress) / length, 0.0, 1.0))
    collisions = _find_collisions(trace)
    counts = _class_counts(collisions)
    penalty = 1.0
    for cls, n in counts.items():
        penalty *= CARLA_COLLISION_PENALTY[cls] ** n
    offroad, _ = _offroad_steps(trace)
    unscored = {}
    if trace.drivable_area is None:
        offroad_fraction = None
        unscored["offroad_fraction"] = NO_DRIVABLE_AREA
    else:
        gained = np.maximum(np.diff(trace.route_progress), 0.0)
        offroad_fraction = float(np.clip(np.sum(gained[offroad[1:]]) / length, 0.0, 1.0))
        penalty *= 1.0 - offroad_fraction
    ids = trace.agents.ids
    return MetricResult(
        float(completion * penalty),
        {
            "route_completion": completion,
            "infraction_penalty": penalty,
            "route_length": length,
            "collisions_vehicle": counts["vehicle"],
            "collisions_pedestrian": counts["pedestrian"],
            "collisions_static": counts["static"],
            "collided_ids": [ids[c.agent] for c in collisions],
            "offroad_fraction": offroad_fraction,
            "offroad_steps": int(offroad.sum()),
            "unscored": unscored,
        },
    )
