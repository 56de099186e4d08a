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


def _parse_frames(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated frame indices like 1,5, got {text!r}") from None


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH like 304x484, got {text!r}") from None
    if h < 8 or w < 8:
        raise click.BadParameter(f"expected at least 8x8 px, got {text!r}")
    return h, w


@click.command("fidelity")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory [default: ./fidelity-<scene name>].")
@click.option("--hold-out-frames", "frames", default=None, help="Frames to leave out and render, e.g. 1,5.")
@click.option("--every", default=None, type=int, help="Hold out one frame in this many (the middle of each block).")
@click.option("--hold-out-camera", "camera", default=None, help="Leave this camera out of the build and render it "
              "(the novel-view test on overlapping rigs).")
@click.option("--shifts", default="0", show_default=True, help="Lateral rig shifts [m], comma-separated. A real "
              "log is scored at 0 only; other shifts are rendered for the figure.")
@click.option("--image-size", "image_size", default=None, help="Render size HEIGHTxWIDTH [default: the rig's, at "
              "most 640 px wide].")
@click.option("--voxel", default=0.02, show_default=True, help=_VOXEL_HELP)
@click.option("--working-width", default=None, type=int, help="Images wider than this are downscaled before depth "
              "completion and fusion [px; default: the render width of --image-size (the logged images are then "
              "drawn at the scale they were kept at), else 640].")
@one_line_errors
def fidelity(scene: Path, out: Path | None, frames: str | None, every: int | None, camera: str | None, shifts: str,
             image_size: str | None, voxel: float, working_width: int | None) -> None:
    """Score held-out views of any scene cache: PSNR, SSIM and coverage against the real frames (the synthetic
    town: its oracle), beside a baseline: the nearest real frame of the same camera, or with --hold-out-camera the
    nearest other camera's image at the same frame. Coverage counts the pixels points reach; the far field (sky,
    beyond the depth's reach) is reported apart."""
    import json
    from dataclasses import asdict

    from stag_sim.cache import load_scene_cache
    from stag_sim.fsutil import atomic_open
    from stag_sim.render.fidelity import (
        FidelityRow, fidelity_views, format_table, held_out_frames, plot_rows, summarise, synthetic_oracle, views_figure,
    )
    from stag_sim.scene4d import Scene4DConfig
    from stag_sim.viz import write_png

    shift_list = _parse_shifts(shifts)
    size = _parse_size(image_size)
    hold = _parse_frames(frames)
    log = load_scene_cache(scene)
    if every is not None:
        if hold:
            raise click.BadParameter("give --hold-out-frames or --every, not both")
        hold = tuple(held_out_frames(log.num_frames, every))
        if not hold:
            raise click.BadParameter(f"{log.num_frames} frames is too short to hold out one in {every}")
    oracle = synthetic_oracle(log) if log.source == "synthetic" else None
    working_width = working_width or (size[1] if size is not None else 640)
    cfg = Scene4DConfig(voxel_size=voxel, max_image_width=working_width)
    rows, images = fidelity_views(log, hold, camera, shift_list, size, oracle, cfg, scene_dir=scene, progress=True,
                                  keep_images=len(log.rig) * len(shift_list))
    mean = summarise(rows)
    scored = [FidelityRow(m["shift_m"], m["psnr"], m["ssim"], m["hole_fraction"], m["num_scored"]) for m in mean
              if m["psnr"] is not None]
    click.echo(format_table(scored) if scored else "no view has ground truth (a real log is scored at shift 0 only)")
    for m in mean:
        what = "nearest other camera" if camera else "nearest real frame"
        b = "" if m["baseline_psnr"] is None else f"  {what} {m['baseline_psnr']:.2f} dB / {m['baseline_ssim']:.3f}"
        click.echo(f"shift {m['shift_m']:g} m: coverage {m['coverage']:.3f} (points), far field {m['far_field']:.3f}{b}")
    out = out or Path(f"fidelity-{log.name}")
    out.mkdir(parents=True, exist_ok=True)
    data = {"scene": log.name, "source": log.source, "ground_truth": "oracle" if oracle is not None else "logged images",
            "hold_out_frames": list(hold), "hold_out_camera": camera, "voxel_size": voxel,
            "working_width": working_width, "rows": [asdict(r) for r in rows], "mean": mean}
    with atomic_open(out / "results.json") as f:
        json.dump(data, f, indent=1)
    if scored:
        write_png(out / "fidelity.png", plot_rows(scored, log.name))
    write_png(out / "views.png", views_figure(images))
    click.echo(f"wrote {out / 'results.json'}, {out / 'views.png'}" + (f", {out / 'fidelity.png'}" if scored else ""))
