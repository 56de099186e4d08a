"""The closed-loop world of N episodes stepped at once, as array operations (numpy).

:func:`step` (``world_batch, state_batch, accel, steer -> state_batch``) has the semantics of
:func:`stag_sim.world.step` applied to every row: the kinematic bicycle, the other agents (log replay: logged poses
interpolated at each row's time; IDM along their logged paths, with ``hard_brake`` and ``remove`` events), route
progress (projection that never goes back), box collisions (separating axes) and off-road (shapely's vectorised
``contains`` on the drivable area). Rows may come from different scenes, start frames and routes: a
:class:`WorldBatch` packs each row's :class:`~stag_sim.world.World` into padded arrays (once per world, cached).
Rows whose agents the arrays do not cover (``insert`` / ``cut_in`` events, an external simulator's agents) are
stepped by :func:`stag_sim.world.step` itself and written back, so every world steps here; ``batched`` says which
rows ran as arrays. Everything that changes lives in :class:`BatchState`; nothing is mutated.

Shapes: N rows, K agents (padded to the batch's largest scene; padding is never valid).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from stag_sim.agent_sources import ScriptedAgents
from stag_sim.dynamics import EgoState
from stag_sim.errors import ValidationError
from stag_sim.geometry import matrix_to_quat, yaw_of
from stag_sim.traffic import PolylinePath
from stag_sim.world import SimState, World
from stag_sim.world import step as world_step
from stag_sim.world_batch_ops import (advance_agents, advance_route, agents, bicycle, collisions, ego_centres,
                                      logged_agents, offroad, route_points)

__all__ = ["BatchState", "WorldBatch", "reset", "step", "agents", "logged_agents", "route_points"]

@dataclass(frozen=True)
class BatchState:
    """What changes in N episodes (one row each); the batched :class:`~stag_sim.world.SimState`.

    Attributes:
        step: (N,) steps since reset; time_s: (N,) simulation time since the log's first frame [s].
        x, y, yaw, speed, accel, steer, yaw_rate: (N,) the ego's planar state (:class:`~stag_sim.dynamics.EgoState`).
        agent_s, agent_speed: (N, K) simulated agents' arc length [m] and speed [m/s].
        route_s: (N,) route progress [m].
        collision, offroad, route_completed: (N,) bool events of the last step; hits: (N, K) bool, the agents hit.
        agent_xy, agent_yaw, agent_valid: (N, K, 2) [m], (N, K) [rad], (N, K) bool: where the other agents are in
            this state (a function of it, kept because every consumer reads it).
    """

    step: np.ndarray
    time_s: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    steer: np.ndarray
    yaw_rate: np.ndarray
    agent_s: np.ndarray
    agent_speed: np.ndarray
    route_s: np.ndarray
    collision: np.ndarray
    offroad: np.ndarray
    route_completed: np.ndarray
    hits: np.ndarray
    agent_xy: np.ndarray
    agent_yaw: np.ndarray
    agent_valid: np.ndarray

    @property
    def num_envs(self) -> int:
        return len(self.step)

    @classmethod
    def from_states(cls, states: Sequence[SimState], worlds: Sequence[World], num_agents: int) -> "BatchState":
        """Stack single states (row i of ``worlds[i]``), agents padded to ``num_agents``."""
        rows = [_row_values(s, w, num_agents) for s, w in zip(states, worlds)]
        return cls(**{f.name: np.stack([r[f.name] for r in rows]) for f in fields(cls)})

    def with_rows(self, rows, states: Sequence[SimState], worlds: Sequence[World]) -> "BatchState":
        """A copy with ``rows`` replaced by ``states`` (of ``worlds``)."""
        K = self.agent_s.shape[1]
        vals = [_row_values(s, w, K) for s, w in zip(states, worlds)]
        out = {}
        for f in fields(self):
            a = getattr(self, f.name).copy()
            for r, v in zip(rows, vals):
                a[r] = v[f.name]
            out[f.name] = a
        return BatchState(**out)

    def state(self, i: int, world: World) -> SimState:
        """Row ``i`` as a :class:`~stag_sim.world.SimState` of ``world`` (its agents unpadded)."""
        K = len(world.log.objects)
        ids = world.log.objects.instance_ids
        hits = [ids[k] for k in np.flatnonzero(self.hits[i, :K])]
        events = {"collision": bool(self.collision[i]), "collided_with": hits, "offroad": bool(self.offroad[i]),
                  "route_completed": bool(self.route_completed[i])} if self.step[i] > 0 else {}
        ego = EgoState(float(self.x[i]), float(self.y[i]), float(self.yaw[i]), float(self.speed[i]),
                       float(self.accel[i]), float(self.steer[i]), float(self.yaw_rate[i]))
        return SimState(int(self.step[i]), float(self.time_s[i]), ego, self.agent_s[i, :K].copy(),
                        self.agent_speed[i, :K].copy(), float(self.route_s[i]), events)


def _row_values(s: SimState, world: World, K: int) -> dict:
    k = len(s.agent_s)
    ev = s.events
    ids = list(world.log.objects.instance_ids)
    hits = np.zeros(K, bool)
    hits[[ids.index(h) for h in ev.get("collided_with", [])]] = True
    e = s.ego
    poses, valid = world.agent_poses(s)
    xy, yaw = np.zeros((K, 2)), np.zeros(K)
    xy[:k], yaw[:k] = poses[:, :2, 3], yaw_of(poses)
    return {"agent_xy": xy, "agent_yaw": yaw, "agent_valid": np.pad(np.asarray(valid, bool), (0, K - k)),
            "step": s.step, "time_s": s.time_s, "x": e.x, "y": e.y, "yaw": e.yaw, "speed": e.speed, "accel": e.accel,
            "steer": e.steer, "yaw_rate": e.yaw_rate, "agent_s": np.pad(np.asarray(s.agent_s, float), (0, K - k)),
            "agent_speed": np.pad(np.asarray(s.agent_speed, float), (0, K - k)), "route_s": s.route_s,
            "collision": bool(ev.get("collision", False)), "offroad": bool(ev.get("offroad", False)),
            "route_completed": bool(ev.get("route_completed", False)), "hits": hits}


# ---- packing: each world's arrays, once --------------------------------------------------------------------------
_PACKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: padding of each per-row array (arc lengths +inf: a padded segment is never reached)
ROW_FILL = {"route_pts": 0.0, "route_dir": 0.0, "route_seg": 0.0, "route_s": np.inf, "route_heading": 0.0,
            "route_nseg": 1, "usable": 1.0, "start_time_s": 0.0, "t0_us": 0.0, "sizes": 0.0, "removed": False,
            "simulated": False, "sim_mask": False, "sim_idx": 0, "brake_at": np.inf, "brake_decel": 0.0, "path_pts": 0.0, "path_dir": 0.0,
            "path_seg": 0.0, "path_s": np.inf, "path_heading": 0.0, "path_nseg": 1, "stop_s": np.inf, "stop_light": 0,
            "light_change": np.inf, "light_code": 0, "light_n": 1, "light_period": 0.0}
LOG_FILL = {"ts": np.inf, "T": 1, "xy": 0.0, "yaw": 0.0, "valid": False, "quat": 0.0}


def _path_arrays(path: PolylinePath) -> dict:
    return {"pts": path.points, "dir": path._dir, "seg": path._seg_len, "s": path.s,
            "heading": np.arctan2(path._dir[:, 1], path._dir[:, 0]), "nseg": len(path._seg_len)}


def _log_arrays(log) -> dict:
    if log not in _LOGS:
        P = np.asarray(log.objects.poses, np.float64).reshape(log.num_frames, -1, 4, 4)
        _LOGS[log] = {"ts": np.asarray(log.timestamps_us).astype(np.float64), "T": log.num_frames,
                      "xy": P[..., :2, 3], "yaw": yaw_of(P), "valid": np.asarray(log.objects.valid, bool).reshape(P.shape[:2]),
                      "quat": matrix_to_quat(P[..., :3, :3]).reshape(P.shape[:2] + (4,))}
    return _LOGS[log]


def _stack_paths(paths: list[dict], key: str) -> np.ndarray:
    if paths:
        return _pad_stack([p[key] for p in paths], ROW_FILL["path_" + key])
    return np.zeros((0, 1) + ((2,) if key in ("pts", "dir") else ()))


def _pack(world: World) -> dict:
    """One row's arrays of ``world`` (unpadded; cached per world object) and whether its agents are arrays."""
    if world in _PACKS:
        return _PACKS[world]
    batched = isinstance(world.agents, ScriptedAgents) and not world.agents.inserted and not world.agents.cut_ins
    agents = world.agents if isinstance(world.agents, ScriptedAgents) else getattr(world.agents, "scripted", None)
    scripted = agents is not None  # an external simulator's source keeps the scenario's scripted agents too
    K = len(world.log.objects)
    sim = np.flatnonzero(agents.simulated) if scripted else np.zeros(0, int)
    paths = [_path_arrays(agents.agent_paths[k]) for k in sim]
    row = {"route_" + k: np.asarray(v) for k, v in _path_arrays(world.route).items()}
    row.update(usable=np.asarray(world.usable_route_length), start_time_s=np.asarray(world.start_time_s),
               t0_us=np.asarray(float(world.t0_us)), sizes=np.asarray(world.sizes, float).reshape(K, 3),
               removed=agents.removed.copy() if scripted else np.zeros(K, bool), sim_mask=np.ones(len(sim), bool),
               simulated=np.array(getattr(agents, "simulated", np.zeros(K, bool)), bool).reshape(K),
               sim_idx=sim, brake_at=np.array([agents.brakes[k].at_s if k in agents.brakes else np.inf for k in sim]),
               brake_decel=np.array([agents.brakes[k].decel if k in agents.brakes else 0.0 for k in sim]),
               path_nseg=np.array([p["nseg"] for p in paths], int))
    row.update({"path_" + k: _stack_paths(paths, k) for k in ("pts", "dir", "seg", "s", "heading")})
    row.update(_light_arrays(world, [agents.agent_paths[k] for k in sim]))
    _PACKS[world] = {"batched": batched, "row": row, "single": {k: v[None] for k, v in row.items()}}
    return _PACKS[world]


