"""Road-rule metrics on the episode's lanes and lights (:attr:`EpisodeTrace.rules`): NAVSIM v2's driving direction
compliance (DDC), traffic light compliance (TLC) and lane keeping (LK), and nuPlan's speed limit compliance.

Sources (our own code; the originals named so each rule can be checked):

* NAVSIM v2 ``navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py``:
  ``_calculate_driving_direction_compliance``, ``_calculate_traffic_light_compliance``,
  ``_calculate_lane_keeping``, with the thresholds of ``PDMScorerConfig`` (``driving_direction_horizon`` 1.0 s,
  ``driving_direction_compliance_threshold`` 2.0 m, ``driving_direction_violation_threshold`` 6.0 m,
  ``lane_keeping_deviation_limit`` 0.5 m, ``lane_keeping_horizon_window`` 2.0 s; the same values in
  ``navsim/planning/script/config/pdm_scoring/scorer/pdm_scorer.yaml``);
* nuPlan ``nuplan/planning/metrics/evaluation_metrics/common/speed_limit_compliance.py`` with
  ``speed_limit_compliance_statistics.yaml`` (``max_overspeed_value_threshold: 2.23`` m/s) and
  ``driving_direction_compliance.py`` (the DDC thresholds NAVSIM took over).

Where the maps differ: nuPlan / NAVSIM test lane *polygons* and an intersection layer; a :class:`RoadRules` has lane
centrelines, a lane width and per-lane ``in_intersection`` flags. Here "in a lane" means the ego's box centre lies
within ``lane_width / 2`` of the centreline (:func:`lane_geometry`), "in an intersection" means in the corridor of
a lane flagged ``in_intersection``, and a lane's direction at a point is that of its centreline's nearest segment.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace
from stag_sim.road_rules import RED, stop_crossings

# NAVSIM PDMScorerConfig (v2)
DDC_HORIZON = 1.0  # [s] driving_direction_horizon
DDC_COMPLIANCE_THRESHOLD = 2.0  # [m] driving_direction_compliance_threshold: less oncoming progress scores 1
DDC_VIOLATION_THRESHOLD = 6.0  # [m] driving_direction_violation_threshold: less scores 0.5, more 0
LK_DEVIATION_LIMIT = 0.5  # [m] lane_keeping_deviation_limit
LK_HORIZON_WINDOW = 2.0  # [s] lane_keeping_horizon_window
# nuPlan speed_limit_compliance_statistics.yaml
SPEED_OVERSPEED_THRESHOLD = 2.23  # [m/s] max_overspeed_value_threshold
_CHUNK = 64  # steps per block of the (steps x segments) distance arrays
_REACH = 20.0  # [m] lanes farther from every step of a block count as infinitely far (no metric looks that far)

NO_RULES = "no lane map (map-less log): lanes, lights and speed limits are unknown"


def lane_geometry(trace: EpisodeTrace) -> dict[str, np.ndarray]:
    """The ego's box centre against every lane of ``trace.rules`` (T steps, L lanes):

    * ``distance`` (T, L) [m] to the centreline (inf where farther than :data:`_REACH`);
    * ``cos`` (T, L) [-] cosine between the direction of the centreline's nearest segment and the ego heading
      (> 0: a lane of compatible direction; < 0: an opposing one);
    * ``inside`` (T, L) bool: within ``lane_width / 2`` of the centreline (in the lane's corridor);
    * ``in_intersection`` (T,) bool: inside the corridor of a lane flagged ``in_intersection`` (all False where the
      flags are unknown).
    """
    rules = trace.rules
    centre = trace.ego.centre
    heading = np.stack([np.cos(trace.ego.yaw), np.sin(trace.ego.yaw)], axis=-1)
    T, L = centre.shape[0], len(rules.lanes)
    coords = [np.asarray(shapely.get_coordinates(lane), np.float64) for lane in rules.lanes]
    a = np.concatenate([c[:-1] for c in coords])  # (S, 2) segment starts, lane by lane
    d = np.concatenate([np.diff(c, axis=0) for c in coords])
    bounds = np.cumsum([0] + [len(c) - 1 for c in coords])
    d2 = np.maximum(np.einsum("sk,sk->s", d, d), 1e-18)
    unit = d / np.sqrt(d2)[:, None]
    lo_xy, hi_xy = np.minimum(a, a + d), np.maximum(a, a + d)  # segment bounding boxes
    distance, cos = np.full((T, L), np.inf), np.zeros((T, L))
    for lo in range(0, T, _CHUNK):
        c = centre[lo:lo + _CHUNK]
        near = np.all((lo_xy <= c.max(axis=0) + _REACH) & (hi_xy >= c.min(axis=0) - _REACH), axis=1)
        p = c[:, None, :] - a[None, near]  # (t, S', 2): only segments within reach of this block
        u = np.clip(np.einsum("tsk,sk->ts", p, d[near]) / d2[near], 0.0, 1.0)
        dist = np.full((len(c), len(a)), np.inf)
        dist[:, near] = np.linalg.norm(p - u[..., None] * d[near][None], axis=-1)
        for j in range(L):
            if not near[bounds[j]:bounds[j + 1]].any():
                continue  # a lane out of reach: infinitely far, of no direction
            k = bounds[j] + np.argmin(dist[:, bounds[j]:bounds[j + 1]], axis=1)
            distance[lo:lo + _CHUNK, j] = dist[np.arange(len(k)), k]
            cos[lo:lo + _CHUNK, j] = np.einsum("tk,tk->t", unit[k], heading[lo:lo + _CHUNK])
    inside = distance <= rules.lane_width / 2.0
    flags = rules.in_intersection
    in_intersection = (inside & np.asarray(flags, bool)[None, :]).any(axis=1) if flags is not None else np.zeros(T, bool)
    return {"distance": distance, "cos": cos, "inside": inside, "in_intersection": in_intersection}


def _no_rules(key: str, details: dict | None = None) -> MetricResult:
    return MetricResult(None, {**(details or {}), "unscored": {key: NO_RULES}})


def _steps(window_s: float, dt: float) -> int:
    """Steps in ``window_s`` [s] at step ``dt`` [s] (rounded; at least 1)."""
    return max(1, int(round(window_s / dt))) if np.isfinite(dt) else 1


@register_metric("driving_direction_compliance")
def driving_direction_compliance(trace: EpisodeTrace) -> MetricResult:
    """DDC: 1 when the ego's largest progress against the traffic over any 1 s is < 2 m, 0.5 when < 6 m, else 0.

    Source: NAVSIM v2 ``_calculate_driving_direction_compliance`` (thresholds of nuPlan
    ``driving_direction_compliance.py``). Per step, the oncoming progress is the distance the ego's box centre moved
    since the last step, counted where the centre is in oncoming traffic and not in an intersection; it is summed
    over the window of steps ``i - h .. i`` (h = 1 s / dt, as NAVSIM's ``oncoming_progress[max(0, i - h): i + 1]``:
    h + 1 displacements, 1.1 s at 10 Hz) and the largest sum decides.

    "In oncoming traffic": the centre lies in the corridor of a lane whose direction opposes the ego heading (more
    than 90 deg off) and in no corridor of a lane of compatible direction (NAVSIM: the centre lies in no on-route
    lane polygon; we have no route lanes, and a lane of the ego's direction is where it may drive). Steps in an
    intersection lane's corridor do not count (NAVSIM drops intersection steps). Not scored without lanes.
    """
    trace.validate()
    if trace.rules is None or not trace.rules.lanes:
        return _no_rules("ddc", {"max_oncoming_progress": None})
    g = lane_geometry(trace)
    opposing = (g["inside"] & (g["cos"] < 0)).any(axis=1)
    compatible = (g["inside"] & (g["cos"] > 0)).any(axis=1)
    oncoming = opposing & ~compatible & ~g["in_intersection"]
    centre = trace.ego.centre
    step = np.zeros(trace.ego.num_steps)
    step[1:] = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    step[~oncoming] = 0.0
    h = _steps(DDC_HORIZON, trace.ego.dt)
    csum = np.concatenate([[0.0], np.cumsum(step)])
    i = np.arange(len(step))
    window = csum[i + 1] - csum[np.maximum(0, i - h)]
    worst = float(window.max()) if len(window) else 0.0
    score = 1.0 if worst < DDC_COMPLIANCE_THRESHOLD else 0.5 if worst < DDC_VIOLATION_THRESHOLD else 0.0
    return MetricResult(score, {"max_oncoming_progress": worst, "oncoming_steps": int(oncoming.sum()),
                                "worst_step": int(np.argmax(window)) if worst > 0 else None, "unscored": {}})


def _front_path(trace: EpisodeTrace) -> np.ndarray:
    """(T, 2) [m] the centre of the ego's front bumper."""
    ego = trace.ego
    reach = ego.centre_offset + ego.length / 2.0
    return ego.xy + reach * np.stack([np.cos(ego.yaw), np.sin(ego.yaw)], axis=-1)


@register_metric("traffic_light_compliance")
def traffic_light_compliance(trace: EpisodeTrace) -> MetricResult:
    """TLC: 0 if the ego's front crosses the stop line of a light showing red, in the direction it controls; else 1.

    Source: NAVSIM v2 ``_calculate_traffic_light_compliance`` (from Hydra-MDP++): a proposal scores 0 when its ego
    polygon intersects a lane connector whose light is red. Here: the path of the front bumper's centre crosses a
    light's stop line moving along :attr:`~stag_sim.road_rules.TrafficLight.stop_direction`
    (:func:`~stag_sim.road_rules.stop_crossings`), and the light's state at the crossing time (interpolated
    between the steps) is red. Yellow is no violation (NAVSIM only marks red). An ego that starts past a stop line
    has not crossed it.

    Not scored (None, ``details["unscored"]`` says why) without rules, or where
    :attr:`~stag_sim.road_rules.RoadRules.lights_scorable` gives a reason (the map does not list its lights, or
    their states are unknown). A map that lists its lights and has none scores 1 (``details["lights"]`` = 0).
    """
    trace.validate()
    rules = trace.rules
    if rules is None:
        return _no_rules("tlc", {"red_crossings": None})
    why = rules.lights_scorable
    if why is not None:
        return MetricResult(None, {"lights": len(rules.lights), "red_crossings": None, "unscored": {"tlc": why}})
    front = _front_path(trace)
    seg = np.linalg.norm(np.diff(front, axis=0), axis=1)
    s0 = np.concatenate([[0.0], np.cumsum(seg)])
    t = trace.ego.time_s
    crossings = []
    for s, j in stop_crossings(front, rules.lights):
        i = int(np.flatnonzero((s0[:-1] <= s) & (s <= s0[1:]) & (seg > 0))[0])
        time = float(t[i] + (s - s0[i]) / seg[i] * (t[i + 1] - t[i]))
        light = rules.lights[j]
        crossings.append({"light": light.light_id, "step": i, "time_s": time, "state": light.state_at(time),
                          "red": bool(int(light.code_at(time)) == RED)})
    red = [c for c in crossings if c["red"]]
    return MetricResult(0.0 if red else 1.0, {"lights": len(rules.lights), "crossings": crossings,
                                              "red_crossings": len(red), "unscored": {}})


@register_metric("lane_keeping")
def lane_keeping(trace: EpisodeTrace) -> MetricResult:
    """LK: 0 when the ego's box centre stays more than 0.5 m from the nearest centreline of a lane of compatible
    direction for 2 s on end, else 1.

    Source: NAVSIM v2 ``_calculate_lane_keeping`` (revised Hydra-MDP++ metric): a counter of consecutive steps
    beyond ``lane_keeping_deviation_limit`` (0.5 m) fails the metric when it reaches
    ``ceil(lane_keeping_horizon_window / dt)`` steps (20 at 10 Hz); a step inside an intersection is skipped (it
    neither counts nor resets the counter, as NAVSIM's ``continue``). Differences: NAVSIM measures the distance to the
    route's centreline; we have no route lanes and take the nearest lane whose direction is within 90 deg of the
    ego heading (so a completed lane change into a parallel lane of the same direction is not penalised; a
    lateral offset held for 2 s is). Intersections: the corridors of lanes flagged ``in_intersection``; where the map
    gives no flags every step counts (``details["intersections_known"]`` False). Not scored without lanes.
    """
    trace.validate()
    if trace.rules is None or not trace.rules.lanes:
        return _no_rules("lk")
    g = lane_geometry(trace)
    deviation = np.where(g["cos"] > 0, g["distance"], np.inf).min(axis=1)
    need = max(1, math.ceil(LK_HORIZON_WINDOW / trace.ego.dt - 1e-9)) if trace.ego.num_steps > 1 else 1
    run, failed_at = 0, None
    for i in range(trace.ego.num_steps):
        if g["in_intersection"][i]:
            continue
        run = run + 1 if deviation[i] > LK_DEVIATION_LIMIT else 0
        if run >= need:
            failed_at = i
            break
    counted = ~g["in_intersection"]
    finite = deviation[counted & np.isfinite(deviation)]
    return MetricResult(0.0 if failed_at is not None else 1.0, {
        "failed_step": failed_at, "steps_required": need,
        "steps_off_lane": int((counted & (deviation > LK_DEVIATION_LIMIT)).sum()),
        "max_deviation": float(finite.max()) if len(finite) else None,
        "intersection_steps": int(g["in_intersection"].sum()),
        "intersections_known": trace.rules.in_intersection is not None, "unscored": {}})


def _step_limits(trace: EpisodeTrace, g: dict) -> tuple[np.ndarray, np.ndarray]:
    """(T,) speed limit [m/s] at each step (NaN: unknown) and (T,) bool: the ego is on some lane.

    As nuPlan ``_get_speed_limit_violation``: on a lane (not in an intersection), that lane's limit (the nearest
    such lane whose corridor holds the centre); only on connectors (intersection lanes), the largest limit of their
    incoming and outgoing lanes, unknown if any of those is unknown."""
    rules = trace.rules
    limits = np.asarray(rules.speed_limits, np.float64)
    inter = np.asarray(rules.in_intersection, bool) if rules.in_intersection is not None else np.zeros(len(limits), bool)
    index = {lid: i for i, lid in enumerate(rules.lane_ids)}
    preds: list[list[int]] = [[] for _ in rules.lane_ids]
    for i, succ in enumerate(rules.successors):
        for lid in succ:
            if lid in index:
                preds[index[lid]].append(i)
    out = np.full(trace.ego.num_steps, np.nan)
    on_lane = g["inside"].any(axis=1)
    for t in np.flatnonzero(on_lane):
        lanes = np.flatnonzero(g["inside"][t])
        plain = lanes[~inter[lanes]]
        if len(plain):
            out[t] = limits[plain[np.argmin(g["distance"][t, plain])]]
            continue
        edges = {e for c in lanes for e in preds[c] + [index[s] for s in rules.successors[c] if s in index]}
        values = limits[sorted(edges)]
        out[t] = values.max() if len(values) and np.all(np.isfinite(values)) else np.nan
    return out, on_lane


@register_metric("speed_limit_compliance")
def speed_limit_compliance(trace: EpisodeTrace) -> MetricResult:
    """Speed limit compliance (nuPlan; not part of PDMS or EPDMS): 1 without overspeeding, else
    ``max(0, 1 - sum(overspeed) * dt / (2.23 m/s * duration))``.

    Source: nuPlan ``speed_limit_compliance.py`` (``SpeedLimitComplianceStatistics._compute_violation_metric_score``,
    ``max_overspeed_value_threshold`` 2.23 m/s): the overspeed at each step is ``speed - limit`` where positive, the
    limit that of the lane the ego is on (:func:`_step_limits`); a step on no lane, or whose limit is unknown (NaN),
    has no violation (as nuPlan, where a lane without a limit gives none). ``duration`` is the episode's
    (last time - first time).

    Not scored (None, with the reason in ``details["unscored"]``) without rules, or when no step of the episode
    was on a lane with a known limit (then nothing was checked).
    """
    trace.validate()
    if trace.rules is None or not trace.rules.lanes:
        return _no_rules("speed_limit", {"max_overspeed": None})
    g = lane_geometry(trace)
    limit, on_lane = _step_limits(trace, g)
    known = np.isfinite(limit)
    details = {"known_limit_steps": int(known.sum()), "unknown_limit_steps": int((on_lane & ~known).sum()),
               "off_lane_steps": int((~on_lane).sum())}
    if not known.any():
        why = ("the map gives no speed limits" if not np.isfinite(trace.rules.speed_limits).any()
               else "the ego was on no lane with a known speed limit")
        return MetricResult(None, {**details, "max_overspeed": None, "unscored": {"speed_limit": why}})
    over = np.where(known, np.maximum(trace.ego.speed - np.where(known, limit, 0.0), 0.0), 0.0)
    details.update(max_overspeed=float(over.max()), overspeed_steps=int((over > 0).sum()),
                   first_overspeed_step=int(np.argmax(over > 0)) if (over > 0).any() else None, unscored={})
    if not (over > 0).any():
        return MetricResult(1.0, details)
    t = trace.ego.time_s
    duration = float(t[-1] - t[0])
    if duration <= 0:
        return MetricResult(None, {**details, "unscored": {"speed_limit": "a one-step episode has no duration"}})
    loss = float(np.sum(over)) * trace.ego.dt / (SPEED_OVERSPEED_THRESHOLD * duration)
    return MetricResult(float(max(0.0, 1.0 - loss)), details)
