"""Converting a planned DGP scene (:class:`~stag_sim.ingest.dgp_json._Plan`) into a :class:`SceneLog`: the frames
in LiDAR-time order, the original image bytes (header-checked), the LiDAR sweeps (intensity scaled to 0..255), the
3D boxes as object tracks with nuScenes-style categories (:func:`dgp_category`), and the camera rig."""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from stag_sim.camera import Camera, CameraIntrinsics, CameraRig
from stag_sim.errors import IngestError, ValidationError
from stag_sim.geometry import invert_transform
from stag_sim.ingest.dgp_json import _CODECS, RADTAN_FIELDS, _get, _number, _Plan, _pose, _read_json, _Sensor
from stag_sim.scene_log import FrameStore, LidarSweeps, ObjectTracks, SceneLog

_DEFAULT_POINT_FORMAT = ("X", "Y", "Z", "INTENSITY")

#: DGP / DDAD ontology names (lower case) -> nuScenes-style category names. Names not listed map to
#: ``movable_object.<name>`` (lower case, non-alphanumerics as ``_``), see :func:`dgp_category`.
CATEGORY_MAP: dict[str, str] = {
    "car": "vehicle.car",
    "person": "human.pedestrian.adult",
    "pedestrian": "human.pedestrian.adult",
    "bicycle": "vehicle.bicycle",
    "bicyclist": "vehicle.bicycle",  # nuScenes bicycle boxes include the rider
    "truck": "vehicle.truck",
    "bus": "vehicle.bus",
    "bus/rv/caravan": "vehicle.bus",
    "motorcycle": "vehicle.motorcycle",
    "motorcyclist": "vehicle.motorcycle",
    "trailer": "vehicle.trailer",
    "towed object": "vehicle.trailer",
}


def dgp_category(name: str) -> str:
    """nuScenes-style category of DGP ontology class ``name`` (``Car`` -> ``vehicle.car``; see :data:`CATEGORY_MAP`)."""
    key = " ".join(str(name).strip().lower().split())
    if key in CATEGORY_MAP:
        return CATEGORY_MAP[key]
    slug = re.sub(r"[^0-9a-z]+", "_", key).strip("_") or "unknown"
    return f"movable_object.{slug}"


