import numpy as np
import pytest

from stag_sim.cache import write_scene_cache
from stag_sim.errors import SceneError, ValidationError
from stag_sim.geometry import invert_transform, pose_xy_yaw
from stag_sim.scene4d import (
    SKY_BINS, Scene4D, Scene4DConfig, VoxelAccumulator, box_proxy_points, build_scene4d, load_scene4d,
    scene4d_cache_path,
)
from stag_sim.testing import tiny_scene_log


def test_voxel_accumulator_averages_position_and_colour():
    acc = VoxelAccumulator(1.0)
    acc.add(np.array([[0.2, 0.2, 0.2], [0.4, 0.6, 0.8]]), np.array([[0, 0, 0], [100, 200, 50]], np.uint8))
    acc.add(np.array([[5.5, 0.5, 0.5]]), np.array([[10, 20, 30]], np.uint8))
    pts, cols = acc.result()
    assert pts.dtype == np.float32 and cols.dtype == np.uint8
    order = np.argsort(pts[:, 0])
    np.testing.assert_allclose(pts[order], [[0.3, 0.4, 0.5], [5.5, 0.5, 0.5]], atol=1e-6)
    np.testing.assert_array_equal(cols[order], [[50, 100, 25], [10, 20, 30]])


def test_build_from_depth_splits_static_and_objects():
    tiny_log = tiny_scene_log(num_frames=1)  # one frame: every static point must be outside that frame's boxes
    scene = build_scene4d(tiny_log, Scene4DConfig(voxel_size=0.2, min_object_points=10**6))
    assert scene.static_points.dtype == np.float32 and len(scene.static_points) > 1000
    assert scene.instance_ids == tiny_log.objects.instance_ids
    # no static point lies inside an object box (shrunk by a voxel: voxel means move points; above the road cut)
    cfg = scene.config
    for t in range(tiny_log.num_frames):
        for k, size in enumerate(tiny_log.objects.sizes):
            T = invert_transform(tiny_log.objects.poses[t, k])
            p = scene.static_points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
            half = size / 2 - cfg.voxel_size
            inside = (np.abs(p[:, 0]) < half[0]) & (np.abs(p[:, 1]) < half[1]) & (p[:, 2] < half[2]) & (
                p[:, 2] > -half[2] + cfg.ground_clearance)
            assert not inside.any()
    for o in scene.objects:  # objects live in their own box frame
        assert o.is_proxy  # min_object_points forces the proxy
        assert np.all(np.abs(o.points) <= o.size / 2 + 0.05)


def test_build_from_lidar_only():
    log = tiny_scene_log(with_depth=False)
    scene = build_scene4d(log, Scene4DConfig(voxel_size=0.1))
    assert len(scene.static_points) > 0
    # no depth maps: the LiDAR is completed into dense depth, and what it never reaches is the far field
    assert scene.env_map is not None and scene.env_map.coverage > 0
    assert scene.config.depth_source == "auto"


def test_object_with_too_few_points_gets_a_box_proxy():
    log = tiny_scene_log()
    scene = build_scene4d(log, Scene4DConfig(min_object_points=10**9))
    for o, size in zip(scene.objects, log.objects.sizes):
        assert o.is_proxy and len(o.points) > 100
        # every proxy point is on the box surface
        d = np.abs(np.abs(o.points) - size / 2).min(axis=1)
        assert np.all(d[-len(box_proxy_points(size, 2 * scene.object_voxel_size)):] < 1e-4)


def test_exclude_frames_changes_the_cloud_and_all_excluded_is_an_error(tiny_log):
    full = build_scene4d(tiny_log, Scene4DConfig(voxel_size=0.2))
    held = build_scene4d(tiny_log, Scene4DConfig(voxel_size=0.2, exclude_frames=(1,)))
    assert len(held.static_points) < len(full.static_points)
    with pytest.raises(SceneError, match="no frames left"):
        build_scene4d(tiny_log, Scene4DConfig(exclude_frames=(0, 1, 2)))


def test_config_validation():
    with pytest.raises(ValidationError, match="voxel_size"):
        Scene4DConfig(voxel_size=0.0).validate()
    with pytest.raises(ValidationError, match="pixel_stride"):
        Scene4DConfig(pixel_stride=0).validate()


