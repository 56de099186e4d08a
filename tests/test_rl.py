"""RL-facing env features: camera-free envs, the ``state`` and ``bev`` observations, the reward, random starts, the
batched vector env without cameras, and the one-line errors for bad settings (tiny scenes built in code)."""

import gymnasium as gym
import numpy as np
import pytest

import stag_sim  # noqa: F401  (registers StagDrive-v0)
from stag_sim.envs.observations import BEV_CHANNELS, state_size
from stag_sim.errors import ValidationError
from stag_sim.testing import tiny_scene_log


@pytest.fixture(scope="module")
def log():
    return tiny_scene_log(num_frames=80, width=32, height=18)


def free(log, **kw):
    return gym.make("StagDrive-v0", scene=log, cameras=(), **kw)


def test_camera_free_env_renders_nothing_and_observes_a_bounded_state(log):
    env = free(log)
    base = env.unwrapped
    assert base.renderer is None and base.camera_names == ()
    obs, info = env.reset(seed=0)
    assert list(obs) == ["state"] and obs["state"].shape == (state_size(10, 8),)
    assert env.observation_space.contains(obs)
    for _ in range(20):
        obs, r, term, trunc, info = env.step(info["expert_action"])
        assert env.observation_space.contains(obs)
        assert np.all(np.abs(obs["state"]) <= 1.0)
    # the ego part is the normalised ego state; the agent slots hold the tiny log's two cars (present flag = 1)
    e = base.state.ego
    assert obs["state"][0] == pytest.approx(e.speed / 20.0, abs=1e-6)
    agents = obs["state"][-8 * 9:].reshape(8, 9)
    assert agents[:, 8].sum() == 2 and np.all(agents[2:] == 0)


def test_bev_channels_put_the_ego_on_the_route_heading_up(log):
    env = free(log, observations=("bev", "state"), bev={"size_px": 48, "resolution_m": 0.5})
    obs, _ = env.reset(seed=0)
    bev = obs["bev"]
    assert bev.shape == (len(BEV_CHANNELS), 48, 48) and bev.dtype == np.uint8
    ego, route, drivable = bev[BEV_CHANNELS.index("ego")], bev[BEV_CHANNELS.index("route")], bev[BEV_CHANNELS.index("drivable")]
    rows, cols = np.nonzero(ego)
    assert abs(cols.mean() - 23.5) < 1.0 and abs(rows.mean() - 0.75 * 48) < 4.0  # centred, three quarters down
    assert np.ptp(rows) > np.ptp(cols)  # a car heading up is taller than wide
    assert route[:36, 22:26].any() and drivable[int(rows.mean()), int(cols.mean())] == 255  # route ahead, on road


def test_stopping_costs_the_idle_penalty_and_driving_the_log_earns_progress(log):
    env = free(log, max_steps=40)
    rc = env.unwrapped.config.reward
    _, info = env.reset(seed=0)
    stop_return = 0.0
    for _ in range(40):
        _, r, term, trunc, info = env.step(np.array([-1.0, 0.0], np.float32))
        stop_return += r
        if term or trunc:
            break
    assert info["reward_terms"]["idle"] < 0 and -rc.idle - 0.05 < stop_return < -0.25 * rc.idle
    _, info = env.reset(seed=0)
    drive_return = 0.0
    for _ in range(40):
        _, r, term, trunc, info = env.step(info["expert_action"])
        drive_return += r
        assert sum(info["reward_terms"].values()) == pytest.approx(r)
        if term or trunc:
            break
    assert drive_return > 0.5 * rc.progress > stop_return


def test_random_starts_follow_the_seed(log):
    env = free(log, start={"random": True, "lateral_m": 1.0, "heading_rad": 0.1})
    starts = []
    for seed in (1, 2, 1):
        env.reset(seed=seed)
        s = env.unwrapped.state
        starts.append((env.unwrapped.world.config.start_frame, round(s.ego.y, 9), round(s.ego.yaw, 9), round(s.ego.speed, 9)))
    assert starts[0] == starts[2] and starts[0] != starts[1]
    env.reset(seed=3, options={"ego_offset": (0.0, 0.0, 0.0)})  # explicit options win over the random draw
    assert env.unwrapped.state.ego.y == pytest.approx(0.0, abs=1e-9)


def test_batched_vector_env_without_cameras(log):
    envs = gym.make_vec("StagDrive-v0", num_envs=3, vectorization_mode="vector_entry_point", scene=log, cameras=(),
                        observations=("state", "bev"), bev={"size_px": 32})
    obs, _ = envs.reset(seed=0)
    assert obs["state"].shape == (3, state_size(10, 8)) and obs["bev"].shape == (3, len(BEV_CHANNELS), 32, 32)
    obs, r, term, trunc, _ = envs.step(np.zeros((3, 2), np.float32))
    assert r.shape == (3,) and envs.observation_space.contains(obs)
    envs.close()


