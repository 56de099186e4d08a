"""TRI DGP ingestion (the format of the DDAD dataset): one DGP scene JSON -> :class:`SceneLog` -> scene cache.

Plain JSON + numpy, no ``dgp`` package: a DGP scene is a folder holding ``scene_<sha>.json`` (``samples``, one per
frame, each with ``datum_keys`` and a ``calibration_key``; ``data``, the datums), ``calibration/<key>.json``,
``ontology/<key>.json``, ``rgb/<CAMERA>/<ticks>.jpg``, ``point_cloud/<LIDAR>/<ticks>.npz`` and
``bounding_box_3d/<LIDAR>/<ticks>.json`` (schema: ``dgp/proto/{scene,sample,geometry,annotations}.proto``;
proto3 JSON omits fields that hold their default, so an absent number reads as 0).

Frames and clocks:

* One frame per DGP sample. The frame clock is the LiDAR: the frame timestamp is the LiDAR datum's time and the
  frame ego pose ``T_world_from_ego = T_world_from_lidar @ inv(T_ego_from_lidar)`` (datum ``pose`` is
  sensor -> world, the log's local map frame, z up).
* Each camera keeps its own capture time and pose: ``camera_ego_poses[t, c] = T_world_from_camera @
  inv(T_ego_from_camera)`` from the image datum's own ``pose``.
* Time comes from the file names: ``<ticks>.jpg`` / ``<ticks>.npz`` count **100 ns** ticks since the Unix epoch,
  converted to int64 microseconds rounded to nearest (``(ticks + 5) // 10``). The datums' ISO ``timestamp``
  strings are not used: they read the same numbers as microseconds (dates in the year 2464).

Frames of reference: the calibration's ``extrinsics`` are sensor -> vehicle, and the DGP vehicle frame is used
as the ego frame unchanged. It already is x forward, y left, z up with its origin on the ground (checked on the
DDAD test scenes: CAMERA_01's optical axis points along +x, CAMERA_05 sits at +y looking ~52 deg left, every
camera's image y axis (down) is -z, near-range ground returns lie at z ~ 0 and the ego moves along its +x);
the LiDAR's extrinsic is the identity there, so ``T_ego_from_lidar`` is the identity. Cameras are OpenCV axes,
pinhole, no distortion: a nonzero ``skew`` (|skew| >= 1e-6 px) or any distortion / non-pinhole model parameter
is an :class:`IngestError`.

Rig: the cameras are the image datums of the samples, sorted by name (``CAMERA_01, CAMERA_05, ...``), 1 to 12,
any names, optionally restricted with ``cameras``. Images keep their original JPEG/PNG bytes.

LiDAR: the one point-cloud datum of each sample (or the one named ``LIDAR``, or ``lidar=``). ``.npz`` key
``data``, columns by the datum's ``point_format`` (default X, Y, Z, INTENSITY), points in the LiDAR frame;
non-finite rows are dropped. DGP intensity is 0..1 and is scaled to 0..255 (rounded when it is an 8-bit value
stored as a fraction, as in DDAD); a scene whose intensities already exceed 1 is kept as is.

Objects: the LiDAR datum's ``bounding_box_3d`` annotations (annotation type 1). ``box.pose`` is the box centre
in the LiDAR frame with x forward along ``length``, y left along ``width``, z up along ``height`` (DGP
``BoundingBox3D.corners``), so ``T_world_from_object = T_world_from_lidar @ box_pose``. Instance ids are the
DGP ``instance_id`` as strings, ordered by first appearance; categories are the ontology names mapped to
nuScenes-style names by :data:`CATEGORY_MAP` (others become ``movable_object.<name>``; an instance whose class
changes between frames takes its most frequent one); ``sizes`` are the per-instance median (length, width,
height). ``map`` and ``depth`` are None.

Every referenced file (calibration, ontology, images, point clouds, box files) is checked to exist before any
is read, and bad input raises one :class:`IngestError` line naming the file and the JSON field.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from stag_sim.cache import write_scene_cache
from stag_sim.camera import Camera, CameraIntrinsics, CameraRig
from stag_sim.errors import IngestError, StagSimError, ValidationError
from stag_sim.geometry import invert_transform, make_transform
from stag_sim.scene_log import FrameStore, LidarSweeps, ObjectTracks, SceneLog

#: DGP ``AnnotationType`` of 3D boxes (``dgp/proto/annotations.proto``), the key in datum ``annotations`` and
#: in the scene's ``ontologies``.
BOX3D_ANNOTATION = "1"
TICKS_PER_US = 10  # [1/us] DGP file names count 100 ns ticks
#: [-] allowed |norm - 1| of a stored quaternion; DGP stores them normalised to ~1e-15.
QUAT_NORM_TOLERANCE = 1e-4
SKEW_TOLERANCE = 1e-6  # [px] |skew| below this counts as zero
#: DGP intrinsics fields that must be 0 for a distortion-free pinhole camera.
_NON_PINHOLE_FIELDS = ("fisheye", "equirectangular", "k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2",
                       "s1", "s2", "s3", "s4", "taux", "tauy")
_CODECS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
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


def find_scene_json(path: str | os.PathLike) -> Path:
    """The scene JSON at ``path``: the file itself, or the one ``scene*.json`` in the folder ``path``."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise IngestError(f"{p}: no such DGP scene JSON or scene folder")
    found = sorted(q for q in p.glob("scene*.json") if q.is_file() and not q.name.startswith("scene_dataset"))
    if len(found) == 1:
        return found[0]
    if not found:
        sub = sorted(q.parent.name for q in p.glob("*/scene*.json") if not q.name.startswith("scene_dataset"))
        hint = f"; pass one scene folder: {', '.join(sub)}" if sub else ""
        raise IngestError(f"{p}: no DGP scene JSON (scene*.json) in this folder{hint}")
    raise IngestError(f"{p}: several scene JSONs ({', '.join(q.name for q in found)}); pass the one to ingest")


