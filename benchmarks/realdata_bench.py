"""Real-log figures: the 4D scene of the DGP test scene ``scene_02`` (6 surround cameras, 3 frames) against its
held-out frame.

Frame 1 is left out of the build (frames 0 and 2 remain), the six cameras of frame 1 are rendered at 304 x 484 and
compared with the real images. Printed, for voxel sizes 0.02 m and 0.05 m:

* build time [s] and points of the 4D scene (LiDAR completed to dense depth, far-field map, ego body);
* per camera and the mean: PSNR [dB], SSIM, coverage (pixels drawn from the model: points, far field, ego body)
  and hole fraction (pixels no point reached);
* the nearest-real-frame baseline: the image of the same camera at the nearest frame used in the build, scored
  against the held-out image the same way;
* coverage of the same views with the rig shifted 1 m and 3 m to the left (no ground truth there);
* the same held-out frame with z-buffer colours (``RenderConfig(source_colour=False)``), and held-out camera
  CAMERA_01 against the nearest other camera's image;
* driving the log: ``gym.make("StagDrive-v0", scene=<cache>)`` at its defaults, the reset observation and every
  log-replay step against the logged frame, per camera, the episode's rewards and end, env steps/s;
* fusion against frames: held-out frame 1 from all other frames vs from the nearest frame alone (both DGP scenes),
  and on a synthetic town drive treated as a real log (LiDAR-completed depth) whose poses carry 5 cm / 0.3 deg of
  noise: all frames vs the nearest, before and after ``refine_poses`` (LiDAR ICP);
* a lens: scene_02 re-imaged through a barrel lens (k1 -0.15, k2 0.03, p1 5e-4, p2 -5e-4), the held-out frame
  scored through the lens, and with the lens ignored;
* the map-less log: the drivable area ``World.build`` makes from the LiDAR ground, and the logged footprints in it.

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


def drive_rows(log, tmp: Path) -> None:
    """The env on the real log at its defaults: reset and log replay against the logged frames, and its speed."""
    import gymnasium as gym

    import stag_sim  # noqa: F401  (registers the env)
    from stag_sim.render.fidelity import _resize, psnr, ssim

    scene_dir = tmp / "scene_02-env"
    write_scene_cache(log, scene_dir)
    t0 = time.perf_counter()
    env = gym.make("StagDrive-v0", scene=str(scene_dir)).unwrapped
    obs, info = env.reset(seed=0)
    t_make = time.perf_counter() - t0
    h, w = env.config.image_size
    ts = (np.asarray(log.timestamps_us) - log.timestamps_us[0]) * 1e-6

    def score(obs, f):
        truth = {c: _resize(log.images[f, log.rig.index(c)], w, h) for c in env.camera_names}
        return [psnr(obs[c], truth[c]) for c in env.camera_names], [ssim(obs[c], truth[c]) for c in env.camera_names]

    print(f"\n== env on the real log, defaults: image_size {w}x{h} (auto), voxel {env.config.voxel_size} m; make + "
          f"build + reset {t_make:.1f} s; ego origin z {info['ego_pose'][2, 3]:.2f} m (logged "
          f"{log.ego_poses[0][2, 3]:.2f})")
    print(f"   {'':<14} " + " ".join(f"{c:>9}" for c in env.camera_names) + f" {'mean':>7} {'SSIM':>6}")
    p, s = score(obs, 0)
    print(f"   {'reset (f 0)':<14} " + " ".join(f"{x:9.2f}" for x in p) + f" {np.mean(p):7.2f} {np.mean(s):6.3f}")
    total, steps, t0 = 0.0, 0, time.perf_counter()
    while True:
        obs, r, term, trunc, info = env.step(info["expert_action"])
        total, steps = total + r, steps + 1
        f = int(np.argmin(np.abs(ts - info["time_s"])))
        p, s = score(obs, f)
        print(f"   {f'step {steps} (f {f})':<14} " + " ".join(f"{x:9.2f}" for x in p) + f" {np.mean(p):7.2f} "
              f"{np.mean(s):6.3f}  reward {r:.3f}")
        if term or trunc:
            break
    dt = (time.perf_counter() - t0) / steps
    print(f"   episode: {steps} steps, reward {total:.3f}, ended {info['termination_reason']} "
          f"({'terminated' if term else 'truncated'}); {1 / dt:.1f} steps/s (6 cameras, scoring excluded: "
          f"see env_bench.py for the timing alone)")


LENS = (-0.15, 0.03, 5e-4, -5e-4, 0.0)  # OpenCV k1, k2, p1, p2, k3: a moderate barrel lens


def lens_rows(log) -> None:
    """The real log re-imaged through :data:`LENS` (20 % longer focal length): built and scored through the lens,
    with the lens ignored, and re-imaged by a pinhole of the same focal length (the reference)."""
    from stag_sim.camera import Camera, CameraRig
    from stag_sim.distortion import distort_image
    from stag_sim.scene_log import FrameStore

    # focal lengths 20 % longer, so every ray the lens sees is inside the logged pinhole image (no black rim)
    def rig_of(distortion):
        return CameraRig(tuple(Camera(c.name, dataclasses.replace(c.intrinsics, fx=c.intrinsics.fx * 1.2,
                                                                  fy=c.intrinsics.fy * 1.2, distortion=distortion),
                                      c.T_ego_from_camera, c.ego_mask) for c in log.rig))

    def relogged(rig):
        frames = [[distort_image(log.images[t, c], log.rig[c].intrinsics, rig[c].intrinsics) for c in range(len(rig))]
                  for t in range(log.num_frames)]
        return dataclasses.replace(log, rig=rig, images=FrameStore.from_arrays(frames, "jpeg"))

    lensed, pinhole = relogged(rig_of(LENS)), relogged(rig_of(()))
    ignored = dataclasses.replace(lensed, rig=pinhole.rig)
    cfg = Scene4DConfig(voxel_size=0.02, max_image_width=SIZE[1])
    print(f"\n== a lens: scene_02 re-imaged through k1, k2, p1, p2, k3 = {LENS}; frame 1 held out")
    for label, lg in (("through the lens", lensed), ("lens ignored", ignored), ("the same, no lens", pinhole)):
        m = summarise(fidelity_views(lg, [HOLD_OUT], image_size=SIZE, config=cfg)[0])[0]
        print(f"   {label:<17} PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, coverage {m['coverage']:.3f} "
              f"(nearest frame {m['baseline_psnr']:.2f})")


def mapless_rows(realdata: Path) -> None:
    """The drivable area of the map-less DGP log from its LiDAR ground."""
    from stag_sim.dynamics import EgoState
    from stag_sim.geometry import yaw_of
    from stag_sim.world import World

    log = ingest_dgp(realdata / "dgp_test_scene" / "scene_02")
    t0 = time.perf_counter()
    world = World.build(log)
    area = world.drivable_area
    inside = sum(bool(area.buffer(1e-6).contains(world.ego_box(EgoState(T[0, 3], T[1, 3], float(yaw_of(T)), 0.0))))
                 for T in log.ego_poses)
    minx, miny, maxx, maxy = area.bounds
    print(f"\n== map-less scene_02: drivable area from the {world.drivable_source} {area.area:.0f} m^2 "
          f"({maxx - minx:.0f} x {maxy - miny:.0f} m) in {time.perf_counter() - t0:.2f} s (World.build); logged ego "
          f"footprints inside: {inside} of {log.num_frames}")


def frames_rows(realdata: Path) -> None:
    """All frames vs the nearest frame alone (DGP scenes; a noisy town), and pose refinement on the noisy town."""
    from stag_sim.pose_refine import refine_poses, with_pose_noise
    from stag_sim.synth import generate_scene

    def held(lg, build, target, size, cfg):
        hold = [t for t in range(lg.num_frames) if t not in build]
        return summarise([r for r in fidelity_views(lg, hold, image_size=size, config=cfg)[0] if r.frame == target])[0]

    print("\n== fusion against frames: the held-out frame from all other frames vs the nearest frame alone")
    cfg = Scene4DConfig(voxel_size=0.02, max_image_width=SIZE[1])
    for name in ("scene_02", "scene_01"):
        lg = ingest_dgp(realdata / "dgp_test_scene" / name)
        a, n = held(lg, [0, 2], 1, SIZE, cfg), held(lg, [0], 1, SIZE, cfg)
        print(f"   DGP {name} frame 1: all frames {a['psnr']:.2f} dB / {a['ssim']:.3f}, frame 0 alone "
              f"{n['psnr']:.2f} / {n['ssim']:.3f} ({a['psnr'] - n['psnr']:+.2f} dB)")
    town = generate_scene(seed=3, duration_s=1.2, width=320, height=180)
    T, mid = town.num_frames, town.num_frames // 2
    tcfg = Scene4DConfig(voxel_size=0.05, max_image_width=320, depth_source="lidar")
    noisy = with_pose_noise(town, 0.05, 0.3)
    t0 = time.perf_counter()
    refined, report = refine_poses(noisy)
    t_ref = time.perf_counter() - t0
    for label, lg in (("exact poses", town), ("5 cm / 0.3 deg noise", noisy), ("noise, refine_poses", refined)):
        others = [t for t in range(T) if t != mid]
        a, n = held(lg, others, mid, (180, 320), tcfg), held(lg, [mid - 1], mid, (180, 320), tcfg)
        print(f"   town s3 ({T} frames, {label}) frame {mid}: all frames {a['psnr']:.2f} dB / {a['ssim']:.3f}, "
              f"nearest alone {n['psnr']:.2f} / {n['ssim']:.3f} ({a['psnr'] - n['psnr']:+.2f} dB)")
    print(f"   refine_poses on the noisy town ({t_ref:.1f} s): {report.summary()}")


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
        # what colour per source adds: the fused cloud's z-buffer colours
        results["0.02 z-buffer colour"] = run(log, 0.02, Path(tmp), None, RenderConfig(source_colour=False),
                                              ", source_colour=False")
        rows, _ = fidelity_views(log, hold_out_camera="CAMERA_01", image_size=SIZE,
                                 config=Scene4DConfig(voxel_size=0.02, max_image_width=SIZE[1]))
        m = summarise(rows)[0]
        print(f"\n== held-out camera CAMERA_01 (every frame): PSNR {m['psnr']:.2f}, SSIM {m['ssim']:.3f}, coverage "
              f"{m['coverage']:.3f} (nearest other camera, {rows[0].baseline}: {m['baseline_psnr']:.2f} / "
              f"{m['baseline_ssim']:.3f})")
        other = args.realdata / "dgp_test_scene" / "scene_01"
        if other.is_dir():  # the 3-camera rig, the same settings, frame 1 held out
            log01 = ingest_dgp(other)
            rows, _ = fidelity_views(log01, [HOLD_OUT], image_size=SIZE,
                                     config=Scene4DConfig(voxel_size=0.02, max_image_width=SIZE[1]))
            m = summarise(rows)[0]
            results["scene_01 0.02"] = m
            print(f"\n== scene_01 ({len(log01.rig)} cameras), voxel 0.02 m: PSNR {m['psnr']:.2f}, SSIM {m['ssim']:.3f}, "
                  f"coverage {m['coverage']:.3f} (nearest frame {m['baseline_psnr']:.2f} / {m['baseline_ssim']:.3f})")
        drive_rows(log, Path(tmp))
        frames_rows(args.realdata)
        lens_rows(log)
        mapless_rows(args.realdata)
    print("\n== summary (frame 1 held out, shift 0; scene_02 unless named)")
    print(f"   {'voxel [m]':>16} {'PSNR':>6} {'SSIM':>6} {'cover':>6} | {'base PSNR':>9} {'base SSIM':>9}")
    for name, m in results.items():
        print(f"   {name:>16} {m['psnr']:6.2f} {m['ssim']:6.3f} {m['coverage']:6.3f} | "
              f"{m['baseline_psnr']:9.2f} {m['baseline_ssim']:9.3f}")


if __name__ == "__main__":
    main()
