"""TRI DGP ingestion (the format of the DDAD dataset): one DGP scene JSON -> :class:`SceneLog` -> scene cache, with
plain JSON + numpy (no ``dgp`` package); the JSON files are read and checked in :mod:`stag_sim.ingest.dgp_json`,
converted in :mod:`stag_sim.ingest.dgp_convert`, and :func:`ingest_dgp` documents the conventions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from stag_sim.cache import write_scene_cache
from stag_sim.errors import IngestError
from stag_sim.ingest.dgp_convert import CATEGORY_MAP, _build, dgp_category
from stag_sim.ingest.dgp_json import (BOX3D_ANNOTATION, QUAT_NORM_TOLERANCE, SKEW_TOLERANCE, TICKS_PER_US, _plan,
                                      find_scene_json)
from stag_sim.scene_log import SceneLog

__all__ = [
    "BOX3D_ANNOTATION", "CATEGORY_MAP", "QUAT_NORM_TOLERANCE", "SKEW_TOLERANCE", "TICKS_PER_US", "check_out_dir",
    "dgp_category", "find_scene_json", "ingest_dgp", "ingest_dgp_to_cache",
]


def ingest_dgp(scene_json: str | os.PathLike, progress: bool = False, cameras: Iterable[str] | str | None = None,
               lidar: str | None = None) -> SceneLog:
    """Read one DGP scene into a validated :class:`SceneLog`.

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
    pinhole, with OpenCV radial-tangential distortion when ``k1, k2, p1, p2, k3`` are set (kept in
    :attr:`CameraIntrinsics.distortion`; images stay as logged, distorted): a nonzero ``skew`` (|skew| >= 1e-6 px),
    a ``fisheye`` / ``equirectangular`` flag, or any other distortion / camera-model parameter (rational k4..k6,
    thin prism s1..s4, tilt taux / tauy, alpha, beta, w, xi) is an :class:`IngestError`; ``fov`` is ignored.

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

    Args:
        scene_json: the scene JSON (``scene_<sha>.json``) or the scene folder holding it.
        progress: show a tqdm progress bar over the frames.
        cameras: camera names to keep (an iterable, or a comma-separated string); default all. The rig keeps
            the sorted-by-name order whatever the order given.
        lidar: name of the point-cloud datum giving the frame clock and the sweeps; default the sample's only
            point cloud, or the one named ``LIDAR``.

    Raises :class:`IngestError` (one line naming the file and the field) for a missing or malformed scene JSON,
    calibration or ontology, a missing image / point cloud / box file, a sensor without a calibration entry,
    unsupported intrinsics, or inconsistent samples.
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
