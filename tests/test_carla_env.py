"""CarlaCoSimEnv driven offline against the carla stand-in (both co-simulation modes, actors drawn from CARLA)."""

import hashlib

import numpy as np
import pytest

from stag_sim.carla_bridge import CarlaBridge
from stag_sim.carla_bridge.standin import make_standin
from stag_sim.envs.carla_env import CarlaCoSimEnv, make_carla_env
from stag_sim.errors import BridgeError, ValidationError
from stag_sim.geometry import pose_xy_yaw, yaw_of
from stag_sim.testing import tiny_scene_log

SMALL = dict(image_size=(36, 64), voxel_size=0.25)
HOST = "standin.env"


@pytest.fixture(scope="module")
def log():
    return tiny_scene_log(num_frames=40, width=64, height=36)


@pytest.fixture(scope="module")
def renderer(log):
    from stag_sim.render import PointRenderer
    from stag_sim.scene4d import Scene4DConfig, build_scene4d

    return PointRenderer(build_scene4d(log, Scene4DConfig(voxel_size=SMALL["voxel_size"])))


@pytest.fixture
def fake():
    fake = make_standin()
    world = fake._serve(HOST, 3000)
    yield fake, world
    fake._shutdown(HOST, 3000)


def make(fake, log, renderer, **cosim):
    return make_carla_env(f"{HOST}:3000", cosim=cosim, carla_module=fake[0], scene=log, renderer=renderer, **SMALL)


def ahead(x, y=0.0):
    return {"type_filter": "vehicle.tesla.model3", "pose": pose_xy_yaw(x, y, 0.0)}


def test_stag_drives_mirrors_our_ego_into_carla(fake, log, renderer):
    env = make(fake, log, renderer, mode="stag_drives")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(8):
        obs, reward, term, trunc, info = env.step(np.array([0.3, 0.4], np.float32))
        T_carla = env.bridge.ego_pose()
        np.testing.assert_allclose(T_carla[:2, 3], [env.state.ego.x, env.state.ego.y], atol=1e-9)
        assert np.isclose(yaw_of(T_carla), env.state.ego.yaw)
        assert np.allclose(info["ego_pose"], env.state.ego.pose())
    assert env.state.ego.yaw > 0.0  # our positive steer turns left
    assert info["carla"]["mode"] == "stag_drives" and env.carla_frame > 0
    env.close()


def test_carla_drives_reads_the_ego_back_from_carla_physics(fake, log, renderer):
    env = make(fake, log, renderer, mode="carla_drives")
    _, info = env.reset(seed=0)
    x0 = env.state.ego.x
    for _ in range(10):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    e = env.state.ego
    assert e.x > x0 + 1.0 and abs(e.y) < 1e-6 and e.speed > 5.0  # full throttle: faster than the logged 5 m/s
    np.testing.assert_allclose(env.bridge.ego_pose()[:2, 3], [e.x, e.y], atol=1e-9)
    (ego_actor,) = [a for a in fake[1].get_actors() if a is env.bridge.ego]
    assert ego_actor._control.throttle == 1.0 and ego_actor._control.brake == 0.0
    for _ in range(5):
        env.step(np.array([0.0, 1.0], np.float32))  # full left in our convention
    assert ego_actor._control.steer == -1.0  # = full left in CARLA's (positive = right)
    assert env.state.ego.yaw > 0.0 and env.state.ego.yaw_rate > 0.0
    env.reset(seed=0)  # straight again (the left turn soon leaves the road, and a step after the end is refused)
    for _ in range(20):
        env.step(np.array([-1.0, 0.0], np.float32))
    (ego_actor,) = [a for a in fake[1].get_actors() if a is env.bridge.ego]  # reset spawned the ego anew
    assert env.state.ego.speed == 0.0 and ego_actor._control.brake == 1.0
    env.close()