def ingest_dgp(scene_json: str | os.PathLike, progress: bool = False, cameras: Iterable[str] | str | None = None,
               lidar: str | None = None) -> SceneLog:
    """Read one DGP scene into a validated :class:`SceneLog` (see the module docstring for the conventions).

    Args:
        scene_json: the scene JSON (``scene_<sha>.json``) or the scene folder holding it.
        progress: show a tqdm progress bar over the frames.
        cameras: camera names to keep (an iterable, or a comma-separated string); default all. The rig keeps
            the sorted-by-name order whatever the order given.
        lidar: name of the point-cloud datum giving the frame clock and the sweeps; default the sample's only
            point cloud, or the one named ``LIDAR``.

    Raises :class:`IngestError` (one line naming the file and the field) for a missing or malformed scene JSON,
    calibration or ontology, a missing image / point cloud / box file, a sensor without a calibration entry,
    non-pinhole intrinsics, or inconsistent samples.
    """
    plan = _plan(find_scene_json(scene_json), cameras, lidar)
    return _build(plan, progress)


def ingest_dgp_to_cache(scene_json: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
                        progress: bool = False, **kw: Any) -> Path:
    """:func:`ingest_dgp` then :func:`~stag_sim.cache.write_scene_cache` (atomic) at ``out_dir``; returns its path.

    ``out_dir`` is checked first, so an existing one (without ``overwrite``) fails before any work; on any
    error nothing is written. ``kw`` are passed to :func:`ingest_dgp` (``cameras``, ``lidar``).
    """
    check_out_dir(out_dir, overwrite)
    return write_scene_cache(ingest_dgp(scene_json, progress=progress, **kw), out_dir, overwrite=overwrite)


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Fail early (before ingesting) when ``out_dir`` exists and ``overwrite`` is not set."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise IngestError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")


