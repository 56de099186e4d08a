"""What a run records for the report beyond its scores: the infractions (what was hit or left, when, where), the
other agents' tracks, the per-step time to collision, and the log expert (the logged ego) scored on the same steps.

Everything here reads a finished episode (the :class:`~stag_sim.app.episode.TraceRecorder`, its
:class:`~stag_sim.metrics.EpisodeTrace` and metric results); nothing feeds back into driving or scoring.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

#: off the plot: agents and the drivable area farther than this from the driven / logged ego paths [m]
PLOT_MARGIN = 25.0
#: an agent's track keeps a point once it moved this far from the last kept one (a parked car is one point) [m]
TRACK_RESOLUTION = 0.25


def _yaw(T: np.ndarray) -> float:
    return float(np.arctan2(T[1, 0], T[0, 0]))


def _box(cx, cy, yaw, length, width) -> list[float]:
    """[centre x, centre y [m], yaw [rad], length, width [m]], rounded for JSON."""
    return [round(float(v), 4 if i == 2 else 3) for i, v in enumerate((cx, cy, yaw, length, width))]


def _ego_box(world, x, y, yaw) -> list[float]:
    v = world.config.vehicle
    off = v.centre_offset
    return _box(x + off * np.cos(yaw), y + off * np.sin(yaw), yaw, v.length, v.width)


def _agent_box(world, trace, i: int, k: int) -> list[float] | None:
    if not trace.agent_valid[i][k]:
        return None
    x, y = trace.agent_xy[i][k]
    return _box(x, y, trace.agent_yaw[i][k], world.sizes[k, 0], world.sizes[k, 1])


def infraction_table(world, trace, metrics: dict, ep=None) -> list[dict]:
    """The episode's infractions, in time order: one dict each.

    Kinds: ``collision`` (the ego box touched another agent's: first step of each contact, as the simulator
    recorded it, with the metric's nuPlan classification ``type`` / ``at_fault`` where it found the same contact;
    ``source`` = ``"metrics"`` for one only the metric saw), ``offroad`` (the simulator's check: the footprint left
    the drivable area grown by ``offroad_tolerance``; each stretch once, with its ``duration_s``: steps off-road x dt),
    ``dac`` (the DAC metric's first step with an ego corner off the drivable area, when no ``offroad`` stretch
    starts there) and ``ttc`` (the TTC metric's first projected collision, ``ttc_s`` ahead).

    Keys: ``kind``, ``step``, ``t_s`` [s], ``x_m``, ``y_m`` (ego rear axle [m]), ``with`` (agent id), ``category``,
    ``class``, ``type``, ``at_fault``, ``duration_s``, ``ttc_s``, ``source``, ``ego_box`` and ``agent_box``
    (``[cx, cy [m], yaw [rad], length, width [m]]``); keys that do not apply are absent.
    """
    ids = list(world.log.objects.instance_ids)
    cats = list(world.log.objects.categories)
    from stag_sim.metrics import agent_class

    def at(kind: str, i: int, k: int | None = None, **extra) -> dict:
        x, y, yaw, _ = trace.ego[i]
        out = {"kind": kind, "step": int(i), "t_s": round(float(trace.time_s[i]), 3), "x_m": round(float(x), 2),
               "y_m": round(float(y), 2)}
        if k is not None:
            out.update({"with": ids[k], "category": cats[k], "class": agent_class(cats[k])})
        out.update(extra)
        out["ego_box"] = _ego_box(world, x, y, yaw)
        if k is not None and _agent_box(world, trace, i, k) is not None:
            out["agent_box"] = _agent_box(world, trace, i, k)
        return out

    rows: list[dict] = []
    seen: dict[str, dict] = {}
    offroad_start = None
    events = list(trace.events) + [{}]  # a sentinel closes an off-road stretch at the end
    for i, ev in enumerate(events):
        for aid in ev.get("collided_with", ()):
            if aid not in seen and aid in ids:
                seen[aid] = at("collision", i, ids.index(aid), source="simulator")
                rows.append(seen[aid])
        if ev.get("offroad") and offroad_start is None:
            offroad_start = i
        elif not ev.get("offroad") and offroad_start is not None:
            rows.append(at("offroad", offroad_start, source="simulator",
                           duration_s=round((i - offroad_start) * world.config.dt, 3)))
            offroad_start = None
    nc = metrics.get("no_at_fault_collisions")
    for c in (nc.details.get("events", []) if nc is not None else []):
        if c["id"] in seen:
            seen[c["id"]].update(type=c["type"], at_fault=bool(c["at_fault"]))
        elif c["id"] in ids:
            rows.append(at("collision", c["step"], ids.index(c["id"]), type=c["type"], at_fault=bool(c["at_fault"]),
                           source="metrics"))
    dac = metrics.get("drivable_area_compliance")
    first = dac.details.get("first_offroad_step") if dac is not None else None
    if first is not None and not any(r["kind"] == "offroad" and r["step"] == first for r in rows):
        rows.append(at("dac", first, source="metrics"))
    ttc = metrics.get("time_to_collision")
    if ttc is not None and ttc.details.get("violation") == "projected_collision" and ttc.details["id"] in ids:
        rows.append(at("ttc", ttc.details["step"], ids.index(ttc.details["id"]), ttc_s=ttc.details["offset_s"],
                       source="metrics"))
    order = {"collision": 0, "offroad": 1, "dac": 2, "ttc": 3}
    return sorted(rows, key=lambda r: (r["step"], order[r["kind"]]))


def _bounds(*paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate([p.reshape(-1, 2) for p in paths if len(p)])
    return pts.min(0) - PLOT_MARGIN, pts.max(0) + PLOT_MARGIN


def agent_tracks(world, trace, lo, hi) -> list[dict]:
    """The other agents that come within the plot's bounds ``lo``..``hi`` (x, y [m]): id, category, size
    (length, width [m]), track (box centres [m], a point each :data:`TRACK_RESOLUTION` moved) and their box at the
    last step (None where the agent is gone by then)."""
    if not trace.agent_xy:
        return []
    xy = np.stack(trace.agent_xy).astype(np.float64)
    valid = np.stack(trace.agent_valid)
    ids, cats = world.log.objects.instance_ids, world.log.objects.categories
    out = []
    for k in range(xy.shape[1]):
        pts = xy[valid[:, k], k]
        if not len(pts) or not np.any(np.all((pts >= lo) & (pts <= hi), axis=1)):
            continue
        keep = [pts[0]]
        for p in pts[1:]:
            if np.hypot(*(p - keep[-1])) >= TRACK_RESOLUTION:
                keep.append(p)
        if len(pts) > 1 and not np.array_equal(keep[-1], pts[-1]):
            keep.append(pts[-1])
        out.append({"id": ids[k], "category": cats[k], "size": [round(float(s), 3) for s in world.sizes[k, :2]],
                    "track": np.asarray(keep).round(2).tolist(), "end": _agent_box(world, trace, len(xy) - 1, k)})
    return out


def trajectory_summary(world, trace, row) -> dict:
    """What the report's bird's-eye plot draws (``trajectory.json``; all world xy [m]): the driven and the logged
    ego path, the route, the drivable area near them (the map's, or the LiDAR ground's:
    :attr:`stag_sim.world.World.drivable_area`), the other agents near them (:func:`agent_tracks`), the ego's box at
    the end (``ego_end``: ``[cx, cy, yaw, length, width]``) and where the episode ended and why."""
    ego = np.asarray(trace.ego, np.float64).reshape(-1, 4)
    t = np.asarray(trace.time_s, np.float64)
    logged = logged_ego(world, t)[0]
    drivable, agents = [], []
    if len(ego):
        lo, hi = _bounds(ego[:, :2], logged)
        agents = agent_tracks(world, trace, lo, hi)
        if world.drivable_area is not None:
            from shapely.geometry import box

            area = world.drivable_area.intersection(box(lo[0], lo[1], hi[0], hi[1]))
            for g in getattr(area, "geoms", [area]):
                if hasattr(g, "exterior") and not g.is_empty:
                    drivable.append({"exterior": np.asarray(g.exterior.coords)[:, :2].round(2).tolist(),
                                     "holes": [np.asarray(h.coords)[:, :2].round(2).tolist() for h in g.interiors]})
    return {"driven": ego[:, :2].round(3).tolist(), "logged": logged.round(3).tolist(),
            "route": np.asarray(world.route.points)[:, :2].round(3).tolist(), "drivable": drivable, "agents": agents,
            "ego_end": _ego_box(world, *ego[-1, :3]) if len(ego) else None,
            "end": {"reason": row.get("termination_reason"), "xy": ego[-1, :2].round(3).tolist() if len(ego) else None}}


def ttc_series(ep) -> np.ndarray:
    """(T,) time to collision [s] at every step of the :class:`~stag_sim.metrics.EpisodeTrace` ``ep``: the TTC
    metric's own per-step projection (:func:`stag_sim.metrics.ttc.ttc_per_step`; NaN where nothing is projected
    within the horizon, 0 at an at-fault collision step)."""
    from stag_sim.metrics.ttc import ttc_per_step

    return ttc_per_step(ep)[0]


def logged_ego(world, time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logged ego at ``time_s`` (T,) [s] (held at the log's end): rear-axle xy (T, 2) [m], yaw (T,) [rad] and
    speed (T,) [m/s] (distance over the last step; the first step takes the second's)."""
    poses = [world.logged_ego_pose(min(float(t), world.end_time_s)) for t in time_s]
    xy = np.array([p[:2, 3] for p in poses], np.float64).reshape(-1, 2)
    yaw = np.array([_yaw(p) for p in poses], np.float64)
    speed = np.zeros(len(xy))
    if len(xy) > 1:
        speed[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=1) / np.diff(time_s)
        speed[0] = speed[1]
    return xy, yaw, speed


