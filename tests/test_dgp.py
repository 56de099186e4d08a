"""TRI DGP ingestion (the DDAD format) on the real DGP test scenes in ``../shared/realdata/dgp_test_scene``.

``scene_02``: 3 frames, 6 surround cameras, a driving ego; ``scene_01``: 3 frames, 3 front cameras, ego standing
still. Bad input is made by copying a scene to ``tmp_path`` and breaking one file or field.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stag_sim.testing import realdata_path
from stag_sim.cache import load_scene_cache, write_scene_cache
from stag_sim.camera import project_world
from stag_sim.cli import main
from stag_sim.errors import IngestError
from stag_sim.geometry import invert_transform, make_transform
from stag_sim.ingest.dgp import dgp_category, find_scene_json, ingest_dgp, ingest_dgp_to_cache


DGP = realdata_path("dgp_test_scene") if realdata_path("dgp_test_scene/scene_02") else None
pytestmark = pytest.mark.skipif(
    DGP is None, reason="real DGP sample data absent: expected ../shared/realdata/dgp_test_scene beside the repo "
                        "(or set STAG_SIM_REALDATA to the realdata folder)")

CAMERAS = {
    "scene_01": ("CAMERA_01", "CAMERA_05", "CAMERA_06"),
    "scene_02": ("CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"),
}


@pytest.fixture(scope="module")
def logs():
    return {name: ingest_dgp(DGP / name) for name in CAMERAS}


def _scene(name: str) -> dict:
    return json.loads(find_scene_json(DGP / name).read_text())


def _pose(p: dict) -> np.ndarray:
    r, t = p["rotation"], p["translation"]
    return make_transform(np.array([r["qw"], r["qx"], r["qy"], r["qz"]]), [t["x"], t["y"], t["z"]])


def _datums(name: str, t: int) -> dict:
    """sensor name -> datum value of sample ``t`` (DGP samples are in time order in these scenes)."""
    scene = _scene(name)
    data = {d["key"]: d for d in scene["data"]}
    out = {}
    for k in scene["samples"][t]["datum_keys"]:
        d = data[k]
        out[d["id"]["name"]] = next(iter(d["datum"].values()))
    return out


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_frames_cameras_and_rig(logs, name):
    log = logs[name]
    assert log.source == "dgp" and log.name == name  # the scene JSON's name is empty: the folder name
    assert log.num_frames == 3 and log.depth is None and log.map is None
    assert log.rig.names == CAMERAS[name] and log.metadata["camera_names"] == list(CAMERAS[name])
    log.rig.validate()
    assert log.images.shape == (3, len(CAMERAS[name])) and log.images.codec == "jpeg"
    for cam in log.rig:
        assert (cam.intrinsics.width, cam.intrinsics.height) == (1936, 1216)
    assert log.metadata["dgp_scene"].endswith(".json") and 9.9 < log.metadata["frame_rate_hz"] < 10.1
    json.dumps(log.metadata)


def _ticks_to_us(filename: str) -> int:
    """File names count 100 ns ticks (scene_01's are not whole microseconds): round to the nearest us."""
    return (int(Path(filename).stem) + 5) // 10


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_timestamps_come_from_file_names_in_100ns_ticks(logs, name):
    log = logs[name]
    dt = np.diff(log.timestamps_us)
    assert log.timestamps_us.dtype == np.int64 and np.all(dt > 0)
    assert np.all(np.abs(dt - 100_000) < 5_000)  # 10 Hz
    for t in range(3):
        d = _datums(name, t)
        assert log.timestamps_us[t] == _ticks_to_us(d["LIDAR"]["filename"])
        for c, cam in enumerate(log.rig.names):
            assert log.camera_timestamps_us[t, c] == _ticks_to_us(d[cam]["filename"])
    # Captured in 2019 (DDAD), not in 2464 as the ISO strings would say.
    assert 1546300800_000000 < log.timestamps_us[0] < 1577836800_000000
    # Cameras fire within a few tens of ms of the LiDAR.
    assert np.all(np.abs(log.camera_timestamps_us - log.timestamps_us[:, None]) < 50_000)
    np.testing.assert_array_equal(log.lidar.timestamps_us, log.timestamps_us)


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_original_jpeg_bytes_are_kept(logs, name):
    log = logs[name]
    for t in range(3):
        d = _datums(name, t)
        for c, cam in enumerate(log.rig.names):
            assert log.images.encoded(t, c) == (DGP / name / d[cam]["filename"]).read_bytes()
    assert log.images[0, 0].shape == (1216, 1936, 3)


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_poses_follow_the_datums_and_the_calibration(logs, name):
    log = logs[name]
    np.testing.assert_array_equal(log.lidar.T_ego_from_lidar, np.eye(4))  # DGP: the vehicle frame is the LiDAR's
    for t in range(3):
        d = _datums(name, t)
        np.testing.assert_allclose(log.ego_poses[t], _pose(d["LIDAR"]["pose"]), atol=1e-9)
        cams = log.camera_poses(t)
        rigid = log.rig.T_world_from_cameras(log.ego_poses[t])
        for c, cam in enumerate(log.rig.names):
            np.testing.assert_allclose(cams[c], _pose(d[cam]["pose"]), atol=1e-9)  # each image's own pose
            assert np.linalg.norm(cams[c][:3, 3] - rigid[c][:3, 3]) < 0.05  # LiDAR pose @ calibration
            cos = (np.trace(cams[c][:3, :3].T @ rigid[c][:3, :3]) - 1) / 2
            assert cos > np.cos(np.radians(0.1))


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_ego_frame_is_x_forward_y_left_z_up(logs, name):
    log = logs[name]
    az = dict(zip(log.rig.names, np.degrees(log.rig.azimuths)))
    assert abs(az["CAMERA_01"]) < 5  # front
    assert 40 < az["CAMERA_05"] < 65 and -65 < az["CAMERA_06"] < -40  # front-left, front-right
    if name == "scene_02":
        assert 110 < az["CAMERA_07"] < 135 and -135 < az["CAMERA_08"] < -110 and abs(abs(az["CAMERA_09"]) - 180) < 5
    for cam in log.rig:
        assert cam.T_ego_from_camera[2, 1] < -0.99  # image down is ego -z
        assert 1.0 < cam.T_ego_from_camera[2, 3] < 2.0  # cameras ~1.5 m above the ground-level origin
    steps = np.diff(log.ego_poses[:, :3, 3], axis=0)
    forward = np.einsum("ti,ti->t", steps, log.ego_poses[:-1, :3, 0])
    if name == "scene_02":  # drives ~1.27 m per frame along its own +x
        assert np.all(np.abs(forward - 1.27) < 0.1)
    else:  # stands still
        assert np.all(np.linalg.norm(steps, axis=1) < 0.05)


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_lidar_points_project_into_every_camera(logs, name):
    log = logs[name]
    for t in range(3):
        sweep = log.lidar.sweep(t)
        assert sweep.dtype == np.float32 and len(sweep) > 30_000
        assert sweep[:, 3].min() >= 0 and 100 < sweep[:, 3].max() <= 255  # intensity 0..255
        T_world_from_lidar = log.lidar.ego_poses[t] @ log.lidar.T_ego_from_lidar
        pts = sweep[:, :3].astype(np.float64) @ T_world_from_lidar[:3, :3].T + T_world_from_lidar[:3, 3]
        for c, cam in enumerate(log.rig):
            _, depth, visible = project_world(pts, log.camera_poses(t)[c], cam.intrinsics)
            assert visible.sum() > 2_000, (t, cam.name, int(visible.sum()))
            assert np.median(depth[visible]) > 2.0


def test_objects_are_tracked_across_frames(logs):
    log = logs["scene_02"]
    o = log.objects
    assert len(o) == 13 and o.valid.all()  # every box annotated in all three frames
    ids_per_frame = []
    for t in range(3):
        boxes = json.loads((DGP / "scene_02" / _datums("scene_02", t)["LIDAR"]["annotations"]["1"]).read_text())["annotations"]
        ids_per_frame.append({str(b["instance_id"]) for b in boxes})
        for b in boxes:
            k = o.index_of(str(b["instance_id"]))
            np.testing.assert_allclose(o.poses[t, k], log.ego_poses[t] @ _pose(b["box"]["pose"]), atol=1e-9)
    assert ids_per_frame[0] == ids_per_frame[1] == ids_per_frame[2] == set(o.instance_ids)
    assert set(o.categories) == {"vehicle.car", "vehicle.truck"}
    k = o.categories.index("vehicle.car")
    assert 3.5 < o.sizes[k, 0] < 5.5 and 1.6 < o.sizes[k, 1] < 2.3  # (length, width, height): length first
    # Boxes hold LiDAR points: x along length, y along width (the DGP box convention).
    t = 0
    pts = log.lidar.sweep(t)[:, :3].astype(np.float64) @ log.ego_poses[t][:3, :3].T + log.ego_poses[t][:3, 3]
    inside = 0
    for k in range(len(o)):
        T = invert_transform(o.poses[t, k])
        q = pts @ T[:3, :3].T + T[:3, 3]
        inside += np.all(np.abs(q) <= o.sizes[k] / 2, axis=1).sum()
    assert inside > 500
    many = logs["scene_01"].objects
    assert len(many) > 90 and "human.pedestrian.adult" in many.categories and not many.valid.all()


def test_categories():
    assert dgp_category("Car") == "vehicle.car" and dgp_category("Person") == "human.pedestrian.adult"
    assert dgp_category("Pedestrian") == "human.pedestrian.adult" and dgp_category("Bus/RV/Caravan") == "vehicle.bus"
    assert dgp_category("Wheeled Slow") == "movable_object.wheeled_slow"


def test_cache_round_trip(logs, tmp_path):
    for name, log in logs.items():
        loaded = load_scene_cache(write_scene_cache(log, tmp_path / name))
        assert log.diff(loaded) == []


def test_camera_subset_and_scene_json_path(logs):
    scene_json = find_scene_json(DGP / "scene_02")
    log = ingest_dgp(scene_json, cameras=["CAMERA_09", "CAMERA_01"])
    assert log.rig.names == ("CAMERA_01", "CAMERA_09")
    np.testing.assert_array_equal(log.camera_timestamps_us, logs["scene_02"].camera_timestamps_us[:, [0, 5]])
    assert log.images.encoded(1, 1) == logs["scene_02"].images.encoded(1, 5)
    with pytest.raises(IngestError, match="no camera named 'CAM_FRONT'.*CAMERA_01"):
        ingest_dgp(scene_json, cameras="CAMERA_01,CAM_FRONT")
    with pytest.raises(IngestError, match="pass one scene folder: scene_01, scene_02"):
        ingest_dgp(DGP)


def test_cli_writes_a_cache(tmp_path, logs):
    out = tmp_path / "cache"
    res = CliRunner().invoke(main, ["ingest", "dgp", str(DGP / "scene_02"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (f"wrote {out}: 3 frames x 6 cameras (CAMERA_01, CAMERA_05, CAMERA_06, CAMERA_07, CAMERA_08, CAMERA_09), "
            "48k LiDAR points/frame, 13 objects in ") in res.output
    assert logs["scene_02"].diff(load_scene_cache(out)) == []
    again = CliRunner().invoke(main, ["ingest", "dgp", str(DGP / "scene_02"), "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    res = CliRunner().invoke(main, ["ingest", "dgp", str(DGP / "scene_01"), "--out", str(out), "--overwrite",
                                    "--cameras", "CAMERA_01"])
    assert res.exit_code == 0, res.output
    assert "3 frames x 1 cameras (CAMERA_01)" in res.output and load_scene_cache(out).name == "scene_01"


def test_ingest_to_cache_function(tmp_path):
    path = ingest_dgp_to_cache(DGP / "scene_01", tmp_path / "c")
    assert load_scene_cache(path).rig.names == CAMERAS["scene_01"]
    with pytest.raises(IngestError, match="already exists"):
        ingest_dgp_to_cache(DGP / "scene_01", tmp_path / "c")


# --- bad input: one line naming the file and the field, nothing written ----------------------------------------


def _copy(tmp_path) -> Path:
    return Path(shutil.copytree(DGP / "scene_02", tmp_path / "scene_02"))


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _calibration(scene: Path) -> Path:
    return next((scene / "calibration").glob("*.json"))


def _drop_sensor(name):
    def fn(cal):
        i = cal["names"].index(name)
        for k in ("names", "extrinsics", "intrinsics"):
            del cal[k][i]
    return fn


def _break_missing_image(s):
    f = next((s / "rgb" / "CAMERA_07").glob("*.jpg"))
    f.unlink()
    return [str(f), "filename", "CAMERA_07 image"]


def _break_missing_cloud(s):
    f = next((s / "point_cloud" / "LIDAR").glob("*.npz"))
    f.unlink()
    return [str(f), "filename", "LIDAR point cloud"]


def _break_missing_boxes(s):
    f = next((s / "bounding_box_3d" / "LIDAR").glob("*.json"))
    f.unlink()
    return [str(f), "annotations"]


def _break_camera_calibration(s):
    _edit_json(_calibration(s), _drop_sensor("CAMERA_05"))
    return [_calibration(s).name, "field names has no entry for sensor 'CAMERA_05'"]


def _break_lidar_calibration(s):
    _edit_json(_calibration(s), _drop_sensor("LIDAR"))
    return [_calibration(s).name, "field names has no entry for sensor 'LIDAR'"]


def _break_scene_json(s):
    f = find_scene_json(s)
    f.write_text(f.read_text()[:-200])
    return [f.name, "malformed JSON"]


def _break_missing_scene_json(s):
    f = find_scene_json(s)
    f.unlink()
    return [str(s), "no DGP scene JSON"]


def _break_calibration_json(s):
    _calibration(s).write_text("{not json")
    return [_calibration(s).name, "malformed JSON"]


def _break_skew(s):
    _edit_json(_calibration(s), lambda cal: cal["intrinsics"][cal["names"].index("CAMERA_06")].update(skew=0.5))
    return [_calibration(s).name, "field intrinsics[3].skew = 0.5 (sensor CAMERA_06)"]


def _break_distortion(s):
    _edit_json(_calibration(s), lambda cal: cal["intrinsics"][1].update(k4=-0.1))
    return [_calibration(s).name, "intrinsics[1] (sensor CAMERA_01) has k4=-0.1"]


def _break_corrupt_jpeg(s):
    f = next((s / "rgb" / "CAMERA_01").glob("*.jpg"))
    f.write_bytes(b"not a jpeg at all")
    return [str(f), "not a valid JPEG"]


def _break_npz_key(s):
    f = next((s / "point_cloud" / "LIDAR").glob("*.npz"))
    np.savez(f, points=np.zeros((3, 4)))
    return [str(f), "no array 'data'"]


def _break_datum_pose(s):
    def fn(scene):
        d = next(d for d in scene["data"] if d["id"]["name"] == "CAMERA_08")
        del d["datum"]["image"]["pose"]
    _edit_json(find_scene_json(s), fn)
    return [find_scene_json(s).name, ".datum.image.pose is missing"]


def _break_missing_datum(s):
    def fn(scene):
        keys = scene["samples"][1]["datum_keys"]
        keys.remove(next(d["key"] for d in scene["data"] if d["id"]["name"] == "CAMERA_09" and d["key"] in keys))
    _edit_json(find_scene_json(s), fn)
    return [find_scene_json(s).name, "samples[1] has no datum of CAMERA_09"]


BREAKS = [_break_missing_image, _break_missing_cloud, _break_missing_boxes, _break_camera_calibration,
          _break_lidar_calibration, _break_scene_json, _break_missing_scene_json, _break_calibration_json,
          _break_skew, _break_distortion, _break_corrupt_jpeg, _break_npz_key, _break_datum_pose, _break_missing_datum]


@pytest.mark.parametrize("brk", BREAKS, ids=lambda f: f.__name__[len("_break_"):])
def test_bad_input_is_one_line_naming_the_file_and_field(tmp_path, brk):
    scene = _copy(tmp_path)
    expected = brk(scene)
    with pytest.raises(IngestError) as e:
        ingest_dgp(scene)
    msg = str(e.value)
    assert "\n" not in msg and all(s in msg for s in expected), msg
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["ingest", "dgp", str(scene), "--out", str(out)])
    assert res.exit_code == 1
    err = res.output.strip().splitlines()[-1]
    assert err.startswith("error: ") and all(s in err for s in expected), res.output
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_missing_scene_json_path(tmp_path):
    res = CliRunner().invoke(main, ["ingest", "dgp", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "nope.json: no such DGP scene JSON" in res.output
    assert not (tmp_path / "out").exists()
