"""One episode: a scenario x an agent in a StagDrive-v0 env, scored by :mod:`stag_sim.metrics`.

:func:`run_episode` drives the env built from the scenario (:func:`make_env`), records every action, a sha256 of
every observation and the trajectories the metrics need, then scores the episode (PDMS, driving score, log
divergence) and, with an ``out_dir``, writes its run directory (:mod:`stag_sim.app.records`). An agent that raises,
or returns NaN, ends its episode with ``status = "failed"`` and the reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from stag_sim.app.records import ResultRow, metric_columns, write_run
from stag_sim.errors import EvalError


def obs_digest(obs: dict) -> str:
    """sha256 over an observation dict (keys sorted; key names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for k in sorted(obs):
        a = np.ascontiguousarray(obs[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class TraceRecorder:
    """Per-step quantities the metrics need, collected while the episode runs.

    ``plan_dt`` [s]: the waypoint spacing of the agent's trajectory actions (``config.waypoint_dt``), None when the
    agent gives controls; then :meth:`add_plan` records, for the step :meth:`add` recorded last, the plan the agent
    gave there (extended comfort, :func:`stag_sim.metrics.extended_comfort.extended_comfort`)."""

    time_s: list = field(default_factory=list)
    ego: list = field(default_factory=list)  # (x, y, yaw, speed)
    agent_xy: list = field(default_factory=list)
    agent_yaw: list = field(default_factory=list)
    agent_valid: list = field(default_factory=list)
    route_s: list = field(default_factory=list)
    events: list = field(default_factory=list)  # what the world recorded at each step (SimState.events)
    plan_dt: float | None = None
    plans: list = field(default_factory=list)  # per step: (H, 2) world-frame plan [m], or None

    def add(self, world, state) -> None:
        poses, valid = world.agent_poses(state)
        e = state.ego
        self.time_s.append(state.time_s)
        self.ego.append((e.x, e.y, e.yaw, e.speed))
        self.agent_xy.append(poses[:, :2, 3].copy())
        self.agent_yaw.append(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
        self.agent_valid.append(valid.copy())
        self.route_s.append(state.route_s)
        self.events.append(state.events)
        self.plans.append(None)

    def add_plan(self, ego, waypoints) -> None:
        """The plan the agent gave at the last recorded step: ``waypoints`` (H, 2) [m] in the frame of ``ego`` (the
        planar :class:`~stag_sim.dynamics.EgoState` there: x forward, y left from the rear axle), kept in the world
        frame."""
        wp = np.asarray(waypoints, np.float64)[:, :2]
        c, s = np.cos(ego.yaw), np.sin(ego.yaw)
        self.plans[-1] = np.stack([ego.x + c * wp[:, 0] - s * wp[:, 1], ego.y + s * wp[:, 0] + c * wp[:, 1]], axis=-1)

    def plan_array(self) -> np.ndarray | None:
        """(T, H, 2) [m] the recorded plans (NaN at steps without one), or None when none was recorded."""
        given = [p for p in self.plans if p is not None]
        if self.plan_dt is None or not given:
            return None
        out = np.full((len(self.plans),) + given[0].shape, np.nan)
        for k, p in enumerate(self.plans):
            if p is not None:
                out[k] = p
        return out


def reference_progress(world, duration_s: float) -> float:
    """NAVSIM's EP denominator, "the best reachable progress": here the distance the logged driver's mean speed
    covers in ``duration_s`` [s], capped where the route counts as completed (its length less the completion
    margin) [m]. (NAVSIM uses the best PDM-Closed proposal; we have no such planner, and the logged speed is the
    natural closed-loop reference.)"""
    from stag_sim.world import logged_mean_speed

    return float(min(logged_mean_speed(world.log) * duration_s, world.usable_route_length))


def edits_the_log(world) -> bool:
    """The scenario changed what the logged driver met (inserted / removed / scripted agents, light schedules,
    speed limits): the logged human is then no reference, and EPDMS's human filter stays off (otherwise a human who
    "ran" a light the scenario turned red, or "hit" a car the scenario inserted, would excuse the agent)."""
    c = world.config
    return bool(c.events or c.lights or c.speed_limits)


def episode_trace(world, trace: TraceRecorder, route_completed: bool, duration_s: float):
    """The :class:`stag_sim.metrics.EpisodeTrace` of a finished episode: with the world's road rules
    (``world.rules``), the logged (human) ego at the same times (pose from ``world.logged_ego_pose``, held at the
    log's end; speed from finite differences; None where the scenario edits the log, :func:`edits_the_log`) and
    the agent's plans where it gave trajectories."""
    from stag_sim.app.report_data import logged_ego
    from stag_sim.metrics import AgentTrace, EgoTrace, EpisodeTrace

    v = world.config.vehicle
    t = np.asarray(trace.time_s, np.float64)
    ego = np.asarray(trace.ego, np.float64)
    xy = np.stack(trace.agent_xy).astype(np.float64)
    valid = np.stack(trace.agent_valid)
    dt = world.config.dt
    speed = np.zeros(valid.shape)
    if len(t) > 1:  # finite differences where the agent exists on both steps (0 where it appears or vanishes)
        both = valid[1:] & valid[:-1]
        step = np.where(both, np.linalg.norm(np.nan_to_num(np.diff(xy, axis=0)), axis=2) / dt, 0.0)
        speed[1:] = step
        speed[0] = step[0]
    log = world.log
    area = world.drivable_area
    drivable = area.buffer(world.config.offroad_tolerance) if area is not None else None
    logged, logged_yaw, logged_speed = logged_ego(world, t)
    length = v.front_length + v.rear_length
    plans = trace.plan_array()
    return EpisodeTrace(
        ego=EgoTrace(t, ego[:, :2], ego[:, 2], ego[:, 3], length, v.width, v.centre_offset),
        agents=AgentTrace(tuple(log.objects.instance_ids), tuple(log.objects.categories), np.asarray(world.sizes, np.float64),
                          xy, np.stack(trace.agent_yaw).astype(np.float64), speed, valid),
        drivable_area=drivable, route=np.asarray(world.route.points, np.float64),
        route_progress=np.asarray(trace.route_s, np.float64), reference_progress=reference_progress(world, duration_s),
        logged_xy=logged, logged_valid=t <= world.end_time_s + 1e-9, route_completed=bool(route_completed),
        drivable_source=world.drivable_source, rules=world.rules,
        human=EgoTrace(t, logged, logged_yaw, logged_speed, length, v.width, v.centre_offset)
        if not edits_the_log(world) else None,
        plans=plans, plan_dt=float(trace.plan_dt) if plans is not None else None,
    )


def make_env(scenario, env_overrides: dict | None = None, scene=None, render_mode: str | None = None,
             carla: str | None = None):
    """StagDrive-v0 for ``scenario``; with ``carla="HOST:PORT"`` the CARLA co-simulation env instead (CARLA moves
    the other actors and checks collisions, StagDrive renders; see docs/carla.md)."""
    if carla is not None:
        from stag_sim.envs.carla_env import make_carla_env

        return make_carla_env(carla, scenario=scenario, scene=scene, render_mode=render_mode, **(env_overrides or {}))
    import gymnasium as gym

    import stag_sim  # noqa: F401  (registers StagDrive-v0)

    return gym.make("StagDrive-v0", scenario=scenario, scene=scene, render_mode=render_mode, **(env_overrides or {}))


def run_episode(scenario, agent_spec: str, out_dir: str | os.PathLike | None = None, *, video: bool = False,
                env_overrides: dict | None = None, actions: np.ndarray | None = None, scene=None,
                camera_offset=None, progress: bool = False, env=None, carla: str | None = None) -> ResultRow:
    """Run one scenario with one agent; returns the result row (and writes the run directory if ``out_dir``).

    Args:
        scenario: a :class:`~stag_sim.scenario.Scenario`, a scenario file, or a shipped scenario's name.
        agent_spec: built-in agent name, ``pkg.module:Class`` or ``egodriver://HOST:PORT`` (a planner served over
            the egodriver gRPC contract; the env then defaults to the ``trajectory`` action mode); see
            :func:`stag_sim.agents.make_agent`.
        out_dir: run directory to write (record.json, actions.npy, steps.csv, video.mp4); None writes nothing.
        video: also write ``video.mp4`` (six views + bird's-eye view).
        env_overrides: extra StagDrive-v0 settings (image size, cameras, voxel size, ...).
        actions: replay these actions instead of asking the agent (:func:`stag_sim.app.replay.replay_run`).
        scene: scene override (a scene cache path); default: the scenario's.
        camera_offset: (x, y, z) [m] shift of the whole camera rig in the ego frame (re-rendering a run).
        progress: show a progress bar.
        env: an already built env for this scenario (reused, e.g. by tests; ``env_overrides`` then ignored).
        carla: ``HOST:PORT`` of a CARLA server to co-simulate with (:func:`make_env`).
    """
    from tqdm import tqdm

    from stag_sim.agents import make_agent
    from stag_sim.agents.egodriver import is_driver_spec
    from stag_sim.metrics import compute_metrics, summarize
    from stag_sim.scenario import Scenario, load_scenario

    t_start = time.perf_counter()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    row: ResultRow = {"scenario": sc.name, "agent": agent_spec, "seed": sc.seed, "status": "ok", "reason": ""}
    shifted = camera_offset is not None and np.any(np.asarray(camera_offset) != 0)
    if shifted and env is not None:
        raise EvalError("run_episode: camera_offset needs a fresh env (it is an env setting); pass env=None")
    if is_driver_spec(agent_spec) and env is None:  # a served planner's plan is tracked by the env's controller
        env_overrides = {"action_mode": "trajectory", **(env_overrides or {})}
    overrides = {**(env_overrides or {}), **({"camera_offset": tuple(camera_offset)} if shifted else {})}
    env = env if env is not None else make_env(sc, overrides, scene=scene, render_mode="rgb_array" if video else None,
                                               carla=carla)
    base = env.unwrapped
    agent = None if actions is not None else make_agent(agent_spec, env, seed=sc.seed)
    world = base.world
    plan_mode = getattr(getattr(base, "config", None), "action_mode", "control") == "trajectory"
    trace = TraceRecorder(plan_dt=float(base.config.waypoint_dt) if plan_mode else None)
    hashes: list[str] = []
    taken: list[np.ndarray] = []
    steps: list[dict] = []
    total = 0.0
    info: dict = {}

    def frames() -> Iterable[np.ndarray | None]:
        nonlocal info, total
        obs, info = env.reset(seed=sc.seed)
        hashes.append(obs_digest(obs))
        trace.add(world, base.state)
        if agent is not None:
            try:
                agent.reset(obs, info)
            except Exception as e:  # noqa: BLE001 - e.g. a served planner that refuses the session
                raise _AgentFailure(f"agent reset raised {type(e).__name__}: {e}".splitlines()[0]) from e
        yield env.render() if video else None
        bar = tqdm(total=base.max_steps, desc=f"{sc.name} [{agent_spec}]", unit="step", disable=not progress, leave=False)
        try:
            for k in range(base.max_steps):
                if actions is not None:
                    if k >= len(actions):
                        break
                    action = actions[k]
                else:
                    try:
                        action = np.asarray(agent.act(obs))
                    except Exception as e:  # noqa: BLE001 - a planner's failure is a result, not a crash
                        raise _AgentFailure(f"agent raised {type(e).__name__}: {e}".splitlines()[0]) from e
                    if action.shape != env.action_space.shape or not np.issubdtype(action.dtype, np.number):
                        raise _AgentFailure(f"agent returned shape {action.shape} {action.dtype}, expected "
                                            f"{env.action_space.shape} numbers")
                    if not np.all(np.isfinite(action)):
                        raise _AgentFailure(f"agent returned a non-finite action {np.asarray(action).tolist()}")
                taken.append(np.array(action, copy=True))
                if plan_mode:  # the plan from the state the last trace.add recorded
                    trace.add_plan(base.state.ego, action)
                obs, reward, terminated, truncated, info = env.step(action)
                total += reward
                hashes.append(obs_digest(obs))
                s = base.state
                trace.add(world, s)
                _, lateral = world.route.project([[s.ego.x, s.ego.y]])
                steps.append({"t_s": round(s.time_s, 3), "speed_mps": round(s.ego.speed, 3),
                              "lateral_offset_m": round(float(lateral[0]), 3),
                              "route_completion": round(info["route_completion"], 4), "reward": round(float(reward), 4)})
                bar.update(1)
                yield env.render() if video else None
                if terminated or truncated:
                    break
        finally:
            bar.close()

    run_dir = Path(out_dir) if out_dir is not None else None
    try:
        if video and run_dir is not None:
            from stag_sim.viz import write_mp4

            write_mp4(run_dir / "video.mp4", frames(), fps=base.metadata["render_fps"])
        else:
            for _ in frames():
                pass
    except _AgentFailure as e:
        row.update(status="failed", reason=str(e))
    finally:
        if callable(getattr(agent, "close", None)):  # e.g. a served planner's session and channel
            agent.close()
    events = base.state.events if base.state is not None else {}
    row["steps"] = len(taken)
    row["termination_reason"] = info.get("termination_reason") or ("agent_failed" if row["status"] == "failed" else None)
    row["route_completion"] = round(float(info.get("route_completion", 0.0)), 4)
    row["return"] = round(float(total), 4)
    ep = episode_trace(world, trace, events.get("route_completed", False), sc.duration_s)
    metrics = compute_metrics(ep)
    summary = summarize(metrics)
    row.update(metric_columns(sc.metrics, summary))
    row["collision"] = bool(info.get("collision", False))
    row["offroad"] = bool(info.get("offroad", False))
    row["success"] = bool(row["status"] == "ok" and row["route_completion"] >= sc.success.min_route_completion
                          and (sc.success.allow_collision or not row["collision"])
                          and (sc.success.allow_offroad or not row["offroad"]))
    row["obs_hash"] = hashlib.sha256("".join(hashes).encode()).hexdigest()
    row["wall_s"] = round(time.perf_counter() - t_start, 2)
    if run_dir is not None:
        from stag_sim.app.report_data import infraction_table, log_expert_scores, trajectory_summary

        add_step_signals(steps, world, ep)
        write_run(run_dir, sc, agent_spec, env, taken, hashes, steps, row, env_overrides, camera_offset,
                  trajectory_summary(world, trace, row), infraction_table(world, trace, metrics),
                  log_expert_scores(world, ep, sc.metrics))
    env.close()
    return row


def add_step_signals(steps: list[dict], world, ep) -> None:
    """Add ``ttc_s`` (:func:`~stag_sim.app.report_data.ttc_series`, empty where nothing is projected within the
    TTC horizon) and the logged ego's speed ``logged_speed_mps`` to each step's row of steps.csv (the rows of
    ``steps`` are the trace's steps 1.., after the reset)."""
    from stag_sim.app.report_data import logged_ego, ttc_series

    ttc = ttc_series(ep)
    _, _, logged_speed = logged_ego(world, ep.ego.time_s)
    for k, s in enumerate(steps, start=1):
        s["ttc_s"] = "" if np.isnan(ttc[k]) else round(float(ttc[k]), 2)
        s["logged_speed_mps"] = round(float(logged_speed[k]), 3)


class _AgentFailure(Exception):
    """The agent raised or returned an invalid action: the episode ends as failed."""
