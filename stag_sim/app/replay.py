"""Replay: re-run a recorded episode with its recorded actions, bit-identically or re-rendered."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from stag_sim.app.episode import run_episode
from stag_sim.app.records import jsonable, load_record
from stag_sim.errors import EvalError


def replay_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, video: bool = False,
               env_overrides: dict | None = None, camera_offset=None) -> dict:
    """Re-run a recorded episode with its recorded actions.

    With no overrides the run must be bit-identical: the same observation hashes at every step and the same
    metrics; the returned dict says so (``identical``) and, if not, where it first diverged. With renderer
    overrides (``env_overrides`` such as ``voxel_size`` / ``image_size``) or a ``camera_offset`` the observations
    change by design, but the driving (actions, trajectory, metrics) must not.
    """
    from stag_sim.app.preflight import check_scenario
    from stag_sim.fsutil import atomic_directory, check_writable
    from stag_sim.scenario import load_scenario_text

    record, actions = load_record(run_dir)
    sc = load_scenario_text(record["scenario_yaml"], source=record.get("scenario_source") or "record.json")
    scene = record.get("scene_dir")
    if scene is not None and not (Path(scene) / "scene.json").is_file():
        scene = None  # recorded on another machine: resolve the scene from the scenario instead
    overrides = {**record.get("env_overrides", {}), **(env_overrides or {})}
    offset = camera_offset if camera_offset is not None else record.get("camera_offset")
    check_scenario(sc, overrides, scene=scene)
    if out_dir is None:
        return _compare(record, run_episode(sc, record["agent"], None, video=False, env_overrides=overrides,
                                            actions=actions, scene=scene, camera_offset=offset), None,
                        env_overrides, camera_offset)
    out_dir = check_writable(out_dir, "--out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "record.json").is_file():
        raise EvalError(f"--out: {out_dir} exists and is not a replay (no record.json); choose a new directory")
    try:
        with atomic_directory(out_dir) as tmp:  # built aside, moved into place when the replay is complete
            row = run_episode(sc, record["agent"], tmp, video=video, env_overrides=overrides, actions=actions,
                              scene=scene, camera_offset=offset)
            res = _compare(record, row, json.loads((tmp / "record.json").read_text())["obs_hashes"], env_overrides,
                           camera_offset)
            with open(tmp / "replay.json", "w") as f:
                json.dump({k: v for k, v in res.items() if k not in ("result", "recorded")}, f, indent=1)
    except BaseException:  # an earlier replay there no longer describes the latest one: it goes
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return res


def _compare(record: dict, row: dict, new_hashes, env_overrides, camera_offset) -> dict:
    """What :func:`replay_run` returns: the replayed ``row`` against the recorded one."""
    old = record["result"]
    rerendered = bool(env_overrides) or bool(camera_offset is not None and np.any(np.asarray(camera_offset) != 0))
    metric_keys = [k for k in old if k not in ("obs_hash", "wall_s", "reason", "status", "run_dir")]
    metrics_same = all(_same(old.get(k), jsonable(row.get(k))) for k in metric_keys)
    first_diff = None
    if new_hashes is not None:
        first_diff = next((i for i, (a, b) in enumerate(zip(record["obs_hashes"], new_hashes)) if a != b), None)
    return {"identical": bool(row["obs_hash"] == old["obs_hash"] and metrics_same), "obs_identical":
            bool(row["obs_hash"] == old["obs_hash"]), "metrics_identical": bool(metrics_same), "rerendered": rerendered,
            "first_divergent_step": first_diff, "result": row, "recorded": old}


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and (float(a) == float(b) or (np.isnan(float(a)) and np.isnan(float(b))))
    return a == b
