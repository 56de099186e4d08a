"""nuScenes ingestion of a *real* keyframe through the real nuscenes-devkit.

Data: ``../shared/realdata/nuscenes_scene0061_keyframe`` (the first keyframe of nuScenes scene-0061, version
``v1.0-test``: six 1600x900 cameras with their original JPEGs, one LIDAR_TOP sweep, calibration and ego poses; no
annotations and a blank raster map; see ``../shared/realdata/README.md``). It is found beside the project
checkout, or at ``$STAG_SIM_REALDATA`` (the folder holding ``nuscenes_scene0061_keyframe/``). The tests skip,
saying why, when the devkit or the data is absent.
"""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nuscenes", reason="needs nuscenes-devkit (pip install 'stag-sim[nuscenes]')")

from stag_sim.testing import realdata_path
from stag_sim.cache import load_scene_cache  # noqa: E402
from stag_sim.camera import CAMERA_NAMES, project_world  # noqa: E402
from stag_sim.geometry import transform_points  # noqa: E402
from stag_sim.ingest.nuscenes import ingest_nuscenes, ingest_nuscenes_to_cache  # noqa: E402
from stag_sim.summary import scene_summary  # noqa: E402

VERSION = "v1.0-test"
SCENE = "scene-0061"
KEYFRAME = "nuscenes_scene0061_keyframe"
NUM_LIDAR_POINTS = 34_688  # in the one LIDAR_TOP sweep (README)
MIN_POINTS_PER_CAMERA = 2_000  # [-] LiDAR points that must land inside each 1600x900 image (3-5 k measured)


def _realdata_dir() -> Path | None:
    found = realdata_path(f"{KEYFRAME}/{VERSION}/scene.json")
    return None if found is None else found.parents[2]


@pytest.fixture(scope="module")
def dataroot() -> Path:
    base = _realdata_dir()
    if base is None:
        pytest.skip(f"real nuScenes keyframe {KEYFRAME}/ not found in ../shared/realdata/ beside the checkout "
                    "nor under $STAG_SIM_REALDATA")
    return base / KEYFRAME


@pytest.fixture(scope="module")
def tables(dataroot) -> dict:
    return {name: json.loads((dataroot / VERSION / f"{name}.json").read_text())
            for name in ("scene", "sample_data", "sensor", "calibrated_sensor")}


@pytest.fixture(scope="module")
def cam_records(tables) -> dict:
    """The keyframe's camera sample_data rows by channel."""
    channel = {s["token"]: s["channel"] for s in tables["sensor"]}
    calib = {c["token"]: channel[c["sensor_token"]] for c in tables["calibrated_sensor"]}
    return {calib[sd["calibrated_sensor_token"]]: sd for sd in tables["sample_data"]
            if calib[sd["calibrated_sensor_token"]].startswith("CAM_")}


@pytest.fixture(scope="module")
def cache(dataroot, tmp_path_factory) -> Path:
    return ingest_nuscenes_to_cache(dataroot, VERSION, SCENE, tmp_path_factory.mktemp("real") / "scene-0061")


@pytest.fixture(scope="module")
def log(cache):
    return load_scene_cache(cache)


def test_the_scene_is_the_one_the_readme_names(tables):
    assert [s["name"] for s in tables["scene"]] == [SCENE] and tables["scene"][0]["nbr_samples"] == 1


def test_one_keyframe_six_nuscenes_cameras_in_nuscenes_order(log):
    assert log.source == "nuscenes" and log.name == SCENE and log.num_frames == 1
    assert log.metadata["location"] == "singapore-onenorth" and log.metadata["frames"] == "keyframes"
    assert log.rig.names == CAMERA_NAMES  # CAM_FRONT, CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK, CAM_BACK_LEFT, CAM_FRONT_LEFT
    # No annotations and no map expansion in this sample: empty tracks, no map, LiDAR and no depth maps.
    assert len(log.objects) == 0 and log.objects.valid.shape == (1, 0)
    assert log.map is None and log.depth is None and log.lidar is not None


def test_images_keep_their_original_jpeg_bytes_and_capture_times(dataroot, log, cam_records):
    assert log.images.codec == "jpeg" and log.images.shape == (1, 6)
    for c, name in enumerate(log.rig.names):
        sd = cam_records[name]
        assert log.images.encoded(0, c) == (dataroot / sd["filename"]).read_bytes()
        assert log.camera_timestamps_us[0, c] == sd["timestamp"]
        assert sd["filename"].endswith(f"__{name}__{sd['timestamp']}.jpg")
    assert log.images[0, 0].shape == (900, 1600, 3)
    # The six cameras fire one after another within ~45 ms around the LiDAR keyframe, each at its own ego pose.
    spread_us = log.camera_timestamps_us[0].max() - log.camera_timestamps_us[0].min()
    assert 0 < spread_us < 100_000
    assert len({log.camera_ego_poses[0, c].tobytes() for c in range(6)}) == 6


