"""StagDrive-v0 throughput: env steps/s with the point renderer, beside the render-only figure.

Measures, on the synthetic town (or --scene), at 6 cameras x --height x --width:
  * render only: the renderer called with one env's six camera poses and object poses (the reference);
  * single env: env.step (dynamics, agents, events, observation, rendering);
  * N envs: SyncVectorEnv, AsyncVectorEnv (N processes) and the native batched vector env (one render call).
The env's own overhead is (step time - render time) / render time; the design target is < 20 %.

    python benchmarks/env_bench.py --num-envs 4 --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import stag_sim  # noqa: F401  (registers StagDrive-v0)


def median_step_time(step, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default=None, help="scene cache (default: the synthetic town)")
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--num-envs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--agents", default="idm", choices=["log_replay", "idm"])
    args = ap.parse_args()
    kw = dict(scene=args.scene, image_size=(args.height, args.width), world={"agents": args.agents})

    env = gym.make("StagDrive-v0", **kw)
    base = env.unwrapped
    obs, info = env.reset(seed=0)
    renderer = base.renderer
    print(f"scene {base.log.name}: {renderer.scene.num_points / 1e6:.2f} M points, 6 x {args.height}x{args.width}")

    def render_only():
        poses, valid = base.world.agent_poses(base.state)
        renderer.render(base.camera_poses(), [base.rig[i].intrinsics for i in base.cam_index], poses, valid)

    state = {"info": info}

    def env_step():
        _, _, term, trunc, state["info"] = env.step(state["info"]["expert_action"])
        if term or trunc:
            _, state["info"] = env.reset(seed=0)

    t_render = median_step_time(render_only, args.steps)
    t_env = median_step_time(env_step, args.steps)
    print(f"render only (reference): {1 / t_render:7.1f} steps/s  ({t_render * 1e3:.1f} ms)")
    print(f"single env step:         {1 / t_env:7.1f} steps/s  ({t_env * 1e3:.1f} ms)  "
          f"env overhead {100 * (t_env - t_render) / t_render:+.0f} % of render time")

    n = args.num_envs
    zeros = np.zeros((n, 2), np.float32)
    results = {}
    for mode in ("sync", "async", "vector_entry_point"):
        vec = gym.make_vec("StagDrive-v0", num_envs=n, vectorization_mode=mode, **kw)
        try:
            vec.reset(seed=0)
            t = median_step_time(lambda: vec.step(zeros), max(5, args.steps // 3))
        finally:
            vec.close()
        results[mode] = t
        print(f"{n} envs, {mode:<19} {n / t:7.1f} env-steps/s  ({t * 1e3:.1f} ms per vector step)")
    print(f"batched vs sync: {results['sync'] / results['vector_entry_point']:.2f}x")


if __name__ == "__main__":
    main()
