"""Route progress metric: EP (ego progress along the route relative to the best reachable progress, NAVSIM)."""

from __future__ import annotations

from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace

PROGRESS_DISTANCE_THRESHOLD = 5.0  # [m] NAVSIM PDMScorerConfig.progress_distance_threshold


@register_metric("ego_progress")
def ego_progress(trace: EpisodeTrace) -> MetricResult:
    """EP: the ego's progress along the route relative to the best reachable progress.

    Source: NAVSIM ``_calculate_progress`` / ``_aggregate_scores``: raw progress = projected end minus projected
    start, clipped at 0; it is divided by the largest progress of the compared trajectories when that exceeds
    5 m, else EP = 1. Here the compared trajectories are the ego and the reference, so::

        denom = max(reference_progress, progress);  EP = 1 if denom <= 5 m else progress / denom

    Simplification: NAVSIM multiplies each raw progress by that trajectory's NC * DAC before normalising (so a
    static collision also halves EP); we do not, NC and DAC already multiply the PDMS. nuPlan's own metric
    uses a 10 m floor on the expert progress instead (``ego_progress_along_expert_route.py``).
    """
    trace.validate()
    progress = max(float(trace.route_progress[-1] - trace.route_progress[0]), 0.0)
    denom = max(float(trace.reference_progress), progress)
    score = 1.0 if denom <= PROGRESS_DISTANCE_THRESHOLD else progress / denom
    return MetricResult(float(score), {"progress": progress, "reference_progress": float(trace.reference_progress)})
