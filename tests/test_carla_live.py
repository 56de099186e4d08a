"""Short co-simulation episodes against a live CARLA server (``pytest -m carla``).

The server address comes from ``STAG_CARLA=host:port`` (default 127.0.0.1:2000); every test is skipped, with the
reason, when nothing listens there or the carla client is not installed. See docs/carla.md for starting a server.
"""

import os
import socket

import numpy as np
import pytest

from stag_sim.geometry import invert_transform, pose_xy_yaw, yaw_of

pytestmark = pytest.mark.carla
ADDRESS = os.environ.get("STAG_CARLA", "127.0.0.1:2000")


@pytest.fixture(scope="module")
def address():
    pytest.importorskip("carla", reason="the carla client is not installed (pip install 'stag-sim[carla]')")
    from stag_sim.carla_bridge import parse_address

    host, port = parse_address(ADDRESS)
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as e:
        pytest.skip(f"no CARLA server reachable at {host}:{port} ({e}); set STAG_CARLA=host:port, see docs/carla.md")
    return host, port


@pytest.fixture(scope="module")
def log():
    from stag_sim.testing import tiny_scene_log

    return tiny_scene_log(num_frames=40, width=64, height=36)


def our_actor_ids(host, port):
    import carla

    client = carla.Client(host, port)
    client.set_timeout(10.0)
    return {a.id for a in client.get_world().get_actors()}


def test_bridge_syncs_drives_and_restores(address):
    from stag_sim.carla_bridge import BridgeConfig, CarlaBridge

    host, port = address
    before = our_actor_ids(host, port)
    bridge = CarlaBridge(BridgeConfig(host=host, port=port, dt=0.05, seed=3)).connect()
    saved = bridge._saved_settings
    try:
        s = bridge.world.get_settings()
        assert s.synchronous_mode and np.isclose(s.fixed_delta_seconds, 0.05)
        bridge.spawn_ego(0)
        for _ in range(20):  # settle on the road
            bridge.tick()
        T0 = bridge.ego_pose()
        for _ in range(40):
            bridge.apply_control(throttle=0.8, steer=0.0, brake=0.0)
            bridge.tick()
        moved = (invert_transform(T0) @ bridge.ego_pose())[:3, 3]
        assert moved[0] > 1.0 and abs(moved[1]) < 0.2 * moved[0]  # ahead, roughly straight
        assert np.linalg.norm(bridge.ego_velocity()) > 0.5
    finally:
        assert bridge.close() == []
    s = bridge.world.get_settings()
    assert (s.synchronous_mode, s.fixed_delta_seconds, s.no_rendering_mode) == saved
    assert our_actor_ids(host, port) <= before  # the ego and its sensors are gone


def test_spawned_actor_pose_round_trips_through_carla(address):
    from stag_sim.carla_bridge import BridgeConfig, CarlaBridge

    host, port = address
    with CarlaBridge(BridgeConfig(host=host, port=port, dt=0.05)) as bridge:
        bridge.spawn_ego(0)
        for _ in range(10):
            bridge.tick()
        T_ego = pose_xy_yaw(100.0, -50.0, 0.8)
        bridge.align_ego_to(T_ego)
        np.testing.assert_allclose(bridge.ego_pose()[:2, 3], T_ego[:2, 3], atol=1e-3)
        T_want = T_ego @ pose_xy_yaw(-12.0, 0.0, 0.0)  # behind the ego on its lane
        actor = bridge.spawn_actor("vehicle.tesla.model3", T_want @ pose_xy_yaw(0, 0, 0, 0.5))
        bridge.tick()
        (agent,) = [a for a in bridge.agents() if a.actor_id == actor]
        assert np.linalg.norm(agent.T_scene_from_box[:2, 3] - (T_want @ np.array([0.0, 0, 0, 1]))[:2]) < 1.0
        assert abs(np.angle(np.exp(1j * (yaw_of(agent.T_scene_from_box) - yaw_of(T_want))))) < 0.05


@pytest.mark.parametrize("mode", ["stag_drives", "carla_drives"])
def test_short_cosim_episode(address, log, mode):
    from stag_sim.envs.carla_env import make_carla_env

    host, port = address
    env = make_carla_env(f"{host}:{port}", cosim={"mode": mode, "num_traffic": 5, "match_range": 200.0},
                         scene=log, image_size=(36, 64), voxel_size=0.25, max_steps=20)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        for _ in range(15):
            obs, reward, term, trunc, info = env.step(info["expert_action"])
            assert env.observation_space.contains(obs) and set(info["carla"]) >= {"collisions", "agents_drawn"}
            if mode == "stag_drives":  # the kinematic CARLA ego sits exactly on ours
                np.testing.assert_allclose(env.bridge.ego_pose()[:2, 3], [env.state.ego.x, env.state.ego.y], atol=0.05)
            if term or trunc:
                break
        assert env.state.step > 0
    finally:
        env.close()
