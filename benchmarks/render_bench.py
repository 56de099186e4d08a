"""Point-renderer figures: env-step-equivalent renders (6 cameras, 224x400) per second on a ~1M-point scene.

Prints, from one run on one machine:

* steps/s of the renderer (frustum culling + level of detail, hole filling on and off), median of ``--repeat``
  timed runs of ``--steps`` consecutive ego poses;
* steps/s of the brute-force reference in the same run: the same backend and kernel with every point sent to every
  camera (no culling, no level of detail), and the ratio;
* with ``--compare-numpy``, the numpy backend (the vectorised fallback) on the same poses, and its brute force;
* scaling with the number of points (250k, 1M, 4M: the main cloud randomly subsampled, or upsampled by jittered
  copies);
* the torch CUDA path when a GPU is present (skipped with a message otherwise).

The scene is the synthetic town's static cloud (built at the voxel size that gives the point count) when
``stag_sim.synth`` is available, else a procedural street (ground, two facades, trees) of the same size.

    python benchmarks/render_bench.py                  # default: synthetic town seed 0, or the procedural street
    python benchmarks/render_bench.py --procedural     # always the procedural street
    python benchmarks/render_bench.py --backend numpy  # the numpy fallback instead of the default (numba)

The numba backend compiles its kernels on first use (~9 s, cached on disk afterwards); the warm-up render of
each timed run pays that, not the timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from stag_sim.camera import nuscenes_like_rig
from stag_sim.geometry import pose_xy_yaw
from stag_sim.render import PointRenderer, RenderConfig
from stag_sim.scene4d import SKY_BINS, Scene4D, Scene4DConfig


def procedural_street(num_points: int, seed: int = 0) -> tuple[Scene4D, np.ndarray]:
    """A 240 m street: ground, facades 9 m either side, tree boxes; points on a jittered grid whose spacing gives
    about ``num_points`` points. Returns the scene and (T, 4, 4) ego poses driving along it at 8 m/s, 10 Hz."""
    rng = np.random.default_rng(seed)
    length, half_w, facade_h = 240.0, 20.0, 12.0
    area = length * 2 * half_w + 2 * length * facade_h
    s = float(np.sqrt(area / num_points))
    gx, gy = np.meshgrid(np.arange(-length / 2, length / 2, s), np.arange(-half_w, half_w, s))
    ground = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    fx, fz = np.meshgrid(np.arange(-length / 2, length / 2, s), np.arange(0, facade_h, s))
    facades = [np.stack([fx.ravel(), np.full(fx.size, y), fz.ravel()], 1) for y in (-9.0, 9.0)]
    pts = np.concatenate([ground] + facades)
    pts += rng.normal(0, s * 0.15, pts.shape)
    col = np.empty((len(pts), 3))
    on_road = np.abs(pts[:, 1]) < 6
    col[:] = 90 + 30 * np.sin(pts[:, :1] * 0.3)
    col[~on_road] = [150, 140, 120]
    wall = pts[:, 2] > 0.05
    col[wall] = np.stack([160 + 60 * np.sin(pts[wall, 0] * 0.5), 110 + 40 * np.sin(pts[wall, 2]), 90 + 0 * pts[wall, 0]], 1)
    T = 200
    ego = pose_xy_yaw(-80 + 0.8 * np.arange(T), np.full(T, -3.0), np.zeros(T))
    scene = Scene4D("procedural-street", pts.astype(np.float32), np.clip(col, 0, 255).astype(np.uint8), s, (), s,
                    np.arange(T, dtype=np.int64) * 100_000, np.zeros((T, 0, 4, 4)), np.zeros((T, 0), bool),
                    np.tile(np.uint8([[130, 170, 220]]), (SKY_BINS, 1)), np.ones(SKY_BINS, bool),
                    Scene4DConfig(voxel_size=s))
    return scene, ego


def resampled(scene: Scene4D, factor: float, seed: int = 0) -> Scene4D:
    """The scene with its static cloud resampled to ``factor`` times the points: a random subset (factor < 1) or
    jittered copies (factor > 1), voxel size scaled by ``factor ** -0.5`` (surface density)."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    n = len(scene.static_points)
    vs = scene.voxel_size * factor ** -0.5
    if factor <= 1:
        idx = np.sort(rng.choice(n, int(n * factor), replace=False))
        pts, cols = scene.static_points[idx], scene.static_colors[idx]
    else:
        reps = int(round(factor))
        pts = np.concatenate([scene.static_points] + [
            scene.static_points + rng.uniform(-vs, vs, (n, 3)).astype(np.float32) for _ in range(reps - 1)])
        cols = np.tile(scene.static_colors, (reps, 1))
    return replace(scene, static_points=pts, static_colors=cols, voxel_size=vs)


def town_scene(num_points: int, seed: int = 0):
    """The synthetic town's 4D scene at the voxel size giving about ``num_points`` static points, its ego poses,
    or None when the synthetic town is not available."""
    try:
        from stag_sim.cache import load_scene_cache
        from stag_sim.paths import ensure_default_scene
        from stag_sim.scene4d import load_scene4d
    except ImportError:
        return None
    try:
        scene_dir = ensure_default_scene(seed=seed, progress=True)
    except ImportError:
        return None
    log = load_scene_cache(scene_dir, verify=False)
    voxel = 0.2 * np.sqrt(1_000_000 / num_points)  # seed 0 town: ~1.15M static points at 0.2 m
    for _ in range(4):  # the static point count scales roughly with voxel_size^-2 (surfaces)
        scene = load_scene4d(scene_dir, Scene4DConfig(voxel_size=round(voxel, 4)), progress=True, log=log)
        n = len(scene.static_points)
        if abs(n / num_points - 1) < 0.15:
            break
        voxel *= float(np.sqrt(n / num_points))
    return scene, np.asarray(log.ego_poses)


