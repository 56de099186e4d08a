"""Driving real logs: the env's observation against the logged frames, and fusion that gets better with frames.

On the DGP sample ``scene_02`` (6 surround cameras, 3 frames, the ego origin 12.7 m below z = 0): ``reset()`` must
reproduce the logged frame (the rig on the logged ground, every pixel coloured from the logged images that see it),
and a log-replay drive must score every step against the logged frame. ``benchmarks/realdata_bench.py`` prints the
figures at the env's defaults (304 x 484, 0.05 m voxel): reset 26.6 dB mean (23.3 to 30.1 per camera), replay
28.3 / 26.8 dB (the replayed ego is at the logged poses, so these are in-sample renders). A cheap build (0.1 m
voxel, 242 x 152) is checked on ``scene_01`` in the default suite and on ``scene_02`` (~8 s) in the slow one, with
the full-size floors.

Fusion: a held-out view rendered from a build with every other frame must score at least as well as from the nearest
frame alone, on the real sample and on a synthetic town whose poses carry 5 cm / 0.3 deg of noise.
"""

import dataclasses

import numpy as np
import pytest

from stag_sim.render.fidelity import _resize, psnr
from stag_sim.testing import realdata_path

DGP = realdata_path("dgp_test_scene") if realdata_path("dgp_test_scene/scene_02") else None
needs_realdata = pytest.mark.skipif(DGP is None, reason="real DGP sample data absent (../shared/realdata)")


def _cache(tmp_path_factory, name: str):
    from stag_sim.cache import write_scene_cache
    from stag_sim.ingest.dgp import ingest_dgp

    log = ingest_dgp(DGP / name)
    d = tmp_path_factory.mktemp(name) / "cache"
    write_scene_cache(log, d)
    return log, d


@pytest.fixture(scope="module")
def dgp02(tmp_path_factory):
    if DGP is None:
        pytest.skip("real DGP sample data absent")
    return _cache(tmp_path_factory, "scene_02")


def _frame_of(log, time_s: float) -> int:
    t = (np.asarray(log.timestamps_us) - log.timestamps_us[0]) * 1e-6
    return int(np.argmin(np.abs(t - time_s)))


def _scores(env, log, obs, frame: int) -> list[float]:
    h, w = env.config.image_size
    return [psnr(obs[c], _resize(log.images[frame, log.rig.index(c)], w, h)) for c in env.camera_names]


def _drive(log, scene_dir, **kw):
    """(reset scores per camera, [(step, frame, mean score, reward, terminated, truncated)], env) of a log replay."""
    import gymnasium as gym

    import stag_sim  # noqa: F401  (registers the env)

    env = gym.make("StagDrive-v0", scene=str(scene_dir), **kw).unwrapped
    obs, info = env.reset(seed=0)
    reset = _scores(env, log, obs, 0)
    steps = []
    while True:
        obs, r, term, trunc, info = env.step(info["expert_action"])
        f = _frame_of(log, info["time_s"])
        steps.append((env.state.step, f, float(np.mean(_scores(env, log, obs, f))), r, term, trunc))
        if term or trunc:
            return reset, steps, env


@needs_realdata
@pytest.mark.slow  # ~8 s (the 4D build of 6 cameras x 3 frames); scene_01's drive below stays in the default suite
def test_reset_and_log_replay_reproduce_the_logged_frames_cheaply(dgp02):
    """A cheap build (0.1 m voxel, 242 x 152): measured reset 28.6 dB mean (24.5 to 32.2 per camera), replay
    31.1 / 28.8 dB; the episode pays 0.668 + 0.332 and ends at the log's end."""
    log, d = dgp02
    reset, steps, env = _drive(log, d, image_size=(152, 242), voxel_size=0.1)
    assert np.mean(reset) >= 25.5 and min(reset) >= 22.0, reset
    assert [s[1] for s in steps] == [1, 2] and all(s[2] >= 25.5 for s in steps), steps
    assert sum(s[3] for s in steps) <= 1.0 + 1e-9 and (steps[-1][4] or steps[-1][5]), steps
    from stag_sim.errors import ValidationError

    with pytest.raises(ValidationError, match="after the episode ended"):
        env.step(env.expert_action())



@needs_realdata
def test_a_log_whose_ego_stands_still_drives_straight_ahead(tmp_path_factory):
    """DGP scene_01 (the ego never moves): the route is the road 10 m straight ahead, the episode runs to the log's
    end, and the reset observation is the logged frame (measured 38.6 dB mean at 242 x 152, 0.1 m voxel)."""
    log, d = _cache(tmp_path_factory, "scene_01")
    reset, steps, env = _drive(log, d, image_size=(152, 242), voxel_size=0.1)
    assert env.world.route_length == pytest.approx(10.0) and env.world.drivable_source == "lidar ground"
    assert np.mean(reset) >= 33.0 and steps[-1][5] and not steps[-1][4], (reset, steps)

@needs_realdata
@pytest.mark.slow
def test_env_defaults_on_a_real_log(dgp02):
    """At the env's defaults (image_size='auto': 304 x 484, the 1936 x 1216 rig's aspect; voxel 0.05 m for a real
    log): reset >= 22 dB mean (measured 26.6), every replayed step >= 20 dB (measured 28.3, 26.8)."""
    log, d = dgp02
    reset, steps, env = _drive(log, d)
    assert env.config.image_size == (304, 484) and env.config.voxel_size == 0.05
    assert np.mean(reset) >= 24.5 and min(reset) >= 21.5, reset
    assert all(s[2] >= 24.5 for s in steps), steps


