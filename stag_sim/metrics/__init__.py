"""Closed-loop driving metrics: NAVSIM PDMS, a CARLA-style driving score, and divergence from the log.

Everything here is a pure function of an :class:`EpisodeTrace` (what the simulator recorded over one episode:
ego, other agents, drivable area, route, logged ego). Pure numpy + shapely.

Sources the definitions follow (our own code; names of the originals given so each rule can be checked):

* **PDMS** (NAVSIM, ``navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py``)::

      PDMS = NC * DAC * (5 * EP + 5 * TTC + 2 * C) / 12

  NAVSIM re-implements nuPlan's closed-loop metrics (``motional/nuplan-devkit``,
  ``nuplan/planning/metrics/evaluation_metrics/common/``: ``no_ego_at_fault_collisions.py``,
  ``drivable_area_compliance.py``, ``ego_progress_along_expert_route.py``, ``time_to_collision_within_bound.py``,
  ``ego_is_comfortable.py``); where the two differ the function's docstring says which one we follow and why.
* **EPDMS** (NAVSIM v2, the same ``pdm_scorer.py`` with ``pdm_comfort_metrics.py``, ``scene_aggregator.py`` and
  the human filter of ``navsim/evaluate/pdm_score.py``)::

      EPDMS = NC * DAC * DDC * TLC * (5 * EP + 5 * TTC + 2 * LK + 2 * HC + 2 * EC) / 16

  with driving direction (DDC), traffic lights (TLC) and lane keeping (LK) read from the episode's road rules
  (:attr:`EpisodeTrace.rules`), history comfort (HC) and two-frame extended comfort (EC, from the agent's plans).
  nuPlan's **speed limit compliance** (``speed_limit_compliance.py``) is reported beside it, not part of it.
* **Driving score** (CARLA leaderboard 2.0, ``leaderboard/utils/statistics_manager.py``): route completion times
  the product of infraction penalties (``PENALTY_VALUE_DICT``), with route travelled outside the lanes removed
  (``OUTSIDE_ROUTE_LANES_INFRACTION``).
* **Log divergence**: ADE / FDE / maximum displacement of the ego rear axle from the logged ego (as nuPlan's
  ``planner_expert_average_l2_error``, but over the whole closed-loop episode).

What this package cannot know and therefore simplifies (each repeated where it matters):

* NC and TTC use no lane graph: nuPlan's "ego in multiple lanes" (lane changes) and "ego in an intersection" are
  not used there; only "ego footprint off the drivable area" is. See :func:`no_at_fault_collisions` and
  :func:`time_to_collision`.
* Lanes, lights and speed limits come from :attr:`EpisodeTrace.rules` (lane centrelines in driving direction with a
  lane width, ``in_intersection`` flags, light schedules): the EPDMS rule terms and speed limit compliance. Without
  rules (a map-less log), or with lights the map does not list or whose states are unknown, those terms are None
  with the reason in ``unscored``; never a silent 1. PDMS uses none of them (NAVSIM's PDMS gives driving direction
  weight 0); stop signs are not modelled.
* No drivable area (a map-less log without LiDAR, or ``drivable_source="none"``): DAC and the driving score's
  off-road fraction are not scored (None, listed in ``unscored`` with the reason) and PDMS is computed from the
  rest (:func:`~stag_sim.metrics.pdms.combine_scores`). A map-less log with LiDAR is scored on its LiDAR ground
  (:mod:`stag_sim.drivable`; ``dac_source`` = ``"lidar ground"``).
* Comfort derivatives are estimated from the recorded speed and yaw (see :func:`comfort`), not from an
  acceleration the simulator reports.

Layout (one module per metric family; this package re-exports every public name):

* :mod:`~stag_sim.metrics.trace`: the inputs (:class:`EgoTrace`, :class:`AgentTrace`, :class:`EpisodeTrace`);
* :mod:`~stag_sim.metrics.registry`: :class:`MetricResult`, :data:`METRICS`, :func:`register_metric`;
* :mod:`~stag_sim.metrics.collisions`: NC and DAC; :mod:`~stag_sim.metrics.progress`: EP;
  :mod:`~stag_sim.metrics.ttc`: TTC; :mod:`~stag_sim.metrics.comfort`: C; :mod:`~stag_sim.metrics.pdms`: PDMS;
* :mod:`~stag_sim.metrics.driving_score`: the CARLA driving score;
* :mod:`~stag_sim.metrics.displacement`: log divergence (ADE / FDE);
* :mod:`~stag_sim.metrics.rules`: DDC, TLC, LK and speed limit compliance; :mod:`~stag_sim.metrics.extended_comfort`:
  HC and EC; :mod:`~stag_sim.metrics.epdms`: EPDMS and the human filter;
* here: :func:`compute_metrics` and :func:`summarize`.

The metric modules are imported in the order their metrics register, which is the order of :data:`METRICS` (and
so of :func:`compute_metrics`' results and :func:`summarize`'s columns).

Usage::

    results = compute_metrics(trace)             # every registered metric
    row = summarize(results)                     # plain floats/ints for CSV / JSON
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.metrics.trace import AGENT_CLASSES, AgentTrace, EgoTrace, EpisodeTrace, agent_class
from stag_sim.metrics.registry import METRICS, MetricFn, MetricResult, register_metric
from stag_sim.metrics.collisions import (
    AGENT_BEHIND_ANGLE,
    AGENT_STOPPED_SPEED,
    EGO_STOPPED_SPEED,
    NC_ALLOWED_STATIC,
    drivable_area_compliance,
    no_at_fault_collisions,
)
from stag_sim.metrics.progress import PROGRESS_DISTANCE_THRESHOLD, ego_progress
from stag_sim.metrics.ttc import TTC_OFFSETS, TTC_STOPPED_SPEED, time_to_collision
from stag_sim.metrics.comfort import COMFORT_BOUNDS, COMFORT_WINDOW, comfort, comfort_signals
from stag_sim.metrics.pdms import PDMS_WEIGHTS, pdms
from stag_sim.metrics.driving_score import CARLA_COLLISION_PENALTY, driving_score
from stag_sim.metrics.displacement import log_divergence
from stag_sim.metrics.rules import (
    DDC_COMPLIANCE_THRESHOLD,
    DDC_HORIZON,
    DDC_VIOLATION_THRESHOLD,
    LK_DEVIATION_LIMIT,
    LK_HORIZON_WINDOW,
    SPEED_OVERSPEED_THRESHOLD,
    driving_direction_compliance,
    lane_keeping,
    speed_limit_compliance,
    traffic_light_compliance,
)
from stag_sim.metrics.extended_comfort import EC_THRESHOLDS, extended_comfort, history_comfort
from stag_sim.metrics.epdms import EPDMS_WEIGHTS, epdms

__all__ = [
    "AGENT_BEHIND_ANGLE",
    "AGENT_CLASSES",
    "AGENT_STOPPED_SPEED",
    "AgentTrace",
    "CARLA_COLLISION_PENALTY",
    "COMFORT_BOUNDS",
    "COMFORT_WINDOW",
    "DDC_COMPLIANCE_THRESHOLD",
    "DDC_HORIZON",
    "DDC_VIOLATION_THRESHOLD",
    "EC_THRESHOLDS",
    "EGO_STOPPED_SPEED",
    "EPDMS_WEIGHTS",
    "EgoTrace",
    "EpisodeTrace",
    "LK_DEVIATION_LIMIT",
    "LK_HORIZON_WINDOW",
    "METRICS",
    "MetricFn",
    "MetricResult",
    "NC_ALLOWED_STATIC",
    "PDMS_WEIGHTS",
    "PROGRESS_DISTANCE_THRESHOLD",
    "SPEED_OVERSPEED_THRESHOLD",
    "TTC_OFFSETS",
    "TTC_STOPPED_SPEED",
    "agent_class",
    "comfort",
    "comfort_signals",
    "compute_metrics",
    "driving_score",
    "drivable_area_compliance",
    "driving_direction_compliance",
    "ego_progress",
    "epdms",
    "extended_comfort",
    "history_comfort",
    "lane_keeping",
    "log_divergence",
    "no_at_fault_collisions",
    "pdms",
    "register_metric",
    "speed_limit_compliance",
    "summarize",
    "time_to_collision",
    "traffic_light_compliance",
]


def compute_metrics(trace: EpisodeTrace, names: Iterable[str] | None = None) -> dict[str, MetricResult]:
    """Run the registered metrics ``names`` (default: all, in registration order) on ``trace``."""
    trace.validate()
    names = list(METRICS) if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValidationError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return {n: METRICS[n](trace) for n in names}


# --- flattening ---------------------------------------------------------------------------------------------------

# metric name -> (output column, detail key or None for the score)
_SUMMARY_FIELDS = {
    "pdms": [("pdms", None)],
    "no_at_fault_collisions": [("nc", None), ("collisions", "collisions"), ("at_fault_collisions", "at_fault_collisions")],
    "drivable_area_compliance": [("dac", None), ("offroad_steps", "offroad_steps")],
    "ego_progress": [("ep", None), ("progress", "progress")],
    "time_to_collision": [("ttc", None)],
    "comfort": [("comfort", None)],
    "driving_score": [
        ("driving_score", None),
        ("route_completion", "route_completion"),
        ("infraction_penalty", "infraction_penalty"),
        ("collisions_vehicle", "collisions_vehicle"),
        ("collisions_pedestrian", "collisions_pedestrian"),
        ("collisions_static", "collisions_static"),
        ("offroad_fraction", "offroad_fraction"),
    ],
    "log_divergence": [("ade", "ade"), ("fde", "fde"), ("max_displacement", "max_displacement")],
    "driving_direction_compliance": [("ddc", None), ("oncoming_progress", "max_oncoming_progress")],
    "traffic_light_compliance": [("tlc", None), ("red_light_crossings", "red_crossings")],
    "lane_keeping": [("lk", None)],
    "speed_limit_compliance": [("speed_limit_compliance", None), ("max_overspeed", "max_overspeed")],
    "history_comfort": [("hc", None)],
    "extended_comfort": [("ec", None)],
    "epdms": [("epdms", None), ("epdms_human_filtered", "human_filtered")],
}
#: sub-metric columns that ``pdms`` / ``epdms`` alone (without their sub-metrics in the results) fill from details
_SCORE_PARTS = {"pdms": ("nc", "dac", "ep", "ttc", "comfort"), "epdms": ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk",
                                                                         "hc", "ec")}


def summarize(results: dict[str, MetricResult]) -> dict[str, float | int | str | None]:
    """Flatten :func:`compute_metrics` results to plain floats / ints (one CSV row / JSON object).

    Known metrics give fixed columns (``pdms, nc, collisions, at_fault_collisions, dac, offroad_steps, ep,
    progress, ttc, comfort, driving_score, route_completion, infraction_penalty, collisions_vehicle,
    collisions_pedestrian, collisions_static, offroad_fraction, ade, fde, max_displacement, ddc,
    oncoming_progress, tlc, red_light_crossings, lk, speed_limit_compliance, max_overspeed, hc, ec, epdms,
    epdms_human_filtered``); a metric registered elsewhere gives one column, its name, holding its score. ``pdms``
    alone (without its sub-metrics in ``results``) also yields ``nc, dac, ep, ttc, comfort`` from its details,
    ``epdms`` alone ``nc, dac, ddc, tlc, ep, ttc, lk, hc, ec`` (the agent's own values, before the human filter).
    ``epdms_human_filtered`` names the sub-metrics the human filter lifted (comma-separated; "" for none).

    A value the episode cannot be scored on is None (null in JSON, "n/a" in reports: ``dac`` and
    ``offroad_fraction`` without a drivable area); then ``unscored`` lists them with the reason
    (``"dac: no drivable area (...)"``, joined by ``"; "``). With ``pdms``, ``dac_source`` says where the drivable
    area came from (``"map"``, ``"lidar ground"``, None).
    """
    row: dict = {}
    unscored: dict[str, str] = {}

    def put(key, value):
        if value is None or isinstance(value, str):
            row[key] = value
        elif isinstance(value, (list, tuple)):
            row[key] = ",".join(map(str, value))
        else:
            row[key] = int(value) if isinstance(value, (bool, np.bool_, int, np.integer)) else float(value)

    for name, result in results.items():
        for column, key in _SUMMARY_FIELDS.get(name, [(name, None)]):
            put(column, result.score if key is None else result.details[key])
        unscored.update(result.details.get("unscored") or {})
    for name, keys in _SCORE_PARTS.items():
        if name in results:  # epdms keeps the agent's own (unfiltered) sub-scores under "own"
            parts = results[name].details.get("own", results[name].details)
            for key in keys:
                if key not in row:
                    put(key, parts[key])
    if "pdms" in results:
        row["dac_source"] = results["pdms"].details["dac_source"]
    if unscored:
        row["unscored"] = "; ".join(f"{k}: {why}" for k, why in unscored.items())
    return row
