"""RL recipes' shared parts: the camera-free training env, held-out evaluation (route completion, collisions,
PDMS), learning curves, and behaviour cloning of a teacher into a camera policy.

The recipes that use them run unmodified: ``examples/ppo_state.py`` (SB3 PPO on ``state`` or ``bev``),
``examples/ppo_batched.py`` (PPO on the native batched vector env) and ``examples/distill_camera.py`` (DAgger from
the log expert or a PPO teacher into a camera policy); ``benchmarks/rl_bench.py`` prints and plots their curves.
Stable-Baselines3 comes with the ``rl`` extra (``pip install -e ".[rl]"``); matplotlib with the base install.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

#: The towns RL trains on: one drawn per reset (layout-only synthetic towns, built into the cache on first draw,
#: 0.3 s each). A policy trained on one town learns that town; these many teach it the road and the traffic.
TRAIN_TOWNS = tuple(f"synthetic:{seed}" for seed in range(100, 200))
#: Towns no recipe trains on: where generalisation is measured (:func:`evaluate` with ``towns``).
HELD_OUT_TOWNS = tuple(f"synthetic:{seed}" for seed in range(4242, 4252))
#: The camera-free training env: the training towns, no cameras, the ``state`` observation, random starts drawn
#: from the env's seed, no ``expert_action`` in the infos (nobody reads it in RL; it costs a quarter of a step).
RL_ENV = {"scene": TRAIN_TOWNS, "cameras": (), "start": {"random": True}, "expert_action": False}
#: Env seeds of the held-out evaluation episodes (training draws its episodes from other seeds).
HELD_OUT_SEEDS = tuple(range(1000, 1010))
#: The recipes' held-out evaluation: three random starts in each of the ten held-out towns (30 episodes), as
#: keyword arguments of :func:`evaluate` and :func:`learning_curve`.
HELD_OUT = {"seeds": HELD_OUT_SEEDS[:3], "towns": HELD_OUT_TOWNS}


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
             seeds: Sequence[int] = HELD_OUT_SEEDS, towns: Sequence | None = None) -> EvalResult:
    """Run ``act(obs) -> action`` for one episode per seed of ``seeds`` in the env of ``env_kwargs`` (default
    :data:`RL_ENV`) and score it: route completion, collision / off-road, PDMS (:mod:`stag_sim.metrics`). With
    ``towns`` (e.g. :data:`HELD_OUT_TOWNS`), every seed runs in every town (the env's ``scene`` set to each)."""
    rows = []
    for town in towns if towns is not None else [None]:
        kwargs = {**(env_kwargs or {}), **({} if town is None else {"scene": town})}
        rows += _episodes(act, make_env(**kwargs), seeds)
    rc, col, off, pdms = (np.array(v) for v in zip(*rows))
    return EvalResult(float(rc.mean()), int(col.sum()), int(off.sum()), float(pdms.mean()), len(rows),
                      [(float(a), bool(b), float(c)) for a, b, _, c in rows])


def _episodes(act, env, seeds) -> list[tuple[float, bool, bool, float]]:
    """(route completion, collided, off-road, PDMS) of one episode per seed in ``env`` (closed after)."""
    from stag_sim.app.episode import TraceRecorder, episode_trace
    from stag_sim.metrics import compute_metrics, summarize

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
    return rows


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
                   seeds: Sequence[int] = HELD_OUT_SEEDS, log: Callable[[str], None] = print,
                   towns: Sequence | None = None) -> list[dict]:
    """Train ``model`` (SB3) for ``total_steps`` env steps, evaluating on ``seeds`` (in each of ``towns``, if
    given) every ``eval_every`` steps (and before training). Returns ``[{"steps", "route_completion",
    "collisions", "collision_free", "offroad", "pdms", "episodes", "wall_s"}]``."""
    import time

    t0 = time.perf_counter()
    points = []

    def record(steps: int) -> None:
        r = evaluate(sb3_policy(model), env_kwargs, seeds, towns)
        points.append({"steps": steps, "route_completion": r.route_completion, "collisions": r.collisions,
                       "collision_free": 1.0 - r.collisions / r.episodes, "offroad": r.offroad, "pdms": r.pdms,
                       "episodes": r.episodes, "wall_s": round(time.perf_counter() - t0, 1)})
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