def time_steps(renderer: PointRenderer, rig, ego: np.ndarray, scene: Scene4D, steps: int, repeat: int,
               cull: bool = True) -> float:
    """Median over ``repeat`` runs of the steps/s of rendering ``steps`` consecutive ego poses (6 cameras each)."""
    idx = np.linspace(0, len(ego) - 1, steps).astype(int)
    ts = (scene.timestamps_us - scene.timestamps_us[0]) * 1e-6
    objs = [scene.object_poses_at(ts[min(i, len(ts) - 1)]) for i in idx]
    renderer.render_rigs(ego[idx[0]], rig, objs[0], cull=cull)  # warm-up
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i, o in zip(idx, objs):
            renderer.render_rigs(ego[i], rig, o, cull=cull)
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def _threads(backend: str) -> str:
    if backend == "numba":
        import numba

        return f"numba {numba.get_num_threads()} threads, {numba.config.THREADING_LAYER} layer"
    return "torch 2 threads, numpy as built" if backend == "torch" else "numpy as built"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="static points of the main scene")
    ap.add_argument("--steps", type=int, default=40, help="ego poses per timed run")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs (median reported)")
    ap.add_argument("--procedural", action="store_true", help="use the procedural street even if the town exists")
    ap.add_argument("--no-scaling", action="store_true", help="skip the 250k / 1M / 4M scaling runs")
    ap.add_argument("--backend", default="auto", help="CPU backend: auto (numba if installed), numba or numpy")
    ap.add_argument("--compare-numpy", action="store_true", help="also time the numpy backend (and its brute force)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    rig = nuscenes_like_rig(400, 224)

    def scene_of(n):
        got = None if args.procedural else town_scene(n)
        return (got, "synthetic town") if got is not None else (procedural_street(n), "procedural street")

    (scene, ego), kind = scene_of(args.points)
    fast = PointRenderer(scene, RenderConfig(backend=args.backend))
    raw = PointRenderer(scene, RenderConfig(backend=args.backend, fill_holes=False))
    print(f"scene: {kind}, {len(scene.static_points):,} static points (voxel {scene.voxel_size:.3f} m), "
          f"{len(scene.objects)} objects; 6 cameras x 400x224 per step; backend {fast.backend} "
          f"({_threads(fast.backend)})")
    r_fill = time_steps(fast, rig, ego, scene, args.steps, args.repeat)
    r_raw = time_steps(raw, rig, ego, scene, args.steps, args.repeat)
    brute_steps = max(3, args.steps // 8)
    r_brute = time_steps(fast, rig, ego, scene, brute_steps, max(1, args.repeat // 2), cull=False)
    print(f"renderer (culling + LOD, hole filling): {r_fill:7.1f} steps/s  ({1e3 / r_fill:6.1f} ms/step)")
    print(f"renderer (culling + LOD, no filling)  : {r_raw:7.1f} steps/s  ({1e3 / r_raw:6.1f} ms/step)")
    print(f"brute-force reference (same backend and kernel, every point x every camera, hole filling): "
          f"{r_brute:6.2f} steps/s  ({1e3 / r_brute:7.1f} ms/step)")
    print(f"speed-up over brute force: {r_fill / r_brute:.1f}x (with filling)")
    if args.compare_numpy and fast.backend != "numpy":
        ref = PointRenderer(scene, RenderConfig(backend="numpy"))
        r_np = time_steps(ref, rig, ego, scene, args.steps, max(1, args.repeat // 2))
        r_np_brute = time_steps(ref, rig, ego, scene, brute_steps, 1, cull=False)
        print(f"numpy backend, same poses: {r_np:.1f} steps/s; its brute force {r_np_brute:.2f} steps/s; "
              f"{fast.backend} vs numpy: {r_fill / r_np:.1f}x")

    if not args.no_scaling:
        print("\nscaling (hole filling on):")
        print(f"{'points':>10}  {'steps/s':>8}  {'ms/step':>8}")
        for n in (250_000, 1_000_000, 4_000_000):  # the main scene's cloud, subsampled or upsampled
            sc = resampled(scene, n / len(scene.static_points))
            r = time_steps(PointRenderer(sc, RenderConfig(backend=args.backend)), rig, ego, sc, args.steps,
                           max(1, args.repeat // 2))
            print(f"{len(sc.static_points):10,d}  {r:8.1f}  {1e3 / r:8.1f}")

    if torch.cuda.is_available():
        gpu = PointRenderer(scene, RenderConfig(backend="torch", device="cuda"))
        r_gpu = time_steps(gpu, rig, ego, scene, args.steps, args.repeat)
        print(f"\nCUDA ({torch.cuda.get_device_name()}): {r_gpu:.1f} steps/s  ({1e3 / r_gpu:.1f} ms/step)")
        for envs in (8, 32):
            idx = np.linspace(0, len(ego) - 1, envs).astype(int)
            gpu.render_rigs(ego[idx], rig)
            t0 = time.perf_counter()
            for _ in range(3):
                gpu.render_rigs(ego[idx], rig)
            dt = (time.perf_counter() - t0) / 3
            print(f"CUDA batched, {envs} envs x 6 cameras in one call: {envs / dt:.1f} env-steps/s")
    else:
        print("\nCUDA: skipped (no GPU on this machine)")


if __name__ == "__main__":
    main()
