"""Click commands of the point renderer: ``render`` (Stag's three demos) and ``fidelity`` (report vs the oracle).

Registered on the ``stag-sim`` group by :mod:`stag_sim.cli` (``main.add_command(render)``, ...). Like every
``stag-sim`` command, a :class:`~stag_sim.errors.StagSimError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from stag_sim.cli_errors import one_line_errors

_VOXEL_HELP = "Voxel size of the 4D scene [m] (built once, cached beside the scene)."


def _parse_shifts(text: str) -> tuple[float, ...]:
    try:
        shifts = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated metres like 0,0.5,1, got {text!r}") from None
    if not shifts:
        raise click.BadParameter("give at least one shift")
    return shifts


@click.command("render")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["freeze-time", "freeze-view", "multi-view"]), default="multi-view",
              show_default=True, help="freeze-time: fixed time, rig sweeps; freeze-view: fixed rig, time runs; "
              "multi-view: the logged drive, six views.")
@click.option("--time", "time_s", default=0.0, show_default=True, help="Frozen time [s] after the first frame.")
@click.option("--shift", "shift_m", default=2.0, show_default=True, help="Sweep amplitude for freeze-time [m].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Video to write (.mp4).")
@click.option("--voxel", default=0.05, show_default=True, help=_VOXEL_HELP)
@click.option("--fps", default=10.0, show_default=True, help="Video frame rate [Hz].")
@one_line_errors
def render(scene: Path, mode: str, time_s: float, shift_m: float, out: Path, voxel: float, fps: float) -> None:
    """Render a scene cache through its 4D point cloud: Stag-1's freeze-time, freeze-view and multi-view demos."""
    from stag_sim.cache import load_scene_cache
    from stag_sim.render.demos import write_demo
    from stag_sim.render.renderer import PointRenderer
    from stag_sim.scene4d import Scene4DConfig, load_scene4d

    log = load_scene_cache(scene)
    scene4d = load_scene4d(scene, Scene4DConfig(voxel_size=voxel), progress=True, log=log)
    path = write_demo(log, PointRenderer(scene4d), mode, out, time_s=time_s, shift_m=shift_m, fps=fps, progress=True)
    click.echo(f"wrote {path}")


@click.command("fidelity")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: ./fidelity-<scene name>].")
@click.option("--every", default=10, show_default=True, help="Hold out one frame in this many.")
@click.option("--shifts", default="0,0.5,1,2,3", show_default=True, help="Lateral rig shifts [m], comma-separated.")
@click.option("--voxel", default=0.05, show_default=True, help=_VOXEL_HELP)
@one_line_errors
def fidelity(scene: Path, out: Path | None, every: int, shifts: str, voxel: float) -> None:
    """Score held-out, laterally shifted renders of a synthetic scene against its oracle (PSNR, SSIM, holes)."""
    from stag_sim.cache import load_scene_cache
    from stag_sim.render.fidelity import fidelity_report, format_table, synthetic_oracle, write_report
    from stag_sim.scene4d import Scene4DConfig

    shift_list = _parse_shifts(shifts)
    log = load_scene_cache(scene)
    oracle = synthetic_oracle(log)
    rows = fidelity_report(log, oracle, shift_list, holdout_every=every, config=Scene4DConfig(voxel_size=voxel),
                           scene_dir=scene, progress=True)
    click.echo(format_table(rows))
    results, plot = write_report(rows, out or Path(f"fidelity-{log.name}"), log.name,
                                 {"holdout_every": every, "voxel_size": voxel})
    click.echo(f"wrote {results} and {plot}")
