"""Traffic lights made visible: the synthetic town's oracle draws each signal with its lamp lit by the light's state
at the render time and paints its stop line; the ``bev`` observation's ``light_stop`` / ``light_go`` channels and the
report's bird's-eye image draw the stop lines by state (the episode's schedules), the same in the single and the
batched env. Tiny renders (a few dozen pixels) and a layout-only town: no sensor town is generated."""

import gymnasium as gym
import numpy as np
import pytest

import stag_sim  # noqa: F401  (registers StagDrive-v0)
from stag_sim.camera import CameraIntrinsics
from stag_sim.envs.bev import bev_image
from stag_sim.envs.observations import BEV_CHANNELS
from stag_sim.road_rules import GREEN, RED, UNKNOWN, YELLOW, LightOverride, TrafficLight
from stag_sim.synth import TownOracle, build_town, generate_scene
from stag_sim.synth.props import HEAD_HALF, LAMP_PITCH, lamp_colors
from stag_sim.testing import tiny_scene_log

SEED = 0
EGO_LIGHT = "jE:ring-ccw-s"  # the light the logged ego meets first (its stop line around t = 8 s)
START_FRAME = 60  # t = 6 s: the ego ~15 m before that stop line
STOP, GO = BEV_CHANNELS.index("light_stop"), BEV_CHANNELS.index("light_go")
BEV = {"size_px": 64, "resolution_m": 0.5}


@pytest.fixture(scope="module")
def oracle():
    return TownOracle(build_town(SEED))  # rasterises the ground once (~1.5 s)


@pytest.fixture(scope="module")
def layout():
    return generate_scene(seed=SEED, duration_s=10.0, sensors=False)


def light(town, light_id: str = EGO_LIGHT) -> TrafficLight:
    return next(lt for lt in town.scene_map.traffic_lights if lt.light_id == light_id)


def first_time(lt: TrafficLight, state: str) -> float:
    """A time [s] well inside a stretch where ``lt`` shows ``state``."""
    t = np.arange(0.0, 2 * lt.period_s, 0.25)
    inside = np.array([lt.state_at(a) == state and lt.state_at(a + 1.0) == state for a in t])
    return float(t[np.flatnonzero(inside)[0]] + 0.5)


def camera(position, forward, down=(0.0, 0.0, -1.0)) -> np.ndarray:
    """(4, 4) OpenCV camera pose at ``position`` looking along ``forward``, image down along ``down``."""
    z = np.asarray(forward, float) / np.linalg.norm(forward)
    y = np.asarray(down, float) - np.dot(down, z) * z
    y /= np.linalg.norm(y)
    T = np.eye(4)
    T[:3, :3] = np.stack([np.cross(y, z), y, z], 1)
    T[:3, 3] = position
    return T


def lamp_view(oracle, lt: TrafficLight, time_s: float) -> np.ndarray:
    """(H, W, 3) a 24 x 40 px view of the signal head from 4 m in front of it, in its traffic's direction."""
    d = np.append(lt.stop_direction, 0.0)
    intr = CameraIntrinsics(fx=100.0, fy=100.0, cx=11.5, cy=19.5, width=24, height=40)  # ~0.9 x 1.5 m at 3.9 m
    rgb, _ = oracle.render(camera(lt.head_xyz - 4.0 * d, d), intr, time_s)
    return rgb.astype(int)


def red(img):
    return (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)


def yellow(img):
    return (img[..., 0] > 180) & (img[..., 1] > 130) & (img[..., 2] < 90)


def green(img):
    return (img[..., 1] > 180) & (img[..., 0] < 120) & (img[..., 2] < 160)


def lit(img) -> dict[str, int]:
    """Pixels of each lamp colour in ``img``."""
    return {name: int(f(img).sum()) for name, f in (("red", red), ("yellow", yellow), ("green", green))}


