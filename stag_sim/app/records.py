"""Run records and result rows: what one episode leaves behind, and how it is read back.

A run directory holds ``record.json`` (scenario as loaded, agent, seed, env settings, per-step observation hashes,
the result row), ``actions.npy`` (the actions exactly as the agent returned them), ``steps.csv`` (per step: time [s],
speed [m/s], lateral offset from the route [m], route completion, reward, time to collision ``ttc_s`` [s] (empty:
nothing projected within the TTC horizon), the logged ego's speed [m/s]), ``trajectory.json`` (driven and logged
paths, route, drivable area, the other agents' tracks and final boxes, how it ended: the report's bird's-eye plot),
``infractions.json`` (what was hit or left, when, where: :func:`stag_sim.app.report_data.infraction_table`),
``log_expert.json`` (the logged ego scored on the same steps: :func:`stag_sim.app.report_data.log_expert_scores`)
and, when asked for, ``video.mp4`` (H.264). A result row is a :class:`ResultRow`: the episode's outcome and the
columns of the scenario's metric groups.
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
LEAD_COLUMNS = ("scenario", "agent", "seed", "status", "success", "steps", "termination_reason", "route_completion",
                "pdms", "driving_score", "reason")


class ResultRow(TypedDict, total=False):
    """One episode's result (a row of ``results.csv``); metric columns follow :data:`METRIC_GROUPS`.

    Keys: ``scenario``, ``agent``, ``seed`` (the scenario's episode seed; None when it could not load), ``status``
    (``ok`` / ``failed``), ``reason`` (why it failed), ``success``, ``steps``, ``termination_reason``,
    ``route_completion`` [0..1] (the env's: route progress / the usable route, its length less the completion
    margin), ``return``, ``collision``, ``offroad``, ``obs_hash`` (sha256 over every step's observation), ``wall_s``
    [s], and the metric columns (``pdms``, ``epdms``, ``driving_score``, ``ds_route_completion`` [0..1] (the driving score's:
    furthest progress / the whole route), ``ade`` [m], ...). An evaluation adds ``run_dir``: the run directory,
    relative to its output directory (``runs/<scenario>`` or ``runs/<scenario>-seed<k>``).
    """

    scenario: str
    agent: str
    seed: int | None
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
    run_dir: str


#: result columns of each scenario metric group (``metrics:`` in a scenario), from :func:`stag_sim.metrics.summarize`;
#: a column the episode cannot be scored on is None, and ``unscored`` says which and why (absent when all are scored)
METRIC_GROUPS = {
    "pdms": ("pdms", "nc", "dac", "ep", "ttc", "comfort", "collisions", "at_fault_collisions", "offroad_steps", "progress",
             "dac_source", "unscored"),
    "driving_score": ("driving_score", "route_completion", "infraction_penalty", "collisions_vehicle",
                      "collisions_pedestrian", "collisions_static", "offroad_fraction", "unscored"),
    "log_divergence": ("ade", "fde", "max_displacement"),
    # NAVSIM v2 EPDMS with its sub-scores (the agent's own, before the human filter) and the sub-metrics the human
    # filter lifted; nuPlan's speed limit compliance is a group of its own (not part of EPDMS)
    "epdms": ("epdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec", "epdms_human_filtered",
              "oncoming_progress", "red_light_crossings", "unscored"),
    "speed_limit_compliance": ("speed_limit_compliance", "max_overspeed", "unscored"),
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
              trajectory: dict | None = None, infractions: list | None = None, log_expert: dict | None = None) -> None:
    """Write the run directory of a finished episode (see the module docstring); ``trajectory``: what the report's
    bird's-eye plot draws (``trajectory.json``), ``infractions`` (``infractions.json``), ``log_expert``
    (``log_expert.json``); each file only when given."""
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
    for name, data in (("trajectory.json", trajectory), ("infractions.json", infractions),
                       ("log_expert.json", log_expert)):
        if data is not None:
            with atomic_open(run_dir / name) as f:
                json.dump(data, f, default=jsonable)


def failed_row(name: str, agent: str, reason: str, seed: int | None = None) -> ResultRow:
    """The row of a scenario that could not run."""
    return {"scenario": name, "agent": agent, "seed": seed, "status": "failed", "success": False, "steps": 0,
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
    try:
        actions = np.load(run_dir / "actions.npy", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - truncated or garbled (numpy's parsers raise many kinds): name the file
        raise EvalError(f"{run_dir / 'actions.npy'}: not a readable .npy array ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    expected = len(record.get("obs_hashes", [])) - 1  # one observation hash per step, plus the reset's
    if actions.ndim < 2 or len(actions) != expected:
        raise EvalError(f"{run_dir / 'actions.npy'}: expected {expected} recorded actions (one per step of "
                        f"record.json), got an array of shape {actions.shape}")
    return record, actions


