"""Comfort metric: C (acceleration, jerk and yaw-rate bounds of nuPlan / NAVSIM), with the Savitzky-Golay
derivatives that estimate the comfort signals from the recorded speed and yaw."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EgoTrace, EpisodeTrace

# nuPlan / NAVSIM comfort bounds (pdm_comfort_metrics.py); values must lie strictly inside (NAVSIM _within_bound)
COMFORT_BOUNDS = {
    "lon_acc": (-4.05, 2.40),  # [m/s^2]
    "lat_acc": (-4.89, 4.89),  # [m/s^2]
    "jerk": (-8.37, 8.37),  # [m/s^3] derivative of the acceleration magnitude
    "lon_jerk": (-4.13, 4.13),  # [m/s^3]
    "yaw_rate": (-0.95, 0.95),  # [rad/s]
    "yaw_acc": (-1.93, 1.93),  # [rad/s^2]
}
COMFORT_WINDOW = 1.4  # [s] Savitzky-Golay window span: 15 samples at 10 Hz, nuPlan's derivative window


def _savgol(y: np.ndarray, window: int, polyorder: int, deriv: int, delta: float) -> np.ndarray:
    """Savitzky-Golay derivative of ``y`` (1-D, uniform step ``delta``): least-squares polynomial of degree
    ``polyorder`` over ``window`` samples, differentiated ``deriv`` times; the first/last half-windows use the
    polynomial of the first/last full window (as ``scipy.signal.savgol_filter(mode="interp")``). The window is
    shrunk to the series length (odd) and the degree to window - 1; zero when too few samples for ``deriv``."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    w = min(window, n)
    w -= 1 - w % 2
    p = min(polyorder, w - 1)
    if deriv > p:
        return np.zeros(n)
    h = w // 2
    x = np.arange(-h, h + 1) * delta
    coef = sliding_window_view(y, w) @ np.linalg.pinv(np.vander(x, p + 1, increasing=True)).T  # (n-w+1, p+1)
    powers = np.arange(deriv, p + 1)
    scale = np.array([math.factorial(k) / math.factorial(k - deriv) for k in powers])

    def evaluate(c, xs):  # derivative of sum_k c_k x^k at xs
        return (c[..., powers] * scale) @ (np.asarray(xs)[None, :] ** (powers - deriv)[:, None])

    out = np.empty(n)
    out[h:n - h] = coef[:, deriv] * math.factorial(deriv)
    if h:
        out[:h] = evaluate(coef[0], x[:h])
        out[n - h:] = evaluate(coef[-1], x[h + 1:])
    return out


def comfort_signals(ego: EgoTrace) -> dict[str, np.ndarray]:
    """(T,) lon_acc, lat_acc [m/s^2], jerk, lon_jerk [m/s^3], yaw_rate [rad/s], yaw_acc [rad/s^2] of the ego.

    Estimated from the recorded speed and (unwrapped) yaw with Savitzky-Golay derivatives (:data:`COMFORT_WINDOW`
    span, 15 samples at 10 Hz; degree 2 for first derivatives, degree 3 for the yaw acceleration), as nuPlan's
    ``_approximate_derivatives``; ``lat_acc = speed * yaw_rate``; ``jerk`` is the derivative of
    ``hypot(lon_acc, lat_acc)``. Rounded to 8 decimals as nuPlan does.
    """
    T, dt = ego.num_steps, ego.dt
    if T < 3:
        return {name: np.zeros(T) for name in COMFORT_BOUNDS}
    window = 2 * max(1, round(COMFORT_WINDOW / 2.0 / dt)) + 1
    yaw = np.unwrap(ego.yaw.astype(np.float64))
    lon_acc = _savgol(ego.speed, window, 2, 1, dt)
    yaw_rate = _savgol(yaw, window, 2, 1, dt)
    lat_acc = ego.speed * yaw_rate
    signals = {
        "lon_acc": lon_acc,
        "lat_acc": lat_acc,
        "jerk": _savgol(np.hypot(lon_acc, lat_acc), window, 2, 1, dt),
        "lon_jerk": _savgol(lon_acc, window, 2, 1, dt),
        "yaw_rate": yaw_rate,
        "yaw_acc": _savgol(yaw, window, 3, 2, dt),
    }
    return {k: np.round(v, 8) for k, v in signals.items()}


@register_metric("comfort")
def comfort(trace: EpisodeTrace) -> MetricResult:
    """C: 1 if every comfort signal stays strictly inside its bound at every step, else 0.

    Source: nuPlan ``ego_is_comfortable.py`` / NAVSIM ``pdm_comfort_metrics.py`` bounds (:data:`COMFORT_BOUNDS`):
    |lat acc| < 4.89 m/s^2, lon acc in (-4.05, 2.40) m/s^2, |jerk| < 8.37 m/s^3, |lon jerk| < 4.13 m/s^3,
    |yaw rate| < 0.95 rad/s, |yaw acc| < 1.93 rad/s^2.

    Simplification: signals are derivatives of the recorded speed and yaw (:func:`comfort_signals`), with a
    fixed 1.4 s window. NAVSIM smooths over the whole 4 s proposal (window = all samples), which over a long
    closed-loop episode would smooth away every event; nuPlan smooths a reported acceleration, which the trace
    does not carry. Episodes shorter than 3 steps have zero derivatives (C = 1).
    """
    trace.validate()
    signals = comfort_signals(trace.ego)
    failed, extremes = [], {}
    for name, (lo, hi) in COMFORT_BOUNDS.items():
        v = signals[name]
        i_min, i_max = int(np.argmin(v)), int(np.argmax(v))
        extremes[name] = {"min": float(v[i_min]), "max": float(v[i_max])}
        if v[i_min] <= lo or v[i_max] >= hi:
            i = i_min if v[i_min] <= lo else i_max
            failed.append({"signal": name, "value": float(v[i]), "step": i, "bound": [lo, hi]})
    return MetricResult(0.0 if failed else 1.0, {"failed": failed, "extremes": extremes})
