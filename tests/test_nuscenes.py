"""nuScenes ingestion end to end through the real nuscenes-devkit (skipped where the devkit is not installed).

A tiny scene is exported with :func:`export_nuscenes`, read back by :func:`ingest_nuscenes` (devkit tables,
NuScenesMap), and compared field by field; camera projection is cross-checked against the devkit's own helpers.
"""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("nuscenes")

from pyquaternion import Quaternion  # noqa: E402  (a devkit dependency)
from nuscenes.utils.geometry_utils import view_points  # noqa: E402
from shapely.geometry import LineString  # noqa: E402

from stag_sim.cache import load_scene_cache  # noqa: E402
from stag_sim.camera import CAMERA_NAMES, project_world  # noqa: E402
from stag_sim.errors import IngestError  # noqa: E402
from stag_sim.ingest import export_nuscenes  # noqa: E402
from stag_sim.ingest.nuscenes import ingest_nuscenes, ingest_nuscenes_to_cache  # noqa: E402
from stag_sim.scene_log import SceneMap  # noqa: E402
from stag_sim.testing import tiny_scene_log  # noqa: E402

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def source():
    """The tiny log, with lane successors and a three-point lane so the map round trip has something to show."""
    log = tiny_scene_log(num_frames=4, width=64, height=36)
    m = log.map
    scene_map = SceneMap(
        m.drivable_area, m.lane_ids + ("lane-turn",),
        m.lanes + (LineString([(80.0, -1.75), (85.0, 0.0), (80.0, 1.75)]),),
        (("lane-turn",), (), ("lane-west",)),
    )
    return dataclasses.replace(log, map=scene_map).validate()


@pytest.fixture(scope="module")
def dataroot(source, tmp_path_factory):
    return export_nuscenes(source, tmp_path_factory.mktemp("nus") / "nuscenes", version=VERSION)


@pytest.fixture(scope="module")
def ingested(source, dataroot):
    return ingest_nuscenes(dataroot, VERSION, source.name)


def test_round_trip_through_the_devkit(source, ingested):
    a, b = source, ingested
    assert b.source == "nuscenes" and b.name == a.name and b.depth is None
    assert b.metadata["nuscenes_version"] == VERSION and b.metadata["location"] == "boston-seaport"
    assert b.num_frames == a.num_frames
    np.testing.assert_array_equal(b.timestamps_us, a.timestamps_us)
    np.testing.assert_allclose(b.ego_poses, a.ego_poses, atol=1e-9)
    np.testing.assert_array_equal(b.camera_timestamps_us, a.camera_timestamps_us)
    np.testing.assert_allclose(b.camera_ego_poses, a.camera_ego_poses, atol=1e-9)
    assert b.rig.names == CAMERA_NAMES
    for ca, cb in zip(a.rig, b.rig):
        assert cb.intrinsics == ca.intrinsics
        np.testing.assert_allclose(cb.T_ego_from_camera, ca.T_ego_from_camera, atol=1e-12)
    assert b.images.codec == "jpeg" and b.images.equals(a.images)
    for t in range(a.num_frames):
        assert b.lidar.sweep(t).dtype == np.float32
        np.testing.assert_array_equal(b.lidar.sweep(t), a.lidar.sweep(t))
    np.testing.assert_array_equal(b.lidar.timestamps_us, a.lidar.timestamps_us)
    np.testing.assert_allclose(b.lidar.ego_poses, a.lidar.ego_poses, atol=1e-9)
    np.testing.assert_allclose(b.lidar.T_ego_from_lidar, a.lidar.T_ego_from_lidar, atol=1e-12)
    oa, ob = a.objects, b.objects
    assert ob.instance_ids == oa.instance_ids and ob.categories == oa.categories
    np.testing.assert_array_equal(ob.sizes, oa.sizes)
    np.testing.assert_array_equal(ob.valid, oa.valid)
    np.testing.assert_allclose(ob.poses, oa.poses, atol=1e-9)


def test_map_round_trip(source, ingested):
    ma, mb = source.map, ingested.map
    assert mb.drivable_area.equals(ma.drivable_area)
    assert mb.lane_ids == ma.lane_ids and mb.successors == ma.successors
    for la, lb in zip(ma.lanes, mb.lanes):
        # The devkit discretises the arcline paths: same polyline, more vertices along it.
        assert lb.hausdorff_distance(la) < 1e-9
        np.testing.assert_allclose([lb.coords[0], lb.coords[-1]], [la.coords[0], la.coords[-1]], atol=1e-9)


