"""Scene4D: the logged drive as a 4D point cloud, the geometric core of Stag-1.

Stag-1 decouples space from time: the static world is one fused point cloud in the world frame, and every
tracked object is a point cloud in its *own box frame*, accumulated over all frames in which it was seen. At
render time the static cloud is drawn as is and each object cloud is placed at whatever pose the simulator
asks for (logged, replayed, or moved by traffic), so the scene can be re-rendered at any time and from any
camera pose.

Build (:func:`build_scene4d`), as Stag-1 does, from every pixel of every logged image:

* dense depth: each image (at the working resolution, ``max_image_width``) gets a depth per pixel from a
  pluggable depth source (:mod:`stag_sim.depth`): the log's own dense depth maps, or its LiDAR completed by
  classical image-guided depth completion. Each pixel carries a confidence.
* ego body: the pixels where a camera sees the logging car itself (the rig's static masks, or found from the log by
  :mod:`stag_sim.ego_body`) never become points; they are kept as :class:`~stag_sim.ego_body.EgoLayer` images that
  renderers composite back.
* multi-view check: the other cameras of the same frame check every pixel's point (:mod:`stag_sim.consistency`):
  where they should see it and show another colour, it is dropped (missed ego-body pixels, flying pixels on depth
  edges, depth extrapolated into the sky). On for estimated depth, off for the log's own (``multiview_check``).
* static background: every confident pixel is unprojected into the world; points inside the (slightly inflated)
  box of any tracked object are dropped; the rest is fused per voxel: a weighted mean of position and colour,
  weighted by confidence and by the inverse square of the depth, so the nearest (and most frontal) views decide
  the colour.
* objects: points inside an object's box go to that object's cloud, in its box frame, from all frames. An object
  that collected fewer than ``min_object_points`` points gets a box proxy (points on the box surface) textured from
  the images where those points were visible, and coloured by category only where no image saw them.
* far field: pixels without geometry (sky; structure above the reach of the depth) go to an environment map at
  infinity (:mod:`stag_sim.far_field`) and to the mean sky colour per elevation bin, which renderers use for the
  pixels no point reaches.

:func:`load_scene4d` builds once and caches the result next to the scene cache as
``<scene_dir>/scene4d-<key>.npz`` (written atomically), where the key hashes the build parameters, the scene's
``scene.json`` and :data:`SCENE4D_VERSION`; changed inputs or parameters give a new key and a rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stag_sim.camera import CameraIntrinsics, unproject
from stag_sim.consistency import View, consistent
from stag_sim.ego_body import EgoLayer
from stag_sim.errors import SceneError, ValidationError
from stag_sim.far_field import EnvMap
from stag_sim.fsutil import atomic_open
from stag_sim.geometry import check_finite, check_positive, interpolate_poses, invert_transform
from stag_sim.scene_log import SceneLog

#: Bumped whenever the build algorithm or the file layout changes (invalidates cached builds).
SCENE4D_VERSION = 3

#: Number of sky-colour bins over ray elevation [0, pi/2] rad.
SKY_BINS = 16

_VOXEL_BITS = 21  # bits per axis of the packed voxel key: 2^21 voxels per axis (105 km at 0.05 m)
_VOXEL_OFFSET = 1 << (_VOXEL_BITS - 1)
_MERGE_EVERY = 4_000_000  # raw points buffered (at least) before a voxel merge


@dataclass(frozen=True)
class Scene4DConfig:
    """Build parameters of a :class:`Scene4D` (all of them go into the cache key).

    Attributes:
        voxel_size: static-cloud voxel edge [m].
        object_voxel_size: object-cloud voxel edge [m].
        max_depth: depth / LiDAR returns farther than this are ignored [m].
        box_margin: the object boxes are inflated by this much (each side, and on top) when points are removed
            from the static cloud [m]; points within ``ground_clearance`` of the box bottom stay static (road).
        ground_clearance: height above the box bottom below which points are treated as road [m].
        min_object_points: objects with fewer accumulated points get a box-surface proxy [-].
        exclude_frames: frame indices left out of the cloud (held-out evaluation).
        exclude_cameras: camera names left out of the cloud (held-out novel-view evaluation).
        frame_stride: use every ``frame_stride``-th frame [-].
        pixel_stride: use every ``pixel_stride``-th pixel of each depth map in u and v [-].
        depth_source: ``auto`` (``log`` when the log has dense depth maps, else ``lidar``), ``log``, ``lidar``, or
            a name registered with :func:`stag_sim.depth.register_depth_source`.
        max_image_width: working resolution: wider images are downscaled to this width first [px].
        min_confidence: pixels of lower depth confidence do not become points [-].
        far_resolution_deg: texel size of the far-field environment map [deg]; 0 builds none.
        far_min_elevation_deg: lowest elevation the far-field map covers [deg].
        ego_mask: ``auto`` (the rig's masks; else, for sensor depth, found from the log), ``rig`` (only the rig's
            masks) or ``none``.
        multiview_check: drop depth points the other cameras of the same frame contradict
            (:mod:`stag_sim.consistency`): ``auto`` (for estimated depth, not the log's own), ``on`` or ``off``.
    """

    voxel_size: float = 0.05
    object_voxel_size: float = 0.04
    max_depth: float = 80.0
    box_margin: float = 0.25
    ground_clearance: float = 0.05
    min_object_points: int = 200
    exclude_frames: tuple[int, ...] = ()
    exclude_cameras: tuple[str, ...] = ()
    frame_stride: int = 1
    pixel_stride: int = 1
    depth_source: str = "auto"
    max_image_width: int = 640
    min_confidence: float = 0.02
    far_resolution_deg: float = 0.15
    far_min_elevation_deg: float = -15.0
    ego_mask: str = "auto"
    multiview_check: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_frames", tuple(sorted({int(t) for t in self.exclude_frames})))
        object.__setattr__(self, "exclude_cameras", tuple(sorted({str(c) for c in self.exclude_cameras})))

    def validate(self) -> "Scene4DConfig":
        check_positive(self, ("voxel_size", "object_voxel_size", "max_depth"))
        for name in ("box_margin", "ground_clearance"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValidationError(f"Scene4DConfig.{name}: must be a finite value >= 0 m, got {v}")
        for name in ("frame_stride", "pixel_stride"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"Scene4DConfig.{name}: must be an int >= 1, got {getattr(self, name)}")
        if self.min_object_points < 0:
            raise ValidationError(f"Scene4DConfig.min_object_points: must be >= 0, got {self.min_object_points}")
        if int(self.max_image_width) < 8:
            raise ValidationError(f"Scene4DConfig.max_image_width: must be an int >= 8 px, got {self.max_image_width}")
        if not (0.0 <= self.min_confidence <= 1.0):
            raise ValidationError(f"Scene4DConfig.min_confidence: must be in [0, 1], got {self.min_confidence}")
        if not (np.isfinite(self.far_resolution_deg) and self.far_resolution_deg >= 0):
            raise ValidationError(f"Scene4DConfig.far_resolution_deg: must be >= 0 deg, got {self.far_resolution_deg}")
        if not -90.0 <= self.far_min_elevation_deg < 90.0:
            raise ValidationError(f"Scene4DConfig.far_min_elevation_deg: must be in [-90, 90) deg, got {self.far_min_elevation_deg}")
        if self.ego_mask not in ("auto", "rig", "none"):
            raise ValidationError(f"Scene4DConfig.ego_mask: {self.ego_mask!r} is not one of auto, rig, none")
        if self.multiview_check not in ("auto", "on", "off"):
            raise ValidationError(f"Scene4DConfig.multiview_check: {self.multiview_check!r} is not one of auto, on, off")
        return self

    def key(self) -> dict:
        """JSON-serialisable form (for cache keys and files)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True, eq=False)
