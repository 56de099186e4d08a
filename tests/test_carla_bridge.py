"""CarlaBridge driven offline against the in-process stand-in, the API-drift check against the real installed
carla classes, and the no-server error against the real client."""

import dataclasses
import socket
import sys

import numpy as np
import pytest

from stag_sim.carla_bridge import CARLA_API, Alignment, BridgeConfig, CarlaBridge, load_carla, parse_address
from stag_sim.carla_bridge import standin
from stag_sim.errors import BridgeError, MissingExtraError
from stag_sim.geometry import pose_xy_yaw, yaw_of

HOST = "standin.local"


@pytest.fixture
def server():
    fake = standin.make_standin()
    port = 2000 + len(standin._SERVERS)
    world = fake._serve(HOST, port)
    yield fake, world, port
    fake._shutdown(HOST, port)


def make_bridge(server, **kw):
    fake, _, port = server
    return CarlaBridge(BridgeConfig(host=HOST, port=port, timeout=1.0, dt=0.05, seed=7, **kw), carla_module=fake)


def ego_ids(world):
    return sorted(world._actors)


# ---- the API the bridge touches exists on the real carla, and the stand-in has exactly that -------------------

def _standin_attrs(cls):
    own = {n for n in vars(cls) if not n.startswith("_")}
    if dataclasses.is_dataclass(cls):
        own |= {f.name for f in dataclasses.fields(cls)}
    return own


def test_every_carla_attribute_the_bridge_uses_exists_on_the_real_classes():
    carla = pytest.importorskip("carla", reason="the real carla client is not installed")
    missing = [f"{c or 'carla'}.{a}" for c, a in CARLA_API if not hasattr(getattr(carla, c) if c else carla, a)]
    assert not missing, f"not in the installed carla {getattr(carla, '__version__', '')}: {missing}"


def test_keywords_and_constructors_the_bridge_uses_match_the_real_client():
    carla = pytest.importorskip("carla", reason="the real carla client is not installed")
    from stag_sim.carla_bridge.api import CARLA_KEYWORDS
    from stag_sim.carla_bridge.frames import carla_matrix

    for cls, method, kw in CARLA_KEYWORDS:
        if method == "__init__":
            getattr(carla, cls)(**{kw: 0.5})  # a wrong keyword raises ArgumentError
        else:
            doc = getattr(getattr(carla, cls), method).__doc__
            assert f"){kw}=" in doc, f"carla.{cls}.{method} has no keyword {kw!r}: {doc.splitlines()[1]}"
    tf = CarlaBridge(carla_module=carla)._carla_transform([1.0, -2.0, 3.0], [10.0, 20.0, -30.0])
    np.testing.assert_allclose(np.array(tf.get_matrix()), carla_matrix([1.0, -2.0, 3.0], [10.0, 20.0, -30.0]), atol=1e-5)


def test_standin_implements_exactly_the_declared_api():
    fake = standin.make_standin()
    declared = {}
    for c, a in CARLA_API:
        declared.setdefault(c, set()).add(a)
    for c, attrs in declared.items():
        if c is None:
            assert all(hasattr(fake, a) for a in attrs)
            continue
        cls = getattr(fake, c)
        have = _standin_attrs(cls) | {n for base in cls.__mro__[1:] for n in _standin_attrs(base)}
        assert attrs <= have, f"stand-in {c} lacks {sorted(attrs - have)}"
    for cls in standin.CLASSES:
        allowed = set().union(*(declared.get(base.__name__, set()) for base in cls.__mro__))  # overrides are fine
        extra = _standin_attrs(cls) - allowed
        assert not extra, f"stand-in {cls.__name__} has undeclared API {sorted(extra)} (add it to CARLA_API if real)"


# ---- lifecycle --------------------------------------------------------------------------------------------------

def test_connect_applies_sync_mode_and_seeded_traffic_manager(server):
    _, world, _ = server
    world._settings.fixed_delta_seconds = 0.2  # someone else's settings, to be restored
    bridge = make_bridge(server, no_rendering=True).connect()
    s = world.get_settings()
    assert s.synchronous_mode and s.fixed_delta_seconds == 0.05 and s.no_rendering_mode
    tm = world._tms[8000]
    assert tm._sync and tm._seed == 7
    bridge.close()
    s = world.get_settings()
    assert (s.synchronous_mode, s.fixed_delta_seconds, s.no_rendering_mode) == (False, 0.2, False)
    assert not tm._sync
    assert bridge.close() == []  # idempotent


