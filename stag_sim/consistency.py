"""Multi-view photo-consistency of depth points: drop the points that the other cameras contradict.

A point made from one image's dense depth (a pixel and its depth) is a claim that the other cameras of the same
instant can check. Where another camera should see the point (it lies in that camera's view, in front of or at that
camera's own surface, not behind its ego body), the camera's pixel there must show the point's colour. Points that
more cameras contradict than confirm are dropped before fusion. This removes what single-image depth gets wrong and
another view sees plainly:

* ego-body pixels a detector missed (a shiny hood, a roof pillar in a corner), which single-image depth puts on the
  road or in the air;
* "flying pixels" on depth edges (sky colour between a tree and the background);
* upward-extrapolated depth above the highest LiDAR return where the image shows sky.

Only cameras of the same frame take part: they fire within milliseconds, so moving objects cannot contradict the
static world. Colours are compared on lightly blurred images (robust to sub-pixel calibration error), with a
tolerance that absorbs ordinary exposure differences between cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass(frozen=True, eq=False)
class View:
    """One camera image that checks points.

    Attributes:
        T_cam_from_world: (4, 4) world -> OpenCV camera.
        K: (3, 3) camera matrix [px] of ``rgb``.
        rgb: (H, W, 3) float32 image, lightly blurred.
        depth: (H, W) float32 z-depth [m], 0 where the view has no geometry (sky, far field).
        body: (H, W) bool, the ego body in this view (hides what is behind it), or None.
    """

    T_cam_from_world: np.ndarray
    K: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    body: np.ndarray | None = None

    @classmethod
    def make(cls, T_world_from_cam: np.ndarray, K: np.ndarray, rgb: np.ndarray, depth: np.ndarray,
             body: np.ndarray | None = None) -> "View":
        """A view of uint8 image ``rgb`` (H, W, 3) at pose ``T_world_from_cam`` (4, 4), blurred once here."""
        import cv2

        from stag_sim.geometry import invert_transform

        img = cv2.GaussianBlur(np.asarray(rgb, np.float32), (3, 3), 0.8)
        return cls(invert_transform(np.asarray(T_world_from_cam, np.float64)), np.asarray(K, np.float64), img,
                   np.asarray(depth, np.float32), None if body is None else np.asarray(body, bool))


#: A pixel counts as the point's own surface when its depth is within this fraction (+ ``DEPTH_SLACK``) [-].
DEPTH_TOLERANCE = 0.05
#: Absolute depth slack of the visibility test [m].
DEPTH_SLACK = 0.3
#: Mean absolute RGB difference above which a view contradicts a point [grey levels].
COLOUR_TOLERANCE = 40.0


def consistency_votes(points: np.ndarray, colors: np.ndarray, views, colour_tolerance: float = COLOUR_TOLERANCE,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Count, for every point, the views that confirm and that contradict it.

    A view judges a point when the point projects into its image, in front of the camera, not onto its ego body, and
    not behind its surface (``z <= depth * (1 + DEPTH_TOLERANCE) + DEPTH_SLACK``, or the pixel has no depth). It
    confirms when its colour there is within ``colour_tolerance`` (mean absolute RGB difference), else contradicts.

    Args:
        points: (N, 3) world positions [m].
        colors: (N, 3) uint8 colours of the points.
        views: :class:`View` objects (the other cameras of the same instant).

    Returns:
        (confirm (N,) int32, contradict (N,) int32).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    col = np.asarray(colors, np.float32).reshape(-1, 3)
    confirm = np.zeros(len(pts), np.int32)
    contradict = np.zeros(len(pts), np.int32)
    for v in views:
        H, W = v.depth.shape
        p = pts @ v.T_cam_from_world[:3, :3].T + v.T_cam_from_world[:3, 3]
        z = p[:, 2]
        front = z > 0.1
        zs = np.where(front, z, 1.0)
        u = np.round(v.K[0, 0] * p[:, 0] / zs + v.K[0, 2]).astype(np.int64)
        r = np.round(v.K[1, 1] * p[:, 1] / zs + v.K[1, 2]).astype(np.int64)
        idx = np.flatnonzero(front & (u >= 0) & (u < W) & (r >= 0) & (r < H))
        if not len(idx):
            continue
        u, r = u[idx], r[idx]
        d = v.depth[r, u]
        seen = (d <= 0) | (z[idx] <= d * (1 + DEPTH_TOLERANCE) + DEPTH_SLACK)
        if v.body is not None:
            seen &= ~v.body[r, u]
        idx, u, r = idx[seen], u[seen], r[seen]
        diff = np.abs(v.rgb[r, u] - col[idx]).mean(axis=1)
        bad = diff > colour_tolerance
        contradict[idx[bad]] += 1
        confirm[idx[~bad]] += 1
    return confirm, contradict


def consistent(points: np.ndarray, colors: np.ndarray, views, colour_tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
    """(N,) bool: the points no more views contradict than confirm (points no view judges are kept)."""
    confirm, contradict = consistency_votes(points, colors, views, colour_tolerance)
    return contradict <= confirm


#: Free-space carving (:func:`free_space_votes`): a view that sees the far field (sky) through a point votes against
#: it only when the point is nearer than this [m] (the far shell of real sensors stands at 60 m on purpose).
SEE_THROUGH_FAR_M = 40.0


def free_space_votes(points: np.ndarray, views, tolerance: float = DEPTH_TOLERANCE, slack: float = DEPTH_SLACK,
                     far_m: float = SEE_THROUGH_FAR_M, chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Count, for every point, the source views whose depth agrees with it and those that see through it.

    Fusing the depth of many frames adds every frame's errors (completed depth bleeding over edges, pose error,
    untracked movers) to one cloud, and a z-buffer shows the nearest of them. A view that looks along a point's
    line of sight and sees a surface clearly beyond it (its depth, minimum over 3 x 3 pixels, more than
    ``tolerance`` x depth + ``slack`` behind the point; or the far field, for points nearer than ``far_m``)
    says the point is not there. A view whose depth at the point's pixel matches
    (within the same tolerance) agrees.

    Args:
        points: (N, 3) world positions [m].
        views: :class:`~stag_sim.scene4d_types.SourceViews` (depth +inf = far field, NaN = no opinion).
        far_m: points at least this far [m] may stand where a view sees the far field (a far shell's points).

    Returns:
        (agree (N,) int32, see_through (N,) int32).
    """
    import cv2

    pts = np.asarray(points, np.float32).reshape(-1, 3)
    agree = np.zeros(len(pts), np.int32)
    through = np.zeros(len(pts), np.int32)
    kernel = np.ones((3, 3), np.uint8)
    for j in range(len(views)):
        w, h = (int(s) for s in views.sizes[j])
        d = views.depth[j, :h, :w].astype(np.float32)
        # the nearest surface around each pixel; no opinion (NaN) counts as 0, so it never sees through anything
        dmin = cv2.erode(np.where(np.isnan(d), 0.0, d).astype(np.float32), kernel)
        T = views.T_world_from_camera[j]
        R, c = T[:3, :3].astype(np.float32), T[:3, 3].astype(np.float32)
        fx, fy, cx, cy = views.K[j]
        for s in range(0, len(pts), chunk):
            p = (pts[s:s + chunk] - c) @ R
            z = p[:, 2]
            front = z > 0.1
            zs = np.where(front, z, 1.0)
            u = np.rint(fx * p[:, 0] / zs + cx).astype(np.int64)
            v = np.rint(fy * p[:, 1] / zs + cy).astype(np.int64)
            idx = np.flatnonzero(front & (u >= 0) & (u < w) & (v >= 0) & (v < h))
            if not len(idx):
                continue
            zi, di, mi = z[idx], d[v[idx], u[idx]], dmin[v[idx], u[idx]]
            tol = tolerance * zi + slack
            with np.errstate(invalid="ignore"):
                agree[s + idx] += np.abs(di - zi) <= tol
                through[s + idx] += (mi > zi + tol) & (np.isfinite(mi) | (zi < far_m))
    return agree, through
