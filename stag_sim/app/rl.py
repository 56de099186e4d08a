"""RL recipes' shared parts: the camera-free training env, held-out evaluation (route completion, collisions,
PDMS), learning curves, and behaviour cloning of a teacher into a camera policy.

The recipes that use them run unmodified: ``examples/ppo_state.py`` (SB3 PPO on ``state`` or ``bev``),
``examples/ppo_batched.py`` (PPO on the native batched vector env) and ``examples/distill_camera.py`` (DAgger from
the log expert or a PPO teacher into a camera policy); ``benchmarks/rl_bench.py`` prints and plots their curves.
Stable-Baselines3 and matplotlib come with the ``rl`` extra (``pip install -e ".[rl]"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

#: The camera-free training env: no cameras, the ``state`` observation, random starts drawn from the env's seed.
RL_ENV = {"cameras": (), "start": {"random": True}}
#: Env seeds of the held-out evaluation episodes (training draws its episodes from other seeds).
HELD_OUT_SEEDS = tuple(range(1000, 1010))


def make_env(**overrides):
    """``gym.make("StagDrive-v0", **{**RL_ENV, **overrides})``."""
    import gymnasium as gym

    import stag_sim  # noqa: F401  (registers StagDrive-v0)

    return gym.make("StagDrive-v0", **{**RL_ENV, **overrides})


@dataclass(frozen=True)
class EvalResult:
    """Scores of a policy on held-out episodes.

    Attributes:
        route_completion: mean route completion [0..1]; collisions, offroad: episodes that ended so [-];
        pdms: mean PDMS [0..1]; episodes: how many; per_episode: (route completion, collided, pdms) of each.
    """

    route_completion: float
    collisions: int
    offroad: int
    pdms: float
    episodes: int
    per_episode: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(act: Callable[[dict], np.ndarray], env_kwargs: dict | None = None,
             seeds: Sequence[int] = HELD_OUT_SEEDS) -> EvalResult:
    """Run ``act(obs) -> action`` for one episode per seed of ``seeds`` in the env of ``env_kwargs`` (default
    :data:`RL_ENV`) and score it: route completion, collision / off-road, PDMS (:mod:`stag_sim.metrics`)."""
    from stag_sim.app.episode import TraceRecorder, episode_trace
    from stag_sim.metrics import compute_metrics, summarize

    env = make_env(**(env_kwargs or {}))
    base = env.unwrapped
    rows = []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        trace = TraceRecorder()
        trace.add(base.world, base.state)
        while True:
            obs, _, term, trunc, info = env.step(act(obs))
            trace.add(base.world, base.state)
            if term or trunc:
                break
        duration = base.max_steps * base.world.config.dt
        summary = summarize(compute_metrics(episode_trace(base.world, trace, base.state.events.get("route_completed", False),
                                                          duration)))
        rows.append((float(info["route_completion"]), bool(info["collision"]), bool(info["offroad"]),
                     float(summary["pdms"])))
    env.close()
    rc, col, off, pdms = (np.array(v) for v in zip(*rows))
    return EvalResult(float(rc.mean()), int(col.sum()), int(off.sum()), float(pdms.mean()), len(rows),
                      [(float(a), bool(b), float(c)) for a, b, _, c in rows])


def random_policy(env_kwargs: dict | None = None, seed: int = 0) -> Callable[[dict], np.ndarray]:
    """Uniform random actions in the env's action space (the baseline a trained policy must beat)."""
    env = make_env(**(env_kwargs or {}))
    space = env.action_space
    space.seed(seed)
    env.close()
    return lambda obs: space.sample()


def sb3_policy(model) -> Callable[[dict], np.ndarray]:
    """``act`` of a Stable-Baselines3 model (deterministic)."""
    return lambda obs: model.predict(obs, deterministic=True)[0]


def learning_curve(model, total_steps: int, eval_every: int, env_kwargs: dict | None = None,
                   seeds: Sequence[int] = HELD_OUT_SEEDS, log: Callable[[str], None] = print) -> list[dict]:
    """Train ``model`` (SB3) for ``total_steps`` env steps, evaluating on ``seeds`` every ``eval_every`` steps
    (and before training). Returns ``[{"steps", "route_completion", "collisions", "offroad", "pdms", "wall_s"}]``."""
    import time

    t0 = time.perf_counter()
    points = []

    def record(steps: int) -> None:
        r = evaluate(sb3_policy(model), env_kwargs, seeds)
        points.append({"steps": steps, "route_completion": r.route_completion, "collisions": r.collisions,
                       "offroad": r.offroad, "pdms": r.pdms, "wall_s": round(time.perf_counter() - t0, 1)})
        log(f"{steps:>8d} steps: route completion {r.route_completion:.3f}, collisions {r.collisions}/{r.episodes}, "
            f"off-road {r.offroad}, PDMS {r.pdms:.3f} ({points[-1]['wall_s']:.0f} s)")

    record(0)
    done = 0
    while done < total_steps:
        chunk = min(eval_every, total_steps - done)
        model.learn(chunk, reset_num_timesteps=False)
        done += chunk
        record(done)
    return points


def plot_curves(curves: dict[str, list[dict]], path, title: str = "") -> None:
    """Route completion and PDMS against env steps, one line per curve, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, pts in curves.items():
        steps = [p["steps"] for p in pts]
        for ax, key in zip(axes, ("route_completion", "pdms")):
            ax.plot(steps, [p[key] for p in pts], marker="o", label=name)
    for ax, label in zip(axes, ("route completion (held-out seeds)", "PDMS (held-out seeds)")):
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sb3_vec_env(num_envs: int, **env_kwargs):
    """The native batched vector env (:class:`~stag_sim.envs.vector.StagDriveVectorEnv`, one renderer call per
    step for all envs) as a Stable-Baselines3 ``VecEnv``: same-step autoreset, the last observation of an ended
    episode in ``info["terminal_observation"]``."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv

    import stag_sim  # noqa: F401  (registers StagDrive-v0)

    vec = gym.make_vec("StagDrive-v0", num_envs=int(num_envs), vectorization_mode="vector_entry_point",
                       autoreset_mode="same_step", **{**RL_ENV, **env_kwargs})

    class NativeVecEnv(VecEnv):
        def __init__(self) -> None:
            super().__init__(vec.num_envs, vec.single_observation_space, vec.single_action_space)
            self.vector_env = vec
            self._actions = None

        def reset(self):
            seeds = [s for s in self._seeds] if any(s is not None for s in self._seeds) else None
            obs, _ = vec.reset(seed=seeds)
            self._reset_seeds()
            return obs

        def step_async(self, actions) -> None:
            self._actions = np.asarray(actions)

        def step_wait(self):
            obs, reward, term, trunc, infos = vec.step(self._actions)
            dones = term | trunc
            info_list = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(dones):
                info_list[i]["terminal_observation"] = infos["final_obs"][i]
                info_list[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            return obs, reward.astype(np.float32), dones, info_list

        def close(self) -> None:
            vec.close()

        def _envs(self, indices):
            return [vec.envs[i] for i in self._get_indices(indices)]

        def get_attr(self, attr_name, indices=None):
            return [getattr(e, attr_name) for e in self._envs(indices)]

        def set_attr(self, attr_name, value, indices=None) -> None:
            for e in self._envs(indices):
                setattr(e, attr_name, value)

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            return [getattr(e, method_name)(*method_args, **method_kwargs) for e in self._envs(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False for _ in self._envs(indices)]

    return NativeVecEnv()