def test_ticks_move_the_ego_in_the_scene_frame(server):
    _, world, _ = server
    with make_bridge(server) as bridge:
        bridge.spawn_ego(0, rear_axle_to_centre=1.5)
        T0 = bridge.ego_pose()
        # the stand-in box centre is 0.1 m ahead of the actor origin: the rear axle is 1.4 m behind the origin
        loc, rot = bridge.ego_carla_transform()
        np.testing.assert_allclose(T0[:3, 3], [loc[0] - 1.4, -loc[1], loc[2]], atol=1e-9)
        frames = []
        for _ in range(20):
            bridge.apply_control(throttle=1.0, steer=0.0, brake=0.0)
            frames.append(bridge.tick())
        T1 = bridge.ego_pose()
        assert frames == sorted(frames) and len(set(frames)) == 20
        forward = invert(T0) @ np.append(T1[:3, 3], 1.0)
        assert forward[0] > 1.0 and abs(forward[1]) < 1e-6  # drove straight ahead
        v = bridge.ego_velocity()
        np.testing.assert_allclose(v / np.linalg.norm(v), T1[:3, 0], atol=1e-9)
        y_before = yaw_of(T1)
        for _ in range(10):
            bridge.apply_control(throttle=0.5, steer=0.5, brake=0.0)  # CARLA: positive steer turns right
            bridge.tick()
        assert yaw_of(bridge.ego_pose()) < y_before  # ... which is clockwise, a smaller yaw in our frame
    assert world._actors == {}  # ego and both sensors destroyed
    assert not world.get_settings().synchronous_mode


def invert(T):
    from stag_sim.geometry import invert_transform

    return invert_transform(T)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_close_cleans_up_when_the_episode_dies(server, error):
    _, world, _ = server
    before = set(world._actors)
    with pytest.raises(type(error)):
        with make_bridge(server) as bridge:
            bridge.spawn_ego(1)
            bridge.alignment = Alignment.identity()
            bridge.spawn_actor("vehicle.tesla.model3", pose_xy_yaw(30.0, 0.0, 0.0))
            bridge.tick()
            assert len(world._actors) == len(before) + 4
            raise error
    assert set(world._actors) == before
    assert not world.get_settings().synchronous_mode


def test_attached_ego_survives_close_but_its_sensors_do_not(server):
    fake, world, _ = server
    bp = world.get_blueprint_library().find("vehicle.tesla.model3")
    bp.set_attribute("role_name", "hero")
    theirs = world.spawn_actor(bp, fake.Transform(fake.Location(0.0, 50.0, 0.0), fake.Rotation()))
    with make_bridge(server) as bridge:
        assert bridge.attach_ego("hero") is theirs
        assert len(world._actors) == 3
        bridge.set_ego_physics(False)  # mirrored (kinematic) while we drive it
        assert not theirs._physics
        with pytest.raises(BridgeError, match="role_name 'nobody'"):
            bridge.attach_ego("nobody")
    assert list(world._actors) == [theirs.id]
    assert theirs._physics  # handed back as we found it


def test_align_ego_to_puts_the_carla_ego_on_a_scene_pose(server):
    with make_bridge(server) as bridge:
        bridge.spawn_ego(3, rear_axle_to_centre=1.2)  # spawn point 3: yaw 270 deg in CARLA
        T_start = pose_xy_yaw(50.0, -20.0, 0.4, 3.0)
        bridge.align_ego_to(T_start)
        np.testing.assert_allclose(bridge.ego_pose(), T_start, atol=1e-9)
        bridge.apply_control(1.0, 0.0, 0.0)
        for _ in range(5):
            bridge.tick()
        T = bridge.ego_pose()
        moved = (invert(T_start) @ T)[:3, 3]
        assert moved[0] > 0.1 and abs(moved[1]) < 1e-9 and abs(moved[2]) < 1e-9  # straight ahead in the scene


def test_spawned_actor_lands_at_the_requested_scene_pose(server):
    with make_bridge(server) as bridge:
        bridge.spawn_ego(0)
        bridge.alignment = Alignment(pose_xy_yaw(100.0, 20.0, 0.3, 1.0))
        T_want = pose_xy_yaw(140.0, 10.0, -1.0, 1.0)
        actor_id = bridge.spawn_actor("vehicle.tesla.model3", T_want)
        (agent,) = [a for a in bridge.agents() if a.actor_id == actor_id]
        assert agent.category == "vehicle" and agent.type_id == "vehicle.tesla.model3"
        np.testing.assert_allclose(agent.size, [4.8, 2.0, 1.5])
        T_box_expected = T_want @ pose_xy_yaw(0.1, 0.0, 0.0, 0.75)  # stand-in box: 0.1 m ahead, centre 0.75 m up
        np.testing.assert_allclose(agent.T_scene_from_box, T_box_expected, atol=1e-9)
        walker = bridge.spawn_actor("walker.*", pose_xy_yaw(160.0, 10.0, 0.0, 1.0))
        assert {a.actor_id: a.category for a in bridge.agents()}[walker] == "pedestrian"
        with pytest.raises(BridgeError, match="autopilot needs a vehicle"):
            bridge.spawn_actor("walker.*", pose_xy_yaw(180.0, 10.0, 0.0, 1.0), autopilot=True)
        with pytest.raises(BridgeError, match="no blueprint matches"):
            bridge.spawn_actor("vehicle.does_not_exist", T_want)