class ObjectCloud:
    """The accumulated points of one tracked object, in its box frame (box centre, x forward, z up).

    Attributes:
        instance_id: the object's instance id in the scene log.
        category: its category name.
        size: (3,) float64 box (length, width, height) [m].
        points: (M, 3) float32 positions in the box frame [m].
        colors: (M, 3) uint8 RGB.
        is_proxy: True when the points were (partly) synthesised on the box surface because too few were seen.
    """

    instance_id: str
    category: str
    size: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    is_proxy: bool

    def validate(self) -> "ObjectCloud":
        if self.points.ndim != 2 or self.points.shape[1] != 3 or self.points.dtype != np.float32:
            raise ValidationError(f"ObjectCloud {self.instance_id}: points must be (M, 3) float32, got {self.points.shape} {self.points.dtype}")
        if self.colors.shape != self.points.shape or self.colors.dtype != np.uint8:
            raise ValidationError(f"ObjectCloud {self.instance_id}: colors must be {self.points.shape} uint8, got {self.colors.shape} {self.colors.dtype}")
        if len(self.points) == 0:
            raise ValidationError(f"ObjectCloud {self.instance_id}: has no points (a proxy should have been made)")
        return self


@dataclass(frozen=True, eq=False)
class Scene4D:
    """A logged drive as a static world cloud plus per-object clouds that can be placed at any pose.

    Attributes:
        name: the scene's name.
        static_points: (N, 3) float32 world positions [m] (voxel means).
        static_colors: (N, 3) uint8 RGB.
        voxel_size: static voxel edge [m] (the renderer's point footprint).
        objects: one :class:`ObjectCloud` per tracked instance, in the scene log's object order.
        object_voxel_size: object voxel edge [m].
        timestamps_us: (T,) int64 frame times of the log [us].
        object_poses: (T, K, 4, 4) float64 logged ``T_world_from_object``.
        object_valid: (T, K) bool.
        sky_colors: (SKY_BINS, 3) uint8 mean sky colour per ray-elevation bin over [0, pi/2] rad.
        sky_valid: (SKY_BINS,) bool, the bin saw sky pixels.
        config: the build parameters.
        env_map: the far field (:class:`~stag_sim.far_field.EnvMap`), or None.
        ego_layers: the ego body per camera that sees it (:class:`~stag_sim.ego_body.EgoLayer`).
    """

    name: str
    static_points: np.ndarray
    static_colors: np.ndarray
    voxel_size: float
    objects: tuple[ObjectCloud, ...]
    object_voxel_size: float
    timestamps_us: np.ndarray
    object_poses: np.ndarray
    object_valid: np.ndarray
    sky_colors: np.ndarray
    sky_valid: np.ndarray
    config: Scene4DConfig
    env_map: EnvMap | None = None
    ego_layers: tuple[EgoLayer, ...] = ()

    def ego_layer(self, camera: str) -> EgoLayer | None:
        """The ego body as camera ``camera`` sees it, or None."""
        return next((e for e in self.ego_layers if e.camera == camera), None)

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(o.instance_id for o in self.objects)

    @property
    def num_points(self) -> int:
        """Static plus object points."""
        return int(len(self.static_points) + sum(len(o.points) for o in self.objects))

    def validate(self) -> "Scene4D":
        if self.static_points.ndim != 2 or self.static_points.shape[1] != 3 or self.static_points.dtype != np.float32:
            raise ValidationError(f"Scene4D.static_points: expected (N, 3) float32, got {self.static_points.shape} {self.static_points.dtype}")
        if self.static_colors.shape != self.static_points.shape or self.static_colors.dtype != np.uint8:
            raise ValidationError(f"Scene4D.static_colors: expected {self.static_points.shape} uint8, got {self.static_colors.shape} {self.static_colors.dtype}")
        check_finite(self.static_points, "Scene4D.static_points")
        T, K = len(self.timestamps_us), len(self.objects)
        if self.object_poses.shape != (T, K, 4, 4) or self.object_valid.shape != (T, K):
            raise ValidationError(f"Scene4D: object_poses {self.object_poses.shape} / object_valid {self.object_valid.shape} "
                                  f"do not match {T} frames x {K} objects")
        if self.sky_colors.shape != (SKY_BINS, 3) or self.sky_valid.shape != (SKY_BINS,):
            raise ValidationError(f"Scene4D.sky_colors: expected ({SKY_BINS}, 3), got {self.sky_colors.shape}")
        for o in self.objects:
            o.validate()
        if self.env_map is not None:
            self.env_map.validate()
        return self

    def object_poses_at(self, time_s: float) -> dict[str, np.ndarray]:
        """Logged object poses at ``time_s`` [s] after the first frame: ``{instance_id: (4, 4) T_world_from_object}``.

        Poses are interpolated (:func:`~stag_sim.geometry.interpolate_poses`) between the two neighbouring frames
        when the object is valid in both, else taken from the nearest frame where it is valid within one frame.
        """
        ts = (self.timestamps_us - self.timestamps_us[0]) * 1e-6
        t = float(np.clip(time_s, ts[0], ts[-1]))
        i1 = int(np.clip(np.searchsorted(ts, t, side="right"), 1, max(len(ts) - 1, 1)))
        i0 = i1 - 1 if len(ts) > 1 else 0
        i1 = min(i1, len(ts) - 1)
        a = 0.0 if i1 == i0 else (t - ts[i0]) / (ts[i1] - ts[i0])
        out = {}
        for k, oid in enumerate(self.instance_ids):
            v0, v1 = bool(self.object_valid[i0, k]), bool(self.object_valid[i1, k])
            if v0 and v1:
                out[oid] = interpolate_poses(self.object_poses[i0, k], self.object_poses[i1, k], a)
            elif v0 or v1:
                out[oid] = np.array(self.object_poses[i0 if (v0 and (a < 0.5 or not v1)) else i1, k])
        return out

    # --- (de)serialisation ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write as one uncompressed ``.npz`` (fast to load), atomically."""
        path = Path(path)
        offsets = np.zeros(len(self.objects) + 1, np.int64)
        offsets[1:] = np.cumsum([len(o.points) for o in self.objects])
        cat = lambda xs, shape, dt: np.concatenate(xs) if xs else np.zeros(shape, dt)  # noqa: E731
        meta = {"version": SCENE4D_VERSION, "name": self.name, "voxel_size": self.voxel_size,
                "object_voxel_size": self.object_voxel_size, "config": self.config.key(),
                "instance_ids": list(self.instance_ids), "categories": [o.category for o in self.objects],
                "is_proxy": [o.is_proxy for o in self.objects],
                "env_min_elevation": None if self.env_map is None else self.env_map.min_elevation,
                "ego_cameras": [e.camera for e in self.ego_layers]}
        arrays = dict(
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            static_points=self.static_points, static_colors=self.static_colors,
            object_points=cat([o.points for o in self.objects], (0, 3), np.float32),
            object_colors=cat([o.colors for o in self.objects], (0, 3), np.uint8),
            object_offsets=offsets, object_sizes=np.array([o.size for o in self.objects]).reshape(-1, 3),
            timestamps_us=self.timestamps_us, object_poses=self.object_poses, object_valid=self.object_valid,
            sky_colors=self.sky_colors, sky_valid=self.sky_valid,
        )
        if self.env_map is not None:
            arrays.update(env_colors=self.env_map.colors, env_valid=self.env_map.valid)
        for i, e in enumerate(self.ego_layers):
            arrays.update({f"ego_mask_{i}": e.mask, f"ego_rgb_{i}": e.rgb})
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Scene4D":
        """Read a file written by :meth:`save`; raises :class:`SceneError` if it is corrupt or of another version."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            meta = json.loads(d["meta"].tobytes().decode())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise SceneError(f"{path}: corrupt Scene4D file ({type(e).__name__}: {e})") from None
        if meta.get("version") != SCENE4D_VERSION:
            raise SceneError(f"{path}: Scene4D version {meta.get('version')!r}, this stag_sim reads {SCENE4D_VERSION}; rebuild it")
        cfg = meta["config"]
        cfg["exclude_frames"] = tuple(cfg["exclude_frames"])
        cfg["exclude_cameras"] = tuple(cfg.get("exclude_cameras", ()))
        off = d["object_offsets"]
        objects = tuple(
            ObjectCloud(oid, cat, d["object_sizes"][k], d["object_points"][off[k]:off[k + 1]],
                        d["object_colors"][off[k]:off[k + 1]], bool(px))
            for k, (oid, cat, px) in enumerate(zip(meta["instance_ids"], meta["categories"], meta["is_proxy"]))
        )
        env = (EnvMap(d["env_colors"], d["env_valid"], float(meta["env_min_elevation"]))
               if meta.get("env_min_elevation") is not None else None)
        ego = tuple(EgoLayer(name, d[f"ego_mask_{i}"], d[f"ego_rgb_{i}"]) for i, name in enumerate(meta.get("ego_cameras", [])))
        return cls(meta["name"], d["static_points"], d["static_colors"], float(meta["voxel_size"]), objects,
                   float(meta["object_voxel_size"]), d["timestamps_us"], d["object_poses"], d["object_valid"],
                   d["sky_colors"], d["sky_valid"], Scene4DConfig(**cfg), env, ego).validate()


# --- voxel fusion ----------------------------------------------------------------------------------------------


class VoxelAccumulator:
    """Streams points in, keeps one (mean position, mean colour) per occupied voxel.

    Args:
        voxel_size: voxel edge [m].
    """

    def __init__(self, voxel_size: float) -> None:
        self.voxel_size = float(voxel_size)
        self._keys = np.zeros(0, np.int64)
        self._sums = np.zeros((0, 7), np.float64)  # weighted sums of x, y, z, r, g, b, and the weight
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def add(self, points, colors, weights=None) -> None:
        """Add (n, 3) points [m] (float) with (n, 3) uint8 colours and optional (n,) weights > 0 (default 1): each
        voxel keeps the weighted mean position and colour."""
        if len(points):
            w = np.ones(len(points)) if weights is None else np.asarray(weights, np.float64)
            self._pending.append((np.asarray(points, np.float64), np.asarray(colors), w))
            self._pending_n += len(points)
            # merge when the buffer is as large as the fused set: total cost O(n log n), not O(n^2 / buffer)
            if self._pending_n >= max(_MERGE_EVERY, len(self._keys)):
                self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        pts = np.concatenate([p for p, _, _ in self._pending])
        cols = np.concatenate([c for _, c, _ in self._pending]).astype(np.float64)
        w = np.concatenate([w for _, _, w in self._pending])[:, None]
        self._pending, self._pending_n = [], 0
        ijk = np.floor(pts / self.voxel_size).astype(np.int64) + _VOXEL_OFFSET
        if ijk.size and (ijk.min() < 0 or ijk.max() >= (1 << _VOXEL_BITS)):
            raise SceneError(f"points span more than {(1 << _VOXEL_BITS) * self.voxel_size:.0f} m; increase voxel_size")
        keys = (ijk[:, 0] << (2 * _VOXEL_BITS)) | (ijk[:, 1] << _VOXEL_BITS) | ijk[:, 2]
        keys = np.concatenate([self._keys, keys])
        vals = np.concatenate([self._sums, np.concatenate([pts * w, cols * w, w], axis=1)])
        order = np.argsort(keys)
        keys = keys[order]
        starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])
        self._keys = keys[starts]
        self._sums = np.add.reduceat(vals[order], starts, axis=0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) float32 mean positions and (M, 3) uint8 mean colours, ordered by voxel key (deterministic)."""
        self._merge()
        n = self._sums[:, 6:7]
        if len(n) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return (self._sums[:, :3] / n).astype(np.float32), np.clip(np.round(self._sums[:, 3:6] / n), 0, 255).astype(np.uint8)


