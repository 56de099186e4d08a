"""Env throughput of the Ray vector env against the local batched vector env, same total envs, uniform random
actions; camera-free (``state``, :data:`rl.RL_ENV`) or ``--env camera`` (:data:`rl.CAMERA_ENV`: the front camera at
64 x 112, rendered every step).

Printed: env steps/s (all envs together) of ``rl.sb3_vec_env(W * E)`` in this process, of
``rl_ray.ray_vec_env(W, E)`` (W actors x E envs), and of ``ray_vec_env(1, W * E)`` (one actor: Ray's overhead
without any parallelism); each the best of ``--repeats`` timed runs of ``--seconds``. Ray runs locally with W CPUs
unless ``RAY_ADDRESS`` / ``--address`` names a cluster.

    pip install -e ".[rl,ray]"
    python benchmarks/ray_bench.py                          # 2 workers x 8 envs vs 16 local envs, ~1 min
    python benchmarks/ray_bench.py --workers 8 --envs-per-worker 8 --address auto   # on a cluster
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from stag_sim.app import rl


def steps_per_s(venv, seconds: float, repeats: int, seed: int = 0) -> float:
    """Env steps per second (all sub-envs) of an SB3 VecEnv under uniform random actions: best of ``repeats``."""
    rng = np.random.default_rng(seed)
    n = venv.num_envs
    venv.seed(seed)
    venv.reset()
    for _ in range(5):  # warm-up: first-step costs, numba dispatch, Ray's connections
        venv.step(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
    best = 0.0
    for _ in range(repeats):
        t0, steps = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            venv.step(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
            steps += 1
        best = max(best, steps * n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--envs-per-worker", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scene", choices=("town", "tiny"), default="town",
                    help="town: rl.RL_ENV's training towns; tiny: stag_sim.testing.tiny_scene_log(80 frames)")
    ap.add_argument("--env", choices=("state", "camera"), default="state",
                    help="state: camera-free rl.RL_ENV; camera: rl.CAMERA_ENV (one small rendered camera)")
    ap.add_argument("--address", default=None, help="Ray cluster to join; default: $RAY_ADDRESS, else local")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    import ray

    from stag_sim.app.rl_ray import ensure_ray, ray_vec_env

    kw: dict = dict(rl.CAMERA_ENV) if args.env == "camera" else {}
    if args.scene == "tiny":
        from stag_sim.testing import tiny_scene_log

        kw["scene"] = tiny_scene_log(num_frames=80, width=32, height=18)
    W, E = args.workers, args.envs_per_worker
    ensure_ray(args.address, num_cpus=max(W, os.cpu_count() or 1))
    print(f"Ray {ray.__version__}: {ray.cluster_resources().get('CPU', 0):g} CPUs in the cluster, "
          f"{os.cpu_count()} on this machine; '{args.env}' env on the '{args.scene}' scene, random actions")
    rows = {}
    for name, make in ((f"local sb3_vec_env({W * E})", lambda: rl.sb3_vec_env(W * E, **kw)),
                       (f"ray_vec_env({W}, {E})", lambda: ray_vec_env(W, E, **kw)),
                       (f"ray_vec_env(1, {W * E})", lambda: ray_vec_env(1, W * E, **kw))):
        venv = make()
        try:
            rows[name] = steps_per_s(venv, args.seconds, args.repeats)
        finally:
            venv.close()
        print(f"  {name:<28s} {rows[name]:>9.0f} env steps/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus_here": os.cpu_count(), "env": args.env, "scene": args.scene, "steps_per_s": rows}, f, indent=1)
    ray.shutdown()


if __name__ == "__main__":
    main()
