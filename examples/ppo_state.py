"""Recipe (a): Stable-Baselines3 PPO, default hyperparameters, on the camera-free StagDrive env.

The observation is ``state`` (default) or ``bev``; episodes start at random places drawn from the env's seed, and
training draws one of 16 towns per reset (``rl.TRAIN_TOWNS``) and the learning curve is scored in ten towns it
never saw (``rl.HELD_OUT``: route completion, collisions, PDMS).

    pip install -e ".[rl]"
    python examples/ppo_state.py                       # 200k steps on `state`, ~5 min on 2 cores
    python examples/ppo_state.py --obs bev --steps 100000 --out runs/ppo_bev
"""

import argparse
import json
from pathlib import Path

from stag_sim.app import rl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--obs", choices=("state", "bev"), default="state", help="observation key (default state)")
    ap.add_argument("--steps", type=int, default=200_000, help="env steps to train (default 200000)")
    ap.add_argument("--eval-every", type=int, default=20_000, help="held-out evaluation interval [steps]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/ppo_state"), help="where the model and curve go")
    args = ap.parse_args()

    from stable_baselines3 import PPO

    env_kwargs = {"observations": (args.obs,)}
    model = PPO("MultiInputPolicy", rl.make_env(**env_kwargs), seed=args.seed, verbose=0)  # default hyperparameters
    curve = rl.learning_curve(model, args.steps, args.eval_every, env_kwargs, **rl.HELD_OUT)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    (args.out / "curve.json").write_text(json.dumps(curve, indent=1))
    rl.plot_curves({f"PPO on {args.obs}": curve}, args.out / "curve.png", "StagDrive camera-free, SB3 PPO defaults")
    final = rl.evaluate(rl.sb3_policy(model), env_kwargs, **rl.HELD_OUT)
    print(f"held-out: route completion {final.route_completion:.3f}, no collision in "
          f"{final.episodes - final.collisions}/{final.episodes}, PDMS {final.pdms:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
