"""Click commands of the point renderer: ``render`` (Stag's three demos) and ``fidelity`` (report vs the oracle).

Registered on the ``stag-sim`` group by :mod:`stag_sim.cli` (``main.add_command(render)``, ...). Like every
``stag-sim`` command, a :class:`~stag_sim.errors.StagSimError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from stag_sim.cli_errors import one_line_errors

_VOXEL_HELP = "Voxel size of the 4D scene [m] (built once, cached beside the scene)"


@click.command("render")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["freeze-time", "freeze-view", "multi-view"]), default="multi-view",
              show_default=True, help="freeze-time: fixed time, rig sweeps; freeze-view: fixed rig, time runs; "
              "multi-view: the logged drive, six views.")
@click.option("--time", "time_s", default=0.0, show_default=True, help="Frozen time [s] after the first frame.")
@click.option("--shift", "shift_m", default=2.0, show_default=True, help="Sweep amplitude for freeze-time [m].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Video to write (.mp4).")
@click.option("--voxel-size", "--voxel", "voxel", type=float, default=None,
              help=_VOXEL_HELP + "; default: as the env, 0.2 for a rendered scene, 0.05 for a real log.")
@click.option("--fps", default=10.0, show_default=True, help="Video frame rate [Hz].")
@one_line_errors
def render(scene: Path, mode: str, time_s: float, shift_m: float, out: Path, voxel: float | None, fps: float) -> None:
    """Render a scene cache through its 4D point cloud: Stag-1's freeze-time, freeze-view and multi-view demos."""
    import math

    from stag_sim.cache import load_scene_cache
    from stag_sim.cli_args import check_time_in_log, require
    from stag_sim.env_config import RENDERED_SOURCES, VOXEL_BY_KIND
    from stag_sim.fsutil import check_writable
    from stag_sim.render.demos import write_demo
    from stag_sim.render.renderer import PointRenderer
    from stag_sim.scene4d import Scene4DConfig, load_scene4d

    require(out.suffix.lower() == ".mp4", "--out", "a video file ending in .mp4", str(out))
    require(fps > 0 and math.isfinite(fps), "--fps", "a frame rate > 0 Hz", fps)
    require(voxel is None or voxel > 0, "--voxel-size", "a size > 0 m", voxel)
    require(math.isfinite(shift_m), "--shift", "a finite distance [m]", shift_m)
    check_writable(out, "--out", directory=False)
    log = load_scene_cache(scene)
    check_time_in_log(log, time_s)
    if voxel is None:
        voxel = VOXEL_BY_KIND["rendered" if log.source in RENDERED_SOURCES else "real"]
    scene4d = load_scene4d(scene, Scene4DConfig(voxel_size=voxel), progress=True, log=log)
    path = write_demo(log, PointRenderer(scene4d), mode, out, time_s=time_s, shift_m=shift_m, fps=fps, progress=True)
    click.echo(f"wrote {path}")


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
@click.option("--voxel-size", "--voxel", "voxel", default=0.02, show_default=True,
              help=_VOXEL_HELP + "; finer than the env's default: held-out views are scored pixel by pixel.")
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
    from stag_sim.cli_args import parse_floats, parse_image_size, parse_ints, require
    from stag_sim.errors import ValidationError
    from stag_sim.fsutil import atomic_open, check_writable
    from stag_sim.render.fidelity import (
        FidelityRow, fidelity_views, format_table, held_out_frames, plot_rows, summarise, synthetic_oracle, views_figure,
    )
    from stag_sim.scene4d import Scene4DConfig
    from stag_sim.viz import write_png

    shift_list = parse_floats(shifts, "--shifts")
    size = parse_image_size(image_size)
    require(voxel > 0, "--voxel-size", "a size > 0 m", voxel)
    require(every is None or every >= 1, "--every", "an integer >= 1", every)
    require(working_width is None or working_width >= 8, "--working-width", "an integer >= 8 px", working_width)
    if every is not None and frames:
        raise ValidationError("--hold-out-frames, --every: give one of them, not both")
    log = load_scene_cache(scene)
    hold = parse_ints(frames, "--hold-out-frames")
    if every is not None:
        hold = tuple(held_out_frames(log.num_frames, every))
        if not hold:
            raise ValidationError(f"--every: {log.num_frames} frames is too short to hold out one in {every}")
    out = check_writable(out or Path(f"fidelity-{log.name}"), "--out")
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
