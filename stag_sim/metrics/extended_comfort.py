"""NAVSIM v2's comfort terms of EPDMS: history comfort (HC: nuPlan's comfort bounds on the driven ego) and
two-frame extended comfort (EC: consecutive plans must agree in acceleration, jerk, yaw rate and yaw acceleration).

Source: NAVSIM v2 ``navsim/planning/simulation/planner/pdm_planner/scoring/pdm_comfort_metrics.py``
(``ego_is_comfortable``, ``extract_features``, ``ego_is_two_frame_extended_comfort``, ``calculate_rms`` and the
thresholds ``acceleration_threshold`` 0.7 m/s^2, ``jerk_threshold`` 0.5 m/s^3, ``yaw_rate_threshold`` 0.1 rad/s,
``yaw_accel_threshold`` 0.1 rad/s^2), ``scoring/scene_aggregator.py`` (``SceneAggregator._compute_two_frame_comfort``:
the overlap of two plans) and ``pdm_scorer.py`` (``_calculate_history_comfort``).
"""

from __future__ import annotations

import numpy as np

from stag_sim.metrics.comfort import _savgol, comfort
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace

# NAVSIM pdm_comfort_metrics.py "Extended Comfort thresholds"; a pair meets one when its RMS difference is <= it
EC_THRESHOLDS = {
    "acceleration": 0.7,  # [m/s^2]
    "jerk": 0.5,  # [m/s^3]
    "yaw_rate": 0.1,  # [rad/s]
    "yaw_accel": 0.1,  # [rad/s^2]
}
EC_GRID_DT = 0.1  # [s] NAVSIM compares the two plans at its proposal sampling interval (interval_length 0.1 s)
EC_WINDOW = 5  # [waypoints] Savitzky-Golay window over a plan's waypoints (NAVSIM's yaw-rate window, 5 samples)
EC_HEADING_MIN_SPEED = 0.5  # [m/s] below this a plan's heading is held (the direction of travel is undefined)

NO_PLANS = "the agent gave controls, not trajectories: no plans to compare"


@register_metric("history_comfort")
def history_comfort(trace: EpisodeTrace) -> MetricResult:
    """HC: nuPlan's comfort bounds on the ego as it drove (the same value and details as :func:`~stag_sim.metrics.
    comfort.comfort`).

    Source: NAVSIM v2 ``_calculate_history_comfort`` runs ``ego_is_comfortable`` on the 4 s proposal padded with
    the logged past; in closed loop the whole executed episode is that history, so HC is the comfort of the driven
    trace (signals and their simplifications as :func:`~stag_sim.metrics.comfort.comfort_signals`)."""
    return comfort(trace)


def plan_features(xy: np.ndarray, plan_dt: float, yaw0: float) -> dict[str, np.ndarray]:
    """NAVSIM's extended-comfort features of one plan, at its waypoints.

    ``xy`` (H + 1, 2) [m]: the ego's position when it planned, then the H waypoints, ``plan_dt`` [s] apart;
    ``yaw0`` [rad]: the ego heading when it planned. Returns (H + 1,) ``acceleration`` [m/s^2] (magnitude of the
    acceleration vector), ``jerk`` [m/s^3] (its time derivative), ``yaw_rate`` [rad/s] and ``yaw_accel``
    [rad/s^2] (derivatives of the heading), as NAVSIM ``extract_features``. Derivatives are Savitzky-Golay over
    :data:`EC_WINDOW` waypoints, degree 2 (exact on constant-acceleration plans); the heading is the direction of
    the planned velocity, held where the plan moves slower than :data:`EC_HEADING_MIN_SPEED` (``yaw0`` until it
    first moves)."""
    vx = _savgol(xy[:, 0], EC_WINDOW, 2, 1, plan_dt)
    vy = _savgol(xy[:, 1], EC_WINDOW, 2, 1, plan_dt)
    ax = _savgol(xy[:, 0], EC_WINDOW, 2, 2, plan_dt)
    ay = _savgol(xy[:, 1], EC_WINDOW, 2, 2, plan_dt)
    heading = np.arctan2(vy, vx)
    held = yaw0
    for k in range(len(heading)):
        if np.hypot(vx[k], vy[k]) < EC_HEADING_MIN_SPEED:
            heading[k] = held
        held = heading[k]
    heading = np.unwrap(heading)
    acc = np.hypot(ax, ay)
    return {"acceleration": acc, "jerk": _savgol(acc, EC_WINDOW, 2, 1, plan_dt),
            "yaw_rate": _savgol(heading, EC_WINDOW, 2, 1, plan_dt),
            "yaw_accel": _savgol(heading, EC_WINDOW, 2, 2, plan_dt)}