# --- build ------------------------------------------------------------------------------------------------------

_CATEGORY_COLORS = {"vehicle": (200, 40, 40), "human": (240, 200, 40), "cycle": (40, 160, 220), "movable": (230, 120, 20)}


def _category_color(category: str) -> tuple[int, int, int]:
    for key, col in _CATEGORY_COLORS.items():
        if key in category:
            return col
    return (180, 180, 180)


def box_proxy_points(size, spacing: float) -> np.ndarray:
    """(M, 3) float32 points on the surface of a box of ``size`` (length, width, height) [m] centred at the origin,
    on a grid of about ``spacing`` [m]."""
    size = np.asarray(size, np.float64)
    faces = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        na, nb = (max(2, int(np.ceil(size[i] / spacing)) + 1) for i in (a, b))
        ga, gb = np.meshgrid(np.linspace(-size[a] / 2, size[a] / 2, na), np.linspace(-size[b] / 2, size[b] / 2, nb), indexing="ij")
        for sign in (-1.0, 1.0):
            f = np.zeros((ga.size, 3))
            f[:, a], f[:, b], f[:, axis] = ga.ravel(), gb.ravel(), sign * size[axis] / 2
            faces.append(f)
    return np.unique(np.concatenate(faces).astype(np.float32), axis=0)


