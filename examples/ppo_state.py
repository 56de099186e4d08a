"""Recipe (a): Stable-Baselines3 PPO, default hyperparameters, on the camera-free StagDrive env.

The observation is ``state`` (default) or ``bev``; episodes start at random places drawn from the env's seed, and
training draws one of 16 towns per reset (``rl.TRAIN_TOWNS``) and the learning curve is scored in ten towns it
never saw (``rl.HELD_OUT``: route completion, collisions, PDMS).

    pip install -e ".[rl]"
    python examples/ppo_state.py                       # 200k steps on `state`, ~5 min on 2 cores
    python examples/ppo_state.py --obs bev --steps 100000 --out runs/ppo_bev
"""

from stag_sim.app import rl


def main() -> None:
    args = rl.recipe_parser(__doc__, "runs/ppo_state", eval_every=20_000).parse_args()
    env_kwargs = {"observations": (args.obs,)}
    model, curve = rl.train_recipe(rl.make_env(**env_kwargs), args, env_kwargs)
    rl.plot_curves({f"PPO on {args.obs}": curve}, args.out / "curve.png", "StagDrive camera-free, SB3 PPO defaults")
    final = rl.evaluate(rl.sb3_policy(model), env_kwargs, **rl.HELD_OUT)
    print(f"held-out: route completion {final.route_completion:.3f}, no collision in "
          f"{final.episodes - final.collisions}/{final.episodes}, PDMS {final.pdms:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
