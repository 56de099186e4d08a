"""NAVSIM v2's extended PDM score (EPDMS) and its human filter::

    EPDMS = NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC + 2 EC) / 16

Source: NAVSIM v2 ``navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py`` (``PDMScorerConfig``:
``progress_weight`` 5, ``ttc_weight`` 5, ``lane_keeping_weight`` 2, ``history_comfort_weight`` 2,
``two_frame_extended_comfort_weight`` 2; multiplicative ``MultiMetricIndex``: no collision, drivable area, driving
direction, traffic light), ``navsim/planning/script/run_pdm_score.py`` (``compute_final_scores``: the two-frame
extended comfort injected into the weighted sum) and ``navsim/evaluate/pdm_score.py`` (the human penalty filter,
``human_penalty_filter: True`` in ``config/pdm_scoring/scorer/pdm_scorer.yaml``).
"""

from __future__ import annotations

from dataclasses import replace

from stag_sim.metrics.collisions import drivable_area_compliance, no_at_fault_collisions
from stag_sim.metrics.extended_comfort import extended_comfort, history_comfort
from stag_sim.metrics.pdms import combine_scores
from stag_sim.metrics.progress import ego_progress
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.rules import driving_direction_compliance, lane_keeping, traffic_light_compliance
from stag_sim.metrics.trace import EpisodeTrace
from stag_sim.metrics.ttc import time_to_collision

EPDMS_MULTIPLIERS = ("nc", "dac", "ddc", "tlc")
EPDMS_WEIGHTS = {"ep": 5.0, "ttc": 5.0, "lk": 2.0, "hc": 2.0, "ec": 2.0}  # NAVSIM v2 PDMScorerConfig
#: sub-metric key -> metric; the ones the human filter may lift (every one but EP; EC needs plans the log lacks)
EPDMS_TERMS = {
    "nc": no_at_fault_collisions, "dac": drivable_area_compliance, "ddc": driving_direction_compliance,
    "tlc": traffic_light_compliance, "ep": ego_progress, "ttc": time_to_collision, "lk": lane_keeping,
    "hc": history_comfort, "ec": extended_comfort,
}
HUMAN_FILTERED = ("nc", "dac", "ddc", "tlc", "ttc", "lk", "hc")

NO_HUMAN = ("no logged human trace (none given, or the scenario edits what the logged driver met): the human "
            "filter is off")


def human_scores(trace: EpisodeTrace) -> dict[str, float | None]:
    """The filterable sub-metrics (:data:`HUMAN_FILTERED`) of the logged human (``trace.human`` driven in place of
    the ego, against the other agents as they moved in this episode; no plans)."""
    human = replace(trace, ego=trace.human, human=None, plans=None, plan_dt=None)
    return {k: EPDMS_TERMS[k](human).score for k in HUMAN_FILTERED}


@register_metric("epdms")
def epdms(trace: EpisodeTrace) -> MetricResult:
    """NAVSIM v2 extended PDM score: ``NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC + 2 EC) / 16``.

    Sub-metrics: :func:`~stag_sim.metrics.collisions.no_at_fault_collisions`,
    :func:`~stag_sim.metrics.collisions.drivable_area_compliance`,
    :func:`~stag_sim.metrics.rules.driving_direction_compliance`,
    :func:`~stag_sim.metrics.rules.traffic_light_compliance`, :func:`~stag_sim.metrics.progress.ego_progress`,
    :func:`~stag_sim.metrics.ttc.time_to_collision`, :func:`~stag_sim.metrics.rules.lane_keeping`,
    :func:`~stag_sim.metrics.extended_comfort.history_comfort`,
    :func:`~stag_sim.metrics.extended_comfort.extended_comfort`, over the whole closed-loop episode.

    Human filter (NAVSIM v2 ``pdm_score.py``): the same sub-metrics are computed for the logged human
    (``trace.human``); a sub-metric the human scores 0 counts as met (1) for the agent. ``details["human_filtered"]``
    lists the sub-metrics it lifted (the agent's own value was below 1), ``details["human"]`` the human's scores.
    EP is never filtered (NAVSIM's loop would also lift an EP of 0; a human without progress is not a rule the
    agent could not follow) and EC cannot be (the log has no plans). NAVSIM filters on 0 only, so a 0.5 (NC after
    a static collision, DDC between 2 and 6 m) is not lifted. With ``human`` None nothing is filtered and
    ``details["human_note"]`` says so. The human is replayed against the agents as they moved in this episode
    (NAVSIM v2 re-simulates reactive agents for it).

    Unscored sub-metrics (None, each with its reason in ``details["unscored"]``: no lanes, unknown lights, no
    drivable area, no plans) are left out by :func:`~stag_sim.metrics.pdms.combine_scores`: a multiplier is dropped
    from the product, a weighted term from the weighted mean and the weights renormalised. EPDMS is None only
    when nothing at all could be scored (never: NC, EP and TTC always are).
    """
    trace.validate()
    results = {k: fn(trace) for k, fn in EPDMS_TERMS.items()}
    own = {k: r.score for k, r in results.items()}
    unscored: dict[str, str] = {}
    for r in results.values():
        unscored.update(r.details.get("unscored") or {})
    parts = dict(own)
    details: dict = {"own": own, "human_filtered": [], "human": None, "human_note": None}
    if trace.human is None:
        details["human_note"] = NO_HUMAN
    else:
        human = human_scores(trace)
        lifted = [k for k in HUMAN_FILTERED if human[k] == 0.0 and own[k] is not None and own[k] < 1.0]
        for k in lifted:
            parts[k] = 1.0
        details.update(human=human, human_filtered=lifted)
    score, multiplier, weighted = combine_scores(parts, EPDMS_MULTIPLIERS, EPDMS_WEIGHTS)
    return MetricResult(score, {**parts, **details, "multiplier": multiplier, "weighted": weighted,
                                "unscored": unscored})