def _in_box(p_obj: np.ndarray, half: np.ndarray, margin: float, bottom_cut: float) -> np.ndarray:
    """(n,) bool: object-frame points inside the box of half-extent ``half`` inflated by ``margin`` (sides and top),
    above ``bottom_cut`` [m] over the box bottom."""
    return ((np.abs(p_obj[:, 0]) <= half[0] + margin) & (np.abs(p_obj[:, 1]) <= half[1] + margin)
            & (p_obj[:, 2] <= half[2] + margin) & (p_obj[:, 2] >= -half[2] + bottom_cut))


def _box_window(T_cam_from_obj: np.ndarray, half: np.ndarray, intr: CameraIntrinsics, stride: int):
    """Pixel window (v0, v1, u0, u1) on the strided grid that can hold the box, or None when it is not in view."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    pc = corners @ T_cam_from_obj[:3, :3].T + T_cam_from_obj[:3, 3]
    if np.all(pc[:, 2] <= 1e-3):
        return None
    if np.any(pc[:, 2] <= 1e-3):  # straddles the image plane: test the whole image
        u0, u1, v0, v1 = 0, intr.width, 0, intr.height
    else:
        u = intr.fx * pc[:, 0] / pc[:, 2] + intr.cx
        v = intr.fy * pc[:, 1] / pc[:, 2] + intr.cy
        u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, intr.width)
        v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, intr.height)
        if u0 >= u1 or v0 >= v1:
            return None
    return (-(-v0 // stride), -(-v1 // stride), -(-u0 // stride), -(-u1 // stride))


def _sky_elevation_bins(T_world_from_cam: np.ndarray, uv: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """(n,) int sky bin of the world elevation of pixel rays (-1 below the horizon)."""
    rays = np.stack([(uv[:, 0] - intr.cx) / intr.fx, (uv[:, 1] - intr.cy) / intr.fy, np.ones(len(uv))], 1)
    d = rays @ T_world_from_cam[:3, :3].T
    elev = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    return np.where(elev >= 0, np.minimum((elev / (np.pi / 2) * SKY_BINS).astype(np.int64), SKY_BINS - 1), -1)


def working_camera(camera, max_width: int):
    """``camera`` at the build's working resolution: at most ``max_width`` px wide, aspect kept."""
    k = camera.intrinsics
    if k.width <= max_width:
        return camera
    return camera.with_resolution(int(max_width), max(1, int(round(k.height * max_width / k.width))))


