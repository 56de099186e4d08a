"""nuScenes ingestion end to end through the real nuscenes-devkit (skipped where the devkit is not installed).

A tiny scene is exported with :func:`export_nuscenes`, read back by :func:`ingest_nuscenes` (devkit tables,
NuScenesMap), and compared field by field; camera projection is cross-checked against the devkit's own helpers.
"""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("nuscenes")

from pyquaternion import Quaternion  # noqa: E402  (a devkit dependency)
from nuscenes.utils.geometry_utils import view_points  # noqa: E402
from shapely.geometry import LineString  # noqa: E402

from stag_sim.cache import load_scene_cache  # noqa: E402
from stag_sim.camera import CAMERA_NAMES, project_world  # noqa: E402
from stag_sim.errors import IngestError  # noqa: E402
from stag_sim.geometry import invert_transform, matrix_to_quat, pose_xy_yaw, transform_points  # noqa: E402
from stag_sim.ingest import export_nuscenes  # noqa: E402
from stag_sim.ingest.nuscenes import ingest_nuscenes, ingest_nuscenes_to_cache  # noqa: E402
from stag_sim.scene_log import LidarSweeps, SceneMap  # noqa: E402
from stag_sim.testing import tiny_scene_log  # noqa: E402

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def source():
    """The tiny log, with lane successors, a three-point lane inside an intersection and a signal controlling it, so
    the map round trip has something to show."""
    from stag_sim.road_rules import TrafficLight

    log = tiny_scene_log(num_frames=4, width=64, height=36)
    m = log.map
    light = TrafficLight("sig", ("lane-turn",), np.array([[80.0, -3.5], [80.0, 0.0]]), np.array([81.0, -4.0, 3.0]),
                         np.array([0.0, 5.0]), ("red", "green"))
    scene_map = SceneMap(
        m.drivable_area, m.lane_ids + ("lane-turn",),
        m.lanes + (LineString([(80.0, -1.75), (85.0, 0.0), (80.0, 1.75)]),),
        (("lane-turn",), (), ("lane-west",)), in_intersection=(False, False, True), traffic_lights=(light,),
        lights_complete=True,
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
    # intersection lanes travel as lane connectors; a signal as a TRAFFIC_LIGHT stop line, without its states
    assert mb.in_intersection == ma.in_intersection == (False, False, True)
    (light,) = mb.traffic_lights
    assert light.lane_ids == ("lane-turn",) and light.states == ("unknown",) and not mb.lights_complete
    assert np.linalg.norm(light.stop_line.mean(axis=0) - [80.0, -1.75]) < 0.5
    from stag_sim.road_rules import RoadRules

    assert "no traffic-light states" in RoadRules.from_map(mb).lights_scorable


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


# --- use_sweeps: every 20 Hz LiDAR sweep, motion-compensated --------------------------------------------------------
#
# The exporter writes keyframes only, so the fixture below adds LIDAR_TOP sweeps between the keyframes of an export.
# The ego accelerates along a left turn (known closed-form motion). The world is a fixed set of static points; sweep
# j (every 25 ms, j = 0..12) sees the points whose index is j mod 13 (intensity = the index), so the indices in a
# frame's cloud tell which sweeps it merged. After ingestion every point, taken to the world with its frame's stored
# LiDAR pose, must land on its world position, whichever sweep it came from.

SWEEP_PERIOD_US = 25_000  # [us] three sweeps between keyframes 100 ms apart
NUM_SWEEPS = 13  # 4 keyframes + 3 x 3 sweeps
CAM_FRONT_DELAY_US = 25_000  # [us] CAM_FRONT fires after the LiDAR keyframe: interval bounds fall on sweeps (ties)
T_EGO_FROM_LIDAR = pose_xy_yaw(0.94, 0.02, -np.pi / 2 + 0.01, 1.84)  # rotated, like the real LIDAR_TOP
POINTS_PER_SWEEP = 20


def _ego_at(t0_us: int, ts_us) -> np.ndarray:
    """(..., 4, 4) T_world_from_ego of an ego that accelerates along a left turn, at times ``ts_us``."""
    s = (np.asarray(ts_us, dtype=np.int64) - t0_us) * 1e-6
    return pose_xy_yaw(4.0 * s + 3.0 * s**2, 2.0 * s**2, 0.8 * s, 0.1 * s)


def _static_world_points() -> np.ndarray:
    """(260, 3) points 5-40 m around the start, away from the sensor (the devkit drops points within 1 m)."""
    rng = np.random.default_rng(7)
    n = NUM_SWEEPS * POINTS_PER_SWEEP
    r, a = rng.uniform(5.0, 40.0, n), rng.uniform(-np.pi, np.pi, n)
    return np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-1.5, 3.0, n)], axis=1)


