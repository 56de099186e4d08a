import hashlib
import weakref

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from shapely.geometry import box

import stag_sim
from stag_sim.errors import ValidationError
from stag_sim.testing import tiny_scene_log

SMALL = dict(image_size=(36, 64), voxel_size=0.25)
_RENDERERS = weakref.WeakKeyDictionary()


@pytest.fixture(scope="module")
def log():
    return tiny_scene_log(num_frames=40, width=64, height=36)


def make(log, **kw):
    """gym.make on the tiny log, sharing one point renderer per log (building the 4D scene is the slow part)."""
    env = gym.make("StagDrive-v0", scene=log, renderer=_RENDERERS.get(log), **{**SMALL, **kw})
    _RENDERERS.setdefault(log, env.unwrapped.renderer)
    return env


def obs_hash(obs) -> str:
    h = hashlib.sha256()
    for k in sorted(obs):
        h.update(k.encode())
        h.update(np.ascontiguousarray(obs[k]).tobytes())
    return h.hexdigest()


def test_registered_idempotently_and_by_module_path(log):
    stag_sim._register_envs()
    assert "StagDrive-v0" in gym.registry
    env = gym.make("stag_sim:StagDrive-v0", scene=log, **SMALL)
    assert set(env.observation_space.spaces) >= {"CAM_FRONT", "CAM_BACK", "ego", "route"}


