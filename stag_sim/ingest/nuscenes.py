"""nuScenes ingestion through the real nuscenes-devkit: one nuScenes scene -> :class:`SceneLog` -> scene cache.

This is the one module that imports the devkit (``nuscenes``, the ``nuscenes`` pip extra), lazily inside the
functions, so ``import stag_sim`` never needs it; without it the functions raise :class:`MissingExtraError`.

Frames:

* Keyframes (default, 2 Hz): one frame per sample. The frame timestamp is the sample timestamp and the frame
  ego pose is the ego pose of the sample's LIDAR_TOP sample_data (the sample's reference sensor); each camera
  keeps its own capture timestamp and ego pose (``camera_timestamps_us`` / ``camera_ego_poses``); the LiDAR
  sweep is the sample's LIDAR_TOP; boxes are the sample's annotations.
* Sweeps (``use_sweeps=True``, ~12 Hz): the frame clock is CAM_FRONT. Every CAM_FRONT sample_data (keyframe or
  sweep) from the scene's first to its last sample is one frame, with CAM_FRONT's timestamp and ego pose.
  Each other camera contributes the sample_data of its own channel nearest in time (cameras fire at the same
  12 Hz, a few tens of ms apart, so this pairs the images of one rig cycle), each with its own timestamp and
  ego pose. Boxes come from the devkit's ``NuScenes.get_boxes`` on the CAM_FRONT sample_data: exact at
  keyframes, linearly interpolated (centre) / slerped (rotation) between keyframes, so an object is valid in a
  frame when the devkit returns a box for it there.

  LiDAR on the sweep clock uses *every* LIDAR_TOP sample_data (20 Hz) from the scene's first to its last
  keyframe, none dropped: each frame owns the sweeps whose timestamps fall in its interval
  ``[(t_prev + t) / 2, (t + t_next) / 2)`` (the first frame's interval is open to the left, the last one's to
  the right; a sweep exactly half way goes to the later frame). The frame's *reference* sweep is the one of its
  interval nearest the frame time; its timestamp and ego pose are ``LidarSweeps.timestamps_us[t]`` /
  ``ego_poses[t]``, so the stored contract (one cloud per frame, in the LiDAR frame at that ego pose) is
  unchanged. Every other sweep of the interval is motion-compensated by the ego poses into the reference
  LiDAR frame, ``T_lidar_ref_from_lidar_sweep = inv(T_world_from_ego(ref) @ T_ego_from_lidar) @
  (T_world_from_ego(sweep) @ T_ego_from_lidar)`` (what the devkit's ``LidarPointCloud.from_file_multisweep``
  applies), so a static point lands at the same world position from every sweep; moving objects smear along
  their path over the ~80 ms interval. Points are concatenated in sweep time order; the reference sweep's points
  are stored as read. Sweeps are not de-skewed within their own ~50 ms rotation (the ego pose is the one at the
  sweep timestamp, as everywhere in nuScenes). A frame whose interval holds no sweep (a LiDAR drop-out longer
  than a camera period) reuses the nearest sweep, unmoved, as its reference and cloud.

``metadata["lidar_sweeps"]`` is the number of LIDAR_TOP sample_data read (keyframes: one per frame).

Objects: instance tokens are the ids (ordered as in the instance table), category names are the nuScenes
ones, ``sizes`` are (length, width, height) [m] (nuScenes stores (width, length, height)), the median over the
instance's annotations. Map: when ``<dataroot>/maps/expansion/<location>.json`` exists, the drivable-area
polygons and the lane and lane-connector centrelines (``NuScenesMap.discretize_lanes`` at
:data:`LANE_RESOLUTION` [m]) intersecting the ego path's bounding box grown by ``map_margin`` [m], with
successors from the map's connectivity (restricted to the lanes kept), lane connectors marked as intersection lanes,
and the signalised stop lines as traffic lights of state ``unknown`` (nuScenes records no signal states, so
traffic-light compliance is not scored on it; no speed limits either); otherwise ``map`` is None. Images
keep their original JPEG bytes; ``depth`` is None (nuScenes has LiDAR).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stag_sim.cache import write_scene_cache
from stag_sim.camera import CAMERA_NAMES, Camera, CameraIntrinsics, CameraRig
from stag_sim.errors import IngestError, MissingExtraError
from stag_sim.geometry import invert_transform, make_transform, transform_points
from stag_sim.ingest.nuscenes_export import LIDAR_CHANNEL, TABLES
from stag_sim.scene_log import FrameStore, LidarSweeps, ObjectTracks, SceneLog, SceneMap

LANE_RESOLUTION = 0.5  # [m] spacing of the points of discretised lane centrelines (the devkit's own default)
STOP_LINE_REACH = 3.0  # [m] a lane connector starting this close to a signalised stop line is controlled by it
MAP_MARGIN = 100.0  # [m] map records within this distance of the ego path's bounding box are kept
_CODECS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}  # sample_data fileformat -> FrameStore codec
_MAX_NAMES_LISTED = 8
#: [-] allowed |norm - 1| of a stored quaternion; nuScenes stores them normalised to ~1e-15, so anything
#: beyond this is a broken table, not rounding (which would otherwise be silently renormalised away).
QUAT_NORM_TOLERANCE = 1e-4


def _devkit():
    """Import the devkit's NuScenes class, or raise :class:`MissingExtraError` naming the ``nuscenes`` extra."""
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as e:
        raise MissingExtraError("nuscenes-devkit", "nuscenes", "nuScenes ingestion") from e
    return NuScenes


