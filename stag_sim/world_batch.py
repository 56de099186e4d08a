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


def _path_arrays(path: PolylinePath) -> dict:
    return {"pts": path.points, "dir": path._dir, "seg": path._seg_len, "s": path.s,
            "heading": np.arctan2(path._dir[:, 1], path._dir[:, 0])}


def _log_arrays(log) -> dict:
    P = np.asarray(log.objects.poses, np.float64)
    return {"ts": np.asarray(log.timestamps_us).astype(np.float64), "xy": P[..., :2, 3], "yaw": yaw_of(P),
            "quat": matrix_to_quat(P[..., :3, :3]) if P.size else np.zeros(P.shape[:2] + (4,)),
            "valid": np.asarray(log.objects.valid, bool)}


def _pack(world: World) -> dict:
    """The arrays of one world (cached per world object)."""
    if world in _PACKS:
        return _PACKS[world]
    agents = world.agents
    batched = isinstance(agents, ScriptedAgents) and not agents.inserted and not agents.cut_ins
    K = len(world.log.objects)
    sim = np.flatnonzero(agents.simulated) if batched else np.zeros(0, int)
    p = {"batched": batched, "K": K, "route": _path_arrays(world.route), "log": _LOGS.get(world.log),
         "sim": sim, "paths": [_path_arrays(agents.agent_paths[k]) for k in sim],
         "brake_at": np.array([agents.brakes[k].at_s if k in agents.brakes else np.inf for k in sim]),
         "brake_decel": np.array([agents.brakes[k].decel if k in agents.brakes else 0.0 for k in sim]),
         "removed": agents.removed.copy() if batched else np.zeros(K, bool)}
    _PACKS[world] = p
    return p


class _LogCache:
    def __init__(self) -> None:
        self._d: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def get(self, log) -> dict:
        if log not in self._d:
            self._d[log] = _log_arrays(log)
        return self._d[log]


_LOGS = _LogCache()


def _pad_stack(arrays: list[np.ndarray], fill, shape=None) -> np.ndarray:
    """Stack arrays of one rank padded with ``fill`` to the largest (or ``shape``) of each axis."""
    shape = shape or tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.full((len(arrays),) + tuple(shape), fill, dtype=np.result_type(*arrays) if arrays else float)
    for i, a in enumerate(arrays):
        out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


@dataclass(frozen=True, eq=False)
class WorldBatch:
    """The fixed facts of N episodes as padded arrays (build with :meth:`build`). Every row shares ``dt``, the
    vehicle and the IDM constants (checked).

    Attributes:
        worlds: (N,) the rows' :class:`~stag_sim.world.World`; batched: (N,) bool, rows stepped as arrays.
        K: agents per row (padded); sizes: (N, K, 3) [m]; removed: (N, K) bool.
        route_*: (N, M[+1], ...) each row's route (points, directions, segment lengths, arc lengths, headings),
            padded segments with zero length and infinite arc length.
        usable: (N,) usable route length [m]; start_time_s, t0_us: (N,) episode start [s], log start [us].
        log_*: (N, T, K, ...) each row's logged object tracks (timestamps padded with +inf).
        sim_*: (N, S, ...) the simulated (IDM) agents: index, path arrays, brake time [s] and deceleration [m/s^2],
            sim_mask (N, S) bool.
    """

    worlds: tuple
    batched: np.ndarray
    arrays: dict

    @classmethod
    def build(cls, worlds: Sequence[World]) -> "WorldBatch":
        worlds = tuple(worlds)
        if not worlds:
            raise ValidationError("WorldBatch: needs at least one world")
        c0 = worlds[0].config
        for w in worlds[1:]:
            for name in ("dt", "vehicle", "idm"):
                if getattr(w.config, name) != getattr(c0, name):
                    raise ValidationError(f"WorldBatch: every world must share WorldConfig.{name}; "
                                          f"{getattr(w.config, name)!r} != {getattr(c0, name)!r}")
        packs = [_pack(w) for w in worlds]
        K = max(max(p["K"] for p in packs), 1)
        a: dict = {"K": K}
        for key, fill in (("pts", 0.0), ("dir", 0.0), ("seg", 0.0), ("s", np.inf), ("heading", 0.0)):
            a["route_" + key] = _pad_stack([p["route"][key] for p in packs], fill)
        a["route_nseg"] = np.array([len(p["route"]["seg"]) for p in packs])
        a["usable"] = np.array([w.usable_route_length for w in worlds])
        a["start_time_s"] = np.array([w.start_time_s for w in worlds])
        a["t0_us"] = np.array([float(w.t0_us) for w in worlds])
        a["sizes"] = _pad_stack([np.asarray(w.sizes, float).reshape(-1, 3) for w in worlds], 0.0, (K, 3))
        a["removed"] = _pad_stack([p["removed"] for p in packs], False, (K,))
        logs = [p["log"] for p in packs]
        T = max(len(lg["ts"]) for lg in logs)
        a["log_ts"] = _pad_stack([lg["ts"] for lg in logs], np.inf, (T,))
        a["log_T"] = np.array([len(lg["ts"]) for lg in logs])
        for key, fill, tail in (("xy", 0.0, (2,)), ("yaw", 0.0, ()), ("valid", False, ()), ("quat", 0.0, (4,))):
            a["log_" + key] = _pad_stack([lg[key] for lg in logs], fill, (T, K) + tail)
        S = max(len(p["sim"]) for p in packs)
        a["sim_mask"] = _pad_stack([np.ones(len(p["sim"]), bool) for p in packs], False, (S,))
        a["sim_idx"] = _pad_stack([p["sim"] for p in packs], 0, (S,))
        a["brake_at"] = _pad_stack([p["brake_at"] for p in packs], np.inf, (S,))
        a["brake_decel"] = _pad_stack([p["brake_decel"] for p in packs], 0.0, (S,))
        paths = [q for p in packs for q in p["paths"]]
        P = max([len(q["seg"]) for q in paths], default=1)
        for key, fill in (("pts", 0.0), ("dir", 0.0), ("seg", 0.0), ("s", np.inf), ("heading", 0.0)):
            n = P + 1 if key in ("pts", "s") else P
            tail = (2,) if key in ("pts", "dir") else ()
            per = [_pad_stack([q[key] for q in p["paths"]], fill, (n,) + tail) if p["paths"]
                   else np.full((0, n) + tail, fill) for p in packs]
            a["path_" + key] = _pad_stack(per, fill, (S, n) + tail)
        a["path_nseg"] = _pad_stack([np.array([len(q["seg"]) for q in p["paths"]], int) for p in packs], 1, (S,))
        drivable = [w.drivable for w in worlds]
        return cls(worlds, np.array([p["batched"] for p in packs]), {**a, "drivable": drivable})

    @property
    def num_envs(self) -> int:
        return len(self.worlds)

    @property
    def config(self):
        return self.worlds[0].config

    def with_worlds(self, rows, worlds: Sequence[World]) -> "WorldBatch":
        """A batch with ``rows`` holding ``worlds`` instead (unchanged rows keep theirs)."""
        new = list(self.worlds)
        changed = False
        for r, w in zip(rows, worlds):
            changed |= new[r] is not w
            new[r] = w
        return WorldBatch.build(new) if changed else self


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