def _light_arrays(world: World, paths: list) -> dict:
    """The traffic lights of ``world`` as a row's arrays: per simulated agent the stop lines its path crosses
    (``stop_s`` (S, M) arc length [m], ``stop_light`` (S, M) light index) and per light its schedule
    (``light_change`` (L, C) [s], ``light_code`` (L, C), ``light_n`` (L,), ``light_period`` (L,) [s])."""
    from stag_sim.road_rules import stop_crossings

    lights = world.rules.lights if world.rules is not None else ()
    stops = [stop_crossings(p.points, lights) for p in paths]
    if any(stops):
        stop_s = _pad_stack([np.array([c[0] for c in st] or [np.inf]) for st in stops], np.inf)
        stop_light = _pad_stack([np.array([c[1] for c in st] or [0]) for st in stops], 0)
    else:
        stop_s, stop_light = np.full((len(paths), 1), np.inf), np.zeros((len(paths), 1), int)
    if lights:
        change = _pad_stack([np.asarray(lt.change_s, float) for lt in lights], np.inf)
        code = _pad_stack([lt.codes for lt in lights], 0)
    else:
        change, code = np.full((1, 1), np.inf), np.zeros((1, 1), int)
    return {"stop_s": stop_s, "stop_light": stop_light, "light_change": change, "light_code": code,
            "light_n": np.array([len(lt.states) for lt in lights] or [1]),
            "light_period": np.array([lt.period_s for lt in lights] or [0.0])}


