"""The ``stag-sim`` command line.

Every command turns a :class:`~stag_sim.errors.StagSimError` into one line on stderr and exit status 1, so
bad input never ends in a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from stag_sim.app.cli import demo, eval_cmd, export_cmd, replay_cmd, serve_cmd
from stag_sim.cli_args import check_time_in_log, require
from stag_sim.cli_errors import one_line_errors
from stag_sim.errors import OutputError
from stag_sim.fsutil import check_writable
from stag_sim.render.cli import fidelity, render


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stag-sim")
def main() -> None:
    """StagDrive: closed-loop driving simulation on logged surround-view camera data."""


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scene cache directory to write.")
@click.option("--seed", default=0, show_default=True, help="Town and traffic seed (same seed, same bytes).")
@click.option("--duration", default=20.0, show_default=True, help="Drive length [s].")
@click.option("--width", default=400, show_default=True, help="Camera image width [px].")
@click.option("--height", default=224, show_default=True, help="Camera image height [px].")
@click.option("--workers", default=None, type=int, help="Render processes (default: up to 2). Output does not depend on it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing scene cache at --out.")
@one_line_errors
def synth(out: Path, seed: int, duration: float, width: int, height: int, workers: int | None, overwrite: bool) -> None:
    """Generate the synthetic town scene (no download) and write it as a scene cache."""
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists (add --overwrite to replace it)")
    require(seed >= 0, "--seed", "an integer >= 0", seed)
    require(duration > 0, "--duration", "a drive length > 0 s", duration)
    require(min(width, height) >= 8, "--width/--height", "an image size of at least 8x8 px", f"{width}x{height}")
    require(workers is None or workers >= 1, "--workers", "an integer >= 1", workers)
    check_writable(out, "--out")  # before minutes of rendering
    from stag_sim.cache import write_scene_cache
    from stag_sim.summary import dir_size_bytes
    from stag_sim.synth import generate_scene

    t0 = time.perf_counter()
    log = generate_scene(seed=seed, duration_s=duration, width=width, height=height, progress=True, workers=workers)
    t1 = time.perf_counter()
    write_scene_cache(log, out, overwrite=overwrite)
    t2 = time.perf_counter()
    click.echo(
        f"wrote {out}: {log.num_frames} frames x {len(log.rig)} cameras, {dir_size_bytes(out) / 2**20:.1f} MiB "
        f"(generated in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s)"
    )


@main.command()
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--time", "time_s", default=0.0, show_default=True, help="Contact sheet time [s] after the first frame.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a contact sheet of the six cameras at --time to this PNG [default: none].")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the cache files (sizes are still checked).")
@one_line_errors
def info(scene: Path, time_s: float, sheet: Path | None, no_verify: bool) -> None:
    """Summarise a scene cache; with --sheet, write a contact sheet of its cameras at --time."""
    import numpy as np

    from stag_sim.cache import load_scene_cache
    from stag_sim.summary import scene_summary
    from stag_sim.viz import contact_sheet, write_png

    if sheet is not None:
        require(sheet.suffix.lower() == ".png", "--sheet", "a file ending in .png", str(sheet))
        check_writable(sheet, "--sheet", directory=False)
    log = load_scene_cache(scene, verify=not no_verify)
    check_time_in_log(log, time_s)
    click.echo(scene_summary(log, scene))
    if sheet is None:
        return
    if log.layout_only:
        click.echo("contact sheet: none (the log has no camera images)")
        return
    t = log.frame_at(time_s)
    images = [log.images[t, c] if log.images.has(t, c) else None for c in range(len(log.rig))]
    h, w = next(i for i in images if i is not None).shape[:2]
    images = [np.zeros((h, w, 3), np.uint8) if i is None else i for i in images]
    rel = (log.timestamps_us[t] - log.timestamps_us[0]) * 1e-6
    write_png(sheet, contact_sheet(images, log.rig.names, azimuths=log.rig.azimuths,
                                   caption=f"{log.name}  t = {rel:.2f} s  (frame {t})"))
    click.echo(f"contact sheet: {sheet}")


@main.group()
def ingest() -> None:
    """Convert a logged drive from a dataset into a scene cache."""


@ingest.command("nuscenes")
@click.option("--dataroot", type=click.Path(path_type=Path), required=True, help="nuScenes root (holds samples/, sweeps/, maps/, <version>/).")
@click.option("--version", "version", default="v1.0-mini", show_default=True, help="Table version folder.")
@click.option("--scene", "scene_name", required=True, help="Scene name, e.g. scene-0061.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scene cache directory to write.")
@click.option("--sweeps", is_flag=True, help="~12 Hz frames on the CAM_FRONT clock; every 20 Hz LiDAR sweep merged into its frame, motion-compensated.")
@click.option("--overwrite", is_flag=True, help="Replace an existing scene cache at --out.")
@one_line_errors
def ingest_nuscenes_cmd(dataroot: Path, version: str, scene_name: str, out: Path, sweeps: bool, overwrite: bool) -> None:
    """Convert one nuScenes scene (needs the extra: pip install 'stag-sim[nuscenes]')."""
    from stag_sim.ingest.nuscenes import ingest_nuscenes_to_cache

    t0 = time.perf_counter()
    path = ingest_nuscenes_to_cache(dataroot, version, scene_name, out, overwrite=overwrite, use_sweeps=sweeps, progress=True)
    click.echo(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


@ingest.command("dgp")
@click.argument("scene_json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scene cache directory to write.")
@click.option("--cameras", default=None, help="Comma-separated camera names to keep [default: all, sorted by name].")
@click.option("--lidar", default=None, help="Point-cloud datum name [default: the only one, or LIDAR].")
@click.option("--overwrite", is_flag=True, help="Replace an existing scene cache at --out.")
@one_line_errors
def ingest_dgp_cmd(scene_json: Path, out: Path, cameras: str | None, lidar: str | None, overwrite: bool) -> None:
    """Convert one TRI DGP scene (the DDAD format): SCENE_JSON is scene_<sha>.json or the folder holding it."""
    import numpy as np

    from stag_sim.cache import write_scene_cache
    from stag_sim.ingest.dgp import check_out_dir, ingest_dgp

    t0 = time.perf_counter()
    check_out_dir(out, overwrite)
    check_writable(out, "--out")
    log = ingest_dgp(scene_json, progress=True, cameras=cameras, lidar=lidar)
    path = write_scene_cache(log, out, overwrite=overwrite)
    points = float(np.mean(np.diff(log.lidar.offsets))) if log.lidar is not None and len(log.lidar) else 0.0
    click.echo(f"wrote {path}: {log.num_frames} frames x {len(log.rig)} cameras ({', '.join(log.rig.names)}), "
               f"{points / 1e3:.0f}k LiDAR points/frame, {len(log.objects)} objects in {time.perf_counter() - t0:.1f} s")


@main.command("refine-poses")
@click.argument("scene", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scene cache directory to write.")
@click.option("--window", default=2, show_default=True, help="Neighbouring sweeps on each side a sweep is aligned to.")
@click.option("--overwrite", is_flag=True, help="Replace an existing scene cache at --out.")
@one_line_errors
def refine_poses_cmd(scene: Path, out: Path, window: int, overwrite: bool) -> None:
    """Align the log's LiDAR sweeps to each other (point-to-plane ICP, moving boxes cut out) and write a copy of the
    scene cache with every pose of each instant corrected alike (ego, cameras, tracked boxes)."""
    from stag_sim.cache import load_scene_cache, write_scene_cache
    from stag_sim.ingest.dgp import check_out_dir
    from stag_sim.pose_refine import refine_poses

    t0 = time.perf_counter()
    require(window >= 1, "--window", "an integer >= 1", window)
    check_out_dir(out, overwrite)
    check_writable(out, "--out")
    log, report = refine_poses(load_scene_cache(scene), window=window, progress=True)
    path = write_scene_cache(log, out, overwrite=overwrite)
    click.echo(f"{report.summary()}\nwrote {path} in {time.perf_counter() - t0:.1f} s")


main.add_command(render)
main.add_command(fidelity)
main.add_command(demo)
main.add_command(eval_cmd)
main.add_command(replay_cmd)
main.add_command(export_cmd)
main.add_command(serve_cmd)
from stag_sim.refiner.cli import refiner, train_refiner_cmd  # noqa: E402  (light: click only)
main.add_command(refiner); main.add_command(train_refiner_cmd)  # noqa: E702

if __name__ == "__main__":
    main()
