"""A native batched vector env: N StagDrive envs on one scene, all cameras rendered in ONE renderer call.

Reached through ``gym.make_vec("StagDrive-v0", num_envs=N, vectorization_mode="vector_entry_point")``. The
sub-envs share one 4D scene and renderer; each step advances every world, then renders N x C cameras with each
env's own object poses in a single :meth:`PointRenderer.render` call (camera-free envs render nothing). Autoreset
follows Gymnasium's default next-step mode: the step after an episode ends resets that sub-env (its action is
ignored, reward 0); ``autoreset_mode="same_step"`` resets it within the step that ended it and puts the last
observation in ``infos["final_obs"]`` (masked by ``infos["_final_obs"]``), as Stable-Baselines3 expects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from stag_sim.envs.rendering import camera_names_kwarg
from stag_sim.envs.stag_drive import StagDriveEnv, load_scene
from stag_sim.errors import ValidationError


class StagDriveVectorEnv(VectorEnv):
    """``num_envs`` StagDrive-v0 envs stepped together, rendered in one batched call."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, scene=None, render_mode: str | None = None, autoreset_mode: str = "next_step",
                 **kwargs: Any) -> None:
        if int(num_envs) < 1:
            raise ValidationError(f"num_envs: must be >= 1, got {num_envs}")
        modes = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}
        if autoreset_mode not in modes:
            raise ValidationError(f"autoreset_mode: {autoreset_mode!r} is not one of {', '.join(modes)}")
        self.metadata = {**self.metadata, "autoreset_mode": modes[autoreset_mode]}
        self.num_envs = int(num_envs)
        log, scene_dir = load_scene(scene)
        first = StagDriveEnv(scene=log, render_mode=render_mode, _scene_dir=scene_dir, **kwargs)
        self.envs = [first] + [StagDriveEnv(scene=log, render_mode=render_mode, renderer=first.renderer,
                                            _scene_dir=scene_dir, **kwargs) for _ in range(self.num_envs - 1)]
        self.renderer = first.renderer
        self.render_mode = render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, (list, tuple)) else [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValidationError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        infos: dict = {}
        for i, env in enumerate(self.envs):
            infos = self._add_info(infos, env.reset_state(seed=seeds[i], options=options), i)
        self._autoreset[:] = False
        return self._observe_all(), infos

    def step(self, actions):
        actions = np.asarray(actions)
        rewards = np.zeros(self.num_envs)
        terms = np.zeros(self.num_envs, bool)
        truncs = np.zeros(self.num_envs, bool)
        infos: dict = {}
        for i, env in enumerate(self.envs):
            if self._autoreset[i]:
                info = env.reset_state()
            else:
                rewards[i], terms[i], truncs[i], info = env.step_state(actions[i])
            infos = self._add_info(infos, info, i)
        done = terms | truncs
        per_env = self._observe(range(self.num_envs))
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and done.any():
            final = np.empty(self.num_envs, object)
            reset = np.flatnonzero(done)
            for i in reset:
                final[i] = per_env[i]
                self.envs[i].reset_state()
            for i, obs in zip(reset, self._observe(reset)):  # only the reset envs are drawn again
                per_env[i] = obs
            infos["final_obs"], infos["_final_obs"] = final, done.copy()
            done[:] = False
        self._autoreset = done
        return self._batch(per_env), rewards, terms, truncs, infos

    def _observe_all(self):
        return self._batch(self._observe(range(self.num_envs)))

    def _batch(self, per_env: list) -> dict:
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, per_env, out)

    def _observe(self, indices) -> list[dict]:
        """The observations of the envs ``indices``: all their cameras in one renderer call (none camera-free)."""
        envs = [self.envs[i] for i in indices]
        reqs = [env.render_request() for env in envs]
        if not envs or reqs[0] is None:
            return [env.observation(None, None) for env in envs]
        C = len(reqs[0].camera_poses)
        res = self.renderer.render(np.concatenate([r.camera_poses for r in reqs]), [k for r in reqs for k in r.intrinsics],
                                   np.concatenate([np.repeat(r.object_poses[None], C, axis=0) for r in reqs]),
                                   np.concatenate([np.repeat(r.object_mask[None], C, axis=0) for r in reqs]),
                                   **camera_names_kwarg(self.renderer, [c for r in reqs for c in r.cameras]))
        return [env.observation(res.rgb[j * C:(j + 1) * C], res.depth[j * C:(j + 1) * C]) for j, env in enumerate(envs)]

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return np.stack([env.render() for env in self.envs])

    def close_extras(self, **kwargs):
        for env in self.envs:
            env.close()
