"""The NAVSIM PDM score: the PDMS sub-metrics (NC, DAC, EP, TTC, C) combined as
``NC * DAC * (5 EP + 5 TTC + 2 C) / 12``; a sub-metric the episode cannot be scored on (DAC without a drivable
area) is left out and the rest renormalised."""

from __future__ import annotations

from stag_sim.metrics.collisions import drivable_area_compliance, no_at_fault_collisions
from stag_sim.metrics.comfort import comfort
from stag_sim.metrics.progress import ego_progress
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace
from stag_sim.metrics.ttc import time_to_collision

PDMS_MULTIPLIERS = ("nc", "dac")
PDMS_WEIGHTS = {"ep": 5.0, "ttc": 5.0, "comfort": 2.0}  # NAVSIM PDMScorerConfig (driving direction weight 0)


def combine_scores(parts: dict, multipliers=PDMS_MULTIPLIERS, weights: dict = PDMS_WEIGHTS) -> tuple[float, float, float]:
    """(score, multiplier, weighted) of sub-scores ``parts`` (name -> value in [0, 1], or None where not scored):
    the product of the scored ``multipliers`` times the ``weights``-weighted mean of the scored weighted terms.

    An unscored multiplier is left out of the product (as NAVSIM scores a multiplier that does not apply: 1); an
    unscored weighted term is left out and the other weights renormalised (NAVSIM v2 scores lane keeping 1 where it
    does not apply, e.g. in intersections; renormalising instead neither rewards nor punishes what is unknown). With
    every weighted term unscored, the weighted part is 1."""
    multiplier = 1.0
    for k in multipliers:
        if parts[k] is not None:
            multiplier *= parts[k]
    scored = {k: w for k, w in weights.items() if parts[k] is not None}
    weighted = sum(w * parts[k] for k, w in scored.items()) / sum(scored.values()) if scored else 1.0
    return float(multiplier * weighted), float(multiplier), float(weighted)


@register_metric("pdms")
def pdms(trace: EpisodeTrace) -> MetricResult:
    """NAVSIM PDM score: ``NC * DAC * (5 EP + 5 TTC + 2 C) / 12`` (NAVSIM ``PDMScorer._aggregate_scores`` with the
    default weights; driving-direction weight 0). Sub-metrics as in :func:`no_at_fault_collisions`,
    :func:`drivable_area_compliance`, :func:`ego_progress`, :func:`time_to_collision`, :func:`comfort`, computed
    over the whole closed-loop episode (NAVSIM scores a 4 s open-loop proposal; nuPlan a closed-loop episode).

    A sub-metric the episode cannot be scored on is None in the details, listed with its reason in
    ``details["unscored"]`` (name -> why) and left out of the score (:func:`combine_scores`): DAC of a log without
    a drivable area (no map and no LiDAR ground). ``details["dac_source"]`` says where the drivable area came
    from (``"map"``, ``"lidar ground"``). Lanes, driving direction and traffic lights are not part of this score
    on any log (see :mod:`stag_sim.metrics`)."""
    trace.validate()
    dac = drivable_area_compliance(trace)
    parts = {
        "nc": no_at_fault_collisions(trace).score,
        "dac": dac.score,
        "ep": ego_progress(trace).score,
        "ttc": time_to_collision(trace).score,
        "comfort": comfort(trace).score,
    }
    unscored = dict(dac.details["unscored"])
    score, multiplier, weighted = combine_scores(parts)
    return MetricResult(score, {**parts, "multiplier": multiplier, "weighted": weighted, "unscored": unscored,
                                "dac_source": dac.details["source"]})
