"""Many episodes: every scenario with one agent, sequentially, in local processes or on a Ray cluster.

The results do not depend on the backend. :func:`evaluate` writes ``results.csv``, ``results.json``,
and ``report.html`` (:mod:`stag_sim.app.reports`) beside the run directories.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from stag_sim.app.episode import run_episode
from stag_sim.app.records import ResultRow, failed_row
from stag_sim.app.reports import write_results
from stag_sim.errors import EvalError, StagSimError

BACKENDS = ("local", "ray")


def run_one(path: str, agent_spec: str, out: str | None, video: bool, env_overrides: dict | None,
            carla: str | None = None) -> ResultRow:
    """One scenario file -> result row; any StagSimError (missing scene, broken scenario) becomes a failed row."""
    from stag_sim.scenario import load_scenario

    name = Path(path).stem
    try:
        sc = load_scenario(path)
        name = sc.name
        run_dir = Path(out) / "runs" / sc.name if out is not None else None
        return run_episode(sc, agent_spec, run_dir, video=video, env_overrides=env_overrides, carla=carla)
    except StagSimError as e:
        return failed_row(name, agent_spec, str(e))
    except Exception as e:  # noqa: BLE001 - one broken scenario must not take the others down; say what broke
        return failed_row(name, agent_spec, f"{type(e).__name__}: {e} ({traceback.extract_tb(e.__traceback__)[-1].name})")


def scenario_errors(paths) -> list[str]:
    """One line per scenario file of ``paths`` that does not load (YAML, schema, missing shipped name)."""
    from stag_sim.scenario import load_scenario

    bad = []
    for p in paths:
        try:
            load_scenario(p)
        except StagSimError as e:
            bad.append(str(e))
    return bad


def evaluate(scenario_paths, agent_spec: str, out: str | os.PathLike, *, workers: int = 1, backend: str = "local",
             video: bool = False, env_overrides: dict | None = None, progress: bool = True,
             carla: str | None = None, carla_timeout: float = 10.0) -> list[ResultRow]:
    """Run ``agent_spec`` on every scenario and write results.csv / results.json / report.html.

    ``backend="local"`` runs in this process (``workers=1``) or a process pool; ``backend="ray"`` starts (or joins)
    a Ray cluster with ``ray.init`` and runs one task per scenario. Rows come back in scenario order either way.
    ``carla="HOST:PORT"`` co-simulates every scenario with that CARLA server (one at a time: one CARLA world).

    Before the first scenario runs, every scenario file, the agent and the CARLA server (within ``carla_timeout``
    [s]) are checked; any problem is one :class:`EvalError` / :class:`AgentError` / :class:`BridgeError` and nothing
    runs. One progress bar covers the whole evaluation (current scenario, ETA).
    """
    from tqdm import tqdm

    from stag_sim.agents import check_agent

    if backend not in BACKENDS:
        raise EvalError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if int(workers) < 1:
        raise EvalError(f"workers: must be >= 1, got {workers}")
    scenario_paths = [str(p) for p in scenario_paths]
    check_agent(agent_spec)
    if carla is not None and (int(workers) > 1 or backend != "local"):
        raise EvalError("--carla: one CARLA server runs one world; use --workers 1 --backend local")
    bad = scenario_errors(scenario_paths)  # every file is checked before the first scenario runs
    if bad:
        raise EvalError(f"{len(bad)} of {len(scenario_paths)} scenario file(s) cannot run, nothing was run: "
                        + "; ".join(bad))
    if carla is not None:  # one check, within its timeout, instead of one wait per scenario
        from stag_sim.carla_bridge.bridge import check_server

        check_server(carla, carla_timeout)
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
            bar.set_postfix_str(Path(a[0]).stem)
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


