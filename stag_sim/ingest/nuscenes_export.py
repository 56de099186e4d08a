"""Write a :class:`~stag_sim.scene_log.SceneLog` as a small, valid nuScenes-format dataset (no devkit needed).

The output is what ``nuscenes.nuscenes.NuScenes`` and ``nuscenes.map_expansion.map_api.NuScenesMap`` load::

    <dataroot>/
      <version>/*.json                 the 13 relational tables (scene, sample, sample_data, ego_pose, ...)
      samples/CAM_*/<log>__<CAM>__<timestamp_us>.jpg   the log's encoded images, byte for byte
      samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp_us>.pcd.bin   float32 (x, y, z, intensity, ring_index)
      maps/<map token>.png             placeholder for the legacy raster map (see below)
      maps/expansion/<location>.json   vector map expansion, when the log has a map

Every log frame becomes one keyframe sample holding all six cameras and LIDAR_TOP; there are no sweeps.

Conventions (the same as nuScenes): SI units, quaternions (w, x, y, z), timestamps [us], box ``size`` is
(width, length, height) while :class:`~stag_sim.scene_log.ObjectTracks` stores (length, width, height),
``camera_intrinsic`` is the 3x3 K, camera frames are OpenCV (x right, y down, z forward).

What is written, and what is not:

* The sample timestamp is the frame timestamp; the LIDAR_TOP sample_data carries the LiDAR sweep's own
  timestamp and ego pose, each camera sample_data its own capture timestamp and ego pose. nuScenes has no
  separate per-frame ego pose: readers take the LIDAR_TOP pose, which equals ``log.ego_poses`` whenever the
  sweeps are captured at the frame times (true for every stag_sim source).
* Instance tokens are the log's instance ids and lane tokens its lane ids, verbatim, so ids survive a round
  trip; all other tokens are deterministic (md5 of scene name, table and key), so an export is reproducible.
* Annotations: ``num_lidar_pts`` is counted from the frame's sweep, ``num_radar_pts`` is 0, attributes are
  empty and visibility is "4" (80-100 %): synthetic logs carry no occlusion information.
* LiDAR ``ring_index`` is unknown and written as 0 (readers of the 5-column format ignore it).
* ``maps/<token>.png`` is a 1x1 background mask: the devkit requires the legacy raster semantic prior to
  exist but loads it lazily; the vector map expansion replaces it.
* The map expansion (format version 1.3) holds the layers NuScenesMap loads, most of them empty: one
  ``drivable_area`` record (one polygon per part), one ``lane`` (or ``lane_connector`` for a lane inside an
  intersection) per centreline with a polygon (the centreline buffered by :data:`LANE_WIDTH` / 2), an
  ``arcline_path_3`` entry per lane (one straight arcline path per polyline segment, so the devkit's
  ``discretize_lanes`` reproduces the centreline), ``connectivity`` from the lane successors, and a
  ``TRAFFIC_LIGHT`` ``stop_line`` per traffic light (its stop line grown by 0.5 m; nuScenes has no signal
  states, so the schedules are lost). Lane dividers, road segments/blocks, crossings, walkways, car parks and
  traffic lights are empty layers.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stag_sim.camera import CAMERA_NAMES
from stag_sim.errors import SceneError, ValidationError
from stag_sim.fsutil import atomic_directory
from stag_sim.geometry import invert_transform, matrix_to_quat, transform_points
from stag_sim.scene_log import SceneLog, SceneMap

#: Map locations the devkit's NuScenesMap accepts (it asserts on anything else).
NUSCENES_LOCATIONS = ("singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown", "boston-seaport")
#: Location used when neither ``map_name`` nor ``log.metadata["location"]`` names one: Boston drives on the
#: right, like the synthetic town.
DEFAULT_LOCATION = "boston-seaport"
LIDAR_CHANNEL = "LIDAR_TOP"
LANE_WIDTH = 3.5  # [m] width of the lane polygons written around each centreline
STRAIGHT_ARC_RADIUS = 999.999  # [m] radius of the (zero-length) turning parts of a straight arcline path
MAP_EXPANSION_VERSION = "1.3"
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
_VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
               ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
               ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
               ("4", "v80-100", "visibility of whole object is between 80 and 100%"))
_IMAGE_FORMAT = {"jpeg": "jpg", "png": "png"}  # FrameStore codec -> nuScenes fileformat / file extension


def export_nuscenes(log: SceneLog, dataroot: str | os.PathLike, version: str = "v1.0-mini",
                    map_name: str | None = None, overwrite: bool = False) -> Path:
    """Write ``log`` as a one-scene nuScenes dataset at ``dataroot``; returns ``dataroot``.

    Args:
        log: the scene; it must have LiDAR sweeps (nuScenes keyframes are anchored on LIDAR_TOP).
        dataroot: output folder; must not exist or be empty, unless ``overwrite`` and it holds a nuScenes
            export of the same ``version`` (then it is replaced).
        version: table folder name, e.g. ``v1.0-mini``.
        map_name: nuScenes location (one of :data:`NUSCENES_LOCATIONS`) written to the log table and used as
            the map expansion file name. Default: ``log.metadata["location"]`` when it is one, else
            :data:`DEFAULT_LOCATION`.
        overwrite: replace an earlier export at ``dataroot``.

    The write is atomic: everything goes to a temporary folder beside ``dataroot`` that is renamed into place.
    Raises :class:`ValidationError` for a log without LiDAR, with a distorted camera, or an unknown ``map_name``,
    :class:`SceneError` when ``dataroot`` is occupied.
    """
    log.validate()
    log.require_images("export_nuscenes")
    if log.lidar is None:
        raise ValidationError(f"export_nuscenes: scene {log.name!r} has no LiDAR sweeps; nuScenes keyframes need LIDAR_TOP")
    distorted = [c.name for c in log.rig if c.intrinsics.distorted]
    if distorted:
        raise ValidationError(f"export_nuscenes: camera(s) {', '.join(distorted)} of scene {log.name!r} have lens "
                              f"distortion; nuScenes keeps only K (undistort the images first: stag_sim.camera.undistort_image)")
    location = map_name or (log.metadata.get("location") if log.metadata.get("location") in NUSCENES_LOCATIONS
                            else DEFAULT_LOCATION)
    if location not in NUSCENES_LOCATIONS:
        raise ValidationError(f"export_nuscenes: map_name {location!r} is not a nuScenes location "
                              f"({', '.join(NUSCENES_LOCATIONS)}); the devkit's NuScenesMap accepts no other")
    if not version or Path(version).name != version:
        raise ValidationError(f"export_nuscenes: version {version!r} must be a plain folder name such as v1.0-mini")
    dataroot = Path(dataroot)
    _check_target(dataroot, version, overwrite)
    with atomic_directory(dataroot) as tmp:
        _write_dataset(log, tmp, version, location)
    return dataroot


def _check_target(dataroot: Path, version: str, overwrite: bool) -> None:
    if not dataroot.exists() or (dataroot.is_dir() and not any(dataroot.iterdir())):
        return
    if not overwrite:
        raise SceneError(f"{dataroot}: already exists and is not empty (pass overwrite=True to replace an earlier export)")
    if not (dataroot / version / "scene.json").is_file():
        raise SceneError(f"{dataroot}: is not a nuScenes {version} export; refusing to replace it")


def _write_dataset(log: SceneLog, root: Path, version: str, location: str) -> None:
    """Write all files of the export under ``root`` (a fresh, empty folder)."""
    lidar = log.lidar
    T, C = log.images.shape
    logfile = _safe_name(log.name)

    def token(table: str, *key: Any) -> str:
        return hashlib.md5("/".join(map(str, (log.name, table) + key)).encode()).hexdigest()

    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    log_token, scene_token, map_token = token("log"), token("scene"), token("map")

    # Sensors and their (static) calibration.
    channels = list(CAMERA_NAMES) + [LIDAR_CHANNEL]
    calib_token = {ch: token("calibrated_sensor", ch) for ch in channels}
    for ch in channels:
        is_cam = ch != LIDAR_CHANNEL
        T_ego_from_sensor = log.rig[ch].T_ego_from_camera if is_cam else lidar.T_ego_from_lidar
        tables["sensor"].append({"token": token("sensor", ch), "channel": ch, "modality": "camera" if is_cam else "lidar"})
        tables["calibrated_sensor"].append({
            "token": calib_token[ch], "sensor_token": token("sensor", ch), **_pose_fields(T_ego_from_sensor),
            "camera_intrinsic": log.rig[ch].intrinsics.K.tolist() if is_cam else [],
        })

    # Samples (one per frame) and their sample_data, one chain per channel.
    sample_tokens = [token("sample", t) for t in range(T)]
    for t in range(T):
        tables["sample"].append({
            "token": sample_tokens[t], "timestamp": int(log.timestamps_us[t]), "scene_token": scene_token,
            "prev": sample_tokens[t - 1] if t > 0 else "", "next": sample_tokens[t + 1] if t < T - 1 else "",
        })
    fmt = _IMAGE_FORMAT[log.images.codec]
    for c, ch in enumerate(CAMERA_NAMES):
        intr = log.rig[ch].intrinsics
        (root / "samples" / ch).mkdir(parents=True)
        for t in range(T):
            ts = int(log.camera_timestamps_us[t, c])
            filename = f"samples/{ch}/{logfile}__{ch}__{ts}.{fmt}"
            (root / filename).write_bytes(log.images.encoded(t, c))
            _add_sample_data(tables, token, ch, t, T, sample_tokens[t], calib_token[ch], ts,
                             log.camera_ego_poses[t, c], filename, fmt, intr.width, intr.height)
    (root / "samples" / LIDAR_CHANNEL).mkdir(parents=True)
    for t in range(T):
        ts = int(lidar.timestamps_us[t])
        filename = f"samples/{LIDAR_CHANNEL}/{logfile}__{LIDAR_CHANNEL}__{ts}.pcd.bin"
        pts = lidar.sweep(t)
        cols = np.zeros((pts.shape[0], 5), dtype=np.float32)  # x, y, z, intensity, ring_index (unknown: 0)
        cols[:, :4] = pts
        cols.tofile(root / filename)
        _add_sample_data(tables, token, LIDAR_CHANNEL, t, T, sample_tokens[t], calib_token[LIDAR_CHANNEL], ts,
                         lidar.ego_poses[t], filename, "pcd", 0, 0)

    _add_annotations(log, tables, token, sample_tokens)

    first_date = datetime.fromtimestamp(int(log.timestamps_us[0]) * 1e-6, tz=timezone.utc)
    tables["log"].append({"token": log_token, "logfile": logfile, "vehicle": "stag-sim", "location": location,
                          "date_captured": first_date.strftime("%Y-%m-%d")})
    tables["scene"].append({
        "token": scene_token, "log_token": log_token, "nbr_samples": T, "first_sample_token": sample_tokens[0],
        "last_sample_token": sample_tokens[-1], "name": log.name,
        "description": f"exported by stag_sim from a {log.source} scene",
    })
    mask_file = f"maps/{map_token}.png"
    (root / "maps").mkdir()
    (root / mask_file).write_bytes(_empty_mask_png())
    tables["map"].append({"token": map_token, "log_tokens": [log_token], "category": "semantic_prior", "filename": mask_file})
    tables["visibility"] = [{"token": tok, "level": level, "description": desc} for tok, level, desc in _VISIBILITY]

    (root / version).mkdir()
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows, indent=1))
    if log.map is not None:
        (root / "maps" / "expansion").mkdir()
        (root / "maps" / "expansion" / f"{location}.json").write_text(json.dumps(map_expansion(log.map, location)))


def _add_sample_data(tables, token, channel: str, t: int, T: int, sample_token: str, calib_token: str,
                     timestamp_us: int, T_world_from_ego: np.ndarray, filename: str, fileformat: str,
                     width: int, height: int) -> None:
    """Append one sample_data record and its ego_pose (same token, as in nuScenes)."""
    sd_token = token("sample_data", channel, t)
    tables["ego_pose"].append({"token": sd_token, "timestamp": timestamp_us, **_pose_fields(T_world_from_ego)})
    tables["sample_data"].append({
        "token": sd_token, "sample_token": sample_token, "ego_pose_token": sd_token,
        "calibrated_sensor_token": calib_token, "timestamp": timestamp_us, "fileformat": fileformat,
        "is_key_frame": True, "height": int(height), "width": int(width), "filename": filename,
        "prev": token("sample_data", channel, t - 1) if t > 0 else "",
        "next": token("sample_data", channel, t + 1) if t < T - 1 else "",
    })


def _add_annotations(log: SceneLog, tables, token, sample_tokens: list[str]) -> None:
    """category, instance and sample_annotation records (prev/next linked per instance)."""
    objs, lidar = log.objects, log.lidar
    categories = sorted(set(objs.categories))
    for name in categories:
        tables["category"].append({"token": token("category", name), "name": name, "description": ""})
    # LiDAR points in the world frame, per frame, to count the points inside each box.
    world_pts = [transform_points(lidar.ego_poses[t] @ lidar.T_ego_from_lidar, lidar.sweep(t)[:, :3].astype(np.float64))
                 for t in range(len(sample_tokens))]
    for k, inst in enumerate(objs.instance_ids):
        frames = np.flatnonzero(objs.valid[:, k])
        ann_tokens = [token("sample_annotation", inst, int(t)) for t in frames]
        length, width, height = (float(v) for v in objs.sizes[k])
        for i, t in enumerate(frames):
            T_world_from_obj = objs.poses[t, k]
            p = np.abs(transform_points(invert_transform(T_world_from_obj), world_pts[t]))
            inside = (p[:, 0] <= length / 2) & (p[:, 1] <= width / 2) & (p[:, 2] <= height / 2)
            tables["sample_annotation"].append({
                "token": ann_tokens[i], "sample_token": sample_tokens[t], "instance_token": inst,
                "visibility_token": "4", "attribute_tokens": [], **_pose_fields(T_world_from_obj),
                "size": [width, length, height], "prev": ann_tokens[i - 1] if i > 0 else "",
                "next": ann_tokens[i + 1] if i < len(frames) - 1 else "",
                "num_lidar_pts": int(np.count_nonzero(inside)), "num_radar_pts": 0,
            })
        tables["instance"].append({
            "token": inst, "category_token": token("category", objs.categories[k]), "nbr_annotations": len(frames),
            "first_annotation_token": ann_tokens[0] if ann_tokens else "",
            "last_annotation_token": ann_tokens[-1] if ann_tokens else "",
        })


def map_expansion(scene_map: SceneMap, location: str) -> dict[str, Any]:
    """The nuScenes map-expansion JSON (version 1.3) for ``scene_map``: see the module docstring for its layers."""
    from shapely.geometry import LineString, Polygon

    doc: dict[str, Any] = {"version": MAP_EXPANSION_VERSION}
    for layer in ("polygon", "line", "node", "drivable_area", "road_segment", "road_block", "lane", "ped_crossing",
                  "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
                  "lane_connector"):
        doc[layer] = []
    doc["arcline_path_3"], doc["connectivity"] = {}, {}

    def tok(*key: Any) -> str:
        return hashlib.md5("/".join(map(str, (location,) + key)).encode()).hexdigest()

    def add_polygon(poly, key: str) -> str:
        def ring_nodes(coords, ring: str) -> list[str]:
            tokens = []
            for i, (x, y) in enumerate(list(coords)[:-1]):  # shapely repeats the first vertex; nuScenes does not
                tokens.append(tok("node", key, ring, i))
                doc["node"].append({"token": tokens[-1], "x": float(x), "y": float(y)})
            return tokens

        doc["polygon"].append({
            "token": tok("polygon", key), "exterior_node_tokens": ring_nodes(poly.exterior.coords, "exterior"),
            "holes": [{"node_tokens": ring_nodes(h.coords, f"hole{j}")} for j, h in enumerate(poly.interiors)],
        })
        return doc["polygon"][-1]["token"]

    area = scene_map.drivable_area
    parts = [area] if isinstance(area, Polygon) else list(area.geoms)
    doc["drivable_area"].append({"token": tok("drivable_area"),
                                 "polygon_tokens": [add_polygon(p, f"drivable{i}") for i, p in enumerate(parts)]})
    successors = scene_map.successors or tuple(() for _ in scene_map.lane_ids)
    incoming: dict[str, list[str]] = {lid: [] for lid in scene_map.lane_ids}
    for lid, succ in zip(scene_map.lane_ids, successors):
        for s in succ:
            incoming[s].append(lid)
    inter = scene_map.in_intersection or tuple(False for _ in scene_map.lane_ids)
    for lid, lane, succ, connector in zip(scene_map.lane_ids, scene_map.lanes, successors, inter):
        poly_token = add_polygon(lane.buffer(LANE_WIDTH / 2, cap_style="flat"), f"lane-{lid}")
        if connector:
            doc["lane_connector"].append({"token": lid, "polygon_token": poly_token})
        else:
            doc["lane"].append({"token": lid, "polygon_token": poly_token, "lane_type": "CAR",
                                "left_lane_divider_segments": [], "right_lane_divider_segments": []})
        doc["arcline_path_3"][lid] = _straight_arcline_paths(np.asarray(lane.coords, dtype=np.float64)[:, :2])
        doc["connectivity"][lid] = {"incoming": incoming[lid], "outgoing": list(succ)}
    for light in scene_map.traffic_lights:  # signalised stop lines (nuScenes has no signal states)
        a, b = np.asarray(light.stop_line, np.float64)
        line = LineString([a, b]).buffer(0.5, cap_style="flat")
        doc["stop_line"].append({"token": light.light_id, "polygon_token": add_polygon(line, f"stop-{light.light_id}"),
                                 "stop_line_type": "TRAFFIC_LIGHT", "ped_crossing_tokens": [],
                                 "traffic_light_tokens": [], "road_block_token": ""})
    x_max, y_max = area.bounds[2], area.bounds[3]
    doc["canvas_edge"] = [max(float(x_max), 1.0), max(float(y_max), 1.0)]  # [m] map extent from the origin
    return doc


def _straight_arcline_paths(xy: np.ndarray) -> list[dict[str, Any]]:
    """One straight arcline path ("LSL" with zero-length turns) per non-degenerate polyline segment."""
    paths = []
    for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
        length = float(np.hypot(x1 - x0, y1 - y0))
        if length == 0.0:
            continue
        yaw = float(np.arctan2(y1 - y0, x1 - x0))
        paths.append({"start_pose": [float(x0), float(y0), yaw], "end_pose": [float(x1), float(y1), yaw],
                      "shape": "LSL", "radius": STRAIGHT_ARC_RADIUS, "segment_length": [0.0, length, 0.0]})
    return paths


def _empty_mask_png() -> bytes:
    """A 1x1 8-bit grayscale PNG holding 0 (background): the placeholder legacy map mask."""
    import cv2  # core dependency, imported lazily as everywhere in stag_sim

    ok, buf = cv2.imencode(".png", np.zeros((1, 1), dtype=np.uint8))
    if not ok:
        raise SceneError("export_nuscenes: could not encode the placeholder map mask PNG")
    return buf.tobytes()


def _pose_fields(T: np.ndarray) -> dict[str, list[float]]:
    """nuScenes ``translation`` [m] and ``rotation`` (w, x, y, z) of a 4x4 transform."""
    return {"translation": [float(v) for v in T[:3, 3]], "rotation": [float(v) for v in matrix_to_quat(T[:3, :3])]}


def _safe_name(name: str) -> str:
    """``name`` with anything but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_`` (file-name safe)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