def _build(plan: _Plan, progress: bool) -> SceneLog:
    sj = plan.scene_json
    order = sorted(range(len(plan.frames)), key=lambda s: plan.frames[s][0].timestamp_us)
    frames = [plan.frames[s] for s in order]
    ts = np.array([lid.timestamp_us for lid, _ in frames], dtype=np.int64)
    dup = np.flatnonzero(np.diff(ts) == 0)
    if dup.size:
        a, b = frames[dup[0]][0], frames[dup[0] + 1][0]
        raise IngestError(f"{sj}: two samples share the {plan.lidar_name} time {a.timestamp_us} us "
                          f"({a.file.name}, {b.file.name})")

    codecs = {_CODECS[cam.file.suffix.lower()] for _, cams in frames for cam in cams}
    if len(codecs) != 1:
        raise IngestError(f"{sj}: camera images must all be JPEG (or all PNG), got {', '.join(sorted(codecs))}")
    codec = codecs.pop()

    T_lidar_from_ego = invert_transform(plan.T_ego_from_lidar)
    T_cam_from_ego = {n: invert_transform(T) for n, T in plan.T_ego_from_cameras.items()}
    it: Iterable = range(len(frames))
    if progress:
        from tqdm import tqdm  # core dependency; imported only when a bar is wanted

        it = tqdm(it, desc=f"ingest {plan.name}", unit="frame")
    C = len(plan.camera_names)
    images: list[list[bytes]] = []
    cam_ts = np.zeros((len(frames), C), np.int64)
    cam_poses = np.zeros((len(frames), C, 4, 4))
    sweeps, ego_poses, boxes = [], [], []
    for t in it:
        lid, cams = frames[t]
        row = []
        for c, cam in enumerate(cams):
            row.append(_image_bytes(cam, codec, sj))
            cam_ts[t, c] = cam.timestamp_us
            cam_poses[t, c] = cam.T_world_from_sensor @ T_cam_from_ego[cam.name]
        images.append(row)
        ego_poses.append(lid.T_world_from_sensor @ T_lidar_from_ego)
        sweeps.append(_read_sweep(lid))
        boxes.append(_read_boxes(lid, plan) if lid.boxes is not None else [])
    ego_poses = np.stack(ego_poses)

    # Intensity: DGP stores 0..1; SceneLog wants 0..255.
    if sweeps and max((float(s[:, 3].max()) for s in sweeps if len(s)), default=0.0) <= 1.0:
        for s in sweeps:
            s[:, 3] *= 255.0
            r = np.round(s[:, 3])
            if len(s) and np.abs(s[:, 3] - r).max() < 1e-3:
                s[:, 3] = r

    rig_cams = []
    for c, n in enumerate(plan.camera_names):
        K = plan.intrinsics[n]
        w, h = frames[0][1][c].width, frames[0][1][c].height
        fx, fy, cx, cy = (float(K.get(k, 0)) for k in ("fx", "fy", "cx", "cy"))
        intr = CameraIntrinsics(fx, fy, cx, cy, w, h, distortion=tuple(float(K.get(k, 0)) for k in RADTAN_FIELDS))
        rig_cams.append(Camera(n, intr, plan.T_ego_from_cameras[n]))
    rig = CameraRig(tuple(rig_cams))

    lidar = LidarSweeps.from_list(sweeps, ts, ego_poses, plan.T_ego_from_lidar)
    rate = round(1e6 / float(np.median(np.diff(ts))), 3) if len(ts) > 1 else None
    log = SceneLog(
        name=plan.name, source="dgp", timestamps_us=ts, ego_poses=ego_poses, rig=rig,
        images=FrameStore.from_encoded(images, codec), camera_timestamps_us=cam_ts, camera_ego_poses=cam_poses,
        objects=_tracks(boxes, len(frames)), depth=None, lidar=lidar, map=None,
        metadata={"dgp_scene": str(sj.resolve()), "frame_rate_hz": rate, "camera_names": list(plan.camera_names),
                  "lidar_name": plan.lidar_name, "dgp_log": str(plan.scene.get("log", "")),
                  "description": str(plan.scene.get("description", ""))},
    )
    try:
        return log.validate()
    except ValidationError as e:
        raise IngestError(f"{sj}: the ingested scene is invalid: {e}") from None


def _image_size(data: bytes, codec: str) -> tuple[int, int] | None:
    """(width, height) [px] from a PNG IHDR or a JPEG SOF header, or None when the bytes are not that format."""
    if codec == "png":
        if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _image_bytes(cam: _Sensor, codec: str, sj: Path) -> bytes:
    """The image file's original bytes, after checking its header against the datum's width and height."""
    try:
        data = cam.file.read_bytes()
    except OSError as e:
        raise IngestError(f"{cam.file}: unreadable {cam.name} image ({e})") from None
    size = _image_size(data, codec)
    if size is None:
        raise IngestError(f"{cam.file}: not a valid {codec.upper()} image ({len(data)} bytes; {cam.name}, "
                          f"field {cam.where}.filename)")
    if size != (cam.width, cam.height):
        raise IngestError(f"{cam.file}: image is {size[0]}x{size[1]} px but {sj.name} field {cam.where}.width/height "
                          f"says {cam.width}x{cam.height}")
    return data