def row_arrays(world: World) -> dict:
    """``world``'s row of a batch (arrays with a leading axis of 1; cached): what
    :func:`stag_sim.world_batch_ops.leaders` reads, for :meth:`ScriptedAgents.advance` of a single world."""
    return _pack(world)["single"]


def _pad_stack(arrays: list[np.ndarray], fill, shape=None) -> np.ndarray:
    """Stack arrays of one rank padded with ``fill`` to the largest (or ``shape``) of each axis."""
    arrays = [np.asarray(a) for a in arrays]
    shape = shape or tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.full((len(arrays),) + tuple(shape), fill, dtype=np.result_type(*arrays))
    for i, a in enumerate(arrays):
        out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


@dataclass(frozen=True, eq=False)
class WorldBatch:
    """The fixed facts of N episodes as padded arrays (build with :meth:`build`). Every row shares ``dt``, the
    vehicle and the IDM constants (checked).

    Attributes:
        worlds: (N,) the rows' :class:`~stag_sim.world.World`; batched: (N,) bool, rows stepped as arrays;
            logs: the distinct logs of the rows (the ``log_*`` tables' order).
        arrays: ``K`` (agents per row, padded); per row: ``sizes`` (N, K, 3) [m], ``removed`` (N, K) bool,
            ``route_*`` (N, M[+1], ...) the route (points, directions, segment lengths, arc lengths, headings,
            segment count; padding has zero length and infinite arc length), ``usable`` (N,) [m], ``start_time_s``
            (N,) [s], ``t0_us`` (N,) [us], ``log_row`` (N,) the row's log, ``simulated`` (N, K) bool the agents
            the row's source moves along paths (every row, arrays or not); per log: ``log_*`` (L, T, K, ...) the
            logged object tracks (timestamps padded with +inf); per row, the simulated (IDM) agents: ``sim_mask``,
            ``sim_idx`` (N, S), ``brake_at`` [s] / ``brake_decel`` [m/s^2] (N, S), ``path_*`` (N, S, P[+1], ...)
            their paths, ``stop_s`` / ``stop_light`` (N, S, M) the stop lines on them; per row, its traffic lights'
            schedules ``light_change`` / ``light_code`` (N, L, C), ``light_n`` / ``light_period`` (N, L); ``drivable``: (N,) each row's prepared drivable area or None.
    """

    worlds: tuple
    batched: np.ndarray
    logs: tuple
    arrays: dict

    @classmethod
    def build(cls, worlds: Sequence[World]) -> "WorldBatch":
        worlds = tuple(worlds)
        if not worlds:
            raise ValidationError("WorldBatch: needs at least one world")
        _check_shared(worlds)
        packs = [_pack(w) for w in worlds]
        a = {k: _pad_stack([p["row"][k] for p in packs], fill) for k, fill in ROW_FILL.items()}
        logs = tuple({id(w.log): w.log for w in worlds}.values())
        order = {id(lg): j for j, lg in enumerate(logs)}
        K = a["sizes"].shape[1]
        tables = [_log_arrays(lg) for lg in logs]
        T = max(t["T"] for t in tables)
        for k, fill in LOG_FILL.items():
            a["log_" + k] = _pad_stack([t[k] for t in tables], fill, (T, K)[:np.ndim(tables[0][k])] +
                                       np.shape(tables[0][k])[2:])
        a.update(K=K, log_row=np.array([order[id(w.log)] for w in worlds]), drivable=[w.drivable for w in worlds])
        return cls(worlds, np.array([p["batched"] for p in packs]), logs, a)

    @property
    def num_envs(self) -> int:
        return len(self.worlds)

    @property
    def config(self):
        return self.worlds[0].config

    def with_worlds(self, rows, worlds: Sequence[World]) -> "WorldBatch":
        """A batch with ``rows`` holding ``worlds`` instead (the others keep theirs): their arrays are copied in,
        the padding grows where a new world needs more room, and a new log joins the table (nothing is rebuilt:
        an RL run over many towns meets each town once)."""
        new = list(self.worlds)
        for r, w in zip(rows, worlds):
            new[r] = w
        if all(x is y for x, y in zip(new, self.worlds)):
            return self
        _check_shared([self.worlds[0], *worlds])
        packs = [_pack(w) for w in worlds]
        N, a = len(new), dict(self.arrays)
        for k, fill in ROW_FILL.items():
            shape = tuple(max([a[k].shape[d + 1]] + [p["row"][k].shape[d] for p in packs]) for d in range(a[k].ndim - 1))
            grown = _grow(a[k], (N,) + shape, fill)
            a[k] = grown.copy() if grown is a[k] else grown  # rows are written below
        logs = list(self.logs)
        for w in worlds:
            if all(lg is not w.log for lg in logs):
                logs.append(w.log)
        K = a["sizes"].shape[1]
        tables = [_log_arrays(lg) for lg in logs[len(self.logs):]]
        T = max([a["log_ts"].shape[1]] + [t["T"] for t in tables])
        for k, fill in LOG_FILL.items():  # the log table: shared until a new log or more room is needed
            tail = (T, K)[:a["log_" + k].ndim - 1] + a["log_" + k].shape[3:]
            grown = _grow(a["log_" + k], (len(self.logs),) + tail, fill)
            a["log_" + k] = np.concatenate([grown, _pad_stack([t[k] for t in tables], fill, tail)]) if tables else grown
        a["log_row"], a["drivable"], a["K"] = a["log_row"].copy(), list(a["drivable"]), K
        batched = self.batched.copy()
        order = {id(lg): j for j, lg in enumerate(logs)}
        for r, w, p in zip(rows, worlds, packs):
            for k, fill in ROW_FILL.items():
                v = p["row"][k]
                a[k][r] = fill
                a[k][(r,) + tuple(slice(0, n) for n in v.shape)] = v
            a["log_row"][r], a["drivable"][r], batched[r] = order[id(w.log)], w.drivable, p["batched"]
        return WorldBatch(tuple(new), batched, tuple(logs), a)


