"""Many episodes: every scenario with one agent, sequentially, in local processes or on a Ray cluster.

The results do not depend on the backend. :func:`evaluate` writes ``results.csv``, ``results.json``,
and ``report.html`` (:mod:`stag_sim.app.reports`) beside the run directories.
"""

from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path

from stag_sim.app.episode import run_episode
from stag_sim.app.records import ResultRow, failed_row
from stag_sim.app.reports import write_results
from stag_sim.errors import EvalError, StagSimError

BACKENDS = ("local", "ray")


def run_one(path: str, agent_spec: str, out: str | None, video: bool, env_overrides: dict | None,
            carla: str | None = None, seed: int | None = None, run_name: str | None = None) -> ResultRow:
    """One scenario file -> result row; any error (missing scene, broken scenario, a bug) becomes a failed row.

    ``seed``: run with this seed instead of the scenario's. ``run_name``: the run directory ``out/runs/<run_name>``
    (default: the scenario's name); it is built aside and moved into place when the episode ends, replacing a
    previous run of that name; a scenario that cannot run leaves no run directory.
    """
    import dataclasses

    from stag_sim.fsutil import atomic_directory
    from stag_sim.scenario import load_scenario

    name = Path(path).stem
    try:
        sc = load_scenario(path)
        if seed is not None:
            sc = dataclasses.replace(sc, seed=int(seed))
        name = sc.name
        if out is None:
            return run_episode(sc, agent_spec, None, video=video, env_overrides=env_overrides, carla=carla)
        run_dir = Path(out) / "runs" / (run_name or sc.name)
        with atomic_directory(run_dir) as tmp:
            row = run_episode(sc, agent_spec, tmp, video=video, env_overrides=env_overrides, carla=carla)
        row["run_dir"] = str(run_dir.relative_to(out))
        return row
    except StagSimError as e:
        row = failed_row(name, agent_spec, str(e))
    except Exception as e:  # noqa: BLE001 - one broken scenario must not take the others down; say what broke
        row = failed_row(name, agent_spec, f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})")
    if seed is not None:
        row["seed"] = int(seed)
    if out is not None:  # a run of this name from an earlier evaluation is stale now
        shutil.rmtree(Path(out) / "runs" / (run_name or name), ignore_errors=True)
    return row


def evaluate(scenario_paths, agent_spec: str, out: str | os.PathLike, *, workers: int = 1, backend: str = "local",
             video: bool = False, env_overrides: dict | None = None, progress: bool = True,
             carla: str | None = None, carla_timeout: float = 10.0, seeds: int = 1) -> list[ResultRow]:
    """Run ``agent_spec`` on every scenario and write results.csv / results.json / report.html.

    ``backend="local"`` runs in this process (``workers=1``) or a process pool; ``backend="ray"`` starts (or joins)
    a Ray cluster with ``ray.init`` and runs one task per scenario. Rows come back in scenario order either way.
    ``carla="HOST:PORT"`` co-simulates every scenario with that CARLA server (one at a time: one CARLA world).
    ``seeds``: episodes per scenario, with seeds ``scenario.seed + k`` (k < seeds); run directories are then
    ``runs/<scenario>-seed<seed>``.

    Before the first scenario runs, every scenario (its settings with ``env_overrides``, scene, start time, lanes,
    cameras: :func:`stag_sim.app.preflight.check_scenario`), the agent, ``out`` (writable, not in use by another
    evaluation) and the CARLA server (within ``carla_timeout`` [s]) are checked; any problem is one
    :class:`EvalError` / :class:`AgentError` / :class:`OutputError` / :class:`BridgeError` line and nothing runs.
    While it runs, ``out`` is locked (a second evaluation into it is refused) and the previous evaluation's
    results.csv / results.json / report.html are gone, so no file describes a mix of two evaluations. One progress
    bar covers the whole evaluation (current scenario, ETA).
    """
    from tqdm import tqdm

    from stag_sim.agents import check_agent
    from stag_sim.app.preflight import check_scenarios
    from stag_sim.fsutil import check_writable, output_lock

    if backend not in BACKENDS:
        raise EvalError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if int(workers) < 1:
        raise EvalError(f"workers: must be >= 1, got {workers}")
    if int(seeds) < 1:
        raise EvalError(f"seeds: must be >= 1, got {seeds}")
    scenario_paths = [str(p) for p in scenario_paths]
    check_agent(agent_spec)
    if carla is not None and (int(workers) > 1 or backend != "local"):
        raise EvalError("--carla: one CARLA server runs one world; use --workers 1 --backend local")
    loaded = check_scenarios(scenario_paths, env_overrides)  # every file is checked before the first one runs
    names = [sc.name for sc in loaded]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EvalError(f"scenario name {twice[0]!r} is used by more than one file; their runs would share "
                        f"runs/{twice[0]}: give each file a distinct name: field")
    if carla is not None:  # one check, within its timeout, instead of one wait per scenario
        from stag_sim.carla_bridge.bridge import check_server

        check_server(carla, carla_timeout)
    out = check_writable(out, "--out")
    several = int(seeds) > 1
    args = [(p, agent_spec, str(out), video, env_overrides, carla, sc.seed + k if several else None,
             f"{sc.name}-seed{sc.seed + k}" if several else None)
            for p, sc in zip(scenario_paths, loaded) for k in range(int(seeds))]
    with output_lock(out, "evaluation"):
        for stale in ("results.csv", "results.json", "report.html"):
            (out / stale).unlink(missing_ok=True)
        bar = tqdm(total=len(args), desc=f"eval [{agent_spec}]", unit="episode" if several else "scenario",
                   disable=not progress)
        rows: list[dict | None] = [None] * len(args)
        if backend == "ray":
            rows = _run_ray(args, workers, bar)
        elif workers == 1:
            for i, a in enumerate(args):
                bar.set_postfix_str(a[7] or Path(a[0]).stem)
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


