"""The scene cache: the on-disk format of a :class:`~stag_sim.scene_log.SceneLog`.

One directory per scene::

    <scene>/
      scene.json              format name + version, scene facts, rig, object ids, and for every array file
                              its dtype, shape, size and sha256
      timestamps_us.npy ...   small and medium arrays as .npy (memory-mapped on load)
      images.bin              all encoded frames back to back (JPEG/PNG bytes, as captured or encoded once);
      images_index.npy        (T, C, 2) int64 (offset, length) into images.bin (both absent for a layout-only log)
      depth.bin / depth_index.npy      16-bit PNG depth maps, same layout (optional)
      lidar_points.npy / lidar_offsets.npy / ...                      (optional)
      map.json                drivable area and lane centrelines as WKB hex (exact float64)

Why this layout: .npy and raw blobs can be memory-mapped, so loading a scene reads only scene.json and
the pages the simulator touches — a load costs milliseconds and no decoding — while images and depth stay
compressed (JPEG/PNG inside one blob, not thousands of small files). Keeping the encoded bytes makes the
SceneLog -> cache -> SceneLog round trip byte-exact and never re-encodes a nuScenes JPEG.

Writes are atomic: everything is written to a hidden temporary directory beside the target and renamed into
place only when complete, so a failure (or Ctrl-C) never leaves half a cache behind. Loading checks the
format version, that every file exists with its recorded size, and (by default) its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stag_sim.camera import Camera, CameraIntrinsics, CameraRig
from stag_sim.errors import SceneError, StagSimError, ValidationError
from stag_sim.fsutil import atomic_directory
from stag_sim.road_rules import TrafficLight, map_rules_json
from stag_sim.scene_log import FrameStore, LidarSweeps, ObjectTracks, SceneLog, SceneMap

FORMAT_NAME = "stag_sim.scene_cache"
#: 2: any rig (1 to 12 cameras, the dataset's names) and per-camera ego-body masks (``ego_mask_<c>.npy``).
FORMAT_VERSION = 2
META_FILE = "scene.json"

# Arrays that are always present: attribute path -> (file name, dtype).
_ARRAYS = {
    "timestamps_us": np.int64,
    "ego_poses": np.float64,
    "camera_timestamps_us": np.int64,
    "camera_ego_poses": np.float64,
    "objects_sizes": np.float64,
    "objects_poses": np.float64,
    "objects_valid": np.bool_,
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _rig_to_json(rig: CameraRig) -> list[dict[str, Any]]:
    """The rig as JSON; camera ``c``'s ego mask (if any) is the array file ``ego_mask_<c>`` (written separately)."""
    return [
        {
            "name": c.name,
            "intrinsics": _intrinsics_to_json(c.intrinsics),
            "T_ego_from_camera": c.T_ego_from_camera.tolist(),
            "ego_mask": None if c.ego_mask is None else f"ego_mask_{i}",
        }
        for i, c in enumerate(rig.cameras)
    ]


def _intrinsics_to_json(k: CameraIntrinsics) -> dict[str, Any]:
    """fx, fy, cx, cy, width, height; ``model`` and ``distortion`` only for a distorted camera (so pinhole caches
    are byte-identical to those written before distortion existed, and those old caches read as pinhole)."""
    d: dict[str, Any] = {f: getattr(k, f) for f in ("fx", "fy", "cx", "cy", "width", "height")}
    if k.distorted:
        d.update(model=k.model, distortion=list(k.distortion))
    return d


def _rig_from_json(data: list[dict[str, Any]], arr=None) -> CameraRig:
    return CameraRig(
        tuple(
            Camera(d["name"], CameraIntrinsics(**d["intrinsics"]), np.asarray(d["T_ego_from_camera"], dtype=np.float64),
                   None if d.get("ego_mask") is None else np.asarray(arr(d["ego_mask"])))
            for d in data
        )
    )


def _map_to_json(m: SceneMap) -> dict[str, Any]:
    return {
        "drivable_area": m.drivable_area.wkb_hex,
        "lane_ids": list(m.lane_ids),
        "lanes": [ln.wkb_hex for ln in m.lanes],
        "successors": [list(s) for s in m.successors],
        **map_rules_json(m),
    }