def test_the_lit_lamp_follows_the_light_state(oracle):
    lt = light(oracle.town)
    views = {s: lamp_view(oracle, lt, first_time(lt, s)) for s in ("red", "yellow", "green")}
    for state, img in views.items():  # the lit lamp is the state's colour, the others are dark
        n = lit(img)
        assert n[state] >= 6 and sum(n.values()) == n[state], (state, n)
    # red on top, green at the bottom, 2 lamp pitches apart (at ~3.85 m, fy = 100 px)
    rows = {s: np.flatnonzero(f(views[s]).any(1)).mean() for s, f in (("red", red), ("green", green))}
    assert rows["green"] - rows["red"] == pytest.approx(2 * LAMP_PITCH * 100.0 / (4.0 - HEAD_HALF[0]), abs=2.5)
    # the head is drawn only on the side its traffic sees: from behind, no lamp
    d = np.append(lt.stop_direction, 0.0)
    intr = CameraIntrinsics(fx=100.0, fy=100.0, cx=11.5, cy=19.5, width=24, height=40)
    back, _ = oracle.render(camera(lt.head_xyz + 4.0 * d, -d), intr, first_time(lt, "red"))
    assert sum(lit(back.astype(int)).values()) == 0


def test_lamp_colours_of_every_state_and_all_dark_when_unknown():
    lt = TrafficLight("x", ("a",), np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(3), np.array([0.0, 5.0, 10.0]),
                      ("green", "yellow", "red")).validate()
    params = np.array([[0, RED], [0, YELLOW], [0, GREEN]], np.float32)
    lum = lambda t: lamp_colors(params, [lt], t).max(1)  # noqa: E731
    assert np.argmax(lum(1.0)) == 2 and np.argmax(lum(6.0)) == 1 and np.argmax(lum(11.0)) == 0
    assert lum(1.0)[2] > 3 * lum(1.0)[:2].max()
    unknown = lt.with_schedule([0.0], ["unknown"])
    assert np.all(lamp_colors(params, [unknown], 1.0).max(1) < 60) and UNKNOWN == 3


def test_the_stop_line_is_painted_across_the_lane(oracle):
    lt = light(oracle.town)
    d = np.append(lt.stop_direction, 0.0)
    mid = np.append(lt.stop_line.mean(0), 0.0)
    intr = CameraIntrinsics(fx=18.0, fy=18.0, cx=4.0, cy=4.0, width=9, height=9)  # 1 m x 1 m from 2 m up

    def ground(xyz):
        rgb, _, labels = oracle.render(camera(xyz + [0, 0, 2.0], (0, 0, -1.0), down=d), intr, 0.0, with_labels=True)
        assert np.all(labels == -1)  # nothing in between
        return rgb.astype(int)

    on = ground(mid)
    assert on[4, :].min() > 180 and on[4, :].std(0).max() < 20  # white across the lane (rows run along traffic)
    assert ground(mid - 1.5 * d).max() < 140  # asphalt before it
    a, b = lt.stop_line
    for f in (0.1, 0.9):  # ... from one edge of the lane to the other
        assert ground(np.append(a + f * (b - a), 0.0))[4, 4].min() > 180, f


def bev_env(log, **world):
    return gym.make("StagDrive-v0", scene=log, cameras=(), observations=("bev",), bev=BEV,
                    world={"start_frame": START_FRAME, **world})


def stop_line_px(env) -> tuple[int, int]:
    """(row, col) of the ego light's stop line centre in the bev."""
    u = env.unwrapped
    lt = next(lt for lt in u.world.rules.lights if lt.light_id == EGO_LIGHT)
    e = u.state.ego
    dx, dy = lt.stop_line.mean(0) - (e.x, e.y)
    xe, ye = np.cos(e.yaw) * dx + np.sin(e.yaw) * dy, -np.sin(e.yaw) * dx + np.cos(e.yaw) * dy
    S, res = BEV["size_px"], BEV["resolution_m"]
    return int(round(0.75 * S - xe / res)), int(round(S / 2 - ye / res))