def _working_image(log, t: int, c: int, cam) -> np.ndarray:
    import cv2

    rgb = log.images[t, c]
    k = cam.intrinsics
    if rgb.shape[:2] != (k.height, k.width):
        rgb = cv2.resize(rgb, (k.width, k.height), interpolation=cv2.INTER_AREA)
    return rgb


def _resolve_depth_source(log: SceneLog, cfg: Scene4DConfig, depth_source):
    from stag_sim.depth import make_depth_source

    if depth_source is not None:
        return depth_source
    name = cfg.depth_source
    if name == "auto":
        name = "log" if log.depth is not None else "lidar"
    return make_depth_source(name)


#: Frame pairs (each used both ways) whose votes find the ego body of a camera without a rig mask.
EGO_PAIRS = 4


def _ego_rig(log: SceneLog, cfg: Scene4DConfig, frames: list[int], source):
    """The working-resolution cameras with their ego masks (the rig's, or detected from up to :data:`EGO_PAIRS`
    pairs of used frames the ego moved between, both ways), and the ego layers."""
    from stag_sim.ego_body import ego_layer, ego_votes, mask_from_votes, moving_frame_pairs

    cams, layers = [], []
    detect = cfg.ego_mask == "auto" and getattr(source, "key", "") != "log"
    pairs = moving_frame_pairs(log.ego_poses, frames) if detect else []
    for c, camera in enumerate(log.rig.cameras):
        cam = working_camera(camera, cfg.max_image_width)
        if cfg.ego_mask == "none":
            cam = cam.with_ego_mask(None)
        elif cam.ego_mask is None and pairs and camera.name not in cfg.exclude_cameras:
            usable = [(a, b) for a, b in pairs if log.images.has(a, c) and log.images.has(b, c)][:EGO_PAIRS]
            votes = 0
            for a, b in usable + [(b, a) for a, b in usable]:  # both directions: each frame's depth explains the other
                img_a, img_b = _working_image(log, a, c, cam), _working_image(log, b, c, cam)
                depth_a = source(log, a, c, cam, img_a).depth
                T_b_from_a = (invert_transform(log.camera_ego_poses[b, c] @ cam.T_ego_from_camera)
                              @ log.camera_ego_poses[a, c] @ cam.T_ego_from_camera)
                votes = votes + ego_votes(img_a, img_b, depth_a, cam.intrinsics.K, T_b_from_a)
            if usable:
                cam = cam.with_ego_mask(mask_from_votes(votes))
        if cam.ego_mask is not None and cam.ego_mask.any() and camera.name not in cfg.exclude_cameras:
            use = [t for t in frames if log.images.has(t, c)][:8]
            layers.append(ego_layer(cam.name, cam.ego_mask, [_working_image(log, t, c, cam) for t in use]))
        cams.append(cam)
    return cams, tuple(layers)


