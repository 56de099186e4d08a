"""Closed-loop evaluation: run agents on scenarios, score them, keep a run record that replays bit-identically.

One episode = one scenario x one agent. :func:`run_episode` drives a StagDrive-v0 env built from the scenario,
records every action, a sha256 of every observation and the trajectories the metrics need, then scores the episode
with :mod:`stag_sim.metrics` (PDMS, driving score, log divergence). Everything lands in a run directory::

    <out>/runs/<scenario>/record.json    scenario (as loaded), agent, seed, env settings, per-step obs hashes, row
    <out>/runs/<scenario>/actions.npy    (T, ...) the actions exactly as the agent returned them
    <out>/runs/<scenario>/steps.csv      per step: time, speed, lateral offset from the route, completion, reward
    <out>/runs/<scenario>/video.mp4      six views + bird's-eye view (when asked for)

:func:`evaluate` runs many scenarios (sequentially, in local processes, or on a Ray cluster — the results do not
depend on which) and writes ``results.csv``, ``results.json``, ``summary.png`` and ``summary.html``.
:func:`replay_run` re-runs a record with its recorded actions and checks the observations and metrics are identical,
optionally re-rendering with other renderer settings or a shifted camera rig.

An agent that raises, or returns NaN, ends its episode with ``status = "failed"`` and the reason; evaluation goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from stag_sim.errors import StagSimError

RECORD_FORMAT = "stag-sim-run"
RECORD_VERSION = 1
BACKENDS = ("local", "ray")
#: columns of results.csv, in order (metric columns follow :func:`stag_sim.metrics.summarize`)
LEAD_COLUMNS = ("scenario", "agent", "status", "success", "steps", "termination_reason", "route_completion", "pdms",
                "driving_score", "reason")


def obs_digest(obs: dict) -> str:
    """sha256 over an observation dict (keys sorted; key names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for k in sorted(obs):
        a = np.ascontiguousarray(obs[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class _Trace:
    """Per-step quantities the metrics need, collected while the episode runs."""

    time_s: list = field(default_factory=list)
    ego: list = field(default_factory=list)  # (x, y, yaw, speed)
    agent_xy: list = field(default_factory=list)
    agent_yaw: list = field(default_factory=list)
    agent_valid: list = field(default_factory=list)
    route_s: list = field(default_factory=list)

    def add(self, world, state) -> None:
        poses, valid = world.agent_poses(state)
        e = state.ego
        self.time_s.append(state.time_s)
        self.ego.append((e.x, e.y, e.yaw, e.speed))
        self.agent_xy.append(poses[:, :2, 3].copy())
        self.agent_yaw.append(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
        self.agent_valid.append(valid.copy())
        self.route_s.append(state.route_s)


def reference_progress(world, duration_s: float) -> float:
    """NAVSIM's EP denominator, "the best reachable progress": here the distance the logged driver's mean speed
    covers in ``duration_s`` [s], capped where the route counts as completed (its length less the completion
    margin) [m]. (NAVSIM uses the best PDM-Closed proposal; we have no such planner, and the logged speed is the
    natural closed-loop reference.)"""
    from stag_sim.world import logged_mean_speed

    return float(min(logged_mean_speed(world.log) * duration_s, world.route_length - world.config.route_completion_margin))


def episode_trace(world, trace: _Trace, route_completed: bool, duration_s: float):
    """The :class:`stag_sim.metrics.EpisodeTrace` of a finished episode."""
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
    drivable = log.map.drivable_area.buffer(world.config.offroad_tolerance) if log.map is not None else None
    logged = np.stack([world.logged_ego_pose(min(ti, world.end_time_s))[:2, 3] for ti in t])
    return EpisodeTrace(
        ego=EgoTrace(t, ego[:, :2], ego[:, 2], ego[:, 3], v.front_length + v.rear_length, v.width, v.centre_offset),
        agents=AgentTrace(tuple(log.objects.instance_ids), tuple(log.objects.categories), np.asarray(world.sizes, np.float64),
                          xy, np.stack(trace.agent_yaw).astype(np.float64), speed, valid),
        drivable_area=drivable, route=np.asarray(world.route.points, np.float64),
        route_progress=np.asarray(trace.route_s, np.float64), reference_progress=reference_progress(world, duration_s),
        logged_xy=logged, logged_valid=t <= world.end_time_s + 1e-9, route_completed=bool(route_completed),
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
                camera_offset=None, progress: bool = False, env=None, carla: str | None = None) -> dict:
    """Run one scenario with one agent; returns the result row (and writes the run directory if ``out_dir``).

    Args:
        scenario: a :class:`~stag_sim.scenario.Scenario`, a scenario file, or a shipped scenario's name.
        agent_spec: built-in agent name or ``pkg.module:Class`` (see :func:`stag_sim.agents.make_agent`).
        out_dir: run directory to write (record.json, actions.npy, steps.csv, video.mp4); None writes nothing.
        video: also write ``video.mp4`` (six views + bird's-eye view).
        env_overrides: extra StagDrive-v0 settings (image size, cameras, voxel size, ...).
        actions: replay these actions instead of asking the agent (:func:`replay_run`).
        scene: scene override (a scene cache path); default: the scenario's.
        camera_offset: (x, y, z) [m] shift of the whole camera rig in the ego frame (re-rendering a run).
        progress: show a progress bar.
        env: an already built env for this scenario (reused, e.g. by tests; ``env_overrides`` then ignored).
        carla: ``HOST:PORT`` of a CARLA server to co-simulate with (:func:`make_env`).
    """
    from tqdm import tqdm

    from stag_sim.agents import make_agent
    from stag_sim.metrics import compute_metrics, summarize
    from stag_sim.scenario import Scenario, load_scenario

    t_start = time.perf_counter()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    row: dict[str, Any] = {"scenario": sc.name, "agent": agent_spec, "status": "ok", "reason": ""}
    shifted = camera_offset is not None and np.any(np.asarray(camera_offset) != 0)
    if shifted and env is not None:
        raise StagSimError("run_episode: camera_offset needs a fresh env (it is an env setting); pass env=None")
    overrides = {**(env_overrides or {}), **({"camera_offset": tuple(camera_offset)} if shifted else {})}
    env = env if env is not None else make_env(sc, overrides, scene=scene, render_mode="rgb_array" if video else None,
                                               carla=carla)
    base = env.unwrapped
    agent = None if actions is not None else make_agent(agent_spec, env, seed=sc.seed)
    world = base.world
    trace = _Trace()
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
            agent.reset(obs, info)
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
    events = base.state.events if base.state is not None else {}
    row["steps"] = len(taken)
    row["termination_reason"] = info.get("termination_reason") or ("agent_failed" if row["status"] == "failed" else None)
    row["route_completion"] = round(float(info.get("route_completion", 0.0)), 4)
    row["return"] = round(float(total), 4)
    metrics = compute_metrics(episode_trace(world, trace, events.get("route_completed", False), sc.duration_s))
    summary = summarize(metrics)
    row.update(_metric_columns(sc.metrics, summary))
    row["collision"] = bool(info.get("collision", False))
    row["offroad"] = bool(info.get("offroad", False))
    row["success"] = bool(row["status"] == "ok" and row["route_completion"] >= sc.success.min_route_completion
                          and (sc.success.allow_collision or not row["collision"])
                          and (sc.success.allow_offroad or not row["offroad"]))
    row["obs_hash"] = hashlib.sha256("".join(hashes).encode()).hexdigest()
    row["wall_s"] = round(time.perf_counter() - t_start, 2)
    if run_dir is not None:
        _write_run(run_dir, sc, agent_spec, env, taken, hashes, steps, row, env_overrides, camera_offset)
    env.close()
    return row


class _AgentFailure(Exception):
    """The agent raised or returned an invalid action: the episode ends as failed."""


#: result columns of each scenario metric group (``metrics:`` in a scenario), from :func:`stag_sim.metrics.summarize`
METRIC_GROUPS = {
    "pdms": ("pdms", "nc", "dac", "ep", "ttc", "comfort", "collisions", "at_fault_collisions", "offroad_steps", "progress"),
    "driving_score": ("driving_score", "route_completion", "infraction_penalty", "collisions_vehicle",
                      "collisions_pedestrian", "collisions_static", "offroad_fraction"),
    "log_divergence": ("ade", "fde", "max_displacement"),
}


def _metric_columns(groups, summary: dict) -> dict:
    """The summary values of the scenario's metric groups; the driving score's route completion (furthest progress
    / route length) is reported as ``ds_route_completion`` beside the env's ``route_completion``."""
    return {("ds_" + c if c == "route_completion" else c): summary[c] for g in groups for c in METRIC_GROUPS[g] if c in summary}


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def _write_run(run_dir: Path, sc, agent_spec, env, taken, hashes, steps, row, env_overrides, camera_offset) -> None:
    import yaml

    from stag_sim.fsutil import atomic_open
    from stag_sim.version import __version__

    base = env.unwrapped
    run_dir.mkdir(parents=True, exist_ok=True)
    acts = np.stack(taken) if taken else np.zeros((0,) + env.action_space.shape, env.action_space.dtype)
    with atomic_open(run_dir / "actions.npy", "wb") as f:
        np.save(f, acts)
    if steps:
        with atomic_open(run_dir / "steps.csv") as f:
            f.write(",".join(steps[0]) + "\n" + "".join(",".join(str(v) for v in s.values()) + "\n" for s in steps))
    record = {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "stag_sim_version": __version__,
        "scenario": sc.to_dict(), "scenario_yaml": yaml.safe_dump(sc.to_dict(), sort_keys=False),
        "scenario_source": sc.source, "scene_dir": str(Path(base.scene_dir).resolve()) if base.scene_dir else None,
        "agent": agent_spec, "seed": sc.seed, "env_overrides": env_overrides or {},
        "camera_offset": list(camera_offset) if camera_offset is not None else None,
        "obs_hashes": hashes, "result": {k: _jsonable(v) for k, v in row.items()},
    }
    with atomic_open(run_dir / "record.json") as f:
        json.dump(record, f, indent=1)


def _failed_row(name: str, agent: str, reason: str) -> dict:
    return {"scenario": name, "agent": agent, "status": "failed", "success": False, "steps": 0,
            "termination_reason": "error", "reason": reason}


def run_one(path: str, agent_spec: str, out: str | None, video: bool, env_overrides: dict | None,
            carla: str | None = None) -> dict:
    """One scenario file -> result row; any StagSimError (missing scene, broken scenario) becomes a failed row."""
    from stag_sim.scenario import load_scenario

    name = Path(path).stem
    try:
        sc = load_scenario(path)
        name = sc.name
        run_dir = Path(out) / "runs" / sc.name if out is not None else None
        return run_episode(sc, agent_spec, run_dir, video=video, env_overrides=env_overrides, carla=carla)
    except StagSimError as e:
        return _failed_row(name, agent_spec, str(e))
    except Exception as e:  # noqa: BLE001 - one broken scenario must not take the others down; say what broke
        return _failed_row(name, agent_spec, f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})")


def evaluate(scenario_paths, agent_spec: str, out: str | os.PathLike, *, workers: int = 1, backend: str = "local",
             video: bool = False, env_overrides: dict | None = None, progress: bool = True,
             carla: str | None = None) -> list[dict]:
    """Run ``agent_spec`` on every scenario and write results.csv / results.json / summary.png / summary.html.

    ``backend="local"`` runs in this process (``workers=1``) or a process pool; ``backend="ray"`` starts (or joins)
    a Ray cluster with ``ray.init`` and runs one task per scenario. Rows come back in scenario order either way.
    ``carla="HOST:PORT"`` co-simulates every scenario with that CARLA server (one at a time: one CARLA world).
    """
    from tqdm import tqdm

    from stag_sim.agents import BUILTIN_AGENTS

    if backend not in BACKENDS:
        raise StagSimError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if int(workers) < 1:
        raise StagSimError(f"workers: must be >= 1, got {workers}")
    if agent_spec not in BUILTIN_AGENTS and ":" not in agent_spec:
        raise StagSimError(f"agent {agent_spec!r}: not a built-in ({', '.join(BUILTIN_AGENTS)}) nor pkg.module:Class")
    if carla is not None and (int(workers) > 1 or backend != "local"):
        raise StagSimError("--carla: one CARLA server runs one world; use --workers 1 --backend local")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in scenario_paths]
    args = [(p, agent_spec, str(out), video, env_overrides, carla) for p in paths]
    bar = tqdm(total=len(args), desc=f"eval [{agent_spec}]", unit="scenario", disable=not progress)
    rows: list[dict | None] = [None] * len(args)
    if backend == "ray":
        rows = _run_ray(args, workers, bar)
    elif workers == 1:
        for i, a in enumerate(args):
            rows[i] = run_one(*a)
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, *a): i for i, a in enumerate(args)}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    write_results(rows, out, agent_spec)
    return rows