def _pair_rms(a: dict, ta: np.ndarray, b: dict, tb: np.ndarray) -> dict[str, float] | None:
    """RMS difference of the features of two plans over their common time span, sampled every :data:`EC_GRID_DT`
    (features interpolated linearly between waypoints); None when they overlap in fewer than 2 samples."""
    start, end = max(ta[0], tb[0]), min(ta[-1], tb[-1])
    if end - start < EC_GRID_DT - 1e-9:
        return None
    grid = start + EC_GRID_DT * np.arange(int(np.floor((end - start) / EC_GRID_DT + 1e-9)) + 1)
    return {k: float(np.sqrt(np.mean((np.interp(grid, ta, a[k]) - np.interp(grid, tb, b[k])) ** 2)))
            for k in EC_THRESHOLDS}


@register_metric("extended_comfort")
def extended_comfort(trace: EpisodeTrace) -> MetricResult:
    """EC: the fraction of consecutive plan pairs whose difference is comfortable.

    Source: NAVSIM v2 two-frame extended comfort (``ego_is_two_frame_extended_comfort`` with
    ``SceneAggregator._compute_two_frame_comfort``): the plans of two consecutive frames are compared on their
    time overlap; a pair is comfortable when the RMS difference of each feature (acceleration magnitude, jerk, yaw
    rate, yaw acceleration: :func:`plan_features`) is at most its threshold (:data:`EC_THRESHOLDS`: 0.7 m/s^2,
    0.5 m/s^3, 0.1 rad/s, 0.1 rad/s^2). NAVSIM scores one pair of frames 0.5 s apart per scene (0 or 1); a
    closed-loop episode has a plan at every step, so EC here is the fraction of consecutive pairs (steps k, k + 1
    that both have a plan and overlap) within bounds, in [0, 1]; ``details["failed_pairs"]`` lists the step of
    each failed pair's first plan.

    Differences: NAVSIM's features come from the plan simulated by its LQR tracker at 10 Hz (with the simulated
    acceleration); ours from the plan's own waypoints (:func:`plan_features`), each plan starting at the ego's
    position when it planned, compared on a 0.1 s grid. Not scored (None) without plans
    (``trace.plans is None``: the agent gave controls) or without two consecutive overlapping plans.
    """
    trace.validate()
    if trace.plans is None:
        return MetricResult(None, {"pairs": 0, "unscored": {"ec": NO_PLANS}})
    ego, dt = trace.ego, float(trace.plan_dt)
    has = np.isfinite(trace.plans).reshape(ego.num_steps, -1).all(axis=1)
    H = trace.plans.shape[1]
    offsets = dt * np.arange(H + 1)
    feats: dict[int, dict] = {}

    def features(k: int) -> dict:
        if k not in feats:
            feats[k] = plan_features(np.vstack([ego.xy[k], trace.plans[k]]), dt, float(ego.yaw[k]))
        return feats[k]

    pairs, failed, worst = 0, [], {k: 0.0 for k in EC_THRESHOLDS}
    for k in np.flatnonzero(has[:-1] & has[1:]):
        rms = _pair_rms(features(k), ego.time_s[k] + offsets, features(k + 1), ego.time_s[k + 1] + offsets)
        if rms is None:
            continue
        pairs += 1
        worst = {n: max(worst[n], v) for n, v in rms.items()}
        bad = [n for n, v in rms.items() if v > EC_THRESHOLDS[n]]
        if bad:
            failed.append({"step": int(k), "features": bad})
    if pairs == 0:
        why = "fewer than two consecutive plans that overlap in time"
        return MetricResult(None, {"pairs": 0, "unscored": {"ec": why}})
    return MetricResult(float(1.0 - len(failed) / pairs), {"pairs": pairs, "failed_pairs": failed,
                                                          "max_rms": worst, "unscored": {}})
