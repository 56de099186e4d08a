"""Offline data export: StagDrive episodes as (obs, action, reward, next_obs, done) for offline RL / imitation.

One compressed ``.npz`` per episode plus an ``index.json``::

    <out>/episode_00000.npz
        obs/<key>        (T+1, ...)  every observation of the episode, reset first (keys as in the env's Dict space:
                                     camera names -> uint8 (H, W, 3), ego (4,), route (2N,), depth_<CAM> ...)
        action           (T, ...)    the action taken at each step (float32)
        expert_action    (T, ...)    the log's action at each step, in the same action space (behaviour cloning)
        reward           (T,)        float32
        terminated       (T,)        bool
        truncated        (T,)        bool
    <out>/index.json     scenario, agent, seed, steps, keys/shapes/dtypes of every episode; env settings

``next_obs`` is ``obs[1:]`` and ``done`` is ``terminated | truncated``; :func:`load_episode` returns all five
(plus the rest) as plain numpy arrays, e.g. to fill a Stable-Baselines3 ``ReplayBuffer`` or a d3rlpy ``MDPDataset``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from stag_sim.errors import EvalError

INDEX_FORMAT = "stag-sim-episodes"
INDEX_VERSION = 1


def export_episodes(scenario_paths, out: str | os.PathLike, agent_spec: str = "log_replay", *, episodes: int = 1,
                    env_overrides: dict | None = None, progress: bool = True) -> Path:
    """Run ``episodes`` episodes of every scenario with ``agent_spec`` (default: the expert) and write them."""
    from stag_sim.agents import check_agent
    from stag_sim.app.preflight import check_scenarios
    from stag_sim.fsutil import atomic_directory, check_writable

    if episodes < 1:
        raise EvalError(f"episodes: must be >= 1, got {episodes}")
    check_agent(agent_spec)
    scenarios = check_scenarios([str(p) for p in scenario_paths], env_overrides)
    final = check_writable(out, "--out")
    if final.is_dir() and any(final.iterdir()) and not (final / "index.json").is_file():
        raise EvalError(f"--out: {final} exists and is not an episode export (no index.json); choose a new directory")
    with atomic_directory(final) as out:  # built aside, moved into place when every episode is written
        _export(scenarios, out, agent_spec, episodes, env_overrides, progress)
    return final


def _export(scenarios, out: Path, agent_spec: str, episodes: int, env_overrides: dict | None, progress: bool) -> None:
    from tqdm import tqdm

    from stag_sim.agents import make_agent
    from stag_sim.app.episode import make_env
    from stag_sim.fsutil import atomic_open

    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "agent": agent_spec, "env_overrides": env_overrides or {},
             "episodes": []}
    n = 0
    for sc in scenarios:
        env = make_env(sc, env_overrides)
        agent = make_agent(agent_spec, env, seed=sc.seed)
        for e in range(episodes):
            seed = sc.seed + e
            obs, info = env.reset(seed=seed)
            agent.reset(obs, info)
            frames = {k: [v] for k, v in obs.items()}
            cols = {"action": [], "expert_action": [], "reward": [], "terminated": [], "truncated": []}
            bar = tqdm(total=env.unwrapped.max_steps, desc=f"export {sc.name} #{e}", unit="step", disable=not progress,
                       leave=False)
            while True:
                expert = info["expert_action"]
                action = np.asarray(agent.act(obs), np.float32)
                obs, reward, term, trunc, info = env.step(action)
                for k, v in obs.items():
                    frames[k].append(v)
                for k, v in (("action", action), ("expert_action", expert), ("reward", reward), ("terminated", term),
                             ("truncated", trunc)):
                    cols[k].append(v)
                bar.update(1)
                if term or trunc:
                    break
            bar.close()
            arrays = {f"obs/{k}": np.stack(v) for k, v in frames.items()}
            arrays.update(action=np.stack(cols["action"]).astype(np.float32),
                          expert_action=np.stack(cols["expert_action"]).astype(np.float32),
                          reward=np.asarray(cols["reward"], np.float32), terminated=np.asarray(cols["terminated"], bool),
                          truncated=np.asarray(cols["truncated"], bool))
            name = f"episode_{n:05d}.npz"
            with atomic_open(out / name, "wb") as f:
                np.savez_compressed(f, **arrays)
            index["episodes"].append({
                "file": name, "scenario": sc.name, "seed": seed, "steps": int(len(cols["reward"])),
                "termination_reason": info["termination_reason"],
                "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
            })
            n += 1
        env.close()
    with atomic_open(out / "index.json") as f:
        json.dump(index, f, indent=1)


def load_episode(path: str | os.PathLike) -> dict[str, np.ndarray | dict]:
    """One exported episode as ``obs``, ``next_obs`` (dicts of (T, ...) arrays), ``action``, ``expert_action``,
    ``reward``, ``terminated``, ``truncated`` and ``done`` (T,)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: no such episode file")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    full = {k[4:]: v for k, v in data.items() if k.startswith("obs/")}
    if not full or "action" not in data:
        raise EvalError(f"{path}: not a StagDrive episode (expected obs/<key> and action arrays)")
    out = {k: v for k, v in data.items() if not k.startswith("obs/")}
    out["obs"] = {k: v[:-1] for k, v in full.items()}
    out["next_obs"] = {k: v[1:] for k, v in full.items()}
    out["done"] = out["terminated"] | out["truncated"]
    return out
