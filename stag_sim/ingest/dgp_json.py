"""Reading and validating a TRI DGP scene's JSON files (the scene's ``samples`` and ``data``, the calibration, the
ontology) into a :class:`_Plan`: the chosen LiDAR and cameras, their calibration, and one (LiDAR, cameras) datum set
per sample; every referenced file is checked to exist before any is read, and bad input raises one
:class:`~stag_sim.errors.IngestError` line naming the file and the JSON field."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stag_sim.errors import IngestError
from stag_sim.geometry import make_transform

#: DGP ``AnnotationType`` of 3D boxes (``dgp/proto/annotations.proto``), the key in datum ``annotations`` and
#: in the scene's ``ontologies``.
BOX3D_ANNOTATION = "1"
TICKS_PER_US = 10  # [1/us] DGP file names count 100 ns ticks
#: [-] allowed |norm - 1| of a stored quaternion; DGP stores them normalised to ~1e-15.
QUAT_NORM_TOLERANCE = 1e-4
SKEW_TOLERANCE = 1e-6  # [px] |skew| below this counts as zero
#: DGP intrinsics fields read as OpenCV radial-tangential distortion, in :class:`CameraIntrinsics` order.
RADTAN_FIELDS = ("k1", "k2", "p1", "p2", "k3")
#: DGP intrinsics fields (``dgp/proto/geometry.proto``) that must be 0: camera models and distortion terms not
#: supported (``fisheye`` / ``equirectangular`` model flags, rational k4..k6, thin prism, tilted sensor, UCM / EUCM,
#: FOV and double-sphere parameters). ``fov`` is informational and ignored.
_UNSUPPORTED_FIELDS = ("fisheye", "equirectangular", "k4", "k5", "k6", "s1", "s2", "s3", "s4", "taux", "tauy",
                       "alpha", "beta", "w", "xi")
_CODECS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


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
        _check_camera_model(intrinsics[n], cal_file, n, calib_index[n])

    name = str(scene.get("name") or "").strip() or root.resolve().name
    plan = _Plan(scene_json, root, name, scene, lidar, camera_names, T_ego_from[lidar], intrinsics,
                 {n: T_ego_from[n] for n in camera_names})
    for sensors in sample_sensors:
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


def _check_camera_model(K: dict[str, Any] | None, path: Path, name: str, i: int) -> None:
    """Pinhole camera, no skew, at most OpenCV radial-tangential distortion (``RADTAN_FIELDS``); raises naming the
    calibration file and field."""
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
    for f in RADTAN_FIELDS:
        _number(K, f, path, i_where)
    bad = [f"{f}={K[f]!r}" for f in _UNSUPPORTED_FIELDS if f in K and _number(K, f, path, i_where) != 0.0]
    if bad:
        raise IngestError(f"{path}: field {i_where} (sensor {name}) has {', '.join(bad)}: only pinhole cameras with "
                          f"OpenCV radial-tangential distortion (k1, k2, p1, p2, k3) are supported")


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