def _map_from_json(d: dict[str, Any]) -> SceneMap:
    from shapely import wkb

    return SceneMap(
        drivable_area=wkb.loads(d["drivable_area"], hex=True),
        lane_ids=tuple(d["lane_ids"]),
        lanes=tuple(wkb.loads(h, hex=True) for h in d["lanes"]),
        successors=tuple(tuple(s) for s in d["successors"]),
        in_intersection=tuple(bool(v) for v in d.get("in_intersection", ())),
        speed_limits=tuple(float("nan") if v is None else float(v) for v in d.get("speed_limits", ())),
        traffic_lights=tuple(TrafficLight.from_json(lt) for lt in d.get("traffic_lights", ())),
        lights_complete=bool(d.get("lights_complete", False)),
    ).validate()


def _atomic_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise SceneError(f"{out_dir}: already exists (pass overwrite=True / --overwrite to replace it)")
    if out_dir.exists() and not (out_dir / META_FILE).is_file() and any(out_dir.iterdir()):
        raise SceneError(f"{out_dir}: exists and is not a scene cache; refusing to replace it")


def write_scene_cache(log: SceneLog, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``log`` as a scene cache at ``out_dir`` atomically; returns the final path.

    The log is validated first. Raises :class:`SceneError` if ``out_dir`` exists (unless ``overwrite``).
    """
    out_dir = Path(out_dir)
    log.validate()
    _atomic_target(out_dir, overwrite)
    with atomic_directory(out_dir) as tmp:
        files: dict[str, dict[str, Any]] = {}

        def put_array(name: str, arr) -> None:
            arr = np.ascontiguousarray(arr)
            path = tmp / f"{name}.npy"
            np.save(path, arr, allow_pickle=False)
            files[path.name] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}

        def put_blob(name: str, store: FrameStore) -> None:
            path = tmp / f"{name}.bin"
            with open(path, "wb") as f:
                f.write(memoryview(np.ascontiguousarray(store.blob)))
            files[path.name] = {"codec": store.codec}
            put_array(f"{name}_index", store.index)

        put_array("timestamps_us", log.timestamps_us)
        put_array("ego_poses", log.ego_poses)
        put_array("camera_timestamps_us", log.camera_timestamps_us)
        put_array("camera_ego_poses", log.camera_ego_poses)
        if log.images is not None:  # a layout-only log has none
            put_blob("images", log.images)
        for i, cam in enumerate(log.rig.cameras):
            if cam.ego_mask is not None:
                put_array(f"ego_mask_{i}", cam.ego_mask)
        if log.depth is not None:
            put_blob("depth", log.depth)
        if log.lidar is not None:
            put_array("lidar_points", log.lidar.points)
            put_array("lidar_offsets", log.lidar.offsets)
            put_array("lidar_timestamps_us", log.lidar.timestamps_us)
            put_array("lidar_ego_poses", log.lidar.ego_poses)
            put_array("lidar_T_ego_from_lidar", log.lidar.T_ego_from_lidar)
        put_array("objects_sizes", log.objects.sizes)
        put_array("objects_poses", log.objects.poses)
        put_array("objects_valid", log.objects.valid)
        if log.map is not None:
            (tmp / "map.json").write_text(json.dumps(_map_to_json(log.map)))
            files["map.json"] = {}
        for fname, info in files.items():
            p = tmp / fname
            info["bytes"] = p.stat().st_size
            info["sha256"] = _sha256(p)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": log.name,
            "source": log.source,
            "num_frames": log.num_frames,
            "duration_s": log.duration_s,
            "rig": _rig_to_json(log.rig),
            "objects": {"instance_ids": list(log.objects.instance_ids), "categories": list(log.objects.categories)},
            "metadata": log.metadata,
            "files": files,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return out_dir


def read_scene_meta(scene_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``scene.json`` (format and version) without touching the arrays."""
    scene_dir = Path(scene_dir)
    meta_path = scene_dir / META_FILE
    if not scene_dir.is_dir():
        raise SceneError(f"{scene_dir}: no such scene cache directory")
    if not meta_path.is_file():
        raise SceneError(f"{meta_path}: missing; {scene_dir} is not a scene cache (create one with `stag-sim synth` or `stag-sim ingest`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"{meta_path}: corrupt JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SceneError(f"{meta_path}: not a stag_sim scene cache (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise SceneError(
            f"{meta_path}: scene cache format version {meta.get('version')!r} is not supported "
            f"(this stag_sim reads version {FORMAT_VERSION}); re-create the cache from its source "
            f"(`stag-sim synth`, `stag-sim ingest dgp` or `stag-sim ingest nuscenes`)"
        )
    return meta


def _check_files(scene_dir: Path, meta: dict[str, Any], verify: bool) -> None:
    for fname, info in meta["files"].items():
        p = scene_dir / fname
        if not p.is_file():
            raise SceneError(f"{p}: missing file of the scene cache")
        size = p.stat().st_size
        if size != info["bytes"]:
            raise SceneError(f"{p}: corrupt ({size} bytes, scene.json records {info['bytes']})")
        if verify and _sha256(p) != info["sha256"]:
            raise SceneError(f"{p}: corrupt (sha256 does not match scene.json)")


def _load_map(path: Path) -> SceneMap:
    """The scene map of ``map.json``; one :class:`SceneError` line naming that file if it is not a map."""
    try:
        return _map_from_json(json.loads(path.read_text()))
    except ValidationError as e:
        raise SceneError(f"{path}: {e}") from None
    except StagSimError:
        raise
    except Exception as e:  # noqa: BLE001 - bad JSON, missing keys, bad geometry: all say which file
        raise SceneError(f"{path}: corrupt map ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def load_scene_cache(scene_dir: str | os.PathLike, verify: bool = True, mmap: bool = True) -> SceneLog:
    """Load a scene cache written by :func:`write_scene_cache`.

    Args:
        scene_dir: the scene directory.
        verify: check every file's sha256 (sizes are always checked). Costs one read of the files.
        mmap: memory-map arrays and blobs (default) instead of reading them into memory.

    Raises:
        SceneError: naming the file that is missing, corrupt, or of an unsupported version.
    """
    scene_dir = Path(scene_dir)
    meta = read_scene_meta(scene_dir)
    _check_files(scene_dir, meta, verify)
    files = meta["files"]
    mode = "r" if mmap else None

    def arr(name: str) -> np.ndarray:
        p = scene_dir / f"{name}.npy"
        try:
            a = np.load(p, mmap_mode=mode, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, tokenize errors
            raise SceneError(f"{p}: corrupt array file ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        info = files[p.name]
        if str(a.dtype) != info["dtype"] or list(a.shape) != info["shape"]:
            raise SceneError(f"{p}: holds {a.dtype}{list(a.shape)}, scene.json records {info['dtype']}{info['shape']}")
        return a

    def blob(name: str) -> FrameStore:
        p = scene_dir / f"{name}.bin"
        if p.stat().st_size == 0:
            data = np.zeros(0, np.uint8)
        elif mmap:
            data = np.memmap(p, dtype=np.uint8, mode="r")
        else:
            data = np.fromfile(p, dtype=np.uint8)
        return FrameStore(data, np.asarray(arr(f"{name}_index")), files[p.name]["codec"])

    try:
        rig = _rig_from_json(meta["rig"], arr)
        lidar = None
        if "lidar_points.npy" in files:
            lidar = LidarSweeps(
                arr("lidar_points"), np.asarray(arr("lidar_offsets")), np.asarray(arr("lidar_timestamps_us")),
                arr("lidar_ego_poses"), np.asarray(arr("lidar_T_ego_from_lidar")),
            )
        objects = ObjectTracks(
            tuple(meta["objects"]["instance_ids"]), tuple(meta["objects"]["categories"]),
            np.asarray(arr("objects_sizes")), arr("objects_poses"), np.asarray(arr("objects_valid")),
        )
        scene_map = _load_map(scene_dir / "map.json") if "map.json" in files else None
        log = SceneLog(
            name=meta["name"], source=meta["source"],
            timestamps_us=np.asarray(arr("timestamps_us")), ego_poses=arr("ego_poses"), rig=rig,
            images=blob("images") if "images.bin" in files else None, camera_timestamps_us=np.asarray(arr("camera_timestamps_us")),
            camera_ego_poses=arr("camera_ego_poses"), objects=objects,
            depth=blob("depth") if "depth.bin" in files else None, lidar=lidar, map=scene_map,
            metadata=meta.get("metadata", {}),
        )
    except StagSimError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise SceneError(f"{scene_dir / META_FILE}: inconsistent scene cache ({type(e).__name__}: {e})") from None
    try:
        log.validate()
    except StagSimError as e:
        raise SceneError(f"{scene_dir}: invalid scene cache: {e}") from None
    return log
