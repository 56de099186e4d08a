"""Synthetic town: generated scene contents, determinism, and agreement of stored data with the oracle."""

import numpy as np
import pytest

from stag_sim.camera import project_world, unproject
from stag_sim.errors import SceneError
from stag_sim.geometry import pose_xy_yaw, transform_points
from stag_sim.scene_log import DEPTH_SCALE, encode_frame
from stag_sim.synth import GENERATOR_VERSION, TownOracle, build_town, generate_scene, oracle_for_scene
from stag_sim.testing import tiny_scene_log

W, H = 112, 64  # [px] small images keep the tests fast
DURATION = 1.5  # [s]


def frame_time(log, t: int) -> float:
    """Seconds since the first frame, computed as the generator does."""
    return (log.timestamps_us[t] - log.timestamps_us[0]) * 1e-6


@pytest.fixture(scope="module")
def log():
    return generate_scene(seed=0, duration_s=DURATION, width=W, height=H, workers=1)


@pytest.fixture(scope="module")
def oracle(log):
    return oracle_for_scene(log)


def test_scene_validates_and_has_the_advertised_contents(log):
    log.validate()
    assert log.name == "synth-town-s0" and log.source == "synthetic"
    assert log.num_frames == 15 and log.duration_s == pytest.approx(1.4)
    assert np.all(np.diff(log.timestamps_us) == 100_000)
    meta = log.metadata
    assert meta["seed"] == 0 and meta["generator"] == "stag_sim.synth" and meta["generator_version"] == GENERATOR_VERSION
    assert (meta["width"], meta["height"], meta["rate_hz"], meta["duration_s"]) == (W, H, 10.0, DURATION)
    assert log.images.codec == "jpeg" and log.depth.codec == "depth-png16" and len(log.lidar) == log.num_frames
    assert log.images[0, 0].shape == (H, W, 3)
    moving = [i for i in log.objects.instance_ids if i.startswith("synth-veh-")]
    assert len(moving) >= 5
    k = log.objects.index_of(moving[0])
    assert np.linalg.norm(log.objects.poses[-1, k, :3, 3] - log.objects.poses[0, k, :3, 3]) > 5.0
    assert np.linalg.norm(log.ego_poses[-1, :3, 3] - log.ego_poses[0, :3, 3]) > 8.0  # > ~5.6 m/s
    assert np.allclose(log.ego_poses[:, 2, 3], 0.0)
    # boxes stand on the ground
    np.testing.assert_allclose(log.objects.poses[..., 2, 3], np.broadcast_to(log.objects.sizes[:, 2] / 2, log.objects.poses.shape[:2]))


def test_map_has_an_intersection_and_a_curve(log):
    m = log.map
    assert max(len(s) for s in m.successors) >= 2
    assert m.drivable_area.area > 1000.0
    headings = []
    for lane in m.lanes:
        xy = np.asarray(lane.coords)
        d = np.diff(xy, axis=0)
        h = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        headings.append(abs(h[-1] - h[0]))
    assert max(headings) > np.radians(80)  # a curve (the ring's corners)
    # the ego drives on the drivable area
    from shapely.geometry import Point

    assert all(m.drivable_area.contains(Point(*p[:2, 3])) for p in log.ego_poses)


