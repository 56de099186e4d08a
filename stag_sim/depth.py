"""Dense depth for every logged image: pluggable depth sources, classical image-guided LiDAR depth completion.

Stag-1 turns every pixel of every logged image into a 3D point; this module gives each pixel its depth without a
learned network. A *depth source* maps one logged image to a :class:`DepthEstimate`:

* ``log``: the log's own dense depth maps (the synthetic town renders them). A sparse map (projected LiDAR given
  as ``SceneLog.depth``: :func:`is_sparse_depth`) is not used with its holes: it is completed by
  :func:`complete_depth` (with a :class:`SparseDepthWarning`, and ``DepthEstimate.completed`` set).
* ``lidar``: :class:`LidarCompletion`, the LiDAR sweep projected into the image (motion-compensated to the
  camera's capture pose through the world frame) and completed by classical image processing after Ku et al.,
  "In Defense of Classical Image Processing: Fast Depth Completion on the CPU" (CRV 2018): nearest-wins dilation
  with a diamond kernel, hole closing, growing fills, median and edge-aware (image-guided) smoothing; the ground
  plane below the LiDAR's lowest ring; and a bounded upward extrapolation for vertical structures (facades, tree
  trunks). What stays above that band has no geometry: it is marked *far* and goes to the far-field model.
* ``mvs``: classical multi-view stereo from the images and poses alone (:mod:`stag_sim.mvs`), for camera-only
  logs.
* anything registered with :func:`register_depth_source`, for example a learned monocular or stereo estimator
  where its weights exist (none ship with stag_sim; no weights can be downloaded by the tests).

Every pixel carries a confidence in [0, 1]: 1 on LiDAR returns, decaying with the distance to the nearest return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from stag_sim.camera import Camera
from stag_sim.errors import SceneError, ValidationError
from stag_sim.geometry import invert_transform


class SparseDepthWarning(UserWarning):
    """``SceneLog.depth`` holds sparse maps (projected LiDAR?) where dense depth is expected; they get completed."""


#: A depth map is *sparse* (projected LiDAR, not a dense map) when less than this share of the pixels of its
#: columns' spans (each column from its first to its last valid row) holds a depth. Dense maps from a renderer or a
#: stereo / monocular network fill ~0.95-1.0 of that span: their holes are the sky and the ego body, above and below
#: it (the synthetic town: 0.67-0.97 of the image valid, 0.96-1.0 of the span). The DGP scene_02 LiDAR sweeps
#: projected into its cameras fill 0.01-0.02 of the span at 1936 px wide, 0.13-0.28 at 320 px.
SPARSE_DENSITY = 0.8
#: ... or when less than this share of the whole image (ego body excluded) holds a depth (a map of a few dots).
SPARSE_MIN_VALID = 0.02


def depth_density(depth: np.ndarray, ego_mask: np.ndarray | None = None) -> tuple[float, float]:
    """How dense a depth map is: (span density, valid share), both in [0, 1].

    Args:
        depth: (H, W) z-depth [m], 0 = no value.
        ego_mask: (H, W) bool pixels of the ego body (left out of both shares), or None.

    Returns:
        The share of the pixels between each column's first and last valid row that hold a depth (1.0 when no pixel
        does), and the share of all (non-ego) pixels that hold one. Sparse: see :func:`is_sparse_depth`.
    """
    d = np.asarray(depth)
    valid = np.isfinite(d) & (d > 0)
    use = np.ones_like(valid) if ego_mask is None else ~np.asarray(ego_mask, bool)
    valid &= use
    n = int(valid.sum())
    if n == 0:
        return 1.0, 0.0
    has = valid.any(0)
    H = d.shape[0]
    top = valid.argmax(0)
    bottom = H - 1 - valid[::-1].argmax(0)
    rows = np.arange(H)[:, None]
    span = (rows >= top[None]) & (rows <= bottom[None]) & has[None] & use
    return n / max(int(span.sum()), 1), n / max(int(use.sum()), 1)


def is_sparse_depth(density: tuple[float, float]) -> bool:
    """True for a :func:`depth_density` of a sparse map (:data:`SPARSE_DENSITY`, :data:`SPARSE_MIN_VALID`)."""
    span, share = density
    return span < SPARSE_DENSITY or share < SPARSE_MIN_VALID


@dataclass(frozen=True, eq=False)
class DepthEstimate:
    """Dense depth of one image at the working resolution.

    Attributes:
        depth: (H, W) float32 z-depth [m]; 0 where the pixel has no geometry.
        confidence: (H, W) float32 in [0, 1].
        far: (H, W) bool, the pixel shows the far field (sky, or structure beyond the geometry's reach).
        num_samples: measured depth samples that went into it (LiDAR returns, sparse log depth values, stereo
            matches in the image) [-].
        completed: True when the depth was filled from sparse samples by :func:`complete_depth`; False for a dense
            map used as it is.
    """

    depth: np.ndarray
    confidence: np.ndarray
    far: np.ndarray
    num_samples: int = 0
    completed: bool = False


class DepthSource(Protocol):
    """Gives dense depth for logged images. ``key`` names the source and its settings (it goes into the cache key
    of the 4D scene, so a changed source rebuilds)."""

    key: str

    def __call__(self, log, t: int, c: int, camera: Camera, rgb: np.ndarray) -> DepthEstimate:
        """Depth of image (frame ``t``, camera ``c``) of ``log``; ``camera`` is the rig camera at the working
        resolution, ``rgb`` the (H, W, 3) uint8 image at that resolution."""


_REGISTRY: dict[str, Callable[..., DepthSource]] = {}


def register_depth_source(name: str, factory: Callable[..., DepthSource]) -> None:
    """Make ``factory(**options)`` available as ``Scene4DConfig(depth_source=name)``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise ValidationError(f"depth source {name!r} is already registered")
    _REGISTRY[name] = factory


def make_depth_source(name: str, **options) -> DepthSource:
    """The depth source registered as ``name`` (``log``, ``lidar``, or a registered one)."""
    if name not in _REGISTRY:
        raise ValidationError(f"depth_source: {name!r} is not one of {', '.join(sorted(_REGISTRY))} "
                              "(register more with stag_sim.depth.register_depth_source)")
    return _REGISTRY[name](**options)


# --- the log's own depth ------------------------------------------------------------------------------------


#: A sparse log depth frame with fewer values than this (ego body excluded) cannot be completed [-].
MIN_COMPLETION_SAMPLES = 16


class LogDepth:
    """The log's depth maps (``SceneLog.depth``; a distorted camera's undistorted into its pinhole first, nearest
    neighbour): a dense map resized to the working resolution by nearest neighbour; a sparse one
    (:func:`is_sparse_depth`) completed by :func:`complete_depth` at the working resolution.

    Attributes:
        completed: ``{(log name, t, c): (span density, valid share)}`` of the frames this source completed.
    """

    key = "log"

    def __init__(self, config: "CompletionConfig | None" = None) -> None:
        self.config = config or CompletionConfig()
        self.completed: dict[tuple[str, int, int], tuple[float, float]] = {}

    def __call__(self, log, t, c, camera, rgb) -> DepthEstimate:
        import cv2

        if log.depth is None:
            raise SceneError(f"{log.name}: depth_source 'log' needs dense depth maps in the log, and it has none "
                             "(use depth_source='lidar' with LiDAR sweeps, or 'mvs' for a camera-only log)")
        d = np.asarray(log.depth[t, c], np.float32)
        logged = log.rig.cameras[c].intrinsics
        if logged.distorted:  # the map is in the distorted image: into the pinhole working camera's geometry first
            from stag_sim.camera import undistort_image

            d = undistort_image(d, logged, interpolation=cv2.INTER_NEAREST)[0]
        h, w = rgb.shape[:2]
        mask = camera.ego_mask
        full_mask = mask
        if mask is not None and mask.shape != d.shape:
            full_mask = cv2.resize(mask.astype(np.uint8), d.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        density = depth_density(d, full_mask)
        if is_sparse_depth(density):
            return self._complete(log, t, c, camera, rgb, d, full_mask, density)
        if d.shape != (h, w):
            d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST)
        hit = d > 0
        return DepthEstimate(d, hit.astype(np.float32), ~hit, int(hit.sum()))

    def _complete(self, log, t, c, camera, rgb, d, full_mask, density) -> DepthEstimate:
        """Complete sparse frame (t, c): every value lands in its working-resolution pixel (nearest wins)."""
        import warnings

        h, w = rgb.shape[:2]
        hit = (d > 0) & np.isfinite(d) if full_mask is None else (d > 0) & np.isfinite(d) & ~full_mask
        v, u = np.nonzero(hit)
        uv = np.stack([(u + 0.5) * (w / d.shape[1]) - 0.5, (v + 0.5) * (h / d.shape[0]) - 0.5], 1)
        sparse = sparse_depth_image(uv, d[v, u], w, h)
        where = f"{log.name}: SceneLog.depth frame ({t}, {c})"
        if len(u) < MIN_COMPLETION_SAMPLES:
            raise SceneError(f"{where} is sparse with {len(u)} depth values (< {MIN_COMPLETION_SAMPLES}) and cannot "
                             "be completed; give the log LiDAR sweeps (depth_source='lidar') or use depth_source='mvs'")
        est = complete_depth(sparse, rgb, self.config, camera, ego_mask=camera.ego_mask)
        if not (est.depth > 0).any():
            raise SceneError(f"{where} is sparse and its {len(u)} depth values (none within "
                             f"{self.config.max_depth:g} m?) complete to nothing; use depth_source='lidar' or 'mvs'")
        if not any(k[0] == log.name for k in self.completed):
            warnings.warn(f"{where} is sparse ({density[1]:.0%} of the pixels, {density[0]:.0%} of the depth's span "
                          "hold a value): completing the log's sparse depth with stag_sim.depth.complete_depth",
                          SparseDepthWarning, stacklevel=2)
        self.completed[(log.name, t, c)] = density
        return est


register_depth_source("log", lambda **kw: LogDepth(CompletionConfig(**kw)))


# --- LiDAR + classical completion ---------------------------------------------------------------------------

_DIAMOND5 = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.uint8)


