"""The safety-critical suite (:mod:`stag_sim.safety`, after NeuroNCAP) for one agent: N variations per family,
run in this process, in local processes or on Ray, scored and summarised (``stag-sim eval --suite safety``).

Each variation is one task (:func:`run_variation`): draw it (with the do-nothing ego's reference impact), drive
the agent in a StagDrive-v0 env until it collides or the episode ends, and score the first impact. The env is
camera-free (``cameras=()``, observations ``ego`` and ``route``, no images rendered, the town's layout-only log)
where the agent needs no camera: the built-ins (:data:`CAMERA_FREE_AGENTS`) and any ``pkg.module:Class`` whose
class says ``camera_free = True``; other agents get the default cameras (the full town, rendered).

A variation's row depends only on (family, seed, scene, actor, agent): the same seed gives the same scores in any
process and with any backend. ``out`` gets ``results.json`` (settings, per-family and overall summary, rows) and
``variations.csv`` (one row per variation).
"""

from __future__ import annotations

import csv
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np

from stag_sim.errors import EvalError, StagSimError, ValidationError
from stag_sim.safety import FAMILIES

#: agents that read no camera (built-ins): their suite runs camera-free
CAMERA_FREE_AGENTS = ("log_replay", "pure_pursuit", "rule_following", "constant_velocity", "random")
#: the camera-free env settings (``ego`` + ``route``: what the built-ins read)
CAMERA_FREE_ENV = {"cameras": (), "observations": ("ego", "route"), "expert_action": False}
CSV_COLUMNS = ("family", "seed", "status", "score", "collision", "collided_with", "impact_speed", "impact_time_s",
               "ego_impact_speed", "ref_impact_speed", "ref_time_s", "offroad", "termination", "steps", "redraw",
               "actor", "ttc_s", "lateral_m", "speed", "offset_s", "from_left", "reason", "wall_s")
BACKENDS = ("local", "ray")

_LOGS: dict = {}  # per process: scene key -> (SceneLog, cache dir)


def is_camera_free(agent_spec: str) -> bool:
    """True when ``agent_spec`` reads no camera: a built-in of :data:`CAMERA_FREE_AGENTS`, or a ``pkg.module:Class``
    whose class sets ``camera_free = True``."""
    if agent_spec in CAMERA_FREE_AGENTS:
        return True
    if ":" in agent_spec and "://" not in agent_spec:
        import importlib

        module, _, attr = agent_spec.partition(":")
        try:
            return bool(getattr(getattr(importlib.import_module(module), attr, None), "camera_free", False))
        except Exception:  # noqa: BLE001 - check_agent names an unimportable agent
            return False
    return False


def scene_log(scene: str | None, sensors: bool = False):
    """(SceneLog, its cache dir, its :class:`~stag_sim.scenario.SceneSpec`) of the suite's base scene: the
    synthetic town seed 0 (``scene`` None; layout-only unless ``sensors``) or the scene cache ``scene``; loaded
    once per process."""
    from stag_sim.cache import load_scene_cache
    from stag_sim.safety import TOWN
    from stag_sim.scenario import SceneSpec

    key = (scene, sensors)
    if key not in _LOGS:
        if scene is None:
            from stag_sim.paths import ensure_default_scene

            path = ensure_default_scene(seed=TOWN.synthetic_seed, duration_s=TOWN.synthetic_duration_s,
                                        progress=False, sensors=sensors)
        else:
            path = Path(scene).expanduser()
            if not (path / "scene.json").is_file():
                raise ValidationError(f"--scene: {scene}: not a scene cache (no scene.json); make one with "
                                      "`stag-sim synth` or `stag-sim ingest`")
        _LOGS[key] = (load_scene_cache(path, verify=False), path)
    log, path = _LOGS[key]
    return log, path, TOWN if scene is None else SceneSpec(synthetic_seed=None, path=str(path))


