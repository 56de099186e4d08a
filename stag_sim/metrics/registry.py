"""The metric registry (Waymax style): :class:`MetricResult`, what every metric returns, and :data:`METRICS`, the
metrics by name in registration order, filled by the :func:`register_metric` decorator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stag_sim.errors import MetricsError
from stag_sim.metrics.trace import EpisodeTrace


@dataclass(frozen=True)
class MetricResult:
    """One metric's value and the counts behind it.

    Attributes:
        score: the metric value (sub-scores and PDMS in [0, 1]; log divergence in [m]), or None where the episode
            cannot be scored on it (e.g. DAC of a log without a drivable area; ``details["unscored"]`` says why).
        details: plain (JSON-friendly) values that explain the score: counts, ids, first violating step, ...
    """

    score: float | None
    details: dict = field(default_factory=dict)


MetricFn = Callable[[EpisodeTrace], MetricResult]
METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding ``fn(trace) -> MetricResult`` to :data:`METRICS` under ``name``; a duplicate name raises
    :class:`~stag_sim.errors.MetricsError` (a ``ValueError``; never silently replaced)."""

    def decorate(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise MetricsError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn

    return decorate
