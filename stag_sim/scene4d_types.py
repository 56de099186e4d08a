"""The 4D scene's types: :class:`Scene4DConfig` (build parameters), :class:`ObjectCloud` (one object's points in
its box frame) and :class:`Scene4D` (static world cloud plus object clouds, saved to / loaded from one ``.npz``)."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stag_sim.ego_body import EgoLayer
from stag_sim.errors import SceneError, ValidationError
from stag_sim.far_field import EnvMap
from stag_sim.fsutil import atomic_open
from stag_sim.geometry import check_finite, check_positive, interpolate_poses

#: Bumped whenever the build algorithm or the file layout changes (invalidates cached builds).
SCENE4D_VERSION = 4

#: Number of sky-colour bins over ray elevation [0, pi/2] rad.
SKY_BINS = 16


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
        depth_source: ``auto`` (``log`` when the log has dense depth maps, else ``lidar`` when it has LiDAR, else
            ``mvs``), ``log``, ``lidar``, ``mvs`` (multi-view stereo from the images and poses, :mod:`stag_sim.mvs`),
            or a name registered with :func:`stag_sim.depth.register_depth_source`.
        max_image_width: working resolution: wider images are downscaled to this width first [px].
        min_confidence: pixels of lower depth confidence do not become points [-].
        far_resolution_deg: texel size of the far-field environment map [deg]; 0 builds none.
        far_min_elevation_deg: lowest elevation the far-field map covers [deg].
        ego_mask: ``auto`` (the rig's masks; else, for sensor depth, found from the log), ``rig`` (only the rig's
            masks) or ``none``.
        multiview_check: drop depth points the other cameras of the same frame contradict
            (:mod:`stag_sim.consistency`): ``auto`` (for estimated depth, not the log's own), ``on`` or ``off``.
        camera_layers: keep the static points of each camera in a layer of their own, which renders that camera
            (its own colours and exposure, never averaged with another camera's; any other camera pose draws every
            layer): ``auto`` (for estimated depth, i.e. real sensors; not the log's own), ``on`` or ``off``.
        far_shell_m: far-field pixels (sky, structure above the depth's reach) also become points on a shell of
            this radius around the camera that saw them [m], so the far field keeps some parallax (tree crowns are
            not at infinity); the far-field map still fills what they leave. 0: none; negative (default): auto,
            60 m for estimated depth and none for the log's own. At most ``max_depth``.
        source_views: keep every image of the build with its depth (:class:`SourceViews`), so renderers take each
            pixel's colour from the logged image best suited to the view (:mod:`stag_sim.render.source_colour`)
            instead of the fused cloud's: ``auto`` (for estimated depth, i.e. real sensors), ``on`` or ``off``.
        free_space_check: drop the static points that more source views see through than agree with
            (:func:`~stag_sim.consistency.free_space_votes`: one frame's depth errors must not occlude what the others
            see): ``auto``/``on`` where the build keeps its source views, ``off``.
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
    camera_layers: str = "auto"
    far_shell_m: float = -1.0
    source_views: str = "auto"
    free_space_check: str = "auto"

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
        if not (np.isfinite(self.far_shell_m) and self.far_shell_m <= self.max_depth):
            raise ValidationError(f"Scene4DConfig.far_shell_m: must be finite and <= max_depth ({self.max_depth} m), "
                                  f"got {self.far_shell_m}")
        for name in ("multiview_check", "camera_layers", "source_views", "free_space_check"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValidationError(f"Scene4DConfig.{name}: {getattr(self, name)!r} is not one of auto, on, off")
        return self

    def key(self) -> dict:
        """JSON-serialisable form (for cache keys and files)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True, eq=False)
