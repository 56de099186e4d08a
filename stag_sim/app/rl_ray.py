"""The batched RL env across processes and machines: a Stable-Baselines3 ``VecEnv`` whose sub-envs live in Ray
actors, each holding one native batched vector env (:func:`stag_sim.app.rl.sb3_vec_env`).

The learner (SB3, the policy, the optimiser) stays in the driver process; each step sends every actor its slice
of the actions (non-blocking), then gathers and concatenates the results, so a rollout equals a local
``rl.sb3_vec_env(num_workers * envs_per_worker)`` given the same seeds. Ray comes with the ``ray`` extra
(``pip install 'stag-sim[ray]'``); see docs/rl_ray.md for one machine and for a cluster (``RAY_ADDRESS``).
"""

from __future__ import annotations

import os

import numpy as np

from stag_sim.errors import MissingExtraError, ValidationError

try:
    from stable_baselines3.common.vec_env import VecEnv
except ImportError:
    raise MissingExtraError("stable-baselines3", "rl", "the Ray vector env (stag_sim.app.rl_ray)") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray", "the Ray vector env (stag_sim.app.rl_ray)") from None
    return ray


class _Worker:
    """One Ray actor: a native batched vector env of ``num_envs`` envs, stepped as a Stable-Baselines3 VecEnv."""

    def __init__(self, num_envs: int, env_kwargs: dict) -> None:
        from stag_sim.app import rl

        self.venv = rl.sb3_vec_env(num_envs, **env_kwargs)

    def spaces(self):
        return self.venv.observation_space, self.venv.action_space

    def reset(self, seed: int | None, options: list[dict]):
        if seed is not None:
            self.venv.seed(int(seed))  # its envs get seed, seed + 1, ... as SB3's VecEnv.seed gives them
        self.venv.set_options(options)
        return self.venv.reset()

    def step(self, actions):
        return self.venv.step(actions)

    def call(self, what: str, name: str, args: tuple, kwargs: dict, indices: list[int]):
        """``get_attr`` / ``set_attr`` / ``env_method`` / ``env_is_wrapped`` of the local envs ``indices``."""
        out = getattr(self.venv, what)(name, *args, indices=indices, **kwargs)
        return [None] * len(indices) if out is None else out

    def close(self) -> None:
        self.venv.close()


def _own(obs):
    """A writable copy of an observation ``ray.get`` returned (its arrays are read-only views of Ray's object
    store, which they would keep pinned)."""
    return {k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs)


def _concat_obs(parts: list):
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or join Ray unless it is initialised already; returns whether this call started it.

    ``address`` (else the ``RAY_ADDRESS`` environment variable): join that cluster (``"auto"``: the one ``ray start``
    began on this machine; ``"HOST:6379"``; ``"ray://HOST:10001"``). Without either, a private local Ray instance
    with ``num_cpus`` CPUs (default: this machine's), even where ``ray start`` runs one here.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def ray_vec_env(num_workers: int, envs_per_worker: int, *, address: str | None = None, num_cpus_per_worker: float = 1,
                **env_kwargs):
    """A Stable-Baselines3 ``VecEnv`` of ``num_workers * envs_per_worker`` StagDrive envs in ``num_workers`` Ray
    actors (``num_cpus_per_worker`` CPUs each), each a native batched vector env of ``envs_per_worker`` envs.

    ``env_kwargs`` override :data:`stag_sim.app.rl.RL_ENV` as in :func:`~stag_sim.app.rl.sb3_vec_env`; they are
    pickled to the actors (a ``SceneLog`` travels whole; a scene cache path must exist on every node; the default
    synthetic town is generated into each node's cache on first use). Ray is started (or joined: ``address`` /
    ``RAY_ADDRESS``) unless initialised; ``close()`` kills the actors and shuts Ray down if this call started it.
    ``seed(s)`` gives actor ``w``'s env ``i`` the seed ``s + w * envs_per_worker + i``.
    """
    if int(num_workers) < 1:
        raise ValidationError(f"num_workers: must be >= 1, got {num_workers}")
    if int(envs_per_worker) < 1:
        raise ValidationError(f"envs_per_worker: must be >= 1, got {envs_per_worker}")
    if not float(num_cpus_per_worker) >= 0:
        raise ValidationError(f"num_cpus_per_worker: must be >= 0, got {num_cpus_per_worker}")
    ray = _import_ray()
    need = int(num_workers) * float(num_cpus_per_worker)
    started = ensure_ray(address, num_cpus=max(os.cpu_count() or 1, int(np.ceil(need))))
    have = ray.cluster_resources().get("CPU", 0.0)
    if need > have:  # the actors would wait for CPUs forever
        if started:
            ray.shutdown()
        raise ValidationError(f"ray_vec_env: {num_workers} workers x {num_cpus_per_worker} CPU need {need:g} CPUs; "
                              f"the Ray cluster has {have:g} (fewer workers, or num_cpus_per_worker=0.5)")
    return RayVecEnv(int(num_workers), int(envs_per_worker), float(num_cpus_per_worker), env_kwargs, started)