def _grow(arr: np.ndarray, shape: tuple, fill) -> np.ndarray:
    """``arr`` padded with ``fill`` to ``shape`` (each axis at least as long): a new array, or ``arr`` itself
    when it has that shape already (callers that write into the result copy it first)."""
    if arr.shape == tuple(shape):
        return arr
    out = np.full(shape, fill, dtype=arr.dtype)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


def _check_shared(worlds: Sequence[World]) -> None:
    """Every world of a batch shares ``dt``, the vehicle and the IDM constants."""
    c0 = worlds[0].config
    for w in worlds[1:]:
        for name in ("dt", "vehicle", "idm"):
            if getattr(w.config, name) != getattr(c0, name):
                raise ValidationError(f"WorldBatch: every world must share WorldConfig.{name}; "
                                      f"{getattr(w.config, name)!r} != {getattr(c0, name)!r}")


# ---- the step ----------------------------------------------------------------------------------------------------
def reset(worlds: Sequence[World], states: Sequence[SimState]) -> tuple[WorldBatch, BatchState]:
    """A batch of the episodes that start in ``states`` (from :func:`stag_sim.world.reset` of each world)."""
    wb = WorldBatch.build(worlds)
    return wb, BatchState.from_states(states, wb.worlds, wb.arrays["K"])


