"""Closed-loop driving metrics: NAVSIM PDMS, a CARLA-style driving score, and divergence from the log.

Everything here is a pure function of an :class:`EpisodeTrace` (what the simulator recorded over one episode:
ego, other agents, drivable area, route, logged ego). Pure numpy + shapely.

Sources the definitions follow (our own code; names of the originals given so each rule can be checked):

* **PDMS** (NAVSIM, ``navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py``)::

      PDMS = NC * DAC * (5 * EP + 5 * TTC + 2 * C) / 12

  NAVSIM re-implements nuPlan's closed-loop metrics (``motional/nuplan-devkit``,
  ``nuplan/planning/metrics/evaluation_metrics/common/``: ``no_ego_at_fault_collisions.py``,
  ``drivable_area_compliance.py``, ``ego_progress_along_expert_route.py``, ``time_to_collision_within_bound.py``,
  ``ego_is_comfortable.py``); where the two differ the function's docstring says which one we follow and why.
* **Driving score** (CARLA leaderboard 2.0, ``leaderboard/utils/statistics_manager.py``): route completion times
  the product of infraction penalties (``PENALTY_VALUE_DICT``), with route travelled outside the lanes removed
  (``OUTSIDE_ROUTE_LANES_INFRACTION``).
* **Log divergence**: ADE / FDE / maximum displacement of the ego rear axle from the logged ego (as nuPlan's
  ``planner_expert_average_l2_error``, but over the whole closed-loop episode).

What this module cannot know and therefore simplifies (each repeated where it matters):

* No lane graph: nuPlan's "ego in multiple lanes" (lane changes) and "ego in an intersection" are unknown; only
  "ego footprint off the drivable area" is. See :func:`no_at_fault_collisions` and :func:`time_to_collision`.
* No traffic lights / stop signs / speed limits / driving direction: those nuPlan and CARLA terms are absent
  (NAVSIM's PDMS gives driving direction weight 0 anyway).
* Comfort derivatives are estimated from the recorded speed and yaw (see :func:`comfort`), not from an
  acceleration the simulator reports.

Usage::

    results = compute_metrics(trace)             # every registered metric
    row = summarize(results)                     # plain floats/ints for CSV / JSON
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import shapely
from numpy.lib.stride_tricks import sliding_window_view

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_finite, check_positive

# --- thresholds of the published definitions --------------------------------------------------------------------
EGO_STOPPED_SPEED = 5e-2  # [m/s] nuPlan _get_collision_type: ego speed <= this is a stopped-ego collision
AGENT_STOPPED_SPEED = 5e-3  # [m/s] nuPlan is_track_stopped: agent speed <= this is a stopped track
TTC_STOPPED_SPEED = 5e-3  # [m/s] NAVSIM PDMScorerConfig.stopped_speed_threshold: no TTC check while stopped
AGENT_BEHIND_ANGLE = math.radians(150.0)  # [rad] nuPlan is_agent_behind: relative bearing > this = behind
TTC_OFFSETS = (0.0, 0.3, 0.6, 0.9)  # [s] NAVSIM _calculate_ttc: np.arange(0, 10, 3) steps of 0.1 s
PROGRESS_DISTANCE_THRESHOLD = 5.0  # [m] NAVSIM PDMScorerConfig.progress_distance_threshold
PDMS_WEIGHTS = {"ep": 5.0, "ttc": 5.0, "comfort": 2.0}  # NAVSIM PDMScorerConfig (driving direction weight 0)
NC_ALLOWED_STATIC = 1  # nuPlan EgoAtFaultCollisionStatistics.max_violation_threshold_object (VRU, vehicle: 0)
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
# CARLA leaderboard 2.0 PENALTY_VALUE_DICT entries we can observe. Not observable here (no lights/signs/scenarios):
# red light 0.7, stop sign 0.8, scenario timeout 0.7, yield to emergency vehicle 0.7; min speed is unused in 2.0.
CARLA_COLLISION_PENALTY = {"pedestrian": 0.50, "vehicle": 0.60, "static": 0.65}
AGENT_CLASSES = ("vehicle", "pedestrian", "static")


def agent_class(category: str) -> str:
    """Collision class of a nuScenes category: ``human.*`` -> pedestrian, ``vehicle.*`` -> vehicle (cars, trucks,
    buses, bicycles, motorcycles), anything else (``movable_object.*``, ``static_object.*``, ``animal``) -> static.

    nuPlan's "agents" (NC 0 on an at-fault collision) are vehicles, pedestrians and bicycles; with nuScenes names
    bicycles are ``vehicle.bicycle``, so vehicle + pedestrian here covers exactly nuPlan's agent types.
    """
    if category.startswith("human."):
        return "pedestrian"
    if category.startswith("vehicle."):
        return "vehicle"
    return "static"


# --- datatypes ----------------------------------------------------------------------------------------------------


def _check_array(arr, name: str, shape: tuple, kind: str = "float", finite=None) -> None:
    """Shape (``None`` = any size) and dtype check; finiteness where ``finite`` (bool mask or True)."""
    if not isinstance(arr, np.ndarray):
        raise ValidationError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValidationError(f"{name}: expected shape {want}, got {arr.shape}")
    if kind == "bool":
        if arr.dtype != np.bool_:
            raise ValidationError(f"{name}: expected dtype bool, got {arr.dtype}")
        return
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValidationError(f"{name}: expected a real numeric dtype, got {arr.dtype}")
    if finite is True:
        check_finite(arr, name)
    elif finite is not None:
        mask = np.broadcast_to(np.asarray(finite).reshape(finite.shape + (1,) * (arr.ndim - finite.ndim)), arr.shape)
        check_finite(np.where(mask, arr, 0.0), name + " (where valid)")


@dataclass(frozen=True)
class EgoTrace:
    """The ego over one episode.

    Attributes:
        time_s: (T,) float [s], strictly increasing with a uniform step ``dt``.
        xy: (T, 2) float [m] rear-axle position, world frame.
        yaw: (T,) float [rad] heading (x forward), world frame.
        speed: (T,) float [m/s] >= 0.
        length: body length [m].
        width: body width [m].
        centre_offset: rear axle -> box centre along the heading [m]
            (box centre = ``xy + centre_offset * (cos yaw, sin yaw)``).
    """

    time_s: np.ndarray
    xy: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    length: float  # [m]
    width: float  # [m]
    centre_offset: float  # [m]

    @property
    def num_steps(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def dt(self) -> float:
        """Step [s]; NaN for a single-step trace."""
        return float(np.mean(np.diff(self.time_s))) if self.num_steps > 1 else float("nan")

    @property
    def centre(self) -> np.ndarray:
        """(T, 2) box centre [m]."""
        return self.xy + self.centre_offset * np.stack([np.cos(self.yaw), np.sin(self.yaw)], axis=-1)

    def validate(self) -> "EgoTrace":
        _check_array(self.time_s, "EgoTrace.time_s", (None,), finite=True)
        T = self.time_s.shape[0]
        if T < 1:
            raise ValidationError("EgoTrace.time_s: expected at least 1 step, got 0")
        _check_array(self.xy, "EgoTrace.xy", (T, 2), finite=True)
        _check_array(self.yaw, "EgoTrace.yaw", (T,), finite=True)
        _check_array(self.speed, "EgoTrace.speed", (T,), finite=True)
        if np.any(self.speed < 0):
            raise ValidationError(f"EgoTrace.speed: must be >= 0 m/s, got {float(self.speed.min())}")
        if T > 1:
            d = np.diff(self.time_s.astype(np.float64))
            if np.any(d <= 0):
                raise ValidationError(f"EgoTrace.time_s: must be strictly increasing (step {int(np.argmin(d))})")
            if not np.allclose(d, d[0], rtol=1e-4, atol=1e-9):
                raise ValidationError(
                    f"EgoTrace.time_s: steps must be uniform, got {float(d.min())}..{float(d.max())} s"
                )
        check_positive(self, ("length", "width"))
        if not np.isfinite(self.centre_offset):
            raise ValidationError(f"EgoTrace.centre_offset: must be finite, got {self.centre_offset}")
        return self


@dataclass(frozen=True)
class AgentTrace:
    """The other road users and objects over one episode (K of them, T steps).

    Attributes:
        ids: (K,) str, unique.
        categories: (K,) str nuScenes category names (``vehicle.car``, ``human.pedestrian.adult``,
            ``movable_object.barrier``, ...); the prefix decides the class (:func:`agent_class`).
        sizes: (K, 3) float length, width, height [m] > 0.
        xy: (T, K, 2) float box centre [m], world frame; may be NaN where ``valid`` is False.
        yaw: (T, K) float [rad]; may be NaN where not valid.
        speed: (T, K) float [m/s] >= 0 along the heading; may be NaN where not valid.
        valid: (T, K) bool, the agent exists at that step.
    """

    ids: tuple
    categories: tuple
    sizes: np.ndarray
    xy: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    valid: np.ndarray

    @classmethod
    def empty(cls, num_steps: int) -> "AgentTrace":
        """No agents over ``num_steps`` steps."""
        return cls((), (), np.zeros((0, 3)), np.zeros((num_steps, 0, 2)), np.zeros((num_steps, 0)),
                   np.zeros((num_steps, 0)), np.zeros((num_steps, 0), dtype=bool))

    @property
    def classes(self) -> tuple:
        return tuple(agent_class(c) for c in self.categories)

    def validate(self) -> "AgentTrace":
        K = len(self.ids)
        if len(self.categories) != K:
            raise ValidationError(f"AgentTrace.categories: expected {K} entries (one per id), got {len(self.categories)}")
        if len(set(self.ids)) != K:
            raise ValidationError("AgentTrace.ids: ids must be unique")
        for name, seq in (("ids", self.ids), ("categories", self.categories)):
            bad = [v for v in seq if not isinstance(v, str)]
            if bad:
                raise ValidationError(f"AgentTrace.{name}: expected str entries, got {bad[0]!r}")
        _check_array(self.sizes, "AgentTrace.sizes", (K, 3), finite=True)
        if np.any(self.sizes <= 0):
            raise ValidationError(f"AgentTrace.sizes: must be > 0 m, got {float(self.sizes.min())}")
        _check_array(self.valid, "AgentTrace.valid", (None, K), kind="bool")
        T = self.valid.shape[0]
        _check_array(self.xy, "AgentTrace.xy", (T, K, 2), finite=self.valid)
        _check_array(self.yaw, "AgentTrace.yaw", (T, K), finite=self.valid)
        _check_array(self.speed, "AgentTrace.speed", (T, K), finite=self.valid)
        if np.any(np.where(self.valid, self.speed, 0.0) < 0):
            raise ValidationError("AgentTrace.speed: must be >= 0 m/s where valid")
        return self


@dataclass(frozen=True)
class EpisodeTrace:
    """Everything one episode's metrics need.

    Attributes:
        ego: the ego (T steps).
        agents: other agents over the same T steps.
        drivable_area: shapely Polygon / MultiPolygon [m], world frame, or None (no map: DAC is 1 and nothing is
            off-road).
        route: (N, 2) float route polyline [m], N >= 2, positive length.
        route_progress: (T,) float [m] arc length of the ego along ``route``, measured from the route's start.
        reference_progress: [m] best reachable progress over the episode (e.g. the logged expert's), >= 0;
            the EP denominator.
        logged_xy: (T, 2) float [m] logged ego rear-axle positions at the same times; may be NaN where not valid.
        logged_valid: (T,) bool, a logged pose exists at that step.
        route_completed: the episode reached the route's end.
    """

    ego: EgoTrace
    agents: AgentTrace
    drivable_area: object | None
    route: np.ndarray
    route_progress: np.ndarray
    reference_progress: float
    logged_xy: np.ndarray
    logged_valid: np.ndarray
    route_completed: bool = False

    @property
    def route_length(self) -> float:
        """Length of ``route`` [m]."""
        return float(np.sum(np.linalg.norm(np.diff(self.route, axis=0), axis=-1)))

    def validate(self) -> "EpisodeTrace":
        self.ego.validate()
        self.agents.validate()
        T = self.ego.num_steps
        if self.agents.valid.shape[0] != T:
            raise ValidationError(f"EpisodeTrace.agents: expected {T} steps (as the ego), got {self.agents.valid.shape[0]}")
        if self.drivable_area is not None and not isinstance(self.drivable_area, (shapely.Polygon, shapely.MultiPolygon)):
            raise ValidationError(
                f"EpisodeTrace.drivable_area: expected a shapely Polygon/MultiPolygon or None, "
                f"got {type(self.drivable_area).__name__}"
            )
        _check_array(self.route, "EpisodeTrace.route", (None, 2), finite=True)
        if self.route.shape[0] < 2 or not self.route_length > 0:
            raise ValidationError(
                f"EpisodeTrace.route: expected >= 2 points and a positive length, got {self.route.shape[0]} points"
            )
        _check_array(self.route_progress, "EpisodeTrace.route_progress", (T,), finite=True)
        if not (np.isfinite(self.reference_progress) and self.reference_progress >= 0):
            raise ValidationError(
                f"EpisodeTrace.reference_progress: must be finite and >= 0 m, got {self.reference_progress}"
            )
        _check_array(self.logged_valid, "EpisodeTrace.logged_valid", (T,), kind="bool")
        _check_array(self.logged_xy, "EpisodeTrace.logged_xy", (T, 2), finite=self.logged_valid)
        if not isinstance(self.route_completed, (bool, np.bool_)):
            raise ValidationError(
                f"EpisodeTrace.route_completed: expected bool, got {type(self.route_completed).__name__}"
            )
        return self


@dataclass(frozen=True)
class MetricResult:
    """One metric's value and the counts behind it.

    Attributes:
        score: the metric value (sub-scores and PDMS in [0, 1]; log divergence in [m]).
        details: plain (JSON-friendly) values that explain the score: counts, ids, first violating step, ...
    """

    score: float
    details: dict = field(default_factory=dict)


# --- registry (Waymax style) --------------------------------------------------------------------------------------

MetricFn = Callable[[EpisodeTrace], MetricResult]
METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding ``fn(trace) -> MetricResult`` to :data:`METRICS` under ``name``; a duplicate name raises
    ``ValueError`` (never silently replaced)."""

    def decorate(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn

    return decorate


def compute_metrics(trace: EpisodeTrace, names: Iterable[str] | None = None) -> dict[str, MetricResult]:
    """Run the registered metrics ``names`` (default: all, in registration order) on ``trace``."""
    trace.validate()
    names = list(METRICS) if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValidationError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return {n: METRICS[n](trace) for n in names}


# --- geometry helpers ---------------------------------------------------------------------------------------------


def _box_corners(centre: np.ndarray, yaw: np.ndarray, length, width) -> np.ndarray:
    """(..., 4, 2) corners front-left, rear-left, rear-right, front-right (nuPlan OrientedBox order)."""
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    hl = np.asarray(length, dtype=np.float64)[..., None] / 2.0
    hw = np.asarray(width, dtype=np.float64)[..., None] / 2.0
    lx = hl * np.array([1.0, -1.0, -1.0, 1.0])
    ly = hw * np.array([1.0, 1.0, -1.0, -1.0])
    x = centre[..., 0:1] + c * lx - s * ly
    y = centre[..., 1:2] + s * lx + c * ly
    return np.stack([x, y], axis=-1)


def _overlaps(ego: EgoTrace, ego_centre: np.ndarray, agents: AgentTrace, agent_centre: np.ndarray,
              mask: np.ndarray) -> np.ndarray:
    """(T, K) bool: the ego box at ``ego_centre`` (T, 2) overlaps agent boxes at ``agent_centre`` (T, K, 2) (touching
    counts, as shapely ``intersects``), only evaluated where ``mask``; pairs whose centres are farther apart than
    their half diagonals are skipped without building polygons."""
    reach = math.hypot(ego.length, ego.width) / 2.0 + np.hypot(agents.sizes[:, 0], agents.sizes[:, 1]) / 2.0
    gap = np.linalg.norm(np.where(mask[..., None], agent_centre, 0.0) - ego_centre[:, None, :], axis=-1)
    t, k = np.nonzero(mask & (gap <= reach[None, :]))
    out = np.zeros(mask.shape, dtype=bool)
    if t.size:
        ego_poly = shapely.polygons(_box_corners(ego_centre[t], ego.yaw[t], ego.length, ego.width))
        ag_poly = shapely.polygons(_box_corners(agent_centre[t, k], agents.yaw[t, k], agents.sizes[k, 0], agents.sizes[k, 1]))
        out[t, k] = shapely.intersects(ego_poly, ag_poly)
    return out


def _agent_polygon(agents: AgentTrace, t: int, k: int):
    return shapely.polygons(_box_corners(agents.xy[t, k], agents.yaw[t, k], agents.sizes[k, 0], agents.sizes[k, 1]))


def _bearing(origin: np.ndarray, heading: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Angle [rad, 0..pi] between ``heading`` at ``origin`` and the direction to ``points`` (nuPlan
    get_agent_relative_angle); 0 where the points coincide with the origin."""
    d = points - origin
    n = np.linalg.norm(d, axis=-1)
    cos = (np.cos(heading) * d[..., 0] + np.sin(heading) * d[..., 1]) / np.where(n > 0, n, 1.0)
    return np.where(n > 0, np.arccos(np.clip(cos, -1.0, 1.0)), 0.0)


def _offroad_steps(trace: EpisodeTrace) -> tuple[np.ndarray, np.ndarray]:
    """(T,) bool: some ego corner is not covered by the drivable area; (T,) distance [m] of the farthest corner
    outside it. All False / 0 without a drivable area."""
    T = trace.ego.num_steps
    if trace.drivable_area is None:
        return np.zeros(T, dtype=bool), np.zeros(T)
    corners = _box_corners(trace.ego.centre, trace.ego.yaw, trace.ego.length, trace.ego.width).reshape(-1, 2)
    area = trace.drivable_area
    shapely.prepare(area)  # a cache on the geometry; does not change it
    points = shapely.points(corners)
    inside = shapely.covers(area, points).reshape(T, 4)
    dist = np.where(inside, 0.0, shapely.distance(area, points).reshape(T, 4)).max(axis=1)
    return ~inside.all(axis=1), dist


@dataclass(frozen=True)
class _Collision:
    agent: int
    step: int
    cls: str
    kind: str  # stopped_ego | stopped_track | active_rear | active_front | active_lateral
    at_fault: bool


def _find_collisions(trace: EpisodeTrace) -> list[_Collision]:
    """The first step of every ego-agent box overlap, classified as nuPlan ``_get_collision_type`` and
    ``_classify_at_fault_collisions`` do (see :func:`no_at_fault_collisions`)."""
    ego, ag = trace.ego, trace.agents
    if ag.sizes.shape[0] == 0:
        return []
    hits = _overlaps(ego, ego.centre, ag, ag.xy, ag.valid)
    if not hits.any():
        return []
    offroad, _ = _offroad_steps(trace)
    classes = ag.classes
    out = []
    for k in np.flatnonzero(hits.any(axis=0)):
        t = int(np.argmax(hits[:, k]))
        if ego.speed[t] <= EGO_STOPPED_SPEED:
            kind = "stopped_ego"
        elif classes[k] == "static" or ag.speed[t, k] <= AGENT_STOPPED_SPEED:
            kind = "stopped_track"
        elif _bearing(ego.xy[t], ego.yaw[t], ag.xy[t, k]) > AGENT_BEHIND_ANGLE:
            kind = "active_rear"
        else:
            front = _box_corners(ego.centre[t], ego.yaw[t], ego.length, ego.width)[[0, 3]]
            bumper = shapely.linestrings(front)
            kind = "active_front" if shapely.intersects(bumper, _agent_polygon(ag, t, k)) else "active_lateral"
        at_fault = kind in ("stopped_track", "active_front") or (kind == "active_lateral" and bool(offroad[t]))
        out.append(_Collision(int(k), t, classes[k], kind, at_fault))
    return sorted(out, key=lambda c: (c.step, c.agent))


def _class_counts(collisions: list[_Collision]) -> dict[str, int]:
    return {c: sum(1 for x in collisions if x.cls == c) for c in AGENT_CLASSES}


# --- NAVSIM PDMS sub-metrics --------------------------------------------------------------------------------------


@register_metric("no_at_fault_collisions")
def no_at_fault_collisions(trace: EpisodeTrace) -> MetricResult:
    """NC: 1 without at-fault collisions, 0 after an at-fault collision with a vehicle or pedestrian, 0.5 after one
    with a static object (0 after two).

    Source: nuPlan ``no_ego_at_fault_collisions.py``. A collision is an overlap of the ego box with an agent box;
    only the first step of the overlap with a given agent counts (nuPlan ``_find_new_collisions``). It is
    classified at that step, in this order:

    * ego speed <= 0.05 m/s -> stopped ego (not at fault);
    * static object, or agent speed <= 0.005 m/s -> stopped track (at fault);
    * agent centre more than 150 deg off the ego heading, seen from the rear axle -> active rear (not at fault);
    * the ego's front bumper edge touches the agent box -> active front (at fault);
    * otherwise active lateral: at fault only when the ego is in multiple lanes or off the drivable area.

    Score, as nuPlan ``compute_score``: the product over classes of ``max(0, 1 - n / (allowed + 1))`` with
    allowed = 0 for vehicles and pedestrians, 1 for static objects. NAVSIM's scorer instead takes the minimum
    (0 or 0.5), which only differs for two or more static collisions (nuPlan 0, NAVSIM 0.5).

    Simplification: we have no lane graph, so "in multiple lanes" (e.g. a lane change) cannot be detected; an
    active lateral collision is at fault only when some ego corner is off the drivable area.
    """
    trace.validate()
    collisions = _find_collisions(trace)
    at_fault = [c for c in collisions if c.at_fault]
    counts = _class_counts(at_fault)
    score = 1.0
    for cls, n in counts.items():
        allowed = NC_ALLOWED_STATIC if cls == "static" else 0
        score *= max(0.0, 1.0 - n / (allowed + 1))
    ids = trace.agents.ids
    return MetricResult(
        float(score),
        {
            "collisions": len(collisions),
            "at_fault_collisions": len(at_fault),
            "at_fault_vehicle": counts["vehicle"],
            "at_fault_pedestrian": counts["pedestrian"],
            "at_fault_static": counts["static"],
            "at_fault_ids": [ids[c.agent] for c in at_fault],
            "first_at_fault_step": at_fault[0].step if at_fault else None,
            "events": [
                {"id": ids[c.agent], "step": c.step, "class": c.cls, "type": c.kind, "at_fault": c.at_fault}
                for c in collisions
            ],
        },
    )


@register_metric("drivable_area_compliance")
def drivable_area_compliance(trace: EpisodeTrace) -> MetricResult:
    """DAC: 1 if all four ego box corners are on the drivable area at every step, else 0.

    Source: NAVSIM ``_calculate_ego_area`` / ``_calculate_drivable_area_compliance`` (a step is non-drivable when
    at least one corner is outside every drivable polygon; no tolerance). nuPlan's own metric allows 0.3 m; we
    follow NAVSIM. Corner points on the boundary count as inside. Like NAVSIM, only corners are tested: a box
    whose corners are all on the road while an edge crosses a gap is not caught. Without a drivable area
    (``drivable_area is None``) DAC is 1.
    """
    trace.validate()
    offroad, dist = _offroad_steps(trace)
    first = int(np.argmax(offroad)) if offroad.any() else None
    return MetricResult(
        0.0 if offroad.any() else 1.0,
        {
            "has_drivable_area": trace.drivable_area is not None,
            "offroad_steps": int(offroad.sum()),
            "first_offroad_step": first,
            "max_outside_distance": float(dist.max()),
        },
    )


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


@register_metric("time_to_collision")
def time_to_collision(trace: EpisodeTrace) -> MetricResult:
    """TTC: 0 if at some step the ego, 0-0.9 s ahead, would hit an agent projected at constant velocity; else 1.

    Source: NAVSIM ``_calculate_ttc`` with nuPlan ``time_to_collision_within_bound.py``. From every step where the
    ego moves (speed > 0.005 m/s) the ego box and every relevant agent box are moved along their headings at
    their current speeds by 0, 0.3, 0.6 and 0.9 s (NAVSIM's offsets, 1 s horizon at 0.3 s resolution); an
    overlap is a violation. An at-fault collision (see :func:`no_at_fault_collisions`) is also a violation
    (nuPlan: TTC = 0 at an at-fault collision step).

    Relevant agents: valid at the step, not collided with the ego at or before that step (nuPlan excludes
    collided tracks), not behind the ego (bearing from the rear axle <= 150 deg), and, when oncoming (heading
    more than 100 deg from the ego's), only once inside the ego's corridor (lateral offset < half widths).

    The ego moves along its *realised* trajectory (closed loop: its future is known after the episode; NAVSIM
    scores the planned trajectory, nuPlan extrapolates at constant velocity — which on a curve projects the ego
    across the kerb into parked cars), extrapolated at constant velocity only past the episode's end.

    Agents move at constant speed and constant yaw rate (CTRV, yaw rate from their last two steps): nuPlan
    uses constant velocity, which on a curve projects an oncoming car straight across into the ego's lane;
    NAVSIM takes the agents' logged future instead. nuPlan/NAVSIM use only agents ahead (bearing < 20 deg) unless the ego is between lanes, off-road
    or in an intersection, where every agent not behind counts; we have no lane or intersection layers, so we
    apply that wider rule at every step (crossing traffic is always checked; a lateral agent whose projected
    box touches ours counts even when nuPlan would skip it).
    """
    trace.validate()
    ego, ag = trace.ego, trace.agents
    T, K = ag.valid.shape
    collisions = _find_collisions(trace)
    at_fault = [c for c in collisions if c.at_fault]
    details = {"violation": None, "step": None, "id": None, "offset_s": None}
    if at_fault:
        c = at_fault[0]
        details.update(violation="at_fault_collision", step=c.step, id=ag.ids[c.agent], offset_s=0.0)
        return MetricResult(0.0, details)
    if K == 0:
        return MetricResult(1.0, details)
    first_hit = np.full(K, T)
    for c in collisions:
        first_hit[c.agent] = c.step
    collided = np.arange(T)[:, None] >= first_hit[None, :]
    moving = ego.speed > TTC_STOPPED_SPEED
    bearing = _bearing(ego.xy[:, None, :], ego.yaw[:, None], np.where(ag.valid[..., None], ag.xy, 0.0))
    relevant = ag.valid & ~collided & moving[:, None] & (bearing <= AGENT_BEHIND_ANGLE)
    # oncoming traffic (heading differs by > 100 deg) counts only once it is inside the ego's corridor (lateral
    # distance in the ego frame < half widths): our stand-in for nuPlan's lane filter, without which every
    # oncoming car entering a curve is projected straight across the ego lane
    rel = np.where(ag.valid[..., None], ag.xy, 0.0) - ego.xy[:, None, :]
    lateral = np.abs(-np.sin(ego.yaw)[:, None] * rel[..., 0] + np.cos(ego.yaw)[:, None] * rel[..., 1])
    oncoming = np.cos(np.where(ag.valid, ag.yaw, 0.0) - ego.yaw[:, None]) < np.cos(np.deg2rad(100.0))
    relevant &= ~(oncoming & (lateral > (ego.width + ag.sizes[None, :, 1]) / 2.0))
    if not relevant.any():
        return MetricResult(1.0, details)
    ego_dir = np.stack([np.cos(ego.yaw), np.sin(ego.yaw)], axis=-1)
    ag_yaw = np.where(ag.valid, ag.yaw, 0.0)
    ag_speed = np.where(ag.valid, ag.speed, 0.0)
    ag_rate = np.zeros_like(ag_yaw)  # [rad/s] yaw rate from consecutive valid steps (0 where unknown)
    if T > 1:
        both = ag.valid[1:] & ag.valid[:-1]
        d_yaw = (np.diff(ag_yaw, axis=0) + np.pi) % (2 * np.pi) - np.pi
        ag_rate[1:] = np.where(both, d_yaw / (ego.time_s[1] - ego.time_s[0]), 0.0)
    best = None  # (step, offset index, agent)
    dt = float(ego.time_s[1] - ego.time_s[0]) if T > 1 else 1.0
    for i, tau in enumerate(TTC_OFFSETS):
        future, centre = _ego_ahead(ego, ego_dir, tau, dt)
        ag_future, ag_centre = _agents_ahead(ag, ag_yaw, ag_speed, ag_rate, tau)
        hit = _overlaps(future, centre, ag_future, ag_centre, relevant)
        if hit.any():
            t, k = np.argwhere(hit)[0]
            if best is None or t < best[0]:
                best = (int(t), i, int(k))
    if best is None:
        return MetricResult(1.0, details)
    details.update(violation="projected_collision", step=best[0], id=ag.ids[best[2]], offset_s=TTC_OFFSETS[best[1]])
    return MetricResult(0.0, details)


def _ego_ahead(ego: EgoTrace, ego_dir: np.ndarray, tau: float, dt: float) -> tuple[EgoTrace, np.ndarray]:
    """The ego ``tau`` [s] after every step: its realised state where the episode reaches that far (closed loop,
    the ego's future is known, as NAVSIM scores the planned trajectory), else moved on at constant velocity from
    the last recorded state. Returns an EgoTrace whose ``yaw`` is the future heading, and the future box centres."""
    T = len(ego.time_s)
    n = int(round(tau / dt))
    j = np.minimum(np.arange(T) + n, T - 1)
    beyond = (np.arange(T) + n - j) * dt  # [s] left to extrapolate past the last step
    yaw = ego.yaw[j]
    centre = ego.centre[j] + (ego.speed[j] * beyond)[:, None] * ego_dir[j]
    return replace(ego, yaw=yaw), centre


def _agents_ahead(ag: AgentTrace, yaw: np.ndarray, speed: np.ndarray, rate: np.ndarray, tau: float):
    """Agents ``tau`` [s] ahead at constant speed and constant yaw rate (CTRV; a straight line where the rate is
    ~0): returns an AgentTrace whose ``yaw`` is the future heading, and the future centres (T, K, 2)."""
    turning = np.abs(rate) > 1e-3
    w = np.where(turning, rate, 1.0)
    yaw1 = yaw + rate * tau
    dx = np.where(turning, speed / w * (np.sin(yaw1) - np.sin(yaw)), speed * tau * np.cos(yaw))
    dy = np.where(turning, speed / w * (np.cos(yaw) - np.cos(yaw1)), speed * tau * np.sin(yaw))
    centre = np.where(ag.valid[..., None], ag.xy, 0.0) + np.stack([dx, dy], axis=-1)
    return replace(ag, yaw=yaw1), centre


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


# --- CARLA driving score ------------------------------------------------------------------------------------------


@register_metric("driving_score")
def driving_score(trace: EpisodeTrace) -> MetricResult:
    """CARLA leaderboard 2.0 driving score: ``route_completion * infraction_penalty`` in [0, 1].

    Source: ``leaderboard/utils/statistics_manager.py`` (``compute_route_statistics``):

    * route completion = furthest ``route_progress`` / route length (clipped to [0, 1]); 1 when
      ``route_completed``. (The leaderboard reports it in percent; we report a fraction.)
    * penalty = product over collisions with distinct agents of 0.50 (pedestrian), 0.60 (vehicle),
      0.65 (static / layout) — every collision counts, at fault or not, as in CARLA; a long overlap with one
      agent counts once.
    * outside route lanes (``OUTSIDE_ROUTE_LANES_INFRACTION``, penalty value 0, "increases"): the penalty is
      multiplied by ``1 - offroad_fraction``, so route travelled outside the lanes does not count. Our analogue:
      ``offroad_fraction`` = route progress gained at steps where the ego box is off the drivable area, divided by
      the route length. The leaderboard puts this factor in the penalty and leaves route completion as is; we do
      the same (route completion is reported unreduced; the score is the same either way).

    Not modelled (no traffic lights, stop signs, scenarios): red light 0.7, stop 0.8, scenario timeout 0.7,
    yield to emergency vehicle 0.7, minimum speed; route deviation / blocked termination is up to the simulator.
    """
    trace.validate()
    length = trace.route_length
    completion = 1.0 if trace.route_completed else float(np.clip(np.max(trace.route_progress) / length, 0.0, 1.0))
    collisions = _find_collisions(trace)
    counts = _class_counts(collisions)
    penalty = 1.0
    for cls, n in counts.items():
        penalty *= CARLA_COLLISION_PENALTY[cls] ** n
    offroad, _ = _offroad_steps(trace)
    gained = np.maximum(np.diff(trace.route_progress), 0.0)
    offroad_fraction = float(np.clip(np.sum(gained[offroad[1:]]) / length, 0.0, 1.0))
    penalty *= 1.0 - offroad_fraction
    ids = trace.agents.ids
    return MetricResult(
        float(completion * penalty),
        {
            "route_completion": completion,
            "infraction_penalty": penalty,
            "route_length": length,
            "collisions_vehicle": counts["vehicle"],
            "collisions_pedestrian": counts["pedestrian"],
            "collisions_static": counts["static"],
            "collided_ids": [ids[c.agent] for c in collisions],
            "offroad_fraction": offroad_fraction,
            "offroad_steps": int(offroad.sum()),
        },
    )


# --- log divergence -----------------------------------------------------------------------------------------------


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


# --- flattening ---------------------------------------------------------------------------------------------------

# metric name -> (output column, detail key or None for the score)
_SUMMARY_FIELDS = {
    "pdms": [("pdms", None)],
    "no_at_fault_collisions": [("nc", None), ("collisions", "collisions"), ("at_fault_collisions", "at_fault_collisions")],
    "drivable_area_compliance": [("dac", None), ("offroad_steps", "offroad_steps")],
    "ego_progress": [("ep", None), ("progress", "progress")],
    "time_to_collision": [("ttc", None)],
    "comfort": [("comfort", None)],
    "driving_score": [
        ("driving_score", None),
        ("route_completion", "route_completion"),
        ("infraction_penalty", "infraction_penalty"),
        ("collisions_vehicle", "collisions_vehicle"),
        ("collisions_pedestrian", "collisions_pedestrian"),
        ("collisions_static", "collisions_static"),
        ("offroad_fraction", "offroad_fraction"),
    ],
    "log_divergence": [("ade", "ade"), ("fde", "fde"), ("max_displacement", "max_displacement")],
}


def summarize(results: dict[str, MetricResult]) -> dict[str, float | int]:
    """Flatten :func:`compute_metrics` results to plain floats / ints (one CSV row / JSON object).

    Known metrics give fixed columns (``pdms, nc, collisions, at_fault_collisions, dac, offroad_steps, ep,
    progress, ttc, comfort, driving_score, route_completion, infraction_penalty, collisions_vehicle,
    collisions_pedestrian, collisions_static, offroad_fraction, ade, fde, max_displacement``); a metric
    registered elsewhere gives one column, its name, holding its score. ``pdms`` alone (without its sub-metrics
    in ``results``) also yields ``nc, dac, ep, ttc, comfort`` from its details.
    """
    row: dict[str, float | int] = {}

    def put(key, value):
        row[key] = int(value) if isinstance(value, (bool, np.bool_, int, np.integer)) else float(value)

    for name, result in results.items():
        for column, key in _SUMMARY_FIELDS.get(name, [(name, None)]):
            put(column, result.score if key is None else result.details[key])
    if "pdms" in results:
        for key in ("nc", "dac", "ep", "ttc", "comfort"):
            row.setdefault(key, float(results["pdms"].details[key]))
    return row
