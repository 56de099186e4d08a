"""Classical multi-view stereo: dense depth for camera-only logs (the ``mvs`` depth source), no learned weights.

For image (t, c) of a log, :class:`MultiViewStereo` matches it against its neighbours: the same camera at the
nearest other frames (the ego's motion is the baseline) and the rig cameras of frame t whose view overlaps it,
with the logged poses (``SceneLog.camera_ego_poses[t, c] @ T_ego_from_camera``):

1. plane sweep (Collins 1996; Gallup et al. 2007) at a reduced resolution (``MVSConfig.width``): for each of
   ``planes`` fronto-parallel planes, uniform in inverse depth, each neighbour image is warped into the reference
   view by the plane-induced homography ``K_s (R + t n^T / d) K_r^-1`` (``cv2.warpPerspective``);
2. cost: 1 - ZNCC over a square window (zero-mean normalised cross-correlation: robust to the exposure and gain
   differences of real cameras); a neighbour only votes where it sees the pixel in front of it and where the depth
   range moves the pixel far enough along its epipolar line to tell depths apart (``min_sweep``: a camera moving
   along its axis sees nothing near its epipole); per plane the best neighbour's cost counts (occlusion-robust);
3. winner-take-all with a parabola fit between planes; a match survives when it is textured, scores well, is
   unique (no distant plane nearly as good) and is not at an end of the depth range;
4. multi-view geometric consistency (as in COLMAP's fusion and the MVSNet family): each match is projected into
   the neighbours, whose own matches (computed the same way, cached) must agree on its depth;
5. the surviving matches are the samples of :func:`~stag_sim.depth.complete_depth` (the classical image-guided
   completion of the LiDAR path, with its ground plane and far-field rules), which returns the
   :class:`~stag_sim.depth.DepthEstimate` with its confidence (1 on matches, decaying away from them).

Static-scene assumption: moving objects do not match between frames (their pixels mostly fail the checks and get
filled). A distorted camera's images are matched in its undistorted pinhole (same K). Measured figures: see ``tests/test_depth_inputs.py`` and the
commit that added this module.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from stag_sim.depth import CompletionConfig, DepthEstimate, complete_depth
from stag_sim.errors import SceneError
from stag_sim.geometry import invert_transform


@dataclass(frozen=True)
class MVSConfig:
    """Settings of :class:`MultiViewStereo`.

    Attributes:
        width: matching resolution: images are resized to this width (aspect kept) [px].
        planes: number of depth planes, uniform in inverse depth [-].
        min_depth: nearest plane [m].
        max_depth: farthest plane [m].
        window: side of the ZNCC window at the matching resolution [px], odd.
        frames: the same camera at up to this many nearest other frames is matched [-].
        rig_views: up to this many overlapping rig cameras of the same frame are matched [-].
        min_zncc: a match needs at least this ZNCC with its best neighbour [-].
        min_texture: a match needs at least this grey standard deviation in its window [0..1].
        uniqueness: the best cost away (> 2 planes) from the winner must exceed the winner's by this much [-].
        min_sweep: a neighbour votes for a pixel only where the depth range moves it by this many pixels [px].
        consistency: relative depth disagreement a neighbour's own match may have with a match [-].
        completion: settings of the completion that fills between the matches.
    """

    width: int = 320
    planes: int = 96
    min_depth: float = 2.0
    max_depth: float = 80.0
    window: int = 7
    frames: int = 2
    rig_views: int = 2
    min_zncc: float = 0.6
    min_texture: float = 0.02
    uniqueness: float = 0.03
    min_sweep: float = 6.0
    consistency: float = 0.03
    completion: CompletionConfig = field(default_factory=CompletionConfig)

    def key(self) -> str:
        return (f"mvs(w={self.width},planes={self.planes},d={self.min_depth:g}-{self.max_depth:g},win={self.window},"
                f"frames={self.frames},rig={self.rig_views},zncc={self.min_zncc:g},tex={self.min_texture:g},"
                f"uniq={self.uniqueness:g},sweep={self.min_sweep:g},cons={self.consistency:g})+"
                + self.completion.key())


@dataclass(frozen=True, eq=False)
class Matches:
    """Raw stereo matches of one image at the matching resolution.

    Attributes:
        depth: (h, w) float32 z-depth [m] of the matches, 0 where none survived.
        score: (h, w) float32 ZNCC of the winning plane [-].
        K: (3, 3) float64 intrinsics at the matching resolution.
        T_world_from_camera: (4, 4) float64 capture pose.
        neighbours: the (t, c) images matched against.
    """

    depth: np.ndarray
    score: np.ndarray
    K: np.ndarray
    T_world_from_camera: np.ndarray
    neighbours: tuple[tuple[int, int], ...]


def _grey(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if g.shape != (h, w):
        g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
    return g.astype(np.float32) / 255.0


def _pinhole_image(log, t: int, c: int) -> np.ndarray:
    """Image (t, c) in the undistorted pinhole camera with the same K (bilinear; as logged for a pinhole camera)."""
    k = log.rig.cameras[c].intrinsics
    if not k.distorted:
        return log.images[t, c]
    from stag_sim.camera import undistort_image

    return undistort_image(log.images[t, c], k)[0]


class MultiViewStereo:
    """The ``mvs`` depth source (see the module docstring). Matches of the images it has seen are cached (the
    consistency check of one image needs its neighbours' matches, and the build asks for those images next)."""

    CACHE = 48  # images whose matches are kept

    def __init__(self, config: MVSConfig | None = None) -> None:
        self.config = config or MVSConfig()
        self.key = self.config.key()
        self._cache: OrderedDict = OrderedDict()

    def _size(self, camera, width: int) -> tuple[int, int]:
        k = camera.intrinsics
        w = min(width, k.width)
        return w, max(8, int(round(k.height * w / k.width)))

    def _pose(self, log, t: int, c: int) -> np.ndarray:
        return log.camera_ego_poses[t, c] @ log.rig.cameras[c].T_ego_from_camera

    def neighbours(self, log, t: int, c: int) -> list[tuple[int, int]]:
        """The images matched against image (t, c): the same camera at the nearest other frames, then the rig
        cameras of frame t that see at least 10 % of its view at 5-40 m."""
        cfg = self.config
        others = sorted((abs(s - t), s) for s in range(log.num_frames) if s != t and log.images.has(s, c))
        out = [(s, c) for _, s in others[:cfg.frames]]
        if cfg.rig_views <= 0:
            return out
        cam = log.rig.cameras[c]
        k = cam.intrinsics
        uu, vv = np.meshgrid(np.linspace(0, k.width - 1, 12), np.linspace(0, k.height - 1, 8))
        rays = np.stack([(uu.ravel() - k.cx) / k.fx, (vv.ravel() - k.cy) / k.fy, np.ones(uu.size)], 1)
        pts = np.concatenate([rays * d for d in (5.0, 15.0, 40.0)])
        T_wr = self._pose(log, t, c)
        overlap = []
        for o, other in enumerate(log.rig.cameras):
            if o == c or not log.images.has(t, o):
                continue
            T = invert_transform(self._pose(log, t, o)) @ T_wr
            p = pts @ T[:3, :3].T + T[:3, 3]
            ko = other.intrinsics
            z = np.maximum(p[:, 2], 1e-6)
            u, v = ko.fx * p[:, 0] / z + ko.cx, ko.fy * p[:, 1] / z + ko.cy
            seen = (p[:, 2] > 0.1) & (u >= 0) & (u < ko.width) & (v >= 0) & (v < ko.height)
            if seen.mean() >= 0.1:
                overlap.append((-seen.mean(), o))
        return out + [(t, o) for _, o in sorted(overlap)[:cfg.rig_views]]

    def matches(self, log, t: int, c: int, width: int | None = None) -> Matches:
        """The raw matches of image (t, c) at ``width`` (default ``config.width``) [px] or the image's own width
        where it is smaller (cached)."""
        width = min(int(width or self.config.width), self.config.width)
        key = (id(log), log.name, t, c, width)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        m = self._match(log, t, c, width)
        self._cache[key] = m
        while len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)
        return m

    def _match(self, log, t: int, c: int, width: int) -> Matches:
        import cv2

        cfg = self.config
        cam = log.rig.cameras[c]
        w, h = self._size(cam, width)
        K = cam.intrinsics.scaled(w, h).K
        T_wr = self._pose(log, t, c)
        nbrs = tuple(self.neighbours(log, t, c))
        ref = _grey(_pinhole_image(log, t, c), w, h)
        win = (cfg.window, cfg.window)
        box = lambda x: cv2.blur(x, win, borderType=cv2.BORDER_REFLECT)  # noqa: E731
        m_r = box(ref)
        v_r = np.maximum(box(ref * ref) - m_r * m_r, 0)
        inv = np.linspace(1.0 / cfg.min_depth, 1.0 / cfg.max_depth, cfg.planes)
        vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
        rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)  # z = 1
        cost = np.full((cfg.planes, h, w), np.inf, np.float32)
        for s, o in nbrs:
            other = log.rig.cameras[o]
            ws, hs = self._size(other, width)
            Ks = other.intrinsics.scaled(ws, hs).K
            src = _grey(_pinhole_image(log, s, o), ws, hs)
            ones = np.ones_like(src)
            T_sr = invert_transform(self._pose(log, s, o)) @ T_wr
            R, tr = T_sr[:3, :3], T_sr[:3, 3]
            Rr = rays @ R.T  # (h, w, 3): the ray's direction in the neighbour's frame

            def project(d):  # pixel of the neighbour where the plane at depth d puts each reference pixel, and its z
                p = Rr * d + tr
                z = p[..., 2]
                zs = np.where(z > 1e-6, z, 1e-6)
                return Ks[0, 0] * p[..., 0] / zs + Ks[0, 2], Ks[1, 1] * p[..., 1] / zs + Ks[1, 2], z

            un, vn, zn = project(cfg.min_depth)
            uf, vf, zf = project(cfg.max_depth)
            usable = (zn > 0.1) & (zf > 0.1) & (np.hypot(un - uf, vn - vf) >= cfg.min_sweep)
            if not usable.any():
                continue
            for i, q in enumerate(inv):
                d = 1.0 / q
                H = Ks @ (R + np.outer(tr, [0.0, 0.0, 1.0]) / d) @ np.linalg.inv(K)
                warped = cv2.warpPerspective(src, H, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                inside = cv2.warpPerspective(ones, H, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                m_s = box(warped)
                v_s = np.maximum(box(warped * warped) - m_s * m_s, 0)
                zncc = (box(ref * warped) - m_r * m_s) / np.sqrt(v_r * v_s + 1e-6)
                whole = box(inside) > 0.999  # the neighbour sees the whole window
                c_i = np.where(usable & whole, 1.0 - zncc, np.inf).astype(np.float32)
                np.minimum(cost[i], c_i, out=cost[i])
        best = np.argmin(cost, 0)
        c0 = np.take_along_axis(cost, best[None], 0)[0]
        P = cfg.planes
        lo, hi = np.clip(best - 1, 0, P - 1), np.clip(best + 1, 0, P - 1)
        cl = np.take_along_axis(cost, lo[None], 0)[0]
        ch = np.take_along_axis(cost, hi[None], 0)[0]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            den = cl - 2 * c0 + ch
            off = np.where(np.isfinite(den) & (den > 1e-6), 0.5 * (cl - ch) / den, 0.0)
        off = np.clip(off, -0.5, 0.5)
        q = np.interp(best + off, np.arange(P), inv)
        planes = np.arange(P)[:, None, None]
        away = np.where(np.abs(planes - best[None]) > 2, cost, np.inf).min(0)
        with np.errstate(invalid="ignore"):  # inf - inf where no neighbour sees the pixel: not a match
            ok = (np.isfinite(c0) & (best > 0) & (best < P - 1) & (1.0 - c0 >= cfg.min_zncc)
                  & (v_r >= cfg.min_texture ** 2) & (away - c0 >= cfg.uniqueness))
        depth = np.where(ok, 1.0 / np.maximum(q, 1e-9), 0).astype(np.float32)
        return Matches(depth, (1.0 - np.where(np.isfinite(c0), c0, 2.0)).astype(np.float32), K, T_wr, nbrs)

    def consistent(self, log, ref: Matches, width: int | None = None) -> np.ndarray:
        """(h, w) int: for each match of ``ref``, how many neighbours' own matches agree on its depth."""
        h, w = ref.depth.shape
        vv, uu = np.nonzero(ref.depth > 0)
        d = ref.depth[vv, uu].astype(np.float64)
        K = ref.K
        p = np.stack([(uu - K[0, 2]) / K[0, 0] * d, (vv - K[1, 2]) / K[1, 1] * d, d], 1)
        votes = np.zeros(len(d), np.int64)
        for s, o in ref.neighbours:
            nb = self.matches(log, s, o, width)
            T = invert_transform(nb.T_world_from_camera) @ ref.T_world_from_camera
            q = p @ T[:3, :3].T + T[:3, 3]
            z = np.maximum(q[:, 2], 1e-6)
            u = np.round(nb.K[0, 0] * q[:, 0] / z + nb.K[0, 2]).astype(np.int64)
            v = np.round(nb.K[1, 1] * q[:, 1] / z + nb.K[1, 2]).astype(np.int64)
            hn, wn = nb.depth.shape
            inside = (q[:, 2] > 0.1) & (u >= 0) & (u < wn) & (v >= 0) & (v < hn)
            dn = np.zeros(len(d))
            dn[inside] = nb.depth[v[inside], u[inside]]
            votes += (dn > 0) & (np.abs(dn - q[:, 2]) <= self.config.consistency * q[:, 2])
        out = np.zeros((h, w), np.int64)
        out[vv, uu] = votes
        return out

    def __call__(self, log, t, c, camera, rgb) -> DepthEstimate:
        import cv2

        width = rgb.shape[1]  # match at the working resolution, at most config.width
        ref = self.matches(log, t, c, width)
        if not ref.neighbours:
            raise SceneError(f"{log.name}: depth_source 'mvs' needs a second view of camera {camera.name} at frame {t} "
                             "(the same camera at another frame, or an overlapping camera), and the log has none")
        keep = (ref.depth > 0) & (self.consistent(log, ref, width) >= 1)
        measured = np.where(keep, ref.depth, 0).astype(np.float32)
        H, W = rgb.shape[:2]
        if measured.shape != (H, W):
            measured = cv2.resize(measured, (W, H), interpolation=cv2.INTER_NEAREST)
        est = complete_depth(measured, rgb, self.config.completion, camera, ego_mask=camera.ego_mask)
        return DepthEstimate(est.depth, est.confidence, est.far, int(keep.sum()), completed=True)

