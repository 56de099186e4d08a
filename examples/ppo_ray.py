"""Recipe (d): PPO on envs spread over Ray actors (processes, or machines of a Ray cluster): ``--workers`` actors,
each a native batched vector env of ``--envs-per-worker`` envs on the training towns; the learner stays in this
process and evaluates here on the held-out towns (``rl.HELD_OUT``). Camera-free ``state`` by default; ``--obs bev``
for the raster. See docs/rl_ray.md.

    pip install -e ".[rl,ray]"
    python examples/ppo_ray.py --workers 2 --envs-per-worker 8 --steps 200000            # one machine
    RAY_ADDRESS=HEAD:6379 python examples/ppo_ray.py --workers 16 --envs-per-worker 8     # a cluster (or --address)
"""

from stag_sim.app import rl


def main() -> None:
    ap = rl.recipe_parser(__doc__, "runs/ppo_ray")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors, one batched vector env each")
    ap.add_argument("--envs-per-worker", type=int, default=8, help="sub-envs of each actor's batched vector env")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves for each actor")
    ap.add_argument("--address", default=None,
                    help="Ray cluster to join (HOST:6379, ray://HOST:10001, auto); default: $RAY_ADDRESS, else local")
    args = ap.parse_args()

    from stag_sim.app.rl_ray import ray_vec_env

    env_kwargs = {"observations": (args.obs,)}
    venv = ray_vec_env(args.workers, args.envs_per_worker, address=args.address,
                       num_cpus_per_worker=args.cpus_per_worker, **env_kwargs)
    try:
        venv.seed(args.seed)
        _, curve = rl.train_recipe(venv, args, env_kwargs)
    finally:
        venv.close()
    print(f"final: {curve[-1]}; wrote {args.out}")


if __name__ == "__main__":
    main()