def test_intrinsics_are_the_calibrated_1600x900_pinholes(log, tables, cam_records):
    K_of = {c["token"]: np.array(c["camera_intrinsic"]) for c in tables["calibrated_sensor"]}
    for cam in log.rig:
        i = cam.intrinsics
        assert (i.width, i.height) == (1600, 900)
        np.testing.assert_array_equal(i.K, K_of[cam_records[cam.name]["calibrated_sensor_token"]])
        assert 700 < i.fx < 1400 and abs(i.cx - 800) < 40 and abs(i.cy - 450) < 60
    assert np.degrees(log.rig["CAM_BACK"].intrinsics.hfov) > 85  # the wide rear camera


def test_lidar_points_project_into_every_camera(log):
    lidar = log.lidar
    pts = lidar.sweep(0)
    assert pts.shape == (NUM_LIDAR_POINTS, 4) and pts.dtype == np.float32
    assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255  # intensity
    assert lidar.timestamps_us[0] == log.timestamps_us[0]
    np.testing.assert_array_equal(lidar.ego_poses[0], log.ego_poses[0])
    world = transform_points(lidar.ego_poses[0] @ lidar.T_ego_from_lidar, pts[:, :3].astype(np.float64))
    T_world_from_cams = log.camera_poses(0)
    seen = np.zeros(len(world), bool)
    for c, cam in enumerate(log.rig):
        uv, depth, visible = project_world(world, T_world_from_cams[c], cam.intrinsics)
        assert visible.sum() >= MIN_POINTS_PER_CAMERA, (cam.name, int(visible.sum()))
        assert 2.0 < np.median(depth[visible]) < 40.0, cam.name
        # Points spread over the image, not bunched in a corner: every column third of the image gets some.
        third = np.clip(uv[visible, 0] * 3 // cam.intrinsics.width, 0, 2).astype(int)
        counts = np.bincount(third, minlength=3)
        assert np.all(counts > 100), (cam.name, counts)
        seen |= visible
    # The six cameras see all around: most of the sweep lands in some image.
    assert seen.mean() > 0.4


def test_projection_matches_the_devkits_map_pointcloud_to_image(dataroot, log):
    from nuscenes.nuscenes import NuScenes, NuScenesExplorer

    nusc = NuScenes(VERSION, str(dataroot), verbose=False)
    sample = nusc.sample[0]
    explorer = NuScenesExplorer(nusc)
    lidar = log.lidar
    world = transform_points(lidar.ego_poses[0] @ lidar.T_ego_from_lidar, lidar.sweep(0)[:, :3].astype(np.float64))
    for c, cam in enumerate(log.rig):
        uv_devkit, depth_devkit, _ = explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][cam.name])
        uv, depth, _ = project_world(world, log.camera_poses(0)[c], cam.intrinsics)
        # The devkit keeps points more than 1 m in front and more than 1 px inside the image.
        W, H = cam.intrinsics.width, cam.intrinsics.height
        keep = (depth > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < W - 1) & (uv[:, 1] > 1) & (uv[:, 1] < H - 1)
        assert keep.sum() == uv_devkit.shape[1], cam.name
        # The devkit transforms in float32 steps (world coordinates ~1e3 m: ~1e-4 m steps), stag_sim in float64.
        np.testing.assert_allclose(uv[keep], uv_devkit[:2].T, atol=0.1)
        np.testing.assert_allclose(depth[keep], depth_devkit, atol=1e-3)


def test_cache_round_trip_is_exact(dataroot, log):
    assert log.diff(ingest_nuscenes(dataroot, VERSION, SCENE)) == []


def test_sweep_clock_on_a_single_keyframe(dataroot, log):
    swept = ingest_nuscenes(dataroot, VERSION, SCENE, use_sweeps=True)
    assert swept.num_frames == 1 and swept.metadata["frames"] == "sweeps" and swept.metadata["lidar_sweeps"] == 1
    assert swept.images.equals(log.images) and swept.rig.names == CAMERA_NAMES
    np.testing.assert_array_equal(swept.lidar.sweep(0), log.lidar.sweep(0))
    # The frame clock is CAM_FRONT's capture, the LiDAR keeps its own time and pose.
    assert swept.timestamps_us[0] == log.camera_timestamps_us[0, 0]
    np.testing.assert_array_equal(swept.lidar.ego_poses, log.lidar.ego_poses)


def test_info_summary_of_the_single_keyframe(log, cache):
    text = scene_summary(log, cache)
    assert "frames     1 frame (single keyframe: no duration, no frame rate)" in text
    assert "nan" not in text.lower() and "Hz" not in text
    assert f"lidar      1 sweep, {NUM_LIDAR_POINTS} points/sweep" in text
    assert text.count("1600x900") == 6 and "map        none" in text and "objects    0 tracked: none" in text