def test_carla_actors_are_drawn_with_matching_object_clouds(fake, log, renderer):
    env = make(fake, log, renderer, mode="stag_drives")
    empty, _ = env.reset(seed=0)
    poses, valid = env.agent_poses()
    assert not valid.any()  # the log's own agents are not drawn: CARLA owns the traffic
    obs, info = env.reset(seed=0, options={"carla_actors": [ahead(12.0)]})
    assert info["carla"]["agents_drawn"] == ["carla-0"]
    assert info["carla"]["assignment"] == {"carla-0": "tiny-car-0"}  # 4.8 m stand-in car: closest to the 4.5 m car
    (agent,) = env.bridge.agents()
    assert env.carla_actor_ids == {"carla-0": agent.actor_id}
    poses, valid = env.agent_poses()
    assert valid.tolist() == [True, False]
    np.testing.assert_allclose(poses[0], agent.T_scene_from_box)
    assert obs["CAM_FRONT"].tobytes() != empty["CAM_FRONT"].tobytes()  # the car shows up in the front camera
    # a walker has no pedestrian cloud in this scene: reported, not drawn
    _, info = env.reset(seed=0, options={"carla_actors": [ahead(12.0), {"type_filter": "walker.*", "pose": pose_xy_yaw(20.0, 3.0, 0.0)}]})
    assert len(info["carla"]["agents_drawn"]) == 1 and len(info["carla"]["agents_not_drawn"]) == 1
    env.close()


def test_assignment_is_stable_while_actors_stay_in_range(fake, log, renderer):
    env = make(fake, log, renderer, mode="stag_drives", num_traffic=2, match_range=60.0)
    _, info = env.reset(seed=3)
    first = dict(info["carla"]["assignment"])
    for _ in range(3):
        _, _, _, _, info = env.step(np.zeros(2, np.float32))
        kept = {i: k for i, k in info["carla"]["assignment"].items() if i in first}
        assert kept == {i: k for i, k in first.items() if i in info["carla"]["assignment"]}
    env.close()


def test_carla_collision_terminates_and_lane_invasion_is_reported(fake, log, renderer):
    env = make(fake, log, renderer, mode="stag_drives")
    _, info = env.reset(seed=0, options={"carla_actors": [ahead(9.0)]})
    assert not info["collision"]
    fake[1]._invade_lane(env.bridge.ego, "Solid")
    _, _, term, _, info = env.step(np.zeros(2, np.float32))
    assert info["lane_invasion"] and info["carla"]["lane_invasions"] == [["Solid"]]
    for _ in range(20):
        _, reward, term, _, info = env.step(np.array([1.0, 0.0], np.float32))
        if term:
            break
    assert term and info["termination_reason"] == "collision"
    assert info["collided_with"] == ["carla-0:vehicle.tesla.model3"]
    assert info["reward_terms"]["collision"] == -env.config.reward.collision
    assert np.isclose(reward, sum(info["reward_terms"].values()))
    env.close()


def test_episodes_clean_up_and_close_restores_the_world(fake, log, renderer):
    world = fake[1]
    world._settings.fixed_delta_seconds = 0.5
    env = make(fake, log, renderer, num_traffic=3)
    assert world.get_settings().synchronous_mode and world.get_settings().fixed_delta_seconds == env.world.config.dt
    counts = []
    for seed in range(3):
        env.reset(seed=seed, options={"carla_actors": [ahead(15.0)]})
        env.step(np.zeros(2, np.float32))
        counts.append(len(world._actors))
    assert counts == [counts[0]] * 3 and counts[0] == 1 + 2 + 3 + 1  # ego, its 2 sensors, traffic, scenario actor
    env.close()
    assert world._actors == {}
    s = world.get_settings()
    assert not s.synchronous_mode and s.fixed_delta_seconds == 0.5


def test_same_seed_same_episode(fake, log, renderer):
    def rollout():
        env = make(fake, log, renderer, num_traffic=3)
        obs, _ = env.reset(seed=42)
        h = hashlib.sha256(obs["CAM_FRONT"].tobytes())
        for _ in range(3):
            obs, *_ = env.step(np.array([0.2, -0.1], np.float32))
            h.update(obs["CAM_FRONT"].tobytes())
        env.close()
        return h.hexdigest()

    assert rollout() == rollout()


