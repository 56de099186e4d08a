"""SceneLog: the in-memory model of one logged drive.

A SceneLog is what every ingestion path (synthetic town, nuScenes, CARLA recordings) produces and what the
scene cache stores. Large per-frame data (images, depth maps, LiDAR) is held in lazy containers that keep the
*encoded* bytes (JPEG/PNG) and decode on access, so a scene loaded from a memory-mapped cache costs almost
nothing until a frame is actually read, and a cache round trip is byte-exact.

Frame index ``t`` runs over the log's frames (10 Hz for the synthetic town, the 2 Hz keyframes or 12 Hz sweeps
for nuScenes); camera index ``c`` runs over the cameras of the log's rig, in rig order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stag_sim.camera import CameraRig
from stag_sim.errors import SceneError, ValidationError
from stag_sim.geometry import check_finite, check_transform

#: Depth maps are stored as 16-bit PNG holding round(depth * DEPTH_SCALE); 0 means "no return".
DEPTH_SCALE = 256.0  # [1/m] -> 3.9 mm resolution, 255.99 m range (the KITTI depth convention)
MAX_STORED_DEPTH = 65535 / DEPTH_SCALE  # [m]

CODECS = ("jpeg", "png", "depth-png16")


def _cv2():
    import cv2  # core dependency (opencv-python-headless); imported lazily to keep `import stag_sim` light

    return cv2


def encode_frame(array: np.ndarray, codec: str, quality: int = 95) -> bytes:
    """Encode one frame. ``jpeg``/``png``: (H, W, 3) uint8 RGB. ``depth-png16``: (H, W) float depth [m]."""
    cv2 = _cv2()
    arr = np.asarray(array)
    if codec in ("jpeg", "png"):
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValidationError(f"{codec} frame: expected (H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}")
        bgr = np.ascontiguousarray(arr[:, :, ::-1])
        if codec == "jpeg":
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        else:
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    elif codec == "depth-png16":
        if arr.ndim != 2:
            raise ValidationError(f"depth frame: expected (H, W) depth [m], got shape {arr.shape}")
        d = np.where(np.isfinite(arr) & (arr > 0), arr, 0.0)
        q = np.clip(np.round(d * DEPTH_SCALE), 0, 65535).astype(np.uint16)
        ok, buf = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValidationError(f"unknown frame codec {codec!r}; expected one of {', '.join(CODECS)}")
    if not ok:
        raise ValidationError(f"could not encode a {arr.shape} frame as {codec}")
    return buf.tobytes()


def decode_frame(data, codec: str) -> np.ndarray:
    """Inverse of :func:`encode_frame`; raises :class:`SceneError` on undecodable bytes."""
    cv2 = _cv2()
    buf = np.frombuffer(data, dtype=np.uint8)
    if codec in ("jpeg", "png"):
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise SceneError(f"corrupt {codec} frame ({buf.size} bytes) could not be decoded")
        return np.ascontiguousarray(img[:, :, ::-1])
    if codec == "depth-png16":
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint16 or img.ndim != 2:
            raise SceneError(f"corrupt 16-bit depth PNG ({buf.size} bytes) could not be decoded")
        return img.astype(np.float32) / np.float32(DEPTH_SCALE)
    raise ValidationError(f"unknown frame codec {codec!r}; expected one of {', '.join(CODECS)}")


class FrameStore:
    """A (T, C) grid of encoded frames, decoded lazily.

    Stored as one contiguous byte blob plus an index ``(T, C, 2)`` int64 of (offset, length): one file per
    stream on disk, O(1) random access, memory-mappable, and the original encoded bytes (e.g. nuScenes JPEGs)
    survive untouched. An entry with length 0 is a missing frame.

    Attributes:
        blob: (B,) uint8, all encoded frames back to back (may be a read-only memmap).
        index: (T, C, 2) int64 (offset, length) into ``blob``.
        codec: one of :data:`CODECS`.
    """

    def __init__(self, blob, index, codec: str) -> None:
        if codec not in CODECS:
            raise ValidationError(f"FrameStore.codec: {codec!r} is not one of {', '.join(CODECS)}")
        self.blob = np.asarray(blob, dtype=np.uint8).reshape(-1) if not isinstance(blob, np.ndarray) else blob.reshape(-1)
        self.index = np.asarray(index, dtype=np.int64)
        self.codec = codec

    @classmethod
    def from_encoded(cls, frames: Sequence[Sequence[bytes]], codec: str) -> "FrameStore":
        """Build from nested lists ``frames[t][c]`` of encoded bytes (``b""`` = missing)."""
        T = len(frames)
        C = len(frames[0]) if T else 0
        index = np.zeros((T, C, 2), dtype=np.int64)
        parts, offset = [], 0
        for t, row in enumerate(frames):
            if len(row) != C:
                raise ValidationError(f"FrameStore: frame {t} has {len(row)} cameras, expected {C}")
            for c, data in enumerate(row):
                index[t, c] = (offset, len(data))
                parts.append(bytes(data))
                offset += len(data)
        blob = np.frombuffer(b"".join(parts), dtype=np.uint8) if parts else np.zeros(0, np.uint8)
        return cls(blob, index, codec)

    @classmethod
    def from_arrays(cls, frames, codec: str, quality: int = 95) -> "FrameStore":
        """Encode ``frames`` indexed ``frames[t][c]`` (arrays) with ``codec``."""
        return cls.from_encoded([[encode_frame(f, codec, quality) for f in row] for row in frames], codec)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.index.shape[0]), int(self.index.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def has(self, t: int, c: int) -> bool:
        return bool(self.index[t, c, 1] > 0)

    def encoded(self, t: int, c: int) -> bytes:
        off, n = (int(v) for v in self.index[t, c])
        return self.blob[off : off + n].tobytes()

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        t, c = key
        if not (-self.shape[0] <= t < self.shape[0] and -self.shape[1] <= c < self.shape[1]):
            raise IndexError(f"frame ({t}, {c}) out of range for a {self.shape} FrameStore")
        if not self.has(t, c):
            raise SceneError(f"frame ({t}, {c}) is missing from this {self.codec} store")
        return decode_frame(self.encoded(t, c), self.codec)

    def frame(self, t: int) -> list[np.ndarray]:
        """All cameras of frame ``t``, decoded."""
        return [self[t, c] for c in range(self.shape[1])]

    @property
    def nbytes(self) -> int:
        return int(self.blob.nbytes)

    def validate(self, name: str = "FrameStore") -> "FrameStore":
        if self.index.ndim != 3 or self.index.shape[2] != 2:
            raise ValidationError(f"{name}.index: expected (T, C, 2), got {self.index.shape}")
        off, n = self.index[..., 0], self.index[..., 1]
        if np.any(off < 0) or np.any(n < 0) or np.any(off + n > self.blob.size):
            raise ValidationError(f"{name}.index: entries point outside the {self.blob.size}-byte blob")
        return self

    def equals(self, other: "FrameStore") -> bool:
        if self.codec != other.codec or self.shape != other.shape:
            return False
        return all(self.encoded(t, c) == other.encoded(t, c) for t in range(self.shape[0]) for c in range(self.shape[1]))


@dataclass(frozen=True, eq=False)
class LidarSweeps:
    """LiDAR sweeps, one per frame, in the LiDAR sensor frame.

    Attributes:
        points: (N, 4) float32, (x, y, z [m], intensity [0..255]) of all sweeps back to back.
        offsets: (T + 1,) int64, sweep t is ``points[offsets[t]:offsets[t + 1]]``.
        timestamps_us: (T,) int64 capture time of each sweep [us].
        ego_poses: (T, 4, 4) float64 ``T_world_from_ego`` at each sweep's capture time.
        T_ego_from_lidar: (4, 4) float64 sensor extrinsics.
    """

    points: np.ndarray
    offsets: np.ndarray
    timestamps_us: np.ndarray
    ego_poses: np.ndarray
    T_ego_from_lidar: np.ndarray

    @classmethod
    def from_list(cls, sweeps: Sequence[np.ndarray], timestamps_us, ego_poses, T_ego_from_lidar) -> "LidarSweeps":
        sweeps = [np.asarray(s, dtype=np.float32).reshape(-1, 4) for s in sweeps]
        offsets = np.zeros(len(sweeps) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in sweeps])
        pts = np.concatenate(sweeps) if sweeps else np.zeros((0, 4), np.float32)
        return cls(pts, offsets, np.asarray(timestamps_us, dtype=np.int64), np.asarray(ego_poses, dtype=np.float64),
                   np.asarray(T_ego_from_lidar, dtype=np.float64))

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def sweep(self, t: int) -> np.ndarray:
        """(N_t, 4) float32 points of sweep ``t`` in the LiDAR frame."""
        return np.asarray(self.points[self.offsets[t] : self.offsets[t + 1]])

    def validate(self) -> "LidarSweeps":
        T = len(self)
        if self.points.ndim != 2 or self.points.shape[1] != 4:
            raise ValidationError(f"LidarSweeps.points: expected (N, 4), got {self.points.shape}")
        if self.offsets[0] != 0 or self.offsets[-1] != self.points.shape[0] or np.any(np.diff(self.offsets) < 0):
            raise ValidationError("LidarSweeps.offsets: must start at 0, be non-decreasing and end at len(points)")
        if self.timestamps_us.shape != (T,) or self.ego_poses.shape != (T, 4, 4):
            raise ValidationError(
                f"LidarSweeps: {T} sweeps but timestamps {self.timestamps_us.shape} and ego_poses {self.ego_poses.shape}"
            )
        check_transform(self.ego_poses, "LidarSweeps.ego_poses")
        check_transform(self.T_ego_from_lidar, "LidarSweeps.T_ego_from_lidar")
        return self


@dataclass(frozen=True, eq=False)
class ObjectTracks:
    """Tracked 3D boxes of the other road users, dense over (frame, instance).

    Attributes:
        instance_ids: (K,) str, stable across frames (nuScenes instance tokens).
        categories: (K,) str, nuScenes-style category names (``vehicle.car``, ``human.pedestrian.adult``...).
        sizes: (K, 3) float64 box (length along box x, width along y, height along z) [m].
        poses: (T, K, 4, 4) float64 ``T_world_from_object``: box centre, x forward, z up. Identity where not valid.
        valid: (T, K) bool, the instance is annotated in frame t.
    """

    instance_ids: tuple[str, ...]
    categories: tuple[str, ...]
    sizes: np.ndarray
    poses: np.ndarray
    valid: np.ndarray

    @classmethod
    def empty(cls, num_frames: int) -> "ObjectTracks":
        return cls((), (), np.zeros((0, 3)), np.zeros((num_frames, 0, 4, 4)), np.zeros((num_frames, 0), bool))

    def __len__(self) -> int:
        return len(self.instance_ids)

    def index_of(self, instance_id: str) -> int:
        try:
            return self.instance_ids.index(instance_id)
        except ValueError:
            raise ValidationError(f"no object with instance id {instance_id!r} in this scene ({len(self)} objects)") from None

    def validate(self, num_frames: int | None = None) -> "ObjectTracks":
        K = len(self.instance_ids)
        T = self.poses.shape[0] if num_frames is None else num_frames
        if len(self.categories) != K:
            raise ValidationError(f"ObjectTracks: {K} instance ids but {len(self.categories)} categories")
        if len(set(self.instance_ids)) != K:
            raise ValidationError("ObjectTracks.instance_ids: ids must be unique")
        if self.sizes.shape != (K, 3):
            raise ValidationError(f"ObjectTracks.sizes: expected ({K}, 3), got {self.sizes.shape}")
        if self.poses.shape != (T, K, 4, 4):
            raise ValidationError(f"ObjectTracks.poses: expected ({T}, {K}, 4, 4), got {self.poses.shape}")
        if self.valid.shape != (T, K) or self.valid.dtype != np.bool_:
            raise ValidationError(f"ObjectTracks.valid: expected ({T}, {K}) bool, got {self.valid.shape} {self.valid.dtype}")
        check_finite(self.sizes, "ObjectTracks.sizes")
        if np.any(self.sizes <= 0):
            raise ValidationError("ObjectTracks.sizes: every box dimension must be > 0 m")
        check_transform(self.poses[self.valid], "ObjectTracks.poses")
        return self


@dataclass(frozen=True, eq=False)
class SceneMap:
    """Vector map of the scene in world xy [m] (shapely geometry).

    Attributes:
        drivable_area: shapely Polygon or MultiPolygon.
        lane_ids: (L,) str.
        lanes: (L,) shapely LineString lane centrelines in driving direction.
        successors: (L,) tuples of lane ids that a lane connects to (may be empty).
        in_intersection: (L,) bool, the lane lies inside an intersection; empty: unknown.
        speed_limits: (L,) float [m/s], NaN where unknown; empty: none known.
        traffic_lights: the signals (:class:`~stag_sim.road_rules.TrafficLight`: stop line, controlled lanes,
            states over time).
        lights_complete: ``traffic_lights`` lists every signal of the scene (no lights then means no signals);
            False: the map may not list them (traffic-light compliance is not scored). See :mod:`stag_sim.road_rules`.
    """

    drivable_area: Any
    lane_ids: tuple[str, ...] = ()
    lanes: tuple[Any, ...] = ()
    successors: tuple[tuple[str, ...], ...] = ()
    in_intersection: tuple[bool, ...] = ()
    speed_limits: tuple[float, ...] = ()
    traffic_lights: tuple[Any, ...] = ()
    lights_complete: bool = False

    def validate(self) -> "SceneMap":
        from shapely.geometry import LineString, MultiPolygon, Polygon

        if not isinstance(self.drivable_area, (Polygon, MultiPolygon)):
            raise ValidationError(f"SceneMap.drivable_area: expected a shapely (Multi)Polygon, got {type(self.drivable_area).__name__}")
        if len(self.lanes) != len(self.lane_ids) or (self.successors and len(self.successors) != len(self.lanes)):
            raise ValidationError("SceneMap: lane_ids, lanes and successors must have the same length")
        for lid, lane in zip(self.lane_ids, self.lanes):
            if not isinstance(lane, LineString) or lane.is_empty:
                raise ValidationError(f"SceneMap: lane {lid!r} must be a non-empty shapely LineString")
        known = set(self.lane_ids)
        for lid, succ in zip(self.lane_ids, self.successors):
            unknown = [s for s in succ if s not in known]
            if unknown:
                raise ValidationError(f"SceneMap: lane {lid!r} has unknown successor(s) {unknown}")
        from stag_sim.road_rules import check_map_rules

        check_map_rules(self)
        return self

    def lane(self, lane_id: str):
        return self.lanes[self.lane_ids.index(lane_id)]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) [m] of the drivable area."""
        return tuple(float(v) for v in self.drivable_area.bounds)


