"""Log divergence: ADE / FDE / maximum displacement of the ego rear axle from the logged ego over the episode."""

from __future__ import annotations

import numpy as np

from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import EpisodeTrace


@register_metric("log_divergence")
def log_divergence(trace: EpisodeTrace) -> MetricResult:
    """Displacement of the ego rear axle from the logged ego at the same times, over ``logged_valid`` steps:
    score = ADE (mean) [m]; details add FDE (at the last valid step) and the maximum. NaN when no step is valid."""
    trace.validate()
    valid = trace.logged_valid
    if not valid.any():
        nan = float("nan")
        return MetricResult(nan, {"ade": nan, "fde": nan, "max_displacement": nan, "valid_steps": 0})
    d = np.linalg.norm(trace.ego.xy[valid] - trace.logged_xy[valid], axis=-1)
    return MetricResult(
        float(d.mean()),
        {"ade": float(d.mean()), "fde": float(d[-1]), "max_displacement": float(d.max()), "valid_steps": int(valid.sum())},
    )