# --- planning: read the small JSON files, check every referenced file exists --------------------------------------


@dataclass
class _Sensor:
    """One sensor datum of one sample."""

    name: str
    file: Path
    timestamp_us: int
    T_world_from_sensor: np.ndarray
    where: str  # JSON path of the datum, for messages
    width: int = 0
    height: int = 0
    point_format: tuple[str, ...] = ()
    boxes: Path | None = None


@dataclass
class _Plan:
    scene_json: Path
    root: Path
    name: str
    scene: dict[str, Any]
    lidar_name: str
    camera_names: tuple[str, ...]
    T_ego_from_lidar: np.ndarray
    intrinsics: dict[str, dict[str, Any]]
    T_ego_from_cameras: dict[str, np.ndarray]
    frames: list[tuple[_Sensor, list[_Sensor]]] = field(default_factory=list)  # (lidar, cameras) per frame
    class_names: dict[int, str] = field(default_factory=dict)
    ontology_file: Path | None = None


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise IngestError(f"{path}: {what} is missing")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise IngestError(f"{path}: {what} is unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise IngestError(f"{path}: {what} is malformed JSON ({e})") from None


def _get(obj: Any, key: str | int, path: Path, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """``obj[key]``, or an :class:`IngestError` naming ``path`` and the field ``where`` when absent / mistyped."""
    try:
        value = obj[key]
    except (KeyError, IndexError, TypeError):
        raise IngestError(f"{path}: field {where} is missing") from None
    if kind is not None and not isinstance(value, kind):
        raise IngestError(f"{path}: field {where} has the wrong type ({type(value).__name__}: {str(value)[:60]!r})")
    return value


def _number(obj: dict[str, Any], key: str, path: Path, where: str) -> float:
    """A proto3 number field: absent means 0; must be finite."""
    v = obj.get(key, 0) if isinstance(obj, dict) else None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise IngestError(f"{path}: field {where}.{key} is not a number ({v!r})") from None
    if not np.isfinite(x):
        raise IngestError(f"{path}: field {where}.{key} is not finite ({v!r})")
    return x


def _pose(p: Any, path: Path, where: str) -> np.ndarray:
    """4x4 transform from a DGP ``Pose`` (``rotation`` qw, qx, qy, qz; ``translation`` x, y, z [m])."""
    if not isinstance(p, dict):
        raise IngestError(f"{path}: field {where} is missing or not a pose object")
    rot = p.get("rotation", {})
    tr = p.get("translation", {})
    q = np.array([_number(rot, k, path, f"{where}.rotation") for k in ("qw", "qx", "qy", "qz")])
    t = np.array([_number(tr, k, path, f"{where}.translation") for k in ("x", "y", "z")])
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise IngestError(f"{path}: field {where}.rotation {q.tolist()} is not a unit quaternion (norm {norm:.6g})")
    return make_transform(q / norm, t)


def _timestamp_us(file: Path, path: Path, where: str) -> int:
    """int64 [us] from a DGP file name ``<100 ns ticks>.<ext>``."""
    stem = file.stem
    if not re.fullmatch(r"[0-9]+", stem):
        raise IngestError(f"{path}: field {where} = {file.name!r}: expected a file name of 100 ns timestamp ticks "
                          f"(e.g. 15616458250027900.jpg)")
    return (int(stem) + TICKS_PER_US // 2) // TICKS_PER_US


def _existing(root: Path, rel: Any, path: Path, where: str, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise IngestError(f"{path}: field {where} is missing (the {what} file name)")
    f = root / rel
    if not f.is_file():
        raise IngestError(f"{path}: {what} file {f} is missing (field {where} = {rel!r})")
    return f


def _plan(scene_json: Path, cameras, lidar: str | None) -> _Plan:
    scene = _read_json(scene_json, "DGP scene JSON")
    if not isinstance(scene, dict):
        raise IngestError(f"{scene_json}: not a DGP scene (expected a JSON object with samples and data)")
    root = scene_json.parent
    samples = _get(scene, "samples", scene_json, "samples", list)
    data = _get(scene, "data", scene_json, "data", list)
    if not samples:
        raise IngestError(f"{scene_json}: field samples is empty (a scene needs at least one sample)")
    by_key: dict[str, int] = {}
    for i, d in enumerate(data):
        by_key[str(_get(d, "key", scene_json, f"data[{i}].key"))] = i

    # Sensor datums of each sample: name -> (kind, index into data).
    sample_sensors: list[dict[str, tuple[str, int]]] = []
    for s, sample in enumerate(samples):
        keys = _get(sample, "datum_keys", scene_json, f"samples[{s}].datum_keys", list)
        sensors: dict[str, tuple[str, int]] = {}
        for j, key in enumerate(keys):
            if key not in by_key:
                raise IngestError(f"{scene_json}: field samples[{s}].datum_keys[{j}] = {key!r} is not the key of "
                                  f"any datum in data")
            i = by_key[key]
            value = _get(data[i], "datum", scene_json, f"data[{i}].datum", dict)
            kind = next((k for k in ("image", "point_cloud") if k in value), None)
            if kind is None:
                continue  # radar, file datums ...: not used
            name = _get(data[i], "id", scene_json, f"data[{i}].id", dict).get("name")
            if not isinstance(name, str) or not name:
                raise IngestError(f"{scene_json}: field data[{i}].id.name is missing (the sensor name)")
            if name in sensors:
                raise IngestError(f"{scene_json}: samples[{s}] holds two datums of sensor {name!r} "
                                  f"(data[{sensors[name][1]}] and data[{i}])")
            sensors[name] = (kind, i)
        sample_sensors.append(sensors)

    first = sample_sensors[0]
    clouds = sorted(n for n, (k, _) in first.items() if k == "point_cloud")
    images = sorted(n for n, (k, _) in first.items() if k == "image")
    if lidar is None:
        if len(clouds) == 1:
            lidar = clouds[0]
        elif "LIDAR" in clouds:
            lidar = "LIDAR"
        elif not clouds:
            raise IngestError(f"{scene_json}: samples[0] has no point_cloud datum (a LiDAR sweep is needed for depth)")
        else:
            raise IngestError(f"{scene_json}: samples[0] has several point clouds ({', '.join(clouds)}); "
                              f"choose one with lidar= / --lidar")
    elif lidar not in clouds:
        raise IngestError(f"{scene_json}: no point_cloud datum named {lidar!r} in samples[0] "
                          f"(have {', '.join(clouds) or 'none'})")
    camera_names = _select_cameras(images, cameras, scene_json)
    for s, sensors in enumerate(sample_sensors):
        missing = [n for n in (lidar, *camera_names) if n not in sensors]
        if missing:
            raise IngestError(f"{scene_json}: samples[{s}] has no datum of {', '.join(missing)} (samples[0] has them)")

    # Calibration: one file per calibration_key; the selected sensors' calibration must not change in the scene.
    calib_keys = [str(_get(sample, "calibration_key", scene_json, f"samples[{s}].calibration_key", str))
                  for s, sample in enumerate(samples)]
    calibs = {key: _calibration(root / "calibration" / f"{key}.json", (lidar, *camera_names))
              for key in dict.fromkeys(calib_keys)}
    ref_key = calib_keys[0]
    T_ego_from, intrinsics, calib_index = calibs[ref_key]
    for key, (T_other, K_other, _) in calibs.items():
        changed = [n for n in (lidar, *camera_names)
                   if not np.array_equal(T_other[n], T_ego_from[n]) or K_other.get(n) != intrinsics.get(n)]
        if changed:
            raise IngestError(f"{scene_json}: calibration of {', '.join(changed)} changes within the scene "
                              f"(calibration/{ref_key}.json vs calibration/{key}.json)")
    cal_file = root / "calibration" / f"{ref_key}.json"
    for n in camera_names:
        _check_pinhole(intrinsics[n], cal_file, n, calib_index[n])

    name = str(scene.get("name") or "").strip() or root.resolve().name
    plan = _Plan(scene_json, root, name, scene, lidar, camera_names, T_ego_from[lidar], intrinsics,
                 {n: T_ego_from[n] for n in camera_names})
    for s, sensors in enumerate(sample_sensors):
        lidar_datum = _sensor(data, sensors[lidar][1], root, scene_json, lidar)
        plan.frames.append((lidar_datum, [_sensor(data, sensors[n][1], root, scene_json, n) for n in camera_names]))

    # Image sizes must be one per camera.
    for c, n in enumerate(camera_names):
        sizes = {(cams[c].width, cams[c].height) for _, cams in plan.frames}
        if len(sizes) != 1:
            raise IngestError(f"{scene_json}: {n} images have several sizes {sorted(sizes)}; expected one per camera")

    if any(lid.boxes is not None for lid, _ in plan.frames):
        onto_keys = scene.get("ontologies") or {}
        key = onto_keys.get(BOX3D_ANNOTATION) if isinstance(onto_keys, dict) else None
        if not isinstance(key, str) or not key:
            raise IngestError(f"{scene_json}: field ontologies.\"{BOX3D_ANNOTATION}\" (the 3D box ontology key) is missing "
                              f"but {lidar} has bounding_box_3d annotations")
        plan.ontology_file = root / "ontology" / f"{key}.json"
        plan.class_names = _ontology(plan.ontology_file)
    return plan


def _select_cameras(images: Sequence[str], cameras, scene_json: Path) -> tuple[str, ...]:
    if cameras is None:
        chosen = list(images)
    else:
        wanted = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else [str(c) for c in cameras]
        wanted = [c for c in wanted if c]
        if not wanted:
            raise IngestError(f"{scene_json}: the camera selection is empty (have {', '.join(images) or 'none'})")
        unknown = [c for c in wanted if c not in images]
        if unknown:
            raise IngestError(f"{scene_json}: no camera named {', '.join(map(repr, unknown))} in samples[0] "
                              f"(have {', '.join(images) or 'none'})")
        chosen = sorted(set(wanted))
    if not chosen:
        raise IngestError(f"{scene_json}: samples[0] has no image datum (a scene needs at least one camera)")
    return tuple(chosen)


def _calibration(path: Path, names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any] | None],
                                                             dict[str, int]]:
    """``T_vehicle_from_sensor``, raw intrinsics and list index of each of ``names`` in a DGP calibration file."""
    cal = _read_json(path, "DGP calibration")
    cal_names = _get(cal, "names", path, "names", list)
    extrinsics = _get(cal, "extrinsics", path, "extrinsics", list)
    intrinsics = cal.get("intrinsics", []) if isinstance(cal, dict) else []
    T, K, index = {}, {}, {}
    for n in names:
        if n not in cal_names:
            raise IngestError(f"{path}: field names has no entry for sensor {n!r} (have {', '.join(map(str, cal_names))})")
        i = index[n] = cal_names.index(n)
        T[n] = _pose(_get(extrinsics, i, path, f"extrinsics[{i}] (sensor {n})"), path, f"extrinsics[{i}] (sensor {n})")
        ok = isinstance(intrinsics, list) and i < len(intrinsics) and isinstance(intrinsics[i], dict)
        K[n] = intrinsics[i] if ok else None
    return T, K, index


def _check_pinhole(K: dict[str, Any] | None, path: Path, name: str, i: int) -> None:
    """Pinhole camera, no skew, no distortion; raises naming the calibration file and field."""
    i_where = f"intrinsics[{i}]"
    if K is None:
        raise IngestError(f"{path}: field {i_where} (sensor {name}) is missing")
    for f in ("fx", "fy", "cx", "cy"):
        v = _number(K, f, path, i_where)
        if f in ("fx", "fy") and v <= 0:
            raise IngestError(f"{path}: field {i_where}.{f} (sensor {name}) must be > 0 px, got {K.get(f, 0)!r}")
    skew = _number(K, "skew", path, i_where)
    if abs(skew) >= SKEW_TOLERANCE:
        raise IngestError(f"{path}: field {i_where}.skew = {skew!r} (sensor {name}): skewed pixels are not supported "
                          f"(pinhole cameras only)")
    bad = [f"{f}={K[f]!r}" for f in _NON_PINHOLE_FIELDS if f in K and _number(K, f, path, i_where) != 0.0]
    if bad:
        raise IngestError(f"{path}: field {i_where} (sensor {name}) has {', '.join(bad)}: only undistorted pinhole "
                          f"cameras are supported")


def _sensor(data: list, i: int, root: Path, scene_json: Path, name: str) -> _Sensor:
    d = data[i]["datum"]
    kind = "image" if "image" in d else "point_cloud"
    v = _get(d, kind, scene_json, f"data[{i}].datum.{kind}", dict)
    where = f"data[{i}].datum.{kind}"
    what = "image" if kind == "image" else "point cloud"
    f = _existing(root, v.get("filename"), scene_json, f"{where}.filename", f"{name} {what}")
    s = _Sensor(name, f, _timestamp_us(f, scene_json, f"{where}.filename"),
                _pose(v.get("pose"), scene_json, f"{where}.pose"), where)
    if kind == "image":
        if f.suffix.lower() not in _CODECS:
            raise IngestError(f"{scene_json}: field {where}.filename = {v['filename']!r}: expected a .jpg or .png image")
        for k in ("width", "height"):
            n = v.get(k)
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise IngestError(f"{scene_json}: field {where}.{k} must be a positive int [px], got {n!r}")
            setattr(s, k, n)
    else:
        fmt = v.get("point_format") or ()
        if not isinstance(fmt, list):
            raise IngestError(f"{scene_json}: field {where}.point_format must be a list of column names, got {fmt!r}")
        s.point_format = tuple(str(x) for x in fmt)
        ann = v.get("annotations") or {}
        rel = ann.get(BOX3D_ANNOTATION) if isinstance(ann, dict) else None
        if rel is not None:
            s.boxes = _existing(root, rel, scene_json, f"{where}.annotations.\"{BOX3D_ANNOTATION}\"",
                                f"{name} bounding_box_3d")
    return s


def _ontology(path: Path) -> dict[int, str]:
    """class id -> name from a DGP ontology (``items`` list, or the older ``id_to_name`` map)."""
    onto = _read_json(path, "DGP ontology")
    out: dict[int, str] = {}
    if isinstance(onto, dict) and isinstance(onto.get("items"), list):
        for j, item in enumerate(onto["items"]):
            name = _get(item, "name", path, f"items[{j}].name", str)
            try:
                out[int(item.get("id", 0))] = name
            except (TypeError, ValueError):
                raise IngestError(f"{path}: field items[{j}].id is not an int ({item.get('id')!r})") from None
    elif isinstance(onto, dict) and isinstance(onto.get("id_to_name"), dict):
        for k, name in onto["id_to_name"].items():
            try:
                out[int(k)] = str(name)
            except ValueError:
                raise IngestError(f"{path}: field id_to_name has a non-int key {k!r}") from None
    else:
        raise IngestError(f"{path}: field items is missing (expected a DGP ontology with items of id and name)")
    return out


# --- building: read images, point clouds and boxes ----------------------------------------------------------------


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
        intr = CameraIntrinsics(fx, fy, cx, cy, w, h)
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
    except StagSimError:
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