@dataclass(frozen=True, eq=False)
class SceneLog:
    """One logged drive.

    Attributes:
        name: scene name (nuScenes scene name, or ``synth-town-s<seed>``).
        source: where it came from: ``synthetic``, ``nuscenes``, ...
        timestamps_us: (T,) int64 frame times [us], strictly increasing.
        ego_poses: (T, 4, 4) float64 ``T_world_from_ego`` at the frame times.
        rig: the camera rig (1 to 12 cameras, the dataset's names and order; static calibration).
        images: (T, C) :class:`FrameStore` of RGB images (``jpeg`` or ``png``), or None for a log without camera
            images: a *layout-only* log (ego poses, times, object tracks, map and the rig's calibration, which still
            gives image shapes; e.g. ``generate_scene(sensors=False)``) drives a camera-free env; whatever needs
            images (the 4D scene build, fidelity, the refiner, export) refuses it via :meth:`require_images`.
        camera_timestamps_us: (T, C) int64 capture time of each image [us].
        camera_ego_poses: (T, C, 4, 4) float64 ``T_world_from_ego`` at each image's capture time
            (cameras of one nuScenes frame fire at slightly different times).
        depth: (T, C) :class:`FrameStore` of dense z-depth maps [m] (``depth-png16``; 0 = no value), or None
            (always None without images: a depth map belongs to an image).
            Sparse maps (projected LiDAR: :func:`stag_sim.depth.is_sparse_depth`) are accepted with a warning and completed by the
            ``log`` depth source (:mod:`stag_sim.depth`); give LiDAR as ``lidar`` where the sweeps exist.
        lidar: :class:`LidarSweeps`, or None. A log with neither depth nor LiDAR (camera only: images, poses and
            rig) is valid; its 4D scene needs a depth source that estimates depth from the images (``mvs``).
        objects: tracked boxes.
        map: vector map, or None when the source has none.
        metadata: JSON-serialisable extra facts (seed, source tokens, frame rate ...).
    """

    name: str
    source: str
    timestamps_us: np.ndarray
    ego_poses: np.ndarray
    rig: CameraRig
    images: FrameStore | None
    camera_timestamps_us: np.ndarray
    camera_ego_poses: np.ndarray
    objects: ObjectTracks
    depth: FrameStore | None = None
    lidar: LidarSweeps | None = None
    map: SceneMap | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.timestamps_us.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame [s]."""
        return float(self.timestamps_us[-1] - self.timestamps_us[0]) * 1e-6 if self.num_frames else 0.0

    def frame_at(self, time_s: float) -> int:
        """Index of the frame closest to ``time_s`` [s] after the first frame."""
        t_us = self.timestamps_us[0] + int(round(time_s * 1e6))
        return int(np.argmin(np.abs(self.timestamps_us - t_us)))

    @property
    def layout_only(self) -> bool:
        """True for a log without camera images (see ``images``)."""
        return self.images is None

    def require_images(self, what: str) -> None:
        """Raise a one-line :class:`ValidationError` naming the scene and ``what`` when the log has no images."""
        if self.images is None:
            raise ValidationError(f"{what}: scene {self.name!r} is layout-only (no camera images: poses, object tracks, "
                                  "map and rig only, e.g. generate_scene(sensors=False)); it needs a log with images")

    def camera_poses(self, t: int) -> np.ndarray:
        """(C, 4, 4) ``T_world_from_camera`` of frame ``t``'s images (each at its own capture pose)."""
        return self.camera_ego_poses[t] @ self.rig.T_ego_from_cameras

    def validate(self) -> "SceneLog":
        """Check shapes, dtypes, finiteness and consistency; raises :class:`ValidationError` naming the field."""
        T = self.num_frames
        C = len(self.rig.cameras)
        if not self.name or not isinstance(self.name, str):
            raise ValidationError("SceneLog.name: must be a non-empty string")
        if T < 1:
            raise ValidationError("SceneLog: a scene needs at least one frame")
        ts = np.asarray(self.timestamps_us)
        if ts.dtype != np.int64 or ts.ndim != 1:
            raise ValidationError(f"SceneLog.timestamps_us: expected (T,) int64 [us], got {ts.shape} {ts.dtype}")
        if np.any(np.diff(ts) <= 0):
            raise ValidationError("SceneLog.timestamps_us: must be strictly increasing")
        if self.ego_poses.shape != (T, 4, 4):
            raise ValidationError(f"SceneLog.ego_poses: expected ({T}, 4, 4), got {self.ego_poses.shape}")
        check_transform(self.ego_poses, "SceneLog.ego_poses")
        self.rig.validate()
        if self.images is not None:
            self.images.validate("SceneLog.images")
            if self.images.shape != (T, C):
                raise ValidationError(f"SceneLog.images: expected ({T}, {C}) frames, got {self.images.shape}")
            if self.images.codec not in ("jpeg", "png"):
                raise ValidationError(f"SceneLog.images: codec must be jpeg or png, got {self.images.codec}")
        elif self.depth is not None:
            raise ValidationError("SceneLog.depth: depth maps belong to images; a log without images has none")
        if self.camera_timestamps_us.shape != (T, C) or self.camera_timestamps_us.dtype != np.int64:
            raise ValidationError(f"SceneLog.camera_timestamps_us: expected ({T}, {C}) int64, got "
                                  f"{self.camera_timestamps_us.shape} {self.camera_timestamps_us.dtype}")
        if self.camera_ego_poses.shape != (T, C, 4, 4):
            raise ValidationError(f"SceneLog.camera_ego_poses: expected ({T}, {C}, 4, 4), got {self.camera_ego_poses.shape}")
        check_transform(self.camera_ego_poses, "SceneLog.camera_ego_poses")
        if self.depth is not None:
            self.depth.validate("SceneLog.depth")
            if self.depth.shape != (T, C) or self.depth.codec != "depth-png16":
                raise ValidationError(f"SceneLog.depth: expected ({T}, {C}) depth-png16 frames, got {self.depth.shape} {self.depth.codec}")
            self._warn_sparse_depth()
        if self.lidar is not None:
            self.lidar.validate()
        self.objects.validate(T)
        if self.map is not None:
            self.map.validate()
        return self

    def _warn_sparse_depth(self) -> None:
        """Decode the first stored depth frame (one PNG: cheap) and warn when it is sparse."""
        import warnings

        from stag_sim.depth import SparseDepthWarning, depth_density, is_sparse_depth

        present = np.argwhere(self.depth.index[..., 1] > 0)
        if not len(present):
            return
        t, c = (int(v) for v in present[0])
        cam = self.rig.cameras[c]
        d = self.depth[t, c]
        mask = cam.ego_mask if cam.ego_mask is not None and cam.ego_mask.shape == d.shape else None
        span, share = density = depth_density(d, mask)
        if is_sparse_depth(density):
            warnings.warn(f"SceneLog.depth of {self.name}: frame ({t}, {c}) is sparse ({share:.0%} of the pixels, "
                          f"{span:.0%} of the depth's span hold a value; dense maps fill ~100%): projected LiDAR? "
                          "depth_source 'log' completes sparse frames (stag_sim.depth.complete_depth); give the sweeps "
                          "as SceneLog.lidar where they exist", SparseDepthWarning, stacklevel=3)

    def diff(self, other: "SceneLog") -> list[str]:
        """Names of the fields that differ from ``other`` (empty when the two logs are identical)."""
        out = []
        for f in ("name", "source", "metadata"):
            if getattr(self, f) != getattr(other, f):
                out.append(f)
        for f in ("timestamps_us", "ego_poses", "camera_timestamps_us", "camera_ego_poses"):
            a, b = np.asarray(getattr(self, f)), np.asarray(getattr(other, f))
            if a.dtype != b.dtype or not np.array_equal(a, b):
                out.append(f)
        if self.rig.cameras != other.rig.cameras:
            out.append("rig")
        for f in ("images", "depth"):
            a, b = getattr(self, f), getattr(other, f)
            if (a is None) != (b is None) or (a is not None and not a.equals(b)):
                out.append(f)
        if (self.lidar is None) != (other.lidar is None):
            out.append("lidar")
        elif self.lidar is not None:
            for f in ("points", "offsets", "timestamps_us", "ego_poses", "T_ego_from_lidar"):
                a, b = np.asarray(getattr(self.lidar, f)), np.asarray(getattr(other.lidar, f))
                if a.dtype != b.dtype or not np.array_equal(a, b):
                    out.append(f"lidar.{f}")
        o1, o2 = self.objects, other.objects
        if o1.instance_ids != o2.instance_ids or o1.categories != o2.categories:
            out.append("objects.ids")
        for f in ("sizes", "poses", "valid"):
            if not np.array_equal(np.asarray(getattr(o1, f)), np.asarray(getattr(o2, f))):
                out.append(f"objects.{f}")
        if (self.map is None) != (other.map is None):
            out.append("map")
        elif self.map is not None:
            m1, m2 = self.map, other.map
            if (not m1.drivable_area.equals_exact(m2.drivable_area, 0.0) or m1.lane_ids != m2.lane_ids
                    or m1.successors != m2.successors
                    or any(not a.equals_exact(b, 0.0) for a, b in zip(m1.lanes, m2.lanes))):
                out.append("map")
            else:
                from stag_sim.road_rules import map_rules_json

                if map_rules_json(m1) != map_rules_json(m2):
                    out.append("map.rules")
        return out
