"""Run records and result rows: what one episode leaves behind, and how it is read back.

A run directory holds ``record.json`` (scenario as loaded, agent, seed, env settings, per-step observation hashes,
the result row), ``actions.npy`` (the actions exactly as the agent returned them), ``steps.csv`` (per step: time,
speed, lateral offset from the route, completion, reward), ``trajectory.json`` (driven and logged paths, route,
drivable area, how it ended: the report's bird's-eye plot) and, when asked for, ``video.mp4`` (H.264). A result row is a
:class:`ResultRow`: the episode's outcome and the columns of the scenario's metric groups.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

import numpy as np

from stag_sim.errors import EvalError

RECORD_FORMAT = "stag-sim-run"
RECORD_VERSION = 1
#: columns of results.csv, in order (metric columns follow :func:`stag_sim.metrics.summarize`)
LEAD_COLUMNS = ("scenario", "agent", "status", "success", "steps", "termination_reason", "route_completion", "pdms",
                "driving_score", "reason")


class ResultRow(TypedDict, total=False):
    """One episode's result (a row of ``results.csv``); metric columns follow :data:`METRIC_GROUPS`.

    Keys: ``scenario``, ``agent``, ``status`` (``ok`` / ``failed``), ``reason`` (why it failed), ``success``,
    ``steps``, ``termination_reason``, ``route_completion`` [0..1], ``return``, ``collision``, ``offroad``,
    ``obs_hash`` (sha256 over every step's observation), ``wall_s`` [s], and the metric columns (``pdms``,
    ``driving_score``, ``ade`` [m], ...).
    """

    scenario: str
    agent: str
    status: str
    reason: str
    success: bool
    steps: int
    termination_reason: str | None
    route_completion: float
    collision: bool
    offroad: bool
    obs_hash: str
    wall_s: float


#: result columns of each scenario metric group (``metrics:`` in a scenario), from :func:`stag_sim.metrics.summarize`;
#: a column the episode cannot be scored on is None, and ``unscored`` says which and why (absent when all are scored)
METRIC_GROUPS = {
    "pdms": ("pdms", "nc", "dac", "ep", "ttc", "comfort", "collisions", "at_fault_collisions", "offroad_steps", "progress",
             "dac_source", "unscored"),
    "driving_score": ("driving_score", "route_completion", "infraction_penalty", "collisions_vehicle",
                      "collisions_pedestrian", "collisions_static", "offroad_fraction", "unscored"),
    "log_divergence": ("ade", "fde", "max_displacement"),
}


def metric_columns(groups, summary: dict) -> dict:
    """The summary values of the scenario's metric groups; the driving score's route completion (furthest progress
    / route length) is reported as ``ds_route_completion`` beside the env's ``route_completion``."""
    return {("ds_" + c if c == "route_completion" else c): summary[c] for g in groups for c in METRIC_GROUPS[g] if c in summary}


def jsonable(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def write_run(run_dir: Path, sc, agent_spec, env, taken, hashes, steps, row, env_overrides, camera_offset,
              trajectory: dict | None = None) -> None:
    """Write the run directory of a finished episode (see the module docstring); ``trajectory``: what the report's
    bird's-eye plot draws (``trajectory.json``)."""
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
        "obs_hashes": hashes, "result": {k: jsonable(v) for k, v in row.items()},
    }
    with atomic_open(run_dir / "record.json") as f:
        json.dump(record, f, indent=1)
    if trajectory is not None:
        with atomic_open(run_dir / "trajectory.json") as f:
            json.dump(trajectory, f)


def failed_row(name: str, agent: str, reason: str) -> ResultRow:
    """The row of a scenario that could not run."""
    return {"scenario": name, "agent": agent, "status": "failed", "success": False, "steps": 0,
            "termination_reason": "error", "reason": reason}


def load_record(run_dir: str | os.PathLike) -> tuple[dict, np.ndarray]:
    """(record.json as a dict, the recorded actions) of a run directory; one-line :class:`EvalError` otherwise."""
    run_dir = Path(run_dir)
    path = run_dir / "record.json"
    if not path.is_file():
        raise EvalError(f"{run_dir}: not a run directory (no record.json); eval writes them under <out>/runs/<scenario>/")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if record.get("format") != RECORD_FORMAT or record.get("version") != RECORD_VERSION:
        raise EvalError(f"{path}: expected format {RECORD_FORMAT} v{RECORD_VERSION}, got "
                           f"{record.get('format')} v{record.get('version')}")
    if not (run_dir / "actions.npy").is_file():
        raise EvalError(f"{run_dir}: actions.npy is missing")
    return record, np.load(run_dir / "actions.npy", allow_pickle=False)


