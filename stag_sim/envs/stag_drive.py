"""StagDrive-v0: the Gymnasium env around the stateless world and the point renderer.

One episode: the ego starts at the logged pose of ``start_frame``; each step it applies an action (control or a
tracked trajectory) through the kinematic bicycle, the other agents move (log replay or IDM), the six cameras move
rigidly with the ego, and the renderer draws what they see from the scene's 4D point cloud.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from stag_sim.env_config import EnvConfig
from stag_sim.envs.rendering import RenderRequest, as_renderer
from stag_sim.envs.scenes import SceneList, load_scene
from stag_sim.control import TrackerState, control_inputs, track
from stag_sim.errors import ValidationError
from stag_sim.geometry import invert_transform
from stag_sim.world import World, expert, reset, step

EGO_STATE_FIELDS = ("speed", "accel", "yaw_rate", "steer")  # [m/s, m/s^2, rad/s, rad]
EGO_STATE_BOUND = 100.0  # observation-space bound of every ego-state entry (far beyond any vehicle's limits)
ROUTE_BOUND = 1e4  # [m] observation-space bound of route point coordinates
DEPTH_BOUND = 1e4  # [m] observation-space bound of depth


def _as_mapping(world) -> dict:
    """A world setting given as a mapping or a :class:`~stag_sim.world.WorldConfig`, as a mapping of what it sets."""
    if isinstance(world, dict):
        return dict(world)
    import dataclasses

    default = type(world)()
    return {f.name: getattr(world, f.name) for f in dataclasses.fields(world) if getattr(world, f.name) != getattr(default, f.name)}


class StagDriveEnv(gym.Env):
    """Closed-loop driving on a logged scene. See the README's RL section and :class:`stag_sim.env_config.EnvConfig`.

    ``scene``: None (the embedded synthetic town), a scene cache path or a SceneLog. ``scenario``: a scenario file,
    a shipped scenario's name or a :class:`stag_sim.scenario.Scenario`; it sets the scene (unless ``scene`` is
    given), start frame, duration, route, agents, scripted events and the default reset options (ego offset and
    speed); explicit keyword settings override the scenario's ``env`` block.

    Observation (Dict): one ``(H, W, 3)`` uint8 image per observed camera (keys = camera names), ``ego``
    (4,) float32 = (speed [m/s], accel [m/s^2], yaw_rate [rad/s], steer [rad]), ``route`` (2N,) float32 =
    (x0, y0, x1, y1, ...) route points ahead in the ego frame [m] (flat, as vector policies expect), and optionally ``depth_<CAM>`` (H, W) float32 [m].

    Info: ``termination_reason`` (collision / offroad / route_completed / truncated / None), ``expert_action``
    (the log's action in this env's action space; only with ``expert_action=True``, the default), ``progress`` [m], ``route_completion`` [0..1], ``collision``,
    ``offroad``, ``collided_with``, ``clipped_actions`` (running count), ``time_s``, ``ego_pose`` (4, 4), and on
    steps ``reward_terms`` (the reward's parts: progress, collision, offroad, clipped; they sum to the reward).

    Episodes end when the ego crashes, leaves the road or completes its route (``terminated``), or when the log (or
    ``max_steps``) runs out (``truncated``); a step after that raises until :meth:`reset`. The progress reward is
    paid on the route's usable length only, so an episode's rewards sum to at most ``reward.progress`` (1).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, scene=None, scenario=None, render_mode: str | None = None, renderer=None,
                 _scene_dir: Path | None = None, **kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValidationError(f"render_mode: {render_mode!r} is not supported (use None or 'rgb_array')")
        if isinstance(renderer, str):  # renderer="point" / "refined" is the setting; an object is an injected renderer
            kwargs["renderer"], renderer = renderer, None
        self.scenario = None
        self._default_options: dict = {}
        self._scenes: list | None = None
        self._scene_index = 0
        if scenario is not None:
            from stag_sim.scenario import Scenario, env_settings, load_scenario, resolve_scene

            self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
            if scene is None:
                scene = resolve_scene(self.scenario)
            self.log, self.scene_dir = load_scene(scene)
            dt = float(_as_mapping(kwargs.get("world", {})).get("dt", dict(self.scenario.env.get("world", {})).get("dt", 0.1)))
            settings, self._default_options = env_settings(self.scenario, self.log, dt)
            world = {**settings.pop("world"), **_as_mapping(kwargs.pop("world", {}))}
            kwargs = {**settings, **kwargs, "world": world}
        config = EnvConfig.from_kwargs(**kwargs)
        if scenario is None:  # a camera-free env takes a synthetic town's layout-only log (no images: seconds to build)
            sensors = "cameras" in config.observation_keys
            if isinstance(scene, (list, tuple)):  # a list of scenes: every reset draws one (loaded on first draw)
                self._scenes = SceneList(scene, sensors)
                self.log, self.scene_dir = self._scenes[0]
            else:
                self.log, self.scene_dir = load_scene(scene, sensors)
        self.config = config.resolved(self.log)
        self.render_mode = render_mode
        if _scene_dir is not None:  # the batched vector env passes the loaded log and where it came from
            self.scene_dir = Path(_scene_dir)
        self.world = World.build(self.log, self.config.world)
        self._worlds = {(0, self.world.config.start_frame): self.world}  # per (scene, start frame)
        self._bev: dict[int, Any] = {}  # BEV rasterizer per world (static layers drawn once)
        h, w = self.config.image_size
        self.rig = self._rig(self.log)
        self._rigs = {0: self.rig}  # per scene of the list
        self.obs_keys = self.config.observation_keys
        # the observed cameras, rig order (none when the observation holds no images)
        self.camera_names = self.config.camera_names(self.rig) if "cameras" in self.obs_keys else ()
        self.cam_index = [self.rig.index(c) for c in self.camera_names]
        self._renderer = renderer if renderer is not None else (self._make_renderer() if self.camera_names else None)
        self._renderers = {0: self._renderer}
        self._draw = as_renderer(self._renderer) if self._renderer is not None else None  # the Renderer protocol
        veh = self.world.config.vehicle
        self.observation_space = spaces.Dict(self._spaces(h, w))
        if self.config.action_mode == "control":
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            reach = veh.max_speed * self.config.waypoint_dt * self.config.num_waypoints  # [m]
            self.action_space = spaces.Box(-reach, reach, (self.config.num_waypoints, 2), np.float32)
        self.max_steps = self._max_steps()
        self._deferred, self._poses_of, self._poses = None, None, None
        self._state = None
        self._ended: str | None = None  # why the episode ended (a step after it is refused until reset)
        self._tracker = TrackerState()
        self._trail: list[tuple[float, float]] = []
        self._clipped = 0
        self._last_obs = None

    def _rig(self, log):
        """``log``'s rig at the observed image size, moved by ``camera_offset``."""
        h, w = self.config.image_size
        rig = log.rig.with_resolution(w, h)
        return rig.translated(self.config.camera_offset) if any(self.config.camera_offset) else rig

    def _use_scene(self, i: int) -> None:
        """Switch to scene ``i`` of the scene list (its log, base world, rig and renderer, built once each)."""
        self._scene_index = i
        self.log, self.scene_dir = self._scenes[i]
        if i not in self._rigs:
            self._rigs[i] = self._rig(self.log)
        if self.camera_names and self.config.camera_names(self._rigs[i]) != self.camera_names:
            raise ValidationError(f"scene: every scene of the list must have the observed cameras "
                                  f"({', '.join(self.camera_names)}); {self.log.name!r} has {', '.join(self.log.rig.names)}")
        key = (i, self.config.world.start_frame)
        if key not in self._worlds:
            self._worlds[key] = World.build(self.log, self.config.world)
        self.world = self._worlds[key]
        self.rig = self._rigs[i]
        if self.camera_names and i not in self._renderers:
            self._renderers[i] = self._make_renderer()
        self._renderer = self._renderers.get(i)
        self._draw = as_renderer(self._renderer) if self._renderer is not None else None
        self.max_steps = self._max_steps()

    def _spaces(self, h: int, w: int) -> dict:
        c, obs = self.config, {}
        if "cameras" in self.obs_keys:
            obs.update({name: spaces.Box(0, 255, (h, w, 3), np.uint8) for name in self.camera_names})
            if c.depth:
                obs.update({f"depth_{name}": spaces.Box(0.0, DEPTH_BOUND, (h, w), np.float32) for name in self.camera_names})
        if "ego" in self.obs_keys:
            obs["ego"] = spaces.Box(-EGO_STATE_BOUND, EGO_STATE_BOUND, (len(EGO_STATE_FIELDS),), np.float32)
        if "route" in self.obs_keys:
            obs["route"] = spaces.Box(-ROUTE_BOUND, ROUTE_BOUND, (2 * c.num_route_points,), np.float32)
        if "state" in self.obs_keys:
            from stag_sim.envs.observations import state_size

            obs["state"] = spaces.Box(-1.0, 1.0, (state_size(c.num_route_points, c.num_state_agents),), np.float32)
        if "bev" in self.obs_keys:
            from stag_sim.envs.observations import BEV_CHANNELS

            obs["bev"] = spaces.Box(0, 255, (len(BEV_CHANNELS), c.bev.size_px, c.bev.size_px), np.uint8)
        return obs

    # ---- rendering ---------------------------------------------------------------------------------------------
    def _make_renderer(self):
        from stag_sim.render import PointRenderer
        from stag_sim.scene4d import Scene4DConfig, build_scene4d, load_scene4d

        from stag_sim.env_config import RENDERED_SOURCES

        cfg = Scene4DConfig(voxel_size=self.config.voxel_size)
        if self.log.source not in RENDERED_SOURCES:  # a real log keeps its images at the scale they are drawn
            cfg = dataclasses.replace(cfg, max_image_width=int(self.config.image_size[1]))
        scene4d = load_scene4d(self.scene_dir, cfg) if self.scene_dir is not None else build_scene4d(self.log, cfg)
        point = PointRenderer(scene4d, self.config.render)
        if self.config.renderer == "refined":  # point render, then the diffusion refiner (stag_sim.refiner)
            from stag_sim.refiner.renderer import make_refined_renderer

            return make_refined_renderer(point, self.config.refiner, self.log, self.cam_index)
        return point

    def _start_time(self) -> float:
        f = self.world.config.start_frame
        return float(self.log.timestamps_us[f] - self.log.timestamps_us[0]) * 1e-6

    def _max_steps(self) -> int:
        """Steps until the log ends from the current world's start (capped by ``max_steps``)."""
        steps_in_log = int(np.floor((self.world.end_time_s - self._start_time()) / self.world.config.dt + 1e-6))
        return min(self.config.max_steps or steps_in_log, steps_in_log)

    def camera_poses(self, state=None) -> np.ndarray:
        """(C_observed, 4, 4) ``T_world_from_camera`` of the observed cameras in ``state`` (default: current)."""
        state = state or self._state
        return self.rig.T_world_from_cameras(self.world.ego_pose(state.ego))[self.cam_index]

    def render_request(self, state=None) -> RenderRequest | None:
        """What the observed cameras need drawn in ``state`` (default: current), or None when the observation holds
        no images: one batch API call renders the requests of many envs together
        (:class:`~stag_sim.envs.vector.StagDriveVectorEnv`)."""
        if not self.camera_names:
            return None
        state = state or self._state
        poses, valid = self.agent_poses(state)
        return RenderRequest(self.camera_poses(state), [self.rig[i].intrinsics for i in self.cam_index], poses, valid,
                             tuple(self.camera_names), state.time_s)

    def _observe(self, state) -> dict:
        req = self.render_request(state)
        if req is None:
            return self.observation(None, None, state)
        res = self._draw.render(req)
        return self.observation(res.rgb, res.depth, state)

    def observation(self, rgb: np.ndarray | None, depth: np.ndarray | None, state=None) -> dict:
        """The observation of ``state`` (default: current) from the renders of its :meth:`render_request`: rgb
        (C, H, W, 3) uint8 and depth (C, H, W) [m], observed cameras in order (None for a camera-free
        observation). Kept for :meth:`render`."""
        state = state or self._state
        obs = self._assemble(state, rgb, depth)
        if state is self._state:
            self._last_obs = obs
        return obs

    def _assemble(self, state, rgb, depth) -> dict:
        keys, obs = self.obs_keys, {}
        if "cameras" in keys:
            obs.update({c: rgb[i] for i, c in enumerate(self.camera_names)})
            if self.config.depth:
                obs.update({f"depth_{c}": depth[i].astype(np.float32) for i, c in enumerate(self.camera_names)})
        e = state.ego
        if "ego" in keys:
            obs["ego"] = np.array([e.speed, e.accel, e.yaw_rate, e.steer], np.float32)
        if "route" in keys or "state" in keys:
            route = self._route_ahead(state)
            if "route" in keys:
                obs["route"] = route
        if "state" in keys or "bev" in keys:
            from stag_sim.envs import observations as O

            poses, valid = self.agent_poses(state)
            vel = O.agent_velocities(self.world, state, poses, valid)
            if "state" in keys:
                obs["state"] = O.state_vector(self.world, state, poses, valid, vel, route.reshape(-1, 2),
                                              self._route_completion(state), state.step / max(self.max_steps, 1),
                                              self.config.num_state_agents)
            if "bev" in keys:
                obs["bev"] = self._bev_rasterizer().draw(state, poses, valid, vel)
        return obs

    def _bev_rasterizer(self):
        from stag_sim.envs.observations import BevRasterizer

        key = id(self.world)
        if key not in self._bev:
            self._bev[key] = BevRasterizer(self.world, self.config.bev)
        return self._bev[key]

    def _route_ahead(self, state) -> np.ndarray:
        return self.route_points(state).reshape(-1).astype(np.float32)

    def route_points(self, state=None, count: int | None = None, spacing: float | None = None,
                     first: int = 1) -> np.ndarray:
        """(count, 2) [m] route points ahead of the ego in ``state`` (default: current), in its frame: every
        ``spacing`` [m] of route (defaults: the ``route`` observation's), the ``first`` one ``first * spacing``
        past the ego's progress (0: its projection on the route), continued straight past the route's end."""
        state = state or self._state
        count = self.config.num_route_points if count is None else int(count)
        spacing = self.config.route_spacing if spacing is None else float(spacing)
        from stag_sim.envs.batch import to_ego_frame

        xy, _ = self.world.route.interpolate(state.route_s + spacing * np.arange(first, first + count))
        e = state.ego
        return to_ego_frame(xy[None], np.array([e.x]), np.array([e.y]), np.array([e.yaw]))[0]

    # ---- actions -------------------------------------------------------------------------------------------------
    def _to_controls(self, action) -> tuple[float, float, int]:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            a = None
        if a is None or a.shape != self.action_space.shape:
            raise ValidationError(f"action: expected shape {self.action_space.shape} numbers, got "
                                  f"{repr(action)[:80]}" + ("" if a is None else f" (shape {a.shape})"))
        if not np.all(np.isfinite(a)):
            raise ValidationError(f"action: contains NaN or inf: {a.tolist()}")
        clipped = np.clip(a, self.action_space.low, self.action_space.high)
        n_clipped = int(np.count_nonzero(clipped != a))
        veh = self.world.config.vehicle
        if self.config.action_mode == "control":
            return (*control_inputs(clipped[0], clipped[1], veh), n_clipped)
        accel, steer, self._tracker = track(self._state.ego, clipped, self.config.waypoint_dt, self.world.config.dt, veh,
                                            state=self._tracker)
        return accel, steer, n_clipped

    def expert_action(self, state=None) -> np.ndarray:
        """The log's action from ``state`` in this env's action space (behaviour cloning / offline RL target)."""
        state = state or self._state
        veh = self.world.config.vehicle
        if self.config.action_mode == "control":
            accel, steer = expert(self.world, state)
            u_acc = accel / (veh.max_accel if accel > 0 else veh.max_decel)
            return np.clip(np.array([u_acc, steer / veh.max_steer], np.float32), -1.0, 1.0)
        times = state.time_s + self.config.waypoint_dt * np.arange(1, self.config.num_waypoints + 1)
        times = np.minimum(times, self.world.end_time_s)
        poses = np.stack([self.world.logged_ego_pose(t) for t in times])
        local = invert_transform(state.ego.pose()) @ poses
        return np.clip(local[:, :2, 3], self.action_space.low, self.action_space.high).astype(np.float32)

    # ---- gym API -------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        info = self.reset_state(seed=seed, options=options)
        return self._observe(self._state), info

    def step(self, action):
        reward, terminated, truncated, info = self.step_state(action)
        return self._observe(self._state), reward, terminated, truncated, info

    # ---- batch API: reset / step without rendering, so a caller can render many envs in one call -----------------
    def reset_state(self, *, seed: int | None = None, options: dict | None = None) -> dict:
        """:meth:`reset` without the observation: seeds, resets the state and returns the info. Render with
        :meth:`render_request`, then :meth:`observation`."""
        super().reset(seed=seed)
        info = self._reset_state(options)
        if self._draw is not None:  # a renderer with memory (the refiner's keyframes) starts the episode afresh
            self._draw.reset()
        self._ended = None
        return info

    def step_state(self, action) -> tuple[float, bool, bool, dict]:
        """:meth:`step` without the observation: (reward, terminated, truncated, info). A step after the episode
        ended (terminated or truncated) raises :class:`~stag_sim.errors.ValidationError`: call reset() first."""
        if self._ended is not None:
            raise ValidationError(f"step() after the episode ended ({self._ended}, step {self._state.step}); "
                                  "call reset() first")
        reward, terminated, truncated, info = self._step_state(action)
        if terminated or truncated:
            self._ended = info["termination_reason"] or ("terminated" if terminated else "truncated")
        return reward, terminated, truncated, info

    @property
    def state(self):
        """The current :class:`~stag_sim.world.SimState` (None before the first reset)."""
        return self._state

    @property
    def _state(self):
        if self._deferred is not None:  # a batched vector env holds this env's state as a row of its arrays
            self._state_value, self._deferred = self._deferred(), None
        return self._state_value

    @_state.setter
    def _state(self, value) -> None:
        self._state_value, self._deferred = value, None

    def agent_poses(self, state=None):
        """:meth:`World.agent_poses` of ``state`` (default: current): (K, 4, 4) poses (scene object order) and (K,)
        validity, kept for the state last asked (a step reads them for the reward, the observation and the
        renders)."""
        state = state or self._state
        if self._poses_of is not state:
            self._poses_of, self._poses = state, self.world.agent_poses(state)
        return self._poses

    def defer_state(self, read) -> None:
        """The current state becomes ``read()``, called when it is next needed (the batched vector env steps this
        env's state as a row of its arrays and only builds the :class:`~stag_sim.world.SimState` on demand)."""
        self._deferred = read

    @property
    def renderer(self):
        """The renderer drawing the observations (shared by the sub-envs of a batched vector env)."""
        return self._renderer

    # Overridable halves of reset_state / step_state (the CARLA co-simulation env replaces them).
    def _reset_state(self, options: dict | None) -> dict:
        given = dict(options or {})
        options = {**self._default_options, **given}
        offset = options.pop("ego_offset", (0.0, 0.0, 0.0))
        speed = options.pop("speed", None)
        if options:
            raise ValidationError(f"reset options: unknown key(s) {', '.join(sorted(options))}; known: ego_offset, speed")
        if self._scenes is not None and len(self._scenes) > 1:
            self._use_scene(int(self.np_random.integers(len(self._scenes))))
        if self.config.start.random and not given:
            offset, speed = self._random_start()
        self._state = reset(self.world, ego_offset=offset, speed=speed)
        self._tracker = TrackerState()
        self._trail = [(self._state.ego.x, self._state.ego.y)]
        self._clipped = 0
        return self._info(self._state, None)

    def _random_start(self) -> tuple[tuple[float, float, float], float]:
        """Draw a start from the env's seed (:class:`~stag_sim.env_config.StartConfig`): switch to the world of a
        random start frame, and return (ego offset, speed) for :func:`~stag_sim.world.reset`."""
        from dataclasses import replace

        sc, rng, base = self.config.start, self.np_random, self._worlds[(self._scene_index, self.config.world.start_frame)]
        f0 = base.config.start_frame
        last = self.log.num_frames - 2  # at least one logged frame to drive toward
        if self.config.max_steps:  # and room for a whole episode where the log allows it
            room = int(np.ceil(self.config.max_steps * base.config.dt / max(self._frame_dt(), 1e-6)))
            last = max(f0, min(last, self.log.num_frames - 1 - room))
        f = f0 + int(rng.integers(0, int((last - f0) * sc.max_frame_fraction) + 1)) if last > f0 else f0
        if (self._scene_index, f) not in self._worlds:
            self._worlds[(self._scene_index, f)] = World.build(self.log, replace(base.config, start_frame=f))
        self.world = self._worlds[(self._scene_index, f)]
        self.max_steps = self._max_steps()
        logged = float(np.linalg.norm(self.log.ego_poses[f + 1][:2, 3] - self.log.ego_poses[f][:2, 3])
                       / ((self.log.timestamps_us[f + 1] - self.log.timestamps_us[f]) * 1e-6))
        offset = (0.0, float(rng.uniform(-sc.lateral_m, sc.lateral_m)), float(rng.uniform(-sc.heading_rad, sc.heading_rad)))
        speed = logged * float(rng.uniform(*sc.speed_fraction))
        if self.config.traffic.active:  # a lead car that brakes, a car that cuts in (RL diversity)
            from stag_sim.envs.traffic_events import draw_events

            events = draw_events(self.world, rng, self.config.traffic, logged)
            if events:
                self.world = World.build(self.log, replace(self.world.config, events=self.world.config.events + events))
        return offset, speed

    def _frame_dt(self) -> float:
        """Mean logged frame interval [s]."""
        ts = self.log.timestamps_us
        return float(ts[-1] - ts[0]) * 1e-6 / max(len(ts) - 1, 1)

    def _step_state(self, action) -> tuple[float, bool, bool, dict]:
        if self._state is None:
            raise ValidationError("step() called before reset()")
        accel, steer, n_clipped = self._to_controls(action)
        self._clipped += n_clipped
        prev = self._state
        self._state = step(self.world, prev, accel, steer)
        self._trail.append((self._state.ego.x, self._state.ego.y))
        return self._finish_step(prev, n_clipped)

    def _finish_step(self, prev, n_clipped: int) -> tuple[float, bool, bool, dict]:
        """Reward, termination and info of the step from ``prev`` to the current state (shared with co-sim envs;
        the rules: :func:`stag_sim.envs.batch.outcome`)."""
        from stag_sim.envs.batch import outcome, road_free

        st, ev = self._state, self._state.events
        poses, valid = self.agent_poses(st)
        e = st.ego
        one = lambda v: np.array([v], np.float64)
        free = road_free(one(e.x), one(e.y), one(e.yaw), poses[None, :, :2, 3], valid[None],
                         self.config.reward.free_distance)
        reward, terms, term, trunc, reason = outcome(
            self.config.reward, one(prev.route_s), one(st.route_s), one(self.world.usable_route_length), one(e.speed),
            free, one(ev["collision"]), one(ev["offroad"]), one(ev["route_completed"]), one(n_clipped), one(st.step),
            one(self.max_steps))
        info = self._info(st, reason[0])
        info["progress"] = float(st.route_s - prev.route_s)
        info["reward_terms"] = {k: float(v[0]) for k, v in terms.items()}
        return float(reward[0]), bool(term[0]), bool(trunc[0]), info

    def _info(self, state, reason) -> dict:
        ev = state.events
        info = {
            "termination_reason": reason,
            "progress": 0.0,
            "route_completion": self._route_completion(state),
            "collision": bool(ev.get("collision", False)),
            "offroad": bool(ev.get("offroad", False)),
            "collided_with": list(ev.get("collided_with", [])),
            "clipped_actions": self._clipped,
            "time_s": float(state.time_s),
            "ego_pose": self.world.ego_pose(state.ego),
            "reward_terms": {"progress": 0.0, "idle": 0.0, "collision": 0.0, "offroad": 0.0, "clipped": 0.0},
        }
        if self.config.expert_action:  # two logged-pose interpolations: a quarter of a camera-free step
            info["expert_action"] = self.expert_action(state)
        return info

    def _route_completion(self, state) -> float:
        """Fraction [0, 1] of the route driven; 1 once within the completion margin of its end."""
        return float(np.clip(state.route_s / self.world.usable_route_length, 0.0, 1.0))

    def render(self):
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        from stag_sim.envs.bev import bev_image
        from stag_sim.viz import contact_sheet

        h, w = self.config.image_size
        images = [self._last_obs[c] if c in self._last_obs else np.zeros((h, w, 3), np.uint8) for c in self.rig.names]
        sheet = contact_sheet(images, self.rig.names, azimuths=self.rig.azimuths)
        poses, valid = self.agent_poses(self._state)
        bev = bev_image(self.world, self._state, poses, valid, self._trail, size=sheet.shape[0])
        return np.concatenate([sheet, bev], axis=1)
