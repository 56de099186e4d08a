"""Collision and off-road safety metrics: NC (no at-fault collisions) and DAC (drivable area compliance), with the
box geometry and the collision finder (nuPlan's collision classification) that TTC and the driving score share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely

from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import AGENT_CLASSES, AgentTrace, EgoTrace, EpisodeTrace

# --- thresholds of the published definitions --------------------------------------------------------------------
EGO_STOPPED_SPEED = 5e-2  # [m/s] nuPlan _get_collision_type: ego speed <= this is a stopped-ego collision
AGENT_STOPPED_SPEED = 5e-3  # [m/s] nuPlan is_track_stopped: agent speed <= this is a stopped track
AGENT_BEHIND_ANGLE = math.radians(150.0)  # [rad] nuPlan is_agent_behind: relative bearing > this = behind
NC_ALLOWED_STATIC = 1  # nuPlan EgoAtFaultCollisionStatistics.max_violation_threshold_object (VRU, vehicle: 0)


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


NO_DRIVABLE_AREA = "no drivable area (no map, no LiDAR ground): the road's extent is unknown"


@register_metric("drivable_area_compliance")
def drivable_area_compliance(trace: EpisodeTrace) -> MetricResult:
    """DAC: 1 if all four ego box corners are on the drivable area at every step, else 0; not scored (None) without
    a drivable area.

    Source: NAVSIM ``_calculate_ego_area`` / ``_calculate_drivable_area_compliance`` (a step is non-drivable when
    at least one corner is outside every drivable polygon; no tolerance). nuPlan's own metric allows 0.3 m; we
    follow NAVSIM. Corner points on the boundary count as inside. Like NAVSIM, only corners are tested: a box
    whose corners are all on the road while an edge crosses a gap is not caught. Without a drivable area
    (``drivable_area is None``: a map-less log without LiDAR) the score is None and ``details["unscored"]``
    (name -> why) says why; ``details["source"]`` names where the drivable area came from (``trace.drivable_source``: ``"map"``,
    ``"lidar ground"``).
    """
    trace.validate()
    offroad, dist = _offroad_steps(trace)
    first = int(np.argmax(offroad)) if offroad.any() else None
    scored = trace.drivable_area is not None
    return MetricResult(
        (0.0 if offroad.any() else 1.0) if scored else None,
        {
            "has_drivable_area": scored,
            "source": trace.drivable_source if scored else None,
            "unscored": {} if scored else {"dac": NO_DRIVABLE_AREA},
            "offroad_steps": int(offroad.sum()),
            "first_offroad_step": first,
            "max_outside_distance": float(dist.max()),
        },
    )