class RayVecEnv(VecEnv):
    """See :func:`ray_vec_env` (build it with that function)."""

    def __init__(self, num_workers: int, envs_per_worker: int, num_cpus_per_worker: float, env_kwargs: dict,
                 owns_ray: bool = False) -> None:
        ray = _import_ray()
        self._ray, self._owns_ray = ray, owns_ray
        self.num_workers, self.envs_per_worker = num_workers, envs_per_worker
        actor = ray.remote(num_cpus=num_cpus_per_worker)(_Worker)
        self.workers = [actor.remote(envs_per_worker, env_kwargs) for _ in range(num_workers)]
        self._pending = None
        self.closed = False
        try:
            obs_space, act_space = ray.get([w.spaces.remote() for w in self.workers])[0]
            super().__init__(num_workers * envs_per_worker, obs_space, act_space)
        except BaseException:
            self.close()
            raise

    def _slices(self):
        n = self.envs_per_worker
        return [slice(w * n, (w + 1) * n) for w in range(self.num_workers)]

    def reset(self):
        parts = self._ray.get([w.reset.remote(self._seeds[s.start], self._options[s])
                               for w, s in zip(self.workers, self._slices())])
        self._reset_seeds()
        self._reset_options()
        return _concat_obs(parts)

    def step_async(self, actions) -> None:
        actions = np.asarray(actions)
        self._pending = [w.step.remote(actions[s]) for w, s in zip(self.workers, self._slices())]

    def step_wait(self):
        parts, self._pending = self._ray.get(self._pending), None
        obs, rewards, dones, infos = zip(*parts)
        infos = [info for part in infos for info in part]
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = _own(info["terminal_observation"])
        return _concat_obs(list(obs)), np.concatenate(rewards), np.concatenate(dones), infos

    def _call(self, what: str, name: str, args: tuple, kwargs: dict, indices) -> list:
        """Forward ``what`` to the actors holding the envs ``indices`` (global), results in the order asked."""
        idx = list(self._get_indices(indices))
        by_worker: dict[int, list[int]] = {}
        for i in idx:
            by_worker.setdefault(i // self.envs_per_worker, []).append(i % self.envs_per_worker)
        refs = {w: self.workers[w].call.remote(what, name, args, kwargs, local) for w, local in by_worker.items()}
        got = {w: iter(r) for w, r in zip(refs, self._ray.get(list(refs.values())))}
        return [next(got[i // self.envs_per_worker]) for i in idx]

    def get_attr(self, attr_name, indices=None):
        return self._call("get_attr", attr_name, (), {}, indices)

    def set_attr(self, attr_name, value, indices=None) -> None:
        self._call("set_attr", attr_name, (value,), {}, indices)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        return self._call("env_method", method_name, method_args, method_kwargs, indices)

    def env_is_wrapped(self, wrapper_class, indices=None):
        return self._call("env_is_wrapped", wrapper_class, (), {}, indices)

    def close(self) -> None:
        """Close every actor's envs, kill the actors (their CPUs return to the cluster), shut Ray down if
        :func:`ray_vec_env` started it. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            self._ray.get([w.close.remote() for w in self.workers], timeout=30)
        except Exception:  # noqa: BLE001 - a dead or stuck actor is killed below all the same
            pass
        for w in self.workers:
            self._ray.kill(w)
        self.workers = []
        if self._owns_ray:
            self._ray.shutdown()