def test_explicit_alignment_spawns_the_ego_at_the_scene_start(fake, log, renderer):
    T = pose_xy_yaw(-40.0, 25.0, 1.2)  # T_scene_from_carla
    env = make(fake, log, renderer, alignment=T, settle_ticks=1)
    env.reset(seed=0)
    np.testing.assert_allclose(env.bridge.alignment.T_scene_from_carla, T)
    np.testing.assert_allclose(env.bridge.ego_pose()[:2, 3], [env.state.ego.x, env.state.ego.y], atol=1e-9)
    env.close()


def test_bad_settings_and_no_server(fake, log, renderer):
    with pytest.raises(ValidationError, match="cosim.mode"):
        make(fake, log, renderer, mode="both")
    with pytest.raises(ValidationError, match="settle_ticks"):
        make(fake, log, renderer, settle_ticks=0)
    with pytest.raises(ValidationError, match="cosim.*unknown setting"):
        make(fake, log, renderer, speed=3)
    with pytest.raises(BridgeError, match=r"no CARLA server answered at standin.env:3999 within 0.5 s"):
        make_carla_env(f"{HOST}:3999", cosim={"timeout": 0.5}, carla_module=fake[0], scene=log, renderer=renderer, **SMALL)
    bridge = CarlaBridge(host=HOST, port=3000, dt=0.05, carla_module=fake[0])
    with pytest.raises(BridgeError, match="steps 0.05 s but the env steps 0.1 s"):
        CarlaCoSimEnv(bridge, scene=log, renderer=renderer, **SMALL)
    env = make(fake, log, renderer)
    with pytest.raises(ValidationError, match="carla_actors"):
        env.reset(seed=0, options={"carla_actors": [{"type_filter": "vehicle.*"}]})
    with pytest.raises(ValidationError, match="unknown key"):
        env.reset(seed=0, options={"nope": 1})
    env.close()


def test_caller_owned_bridge_is_not_closed_by_the_env(fake, log, renderer):
    with CarlaBridge(host=HOST, port=3000, dt=0.1, carla_module=fake[0]) as bridge:
        env = CarlaCoSimEnv(bridge, scene=log, renderer=renderer, **SMALL)
        env.reset(seed=0)
        env.close()
        assert fake[1].get_settings().synchronous_mode  # still ours until the `with` ends
    assert not fake[1].get_settings().synchronous_mode and fake[1]._actors == {}


def test_gymnasium_env_checker_passes(fake, log, renderer):
    from gymnasium.utils.env_checker import check_env

    for mode in ("stag_drives", "carla_drives"):
        env = make(fake, log, renderer, mode=mode, num_traffic=2)
        check_env(env, skip_render_check=True)
        env.close()


def test_with_block_cleans_up_on_ctrl_c(fake, log, renderer):
    world = fake[1]
    with pytest.raises(KeyboardInterrupt):
        with make(fake, log, renderer, num_traffic=2) as env:
            env.reset(seed=0)
            env.step(np.zeros(2, np.float32))
            assert world._actors
            raise KeyboardInterrupt
    assert world._actors == {} and not world.get_settings().synchronous_mode


def test_scenario_inserts_become_carla_actors_and_timed_events_are_refused(fake, log, renderer):
    from stag_sim.agent_sources import AgentEvent

    insert = AgentEvent("insert", agent="tiny-car-1", ahead_m=15.0, speed=4.0, behavior="stopped")
    env = make_carla_env(f"{HOST}:3000", cosim={"mode": "stag_drives"}, carla_module=fake[0], scene=log,
                         renderer=renderer, world={"events": (insert,)}, **SMALL)
    _, info = env.reset(seed=0)
    (agent,) = env.bridge.agents()  # spawned where the scenario puts it: 15 m ahead of the ego's start, on the route
    # (the actor origin goes there; the stand-in's vehicle box centre sits 0.1 m ahead of its origin, as in CARLA)
    np.testing.assert_allclose(agent.T_scene_from_box[:2, 3], [15.1, 0.0], atol=1e-6)
    assert info["carla"]["agents_drawn"] == ["carla-0"]
    env.close()
    brake = AgentEvent("hard_brake", agent="tiny-car-0", at_s=1.0)
    with pytest.raises(ValidationError, match="hard_brake cannot be scripted through the Traffic Manager"):
        make_carla_env(f"{HOST}:3000", carla_module=fake[0], scene=log, renderer=renderer,
                       world={"events": (insert, brake)}, **SMALL)
