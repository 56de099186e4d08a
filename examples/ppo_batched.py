"""Recipe (c): PPO on the native batched vector env (N StagDrive envs stepped together; with cameras, one
renderer call draws all of them). Camera-free ``state`` by default; ``--obs bev`` for the raster.

    pip install -e ".[rl]"
    python examples/ppo_batched.py                    # 8 envs, 400k steps on the 100 training towns (~8 min)
"""

from stag_sim.app import rl


def main() -> None:
    ap = rl.recipe_parser(__doc__, "runs/ppo_batched")
    ap.add_argument("--envs", type=int, default=8, help="sub-envs of the batched vector env")
    ap.set_defaults(steps=400_000)
    args = ap.parse_args()
    env_kwargs = {"observations": (args.obs,)}
    venv = rl.sb3_vec_env(args.envs, **env_kwargs)
    venv.seed(args.seed)
    _, curve = rl.train_recipe(venv, args, env_kwargs)
    print(f"final: {curve[-1]}; wrote {args.out}")


if __name__ == "__main__":
    main()