def _run_ray(args, workers: int, bar) -> list[dict]:
    try:
        import ray
    except ImportError:
        from stag_sim.errors import MissingExtraError

        raise MissingExtraError("ray", "ray", "the Ray evaluation backend") from None
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=int(workers), include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_one)
        refs = [remote.remote(*a) for a in args]
        rows = []
        for ref in refs:
            rows.append(ray.get(ref))
            bar.update(1)
        return rows
    finally:
        if started:
            ray.shutdown()


def write_results(rows: list[dict], out: Path, agent_spec: str = "") -> dict[str, Path]:
    """results.csv, results.json, summary.png (bar chart) and summary.html (table + chart) under ``out``."""
    from stag_sim.fsutil import atomic_open

    cols = list(LEAD_COLUMNS) + sorted({k for r in rows for k in r} - set(LEAD_COLUMNS))
    with atomic_open(out / "results.csv") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([["" if r.get(c) is None else _jsonable(r.get(c, "")) for c in cols] for r in rows])
    with atomic_open(out / "results.json") as f:
        json.dump({"agent": agent_spec, "results": [{k: _jsonable(v) for k, v in r.items()} for r in rows],
                   "mean": mean_scores(rows)}, f, indent=1)
    png = out / "summary.png"
    from stag_sim.viz import write_png

    write_png(png, summary_chart(rows, title=f"{agent_spec}: PDMS and driving score per scenario"))
    with atomic_open(out / "summary.html") as f:
        f.write(summary_html(rows, cols, agent_spec))
    return {"csv": out / "results.csv", "json": out / "results.json", "png": png, "html": out / "summary.html"}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """Mean PDMS, driving score, success rate over all rows (a failed episode scores what it reached)."""
    def mean(key):
        return round(float(np.mean([float(r.get(key) or 0.0) for r in rows])), 4) if rows else 0.0

    return {"pdms": mean("pdms"), "driving_score": mean("driving_score"), "success_rate": mean("success"),
            "route_completion": mean("route_completion")}