def build_scene4d(log: SceneLog, config: Scene4DConfig | None = None, progress: bool = False,
                  depth_source=None) -> Scene4D:
    """Fuse a scene log into a :class:`Scene4D` (see the module docstring).

    Args:
        log: the scene log.
        config: build parameters.
        progress: show a progress bar.
        depth_source: a :class:`~stag_sim.depth.DepthSource` object overriding ``config.depth_source``.

    Raises:
        SceneError: when every frame is excluded, or nothing at all was reconstructed.
    """
    from tqdm import tqdm

    from stag_sim.far_field import EnvMapAccumulator

    cfg = (config or Scene4DConfig()).validate()
    T, C, K = log.num_frames, len(log.rig), len(log.objects)
    frames = [t for t in range(0, T, cfg.frame_stride) if t not in set(cfg.exclude_frames)]
    if not frames:
        raise SceneError(f"{log.name}: no frames left to build the 4D scene from (exclude_frames={list(cfg.exclude_frames)})")
    source = _resolve_depth_source(log, cfg, depth_source)
    cams, ego_layers = _ego_rig(log, cfg, frames, source)
    static = VoxelAccumulator(cfg.voxel_size)
    objs = [VoxelAccumulator(cfg.object_voxel_size) for _ in range(K)]
    halves = np.asarray(log.objects.sizes, np.float64) / 2
    proxies = [box_proxy_points(log.objects.sizes[k], cfg.object_voxel_size * 2) for k in range(K)]
    proxy_sum = [np.zeros((len(p), 4)) for p in proxies]  # r, g, b, weight of each proxy point
    sky_sum, sky_n = np.zeros((SKY_BINS, 3)), np.zeros(SKY_BINS)
    env = (EnvMapAccumulator(np.radians(cfg.far_resolution_deg), np.radians(cfg.far_min_elevation_deg))
           if cfg.far_resolution_deg > 0 else None)
    poses = np.asarray(log.objects.poses)
    valid = np.asarray(log.objects.valid)
    samples = np.zeros((T, C), np.int64)
    unknown = [n for n in cfg.exclude_cameras if n not in log.rig.names]
    if unknown:
        raise SceneError(f"{log.name}: exclude_cameras {unknown} are not cameras of the rig ({', '.join(log.rig.names)})")
    skip = {log.rig.index(n) for n in cfg.exclude_cameras}
    if len(skip) == C:
        raise SceneError(f"{log.name}: every camera is excluded; nothing to build the 4D scene from")
    jobs = [(t, c) for t in frames for c in range(C) if c not in skip and log.images.has(t, c)]
    check = cfg.multiview_check == "on" or (cfg.multiview_check == "auto" and getattr(source, "key", "") != "log")
    bar = tqdm(total=len(jobs), desc=f"scene4d {log.name}", unit="image", disable=not progress)
    for t in frames:  # frame by frame: the cameras of one instant check each other's depth
        live = np.flatnonzero(valid[t])
        T_obj_from_world = {k: invert_transform(poses[t, k]) for k in live}
        here = [c for tt, c in jobs if tt == t]
        inputs = {}
        for c in here:
            rgb = _working_image(log, t, c, cams[c])
            inputs[c] = (rgb, source(log, t, c, cams[c], rgb))
        views = ({c: View.make(log.camera_ego_poses[t, c] @ cams[c].T_ego_from_camera, cams[c].intrinsics.K, rgb,
                               est.depth, cams[c].ego_mask) for c, (rgb, est) in inputs.items()} if check else {})
        for c in here:
            rgb, est = inputs[c]
            samples[t, c] = est.num_samples
            _add_depth_frame(log, t, c, cams[c], rgb, est, cfg, live, T_obj_from_world, halves, static, objs, sky_sum,
                             sky_n, env, proxies, proxy_sum, [v for o, v in views.items() if o != c])
            bar.update()
    bar.close()
    if getattr(source, "key", "") != "log":
        _check_reach(log, cams, samples, jobs)
    static_pts, static_cols = static.result()
    objects = []
    for k in range(K):
        pts, cols = objs[k].result()
        is_proxy = len(pts) < cfg.min_object_points
        if is_proxy:
            proxy = proxies[k]
            seen = proxy_sum[k][:, 3] > 0
            pcol = np.tile(np.array(_category_color(log.objects.categories[k]), np.uint8), (len(proxy), 1))
            pcol[seen] = np.clip(np.round(proxy_sum[k][seen, :3] / proxy_sum[k][seen, 3:]), 0, 255).astype(np.uint8)
            pts = np.concatenate([pts, proxy])
            cols = np.concatenate([cols, pcol])
        objects.append(ObjectCloud(log.objects.instance_ids[k], log.objects.categories[k],
                                   np.asarray(log.objects.sizes[k], np.float64).copy(), pts, cols, bool(is_proxy)))
    if len(static_pts) == 0 and not any(len(o.points) for o in objects):
        raise SceneError(f"{log.name}: no depth or LiDAR return within {cfg.max_depth} m; nothing to build a 4D scene from")
    sky_valid = sky_n > 0
    sky = np.zeros((SKY_BINS, 3), np.uint8)
    sky[sky_valid] = np.clip(np.round(sky_sum[sky_valid] / sky_n[sky_valid, None]), 0, 255).astype(np.uint8)
    env_map = env.result() if env is not None and env._w.any() else None
    return Scene4D(log.name, static_pts, static_cols, cfg.voxel_size, tuple(objects), cfg.object_voxel_size,
                   np.asarray(log.timestamps_us, np.int64).copy(), poses.astype(np.float64).copy(), valid.copy(),
                   sky, sky_valid, cfg, env_map, ego_layers).validate()


