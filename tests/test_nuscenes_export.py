"""nuScenes export and the devkit-free parts of nuScenes ingestion (run in every venv, devkit or not)."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from stag_sim.camera import CAMERA_NAMES
from stag_sim.errors import MissingExtraError, SceneError, ValidationError
from stag_sim.geometry import quat_to_matrix
from stag_sim.ingest import export_nuscenes
from stag_sim.ingest.nuscenes_export import DEFAULT_LOCATION, TABLES
from stag_sim.testing import tiny_scene_log


@pytest.fixture(scope="module")
def log():
    return tiny_scene_log(num_frames=4, width=64, height=36)


@pytest.fixture(scope="module")
def exported(log, tmp_path_factory):
    return export_nuscenes(log, tmp_path_factory.mktemp("nus") / "nuscenes")


def _table(root, name, version="v1.0-mini"):
    return json.loads((root / version / f"{name}.json").read_text())


def test_writes_all_tables_and_one_keyframe_sample_per_frame(log, exported):
    for name in TABLES:
        assert isinstance(_table(exported, name), list), name
    (scene,) = _table(exported, "scene")
    assert scene["name"] == log.name and scene["nbr_samples"] == log.num_frames
    samples = {s["token"]: s for s in _table(exported, "sample")}
    chain, tok = [], scene["first_sample_token"]
    while tok:
        chain.append(samples[tok])
        tok = samples[tok]["next"]
    assert [s["timestamp"] for s in chain] == log.timestamps_us.tolist()
    assert chain[-1]["token"] == scene["last_sample_token"]
    sample_data = _table(exported, "sample_data")
    assert len(sample_data) == log.num_frames * (len(CAMERA_NAMES) + 1)
    assert all(sd["is_key_frame"] for sd in sample_data)
    (log_row,) = _table(exported, "log")
    assert log_row["location"] == DEFAULT_LOCATION


def test_sensor_files_hold_the_log_bytes(log, exported):
    sensors = {s["token"]: s["channel"] for s in _table(exported, "sensor")}
    calib = {c["token"]: sensors[c["sensor_token"]] for c in _table(exported, "calibrated_sensor")}
    t_of = {int(ts): t for t, ts in enumerate(log.timestamps_us)}
    for sd in _table(exported, "sample_data"):
        channel, t = calib[sd["calibrated_sensor_token"]], t_of[sd["timestamp"]]
        data = (exported / sd["filename"]).read_bytes()
        if channel == "LIDAR_TOP":
            pts = np.frombuffer(data, dtype=np.float32).reshape(-1, 5)
            np.testing.assert_array_equal(pts[:, :4], log.lidar.sweep(t))
        else:
            c = CAMERA_NAMES.index(channel)
            assert data == log.images.encoded(t, c)
            assert (sd["width"], sd["height"]) == (64, 36) and sd["fileformat"] == "jpg"


def test_calibration_and_boxes_follow_nuscenes_conventions(log, exported):
    sensors = {s["token"]: s["channel"] for s in _table(exported, "sensor")}
    for c in _table(exported, "calibrated_sensor"):
        ch = sensors[c["sensor_token"]]
        if ch == "LIDAR_TOP":
            assert c["camera_intrinsic"] == []
            continue
        cam = log.rig[ch]
        np.testing.assert_array_equal(c["camera_intrinsic"], cam.intrinsics.K)
        np.testing.assert_allclose(quat_to_matrix(c["rotation"]), cam.T_ego_from_camera[:3, :3], atol=1e-12)
        np.testing.assert_array_equal(c["translation"], cam.T_ego_from_camera[:3, 3])
    anns = _table(exported, "sample_annotation")
    assert len(anns) == int(log.objects.valid.sum())
    for a in anns:
        k = log.objects.index_of(a["instance_token"])
        length, width, height = log.objects.sizes[k]
        assert a["size"] == [width, length, height]  # nuScenes order (w, l, h)
    by_token = {a["token"]: a for a in anns}
    for inst in _table(exported, "instance"):
        tok, n = inst["first_annotation_token"], 0
        while tok:
            assert by_token[tok]["instance_token"] == inst["token"]
            tok, n = by_token[tok]["next"], n + 1
        assert n == inst["nbr_annotations"]


def test_map_expansion_holds_drivable_area_and_lanes(log, exported):
    doc = json.loads((exported / "maps" / "expansion" / f"{DEFAULT_LOCATION}.json").read_text())
    assert doc["version"] >= "1.3"
    assert [lane["token"] for lane in doc["lane"]] == list(log.map.lane_ids)
    (area,) = doc["drivable_area"]
    assert len(area["polygon_tokens"]) == 1
    for lid, lane in zip(log.map.lane_ids, log.map.lanes):
        (path,) = doc["arcline_path_3"][lid]
        assert path["start_pose"][:2] == list(lane.coords[0]) and path["end_pose"][:2] == list(lane.coords[-1])
        assert path["segment_length"][1] == pytest.approx(lane.length)


def test_export_needs_lidar_a_nuscenes_location_and_a_free_dataroot(log, exported, tmp_path):
    with pytest.raises(ValidationError, match="LiDAR"):
        export_nuscenes(dataclasses.replace(log, lidar=None), tmp_path / "a")
    with pytest.raises(ValidationError, match="not a nuScenes location"):
        export_nuscenes(log, tmp_path / "b", map_name="atlantis")
    with pytest.raises(SceneError, match="not empty"):
        export_nuscenes(log, exported)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep")
    with pytest.raises(SceneError, match="refusing"):
        export_nuscenes(log, tmp_path / "c", overwrite=True)
    assert (tmp_path / "c" / "mine.txt").read_text() == "keep"


def test_overwrite_replaces_an_earlier_export(log, tmp_path):
    root = export_nuscenes(log, tmp_path / "nus")
    export_nuscenes(log, root, map_name="singapore-onenorth", overwrite=True)
    assert _table(root, "log")[0]["location"] == "singapore-onenorth"
    assert not (root / "maps" / "expansion" / f"{DEFAULT_LOCATION}.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nus"]  # no temporary folders left behind


def test_importing_the_ingest_modules_does_not_import_the_devkit():
    code = "import sys, stag_sim.ingest, stag_sim.ingest.nuscenes; print('nuscenes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_devkit_names_the_extra(monkeypatch, exported):
    from stag_sim.ingest.nuscenes import ingest_nuscenes

    monkeypatch.setitem(sys.modules, "nuscenes", None)  # makes `import nuscenes...` raise ImportError
    monkeypatch.setitem(sys.modules, "nuscenes.nuscenes", None)
    with pytest.raises(MissingExtraError, match=r"stag-sim\[nuscenes\]"):
        ingest_nuscenes(exported, "v1.0-mini", "tiny-s0")