def _read_sweep(lid: _Sensor) -> np.ndarray:
    """(N, 4) float32 x, y, z [m] and raw intensity of a DGP point cloud, in the LiDAR frame."""
    f = lid.file
    try:
        with np.load(f, allow_pickle=False) as z:
            if "data" not in z.files:
                raise IngestError(f"{f}: point cloud has no array 'data' (keys: {', '.join(z.files) or 'none'})")
            arr = np.asarray(z["data"])
    except IngestError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, TypeError) as e:
        raise IngestError(f"{f}: unreadable point cloud .npz ({type(e).__name__}: {e})") from None
    except AttributeError:  # np.load returned a bare array (.npy), which has no context manager
        raise IngestError(f"{f}: expected a DGP .npz point cloud with an array 'data'") from None
    if arr.ndim != 2 or arr.shape[1] < 3 or not np.issubdtype(arr.dtype, np.number):
        raise IngestError(f"{f}: point cloud 'data' is {arr.dtype} {arr.shape}, expected numbers of shape (N, 4): "
                          f"X, Y, Z, INTENSITY")
    # No point_format in the datum: the README's default layout (X, Y, Z[, INTENSITY]).
    fmt = [s.upper() for s in lid.point_format] or list(_DEFAULT_POINT_FORMAT[:min(arr.shape[1], 4)])
    if arr.shape[1] != len(fmt):
        raise IngestError(f"{f}: point cloud 'data' has {arr.shape[1]} columns but {lid.where}.point_format "
                          f"lists {len(fmt)} ({', '.join(fmt)})")
    missing = [k for k in ("X", "Y", "Z") if k not in fmt]
    if missing:
        raise IngestError(f"{f}: field {lid.where}.point_format ({', '.join(fmt)}) has no {', '.join(missing)} column")
    out = np.zeros((arr.shape[0], 4), np.float32)
    out[:, :3] = arr[:, [fmt.index("X"), fmt.index("Y"), fmt.index("Z")]]
    if "INTENSITY" in fmt:
        out[:, 3] = arr[:, fmt.index("INTENSITY")]
    keep = np.all(np.isfinite(out), axis=1)
    return out if keep.all() else out[keep]


def _read_boxes(lid: _Sensor, plan: _Plan) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(instance id, category, (length, width, height) [m], T_world_from_object) of each box of one frame."""
    f = lid.boxes
    doc = _read_json(f, "DGP bounding_box_3d annotation")
    anns = doc.get("annotations", []) if isinstance(doc, dict) else None
    if not isinstance(anns, list):
        raise IngestError(f"{f}: field annotations is missing or not a list")
    out, seen = [], set()
    for j, a in enumerate(anns):
        where = f"annotations[{j}]"
        box = _get(a, "box", f, f"{where}.box", dict)
        try:
            iid = str(int(a.get("instance_id", 0)))  # uint32 (a string if a writer used a 64-bit type)
            cid = int(a.get("class_id", 0))
        except (TypeError, ValueError):
            raise IngestError(f"{f}: field {where}.instance_id / class_id is not an int") from None
        if iid in seen:
            raise IngestError(f"{f}: field {where}.instance_id = {iid} appears twice in one frame")
        seen.add(iid)
        if cid not in plan.class_names:
            raise IngestError(f"{f}: field {where}.class_id = {cid} is not in {plan.ontology_file} "
                              f"(ids {sorted(plan.class_names)})")
        lwh = np.array([_number(box, k, f, f"{where}.box") for k in ("length", "width", "height")])
        if np.any(lwh <= 0):
            raise IngestError(f"{f}: field {where}.box length/width/height must be > 0 m, got {lwh.tolist()}")
        T = lid.T_world_from_sensor @ _pose(box.get("pose"), f, f"{where}.box.pose")
        out.append((iid, dgp_category(plan.class_names[cid]), lwh, T))
    return out


def _tracks(boxes: list[list[tuple[str, str, np.ndarray, np.ndarray]]], T: int) -> ObjectTracks:
    ids: dict[str, int] = {}
    for frame in boxes:
        for iid, *_ in frame:
            ids.setdefault(iid, len(ids))
    K = len(ids)
    if K == 0:
        return ObjectTracks.empty(T)
    poses = np.tile(np.eye(4), (T, K, 1, 1))
    valid = np.zeros((T, K), bool)
    sizes: list[list[np.ndarray]] = [[] for _ in range(K)]
    cats: list[Counter] = [Counter() for _ in range(K)]
    for t, frame in enumerate(boxes):
        for iid, cat, lwh, pose in frame:
            k = ids[iid]
            poses[t, k] = pose
            valid[t, k] = True
            sizes[k].append(lwh)
            cats[k][cat] += 1
    return ObjectTracks(tuple(ids), tuple(c.most_common(1)[0][0] for c in cats),
                        np.array([np.median(np.stack(s), axis=0) for s in sizes]), poses, valid)