def _held_out_psnr(log, build_frames, target: int, size, cfg) -> float:
    from stag_sim.render.fidelity import fidelity_views, summarise

    hold = [t for t in range(log.num_frames) if t not in build_frames]
    rows, _ = fidelity_views(log, hold, image_size=size, config=cfg)
    return summarise([r for r in rows if r.frame == target])[0]["psnr"]


@needs_realdata
@pytest.mark.slow
@pytest.mark.parametrize("name, gain", [("scene_02", 2.0), ("scene_01", 0.3)])
def test_all_frames_beat_the_nearest_frame_alone_on_a_real_log(name, gain):
    """Held-out frame 1 of the DGP scenes: from frames 0 and 2 vs from frame 0 alone (measured scene_02 19.22 vs
    15.45 dB; scene_01, the ego standing still, 36.37 vs 34.23)."""
    from stag_sim.ingest.dgp import ingest_dgp
    from stag_sim.scene4d import Scene4DConfig

    log = ingest_dgp(DGP / name)
    cfg = Scene4DConfig(voxel_size=0.02, max_image_width=484)
    all_frames = _held_out_psnr(log, [0, 2], 1, (304, 484), cfg)
    nearest = _held_out_psnr(log, [0], 1, (304, 484), cfg)
    assert all_frames >= nearest + gain, (all_frames, nearest)


def _noisy(log, sigma_m: float, sigma_deg: float, seed: int = 1):
    """``log`` with every frame's ego and camera poses moved by the same random rigid error (images unchanged)."""
    from stag_sim.geometry import make_transform, quat_to_matrix

    rng = np.random.default_rng(seed)
    ego, cam = np.array(log.ego_poses, float), np.array(log.camera_ego_poses, float)
    for t in range(len(ego)):
        half = np.radians(sigma_deg) * rng.standard_normal(3) / 2
        q = np.r_[1.0, half] / np.linalg.norm(np.r_[1.0, half])
        D = make_transform(quat_to_matrix(q), sigma_m * rng.standard_normal(3))
        ego[t] = ego[t] @ D
        cam[t] = cam[t] @ D
    return dataclasses.replace(log, ego_poses=ego, camera_ego_poses=cam)


@pytest.mark.slow
def test_more_frames_help_on_a_town_with_noisy_poses():
    """A synthetic town drive treated as a real log (LiDAR-completed depth), its poses off by 5 cm / 0.3 deg per
    frame: the middle frame from all the others beats the nearest frame alone (measured 22.20 vs 19.75 dB; without
    the noise 25.96 vs 24.28; with z-buffer colours and no carving, all frames scored 22.28, below the nearest's
    24.32)."""
    from stag_sim.scene4d import Scene4DConfig
    from stag_sim.synth import generate_scene

    log = generate_scene(seed=3, duration_s=1.2, width=320, height=180)
    T, mid = log.num_frames, log.num_frames // 2
    cfg = Scene4DConfig(voxel_size=0.05, max_image_width=320, depth_source="lidar")
    for noise, gain in (((0.0, 0.0), 1.0), ((0.05, 0.3), 1.5)):
        noisy = _noisy(log, *noise)
        all_frames = _held_out_psnr(noisy, [t for t in range(T) if t != mid], mid, (180, 320), cfg)
        nearest = _held_out_psnr(noisy, [mid - 1], mid, (180, 320), cfg)
        assert all_frames >= nearest + gain, (noise, all_frames, nearest)


def test_pose_refinement_needs_lidar_and_leaves_a_clean_log_alone():
    from stag_sim.pose_refine import refine_poses
    from stag_sim.testing import tiny_scene_log

    log = tiny_scene_log(num_frames=4, width=64, height=36)
    camera_only = dataclasses.replace(log, lidar=None)
    same, report = refine_poses(camera_only)
    assert same is camera_only and "no LiDAR" in report.summary()
    out, report = refine_poses(log)  # too few static returns in this fixture to align: nothing applied, said so
    assert not report.applied.any() and np.array_equal(out.ego_poses, log.ego_poses), report.summary()


@pytest.mark.slow
def test_pose_refinement_restores_a_noisy_town():
    """The town drive with 5 cm / 0.3 deg of pose error per instant (sensors, boxes and cameras moved alike, as a
    bad GPS/IMU pose does): ICP against the neighbouring sweeps brings the frame-to-frame error from 8.8 to 1.3 cm
    (measured) and the held-out frame from 21.93 to 25.42 dB; the clean log is left as it is."""
    from stag_sim.pose_refine import refine_poses, with_pose_noise
    from stag_sim.render.fidelity import fidelity_views, summarise
    from stag_sim.scene4d import Scene4DConfig
    from stag_sim.synth import generate_scene

    log = generate_scene(seed=3, duration_s=1.2, width=320, height=180)
    noisy = with_pose_noise(log, 0.05, 0.3)

    def step_error(est):  # median frame-to-frame translation error against the true poses [m]
        true = log.ego_poses
        return np.median([np.linalg.norm((np.linalg.inv(np.linalg.inv(true[t]) @ true[t + 1])
                                          @ np.linalg.inv(est[t]) @ est[t + 1])[:3, 3]) for t in range(len(true) - 1)])

    refined, report = refine_poses(noisy)
    assert report.applied.sum() >= 10 and step_error(refined.ego_poses) < 0.4 * step_error(noisy.ego_poses), report.summary()
    clean, report = refine_poses(log)
    assert not report.applied.any() or report.shift_m.max() < 0.005, report.summary()
    cfg = Scene4DConfig(voxel_size=0.05, max_image_width=320, depth_source="lidar")
    mid = log.num_frames // 2
    held = [summarise(fidelity_views(L, [mid], image_size=(180, 320), config=cfg)[0])[0]["psnr"] for L in (noisy, refined)]
    assert held[1] >= held[0] + 2.0, held