@pytest.mark.parametrize("kw, message", [
    (dict(observations=("state", "lidar")), r"observations: unknown key 'lidar'; known: cameras, ego, route, state, bev"),
    (dict(observations=("bev",), bev={"size_px": 0}), r"bev: bev\.size_px: must be an int in \[8, 512\] px, got 0"),
    (dict(renderer="refined", refiner={"path": "x"}), r"renderer: 'refined' needs cameras; cameras=\(\) is a camera-free env"),
    (dict(observations=("cameras", "state")), r"observations: 'cameras' with cameras=\(\)"),
    (dict(reward={"idle": -1.0}), r"reward\.idle: must be a finite value >= 0"),
])
def test_bad_rl_settings_are_one_clear_line(log, kw, message):
    with pytest.raises(ValidationError, match=message) as e:
        free(log, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_short_ppo_run_beats_random_actions_on_held_out_seeds():
    """SB3 PPO with default hyperparameters, 16k steps on the camera-free tiny road: on ten held-out seeds it drives
    clearly farther than random actions."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from stag_sim.app import rl

    env_kwargs = {"scene": tiny_scene_log(num_frames=120, width=32, height=18), "max_steps": 60}
    model = PPO("MultiInputPolicy", rl.make_env(**env_kwargs), seed=0, verbose=0)
    model.learn(16_384)
    trained = rl.evaluate(rl.sb3_policy(model), env_kwargs)
    random = rl.evaluate(rl.random_policy(env_kwargs), env_kwargs)
    assert trained.episodes == random.episodes == 10
    assert trained.route_completion >= random.route_completion + 0.25, (trained, random)
    assert trained.route_completion >= 0.5, trained


def test_a_list_of_scenes_is_drawn_from_the_seed(log):
    other = tiny_scene_log(num_frames=60, width=32, height=18, seed=1)
    env = gym.make("StagDrive-v0", scene=[log, other], cameras=(), start={"random": True})
    names = []
    for seed in range(8):
        env.reset(seed=seed)
        names.append(env.unwrapped.log.name)
        _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert set(names) == {log.name, other.name}
    again = []
    for seed in range(8):
        env.reset(seed=seed)
        again.append(env.unwrapped.log.name)
    assert again == names
    with pytest.raises(ValidationError, match="scene: an empty list"):
        gym.make("StagDrive-v0", scene=[], cameras=())
    with pytest.raises(ValidationError, match="synthetic:SEED"):
        gym.make("StagDrive-v0", scene="synthetic:x", cameras=())


def test_same_step_autoreset_returns_the_final_and_the_reset_observation(log):
    envs = gym.make_vec("StagDrive-v0", num_envs=2, vectorization_mode="vector_entry_point", scene=log, cameras=(),
                        max_steps=3, autoreset_mode="same_step")
    obs0, _ = envs.reset(seed=0)
    for _ in range(3):
        obs, _, term, trunc, infos = envs.step(np.tile(np.array([1.0, 0.0], np.float32), (2, 1)))
    assert np.all(trunc) and infos["_final_obs"].all()
    # the final observations are the ended episodes' last states; the returned ones are fresh episodes
    assert all(not np.array_equal(infos["final_obs"][i]["state"], obs["state"][i]) for i in range(2))
    np.testing.assert_array_equal(obs["state"], obs0["state"])  # same seeds -> same fresh starts (logged start)
    with pytest.raises(ValidationError, match="autoreset_mode"):
        gym.make_vec("StagDrive-v0", num_envs=2, vectorization_mode="vector_entry_point", scene=log, cameras=(),
                     autoreset_mode="later")


def test_expert_action_is_only_computed_when_asked(log):
    with_expert = free(log)
    without = free(log, expert_action=False)
    _, info = with_expert.reset(seed=0)
    _, bare = without.reset(seed=0)
    assert info["expert_action"].shape == (2,) and "expert_action" not in bare
    _, _, _, _, info = with_expert.step(np.zeros(2, np.float32))
    _, _, _, _, bare = without.step(np.zeros(2, np.float32))
    assert "expert_action" in info and "expert_action" not in bare
    assert set(info) - set(bare) == {"expert_action"}
    from stag_sim.app import rl

    assert rl.RL_ENV["expert_action"] is False and rl.CAMERA_ENV["expert_action"] is True


def test_scene_lists_load_each_scene_on_first_draw_and_share_it(tmp_path, log):
    from stag_sim.cache import write_scene_cache
    from stag_sim.envs.scenes import SceneList

    other = tiny_scene_log(num_frames=40, width=32, height=18, seed=2)
    write_scene_cache(other, tmp_path / "other")
    scenes = SceneList([log, str(tmp_path / "other")], sensors=False)
    assert list(scenes._loaded) == [0]  # the cache on disk is not read until drawn
    a, b = SceneList([log, str(tmp_path / "other")]), scenes
    assert a[1][0] is b[1][0]  # one load per process, shared by every env
    assert a[1][0].name == other.name


def test_evaluate_runs_every_seed_in_every_town(log):
    from stag_sim.app import rl

    other = tiny_scene_log(num_frames=60, width=32, height=18, seed=1)
    r = rl.evaluate(lambda obs: np.array([0.3, 0.0], np.float32), {"max_steps": 10}, seeds=(5, 6), towns=[log, other])
    assert r.episodes == 4 and len(r.per_episode) == 4 and 0.0 < r.route_completion <= 1.0


def test_camera_free_synthetic_town_is_built_without_images(tmp_path, monkeypatch):
    """A camera-free env on a new synthetic town builds its layout-only log (ego, tracks, map; no images)."""
    from stag_sim.paths import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    env = gym.make("StagDrive-v0", scene="synthetic:7", cameras=(), max_steps=5)
    base = env.unwrapped
    assert base.log.images is None and base.log.num_frames == 200 and base.log.map is not None
    env.reset(seed=0)
    _, r, *_ = env.step(np.array([0.5, 0.0], np.float32))
    assert np.isfinite(r) and sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 5e6