def test_object_poses_at_interpolates(tiny_log):
    scene = build_scene4d(tiny_log, Scene4DConfig(voxel_size=0.3))
    p = scene.object_poses_at(0.05)  # halfway between frames 0 and 1
    np.testing.assert_allclose(p["tiny-car-0"][:3, 3], [10.3, 3.5, 0.78], atol=1e-9)
    np.testing.assert_allclose(scene.object_poses_at(-5.0)["tiny-car-0"], tiny_log.objects.poses[0, 0])
    np.testing.assert_allclose(scene.object_poses_at(99.0)["tiny-car-1"], tiny_log.objects.poses[-1, 1])


def test_cache_is_reused_and_rebuilt_when_params_change(tmp_path, tiny_log, monkeypatch):
    scene_dir = write_scene_cache(tiny_log, tmp_path / "scene")
    cfg = Scene4DConfig(voxel_size=0.25)
    first = load_scene4d(scene_dir, cfg, progress=False)
    path = scene4d_cache_path(scene_dir, cfg)
    assert path.is_file() and path.parent == scene_dir and path.name.startswith("scene4d-")
    import stag_sim.scene4d as s4

    def boom(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(s4, "build_scene4d", boom)
    again = load_scene4d(scene_dir, cfg, progress=False)
    np.testing.assert_array_equal(again.static_points, first.static_points)
    np.testing.assert_array_equal(again.static_colors, first.static_colors)
    assert again.instance_ids == first.instance_ids and again.config == first.config
    assert [o.is_proxy for o in again.objects] == [o.is_proxy for o in first.objects]
    assert scene4d_cache_path(scene_dir, Scene4DConfig(voxel_size=0.3)) != path
    assert scene4d_cache_path(scene_dir, Scene4DConfig(voxel_size=0.25, exclude_frames=(1,))) != path


def test_corrupt_cache_file_is_a_clear_error(tmp_path, tiny_log):
    scene = build_scene4d(tiny_log, Scene4DConfig(voxel_size=0.3))
    path = scene.save(tmp_path / "s.npz")
    assert Scene4D.load(path).num_points == scene.num_points
    path.write_bytes(b"not a zip")
    with pytest.raises(SceneError, match="corrupt"):
        Scene4D.load(path)


def test_sky_model_from_empty_depth_pixels():
    log = tiny_scene_log(num_frames=1)
    scene = build_scene4d(log, Scene4DConfig(voxel_size=0.3))
    assert scene.sky_colors.shape == (SKY_BINS, 3)  # random depth in [1, 80) m: no sky pixel at all
    assert not scene.sky_valid.any()


def test_a_point_projected_and_unprojected_returns_to_itself():
    from stag_sim.camera import nuscenes_like_rig, project_world, unproject

    rig = nuscenes_like_rig(400, 224)
    T_wc = rig.T_world_from_cameras(pose_xy_yaw(3.0, -2.0, 0.4))[1]
    p = np.array([[12.0, -9.0, 1.2]])
    uv, z, vis = project_world(p, T_wc, rig[1].intrinsics)
    assert vis[0]
    back = unproject(uv, z, rig[1].intrinsics) @ T_wc[:3, :3].T + T_wc[:3, 3]
    np.testing.assert_allclose(back, p, atol=1e-9)


def test_camera_layers_and_far_shell_build_save_and_load(tmp_path):
    """Forced on for a log with its own depth: one static layer (and far-field map) per camera, in rig order;
    the file keeps them."""
    from stag_sim.scene4d_types import Scene4D

    log = tiny_scene_log(num_frames=3)
    scene = build_scene4d(log, Scene4DConfig(voxel_size=0.5, camera_layers="on", far_shell_m=20.0))
    assert scene.static_layers and set(scene.static_layers) <= set(log.rig.names)
    assert list(scene.static_layers) == [n for n in log.rig.names if n in scene.static_layers]
    assert len(scene.static_layer) == len(scene.static_points)
    assert np.all(np.diff(scene.static_layer.astype(int)) >= 0)  # layer after layer
    # the tiny log's depth reaches everywhere (a far plane at 30 m): no far field, so no maps per layer either
    assert scene.env_map is None and scene.layer_env_maps == ()
    back = Scene4D.load(scene.save(tmp_path / "s.npz"))
    assert back.static_layers == scene.static_layers
    np.testing.assert_array_equal(back.static_layer, scene.static_layer)
    for a, b in zip(back.layer_env_maps, scene.layer_env_maps):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a.colors, b.colors)
    off = build_scene4d(log, Scene4DConfig(voxel_size=0.5))  # the log's own depth: no layers, no shell (auto)
    assert off.static_layers == () and off.static_layer is None
    with pytest.raises(ValidationError, match="static_layer"):
        Scene4D(**{**scene.__dict__, "static_layer": scene.static_layer[:-1]}).validate()
