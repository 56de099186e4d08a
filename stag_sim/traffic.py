"""Other road users: the Intelligent Driver Model (IDM) along lane paths.

IDM (Treiber, Hennecke & Helbing 2000) gives each follower the acceleration::

    a = a_max * (1 - (v / v0)^delta - (s_star / s)^2),   s_star = s0 + v T + v (v - v_lead) / (2 sqrt(a_max b))

with ``s`` the bumper-to-bumper gap to the leader. Defaults are nuPlan's IDM agents. Agents move along their own
path (a polyline of lane centrelines) by arc length; the leader of an agent is the nearest obstacle ahead whose
position projects onto that agent's path within a lateral tolerance (other agents, the ego, stopped objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_finite, check_positive


@dataclass(frozen=True)
class IDMParameters:
    """IDM constants (defaults: nuPlan).

    Attributes:
        target_speed: desired speed v0 [m/s].
        min_gap: jam distance s0 [m].
        headway: desired time headway T [s].
        accel_max: maximum acceleration a [m/s^2].
        decel_comfort: comfortable deceleration b [m/s^2].
        exponent: acceleration exponent delta [-].
        decel_limit: hardest braking ever applied [m/s^2].
    """

    target_speed: float = 10.0  # [m/s]
    min_gap: float = 1.0  # [m]
    headway: float = 1.5  # [s]
    accel_max: float = 1.0  # [m/s^2]
    decel_comfort: float = 2.0  # [m/s^2]
    exponent: float = 4.0  # [-]
    decel_limit: float = 9.0  # [m/s^2]

    def validate(self) -> "IDMParameters":
        check_positive(self, self.__dataclass_fields__)
        return self


def idm_acceleration(speed, gap, lead_speed, params: IDMParameters) -> np.ndarray:
    """IDM acceleration [m/s^2] for followers at ``speed`` [m/s], ``gap`` [m] behind leaders at ``lead_speed``.

    ``gap = inf`` means a free road. Vectorised; the result is limited to ``-decel_limit``.
    """
    v = np.asarray(speed, dtype=np.float64)
    s = np.maximum(np.asarray(gap, dtype=np.float64), 1e-3)
    dv = v - np.asarray(lead_speed, dtype=np.float64)
    s_star = params.min_gap + np.maximum(0.0, v * params.headway + v * dv / (2.0 * np.sqrt(params.accel_max * params.decel_comfort)))
    interaction = np.where(np.isfinite(s), (s_star / s) ** 2, 0.0)
    a = params.accel_max * (1.0 - (v / params.target_speed) ** params.exponent - interaction)
    return np.maximum(a, -params.decel_limit)


class PolylinePath:
    """A path in the world xy plane, parametrised by arc length ``s`` [m]."""

    def __init__(self, points) -> None:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
            raise ValidationError(f"PolylinePath: expected (N>=2, 2) points, got {pts.shape}")
        check_finite(pts, "PolylinePath points")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9])
        self.points = pts[keep]
        if len(self.points) < 2:
            raise ValidationError("PolylinePath: all points coincide")
        seg = np.diff(self.points, axis=0)
        self._seg_len = np.linalg.norm(seg, axis=1)
        self._dir = seg / self._seg_len[:, None]
        self.s = np.concatenate([[0.0], np.cumsum(self._seg_len)])

    @classmethod
    def from_linestring(cls, line) -> "PolylinePath":
        return cls(np.asarray(line.coords)[:, :2])

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def interpolate(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Positions (..., 2) [m] and headings (...,) [rad] at arc lengths ``s``; extrapolates linearly at the ends."""
        s = np.asarray(s, dtype=np.float64)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self._seg_len) - 1)
        d = self._dir[i]
        xy = self.points[i] + d * (s - self.s[i])[..., None]
        return xy, np.arctan2(d[..., 1], d[..., 0])

    def project(self, xy, s_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Arc length (N,) [m] of the closest path point to each of ``xy`` (N, 2), and the signed lateral offset
        (N,) [m], positive to the left of the driving direction. ``s_range`` = (lo, hi) [m] searches only the
        segments overlapping that stretch of the path (the closest point *there*)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        lo, hi = 0, len(self._seg_len)
        if s_range is not None:
            lo = int(np.clip(np.searchsorted(self.s, s_range[0], side="right") - 1, 0, hi - 1))
            hi = int(np.clip(np.searchsorted(self.s, s_range[1], side="left"), lo + 1, hi))
        pts, dirs, seg = self.points[lo:hi], self._dir[lo:hi], self._seg_len[lo:hi]
        rel = xy[:, None, :] - pts[None, :, :]  # (N, M, 2)
        t = np.clip(np.einsum("nmk,mk->nm", rel, dirs), 0.0, seg[None])
        foot = pts[None] + dirs[None] * t[..., None]
        d2 = np.sum((xy[:, None] - foot) ** 2, axis=2)
        j = np.argmin(d2, axis=1)
        n = np.arange(len(xy))
        cross = dirs[j, 0] * rel[n, j, 1] - dirs[j, 1] * rel[n, j, 0]
        return self.s[lo + j] + t[n, j], cross


@dataclass(frozen=True)
class Obstacle:
    """Something agents must not drive into: the ego, a stopped car, another agent.

    Attributes:
        xy: (2,) centre [m]; length: along its heading [m]; speed: [m/s] along its own heading;
        yaw: heading [rad].
    """

    xy: tuple[float, float]
    length: float
    speed: float
    yaw: float


def find_leaders(path: PolylinePath, s_self: float, length_self: float, obstacles: list[Obstacle],
                 lateral_tolerance: float = 1.8, horizon: float = 100.0) -> tuple[float, float]:
    """Bumper-to-bumper gap [m] and speed along the path [m/s] of the nearest obstacle ahead on ``path``.

    Returns ``(inf, 0.0)`` on a free road (nothing ahead within ``horizon`` [m]).
    """
    if not obstacles:
        return float("inf"), 0.0
    # exact pre-filter: an obstacle farther than horizon + lateral_tolerance from us (in a straight line) is either
    # too far along the path or too far from it, so it is never the leader
    here, _ = path.interpolate(s_self)
    xy_all = np.array([o.xy for o in obstacles])
    close = np.hypot(xy_all[:, 0] - here[0], xy_all[:, 1] - here[1]) <= horizon + lateral_tolerance
    if not close.any():
        return float("inf"), 0.0
    obstacles = [o for o, c in zip(obstacles, close) if c]
    xy = xy_all[close]
    # only the stretch of path from just behind us to the horizon can hold a leader (a path that loops back near
    # itself would otherwise hand an obstacle to its nearer, irrelevant part)
    s, lat = path.project(xy, s_range=(s_self - lateral_tolerance - 1.0, s_self + horizon + lateral_tolerance + 1.0))
    ahead = s - s_self
    _, heading = path.interpolate(s)
    along = np.array([o.speed for o in obstacles]) * np.cos(np.array([o.yaw for o in obstacles]) - heading)
    gaps = ahead - length_self / 2.0 - np.array([o.length for o in obstacles]) / 2.0
    ok = (np.abs(lat) < lateral_tolerance) & (ahead > 0.0) & (ahead < horizon)
    if not np.any(ok):
        return float("inf"), 0.0
    k = np.flatnonzero(ok)[np.argmin(gaps[ok])]
    return float(gaps[k]), float(max(along[k], 0.0))


def idm_step(s: float, speed: float, gap: float, lead_speed: float, dt: float, params: IDMParameters) -> tuple[float, float, float]:
    """Advance one agent by ``dt`` [s]; returns (s [m], speed [m/s], accel [m/s^2]). Speed never goes negative."""
    a = float(idm_acceleration(speed, gap, lead_speed, params))
    v1 = speed + a * dt
    if v1 < 0.0:
        ds = speed * speed / (2.0 * -a) if a < 0 else 0.0
        return s + ds, 0.0, -speed / dt
    return s + (speed + v1) / 2.0 * dt, v1, a
