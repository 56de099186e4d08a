"""Real-log figures: the 4D scene of the DGP test scene ``scene_02`` (6 surround cameras, 3 frames) against its
held-out frame.

Frame 1 is left out of the build (frames 0 and 2 remain), the six cameras of frame 1 are rendered at 304 x 484 and
compared with the real images. Printed, for voxel sizes 0.02 m and 0.05 m:

* build time [s] and points of the 4D scene (LiDAR completed to dense depth, far-field map, ego body);
* per camera and the mean: PSNR [dB], SSIM, coverage (pixels drawn from the model: points, far field, ego body)
  and hole fraction (pixels no point reached);
* the nearest-real-frame baseline: the image of the same camera at the nearest frame used in the build, scored
  against the held-out image the same way;
* coverage of the same views with the rig shifted 1 m and 3 m to the left (no ground truth there).

Figures (written to ``--out``, default ``docs/img``), from the 0.02 m build:

* ``realdata_scene02.png``: for the 6 cameras at shift 0, real (held out) | render | nearest real frame;
* ``realdata_scene02_shifts.png``: CAMERA_01 and CAMERA_09 rendered at 0, 1 and 3 m lateral shift.

    python benchmarks/realdata_bench.py                           # data in ../shared/realdata beside the repo
    python benchmarks/realdata_bench.py --realdata /data/realdata --out /tmp/figs

Timings are of one run on this machine (the first build also pays the numba compile of the renderer, see the
warm-up line); no figure here is asserted, ``tests/test_realdata_scene.py`` holds the floors.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stag_sim.cache import write_scene_cache
from stag_sim.ingest.dgp import ingest_dgp
from stag_sim.render.fidelity import fidelity_views, summarise, views_figure
from stag_sim.scene4d import Scene4DConfig, build_scene4d, scene4d_cache_path
from stag_sim.viz import write_png

HOLD_OUT = 1
SIZE = (304, 484)  # (height, width) [px]
SHIFTS = (0.0, 1.0, 3.0)  # [m] lateral, to the left
SHIFT_CAMERAS = ("CAMERA_01", "CAMERA_09")
MAX_PNG_BYTES = 1_500_000


def default_realdata() -> Path:
    env = os.environ.get("STAG_SIM_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "realdata"


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def write_small_png(path: Path, rgb: np.ndarray, max_bytes: int = MAX_PNG_BYTES) -> tuple[Path, tuple[int, int]]:
    """Write ``rgb`` as PNG, downscaled by 0.85 per try until the file is under ``max_bytes``; returns the path
    and the (height, width) written."""
    import cv2

    img = rgb
    while True:
        write_png(path, img)
        if path.stat().st_size < max_bytes or img.shape[1] < 200:
            return path, img.shape[:2]
        h, w = img.shape[:2]
        img = cv2.resize(img, (int(w * 0.85), int(h * 0.85)), interpolation=cv2.INTER_AREA)


def shifts_figure(images, cameras=SHIFT_CAMERAS, shifts=SHIFTS, width: int = 484) -> np.ndarray:
    """One row per camera, one column per shift, of the renders in ``images`` (fidelity_views' kept images)."""
    import cv2

    by_title = {title: render for title, _, render, _ in images}
    rows = []
    for cam in cameras:
        tiles = []
        for s in shifts:
            title = f"{cam} frame {HOLD_OUT} shift {s:g} m"
            img = by_title[title]
            h = int(round(img.shape[0] * width / img.shape[1]))
            tile = np.ascontiguousarray(cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
                                        if img.shape[1] != width else img.copy())
            cv2.putText(tile, f"render: {title}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def run(log, voxel: float, tmp: Path, figures: Path | None, render_config=None, label: str = "") -> dict:
    cfg = Scene4DConfig(voxel_size=voxel, max_image_width=SIZE[1])
    built_cfg = dataclasses.replace(cfg, exclude_frames=(HOLD_OUT,))
    scene_dir = tmp / f"scene_02-{voxel:g}"
    if not scene_dir.exists():  # a second run at the same voxel size renders the same cached build
        write_scene_cache(log, scene_dir)
    t0 = time.perf_counter()
    scene = build_scene4d(log, built_cfg)
    t_build = time.perf_counter() - t0
    scene.save(scene4d_cache_path(scene_dir, built_cfg))  # fidelity_views renders this very build
    t0 = time.perf_counter()
    rows, images = fidelity_views(log, [HOLD_OUT], shifts=SHIFTS, image_size=SIZE, config=cfg, scene_dir=scene_dir,
                                  keep_images=len(SHIFTS) * len(log.rig), render_config=render_config)
    t_views = time.perf_counter() - t0

    print(f"\n== voxel {voxel:g} m{label}: build {t_build:.2f} s, {scene.num_points / 1e6:.3f} M points "
          f"({len(scene.static_points) / 1e6:.3f} M static, {len(scene.objects)} objects, "
          f"{sum(o.is_proxy for o in scene.objects)} proxies), "
          f"far-field map {0.0 if scene.env_map is None else scene.env_map.coverage:.3f} of its texels seen, "
          f"ego body in {', '.join(e.camera for e in scene.ego_layers) or 'no camera'}")
    print(f"   load + {len(rows)} renders + scoring: {t_views:.2f} s")
    print(f"   {'camera':<10} {'PSNR':>6} {'SSIM':>6} {'cover':>6} {'holes':>6} | {'base PSNR':>9} {'base SSIM':>9}"
          f" | {'cover 1 m':>9} {'cover 3 m':>9}")
    at = {(r.camera, r.shift_m): r for r in rows}
    for name in log.rig.names:
        r = at[(name, 0.0)]
        print(f"   {name:<10} {fmt(r.psnr, '6.2f')} {fmt(r.ssim, '6.3f')} {r.coverage:6.3f} {r.hole_fraction:6.3f} | "
              f"{fmt(r.baseline_psnr, '9.2f')} {fmt(r.baseline_ssim, '9.3f')} | "
              f"{at[(name, 1.0)].coverage:9.3f} {at[(name, 3.0)].coverage:9.3f}")
    means = {m["shift_m"]: m for m in summarise(rows)}
    m0 = means[0.0]
    print(f"   {'mean':<10} {m0['psnr']:6.2f} {m0['ssim']:6.3f} {m0['coverage']:6.3f} {m0['hole_fraction']:6.3f} | "
          f"{m0['baseline_psnr']:9.2f} {m0['baseline_ssim']:9.3f} | "
          f"{means[1.0]['coverage']:9.3f} {means[3.0]['coverage']:9.3f}")
    for s in SHIFTS[1:]:
        m = means[s]
        print(f"   shift {s:g} m: coverage {m['coverage']:.3f}, hole fraction {m['hole_fraction']:.3f} "
              f"({m['num_views']} views, no ground truth)")

    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        zero = [im for im in images if im[0].endswith("shift 0 m")]
        path, (h, w) = write_small_png(figures / "realdata_scene02.png", views_figure(zero))
        print(f"   wrote {path} ({w}x{h}, {path.stat().st_size / 1e6:.2f} MB)")
        path, (h, w) = write_small_png(figures / "realdata_scene02_shifts.png", shifts_figure(images))
        print(f"   wrote {path} ({w}x{h}, {path.stat().st_size / 1e6:.2f} MB)")
    return m0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--realdata", type=Path, default=default_realdata(),
                    help="the realdata folder holding dgp_test_scene/ (default: ../shared/realdata beside the repo, "
                         "or $STAG_SIM_REALDATA)")
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="where the figures go (default docs/img)")
    args = ap.parse_args()

    scene = args.realdata / "dgp_test_scene" / "scene_02"
    if not scene.is_dir():
        ap.error(f"{scene}: not found; give --realdata (the folder holding dgp_test_scene/)")
    print(f"machine: {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    log = ingest_dgp(scene)
    print(f"DGP {log.name}: {log.num_frames} frames, cameras {', '.join(log.rig.names)}, "
          f"{log.rig[0].intrinsics.width}x{log.rig[0].intrinsics.height} images; ingest {time.perf_counter() - t0:.2f} s")
    moved = np.linalg.norm(np.diff(log.ego_poses[:, :3, 3], axis=0), axis=1)
    print(f"ego travel between frames: {', '.join(f'{d:.2f}' for d in moved)} m; frame {HOLD_OUT} held out, "
          f"renders {SIZE[1]}x{SIZE[0]}")

    # warm-up: compiles the renderer's kernels (cached on disk afterwards) so the timings below exclude it
    t0 = time.perf_counter()
    from stag_sim.render.renderer import PointRenderer

    tiny = build_scene4d(log, Scene4DConfig(voxel_size=0.5, max_image_width=96, exclude_frames=(1, 2), ego_mask="none"))
    cam = log.rig[0]
    PointRenderer(tiny).render((log.camera_ego_poses[0, 0] @ cam.T_ego_from_camera)[None], [cam.intrinsics.scaled(48, 30)])
    print(f"warm-up (tiny build + render, includes any kernel compile): {time.perf_counter() - t0:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        from stag_sim.render.types import RenderConfig

        results = {}
        for voxel in (0.02, 0.05):
            results[f"{voxel:g}"] = run(log, voxel, Path(tmp), args.out if voxel == 0.02 else None)
        # the trade-off: the other cameras' layers fill what a camera's own layer leaves
        results["0.02 other fill"] = run(log, 0.02, Path(tmp), None, RenderConfig(other_layers_fill=True),
                                         ", other_layers_fill=True")
        other = args.realdata / "dgp_test_scene" / "scene_01"
        if other.is_dir():  # the 3-camera rig, the same settings, frame 1 held out
            log01 = ingest_dgp(other)
            rows, _ = fidelity_views(log01, [HOLD_OUT], image_size=SIZE,
                                     config=Scene4DConfig(voxel_size=0.02, max_image_width=SIZE[1]))
            m = summarise(rows)[0]
            results["scene_01 0.02"] = m
            print(f"\n== scene_01 ({len(log01.rig)} cameras), voxel 0.02 m: PSNR {m['psnr']:.2f}, SSIM {m['ssim']:.3f}, "
                  f"coverage {m['coverage']:.3f} (nearest frame {m['baseline_psnr']:.2f} / {m['baseline_ssim']:.3f})")
    print("\n== summary (frame 1 held out, shift 0; scene_02 unless named)")
    print(f"   {'voxel [m]':>16} {'PSNR':>6} {'SSIM':>6} {'cover':>6} | {'base PSNR':>9} {'base SSIM':>9}")
    for name, m in results.items():
        print(f"   {name:>16} {m['psnr']:6.2f} {m['ssim']:6.3f} {m['coverage']:6.3f} | "
              f"{m['baseline_psnr']:9.2f} {m['baseline_ssim']:9.3f}")


if __name__ == "__main__":
    main()