def _sweep_points(t0_us: int, t_us: int, world: np.ndarray) -> np.ndarray:
    """(20, 4) float32 LiDAR points (x, y, z, intensity = world index) of sweep ``(t_us - t0_us) / 25 ms``,
    seen from the ego pose at ``t_us``."""
    j = (int(t_us) - t0_us) // SWEEP_PERIOD_US
    index = np.arange(j, len(world), NUM_SWEEPS)
    pts = transform_points(invert_transform(_ego_at(t0_us, t_us) @ T_EGO_FROM_LIDAR), world[index])
    return np.concatenate([pts, index[:, None]], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(dataroot, scene name, static world points, every LiDAR timestamp [us]) of a 4-keyframe export plus sweeps."""
    log = tiny_scene_log(num_frames=4, width=64, height=36)
    t0, ts = int(log.timestamps_us[0]), log.timestamps_us
    world = _static_world_points()
    cam_ts = log.camera_timestamps_us.copy()
    cam_ts[:, 0] += CAM_FRONT_DELAY_US
    lidar = LidarSweeps.from_list([_sweep_points(t0, t, world) for t in ts], ts, _ego_at(t0, ts), T_EGO_FROM_LIDAR)
    log = dataclasses.replace(log, ego_poses=_ego_at(t0, ts), camera_timestamps_us=cam_ts,
                              camera_ego_poses=_ego_at(t0, cam_ts), lidar=lidar).validate()
    root = export_nuscenes(log, tmp_path_factory.mktemp("swept") / "nuscenes", version=VERSION)

    tables = root / VERSION
    sample_data = json.loads((tables / "sample_data.json").read_text())
    ego_pose = json.loads((tables / "ego_pose.json").read_text())
    keyframes = sorted((sd for sd in sample_data if sd["filename"].startswith("samples/LIDAR_TOP/")),
                       key=lambda sd: sd["timestamp"])
    chain = list(keyframes)
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    for k, key in enumerate(keyframes[:-1]):
        for i in (1, 2, 3):
            t = key["timestamp"] + i * SWEEP_PERIOD_US
            pose = _ego_at(t0, t)
            filename = f"sweeps/LIDAR_TOP/{log.name}__LIDAR_TOP__{t}.pcd.bin"
            cols = np.zeros((POINTS_PER_SWEEP, 5), np.float32)  # x, y, z, intensity, ring index
            cols[:, :4] = _sweep_points(t0, t, world)
            cols.tofile(root / filename)
            token = f"lidar-sweep-{t}"
            ego_pose.append({"token": token, "timestamp": t, "translation": pose[:3, 3].tolist(),
                             "rotation": matrix_to_quat(pose[:3, :3]).tolist()})
            chain.append({**key, "token": token, "ego_pose_token": token, "timestamp": t, "is_key_frame": False,
                          "filename": filename, "sample_token": keyframes[k + 1]["sample_token"]})
    chain.sort(key=lambda sd: sd["timestamp"])
    for i, sd in enumerate(chain):
        sd["prev"] = chain[i - 1]["token"] if i > 0 else ""
        sd["next"] = chain[i + 1]["token"] if i < len(chain) - 1 else ""
    sample_data = [sd for sd in sample_data if not sd["filename"].startswith("samples/LIDAR_TOP/")] + chain
    (tables / "sample_data.json").write_text(json.dumps(sample_data))
    (tables / "ego_pose.json").write_text(json.dumps(ego_pose))
    return root, log.name, world, np.array([sd["timestamp"] for sd in chain], np.int64)


@pytest.fixture(scope="module")
def swept_log(swept):
    root, name, _, _ = swept
    return ingest_nuscenes(root, VERSION, name, use_sweeps=True)


def test_sweeps_every_lidar_sweep_lands_in_the_frame_whose_interval_holds_it(swept, swept_log):
    _, _, world, lidar_ts = swept
    lidar, t0 = swept_log.lidar, int(lidar_ts[0])
    assert len(lidar_ts) == NUM_SWEEPS and swept_log.metadata["lidar_sweeps"] == NUM_SWEEPS
    # Frames on the CAM_FRONT clock, 25 ms after each LiDAR keyframe: intervals [.., 75), [75, 175), [175, 275),
    # [275, ..) ms hold the sweeps at 0 25 50 | 75 100 125 150 | 175 200 225 250 | 275 300 ms (a sweep on an
    # interval bound, half way between two frame times, goes to the later frame).
    np.testing.assert_array_equal(swept_log.timestamps_us - t0, np.arange(4) * 100_000 + CAM_FRONT_DELAY_US)
    expected = [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10], [11, 12]]
    for t, sweeps in enumerate(expected):
        index = lidar.sweep(t)[:, 3].astype(int)
        # Each sweep once, in time order: no sweep dropped, none merged twice.
        np.testing.assert_array_equal(index.reshape(-1, POINTS_PER_SWEEP)[:, 0], sweeps)
    assert len(lidar.points) == NUM_SWEEPS * POINTS_PER_SWEEP
    # The reference (stored time and ego pose) is the frame's sweep nearest the frame time (325 ms: the last sweep).
    np.testing.assert_array_equal(lidar.timestamps_us - t0, [25_000, 125_000, 225_000, 300_000])
    np.testing.assert_allclose(lidar.ego_poses, _ego_at(t0, lidar.timestamps_us), atol=1e-9)
    np.testing.assert_allclose(lidar.T_ego_from_lidar, T_EGO_FROM_LIDAR, atol=1e-12)


def test_sweeps_are_motion_compensated_static_points_stay_put(swept, swept_log):
    root, _, world, lidar_ts = swept
    lidar, t0 = swept_log.lidar, int(lidar_ts[0])
    for t in range(len(lidar)):
        pts = lidar.sweep(t)
        index = pts[:, 3].astype(int)
        np.testing.assert_array_equal(pts[:, 3], index)  # intensity passes through untouched
        in_world = transform_points(lidar.ego_poses[t] @ lidar.T_ego_from_lidar, pts[:, :3].astype(np.float64))
        np.testing.assert_allclose(in_world, world[index], atol=2e-5)  # float32 points up to ~45 m away
        for chunk in pts.reshape(-1, POINTS_PER_SWEEP, 4):
            t_sweep = t0 + int(chunk[0, 3]) % NUM_SWEEPS * SWEEP_PERIOD_US
            as_read = _sweep_points(t0, t_sweep, world)
            if t_sweep == lidar.timestamps_us[t]:
                np.testing.assert_array_equal(chunk, as_read)  # the reference sweep is stored as read
            else:
                # The ego moves 0.1-0.26 m and turns 1.1-2.3 deg between a sweep and its reference: without the
                # compensation the points would sit 0.4-0.8 m off on average.
                assert np.linalg.norm(chunk[:, :3] - as_read[:, :3], axis=1).mean() > 0.3


def test_sweeps_agree_with_the_devkit_multisweep(swept):
    """The devkit's own aggregation (two sweeps into keyframe 1's LiDAR frame) puts the points at the same world
    positions: the synthetic sweeps follow the devkit's pose conventions, not only stag_sim's."""
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import LidarPointCloud

    root, _, world, _ = swept
    nusc = NuScenes(VERSION, str(root), verbose=False)
    sample = nusc.sample[1]
    pc, _ = LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps=2)
    assert pc.points.shape[1] == 2 * POINTS_PER_SWEEP
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose, cs = nusc.get("ego_pose", sd["ego_pose_token"]), nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pts = Quaternion(cs["rotation"]).rotation_matrix @ pc.points[:3].astype(np.float64) + np.array(cs["translation"])[:, None]
    pts = Quaternion(pose["rotation"]).rotation_matrix @ pts + np.array(pose["translation"])[:, None]
    np.testing.assert_allclose(pts.T, world[pc.points[3].astype(int)], atol=2e-5)


def test_keyframes_ignore_the_sweeps_and_both_clocks_share_cameras_and_boxes(swept, swept_log):
    root, name, _, _ = swept
    keyframes = ingest_nuscenes(root, VERSION, name)
    assert keyframes.metadata["lidar_sweeps"] == 4 and keyframes.num_frames == 4
    np.testing.assert_array_equal(keyframes.lidar.timestamps_us, keyframes.timestamps_us)
    np.testing.assert_array_equal(np.diff(keyframes.lidar.offsets), POINTS_PER_SWEEP)
    assert swept_log.images.equals(keyframes.images)
    np.testing.assert_allclose(swept_log.objects.poses, keyframes.objects.poses, atol=1e-12)


def test_sweep_cache_round_trip(swept, swept_log, tmp_path):
    root, name, _, _ = swept
    out = ingest_nuscenes_to_cache(root, VERSION, name, tmp_path / "scene", use_sweeps=True)
    assert load_scene_cache(out).diff(swept_log) == []


def test_sweep_grouping_with_a_lidar_drop_out_reuses_the_nearest_sweep():
    from stag_sim.ingest.nuscenes import _lidar_groups

    class Tables:  # the one devkit call _lidar_groups makes: get("sample_data", token)
        def __init__(self, records):
            self.records = {r["token"]: r for r in records}

        def get(self, table, token):
            assert table == "sample_data"
            return self.records[token]

    times = [0, 50_000, 300_000]  # [us] no LiDAR between 50 and 300 ms
    records = [{"token": f"l{t}", "timestamp": t, "prev": f"l{times[i - 1]}" if i else "",
                "next": f"l{times[i + 1]}" if i + 1 < len(times) else ""} for i, t in enumerate(times)]
    samples = [{"data": {"LIDAR_TOP": "l0"}}, {"data": {"LIDAR_TOP": "l300000"}}]
    groups = _lidar_groups(Tables(records), samples, True, [0, 100_000, 200_000, 300_000])
    assert [(ref["timestamp"], [sd["timestamp"] for sd in group]) for ref, group in groups] == [
        (0, [0]), (50_000, [50_000]),  # 50 ms is half way to the next frame: the later frame owns it
        (300_000, [300_000]),  # empty interval [150, 250) ms: the nearest sweep, reused
        (300_000, [300_000]),
    ]