@dataclass(frozen=True)
class CompletionConfig:
    """Settings of :class:`LidarCompletion` (kernel sizes are for images about 500-700 px wide and scale with
    the width).

    Attributes:
        max_depth: returns farther than this are ignored [m].
        extrapolate_up: vertical structures are extended upward from the highest return of each column by at most
            this height [m]; above it the pixel is far field.
        guide_radius: radius of the image-guided filter [px at 640 px width].
        guide_eps: regularisation of the guided filter (relative, on log depth) [-].
        confidence_scale: distance to the nearest LiDAR return at which confidence falls to 1/e [px at 640 px].
        ground: fill pixels below the lowest return with the ground plane z = 0 of the ego frame.
    """

    max_depth: float = 80.0
    extrapolate_up: float = 1.0
    guide_radius: int = 4
    guide_eps: float = 1e-3
    confidence_scale: float = 12.0
    ground: bool = True

    def key(self) -> str:
        return (f"lidar(max={self.max_depth:g},up={self.extrapolate_up:g},r={self.guide_radius},eps={self.guide_eps:g},"
                f"conf={self.confidence_scale:g},ground={int(self.ground)})")


def lidar_in_camera(log, t: int, c: int, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR sweep ``t`` in camera ``c``'s frame at its own capture pose: (n, 2) float64 pixels (u, v) and (n,)
    depth [m] of the returns in front of the camera and inside the image (working resolution of ``camera``)."""
    lidar = log.lidar
    pts = np.asarray(lidar.sweep(t)[:, :3], np.float64)
    T_wl = lidar.ego_poses[t] @ lidar.T_ego_from_lidar
    T_wc = log.camera_ego_poses[t, c] @ camera.T_ego_from_camera
    T = invert_transform(T_wc) @ T_wl
    p = pts @ T[:3, :3].T + T[:3, 3]
    k = camera.intrinsics
    z = p[:, 2]
    front = z > 0.1
    p, z = p[front], z[front]
    u = k.fx * p[:, 0] / z + k.cx
    v = k.fy * p[:, 1] / z + k.cy
    inside = (u >= -0.5) & (u < k.width - 0.5) & (v >= -0.5) & (v < k.height - 0.5)
    return np.stack([u[inside], v[inside]], 1), z[inside]


def sparse_depth_image(uv: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) float32 depth [m] of the nearest sample in each pixel, 0 where none landed."""
    out = np.zeros(height * width, np.float32)
    if len(z):
        idx = np.round(uv[:, 1]).astype(np.int64) * width + np.round(uv[:, 0]).astype(np.int64)
        order = np.argsort(-z, kind="stable")  # far first: the nearest sample is written last and wins
        out[idx[order]] = z[order]
    return out.reshape(height, width)


def _dilate_nearest(inv: np.ndarray, kernel) -> np.ndarray:
    """Grey dilation of inverted depth (max of ``max_depth - depth``): every pixel takes its nearest neighbour."""
    import cv2

    return cv2.dilate(inv, kernel)


def complete_depth(sparse: np.ndarray, rgb: np.ndarray, config: CompletionConfig = CompletionConfig(),
                   camera: Camera | None = None, T_ego_from_camera: np.ndarray | None = None,
                   ego_mask: np.ndarray | None = None) -> DepthEstimate:
    """Complete a sparse depth image (0 = no sample) guided by its RGB image.

    Args:
        sparse: (H, W) float32 depth samples [m].
        rgb: (H, W, 3) uint8 image (the guide).
        config: completion settings.
        camera: the camera at this resolution (for the ground plane and the upward band); None skips both.
        T_ego_from_camera: camera extrinsics (defaults to ``camera``'s).
        ego_mask: (H, W) bool pixels of the ego's body: never filled, never sampled.

    Returns:
        :class:`DepthEstimate`.
    """
    import cv2

    H, W = sparse.shape
    s = W / 640.0  # kernel scale
    odd = lambda n: max(3, int(round(n * s)) | 1)  # noqa: E731
    maxd = np.float32(config.max_depth + 1.0)
    measured = (sparse > 0) & (sparse <= config.max_depth)
    if ego_mask is not None:
        measured &= ~ego_mask
    inv = np.where(measured, maxd - sparse, 0).astype(np.float32)
    # 1. nearest-wins dilation with a diamond, 2. close small holes, 3. fill remaining small gaps
    inv = _dilate_nearest(inv, cv2.resize(_DIAMOND5, (odd(5), odd(5)), interpolation=cv2.INTER_NEAREST))
    inv = cv2.morphologyEx(inv, cv2.MORPH_CLOSE, np.ones((odd(5), odd(5)), np.uint8))
    for k in (odd(7), odd(15)):
        empty = inv < 0.1
        grown = _dilate_nearest(inv, np.ones((k, k), np.uint8))
        inv[empty] = grown[empty]
    depth = np.where(inv > 0.1, maxd - inv, 0).astype(np.float32)
    filled = depth > 0
    # 4. bounded upward extrapolation for vertical structures, then far field above it
    rows = np.arange(H)[:, None]
    has = filled.any(0)
    top = np.where(has, filled.argmax(0), H)  # first filled row per column
    far = np.zeros((H, W), bool)
    if camera is not None:
        fy = camera.intrinsics.fy
        top_d = depth[np.minimum(top, H - 1), np.arange(W)]
        band = np.where(has, np.ceil(fy * config.extrapolate_up / np.maximum(top_d, 1e-3)), 0).astype(np.int64)
        up = (rows < top[None]) & (rows >= (top - band)[None]) & has[None]
        depth = np.where(up, top_d[None], depth).astype(np.float32)
        far = (rows < (top - band)[None]) | ~has[None]
    # 5. large holes below: the ground plane of the ego frame (the LiDAR's blind ring next to the car)
    if camera is not None and config.ground:
        T_ec = camera.T_ego_from_camera if T_ego_from_camera is None else T_ego_from_camera
        k = camera.intrinsics
        vv, uu = np.mgrid[0:H, 0:W]
        ray = np.stack([(uu - k.cx) / k.fx, (vv - k.cy) / k.fy, np.ones((H, W))], -1) @ T_ec[:3, :3].T
        h_cam = T_ec[2, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            zg = np.where(ray[..., 2] < -1e-3, -h_cam / ray[..., 2], 0.0)  # z-depth of the ground hit
        hole = (depth <= 0) & ~far & (zg > 0) & (zg <= config.max_depth)
        depth[hole] = zg[hole]
    large = (depth <= 0) & ~far
    if large.any():
        inv = np.where(depth > 0, maxd - depth, 0).astype(np.float32)
        grown = _dilate_nearest(inv, np.ones((odd(31), odd(31)), np.uint8))
        depth[large] = np.where(grown[large] > 0.1, maxd - grown[large], 0)
    # 6. median, then image-guided edge-aware smoothing (He et al.'s guided filter on log depth)
    have = depth > 0
    med = cv2.medianBlur(depth, 5)
    depth = np.where(have & ~measured & (med > 0), med, depth)
    guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    smooth = guided_filter(guide, np.log(np.maximum(depth, 1e-3)), max(1, int(round(config.guide_radius * s))),
                           config.guide_eps, have.astype(np.float32))
    depth = np.where(have & ~measured, np.exp(smooth), depth).astype(np.float32)
    if ego_mask is not None:
        depth[ego_mask] = 0
        far &= ~ego_mask
    depth[far] = 0
    # confidence: distance to the nearest return
    dist = cv2.distanceTransform((~measured).astype(np.uint8), cv2.DIST_L2, 3)
    with np.errstate(over="ignore"):  # no return at all: the distance is FLT_MAX, the confidence 0
        conf = np.exp(-dist / (config.confidence_scale * s)).astype(np.float32)
    conf[depth <= 0] = 0
    return DepthEstimate(depth, conf, far, int(measured.sum()), completed=True)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, weight: np.ndarray | None = None) -> np.ndarray:
    """He et al.'s guided filter (grey guide), optionally normalised by a (H, W) weight (0 = ignore the pixel).

    Edges of ``guide`` survive in the output: smoothing does not mix the depths of two sides of an image edge.
    """
    import cv2

    k = (2 * radius + 1, 2 * radius + 1)
    wgt = np.ones_like(src) if weight is None else weight
    box = lambda x: cv2.boxFilter(x, -1, k, normalize=False, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    n = np.maximum(box(wgt), 1e-6)
    mean = lambda x: box(x * wgt) / n  # noqa: E731
    mI, mp = mean(guide), mean(src)
    cov = mean(guide * src) - mI * mp
    var = mean(guide * guide) - mI * mI
    a = cov / (var + eps)
    b = mp - a * mI
    ma = cv2.blur(a, k, borderType=cv2.BORDER_REFLECT)
    mb = cv2.blur(b, k, borderType=cv2.BORDER_REFLECT)
    return ma * guide + mb


class LidarCompletion:
    """LiDAR projected into each image and completed classically (see the module docstring)."""

    def __init__(self, config: CompletionConfig | None = None) -> None:
        self.config = config or CompletionConfig()
        self.key = self.config.key()

    def __call__(self, log, t, c, camera, rgb) -> DepthEstimate:
        if log.lidar is None:
            raise SceneError(f"{log.name}: has no LiDAR sweeps, so depth_source 'lidar' (the default for a log without "
                             "dense depth maps) cannot serve it; use depth_source='mvs' (multi-view stereo from the "
                             "images and poses) or a source registered with stag_sim.depth.register_depth_source")
        k = camera.intrinsics
        uv, z = lidar_in_camera(log, t, c, camera)
        sparse = sparse_depth_image(uv, z, k.width, k.height)
        return complete_depth(sparse, rgb, self.config, camera, ego_mask=camera.ego_mask)


register_depth_source("lidar", lambda **kw: LidarCompletion(CompletionConfig(**kw)))


def _multi_view_stereo(**options) -> DepthSource:
    from stag_sim.mvs import MultiViewStereo, MVSConfig  # imported when first asked for

    return MultiViewStereo(MVSConfig(**options))


register_depth_source("mvs", _multi_view_stereo)
