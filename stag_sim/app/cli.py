"""The app's commands: ``stag-sim eval``, ``stag-sim replay`` and ``stag-sim export`` (closed-loop evaluation from the
command line) and ``stag-sim demo``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from stag_sim.app.preflight import env_overrides as _env_overrides
from stag_sim.cli_errors import one_line_errors
from stag_sim.errors import ValidationError


_RENDER_OPTIONS = [
    click.option("--image-size", default=None, help="Observed image size HEIGHTxWIDTH (default: the scene's, 224x400)."),
    click.option("--cameras", default=None, help="Comma-separated cameras to observe (default: all six)."),
    click.option("--voxel-size", type=float, default=None, help="Static-cloud voxel size [m] (default 0.2)."),
    click.option("--renderer", type=click.Choice(["point", "refined"]), default=None,
                 help="Camera renderer (default: point; refined needs --refiner-path and the diffusion extra)."),
    click.option("--refiner-path", default=None, help="Refiner directory for --renderer refined."),
]


def _render_options(f):
    for opt in reversed(_RENDER_OPTIONS):
        f = opt(f)
    return f


@click.command("eval")
@click.option("--agent", "agent", default=None,
              help="log_replay | pure_pursuit | constant_velocity | random | pkg.module:Class (or --driver)")
@click.option("--driver", "driver", default=None, metavar="HOST:PORT",
              help="Drive a planner served over AlpaSim's egodriver gRPC contract instead of --agent "
                   "(pip install 'stag-sim[driver]'; checked once before the first scenario).")
@click.option("--driver-timeout", default=10.0, show_default=True,
              help="Seconds each call to the --driver server may take; a slower policy fails its scenario.")
@click.option("--scenarios", "scenarios", multiple=True,
              help="Scenario file, directory of *.yaml, or shipped scenario name (repeatable; more may follow).")
@click.argument("more_scenarios", nargs=-1)
@click.option("--suite", type=click.Choice(["safety"]), default=None,
              help="A built-in suite instead of --scenarios: safety (NeuroNCAP-style stationary / frontal / side "
                   "collisions, scored 0-5; docs/safety.md).")
@click.option("--variations", type=int, default=None, help="--suite: variations per family [default: 100].")
@click.option("--families", default=None, help="--suite: comma-separated families [default: stationary,frontal,side].")
@click.option("--scene", default=None, metavar="PATH", help="--suite: base scene cache [default: the synthetic town].")
@click.option("--actor", default=None,
              help="--suite: instance id of the scene vehicle inserted as the target [default: auto, a parked one].")
@click.option("--suite-seed", type=int, default=None, help="--suite: seed of the first variation [default: 0].")
@click.option("--ray", "use_ray", is_flag=True, help="Same as --backend ray.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("stag-runs/eval"), show_default=True)
@click.option("--workers", default=1, show_default=True, help="Scenarios run in parallel.")
@click.option("--seeds", default=1, show_default=True,
              help="Episodes per scenario, seeds scenario.seed + k; the report shows their spread.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local processes, or a Ray cluster (ray.init(); pip install 'stag-sim[ray]').")
@click.option("--video/--no-video", default=False, show_default=True, help="Write one video per scenario.")
@click.option("--carla", "carla", default=None, metavar="HOST:PORT",
              help="Co-simulate with a CARLA server (pip install 'stag-sim[carla]'; see docs/carla.md).")
@click.option("--carla-timeout", default=10.0, show_default=True,
              help="Seconds to wait for the CARLA server (checked once, before the first scenario).")
@_render_options
@one_line_errors
def eval_cmd(agent: str | None, driver: str | None, driver_timeout: float, scenarios: tuple[str, ...],
             more_scenarios: tuple[str, ...], suite: str | None, variations: int, families: str | None,
             scene: str | None, actor: str | None, suite_seed: int | None, use_ray: bool, out: Path, workers: int,
             seeds: int, backend: str, video: bool, carla: str | None, carla_timeout: float, image_size: str | None,
             cameras: str | None, voxel_size: float | None, renderer: str | None, refiner_path: str | None) -> None:
    """Run an agent on scenarios; write results.csv/json, report.html and a run record per scenario.

    Exit status: 0 when every scenario ran (whatever the scores); 1 when any could not (a bad scenario file, an
    agent that does not import or that raised, an unreachable CARLA server), with the list on stderr.

    Examples: stag-sim eval --agent pure_pursuit --scenarios scenarios/ --out runs/pp;
    stag-sim eval --driver localhost:50051 --scenarios lane_follow (a planner served over gRPC);
    stag-sim eval --suite safety --agent pure_pursuit --variations 100 --out runs/safety (results.json,
    variations.csv and a summary: mean score 0-5 and collision rate per family, with 95 % intervals)
    """
    from stag_sim.agents.egodriver import driver_spec
    from stag_sim.app.evaluate import evaluate
    from stag_sim.cli_args import check_host_port
    from stag_sim.app.reports import format_table, mean_scores
    from stag_sim.scenario import find_scenarios

    if (agent is None) == (driver is None):
        raise ValidationError("eval: give exactly one of --agent NAME and --driver HOST:PORT")
    if driver is not None:
        check_host_port(driver, "--driver")
        if not driver_timeout > 0:
            raise ValidationError(f"--driver-timeout: must be > 0 s, got {driver_timeout}")
        agent = driver_spec(driver, driver_timeout)
    if carla is not None:
        check_host_port(carla, "--carla")
    overrides = _env_overrides(image_size, cameras, voxel_size, renderer, refiner_path)
    backend = "ray" if use_ray else backend
    if suite is not None:
        from stag_sim.app.safety_suite import run_from_cli

        run_from_cli(agent, out, scenarios + more_scenarios, variations=variations, families=families, scene=scene,
                     actor=actor, seed=suite_seed, workers=workers, backend=backend, seeds=seeds, video=video,
                     carla=carla, env_overrides=overrides, echo=click.echo)
        return
    if not scenarios + more_scenarios:
        raise ValidationError("eval: give --scenarios FILE|DIR|NAME (or --suite safety)")
    for name, value in (("--variations", variations), ("--families", families), ("--scene", scene),
                        ("--actor", actor), ("--suite-seed", suite_seed)):
        if value is not None:
            raise ValidationError(f"{name}: only with --suite safety (got {value!r} without it)")
    rows = evaluate(find_scenarios(scenarios + more_scenarios), agent, out, workers=workers, backend=backend,
                    video=video, env_overrides=overrides, carla=carla, carla_timeout=carla_timeout, seeds=seeds)
    click.echo(format_table(rows))
    means = mean_scores(rows)
    click.echo("mean: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    click.echo(f"results: {out / 'results.csv'}, {out / 'results.json'}, {out / 'report.html'}; "
               f"run records: {out / 'runs'}/<scenario>/")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:  # exit 0 only when every scenario ran, whatever the scores
        for r in failed:
            click.echo(f"FAILED {r['scenario']}: {r['reason']}", err=True)
        click.echo(f"error: {len(failed)} of {len(rows)} scenario(s) could not run", err=True)
        sys.exit(1)


@click.command("replay")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the replayed run [default: RUN_DIR/replay].")
@click.option("--video/--no-video", default=False, show_default=True, help="Re-render a video of the replay.")
@click.option("--camera-offset", default=None, help="Shift the camera rig by X,Y,Z [m] in the ego frame (y left).")
@_render_options
@one_line_errors
def replay_cmd(run_dir: Path, out: Path | None, video: bool, camera_offset: str | None, image_size: str | None,
               cameras: str | None, voxel_size: float | None, renderer: str | None, refiner_path: str | None) -> None:
    """Re-run a recorded episode with its recorded actions; check it is bit-identical, or re-render it."""
    from stag_sim.app.replay import replay_run

    offset = None
    if camera_offset:
        try:
            offset = tuple(float(v) for v in camera_offset.split(","))
        except ValueError:
            offset = ()
        if len(offset) != 3 or not all(map(math.isfinite, offset)):
            raise ValidationError(f"--camera-offset: expected X,Y,Z in metres such as 0,1.5,0, got {camera_offset!r}")
    out = out or run_dir / "replay"
    res = replay_run(run_dir, out, video=video, camera_offset=offset,
                     env_overrides=_env_overrides(image_size, cameras, voxel_size, renderer, refiner_path))
    if res["rerendered"]:
        click.echo(f"re-rendered with other cameras/renderer: driving and metrics identical: {res['metrics_identical']}")
    elif res["identical"]:
        click.echo(f"bit-identical: {res['result']['steps']} steps, same observation hashes and metrics")
    else:
        click.echo(f"NOT identical: observations {'same' if res['obs_identical'] else 'differ'} "
                   f"(first divergent step {res['first_divergent_step']}), metrics "
                   f"{'same' if res['metrics_identical'] else 'differ'}", err=True)
    click.echo(f"replay: {out}" + (f" (video {out / 'video.mp4'})" if video else ""))
    if not (res["identical"] or (res["rerendered"] and res["metrics_identical"])):
        raise SystemExit(1)


@click.command("export")
@click.option("--scenarios", "scenarios", multiple=True, required=True,
              help="Scenario file, directory of *.yaml, or shipped scenario name (repeatable; more may follow).")
@click.argument("more_scenarios", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--agent", default="log_replay", show_default=True, help="Who drives (the expert's actions are always stored).")
@click.option("--episodes", default=1, show_default=True, help="Episodes per scenario (seeds scenario.seed + i).")
@_render_options
@one_line_errors
def export_cmd(scenarios: tuple[str, ...], more_scenarios: tuple[str, ...], out: Path, agent: str, episodes: int, image_size: str | None,
               cameras: str | None, voxel_size: float | None, renderer: str | None, refiner_path: str | None) -> None:
    """Write (obs, action, reward, next_obs, done) episodes as .npz for offline RL and imitation learning."""
    from stag_sim.app.export import export_episodes
    from stag_sim.scenario import find_scenarios

    path = export_episodes(find_scenarios(scenarios + more_scenarios), out, agent, episodes=episodes,
                           env_overrides=_env_overrides(image_size, cameras, voxel_size, renderer, refiner_path))
    index = json.loads((path / "index.json").read_text())
    steps = sum(e["steps"] for e in index["episodes"])
    click.echo(f"wrote {len(index['episodes'])} episodes ({steps} steps) to {path} (index.json describes the arrays)")


def _cache_epilog() -> str:
    from stag_sim.paths import user_cache_dir

    return f"Cache directory on this machine: {user_cache_dir()}"


@click.command("demo", epilog=_cache_epilog())
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("stag-runs"), show_default=True,
              help="Directory for the demo's outputs.")
@click.option("--scenario", default="recover_lateral_offset", show_default=True,
              help="Scenario file or shipped scenario name.")
@click.option("--agent", default="pure_pursuit", show_default=True,
              help="log_replay | pure_pursuit | constant_velocity | random | pkg.module:Class")
@one_line_errors
def demo(out: Path, scenario: str, agent: str) -> None:
    """Closed loop on the embedded synthetic town: a route follower starts 1.5 m off the logged lane and drives
    among IDM traffic while StagDrive renders its six cameras; writes a video and a metrics table.

    No download: the town is generated on first use (a few minutes on two cores) and cached, with its 4D point
    cloud, under the user cache directory: $STAG_SIM_CACHE, else $XDG_CACHE_HOME/stag_sim, else ~/.cache/stag_sim
    (the town in its scenes/ folder). Later runs start in seconds.
    """
    from stag_sim.app.demo import run_demo

    run_demo(out, scenario, agent, echo=click.echo)


@click.command("serve")
@click.option("--agent", "agent", required=True,
              help="The StagDrive agent to serve: pure_pursuit | constant_velocity | random | pkg.module:Class")
@click.option("--port", default=50051, show_default=True, help="TCP port (0: any free port, printed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--action-mode", type=click.Choice(["control", "trajectory"]), default="control", show_default=True,
              help="The action space the agent acts in (its actions become the plan sent back).")
@click.option("--mode", type=click.Choice(["carla", "alpasim"]), default="carla", show_default=True,
              help="The runtime on the other end: carla (carla-driver-interface, StagDrive) or alpasim (upstream).")
@one_line_errors
def serve_cmd(agent: str, port: int, host: str, action_mode: str, mode: str) -> None:
    """Serve a StagDrive agent as an egodriver policy (AlpaSim's egodriver gRPC contract) until Ctrl-C / SIGTERM.

    Any egodriver runtime drives it: AlpaSim, autoware_carla_scenario with CARLA, carla-driver-interface's FakeLoop,
    or StagDrive (stag-sim eval --driver HOST:PORT). Needs pip install 'stag-sim[driver]'.
    """
    from stag_sim.app.serve import serve

    serve(agent, port=port, host=host, action_mode=action_mode, mode=mode,
          ready=lambda p: click.echo(f"serving agent {agent!r} ({action_mode}) as an egodriver on {host}:{p} "
                                     f"(Ctrl-C to stop)"))