def test_bev_lights_the_stop_line_by_its_state(layout):
    env = bev_env(layout)
    obs, _ = env.reset(seed=0)
    r, c = stop_line_px(env)
    assert 8 < r < 40  # ahead, in view
    b = obs["bev"]
    assert b[GO, r - 1:r + 2, c - 1:c + 2].all() and not b[STOP, r - 1:r + 2, c - 1:c + 2].any()  # logged: green
    assert np.count_nonzero(b[GO, r - 1:r + 2]) >= 3 / BEV["resolution_m"]  # a line across the lane
    for state in ("red", "yellow"):
        env = bev_env(layout, lights=(LightOverride(EGO_LIGHT, (state,), (0.0,)),))
        b = env.reset(seed=0)[0]["bev"]
        assert b[STOP, r - 1:r + 2, c - 1:c + 2].all() and not b[GO, r - 1:r + 2, c - 1:c + 2].any(), state
    # a schedule that turns red 0.45 s into the episode: the channel switches at that time
    env = bev_env(layout, lights=(LightOverride(EGO_LIGHT, ("green", "red"), (0.0, 0.45)),))
    obs, info = env.reset(seed=0)
    seen = []
    for _ in range(8):
        r, c = stop_line_px(env)
        seen.append((round(env.unwrapped.state.time_s - START_FRAME / 10, 3), bool(obs["bev"][STOP, r, c]),
                     bool(obs["bev"][GO, r, c])))
        obs, _, _, _, info = env.step(info["expert_action"])
    assert all((stop, go) == ((t > 0.45), (t < 0.45)) for t, stop, go in seen), seen


def test_bev_light_channels_are_empty_without_lights_or_map():
    for log in (tiny_scene_log(num_frames=30, width=16, height=9),  # a lane map without lights
                tiny_scene_log(num_frames=30, width=16, height=9, with_map=False)):
        env = gym.make("StagDrive-v0", scene=log, cameras=(), observations=("bev",), bev=BEV)
        obs, info = env.reset(seed=0)
        for _ in range(3):
            assert not obs["bev"][[STOP, GO]].any() and obs["bev"].shape == (len(BEV_CHANNELS), 64, 64)
            obs, _, _, _, info = env.step(info["expert_action"])


def test_batched_bev_equals_the_single_envs(layout):
    world = {"start_frame": START_FRAME, "lights": (LightOverride(EGO_LIGHT, ("green", "yellow", "red"),
                                                                  (0.0, 0.2, 0.4)),)}
    kw = dict(scene=layout, cameras=(), observations=("bev", "state"), bev=BEV, world=world)
    vec = gym.make_vec("StagDrive-v0", num_envs=2, vectorization_mode="vector_entry_point", **kw)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make("StagDrive-v0", **kw) for _ in range(2)])
    ob_v, _ = vec.reset(seed=0)
    ob_s, _ = sync.reset(seed=0)
    actions = np.array([[0.3, 0.0], [-0.2, 0.05]], np.float32)
    lit = set()
    for _ in range(6):
        assert np.array_equal(ob_v["bev"], ob_s["bev"])
        lit |= {ch for ch in (STOP, GO) if ob_v["bev"][:, ch].any()}
        ob_v, *_ = vec.step(actions)
        ob_s, *_ = sync.step(actions)
    assert lit == {STOP, GO}
    vec.close()
    sync.close()


def test_report_bev_image_colours_stop_lines_by_state(layout):
    env = bev_env(layout)
    env.reset(seed=0)
    u = env.unwrapped
    poses, valid = u.world.agent_poses(u.state)

    def count(img, rgb):
        return int(np.all(np.abs(img.astype(int) - rgb) < 30, -1).sum())

    green = bev_image(u.world, u.state, poses, valid, [], size=128)
    env = bev_env(layout, lights=(LightOverride(EGO_LIGHT, ("red",), (0.0,)),))
    env.reset(seed=0)
    u = env.unwrapped
    red = bev_image(u.world, u.state, poses, valid, [], size=128)
    assert count(red, (235, 50, 50)) > count(green, (235, 50, 50)) + 4
    assert count(green, (60, 220, 90)) > count(red, (60, 220, 90)) + 4