def _check_reach(log: SceneLog, cams, samples: np.ndarray, jobs) -> None:
    """A camera that no depth sample reaches in any frame cannot be reconstructed: one clear error."""
    used = sorted({c for _, c in jobs})
    blind = [cams[c].name for c in used if samples[:, c].sum() == 0]
    if blind:
        raise SceneError(f"{log.name}: no LiDAR return reaches camera(s) {', '.join(blind)} in any frame used; "
                         "check the calibration (T_ego_from_camera, T_ego_from_lidar) or leave the camera out")


def _add_depth_frame(log, t, c, cam, rgb, est, cfg, live, T_obj_from_world, halves, static, objs, sky_sum, sky_n,
                     env, proxies, proxy_sum, views=()) -> None:
    """Add image (t, c) with its depth estimate: sky / far field, object points (box frames), proxy texture, and
    the static points that the other cameras' ``views`` (:class:`~stag_sim.consistency.View`) do not contradict."""
    intr = cam.intrinsics
    depth = est.depth
    if depth.shape != (intr.height, intr.width) or rgb.shape[:2] != depth.shape:
        raise SceneError(f"{log.name}: frame ({t}, {c}) depth {depth.shape} / image {rgb.shape[:2]} do not match the "
                         f"{intr.width}x{intr.height} intrinsics")
    T_wc = log.camera_ego_poses[t, c] @ cam.T_ego_from_camera
    _texture_proxies(depth, rgb, intr, T_wc, live, T_obj_from_world, proxies, proxy_sum)
    s = cfg.pixel_stride
    weight_img = est.confidence / np.maximum(depth, 1.0) ** 2  # nearer (and so more frontal, finer) views win
    depth, rgb, conf, far = depth[::s, ::s], rgb[::s, ::s], est.confidence[::s, ::s], est.far[::s, ::s]
    weight_img = weight_img[::s, ::s]
    vv, uu = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    body = cam.ego_mask[::s, ::s] if cam.ego_mask is not None else np.zeros(depth.shape, bool)
    sky_px = far & ~body
    if np.any(sky_px):
        uv_sky = np.stack([uu[sky_px] * s, vv[sky_px] * s], 1).astype(np.float64)
        bins = _sky_elevation_bins(T_wc, uv_sky, intr)
        ok = bins >= 0
        np.add.at(sky_sum, bins[ok], rgb[sky_px][ok].astype(np.float64))
        np.add.at(sky_n, bins[ok], 1.0)
        if env is not None:
            from stag_sim.far_field import pixel_rays

            env.add(pixel_rays(T_wc, intr.fx, intr.fy, intr.cx, intr.cy, uv_sky[:, 0], uv_sky[:, 1]), rgb[sky_px])
    use = (depth > 0) & (depth <= cfg.max_depth) & (conf >= cfg.min_confidence) & ~body
    # Pixels that may belong to an object: the projected windows of the live boxes (inflated).
    for k in live:
        T_cam_from_obj = invert_transform(T_wc) @ invert_transform(T_obj_from_world[k])
        win = _box_window(T_cam_from_obj, halves[k] + cfg.box_margin, intr, s)
        if win is None:
            continue
        v0, v1, u0, u1 = win
        m = use[v0:v1, u0:u1]
        if not m.any():
            continue
        uv = np.stack([uu[v0:v1, u0:u1][m] * s, vv[v0:v1, u0:u1][m] * s], 1).astype(np.float64)
        p_cam = unproject(uv, depth[v0:v1, u0:u1][m], intr)
        T_oc = invert_transform(T_cam_from_obj)
        p_obj = p_cam @ T_oc[:3, :3].T + T_oc[:3, 3]
        cols = rgb[v0:v1, u0:u1][m]
        inside = _in_box(p_obj, halves[k], 0.0, cfg.ground_clearance)
        objs[k].add(p_obj[inside], cols[inside], weight_img[v0:v1, u0:u1][m][inside])
        drop = _in_box(p_obj, halves[k], cfg.box_margin, cfg.ground_clearance)
        sub = use[v0:v1, u0:u1]
        sub[m] = ~drop  # clears dropped pixels in `use` (a view)
    if not use.any():
        return
    uv = np.stack([uu[use] * s, vv[use] * s], 1).astype(np.float64)
    p_cam = unproject(uv, depth[use], intr)
    p_world, cols, w = p_cam @ T_wc[:3, :3].T + T_wc[:3, 3], rgb[use], weight_img[use]
    if views:
        keep = consistent(p_world, cols, views)
        p_world, cols, w = p_world[keep], cols[keep], w[keep]
    static.add(p_world, cols, w)