def run_variation(family: str, seed: int, agent_spec: str, scene: str | None = None, actor: str = "auto",
                  env_overrides: dict | None = None, camera_free: bool = True) -> dict:
    """Variation ``seed`` of ``family`` with ``agent_spec`` -> its row (:data:`CSV_COLUMNS`); any error (the
    agent raised, a variation without a valid draw) is a row with ``status`` ``failed`` and the ``reason``."""
    from stag_sim.agents import make_agent
    from stag_sim.app.episode import make_env
    from stag_sim.safety import draw_variation, impact_of, ncap_score

    t0 = time.perf_counter()
    row: dict = {"family": family, "seed": int(seed), "status": "ok", "reason": ""}
    try:
        log, path, spec = scene_log(scene)
        var = draw_variation(family, seed, log, spec, actor)
        row.update(redraw=var.redraw, actor=var.actor, **{k: round(v, 4) if isinstance(v, float) else v
                                                            for k, v in var.params.items()},
                   ref_impact_speed=round(var.reference.speed, 4), ref_time_s=var.reference.time_s)
        if camera_free:
            env = make_env(var.scenario, {**(env_overrides or {}), **CAMERA_FREE_ENV}, scene=log)
        else:
            env = make_env(var.scenario, env_overrides, scene=scene_log(scene, sensors=True)[1])
        base = env.unwrapped
        try:
            agent = make_agent(agent_spec, env, seed=int(seed))
            obs, info = env.reset(seed=int(seed))
            agent.reset(obs, info)
            hit, steps = None, 0
            while steps < base.max_steps:
                prev, steps = base.state, steps + 1
                obs, _, terminated, truncated, info = env.step(np.asarray(agent.act(obs)))
                hit = impact_of(base.world, prev, base.state)
                if hit is not None or terminated or truncated:
                    break
        finally:
            env.close()
        row.update(score=round(ncap_score(None if hit is None else hit.speed, var.reference.speed), 4),
                   collision=hit is not None, collided_with="" if hit is None else hit.agent,
                   impact_speed=None if hit is None else round(hit.speed, 4),
                   impact_time_s=None if hit is None else hit.time_s,
                   ego_impact_speed=None if hit is None else round(hit.ego_speed, 4),
                   offroad=bool(info.get("offroad", False)), termination=info.get("termination_reason") or "",
                   steps=steps)
    except StagSimError as e:
        row.update(status="failed", reason=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001 - one broken run must not take the others down; say what broke
        where = traceback.extract_tb(e.__traceback__)[-1].name
        row.update(status="failed", reason=f"{type(e).__name__}: {e} ({where})".splitlines()[0])
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    return row


def check_families(text: str | None) -> tuple[str, ...]:
    """``stationary,frontal,side`` (any subset, in that order or not) -> the families; one line otherwise."""
    if text is None:
        return FAMILIES
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FAMILIES]
    if not names or bad or len(set(names)) != len(names):
        raise ValidationError(f"--families: expected distinct names from {','.join(FAMILIES)}, got {text!r}")
    return tuple(names)


def preflight(agent_spec: str, families, variations: int, workers: int, backend: str, scene: str | None,
              actor: str, seed: int) -> None:
    """Everything known before the first variation runs (one line each): the numbers, the agent, the scene (a
    scene cache, long enough, with the actor or a parked vehicle: the first variation of each family is drawn).
    An agent that needs cameras gets the rendered town generated here (minutes, once per cache)."""
    from stag_sim.agents import check_agent
    from stag_sim.safety import draw_variation

    if backend not in BACKENDS:
        raise EvalError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    for name, value, low in (("--variations", variations, 1), ("--workers", workers, 1), ("--suite-seed", seed, 0)):
        if int(value) != value or value < low:
            raise ValidationError(f"{name}: expected an integer >= {low}, got {value!r}")
    check_agent(agent_spec)
    log, _, spec = scene_log(scene)
    for family in families:
        draw_variation(family, seed, log, spec, actor)
    if scene is None and not is_camera_free(agent_spec):  # the rendered town, made once here, not in every worker
        scene_log(None, sensors=True)


def run_suite(agent_spec: str, out: str | os.PathLike, *, variations: int = 100, families=FAMILIES,
              scene: str | None = None, actor: str = "auto", workers: int = 1, backend: str = "local",
              seed: int = 0, env_overrides: dict | None = None, progress: bool = True) -> dict:
    """Run ``variations`` variations (seeds ``seed`` .. ``seed + variations - 1``) of each of ``families`` with
    ``agent_spec``; write ``out/results.json`` and ``out/variations.csv``; return the results (``summary`` per
    family and ``overall``, ``rows``). ``backend``: ``local`` (this process with ``workers=1``, else a process
    pool) or ``ray`` (``ray.init``, one task per variation; pip install 'stag-sim[ray]')."""
    from tqdm import tqdm

    from stag_sim.fsutil import check_writable, output_lock

    families = check_families(",".join(families)) if not isinstance(families, str) else check_families(families)
    preflight(agent_spec, families, variations, workers, backend, scene, actor, seed)
    out = check_writable(out, "--out")
    free = is_camera_free(agent_spec)
    tasks = [(f, seed + i, agent_spec, scene, actor, env_overrides, free) for f in families for i in range(variations)]
    t0 = time.perf_counter()
    with output_lock(out, "safety suite"):
        for stale in ("results.json", "variations.csv"):
            (out / stale).unlink(missing_ok=True)
        bar = tqdm(total=len(tasks), desc=f"safety [{agent_spec}]", unit="variation", disable=not progress)
        rows = _run(tasks, int(workers), backend, bar)
        bar.close()
        results = {"suite": "safety", "agent": agent_spec, "camera_free": free,
                   "scene": scene or "synthetic town seed 0", "actor": actor, "families": list(families), "variations": int(variations), "seed": int(seed),
                   "backend": backend, "workers": int(workers), "wall_s": round(time.perf_counter() - t0, 2),
                   "summary": summarize(rows, families), "rows": rows}
        write_outputs(results, Path(out))
    return results