#: what :func:`log_expert_scores` says about itself (shown in the report)
LOG_EXPERT_NOTE = ("the logged ego's own path over the same steps, scored against the other agents as they moved in "
                   "this episode (open loop: agents that reacted to the driven ego are not replayed)")


def log_expert_scores(world, ep, groups) -> dict:
    """The scenario's metric columns (PDMS and driving-score groups; log divergence is 0 by definition) of the log
    expert: the logged ego over the same steps as the episode ``ep`` (:data:`LOG_EXPERT_NOTE`). One more
    :func:`~stag_sim.metrics.compute_metrics` call, no episode."""
    from stag_sim.app.records import metric_columns
    from stag_sim.metrics import compute_metrics, summarize

    xy, yaw, speed = logged_ego(world, ep.ego.time_s)
    progress = np.maximum.accumulate(np.asarray(world.route.project(xy)[0], np.float64))
    expert = replace(ep, ego=replace(ep.ego, xy=xy, yaw=yaw, speed=speed), route_progress=progress,
                     route_completed=bool(progress[-1] >= world.usable_route_length), plans=None, plan_dt=None)
    cols = metric_columns([g for g in groups if g != "log_divergence"], summarize(compute_metrics(expert)))
    return {**cols, "steps": int(len(xy) - 1), "note": LOG_EXPERT_NOTE}
