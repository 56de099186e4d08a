"""A native batched vector env: N StagDrive envs stepped as arrays, all cameras rendered in ONE renderer call.

Reached through ``gym.make_vec("StagDrive-v0", num_envs=N, vectorization_mode="vector_entry_point")``. The world
steps every sub-env at once (:func:`stag_sim.world_batch.step`: numpy over the batch, the same semantics as the
single env); reward, termination, the ``ego`` / ``route`` / ``state`` observations and the infos are computed as
arrays too (:mod:`stag_sim.envs.batch`). With cameras, the N x C views are drawn in a single
:meth:`PointRenderer.render` call with each env's own object poses; ``bev`` rasters and ``trajectory`` actions
are per env. The sub-envs (``vec.envs``) draw resets (seeds, scene lists, random starts) and build worlds; their
``state`` is read back from the arrays when asked.

Autoreset follows Gymnasium's default next-step mode: the step after an episode ends resets that sub-env (its
action is ignored, reward 0); ``autoreset_mode="same_step"`` resets it within the step that ended it and puts the
last observation in ``infos["final_obs"]`` (masked by ``infos["_final_obs"]``), as Stable-Baselines3 expects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from stag_sim import world_batch as wbatch
from stag_sim.envs import batch as B
from stag_sim.envs.rendering import camera_names_kwarg
from stag_sim.envs.stag_drive import StagDriveEnv, load_scene
from stag_sim.errors import ValidationError
from stag_sim.geometry import pose_xy_yaw

#: info keys computed as arrays every step (``expert_action`` too with ``expert_action=True``)
INFO_KEYS = ("termination_reason", "progress", "route_completion", "collision", "offroad", "collided_with",
             "clipped_actions", "time_s", "ego_pose", "reward_terms")


class StagDriveVectorEnv(VectorEnv):
    """``num_envs`` StagDrive-v0 envs stepped together as arrays, rendered in one batched call."""

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
        if isinstance(scene, (list, tuple)):  # a scene list: every sub-env draws from it at each reset
            first = StagDriveEnv(scene=scene, render_mode=render_mode, **kwargs)
            make = lambda: StagDriveEnv(scene=scene, render_mode=render_mode, **kwargs)
        else:
            from stag_sim.env_config import EnvConfig

            log, scene_dir = load_scene(scene, "cameras" in EnvConfig.from_kwargs(**kwargs).observation_keys)
            first = StagDriveEnv(scene=log, render_mode=render_mode, _scene_dir=scene_dir, **kwargs)
            make = lambda: StagDriveEnv(scene=log, render_mode=render_mode, renderer=first.renderer,
                                        _scene_dir=scene_dir, **kwargs)
        self.envs = [first] + [make() for _ in range(self.num_envs - 1)]
        self.renderer = first.renderer
        self.render_mode = render_mode
        self.config = first.config
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, bool)
        self._clipped = np.zeros(self.num_envs, np.int64)
        self._max_steps = np.ones(self.num_envs, np.int64)
        self._wb: wbatch.WorldBatch | None = None
        self._bs: wbatch.BatchState | None = None
        self._last: dict = {}

    # ---- state -------------------------------------------------------------------------------------------------
    @property
    def world_batch(self) -> "wbatch.WorldBatch":
        """The sub-envs' worlds as arrays (:class:`~stag_sim.world_batch.WorldBatch`)."""
        return self._wb

    @property
    def batch_state(self) -> "wbatch.BatchState":
        """The sub-envs' current states as arrays (:class:`~stag_sim.world_batch.BatchState`)."""
        return self._bs

    def _row_state(self, i: int):
        return self._bs.state(i, self._wb.worlds[i])

    def _reset_rows(self, rows, seeds=None, options=None) -> None:
        rows = list(rows)
        for j, i in enumerate(rows):
            self.envs[i].reset_state(seed=None if seeds is None else seeds[j], options=options)
            self._max_steps[i] = self.envs[i].max_steps
        self._clipped[rows] = 0
        worlds = [self.envs[i].world for i in rows]
        states = [self.envs[i].state for i in rows]
        if self._wb is None or len(rows) == self.num_envs:
            self._wb, self._bs = wbatch.reset([e.world for e in self.envs], [e.state for e in self.envs])
            return
        old = self._wb
        self._wb = old.with_worlds(rows, worlds)
        if self._wb.arrays["K"] != self._bs.agent_s.shape[1]:  # a scene with more agents: re-pad every row
            keep = [self._bs.state(i, old.worlds[i]) if i not in rows else None for i in range(self.num_envs)]
            for i, s in zip(rows, states):
                keep[i] = s
            self._bs = wbatch.BatchState.from_states(keep, self._wb.worlds, self._wb.arrays["K"])
        else:
            self._bs = self._bs.with_rows(rows, states, worlds)

    # ---- gym API -----------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, (list, tuple)) else [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValidationError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        self._reset_rows(range(self.num_envs), seeds, options)
        self._autoreset[:] = False
        self._last = self._observe()
        return self._last, self._infos(None, np.ones(self.num_envs, bool))

    def step(self, actions):
        if self._bs is None:
            raise ValidationError("step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValidationError(f"actions: expected shape {self.action_space.shape}, got {actions.shape}")
        prev, veh = self._bs, self._wb.config.vehicle
        if self.config.action_mode == "control":
            accel, steer, n_clipped = B.controls(actions, veh)
        else:  # trajectory actions: each env's own tracker
            accel, steer, n_clipped = np.zeros(self.num_envs), np.zeros(self.num_envs), np.zeros(self.num_envs, int)
            for i in np.flatnonzero(~self._autoreset):
                self.envs[i].defer_state(lambda i=i: self._bs.state(i, self._wb.worlds[i]))
                accel[i], steer[i], n_clipped[i] = self.envs[i]._to_controls(actions[i])
        self._bs = wbatch.step(self._wb, prev, accel, steer)
        self._clipped += n_clipped
        new = self._bs
        if self.render_mode == "rgb_array":  # the bird's-eye view of render() draws each env's trail
            for i, env in enumerate(self.envs):
                env._trail.append((float(new.x[i]), float(new.y[i])))
        free = B.road_free(new.x, new.y, new.yaw, new.agent_xy, new.agent_valid, self.config.reward.free_distance)
        reward, terms, term, trunc, reason = B.outcome(
            self.config.reward, prev.route_s, new.route_s, self._wb.arrays["usable"], new.speed, free, new.collision,
            new.offroad, new.route_completed, n_clipped, new.step, self._max_steps)
        progress = new.route_s - prev.route_s
        fresh = self._autoreset.copy()
        if fresh.any():  # next-step autoreset: these envs reset instead of stepping
            self._reset_rows(np.flatnonzero(fresh))
            reward[fresh], term[fresh], trunc[fresh] = 0.0, False, False
        infos = self._infos((reason, progress, terms), fresh)
        done = term | trunc
        obs = self._observe()
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and done.any():
            rows = np.flatnonzero(done)
            final = np.empty(self.num_envs, object)
            for i in rows:
                final[i] = {k: v[i].copy() for k, v in obs.items()}
            self._reset_rows(rows)
            again = self._observe(rows)
            for k in obs:
                obs[k][rows] = again[k]
            infos["final_obs"], infos["_final_obs"] = final, done.copy()
            done[:] = False
        self._autoreset, self._last = done, obs
        for i, env in enumerate(self.envs):
            env.defer_state(lambda i=i: self._bs.state(i, self._wb.worlds[i]))
        return obs, reward, term, trunc, infos

    # ---- observations and infos --------------------------------------------------------------------------------
    def _observe(self, rows=None) -> dict:
        """The observations of the envs ``rows`` (default all), keys batched: ``ego`` / ``route`` / ``state`` as
        arrays, camera images from one renderer call, ``bev`` per env."""
        rows = np.arange(self.num_envs) if rows is None else np.asarray(rows)
        c, keys, bs, wb = self.config, self.envs[0].obs_keys, self._bs, self._wb
        out: dict = {}
        if "cameras" in keys or "bev" in keys:
            out.update(self._per_env(rows))
        if "ego" in keys:
            out["ego"] = np.stack([bs.speed, bs.accel, bs.yaw_rate, bs.steer], 1)[rows].astype(np.float32)
        if "route" in keys or "state" in keys:
            s = bs.route_s[:, None] + c.route_spacing * np.arange(1, c.num_route_points + 1)
            route = B.to_ego_frame(wbatch.route_points(wb, s)[0], bs.x, bs.y, bs.yaw)
            if "route" in keys:
                out["route"] = route.reshape(self.num_envs, -1).astype(np.float32)[rows]
            if "state" in keys:
                out["state"] = self._state_vectors(route)[rows]
        return out

    def _state_vectors(self, route: np.ndarray) -> np.ndarray:
        from stag_sim.envs.observations import state_vectors

        bs, wb, dt = self._bs, self._wb, self._wb.config.dt
        here_xy, here_yaw = wbatch.route_points(wb, bs.route_s[:, None])
        lateral, heading = B.route_errors(here_xy[:, 0], here_yaw[:, 0], bs.x, bs.y, bs.yaw)
        later_xy, _, later_valid = wbatch.logged_agents(wb, bs.time_s + dt)
        vel = B.velocities(bs.agent_xy, bs.agent_valid, later_xy, later_valid, dt, wb.arrays["simulated"],
                           bs.agent_speed, bs.agent_yaw)
        completion = np.clip(bs.route_s / wb.arrays["usable"], 0.0, 1.0)
        ego = np.stack([bs.speed, bs.accel, bs.yaw_rate, bs.steer], 1)
        return state_vectors(ego, bs.x, bs.y, bs.yaw, route, lateral, heading, completion,
                             bs.step / np.maximum(self._max_steps, 1), bs.agent_xy, bs.agent_yaw, bs.agent_valid, vel,
                             wb.arrays["sizes"], self.config.num_state_agents, wb.config.vehicle.max_steer)

    def _per_env(self, rows) -> dict:
        """Camera images (one renderer call for every env's cameras) and ``bev`` rasters of ``rows``."""
        keys, envs = self.envs[0].obs_keys, [self.envs[i] for i in rows]
        states = [self._row_state(i) for i in rows]
        out: dict = {}
        if "cameras" in keys:
            C = len(envs[0].camera_names)
            rgb, depth = [None] * len(rows), [None] * len(rows)
            groups: dict = {}  # one renderer call per scene in use (one call in all for a single scene)
            for j, env in enumerate(envs):
                groups.setdefault(id(env.renderer), (env.renderer, []))[1].append(j)
            for renderer, js in groups.values():
                reqs = [envs[j].render_request(states[j]) for j in js]
                res = renderer.render(np.concatenate([r.camera_poses for r in reqs]), [k for r in reqs for k in r.intrinsics],
                                      np.concatenate([np.repeat(r.object_poses[None], C, axis=0) for r in reqs]),
                                      np.concatenate([np.repeat(r.object_mask[None], C, axis=0) for r in reqs]),
                                      **camera_names_kwarg(renderer, [c for r in reqs for c in r.cameras]))
                for n, j in enumerate(js):
                    rgb[j], depth[j] = res.rgb[n * C:(n + 1) * C], res.depth[n * C:(n + 1) * C]
            for c, name in enumerate(envs[0].camera_names):
                out[name] = np.stack([im[c] for im in rgb])
                if self.config.depth:
                    out[f"depth_{name}"] = np.stack([d[c] for d in depth]).astype(np.float32)
        if "bev" in keys:
            out["bev"] = np.stack([env._bev_rasterizer().draw(s, *self._agents_of(env, s)) for env, s in zip(envs, states)])
        return out

    @staticmethod
    def _agents_of(env, state):
        from stag_sim.envs.observations import agent_velocities

        poses, valid = env.world.agent_poses(state)
        return poses, valid, agent_velocities(env.world, state, poses, valid)

    def _infos(self, stepped, fresh: np.ndarray) -> dict:
        """The step's infos as arrays (every key present for every env): ``stepped`` = (reasons, progress [m],
        reward terms) of the step, or None on reset; ``fresh`` (N,) rows that were just reset."""
        bs, wb, N = self._bs, self._wb, self.num_envs
        ones = np.ones(N, bool)
        reason = np.full(N, None, object)
        progress = np.zeros(N)
        terms = {k: np.zeros(N) for k in ("progress", "idle", "collision", "offroad", "clipped")}
        if stepped is not None:
            reason, progress, terms = stepped[0].copy(), stepped[1].copy(), {k: v.copy() for k, v in stepped[2].items()}
            reason[fresh], progress[fresh] = None, 0.0
            for v in terms.values():
                v[fresh] = 0.0
        ids = [w.log.objects.instance_ids for w in wb.worlds]
        collided = np.empty(N, object)
        for i in range(N):
            collided[i] = [ids[i][k] for k in np.flatnonzero(bs.hits[i])] if bs.collision[i] else []
        ego_pose = pose_xy_yaw(bs.x, bs.y, bs.yaw)
        for i, w in enumerate(wb.worlds):
            if w.ground is not None:  # a real log's ego rides on its logged ground
                ego_pose[i] = w.ego_pose(bs.state(i, w).ego)
        values = {"termination_reason": reason, "progress": progress,
                  "route_completion": np.clip(bs.route_s / wb.arrays["usable"], 0.0, 1.0), "collision": bs.collision.copy(),
                  "offroad": bs.offroad.copy(), "collided_with": collided, "clipped_actions": self._clipped.copy(),
                  "time_s": bs.time_s.copy(), "ego_pose": ego_pose}
        infos: dict = {}
        for k, v in values.items():
            infos[k], infos["_" + k] = v, ones
        infos["reward_terms"] = {**terms, **{"_" + k: ones for k in terms}}
        infos["_reward_terms"] = ones
        if self.config.expert_action:
            infos["expert_action"] = np.stack([env.expert_action(self._row_state(i)) for i, env in enumerate(self.envs)])
            infos["_expert_action"] = ones
        return infos

    def render(self):
        if self.render_mode != "rgb_array" or self._bs is None:
            return None
        for i, env in enumerate(self.envs):
            env._last_obs = {k: v[i] for k, v in self._last.items()}
        return np.stack([env.render() for env in self.envs])

    def close_extras(self, **kwargs):
        for env in self.envs:
            env.close()