@pytest.mark.parametrize("mode", ["control", "trajectory"])
def test_gymnasium_check_env(log, mode):
    check_env(make(log, action_mode=mode).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("mode", ["control", "trajectory"])
def test_seeded_rollout_is_bit_identical(log, mode):
    def rollout():
        env = make(log, action_mode=mode, world={"agents": "idm"})
        obs, info = env.reset(seed=3)
        env.action_space.seed(3)
        hashes, rewards = [obs_hash(obs)], []
        for k in range(15):
            action = info["expert_action"] if k % 2 else env.action_space.sample()
            obs, r, term, trunc, info = env.step(action)
            hashes.append(obs_hash(obs))
            rewards.append(r)
            if term or trunc:
                break
        return hashes, rewards

    assert rollout() == rollout()


def test_expert_drives_the_route_to_completion(log):
    env = make(log)
    obs, info = env.reset(seed=0)
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(info["expert_action"])
        total += r
        steps += 1
        if term or trunc:
            break
    assert info["termination_reason"] == "route_completed" and not info["collision"]
    assert info["route_completion"] == 1.0 and 0.9 < total <= 1.0 + 1e-9  # the documented maximum is 1
    with pytest.raises(ValidationError, match=r"step\(\) after the episode ended \(route_completed"):
        env.step(info["expert_action"])
    env.reset(seed=0)
    env.step(info["expert_action"])  # a reset starts a new episode


@pytest.mark.parametrize("frames", [3, 4])
def test_a_short_log_drives_to_its_end_and_pays_at_most_one(frames):
    """A real log is often a few frames (DGP's sample: 3 frames, 2.5 m). Its episode lasts until the log ends
    (truncated, or route_completed on the last metres, a quarter of the route at most), pays at most 1, and a step
    after the end is refused."""
    short = tiny_scene_log(num_frames=frames, width=64, height=36)
    env = gym.make("StagDrive-v0", scene=short, observations=("state",))
    _, info = env.reset(seed=0)
    total, steps = 0.0, 0
    while True:
        _, r, term, trunc, info = env.step(info["expert_action"])
        total += r
        steps += 1
        if term or trunc:
            break
    assert steps == env.unwrapped.max_steps >= frames - 1  # every step of the log, not one
    assert info["termination_reason"] in ("truncated", "route_completed") and total <= 1.0 + 1e-9
    with pytest.raises(ValidationError, match="call reset"):
        env.step(info["expert_action"])


def test_offroad_terminates_with_reason(log):
    import dataclasses

    narrow = dataclasses.replace(log, map=dataclasses.replace(log.map, drivable_area=box(-20, -3, 80, 3)))
    env = make(narrow)
    env.reset(seed=0)
    for _ in range(39):
        _, r, term, trunc, info = env.step(np.array([0.0, 1.0], np.float32))
        if term or trunc:
            break
    assert term and info["termination_reason"] == "offroad" and r < 0
    assert info["reward_terms"]["offroad"] == -0.5 and sum(info["reward_terms"].values()) == pytest.approx(r)


def test_unknown_camera_names_the_rig(log):
    with pytest.raises(ValidationError, match=r"cameras: \['CAM_TOP'\] not in the scene's rig \(CAM_FRONT, "):
        make(log, cameras=["CAM_TOP"])


def test_observation_contents(log):
    env = make(log, cameras=["CAM_BACK", "CAM_FRONT"], depth=True, num_route_points=5)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.camera_names == ("CAM_FRONT", "CAM_BACK")  # rig order
    assert obs["CAM_FRONT"].shape == (36, 64, 3) and obs["CAM_FRONT"].dtype == np.uint8
    assert obs["depth_CAM_BACK"].shape == (36, 64) and obs["route"].shape == (10,)
    route = obs["route"].reshape(5, 2)
    # the route runs ahead of the ego: positive x in the ego frame, increasing
    assert np.all(np.diff(route[:, 0]) > 0) and route[0, 0] > 0
    assert obs["ego"][0] == pytest.approx(5.0, abs=1e-3)  # logged speed [m/s]


def test_invalid_actions_raise_and_out_of_range_is_clipped_and_counted(log):
    env = make(log)
    env.reset(seed=0)
    with pytest.raises(ValidationError, match="NaN or inf"):
        env.step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(ValidationError, match=r"expected shape \(2,\)"):
        env.step(np.zeros(3, np.float32))
    _, _, _, _, info = env.step(np.array([5.0, -7.0], np.float32))
    assert info["clipped_actions"] == 2


def test_unknown_settings_are_errors(log):
    with pytest.raises(ValidationError, match="warp: unknown setting"):
        make(log, warp=9)
    with pytest.raises(ValidationError, match=r"world\.idm\.v0: unknown setting"):  # nested: the whole key path
        make(log, world={"idm": {"v0": 3.0}})
    with pytest.raises(ValidationError, match=r"render: RenderConfig\.lod_levels"):
        make(log, render={"lod_levels": 0})
    with pytest.raises(ValidationError, match="action_mode"):
        make(log, action_mode="telepathy")
    with pytest.raises(ValidationError, match="cameras"):
        make(log, cameras=["CAM_TOP"])
    with pytest.raises(ValidationError, match="reset options"):
        make(log).reset(options={"teleport": True})


def test_rgb_array_render_is_mosaic_plus_bev(log):
    env = make(log, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (72, 3 * 64 + 72, 3)


def test_lateral_offset_start(log):
    env = make(log)
    _, info = env.reset(seed=0, options={"ego_offset": (0.0, 1.5, 0.0)})
    assert info["ego_pose"][1, 3] == pytest.approx(1.5)


def test_batched_vector_env_matches_single_envs(log):
    vec = gym.make_vec("StagDrive-v0", num_envs=2, vectorization_mode="vector_entry_point", scene=log, **SMALL)
    sync = gym.vector.SyncVectorEnv([lambda: make(log) for _ in range(2)])
    ob_v, _ = vec.reset(seed=0)
    ob_s, _ = sync.reset(seed=0)
    actions = np.array([[0.5, 0.1], [-0.2, -0.3]], np.float32)
    for _ in range(3):
        ob_v, r_v, *_ = vec.step(actions)
        ob_s, r_s, *_ = sync.step(actions)
    for k in ob_s:
        assert np.array_equal(ob_v[k], ob_s[k]), k
    assert np.allclose(r_v, r_s)


def test_async_vector_env(log):
    vec = gym.vector.AsyncVectorEnv([lambda: make(log) for _ in range(2)])
    try:
        obs, _ = vec.reset(seed=0)
        obs, r, term, trunc, info = vec.step(np.zeros((2, 2), np.float32))
        assert obs["CAM_FRONT"].shape == (2, 36, 64, 3) and r.shape == (2,)
    finally:
        vec.close()


def test_stable_baselines3_check_env(log):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check

    sb3_check(make(log).unwrapped, warn=True)


@pytest.mark.slow
def test_ppo_trains_a_few_steps(log):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    env = make(log, cameras=["CAM_FRONT"], image_size=(36, 64))
    model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=64)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


@pytest.mark.parametrize("mode", ["control", "trajectory"])
def test_log_replay_agent_is_the_expert_policy(log, mode):
    from stag_sim.agents.base import Agent
    from stag_sim.agents.log_replay import LogReplayAgent

    env = make(log, action_mode=mode)
    agent = LogReplayAgent(env)
    assert isinstance(agent, Agent)
    obs, info = env.reset(seed=0)
    agent.reset(obs, info)
    for _ in range(5):
        action = agent.act(obs)
        assert np.array_equal(action, info["expert_action"])
        obs, _, term, trunc, info = env.step(action)
    pose, logged = info["ego_pose"], env.unwrapped.world.logged_ego_pose(info["time_s"])
    assert np.hypot(*(pose[:2, 3] - logged[:2, 3])) < (1e-6 if mode == "control" else 0.3)


def test_pure_pursuit_recovers_from_a_lateral_offset(log):
    from stag_sim.agents.pure_pursuit import PurePursuitAgent

    env = make(log)
    obs, info = env.reset(seed=0, options={"ego_offset": (0.0, 1.5, 0.0)})
    agent = PurePursuitAgent(target_speed=5.0)
    for _ in range(30):
        obs, _, term, trunc, info = env.step(agent.act(obs))
        if term or trunc:
            break
    w = env.unwrapped.world
    _, lateral = w.route.project([info["ego_pose"][:2, 3]])
    assert abs(lateral[0]) < 0.3 and not info["collision"]
