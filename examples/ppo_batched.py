"""Recipe (c): PPO on the native batched vector env (N StagDrive envs stepped together; with cameras, one
renderer call draws all of them). Camera-free ``state`` by default; ``--obs bev`` for the raster.

    pip install -e ".[rl]"
    python examples/ppo_batched.py --envs 4 --steps 200000
"""

import argparse
import json
from pathlib import Path

from stag_sim.app import rl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=4, help="sub-envs of the batched vector env")
    ap.add_argument("--obs", choices=("state", "bev"), default="state")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--eval-every", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/ppo_batched"))
    args = ap.parse_args()

    from stable_baselines3 import PPO

    env_kwargs = {"observations": (args.obs,)}
    venv = rl.sb3_vec_env(args.envs, **env_kwargs)
    venv.seed(args.seed)
    model = PPO("MultiInputPolicy", venv, seed=args.seed, verbose=0)
    curve = rl.learning_curve(model, args.steps, args.eval_every, env_kwargs, **rl.HELD_OUT)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    (args.out / "curve.json").write_text(json.dumps(curve, indent=1))
    print(f"final: {curve[-1]}; wrote {args.out}")


if __name__ == "__main__":
    main()
