import json

import numpy as np
import pytest

from stag_sim.cache import FORMAT_VERSION, load_scene_cache, read_scene_meta, write_scene_cache
from stag_sim.errors import SceneError, ValidationError
from stag_sim.scene_log import FrameStore, ObjectTracks, decode_frame, encode_frame
from stag_sim.testing import tiny_scene_log


def test_round_trip_is_exact(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "scene")
    loaded = load_scene_cache(path)
    assert tiny_log.diff(loaded) == []
    assert np.array_equal(loaded.images[1, 2], tiny_log.images[1, 2])
    assert np.array_equal(loaded.depth[0, 5], tiny_log.depth[0, 5])
    assert np.array_equal(loaded.lidar.sweep(2), tiny_log.lidar.sweep(2))
    # and again without memory maps
    assert tiny_log.diff(load_scene_cache(path, mmap=False)) == []


def test_round_trip_without_optional_parts(tmp_path):
    log = tiny_scene_log(with_depth=False, with_map=False)
    loaded = load_scene_cache(write_scene_cache(log, tmp_path / "s"))
    assert loaded.depth is None and loaded.map is None and log.diff(loaded) == []


def test_arrays_are_memory_mapped(tmp_path, tiny_log):
    loaded = load_scene_cache(write_scene_cache(tiny_log, tmp_path / "s"))
    assert isinstance(loaded.images.blob, np.memmap)
    assert isinstance(loaded.objects.poses, np.memmap)


