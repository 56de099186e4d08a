"""The generalisation gap: SB3 PPO (default hyperparameters, camera-free ``state``) trained on ONE synthetic town vs
on the recipe's many towns (``rl.TRAIN_TOWNS``, one drawn per reset), both scored during training on ten towns
neither ever saw (``rl.HELD_OUT_TOWNS`` x ``--seeds`` random starts) and on their own training towns.

Each run writes ``<out>/gen_<name>.json``; ``--plot`` draws every run found there into ``docs/img/rl_generalisation.png``.

    pip install -e ".[rl]"
    python benchmarks/rl_generalisation.py --train one --steps 200000      # ~10 min on 2 cores
    python benchmarks/rl_generalisation.py --train many --steps 200000
    python benchmarks/rl_generalisation.py --plot
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stag_sim.app import rl

TRAFFIC = {"log": {}, "idm": {"world": {"agents": "idm"}},
           "events": {"traffic": {"brake_prob": 0.5, "cut_in_prob": 0.3}}}  # log replay + drawn brakes / cut-ins


def run(name: str, steps: int, eval_every: int, seeds: int, traffic: str, out: Path, seed: int = 0,
        collision: float | None = None, envs: int = 1) -> dict:
    from stable_baselines3 import PPO

    towns = {"one": ("synthetic:0",), "many": rl.TRAIN_TOWNS}[name]
    reward = {} if collision is None else {"reward": {"collision": collision}}
    kw = {"scene": list(towns), **TRAFFIC[traffic], **reward}
    venv = rl.make_env(**kw) if envs == 1 else rl.sb3_vec_env(envs, **kw)  # the native batched env
    if envs > 1:
        venv.seed(seed)
    model = PPO("MultiInputPolicy", venv, seed=seed, verbose=0)
    t0 = time.perf_counter()
    points = []
    done = 0
    while True:
        held = rl.evaluate(rl.sb3_policy(model), TRAFFIC[traffic], seeds=range(1000, 1000 + seeds), towns=rl.HELD_OUT_TOWNS)
        own = rl.evaluate(rl.sb3_policy(model), TRAFFIC[traffic], seeds=range(1000, 1000 + seeds),
                          towns=towns[:len(rl.HELD_OUT_TOWNS)])
        p = {"steps": done, "wall_s": round(time.perf_counter() - t0, 1)}
        for key, r in (("held_out", held), ("train", own)):
            p[key] = {"route_completion": r.route_completion, "collision_free": 1.0 - r.collisions / r.episodes,
                      "offroad": r.offroad, "pdms": r.pdms, "episodes": r.episodes}
        points.append(p)
        print(f"[{name}/{traffic}/{collision}] {done:>7d} steps: held-out towns rc {held.route_completion:.3f}, collision-free "
              f"{p['held_out']['collision_free']:.0%} ({held.episodes} ep), PDMS {held.pdms:.3f} | training towns rc "
              f"{own.route_completion:.3f}, collision-free {p['train']['collision_free']:.0%} ({p['wall_s']:.0f} s)",
              flush=True)
        if done >= steps:
            break
        chunk = min(eval_every, steps - done)
        model.learn(chunk, reset_num_timesteps=False)
        done += chunk
    tag = f"{name}_{traffic}" + ("" if collision is None else f"_col{collision:g}") + ("" if envs == 1 else f"_x{envs}")
    tag += "" if steps == 200_000 else f"_{steps // 1000}k"
    result = {"name": name, "traffic": traffic, "collision_penalty": collision, "envs": envs, "towns": list(towns),
              "held_out_towns": list(rl.HELD_OUT_TOWNS), "seeds_per_town": seeds, "curve": points}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gen_{tag}.json").write_text(json.dumps(result, indent=1))
    model.save(out / f"ppo_{tag}.zip")
    return result


def plot(out: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("gen_*.json"))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        steps = [p["steps"] for p in r["curve"]]
        label = f"{len(r['towns'])} town{'s' if len(r['towns']) > 1 else ''}, {r['traffic']} traffic" + \
            (f", collision -{r['collision_penalty']:g}" if r.get("collision_penalty") is not None else "") + \
            (f", {r['envs']} envs" if r.get("envs", 1) > 1 else "") + f", {r['curve'][-1]['steps'] // 1000}k steps"
        for ax, key in zip(axes, ("route_completion", "collision_free")):
            line, = ax.plot(steps, [p["held_out"][key] for p in r["curve"]], marker="o", label=f"{label}: held-out towns")
            ax.plot(steps, [p["train"][key] for p in r["curve"]], ls="--", color=line.get_color(),
                    label=f"{label}: its training towns")
    for ax, label in zip(axes, ("route completion", "collision-free episodes")):
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=7)
    fig.suptitle("SB3 PPO defaults, camera-free: 10 held-out towns (solid) vs training towns (dashed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", choices=("one", "many"), help="train on one town or on rl.TRAIN_TOWNS")
    ap.add_argument("--traffic", choices=tuple(TRAFFIC), default="log", help="log replay or IDM traffic")
    ap.add_argument("--collision", type=float, default=None, help="the reward's collision penalty (default: the env's)")
    ap.add_argument("--envs", type=int, default=1, help="train on the native batched vector env with this many envs")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--eval-every", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=5, help="random starts per held-out town")
    ap.add_argument("--out", type=Path, default=Path("runs/generalisation"))
    ap.add_argument("--plot", action="store_true", help="plot every run in --out")
    ap.add_argument("--plot-path", type=Path, default=Path("docs/img/rl_generalisation.png"))
    args = ap.parse_args()
    if args.train:
        run(args.train, args.steps, args.eval_every, args.seeds, args.traffic, args.out, collision=args.collision, envs=args.envs)
    if args.plot:
        plot(args.out, args.plot_path)


if __name__ == "__main__":
    main()