def recipe_parser(doc: str, out: str, eval_every: int = 40_000):
    """The PPO recipes' command line: ``--obs`` (state / bev), ``--steps``, ``--eval-every``, ``--seed``, ``--out``
    (an ``argparse.ArgumentParser`` the recipe adds its own options to)."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--obs", choices=("state", "bev"), default="state", help="observation key (default state)")
    ap.add_argument("--steps", type=int, default=200_000, help="env steps to train (default 200000)")
    ap.add_argument("--eval-every", type=int, default=eval_every, help="held-out evaluation interval [steps]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(out), help="where the model and curve go")
    return ap


def train_recipe(venv, args, env_kwargs: dict):
    """SB3 PPO with default hyperparameters on ``venv`` for ``args.steps``, its learning curve on :data:`HELD_OUT`,
    saved as ``args.out``/model.zip and curve.json. Returns (model, curve)."""
    import json

    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", venv, seed=args.seed, verbose=0)  # default hyperparameters
    curve = learning_curve(model, args.steps, args.eval_every, env_kwargs, **HELD_OUT)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    (args.out / "curve.json").write_text(json.dumps(curve, indent=1))
    return model, curve


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
    from matplotlib.ticker import FuncFormatter

    for ax, label in zip(axes, ("route completion (held-out)", "PDMS (held-out)")):
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
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


#: The camera policy's env: the embedded town (rendered), the front camera (small), the ego's own state, random
#: starts, the log expert in the info (the DAgger teacher); no privileged keys.
CAMERA_ENV = {"scene": None, "cameras": ("CAM_FRONT",), "observations": ("cameras", "ego"), "image_size": (64, 112),
              "start": {"random": True}, "expert_action": True}


class CameraPolicy:
    """A small CNN from one camera image (+ the ego state) to an action in [-1, 1]^2 (torch, CPU).

    Args:
        camera: the observation key of the image; image (H, W, 3) uint8 is scaled to [0, 1].
    """

    def __init__(self, camera: str = "CAM_FRONT", seed: int = 0) -> None:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.camera = camera
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(64 * 8 + 4, 128), nn.ReLU(), nn.Linear(128, 2), nn.Tanh())
        self.params = list(self.cnn.parameters()) + list(self.head.parameters())

    def _forward(self, images, ego):
        import torch

        x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
        e = torch.as_tensor(ego, dtype=torch.float32) / torch.tensor([20.0, 5.0, 1.0, 0.6])
        return self.head(torch.cat([self.cnn(x), e], 1))

    def __call__(self, obs: dict) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._forward(obs[self.camera][None], obs["ego"][None])[0].numpy()

    def fit(self, images: np.ndarray, ego: np.ndarray, actions: np.ndarray, epochs: int = 4, batch: int = 128,
            lr: float = 1e-3, seed: int = 0) -> float:
        """Behaviour cloning: mean squared error to ``actions`` (N, 2); returns the last epoch's mean loss."""
        import torch

        opt = torch.optim.Adam(self.params, lr=lr)
        rng = np.random.default_rng(seed)
        target = torch.as_tensor(actions, dtype=torch.float32)
        loss_sum = 0.0
        for _ in range(epochs):
            order = rng.permutation(len(actions))
            loss_sum, n = 0.0, 0
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                loss = torch.mean((self._forward(images[idx], ego[idx]) - target[idx]) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum, n = loss_sum + float(loss.detach()) * len(idx), n + len(idx)
            loss_sum /= max(n, 1)
        return loss_sum


def distill(teacher: Callable[[dict, dict], np.ndarray] | None = None, steps_per_round: int = 4000, rounds: int = 4,
            env_kwargs: dict | None = None, epochs: int = 4, seed: int = 0, log: Callable[[str], None] = print):
    """DAgger into a :class:`CameraPolicy`: round 0 drives the teacher, later rounds drive the student (the teacher
    takes over with probability 0.5 ** round) while the teacher labels every visited state; the student is refit on
    everything gathered after each round. ``teacher(obs, info) -> action``; default: the log expert
    (``info["expert_action"]``). A privileged teacher (e.g. a PPO policy on ``state``) reads its own keys: make the
    env observe them too (``env_kwargs={"observations": ("cameras", "ego", "state")}``).

    Returns the student policy.
    """
    teacher = teacher or (lambda obs, info: info["expert_action"])
    kwargs = {**CAMERA_ENV, **(env_kwargs or {})}
    env = make_env(**kwargs)
    cam = env.unwrapped.camera_names[0]
    student = CameraPolicy(cam, seed)
    rng = np.random.default_rng(seed)
    images, egos, labels = [], [], []
    episode = 0
    for r in range(rounds):
        beta = 1.0 if r == 0 else 0.5 ** r
        obs, info = env.reset(seed=10_000 + episode)
        for _ in range(steps_per_round):
            label = np.asarray(teacher(obs, info), np.float32)
            images.append(obs[cam])
            egos.append(obs["ego"])
            labels.append(label)
            act = label if rng.random() < beta else student(obs)
            obs, _, term, trunc, info = env.step(act)
            if term or trunc:
                episode += 1
                obs, info = env.reset(seed=10_000 + episode)
        loss = student.fit(np.stack(images), np.stack(egos), np.stack(labels), epochs=epochs, seed=seed + r)
        log(f"round {r}: {len(labels)} labelled states, beta {beta:.2f}, BC loss {loss:.4f}")
    env.close()
    return student