def ingest_nuscenes(dataroot: str | os.PathLike, version: str, scene_name: str, use_sweeps: bool = False,
                    progress: bool = False, map_margin: float = MAP_MARGIN) -> SceneLog:
    """Read nuScenes scene ``scene_name`` of ``version`` under ``dataroot`` into a validated :class:`SceneLog`.

    Args:
        dataroot: nuScenes root folder (holds ``<version>/``, ``samples/``, ``sweeps/``, ``maps/``).
        version: table folder, e.g. ``v1.0-mini`` or ``v1.0-trainval``.
        scene_name: e.g. ``scene-0061``.
        use_sweeps: ~12 Hz frames on the CAM_FRONT clock instead of the 2 Hz keyframes, with every 20 Hz
            LiDAR sweep merged, motion-compensated, into its frame's cloud (see the module docstring).
        progress: show a tqdm progress bar over the frames.
        map_margin: [m] keep map records within this distance of the ego path's bounding box.

    Raises :class:`MissingExtraError` without the devkit and :class:`IngestError` (one line) for a missing
    dataroot or tables, an unknown scene, missing sample files or inconsistent calibration.
    """
    NuScenes = _devkit()
    from nuscenes.utils.data_classes import LidarPointCloud

    root = Path(dataroot)
    scene_record = _check_dataroot(root, version, scene_name)
    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, OSError, KeyError, ValueError) as e:  # the devkit asserts / raises on a broken dataset
        raise IngestError(f"{root}: the nuScenes devkit could not load {version}: {e}") from None
    scene = nusc.get("scene", scene_record["token"])
    samples = _scene_samples(nusc, scene)
    if use_sweeps:
        ref_tokens, frame_ts = _sweep_frames(nusc, samples)
    else:
        ref_tokens = [s["data"][LIDAR_CHANNEL] for s in samples]
        frame_ts = [int(s["timestamp"]) for s in samples]
    T = len(ref_tokens)

    frames = range(T)
    if progress:
        from tqdm import tqdm  # core dependency; imported only when a bar is wanted

        frames = tqdm(frames, desc=f"ingest {scene_name}", unit="frame")
    cams_at = _camera_chooser(nusc, samples, use_sweeps, ref_tokens)
    lidar_groups = _lidar_groups(nusc, samples, use_sweeps, frame_ts)
    T_ego_from_lidar = _static_calibration(nusc, [sd for _, group in lidar_groups for sd in group], LIDAR_CHANNEL, scene_name)
    images, cam_ts, cam_poses, cam_records = [], np.zeros((T, len(CAMERA_NAMES)), np.int64), [], []
    sweeps, lidar_ts, lidar_poses = [], np.zeros(T, np.int64), []
    for t in frames:
        sds = cams_at(t)
        images.append([_file(root, sd, scene_name).read_bytes() for sd in sds])
        cam_ts[t] = [sd["timestamp"] for sd in sds]
        cam_poses.append([_ego_pose(nusc, sd) for sd in sds])
        cam_records.append(sds)
        ref, group = lidar_groups[t]
        T_world_from_ref = _ego_pose(nusc, ref)
        clouds = []
        for sd in group:
            pts = LidarPointCloud.from_file(str(_file(root, sd, scene_name))).points.T  # (N, 4) float32 x, y, z, intensity
            if sd["token"] != ref["token"]:
                pts = _motion_compensated(pts, T_world_from_ref, _ego_pose(nusc, sd), T_ego_from_lidar)
            clouds.append(pts)
        sweeps.append(np.concatenate(clouds) if len(clouds) > 1 else clouds[0])
        lidar_ts[t] = ref["timestamp"]
        lidar_poses.append(T_world_from_ref)
    # The frame ego pose is the reference sensor's: LIDAR_TOP for keyframes, CAM_FRONT on the sweep clock.
    ego_poses = np.stack([p[0] for p in cam_poses] if use_sweeps else lidar_poses)

    rig = _camera_rig(nusc, cam_records, scene_name)
    codecs = {_CODECS.get(sd["fileformat"]) for row in cam_records for sd in row}
    if len(codecs) != 1 or None in codecs:
        raise IngestError(f"scene {scene_name}: camera images must all be jpg (or all png), got formats {sorted(map(str, codecs))}")
    lidar = LidarSweeps.from_list(sweeps, lidar_ts, np.stack(lidar_poses), T_ego_from_lidar)
    log_record = nusc.get("log", scene["log_token"])
    log = SceneLog(
        name=scene["name"], source="nuscenes", timestamps_us=np.asarray(frame_ts, dtype=np.int64), ego_poses=ego_poses,
        rig=rig, images=FrameStore.from_encoded(images, codecs.pop()), camera_timestamps_us=cam_ts,
        camera_ego_poses=np.asarray(cam_poses, dtype=np.float64), objects=_objects(nusc, samples, ref_tokens),
        depth=None, lidar=lidar, map=_scene_map(root, log_record["location"], ego_poses, map_margin),
        metadata={"nuscenes_version": version, "scene_token": scene["token"], "location": log_record["location"],
                  "description": scene["description"], "frames": "sweeps" if use_sweeps else "keyframes",
                  "lidar_sweeps": len({sd["token"] for _, group in lidar_groups for sd in group})},
    )
    return log.validate()