def test_default_drive_passes_a_curve_and_a_junction():
    town = build_town(0)
    poses = np.stack([town.ego_pose(t) for t in np.arange(0.0, 20.0, 0.1)])
    yaw = np.unwrap(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
    assert yaw.max() - yaw.min() > np.radians(80)
    W_town = town.half_extent[0]
    assert np.min(np.hypot(poses[:, 0, 3] - W_town, poses[:, 1, 3])) < 3.0  # through junction jE at (W, 0)


def test_same_seed_same_bytes_and_workers_do_not_matter(log):
    again = generate_scene(seed=0, duration_s=DURATION, width=W, height=H, workers=2)
    assert log.diff(again) == []


def test_different_seeds_give_different_towns(log):
    other = generate_scene(seed=1, duration_s=0.2, width=W, height=H, workers=1)
    assert other.images.encoded(0, 0) != log.images.encoded(0, 0)
    assert not np.array_equal(other.ego_poses[0], log.ego_poses[0])
    assert build_town(1).half_extent != build_town(0).half_extent


def test_oracle_reproduces_stored_frames(log, oracle):
    for t in (0, log.num_frames - 1):
        time_s = frame_time(log, t)
        np.testing.assert_array_equal(oracle.ego_pose(time_s), log.ego_poses[t])
        for c, T in enumerate(log.camera_poses(t)):
            rgb, depth = oracle.render(T, log.rig[c].intrinsics, time_s)
            stored_depth = log.depth[t, c]
            assert np.abs(stored_depth - depth).max() <= 0.5 / DEPTH_SCALE + 1e-6
            assert np.array_equal(stored_depth == 0, depth == 0)
            assert encode_frame(rgb, "jpeg", 95) == log.images.encoded(t, c)  # the very same image ...
            assert np.abs(log.images[t, c].astype(float) - rgb).mean() < 5.0  # ... up to JPEG error (tiny images)


def test_object_poses_match_the_tracks(log, oracle):
    for t in range(log.num_frames):
        time_s = frame_time(log, t)
        np.testing.assert_array_equal(oracle.object_poses(time_s), log.objects.poses[t])


def test_lidar_agrees_with_camera_depth(log, oracle):
    t = 5
    pts = log.lidar.sweep(t)
    assert len(pts) > 10_000 and pts.dtype == np.float32
    assert np.linalg.norm(pts[:, :3], axis=1).max() <= 70.0 + 1e-3
    assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255 and pts[:, 3].std() > 5
    world = transform_points(log.lidar.ego_poses[t] @ log.lidar.T_ego_from_lidar, pts[:, :3].astype(np.float64))
    errors = []
    for c, T in enumerate(log.camera_poses(t)):
        intr = log.rig[c].intrinsics
        _, depth = oracle.render(T, intr, frame_time(log, t))
        uv, z, vis = project_world(world, T, intr)
        px = np.rint(uv[vis]).astype(int)
        d = depth[px[:, 1], px[:, 0]]
        # skip depth edges (3x3 neighbourhood spread) where a pixel centre may see another surface
        pad = np.pad(depth, 1, mode="edge")
        stack = np.stack([pad[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        smooth = (stack.max(0) - stack.min(0))[px[:, 1], px[:, 0]] < 0.05 * np.maximum(d, 1.0)
        ok = smooth & (d > 0)
        errors.append(np.abs(d[ok] - z[vis][ok]) / np.maximum(z[vis][ok], 1.0))
    err = np.concatenate(errors)
    assert len(err) > 2000
    # a pixel centre and a LiDAR point on the same surface differ by the surface slope across half a pixel
    assert np.median(err) < 0.01


def test_moving_vehicle_box_renders_where_the_oracle_says(log, oracle):
    ids = log.objects.instance_ids
    checked = 0
    for t in range(0, log.num_frames, 3):
        cams = log.camera_poses(t)
        for k, iid in enumerate(ids):
            if not iid.startswith("synth-veh-"):
                continue
            P, size = log.objects.poses[t, k], log.objects.sizes[k]
            for c, T in enumerate(cams):
                to_cam = T[:3, 3] - P[:3, 3]
                for axis, sgn in ((0, 1), (0, -1), (1, 1), (1, -1)):
                    normal = P[:3, axis] * sgn
                    face = P[:3, 3] + normal * size[axis] / 2
                    if normal @ to_cam <= 0 or np.linalg.norm(to_cam) > 40:
                        continue
                    intr = log.rig[c].intrinsics
                    uv, z, vis = project_world(face[None], T, intr)
                    if not vis[0]:
                        continue
                    _, depth, labels = oracle.render(T, intr, frame_time(log, t), with_labels=True)
                    u, v = np.rint(uv[0]).astype(int)
                    if labels[v, u] != k:  # hidden behind something else
                        continue
                    # the pixel centre's oracle depth puts it on that face of the tracked box
                    p_cam = unproject(np.array([[u, v]], float), depth[v, u:u + 1], intr)
                    local = transform_points(np.linalg.inv(P) @ T, p_cam)[0]
                    assert abs(abs(local[axis]) - size[axis] / 2) < 0.01
                    assert np.all(np.abs(local) <= size / 2 + 0.01)
                    if abs(normal @ to_cam) / np.linalg.norm(to_cam) > 0.5:  # not grazing: depth ~ face centre's
                        assert depth[v, u] == pytest.approx(z[0], rel=0.02)
                    checked += 1
    assert checked >= 1


def test_object_pose_override_moves_the_rendered_car(oracle, log):
    t = 0
    # a camera 12 m behind the first moving car, looking along its heading
    k = 0
    P = log.objects.poses[t, k]
    from stag_sim.camera import CameraIntrinsics, camera_extrinsics

    intr = CameraIntrinsics.from_hfov(np.radians(60), W, H)
    T = P @ pose_xy_yaw(-12.0, 0.0, 0.0, 1.0 - P[2, 3]) @ camera_extrinsics(0, 0, 0, 0)
    _, depth0, lab0 = oracle.render(T, intr, 0.0, with_labels=True)
    moved = P @ pose_xy_yaw(3.0, 0.0, 0.0)
    _, depth1, lab1 = oracle.render(T, intr, 0.0, object_poses={log.objects.instance_ids[k]: moved}, with_labels=True)
    assert (lab0 == k).sum() > 20 and (lab1 == k).sum() > 10
    rear0 = np.median(depth0[lab0 == k])
    rear1 = np.median(depth1[lab1 == k])
    assert rear1 - rear0 == pytest.approx(3.0, abs=0.1)


def test_images_are_textured_not_flat(log, oracle):
    # ground pixels of the front camera (label -1, below the horizon): asphalt/sidewalk with noise, not flat colour
    T = log.camera_poses(0)[0]
    intr = log.rig[0].intrinsics.scaled(400, 224)
    rgb, depth, labels = oracle.render(T, intr, 0.0, with_labels=True)
    lower = rgb[150:, 100:300].reshape(-1, 3).astype(float)
    assert lower.std(axis=0).mean() > 4.0
    assert len(np.unique(lower, axis=0)) > 200
    assert (depth == 0).any() and (depth > 0).mean() > 0.4  # some sky, mostly geometry


def test_oracle_for_non_synthetic_scene_raises():
    with pytest.raises(SceneError):
        oracle_for_scene(tiny_scene_log())


def test_town_is_immutable_and_cached():
    town = build_town(0)
    assert build_town(0) is town
    with pytest.raises(ValueError):
        town.box_centres[0, 0] = 1.0
    assert isinstance(TownOracle(town).object_poses(0.0), np.ndarray)
