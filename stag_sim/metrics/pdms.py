"""The NAVSIM PDM score: the PDMS sub-metrics (NC, DAC, EP, TTC, C) combined as
``NC * DAC * (5 EP + 5 TTC + 2 C) / 12``."""

from __future__ import annotations

from stag_sim.metrics.collisions import drivable_area_compliance, no_at_fault_collisions
from stag_sim.metrics.comfort import comfort
from stag_sim.metrics.progress import ego_progress
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace
from stag_sim.metrics.ttc import time_to_collision

PDMS_WEIGHTS = {"ep": 5.0, "ttc": 5.0, "comfort": 2.0}  # NAVSIM PDMScorerConfig (driving direction weight 0)


@register_metric("pdms")
def pdms(trace: EpisodeTrace) -> MetricResult:
    """NAVSIM PDM score: ``NC * DAC * (5 EP + 5 TTC + 2 C) / 12`` (NAVSIM ``PDMScorer._aggregate_scores`` with the
    default weights; driving-direction weight 0). Sub-metrics as in :func:`no_at_fault_collisions`,
    :func:`drivable_area_compliance`, :func:`ego_progress`, :func:`time_to_collision`, :func:`comfort`, computed
    over the whole closed-loop episode (NAVSIM scores a 4 s open-loop proposal; nuPlan a closed-loop episode)."""
    trace.validate()
    parts = {
        "nc": no_at_fault_collisions(trace).score,
        "dac": drivable_area_compliance(trace).score,
        "ep": ego_progress(trace).score,
        "ttc": time_to_collision(trace).score,
        "comfort": comfort(trace).score,
    }
    multiplier = parts["nc"] * parts["dac"]
    weighted = sum(PDMS_WEIGHTS[k] * parts[k] for k in PDMS_WEIGHTS) / sum(PDMS_WEIGHTS.values())
    return MetricResult(float(multiplier * weighted), {**parts, "multiplier": multiplier, "weighted": weighted})