def ingest_nuscenes_to_cache(dataroot: str | os.PathLike, version: str, scene_name: str, out_dir: str | os.PathLike,
                             overwrite: bool = False, **kw: Any) -> Path:
    """:func:`ingest_nuscenes` then :func:`~stag_sim.cache.write_scene_cache` at ``out_dir``; returns its path.

    ``kw`` are passed to :func:`ingest_nuscenes` (``use_sweeps``, ``progress``, ``map_margin``).
    """
    return write_scene_cache(ingest_nuscenes(dataroot, version, scene_name, **kw), out_dir, overwrite=overwrite)


def _check_dataroot(root: Path, version: str, scene_name: str) -> dict[str, Any]:
    """Check the dataset layout before the devkit sees it (it asserts or prints otherwise); returns the scene row."""
    if not root.is_dir():
        raise IngestError(f"nuScenes dataroot {root} does not exist (expected a folder holding {version}/, samples/, maps/)")
    tables = root / version
    missing = [t for t in TABLES if not (tables / f"{t}.json").is_file()]
    if missing:
        raise IngestError(f"{tables}: no nuScenes {version} tables here (missing {', '.join(f'{t}.json' for t in missing)})")
    try:
        scenes = json.loads((tables / "scene.json").read_text())
    except (OSError, ValueError) as e:
        raise IngestError(f"{tables / 'scene.json'}: unreadable: {e}") from None
    for s in scenes:
        if s.get("name") == scene_name:
            return s
    names = sorted(s.get("name", "?") for s in scenes)
    listed = ", ".join(names[:_MAX_NAMES_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > _MAX_NAMES_LISTED else "")
    raise IngestError(f"scene {scene_name!r} is not in {version} at {root}; available: {listed or 'none'}")


def _scene_samples(nusc, scene: dict[str, Any]) -> list[dict[str, Any]]:
    """The scene's samples in time order, each checked to hold all six cameras and LIDAR_TOP."""
    samples, token = [], scene["first_sample_token"]
    while token:
        s = nusc.get("sample", token)
        missing = [ch for ch in CAMERA_NAMES + (LIDAR_CHANNEL,) if ch not in s["data"]]
        if missing:
            raise IngestError(f"scene {scene['name']}: sample {token} has no {', '.join(missing)} keyframe")
        samples.append(s)
        token = s["next"]
    return samples


def _chain(nusc, first_token: str, last_token: str) -> list[dict[str, Any]]:
    """sample_data records of one channel from ``first_token`` to ``last_token`` (inclusive), following ``next``."""
    out, token = [], first_token
    while True:
        sd = nusc.get("sample_data", token)
        out.append(sd)
        if token == last_token or not sd["next"]:
            return out
        token = sd["next"]


def _channel_chain(nusc, samples, channel: str) -> list[dict[str, Any]]:
    return _chain(nusc, samples[0]["data"][channel], samples[-1]["data"][channel])


def _nearest(records: list[dict[str, Any]], timestamps_us) -> list[dict[str, Any]]:
    """For each of ``timestamps_us``, the record of ``records`` (time-ordered) nearest in time."""
    ts = np.array([r["timestamp"] for r in records], dtype=np.int64)
    q = np.asarray(timestamps_us, dtype=np.int64)
    right = np.clip(np.searchsorted(ts, q), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(q), np.int64)
    left = np.maximum(right - 1, 0)
    idx = np.where(np.abs(ts[left] - q) <= np.abs(ts[right] - q), left, right)
    return [records[i] for i in idx]


def _sweep_frames(nusc, samples) -> tuple[list[str], list[int]]:
    """Frames on the CAM_FRONT clock: (sample_data tokens, timestamps [us])."""
    chain = _channel_chain(nusc, samples, CAMERA_NAMES[0])
    return [sd["token"] for sd in chain], [int(sd["timestamp"]) for sd in chain]


def _camera_chooser(nusc, samples, use_sweeps: bool, ref_tokens: list[str]):
    """``f(t) -> [sample_data of each camera]`` for frame ``t``."""
    if not use_sweeps:
        return lambda t: [nusc.get("sample_data", samples[t]["data"][ch]) for ch in CAMERA_NAMES]
    ref_ts = [nusc.get("sample_data", tok)["timestamp"] for tok in ref_tokens]
    per_cam = [_nearest(_channel_chain(nusc, samples, ch), ref_ts) for ch in CAMERA_NAMES]
    return lambda t: [per_cam[c][t] for c in range(len(CAMERA_NAMES))]


def _lidar_groups(nusc, samples, use_sweeps: bool, frame_ts: list[int]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """For each frame, ``(reference LIDAR_TOP sample_data, [the LIDAR_TOP sample_data merged into its cloud])``.

    Keyframes: the sample's LIDAR_TOP alone. Sweep clock: every LIDAR_TOP sample_data of the scene, each in the
    frame whose interval (midpoints between neighbouring frame times) holds its timestamp, in time order; the
    reference is the one nearest the frame time (see the module docstring).
    """
    if not use_sweeps:
        return [(sd, [sd]) for sd in (nusc.get("sample_data", s["data"][LIDAR_CHANNEL]) for s in samples)]
    chain = _channel_chain(nusc, samples, LIDAR_CHANNEL)
    sweep_ts = np.array([sd["timestamp"] for sd in chain], dtype=np.int64)
    f = np.asarray(frame_ts, dtype=np.int64)
    # Frame of each sweep: the number of interval boundaries (f[k] + f[k + 1]) / 2 at or before it (integer maths).
    owner = np.searchsorted(f[:-1] + f[1:], 2 * sweep_ts, side="right")
    fallback = _nearest(chain, f)
    groups = []
    for t in range(len(f)):
        idx = np.flatnonzero(owner == t)
        if len(idx) == 0:  # LiDAR drop-out: no sweep in this frame's interval
            groups.append((fallback[t], [fallback[t]]))
            continue
        ref = idx[np.argmin(np.abs(sweep_ts[idx] - f[t]))]
        groups.append((chain[ref], [chain[i] for i in idx]))
    return groups


def _motion_compensated(points: np.ndarray, T_world_from_ref: np.ndarray, T_world_from_sweep: np.ndarray,
                        T_ego_from_lidar: np.ndarray) -> np.ndarray:
    """(N, 4) float32 LiDAR points of a sweep captured at ego pose ``T_world_from_sweep``, moved into the LiDAR
    frame at ego pose ``T_world_from_ref`` (intensity unchanged)."""
    T_ref_from_sweep = invert_transform(T_world_from_ref @ T_ego_from_lidar) @ (T_world_from_sweep @ T_ego_from_lidar)
    out = np.array(points, dtype=np.float32, copy=True)
    out[:, :3] = transform_points(T_ref_from_sweep, points[:, :3].astype(np.float64))
    return out


def _file(root: Path, sd: dict[str, Any], scene_name: str) -> Path:
    """Path of sample_data ``sd``'s file; raises :class:`IngestError` when it is missing."""
    path = root / sd["filename"]
    if not path.is_file():
        raise IngestError(f"scene {scene_name}: sample file {path} is missing (sample_data {sd['token']})")
    return path


def _checked_transform(rotation, translation, what: str) -> np.ndarray:
    """4x4 transform from a (w, x, y, z) rotation and a translation [m]; raises :class:`IngestError` naming
    ``what`` when a value is not finite or the quaternion is not unit-norm (within :data:`QUAT_NORM_TOLERANCE`)."""
    q = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    if q.shape != (4,) or t.shape != (3,) or not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise IngestError(f"{what}: expected a finite rotation (w, x, y, z) and translation (x, y, z), got {q.tolist()} {t.tolist()}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise IngestError(f"{what}: rotation {q.tolist()} is not a unit quaternion (norm {norm:.6g})")
    return make_transform(q / norm, t)


def _pose_matrix(record: dict[str, Any], table: str) -> np.ndarray:
    """4x4 transform from a nuScenes ``translation`` [m] / ``rotation`` (w, x, y, z) record of ``table``."""
    return _checked_transform(record["rotation"], record["translation"], f"{table} {record.get('token', '?')}")


def _ego_pose(nusc, sd: dict[str, Any]) -> np.ndarray:
    """``T_world_from_ego`` at the capture time of sample_data ``sd``."""
    return _pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose")


def _static_calibration(nusc, records: list[dict[str, Any]], channel: str, scene_name: str) -> np.ndarray:
    """``T_ego_from_sensor`` of ``channel``; raises when it changes within the scene."""
    calibs = {sd["calibrated_sensor_token"] for sd in records}
    mats = [_pose_matrix(nusc.get("calibrated_sensor", tok), "calibrated_sensor") for tok in sorted(calibs)]
    if any(not np.array_equal(m, mats[0]) for m in mats[1:]):
        raise IngestError(f"scene {scene_name}: {channel} calibration changes within the scene ({len(mats)} calibrated_sensor records)")
    return mats[0]


def _camera_rig(nusc, cam_records: list[list[dict[str, Any]]], scene_name: str) -> CameraRig:
    """The rig from each camera's calibrated_sensor (extrinsics, K) and sample_data (image size)."""
    cams = []
    for c, ch in enumerate(CAMERA_NAMES):
        recs = [row[c] for row in cam_records]
        sizes = {(sd["width"], sd["height"]) for sd in recs}
        if len(sizes) != 1:
            raise IngestError(f"scene {scene_name}: {ch} images have several sizes {sorted(sizes)}; expected one per camera")
        (width, height), = sizes
        T_ego_from_camera = _static_calibration(nusc, recs, ch, scene_name)
        K = nusc.get("calibrated_sensor", recs[0]["calibrated_sensor_token"])["camera_intrinsic"]
        cams.append(Camera(ch, CameraIntrinsics.from_K(K, width, height), T_ego_from_camera))
    return CameraRig(tuple(cams)).validate()


def _objects(nusc, samples, ref_tokens: list[str]) -> ObjectTracks:
    """Tracks from the boxes the devkit gives for each frame's reference sample_data."""
    scene_anns = [nusc.get("sample_annotation", a) for s in samples for a in s["anns"]]
    in_scene = {a["instance_token"] for a in scene_anns}
    ids = tuple(inst["token"] for inst in nusc.instance if inst["token"] in in_scene)
    index = {tok: k for k, tok in enumerate(ids)}
    categories = tuple(nusc.get("category", nusc.get("instance", tok)["category_token"])["name"] for tok in ids)
    wlh = [[] for _ in ids]
    for a in scene_anns:
        wlh[index[a["instance_token"]]].append(a["size"])
    sizes = np.array([np.median(np.asarray(s, dtype=np.float64), axis=0)[[1, 0, 2]] for s in wlh]).reshape(-1, 3)
    T, K = len(ref_tokens), len(ids)
    poses = np.tile(np.eye(4), (T, K, 1, 1))
    valid = np.zeros((T, K), dtype=bool)
    for t, sd_token in enumerate(ref_tokens):
        for box in nusc.get_boxes(sd_token):
            k = index[nusc.get("sample_annotation", box.token)["instance_token"]]
            poses[t, k] = _checked_transform(box.orientation.elements, box.center, f"sample_annotation {box.token}")
            valid[t, k] = True
    return ObjectTracks(ids, categories, sizes, poses, valid)


def _scene_map(root: Path, location: str, ego_poses: np.ndarray, margin: float) -> SceneMap | None:
    """Drivable area and lane centrelines near the ego path from the map expansion, or None without one."""
    if not (root / "maps" / "expansion" / f"{location}.json").is_file():
        return None
    from nuscenes.map_expansion.map_api import NuScenesMap
    from shapely.geometry import LineString
    from shapely.ops import unary_union

    nmap = NuScenesMap(dataroot=str(root), map_name=location)
    xy = ego_poses[:, :2, 3]
    patch = (*(xy.min(axis=0) - margin), *(xy.max(axis=0) + margin))
    records = nmap.get_records_in_patch(patch, ["drivable_area", "lane", "lane_connector", "stop_line"],
                                        mode="intersect")
    polygons = [nmap.extract_polygon(p) for tok in records["drivable_area"]
                for p in nmap.get("drivable_area", tok)["polygon_tokens"]]
    if not polygons:
        return None
    drivable = polygons[0] if len(polygons) == 1 else unary_union(polygons)
    lane_ids, lanes = [], []
    for tok, poses in nmap.discretize_lanes(records["lane"] + records["lane_connector"], LANE_RESOLUTION).items():
        pts = np.asarray(poses, dtype=np.float64).reshape(-1, 3)[:, :2]
        if len(pts):
            pts = pts[np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0.0, axis=1)])]  # paths share endpoints
        if len(pts) >= 2:
            lane_ids.append(tok)
            lanes.append(LineString(pts))
    kept = set(lane_ids)
    successors = tuple(tuple(s for s in nmap.connectivity.get(tok, {}).get("outgoing", []) if s in kept) for tok in lane_ids)
    connectors = set(records["lane_connector"])
    lights = _signals(nmap, records["stop_line"], [(t, ln) for t, ln in zip(lane_ids, lanes) if t in connectors])
    return SceneMap(drivable, tuple(lane_ids), tuple(lanes), successors,
                    in_intersection=tuple(t in connectors for t in lane_ids), traffic_lights=lights)


