"""Checks before work: everything about a run that can be known without building a world or a renderer.

``stag-sim eval / export / replay / demo`` (and :func:`stag_sim.app.evaluate`) call these before the first scenario
runs, so a bad setting, a missing scene, a start past the end of the log, an unknown camera or lane, or an output
directory that cannot be written is one line, with nothing run and nothing written. What needs the built world
(an event whose agent never moves in the log, ...) is still found when the scenario runs, and fails that scenario
alone.
"""

from __future__ import annotations

from pathlib import Path

from stag_sim.cli_args import parse_image_size
from stag_sim.errors import EvalError, ScenarioError, StagSimError, ValidationError


def env_overrides(image_size: str | None = None, cameras: str | None = None, voxel_size: float | None = None,
                  renderer: str | None = None, refiner_path: str | None = None) -> dict:
    """The env settings the command-line render options ask for, checked (one line naming the option)."""
    out: dict = {}
    if renderer:
        out["renderer"] = renderer
    if refiner_path:
        if not Path(refiner_path).is_dir():
            raise ValidationError(f"--refiner-path: {refiner_path}: no such directory (create one with "
                                  "`stag-sim refiner init --out DIR`)")
        out["refiner"] = {"path": refiner_path}
    if renderer == "refined" and not refiner_path:
        raise ValidationError("--renderer refined: needs --refiner-path DIR (create one with `stag-sim refiner init`)")
    size = parse_image_size(image_size)
    if size:
        out["image_size"] = size
    if cameras is not None:
        out["cameras"] = [c.strip() for c in cameras.split(",") if c.strip()]
        if not out["cameras"]:
            raise ValidationError(f"--cameras: expected comma-separated camera names, got {cameras!r}")
    if voxel_size is not None:
        if not voxel_size > 0:
            raise ValidationError(f"--voxel-size: must be > 0 m, got {voxel_size}")
        out["voxel_size"] = float(voxel_size)
    return out


def scene_facts(scenario):
    """The scene log of ``scenario`` as cheaply as it can be had: a scene cache memory-mapped without its sha256
    check, or the synthetic town's layout-only log (same map, rig names, clock and agents; generated in ~0.2 s)."""
    from stag_sim.cache import load_scene_cache
    from stag_sim.scenario import resolve_scene

    if scenario.scene.path is not None:
        return load_scene_cache(resolve_scene(scenario), verify=False)
    from stag_sim.paths import ensure_default_scene

    return load_scene_cache(ensure_default_scene(seed=scenario.scene.synthetic_seed,
                                                 duration_s=scenario.scene.synthetic_duration_s,
                                                 progress=False, sensors=False), verify=False)


def check_scenario(scenario, overrides: dict | None = None, scene=None) -> None:
    """Raise one :class:`ScenarioError` line (naming the scenario file) if ``scenario`` with the env ``overrides``
    cannot start: its settings, scene, start time, route lanes, observed cameras, event agents.

    ``scene``: a scene cache directory that replaces the scenario's own (as ``stag-sim replay`` does)."""
    import numpy as np

    from stag_sim.env_config import EnvConfig
    from stag_sim.scenario import env_settings
    from stag_sim.world import lane_route

    where = scenario.source or scenario.name
    try:
        settings = {**scenario.env, **(overrides or {})}
        cfg = EnvConfig.from_kwargs(**settings).validate()
        if scene is not None:
            from stag_sim.cache import load_scene_cache

            log = load_scene_cache(scene, verify=False)
        else:
            log = scene_facts(scenario)
        settings, _ = env_settings(scenario, log)  # the start time within the log
        if cfg.cameras != ():
            cfg.camera_names(log.rig)
            if log.layout_only and scenario.scene.path is not None:
                raise ScenarioError(f"scene {log.name!r} has no camera images: set env cameras: [] (camera-free)")
        if scenario.route != "logged":
            start = settings["world"]["start_frame"]
            lane_route(log, tuple(scenario.route), np.asarray(log.ego_poses[start])[:2, 3])
        known = set(log.objects.instance_ids)
        for i, ev in enumerate(scenario.events):
            if ev.agent != "auto" and ev.agent not in known:
                raise ScenarioError(f"events[{i}].agent: no agent {ev.agent!r} in scene {log.name!r}")
            if ev.type == "insert" and ev.name:
                known.add(ev.name)
        if cfg.renderer == "refined" and cfg.refiner is not None and not Path(cfg.refiner.path).is_dir():
            raise ScenarioError(f"refiner.path: {cfg.refiner.path}: no such directory")
    except StagSimError as e:
        msg = str(e)
        if msg.startswith(where):
            raise
        raise ScenarioError(f"{where}: {msg}") from None


def check_scenarios(paths, overrides: dict | None = None) -> list:
    """Load and :func:`check_scenario` every file of ``paths``; one :class:`EvalError` line listing every problem
    (``N of M scenario file(s) cannot run, nothing was run: ...``). Returns the loaded scenarios."""
    from stag_sim.scenario import load_scenario

    loaded, bad = [], []
    for p in paths:
        try:
            sc = load_scenario(p)
            check_scenario(sc, overrides)
            loaded.append(sc)
        except StagSimError as e:
            bad.append(str(e))
    if bad:
        raise EvalError(f"{len(bad)} of {len(paths)} scenario file(s) cannot run, nothing was run: " + "; ".join(bad)
                        if len(paths) > 1 else bad[0])
    return loaded


__all__ = ["check_scenario", "check_scenarios", "env_overrides", "scene_facts"]