def _run(tasks, workers: int, backend: str, bar) -> list[dict]:
    """The rows of ``tasks`` in task order (:func:`run_variation` arguments), spread as :mod:`evaluate` does."""
    rows: list = [None] * len(tasks)
    if backend == "ray":
        try:
            import ray
        except ImportError:
            from stag_sim.errors import MissingExtraError

            raise MissingExtraError("ray", "ray", "the Ray backend of the safety suite") from None
        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            remote = ray.remote(num_cpus=1)(run_variation)
            pending = {remote.remote(*t): i for i, t in enumerate(tasks)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                rows[pending.pop(done[0])] = ray.get(done[0])
                bar.update(1)
        finally:
            if started:
                ray.shutdown()
    elif workers == 1:
        for i, t in enumerate(tasks):
            bar.set_postfix_str(f"{t[0]} {t[1]}")
            rows[i] = run_variation(*t)
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_variation, *t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                bar.update(1)
    return rows


def summarize(rows: list[dict], families) -> dict:
    """Per family and ``overall``: :func:`stag_sim.safety.summarize_runs` over the rows that ran, plus
    ``failed`` (rows that could not run). ``overall``'s mean is the mean of the family means (NeuroNCAP's
    aggregate; equal to the pooled mean when every family ran as many variations)."""
    from stag_sim.safety import summarize_runs

    def stats(rs):
        ok = [r for r in rs if r["status"] == "ok"]
        s = summarize_runs([r["score"] for r in ok], [r["collision"] for r in ok])
        return {**s, "failed": len(rs) - len(ok)}

    out = {f: stats([r for r in rows if r["family"] == f]) for f in families}
    out["overall"] = stats(rows)
    means = [out[f]["mean_score"] for f in families if out[f]["n"]]
    out["overall"]["mean_score"] = float(np.mean(means)) if means else float("nan")
    return out


def write_outputs(results: dict, out: Path) -> None:
    """``results.json`` and ``variations.csv`` under ``out`` (atomic writes)."""
    from stag_sim.fsutil import atomic_open

    with atomic_open(out / "variations.csv") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows([["" if r.get(c) is None else r.get(c) for c in CSV_COLUMNS] for r in results["rows"]])
    with atomic_open(out / "results.json") as f:
        json.dump(results, f, indent=1)


def format_summary(results: dict) -> str:
    """The printed summary: per family and overall, mean score (std, bootstrap 95 % interval), collision rate
    (Wilson 95 % interval), failed runs."""
    lines = [f"safety suite: {results['agent']} on {results['scene']}, {results['variations']} variation(s) per "
             f"family from seed {results['seed']} ({results['wall_s']:.1f} s)",
             f"{'family':<11} {'n':>4}  {'score':>5}  {'std':>4}  {'95% CI':<12}  {'collisions':>10}  {'95% CI':<13}"]
    for name, s in results["summary"].items():
        if not s["n"]:
            lines.append(f"{name:<11} {0:>4}  (no run)" + (f"  failed {s['failed']}" if s["failed"] else ""))
            continue
        lo, hi = s["score_ci95"]
        clo, chi = s["collision_ci95"]
        lines.append(f"{name:<11} {s['n']:>4}  {s['mean_score']:5.2f}  {s['std_score']:4.2f}  [{lo:4.2f}, {hi:4.2f}]"
                     f"  {100 * s['collision_rate']:9.1f}%  [{100 * clo:4.1f}, {100 * chi:5.1f}]%"
                     + (f"  failed {s['failed']}" if s["failed"] else ""))
    return "\n".join(lines)


def run_from_cli(agent_spec: str, out: Path, scenarios: tuple, *, variations: int | None, families: str | None,
                 scene: str | None, actor: str | None, seed: int | None, workers: int, backend: str, seeds: int,
                 video: bool, carla: str | None, env_overrides: dict | None, echo) -> dict:
    """``stag-sim eval --suite safety``: refuse the eval options the suite does not take (one line each), run
    :func:`run_suite`, ``echo`` the summary and where the files are; exit status 1 when any variation failed
    (the list on stderr)."""
    refused = (("--scenarios", bool(scenarios), "the suite builds its own scenarios"),
               ("--seeds", seeds != 1, "use --variations and --suite-seed"),
               ("--video", video, "the suite writes no videos"),
               ("--carla", carla is not None, "the suite runs on StagDrive's own world"))
    for option, given, why in refused:
        if given:
            raise ValidationError(f"{option}: not with --suite safety ({why})")
    results = run_suite(agent_spec, out, variations=100 if variations is None else variations,
                        families=check_families(families), scene=scene, actor=actor or "auto",
                        workers=workers, backend=backend, seed=0 if seed is None else seed,
                        env_overrides=env_overrides)
    echo(format_summary(results))
    echo(f"results: {Path(out) / 'results.json'}, {Path(out) / 'variations.csv'}")
    failed = [r for r in results["rows"] if r["status"] == "failed"]
    if failed:
        for r in failed:
            echo(f"FAILED {r['family']} seed {r['seed']}: {r['reason']}", err=True)
        echo(f"error: {len(failed)} of {len(results['rows'])} variation(s) could not run", err=True)
        raise SystemExit(1)
    return results
