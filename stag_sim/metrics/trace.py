"""The inputs of every closed-loop metric: what the simulator recorded over one episode.

:class:`EgoTrace` (the ego), :class:`AgentTrace` (the other road users and objects) and :class:`EpisodeTrace` (both,
plus drivable area, route, progress and the logged ego), each with a ``validate`` that checks shapes, dtypes and
finiteness; :func:`agent_class` maps a nuScenes category to its collision class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_finite, check_positive
from stag_sim.road_rules import RoadRules

AGENT_CLASSES = ("vehicle", "pedestrian", "static")  # the collision classes :func:`agent_class` returns


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
        drivable_area: shapely Polygon / MultiPolygon [m], world frame, or None (no map and no LiDAR ground: DAC is
            not scored and nothing is off-road).
        route: (N, 2) float route polyline [m], N >= 2, positive length.
        route_progress: (T,) float [m] arc length of the ego along ``route``, measured from the route's start.
        reference_progress: [m] best reachable progress over the episode (e.g. the logged expert's), >= 0;
            the EP denominator.
        logged_xy: (T, 2) float [m] logged ego rear-axle positions at the same times; may be NaN where not valid.
        logged_valid: (T,) bool, a logged pose exists at that step.
        route_completed: the episode reached the route's end.
        drivable_source: where ``drivable_area`` came from (``"map"``, ``"lidar ground"``:
            :func:`stag_sim.drivable.lidar_drivable_area`), or None where the caller did not say.
        rules: the episode's road rules (:class:`~stag_sim.road_rules.RoadRules`: lanes in driving direction,
            intersections, speed limits, lights with this episode's schedules), or None (a map-less log: driving
            direction, traffic lights, lane keeping and speed limits are not scored).
        human: the logged (human) ego over the same times (``time_s`` equal to ``ego.time_s``), for NAVSIM v2's
            human filter (:func:`stag_sim.metrics.epdms.epdms`); None: no filter.
        plans: (T, H, 2) float [m] world-frame positions the agent planned at each step, the k-th waypoint
            ``(k + 1) * plan_dt`` after that step (as the env's ``trajectory`` action); a step without a plan (the
            last one) is all NaN. None: the agent gave controls, not trajectories (extended comfort not scored).
        plan_dt: [s] > 0, the spacing of ``plans``' waypoints; None without plans.
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
    drivable_source: str | None = None
    rules: RoadRules | None = None
    human: EgoTrace | None = None
    plans: np.ndarray | None = None
    plan_dt: float | None = None

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
        if self.drivable_source is not None and not isinstance(self.drivable_source, str):
            raise ValidationError(
                f"EpisodeTrace.drivable_source: expected str or None, got {type(self.drivable_source).__name__}"
            )
        self._validate_rules_human_plans(T)
        return self

    def _validate_rules_human_plans(self, T: int) -> None:
        if self.rules is not None and not isinstance(self.rules, RoadRules):
            raise ValidationError(f"EpisodeTrace.rules: expected a RoadRules or None, got {type(self.rules).__name__}")
        if self.human is not None:
            if not isinstance(self.human, EgoTrace):
                raise ValidationError(f"EpisodeTrace.human: expected an EgoTrace or None, got {type(self.human).__name__}")
            self.human.validate()
            if self.human.num_steps != T or not np.allclose(self.human.time_s, self.ego.time_s, rtol=0, atol=1e-6):
                raise ValidationError(f"EpisodeTrace.human: expected the ego's {T} times, got {self.human.num_steps} "
                                      f"steps from {float(self.human.time_s[0])} s")
        if self.plans is None:
            if self.plan_dt is not None:
                raise ValidationError(f"EpisodeTrace.plan_dt: expected None without plans, got {self.plan_dt}")
            return
        _check_array(self.plans, "EpisodeTrace.plans", (T, None, 2))
        if self.plans.shape[1] < 1:
            raise ValidationError("EpisodeTrace.plans: expected at least 1 waypoint per plan, got 0")
        finite = np.isfinite(self.plans).reshape(T, -1)
        partial = np.flatnonzero(finite.any(axis=1) & ~finite.all(axis=1))
        if len(partial):
            raise ValidationError(f"EpisodeTrace.plans: step {int(partial[0])} is partly non-finite (a plan is all "
                                  "finite, or all NaN where the step has none)")
        if not (isinstance(self.plan_dt, (int, float, np.floating, np.integer)) and np.isfinite(self.plan_dt)
                and self.plan_dt > 0):
            raise ValidationError(f"EpisodeTrace.plan_dt: expected a waypoint spacing > 0 s with plans, got {self.plan_dt}")