def test_sweep_clock_on_a_keyframe_only_dataset_gives_the_same_frames(source, dataroot, ingested):
    b = ingest_nuscenes(dataroot, VERSION, source.name, use_sweeps=True, progress=True)
    assert b.metadata["frames"] == "sweeps"
    np.testing.assert_array_equal(b.timestamps_us, source.camera_timestamps_us[:, 0])
    assert b.images.equals(ingested.images)
    np.testing.assert_allclose(b.objects.poses, ingested.objects.poses, atol=1e-12)


def test_projection_agrees_with_the_devkit(source, dataroot, ingested):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(VERSION, str(dataroot), verbose=False)
    rng = np.random.default_rng(1)
    for t, sample in enumerate(nusc.sample):
        for c, ch in enumerate(CAMERA_NAMES):
            cam = ingested.rig[ch]
            T_world_from_cam = ingested.camera_poses(t)[c]
            # Points 5-30 m in front of the camera, spread over the field of view.
            p_cam = np.stack([rng.uniform(-0.5, 0.5, 8), rng.uniform(-0.3, 0.3, 8), np.ones(8)]) * rng.uniform(5, 30, 8)
            world = (T_world_from_cam[:3, :3] @ p_cam + T_world_from_cam[:3, 3:4]).T
            uv, depth, visible = project_world(world, T_world_from_cam, cam.intrinsics)

            sd = nusc.get("sample_data", sample["data"][ch])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pts = world.T - np.array(pose["translation"])[:, None]
            pts = Quaternion(pose["rotation"]).inverse.rotation_matrix @ pts
            pts = pts - np.array(cs["translation"])[:, None]
            pts = Quaternion(cs["rotation"]).inverse.rotation_matrix @ pts
            uv_devkit = view_points(pts, np.array(cs["camera_intrinsic"]), normalize=True)[:2].T
            np.testing.assert_allclose(uv, uv_devkit, atol=1e-6)
            np.testing.assert_allclose(depth, pts[2], atol=1e-9)


def test_cache_round_trip(source, dataroot, ingested, tmp_path):
    out = ingest_nuscenes_to_cache(dataroot, VERSION, source.name, tmp_path / "scene")
    loaded = load_scene_cache(out)
    assert loaded.diff(ingested) == []


def test_bad_input_is_one_line_ingest_error(source, dataroot, tmp_path):
    cases = [
        ((dataroot, VERSION, "scene-9999"), "scene 'scene-9999' is not in v1.0-mini .*available: tiny-s0"),
        ((tmp_path, VERSION, source.name), "no nuScenes v1.0-mini tables"),
        ((tmp_path / "nowhere", VERSION, source.name), "does not exist"),
    ]
    for args, match in cases:
        with pytest.raises(IngestError, match=match) as info:
            ingest_nuscenes(*args)
        assert "\n" not in str(info.value)


def test_missing_sample_file_is_an_ingest_error(source, tmp_path):
    root = export_nuscenes(source, tmp_path / "nus", version=VERSION)
    victim = next((root / "samples" / "CAM_BACK").iterdir())
    victim.unlink()
    with pytest.raises(IngestError, match=f"sample file .*{victim.name} is missing"):
        ingest_nuscenes(root, VERSION, source.name)


def test_multipolygon_drivable_area_and_no_map(source, tmp_path):
    from shapely.geometry import MultiPolygon, box

    two_parts = MultiPolygon([box(-20.0, -7.0, 30.0, 7.0), box(40.0, -7.0, 80.0, 7.0)])
    log = dataclasses.replace(source, map=dataclasses.replace(source.map, drivable_area=two_parts))
    root = export_nuscenes(log, tmp_path / "multi", version=VERSION)
    assert ingest_nuscenes(root, VERSION, log.name).map.drivable_area.equals(two_parts)

    root = export_nuscenes(dataclasses.replace(source, map=None), tmp_path / "nomap", version=VERSION)
    assert not (root / "maps" / "expansion").exists()
    assert ingest_nuscenes(root, VERSION, source.name).map is None


@pytest.mark.parametrize("table, field, value, match", [
    ("ego_pose", "rotation", [1.0, 0.2, 0.0, 0.0], r"ego_pose \S+: rotation .* is not a unit quaternion \(norm 1.0198"),
    ("ego_pose", "translation", [float("nan"), 0.0, 0.0], r"ego_pose \S+: expected a finite rotation"),
    ("calibrated_sensor", "rotation", [0.5, 0.5, 0.5, 0.0], r"calibrated_sensor \S+: rotation .* not a unit quaternion"),
])
def test_broken_pose_records_are_one_line_ingest_errors(source, tmp_path, table, field, value, match):
    import json

    root = export_nuscenes(source, tmp_path / "nus", version=VERSION)
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    records[0][field] = value
    path.write_text(json.dumps(records))
    with pytest.raises(IngestError, match=match) as info:
        ingest_nuscenes(root, VERSION, source.name)
    assert "\n" not in str(info.value)