def _texture_proxies(depth, rgb, intr, T_wc, live, T_obj_from_world, proxies, proxy_sum) -> None:
    """Colour the box-surface proxy points of the live objects where this image sees them (depth-tested)."""
    if not len(live):
        return
    T_cw = invert_transform(T_wc)
    H, W = depth.shape
    for k in live:
        P = proxies[k]
        if not len(P):
            continue
        T = T_cw @ invert_transform(T_obj_from_world[k])
        p = P.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        z = p[:, 2]
        front = z > 0.5
        if not front.any():
            continue
        zs = np.where(front, z, 1.0)
        u = np.round(intr.fx * p[:, 0] / zs + intr.cx).astype(np.int64)
        v = np.round(intr.fy * p[:, 1] / zs + intr.cy).astype(np.int64)
        ok = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        if not ok.any():
            continue
        d = depth[v[ok], u[ok]]
        vis = (d > 0) & (z[ok] <= d * 1.1 + 0.3)  # not hidden behind a nearer surface of this image
        idx = np.flatnonzero(ok)[vis]
        if len(idx):
            w = 1.0 / np.maximum(z[idx], 1.0) ** 2
            proxy_sum[k][idx, :3] += rgb[v[idx], u[idx]].astype(np.float64) * w[:, None]
            proxy_sum[k][idx, 3] += w


# --- cache ------------------------------------------------------------------------------------------------------


def scene4d_cache_path(scene_dir: str | os.PathLike, config: Scene4DConfig | None = None) -> Path:
    """Where :func:`load_scene4d` keeps the build of ``scene_dir`` with ``config``."""
    from stag_sim.cache import META_FILE

    scene_dir = Path(scene_dir)
    meta = scene_dir / META_FILE
    if not meta.is_file():
        raise SceneError(f"{meta}: missing; {scene_dir} is not a scene cache")
    h = hashlib.sha256()
    h.update(meta.read_bytes())
    h.update(json.dumps({"v": SCENE4D_VERSION, "cfg": (config or Scene4DConfig()).validate().key()}, sort_keys=True).encode())
    return scene_dir / f"scene4d-{h.hexdigest()[:16]}.npz"


def load_scene4d(scene_dir: str | os.PathLike, config: Scene4DConfig | None = None, progress: bool = True,
                 rebuild: bool = False, log: SceneLog | None = None) -> Scene4D:
    """The :class:`Scene4D` of a scene cache, built on first use and cached beside it (see module docstring).

    Args:
        scene_dir: scene cache directory.
        config: build parameters (default :class:`Scene4DConfig`).
        progress: show a progress bar while building.
        rebuild: ignore an existing cached build.
        log: the already-loaded scene log of ``scene_dir`` (saves loading it again).
    """
    from stag_sim.cache import load_scene_cache

    path = scene4d_cache_path(scene_dir, config)
    if path.is_file() and not rebuild:
        return Scene4D.load(path)
    scene = build_scene4d(log if log is not None else load_scene_cache(scene_dir), config, progress=progress)
    try:
        scene.save(path)
    except OSError as e:
        raise SceneError(f"{path}: could not write the Scene4D cache ({e})") from None
    return scene