class SourceViews:
    """The logged images a 4D scene was built from, each with its dense depth, at the build's working resolution.

    Attributes:
        cameras: (V,) int16 rig index of each view's camera; frames: (V,) int32 log frame of each view.
        T_world_from_camera: (V, 4, 4) float64 capture pose of each image (OpenCV camera frame).
        K: (V, 4) float64 intrinsics (fx, fy, cx, cy) [px] at the working resolution.
        sizes: (V, 2) int32 (width, height) [px] of each view; images and depth are padded to the largest.
        images: (V, H, W, 3) uint8 RGB.
        depth: (V, H, W) float16 z-depth [m]; +inf where the pixel shows the far field (sky, structure beyond the
            depth's reach), NaN where it may not be used (the ego body, no or unconfident geometry).
    """

    cameras: np.ndarray
    frames: np.ndarray
    T_world_from_camera: np.ndarray
    K: np.ndarray
    sizes: np.ndarray
    images: np.ndarray
    depth: np.ndarray

    FIELDS = ("cameras", "frames", "T_world_from_camera", "K", "sizes", "images", "depth")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @classmethod
    def stack(cls, views: list) -> "SourceViews":
        """From (camera, frame, T_world_from_camera, K (4,), rgb (h, w, 3), depth (h, w)) tuples."""
        H = max(v[4].shape[0] for v in views)
        W = max(v[4].shape[1] for v in views)
        images = np.zeros((len(views), H, W, 3), np.uint8)
        depth = np.full((len(views), H, W), np.nan, np.float16)
        for i, v in enumerate(views):
            h, w = v[4].shape[:2]
            images[i, :h, :w], depth[i, :h, :w] = v[4], v[5]
        return cls(np.array([v[0] for v in views], np.int16), np.array([v[1] for v in views], np.int32),
                   np.stack([v[2] for v in views]).astype(np.float64), np.stack([v[3] for v in views]).astype(np.float64),
                   np.array([v[4].shape[1::-1] for v in views], np.int32), images, depth)

    def arrays(self) -> dict:
        return {f"source_{f}": getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_arrays(cls, d: dict) -> "SourceViews | None":
        return cls(*(d[f"source_{f}"] for f in cls.FIELDS)) if "source_frames" in d else None


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
        static_layers: camera names of the static cloud's layers (``Scene4DConfig.camera_layers``); empty: one
            layer for every camera.
        static_layer: (N,) uint8 layer of each static point (an index into ``static_layers``), or None.
        layer_env_maps: the far field as each layer's camera saw it (one per ``static_layers`` entry; None where
            it saw none), which renders that camera; ``env_map`` renders every other pose.
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
    static_layers: tuple[str, ...] = ()
    static_layer: np.ndarray | None = None
    layer_env_maps: tuple[EnvMap | None, ...] = ()
    source_views: SourceViews | None = None

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
        if bool(self.static_layers) != (self.static_layer is not None):
            raise ValidationError("Scene4D: static_layers and static_layer go together (both set or neither)")
        if self.static_layer is not None:
            lay = np.asarray(self.static_layer)
            if lay.shape != (len(self.static_points),) or lay.dtype != np.uint8:
                raise ValidationError(f"Scene4D.static_layer: expected ({len(self.static_points)},) uint8, got "
                                      f"{lay.shape} {lay.dtype}")
            if len(lay) and int(lay.max()) >= len(self.static_layers):
                raise ValidationError(f"Scene4D.static_layer: layer {int(lay.max())} of {len(self.static_layers)} "
                                      f"({', '.join(self.static_layers)})")
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
        if self.layer_env_maps and len(self.layer_env_maps) != len(self.static_layers):
            raise ValidationError(f"Scene4D.layer_env_maps: {len(self.layer_env_maps)} for {len(self.static_layers)} layers")
        for e in self.layer_env_maps:
            if e is not None:
                e.validate()
                if self.env_map is None or e.colors.shape != self.env_map.colors.shape or e.min_elevation != self.env_map.min_elevation:
                    raise ValidationError("Scene4D.layer_env_maps: each must match env_map's texels and elevations")
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
                "ego_cameras": [e.camera for e in self.ego_layers], "static_layers": list(self.static_layers)}
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
        if self.static_layer is not None:
            arrays.update(static_layer=self.static_layer)
        for g, e in enumerate(self.layer_env_maps):
            if e is not None:
                arrays.update({f"layer_env_colors_{g}": e.colors, f"layer_env_valid_{g}": e.valid})
        for i, e in enumerate(self.ego_layers):
            arrays.update({f"ego_mask_{i}": e.mask, f"ego_rgb_{i}": e.rgb})
        if self.source_views is not None:
            arrays.update(self.source_views.arrays())
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
                   d["sky_colors"], d["sky_valid"], Scene4DConfig(**cfg), env, ego,
                   tuple(meta.get("static_layers", ())), d.get("static_layer"),
                   tuple(EnvMap(d[f"layer_env_colors_{g}"], d[f"layer_env_valid_{g}"], env.min_elevation)
                         if f"layer_env_colors_{g}" in d else None
                         for g in range(len(meta.get("static_layers", ()))) if env is not None),
                   SourceViews.from_arrays(d)).validate()