def step(wb: WorldBatch, state: BatchState, accel, steer) -> BatchState:
    """Advance every row one step with ego accelerations ``accel`` (N,) [m/s^2] and steering ``steer`` (N,) [rad]
    (:func:`stag_sim.world.step` of each row)."""
    cfg = wb.config
    ego = bicycle(state, accel, steer, cfg.dt, cfg.vehicle)
    time_s = state.time_s + cfg.dt
    agent_s, agent_speed = advance_agents(wb, state)
    route_s = advance_route(wb, state.route_s, ego["x"], ego["y"])
    xy, yaw, valid = agents(wb, time_s, agent_s)
    centre = ego_centres(wb, ego["x"], ego["y"], ego["yaw"])
    hits = collisions(wb, centre, ego["yaw"], xy, yaw, valid)
    nxt = BatchState(step=state.step + 1, time_s=time_s, **ego, agent_s=agent_s, agent_speed=agent_speed,
                     route_s=route_s, collision=hits.any(1), offroad=offroad(wb, centre, ego["yaw"]),
                     route_completed=route_s >= wb.arrays["usable"], hits=hits, agent_xy=xy, agent_yaw=yaw,
                     agent_valid=valid)
    rest = np.flatnonzero(~wb.batched)
    if len(rest):  # rows whose agents are not arrays: the reference step, written back
        accel, steer = np.broadcast_to(accel, state.step.shape), np.broadcast_to(steer, state.step.shape)
        done = [world_step(wb.worlds[i], state.state(i, wb.worlds[i]), float(accel[i]), float(steer[i])) for i in rest]
        nxt = nxt.with_rows(rest, done, [wb.worlds[i] for i in rest])
    return nxt