def summary_chart(rows: list[dict], title: str = "", width: int = 900, bar_h: int = 22) -> np.ndarray:
    """(H, W, 3) uint8 horizontal bar chart: PDMS (blue) and driving score (orange) per scenario."""
    import cv2

    pad, label_w = 10, 230
    h = 40 + len(rows) * (2 * bar_h + 10) + 30
    img = np.full((h, width, 3), 255, np.uint8)
    cv2.putText(img, title[:90], (pad, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    span = width - label_w - 3 * pad - 50
    for i, r in enumerate(rows):
        y = 40 + i * (2 * bar_h + 10)
        name = f"{r['scenario']}{'  (failed)' if r.get('status') == 'failed' else ''}"
        cv2.putText(img, name[:30], (pad, y + bar_h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j, (key, colour) in enumerate((("pdms", (31, 119, 180)), ("driving_score", (255, 127, 14)))):
            v = float(r.get(key) or 0.0)
            y0 = y + j * bar_h
            cv2.rectangle(img, (label_w, y0 + 2), (label_w + int(span * v), y0 + bar_h - 2), colour, -1)
            cv2.putText(img, f"{v:.2f}", (label_w + int(span * v) + 5, y0 + bar_h - 6), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "blue: PDMS   orange: driving score   (0..1)", (pad, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (60, 60, 60), 1, cv2.LINE_AA)
    return img


def summary_html(rows: list[dict], cols: list[str], agent_spec: str) -> str:
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(_jsonable(r.get(c, ''))))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    means = mean_scores(rows)
    mean_txt = ", ".join(f"{k} {v:.3f}" for k, v in means.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>StagDrive eval: {html.escape(agent_spec)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:12px}</style></head><body>"
            f"<h2>StagDrive evaluation: {html.escape(agent_spec)}</h2><p>Mean: {html.escape(mean_txt)}</p>"
            f"<img src='summary.png' alt='PDMS and driving score per scenario'><table><tr>{head}</tr>{body}</table>"
            "</body></html>\n")


def format_table(rows: list[dict], cols=("scenario", "status", "success", "steps", "route_completion", "pdms",
                                         "driving_score", "ade")) -> str:
    """A plain-text table of result rows (for the terminal)."""
    cells = [[str(_fmt(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line, "  ".join("-" * w for w in widths)] + ["  ".join(x.ljust(w) for x, w in zip(row, widths))
                                                                   for row in cells])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else v


# --- replay ---------------------------------------------------------------------------------------------------------

def load_record(run_dir: str | os.PathLike) -> tuple[dict, np.ndarray]:
    run_dir = Path(run_dir)
    path = run_dir / "record.json"
    if not path.is_file():
        raise StagSimError(f"{run_dir}: not a run directory (no record.json); eval writes them under <out>/runs/<scenario>/")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StagSimError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if record.get("format") != RECORD_FORMAT or record.get("version") != RECORD_VERSION:
        raise StagSimError(f"{path}: expected format {RECORD_FORMAT} v{RECORD_VERSION}, got "
                           f"{record.get('format')} v{record.get('version')}")
    if not (run_dir / "actions.npy").is_file():
        raise StagSimError(f"{run_dir}: actions.npy is missing")
    return record, np.load(run_dir / "actions.npy", allow_pickle=False)


def replay_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, video: bool = False,
               env_overrides: dict | None = None, camera_offset=None) -> dict:
    """Re-run a recorded episode with its recorded actions.

    With no overrides the run must be bit-identical: the same observation hashes at every step and the same
    metrics; the returned dict says so (``identical``) and, if not, where it first diverged. With renderer
    overrides (``env_overrides`` such as ``voxel_size`` / ``image_size``) or a ``camera_offset`` the observations
    change by design, but the driving (actions, trajectory, metrics) must not.
    """
    from stag_sim.scenario import load_scenario_text

    record, actions = load_record(run_dir)
    sc = load_scenario_text(record["scenario_yaml"], source=record.get("scenario_source") or "record.json")
    scene = record.get("scene_dir")
    if scene is not None and not (Path(scene) / "scene.json").is_file():
        scene = None  # recorded on another machine: resolve the scene from the scenario instead
    overrides = {**record.get("env_overrides", {}), **(env_overrides or {})}
    offset = camera_offset if camera_offset is not None else record.get("camera_offset")
    row = run_episode(sc, record["agent"], out_dir, video=video, env_overrides=overrides, actions=actions,
                      scene=scene, camera_offset=offset)
    old = record["result"]
    rerendered = bool(env_overrides) or (camera_offset is not None and np.any(np.asarray(camera_offset) != 0))
    metric_keys = [k for k in old if k not in ("obs_hash", "wall_s", "reason", "status")]
    metrics_same = all(_same(old.get(k), _jsonable(row.get(k))) for k in metric_keys)
    new_hashes = json.loads((Path(out_dir) / "record.json").read_text())["obs_hashes"] if out_dir else None
    first_diff = None
    if new_hashes is not None:
        first_diff = next((i for i, (a, b) in enumerate(zip(record["obs_hashes"], new_hashes)) if a != b), None)
    return {"identical": bool(row["obs_hash"] == old["obs_hash"] and metrics_same), "obs_identical":
            row["obs_hash"] == old["obs_hash"], "metrics_identical": metrics_same, "rerendered": rerendered,
            "first_divergent_step": first_diff, "result": row, "recorded": old}


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and (float(a) == float(b) or (np.isnan(float(a)) and np.isnan(float(b))))
    return a == b