def test_existing_target_needs_overwrite(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    with pytest.raises(SceneError, match="already exists"):
        write_scene_cache(tiny_log, path)
    other = tiny_scene_log(seed=5)
    write_scene_cache(other, path, overwrite=True)
    assert load_scene_cache(path).name == "tiny-s5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp dirs left behind


def test_failed_write_leaves_nothing(tmp_path, tiny_log, monkeypatch):
    import stag_sim.cache as cache

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cache, "_map_to_json", boom)
    with pytest.raises(OSError, match="disk full"):
        write_scene_cache(tiny_log, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_cache(tmp_path, tiny_log, monkeypatch):
    import stag_sim.cache as cache

    path = write_scene_cache(tiny_log, tmp_path / "s")
    monkeypatch.setattr(cache, "_map_to_json", lambda m: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_scene_cache(tiny_scene_log(seed=9), path, overwrite=True)
    assert load_scene_cache(path).name == tiny_log.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_invalid_log_is_not_written(tmp_path, tiny_log):
    poses = tiny_log.ego_poses.copy()
    poses[1, 0, 3] = np.nan
    bad = type(tiny_log)(**{**tiny_log.__dict__, "ego_poses": poses})
    with pytest.raises(ValidationError, match=r"SceneLog.ego_poses: non-finite"):
        write_scene_cache(bad, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_missing_file(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    (path / "ego_poses.npy").unlink()
    with pytest.raises(SceneError, match=r"ego_poses.npy: missing"):
        load_scene_cache(path)


def test_truncated_file(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    data = (path / "images.bin").read_bytes()
    (path / "images.bin").write_bytes(data[:-10])
    with pytest.raises(SceneError, match=r"images.bin: corrupt"):
        load_scene_cache(path)


def test_flipped_byte_is_caught_by_checksum(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    p = path / "images.bin"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(SceneError, match=r"images.bin: corrupt \(sha256"):
        load_scene_cache(path)
    load_scene_cache(path, verify=False)  # sizes still match; the caller opted out of hashing


def test_wrong_version_and_not_a_cache(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    meta = json.loads((path / "scene.json").read_text())
    meta["version"] = FORMAT_VERSION + 1
    (path / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match=rf"scene.json: scene cache format version {FORMAT_VERSION + 1} is not supported"):
        load_scene_cache(path)
    (path / "scene.json").write_text("{not json")
    with pytest.raises(SceneError, match="corrupt JSON"):
        read_scene_meta(path)
    with pytest.raises(SceneError, match="not a scene cache"):
        load_scene_cache(tmp_path)
    with pytest.raises(SceneError, match="no such scene cache"):
        load_scene_cache(tmp_path / "nope")


def test_old_version_cache_says_to_recreate_it(tmp_path, tiny_log):
    path = write_scene_cache(tiny_log, tmp_path / "s")
    meta = json.loads((path / "scene.json").read_text())
    meta["version"] = 1
    (path / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError) as e:
        load_scene_cache(path)
    msg = str(e.value)
    assert "\n" not in msg and "version 1 is not supported" in msg and "re-create the cache" in msg


def test_any_rig_with_ego_masks_round_trips(tmp_path, tiny_log):
    import dataclasses

    from stag_sim.camera import CameraRig

    cams = []
    for i, c in enumerate(tiny_log.rig.cameras[:3]):
        mask = np.zeros((c.intrinsics.height, c.intrinsics.width), bool)
        mask[-3 - i:] = True
        cams.append(dataclasses.replace(c, name=f"cam_{i}", ego_mask=mask if i != 1 else None))
    T = tiny_log.num_frames
    log = dataclasses.replace(
        tiny_log, rig=CameraRig(tuple(cams)),
        images=type(tiny_log.images)(tiny_log.images.blob, tiny_log.images.index[:, :3], tiny_log.images.codec),
        camera_timestamps_us=tiny_log.camera_timestamps_us[:, :3], camera_ego_poses=tiny_log.camera_ego_poses[:, :3],
        depth=type(tiny_log.depth)(tiny_log.depth.blob, tiny_log.depth.index[:, :3], tiny_log.depth.codec),
    ).validate()
    back = load_scene_cache(write_scene_cache(log, tmp_path / "three"))
    assert back.rig.names == ("cam_0", "cam_1", "cam_2") and back.diff(log) == [] and T == back.num_frames
    assert back.rig["cam_1"].ego_mask is None and back.rig["cam_2"].ego_mask[-5:].all()


def test_refuses_to_replace_a_non_cache_directory(tmp_path, tiny_log):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("...")
    with pytest.raises(SceneError, match="not a scene cache"):
        write_scene_cache(tiny_log, d, overwrite=True)
    assert (d / "thesis.tex").exists()


def test_frame_codecs():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert np.array_equal(decode_frame(encode_frame(img, "png"), "png"), img)
    jpg = decode_frame(encode_frame(img, "jpeg"), "jpeg")
    assert jpg.shape == img.shape and jpg.dtype == np.uint8
    depth = rng.uniform(0.5, 200, (10, 12)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.inf
    back = decode_frame(encode_frame(depth, "depth-png16"), "depth-png16")
    assert back[0, 0] == 0 and back[0, 1] == 0
    assert np.abs(back[1:] - depth[1:]).max() <= 0.5 / 256 + 1e-6
    with pytest.raises(SceneError, match="corrupt jpeg"):
        decode_frame(b"not a jpeg", "jpeg")
    with pytest.raises(ValidationError, match="unknown frame codec"):
        encode_frame(img, "gif")


def test_frame_store_missing_frame():
    store = FrameStore.from_encoded([[b"", b""]], "jpeg")
    with pytest.raises(SceneError, match="missing"):
        store[0, 1]
    with pytest.raises(IndexError):
        store[3, 0]


def test_scene_log_validation_errors(tiny_log):
    T = tiny_log.num_frames
    with pytest.raises(ValidationError, match="strictly increasing"):
        type(tiny_log)(**{**tiny_log.__dict__, "timestamps_us": tiny_log.timestamps_us[::-1].copy()}).validate()
    # camera only (no depth maps, no LiDAR) is valid: its depth comes from a depth source such as mvs
    type(tiny_log)(**{**tiny_log.__dict__, "depth": None, "lidar": None}).validate()
    o = tiny_log.objects
    with pytest.raises(ValidationError, match="sizes"):
        ObjectTracks(o.instance_ids, o.categories, -o.sizes, o.poses, o.valid).validate(T)
    poses = o.poses.copy()
    poses[0, 0, :3, :3] *= 1.5
    with pytest.raises(ValidationError, match="ObjectTracks.poses"):
        ObjectTracks(o.instance_ids, o.categories, o.sizes, poses, o.valid).validate(T)
    with pytest.raises(ValidationError, match="no object with instance id 'ghost'"):
        o.index_of("ghost")
