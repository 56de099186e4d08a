"""RL figures: env throughput beside highway-env (same run), PPO learning curves on held-out towns, and the camera
policy distilled from the log expert.

Printed:

* env steps/s (one process) of StagDrive camera-free (``state``; with IDM traffic; with ``expert_action`` in the
  info), with ``bev``, with ``state`` + ``bev``, the batched vector env camera-free (8 and 64 envs; 8 with IDM),
  the batched world step alone (64 rows), the time to build a new town for a camera-free env, the default camera
  env (6 x 224 x 400) alone and batched (4 envs), and highway-env's ``highway-fast-v0`` / ``highway-v0`` (and
  ``highway-fast-v0`` with its grayscale image observation) in the same run if highway-env is installed;
* the learning curves of SB3 PPO (default hyperparameters) on ``state`` (and ``bev`` with ``--bev-steps``):
  route completion, collisions and PDMS on the ten held-out towns (``rl.HELD_OUT_TOWNS``, ``--seeds`` random starts
  each), against env steps; random actions for reference;
* the DAgger camera student (log-expert teacher): route completion, collisions, PDMS on the same seeds, and the
  same student with its images blanked (does it use the camera?).

Writes ``--out`` (default ``docs/img/rl_curves.png``) and ``rl_bench.json`` beside it.

    pip install -e ".[rl]" highway-env
    python benchmarks/rl_bench.py                      # ~12 min on 2 cores
    python benchmarks/rl_bench.py --steps 50000 --no-distill --bev-steps 0   # quicker
    python benchmarks/rl_bench.py --throughput-only                          # the speed table (~2 min)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import stag_sim  # noqa: F401  (registers StagDrive-v0)
from stag_sim.app import rl


def steps_per_s(env, seconds: float = 4.0, action=None, warmup: float = 0.0) -> float:
    """Steps per second of ``env`` over ``seconds``, after ``warmup`` seconds of the same loop (scene lists load
    their towns and build their worlds on first draw: a long run pays that once)."""
    env.reset(seed=0)
    act = (lambda: env.action_space.sample()) if action is None else (lambda: action)
    for timed in (False, True):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < (seconds if timed else warmup):
            _, _, term, trunc, _ = env.step(act())
            n += 1
            if not hasattr(env, "num_envs") and (term or trunc):  # vector envs reset their own sub-envs
                env.reset()
    return n / (time.perf_counter() - t0)


def vec_steps_per_s(n: int, seconds: float = 4.0, **kw) -> float:
    """env-steps/s of the native batched vector env with ``n`` sub-envs (steady actions)."""
    vec = gym.make_vec("StagDrive-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**rl.RL_ENV, **kw})
    return n * steps_per_s(vec, seconds, action=np.tile(np.array([0.3, 0.0], np.float32), (n, 1)), warmup=WARMUP_S)


def world_step_per_s(n: int, seconds: float = 3.0) -> float:
    """env-steps/s of :func:`stag_sim.world_batch.step` alone over ``n`` rows (random starts of the training towns)."""
    from stag_sim import world_batch

    vec = gym.make_vec("StagDrive-v0", num_envs=n, vectorization_mode="vector_entry_point", **rl.RL_ENV)
    vec.reset(seed=0)
    wb, bs = vec.unwrapped.world_batch, vec.unwrapped.batch_state
    accel, steer = np.full(n, 0.3), np.zeros(n)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        world_batch.step(wb, bs, accel, steer)
        k += 1
    return n * k / (time.perf_counter() - t0)


def town_build_s(seed: int = 987_654) -> float:
    """Seconds to build a new synthetic town for a camera-free env from an empty cache (layout-only log)."""
    import os
    import tempfile

    from stag_sim.paths import CACHE_ENV

    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = tmp
        try:
            t0 = time.perf_counter()
            rl.make_env(scene=f"synthetic:{seed}").reset(seed=0)
            return time.perf_counter() - t0
        finally:
            os.environ.pop(CACHE_ENV) if old is None else os.environ.__setitem__(CACHE_ENV, old)


#: seconds each camera-free env runs before it is timed (every training town loaded and its worlds built)
WARMUP_S = 15.0
HIGHWAY_GRAYSCALE = {"observation": {"type": "GrayscaleObservation", "observation_shape": (128, 64), "stack_size": 4,
                                     "weights": [0.2989, 0.5870, 0.1140], "scaling": 1.75}}


def throughput() -> dict:
    out = {}
    steady = np.array([0.3, 0.0], np.float32)
    for name, kw in [("camera-free state", {}), ("camera-free state, IDM traffic", {"world": {"agents": "idm"}}),
                     ("camera-free state, expert_action in info", {"expert_action": True}),
                     ("camera-free bev", {"observations": ("bev",)}),
                     ("camera-free state + bev", {"observations": ("state", "bev")})]:
        out[name] = steps_per_s(rl.make_env(**kw), action=steady, warmup=WARMUP_S)
    for n in (8, 64):
        out[f"batched vector env, {n} envs camera-free (env-steps/s)"] = vec_steps_per_s(n)
    out["batched vector env, 8 envs camera-free IDM traffic (env-steps/s)"] = vec_steps_per_s(8, world={"agents": "idm"})
    out["world_batch.step alone, 64 rows (env-steps/s)"] = world_step_per_s(64)
    out["new town for a camera-free env, built from an empty cache [s]"] = town_build_s()
    out["default camera env (6 x 224 x 400)"] = steps_per_s(gym.make("StagDrive-v0"), action=steady)
    cam = gym.make_vec("StagDrive-v0", num_envs=4, vectorization_mode="vector_entry_point")
    out["batched vector env, 4 camera envs (6 x 224 x 400, env-steps/s)"] = 4 * steps_per_s(cam, action=np.tile(steady, (4, 1)))
    try:
        import highway_env  # noqa: F401

        for name in ("highway-fast-v0", "highway-v0"):
            out[f"highway-env {name}"] = steps_per_s(gym.make(name))
        out["highway-env highway-fast-v0, grayscale 128 x 64 x 4"] = steps_per_s(gym.make("highway-fast-v0", config=HIGHWAY_GRAYSCALE))
    except ImportError:
        print("highway-env not installed (pip install highway-env): no comparison")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000, help="PPO steps on `state` (default 200000)")
    ap.add_argument("--bev-steps", type=int, default=100_000, help="PPO steps on `bev` (0: skip)")
    ap.add_argument("--eval-every", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=3, help="random starts per held-out town in the evaluations")
    ap.add_argument("--no-distill", action="store_true", help="skip the camera-policy distillation")
    ap.add_argument("--throughput-only", action="store_true", help="print the throughput table and stop")
    ap.add_argument("--out", type=Path, default=Path("docs/img/rl_curves.png"))
    args = ap.parse_args()
    from stable_baselines3 import PPO

    report: dict = {}
    print("== throughput (one process, 2-core machine)")
    report["throughput"] = throughput()
    for k, v in report["throughput"].items():
        print(f"   {k:<66} {v:10.2f}" + ("" if "[" in k else " steps/s"))
    if args.throughput_only:
        return

    held = {**rl.HELD_OUT, "seeds": rl.HELD_OUT_SEEDS[:args.seeds]}
    rand = rl.evaluate(rl.random_policy(), **held)
    report["random"] = rand.as_dict()
    print(f"\n== random actions on the held-out towns: route completion {rand.route_completion:.3f}, "
          f"collisions {rand.collisions}/{rand.episodes}, PDMS {rand.pdms:.3f}")
    curves = {}
    for key, steps in (("state", args.steps), ("bev", args.bev_steps)):
        if steps <= 0:
            continue
        print(f"\n== SB3 PPO (default hyperparameters) on `{key}`, {steps} steps")
        kw = {"observations": (key,)}
        t0 = time.perf_counter()
        model = PPO("MultiInputPolicy", rl.make_env(**kw), seed=0, verbose=0)
        curves[f"PPO on {key}"] = rl.learning_curve(model, steps, args.eval_every, kw, **held)
        report[f"ppo_{key}"] = {"curve": curves[f"PPO on {key}"], "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"   trained and evaluated in {report[f'ppo_{key}']['wall_s'] / 60:.1f} min")
    if not args.no_distill:
        print("\n== DAgger camera student (front camera 64 x 112 + ego state), teacher: the log expert")
        t0 = time.perf_counter()
        student = rl.distill()
        res = rl.evaluate(student, rl.CAMERA_ENV)
        blind = rl.evaluate(lambda o: student({**o, student.camera: np.zeros_like(o[student.camera])}), rl.CAMERA_ENV)
        report["distill"] = {"student": res.as_dict(), "images_blanked": blind.as_dict(),
                             "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"   student: route completion {res.route_completion:.3f}, collisions {res.collisions}/10, PDMS {res.pdms:.3f}"
              f"; images blanked: route completion {blind.route_completion:.3f} ({report['distill']['wall_s']:.0f} s)")
    if curves:
        flat = [{"steps": 0, "route_completion": rand.route_completion, "pdms": rand.pdms},
                {"steps": max(p["steps"] for c in curves.values() for p in c), "route_completion": rand.route_completion,
                 "pdms": rand.pdms}]
        rl.plot_curves({**curves, "random actions": flat}, args.out,
                       "StagDrive camera-free: SB3 PPO defaults on 16 towns, 10 held-out towns")
        print(f"\nwrote {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (args.out.parent / "rl_bench.json").write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