def test_set_ego_pose_teleports_keeping_carla_height(server):
    with make_bridge(server) as bridge:
        bridge.spawn_ego(2, rear_axle_to_centre=1.5)
        bridge.alignment = Alignment(pose_xy_yaw(5.0, -3.0, 0.5))
        z_before = bridge.ego_carla_transform()[0][2]
        T = pose_xy_yaw(12.0, 7.0, 2.0, 99.0)
        bridge.set_ego_pose(T, velocity=[3.0, 4.0, 0.0])
        got = bridge.ego_pose()
        np.testing.assert_allclose(got[:2, 3], T[:2, 3], atol=1e-9)
        assert np.isclose(yaw_of(got), 2.0)
        assert bridge.ego_carla_transform()[0][2] == z_before  # CARLA keeps its own road height
        np.testing.assert_allclose(bridge.ego_velocity(), [3.0, 4.0, 0.0], atol=1e-9)


def test_collision_and_lane_invasion_events(server):
    _, world, _ = server
    with make_bridge(server) as bridge:
        ego = bridge.spawn_ego(0)
        bridge.alignment = Alignment.identity()
        loc, _ = bridge.ego_carla_transform()
        other = bridge.spawn_actor("vehicle.tesla.model3", pose_xy_yaw(loc[0] + 4.0, -loc[1], 0.0, loc[2]))
        world._invade_lane(ego, "SolidSolid")
        for _ in range(20):
            bridge.apply_control(1.0, 0.0, 0.0)
            bridge.tick()
        ev = bridge.pop_events()
        assert ev.collisions and all(c["other_id"] == other for c in ev.collisions)
        assert ev.lane_invasions == [{"frame": 0, "markings": ["SolidSolid"]}]
        assert bridge.pop_events().collisions == []  # popped


def test_traffic_is_seeded(server):
    def run():
        with make_bridge(server) as bridge:
            ids = bridge.spawn_traffic(3, np.random.default_rng(11))
            return [(a.type_id, np.round(a.T_scene_from_box[:3, 3], 6).tolist()) for a in bridge.agents()], len(ids)

    a, n = run()
    assert n == 3 and run()[0] == a


def test_errors_are_one_line_bridge_errors(server):
    _, world, _ = server
    fake = server[0]
    with pytest.raises(BridgeError, match="not connected"):
        make_bridge(server).tick()
    bridge = make_bridge(server).connect()
    with pytest.raises(BridgeError, match="no ego"):
        bridge.ego_pose()
    world._fail_tick = True
    with pytest.raises(BridgeError, match="tick failed") as e:
        bridge.tick()
    assert "\n" not in str(e.value)
    bridge.close()
    with pytest.raises(BridgeError, match=r"no CARLA server answered at nowhere:1 within 1 s") as e:
        CarlaBridge(host="nowhere", port=1, timeout=1.0, carla_module=fake).connect()
    assert "\n" not in str(e.value) and e.value.__cause__ is None and e.value.__suppress_context__


def test_external_clock_follows_another_client_and_leaves_settings_alone(server):
    _, world, _ = server
    world._settings.synchronous_mode, world._settings.fixed_delta_seconds = True, 0.1  # e.g. scenario_runner's
    with make_bridge(server, external_clock=True) as bridge:
        assert world.get_settings().fixed_delta_seconds == 0.1 and not world._tms  # untouched
        bridge.spawn_ego(0)
        frames = [bridge.tick() for _ in range(3)]
        assert frames == [frames[0], frames[0] + 1, frames[0] + 2]
    assert world.get_settings().synchronous_mode and world._actors == {}  # still theirs; our ego gone


def test_parse_address_and_config_validation():
    assert parse_address("10.0.0.5:2010") == ("10.0.0.5", 2010)
    assert parse_address("carla-host") == ("carla-host", 2000)
    for bad in ("host:", "host:abc", ":2000", "host:70000"):
        with pytest.raises(BridgeError, match="HOST:PORT"):
            parse_address(bad)
    with pytest.raises(BridgeError, match="dt"):
        BridgeConfig(dt=0.0).validate()


def test_missing_carla_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", None)
    with pytest.raises(MissingExtraError, match=r"stag-sim\[carla\]"):
        load_carla()
    with pytest.raises(MissingExtraError):
        CarlaBridge(port=2000).connect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)  # a hang guard, not a timing assertion
def test_real_client_without_server_gives_one_clear_error():
    pytest.importorskip("carla", reason="the real carla client is not installed")
    port = _free_port()
    with pytest.raises(BridgeError) as e:
        CarlaBridge(host="127.0.0.1", port=port, timeout=1.0).connect()
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "within 1 s" in msg and "\n" not in msg
    assert e.value.__suppress_context__  # raised `from None`: no chained RuntimeError traceback


def test_importing_the_bridge_and_env_does_not_import_carla():
    import subprocess

    code = "import sys, stag_sim.carla_bridge, stag_sim.envs.carla_env; assert 'carla' not in sys.modules, 'eager import'"
    subprocess.run([sys.executable, "-c", code], check=True)