def _signals(nmap, stop_line_tokens, connectors) -> tuple:
    """The map's signalised stop lines (``stop_line_type`` TRAFFIC_LIGHT) as traffic lights of state ``unknown``
    (nuScenes has no signal states): each controls the lane connectors that start within
    :data:`STOP_LINE_REACH` of it; a stop line that controls none is left out."""
    from shapely.geometry import Point

    from stag_sim.road_rules import TrafficLight

    lights = []
    for tok in stop_line_tokens:
        record = nmap.get("stop_line", tok)
        if record.get("stop_line_type") != "TRAFFIC_LIGHT":
            continue
        poly = nmap.extract_polygon(record["polygon_token"])
        starts = [(lid, np.asarray(line.coords)[:2]) for lid, line in connectors
                  if poly.distance(Point(line.coords[0])) <= STOP_LINE_REACH]
        if not starts:
            continue
        d = np.mean([p[1] - p[0] for _, p in starts], axis=0)
        d = d / max(float(np.linalg.norm(d)), 1e-9)  # the controlled traffic's direction
        right = np.array([d[1], -d[0]])
        corners = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:4]
        c = np.asarray(poly.centroid.coords[0])
        half = float(np.abs((corners - c) @ right).max())
        line = np.stack([c + right * half, c - right * half])
        lights.append(TrafficLight(tok, tuple(lid for lid, _ in starts), line, np.append(c + right * (half + 1.0), 3.0),
                                   np.zeros(1), ("unknown",)).validate())
    return tuple(lights)
