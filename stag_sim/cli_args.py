"""Parsers for command-line values, shared by every ``stag-sim`` command: each failure is one
:class:`~stag_sim.errors.ValidationError` line naming the option and the value it got."""

from __future__ import annotations

import math

from stag_sim.errors import ValidationError


def parse_image_size(text: str | None, option: str = "--image-size") -> tuple[int, int] | None:
    """``HEIGHTxWIDTH`` -> (height, width) [px], each at least 8; None or '' -> None."""
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValidationError(f"{option}: expected HEIGHTxWIDTH such as 224x400, got {text!r}") from None
    if min(h, w) < 8:
        raise ValidationError(f"{option}: expected at least 8x8 px, got {text!r}")
    return h, w


def parse_floats(text: str, option: str, count: int | None = None, unit: str = "m") -> tuple[float, ...]:
    """Comma-separated finite numbers (exactly ``count`` of them when given, else at least one)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count) or not all(map(math.isfinite, values)):
        what = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise ValidationError(f"{option}: expected {what} [{unit}] such as {','.join(['0'] * (count or 2))}, "
                              f"got {text!r}")
    return values


def parse_ints(text: str | None, option: str, low: int = 0, high: int | None = None) -> tuple[int, ...]:
    """Comma-separated integers in [low, high); None or '' -> ()."""
    if not text:
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValidationError(f"{option}: expected comma-separated integers such as 1,5, got {text!r}") from None
    bad = [v for v in values if v < low or (high is not None and v >= high)]
    if bad:
        raise ValidationError(f"{option}: {bad[0]} is out of range (expected "
                              f"{f'{low}..{high - 1}' if high is not None else f'>= {low}'})")
    return values


def check_host_port(spec: str, option: str) -> str:
    """``HOST:PORT`` with a port in 1..65535, else one line naming ``option``."""
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"{option}: expected HOST:PORT such as localhost:50051, got {spec!r}")
    return spec


def require(condition: bool, option: str, expected: str, value) -> None:
    """One line ``<option>: expected <expected>, got <value>`` unless ``condition``."""
    if not condition:
        raise ValidationError(f"{option}: expected {expected}, got {value!r}")


def check_time_in_log(log, time_s: float, option: str = "--time") -> float:
    """``time_s`` [s after the log's first frame], unless it lies outside the log: one line naming ``option``."""
    end = (log.timestamps_us[-1] - log.timestamps_us[0]) * 1e-6
    require(0.0 <= time_s <= end, option, f"a time within the log {log.name!r} (0 to {end:.1f} s)", time_s)
    return time_s
