"""Rendering cameras with lens distortion: render the undistorted pinhole, then resample it into the lens.

A distorted camera (:attr:`CameraIntrinsics.distorted`) sees, through its lens, the rays of the ideal pinhole
camera with the same K, moved (:func:`stag_sim.distortion.distort_pixels`). :func:`render_distorted` renders that
pinhole with :class:`~stag_sim.render.renderer.PointRenderer` on a canvas widened by margins where the lens sees
beyond the pinhole's frame (a barrel lens's corners and edges; :func:`pinhole_canvas`), and resamples every output
into the lens: colour bilinear, depth, valid and modelled by nearest neighbour
(:func:`stag_sim.distortion.distort_image`). Lens pixels whose ray the canvas does not hold (beyond
:data:`MAX_MARGIN`, or beyond the lens model's valid radius) take the colour of the nearest pixel that has one, with no
depth and not valid / modelled. Then the ego body is composited: the 4D scene keeps a distorted camera's
:class:`~stag_sim.ego_body.EgoLayer` in the camera's own (distorted) image, since a hood at the bottom edge of a
barrel lens's image lies beyond its pinhole's frame.
"""

from __future__ import annotations

import numpy as np

from stag_sim.camera import CameraIntrinsics, distort_image, undistort_pixels
from stag_sim.render.types import RenderResult

#: The widest margin a canvas gets on each side, as a fraction of the image's width / height [-] (a wide fisheye
#: sees rays no pinhole can hold; its rim is filled from the nearest rendered pixel instead).
MAX_MARGIN = 0.5
#: Pixels a margin gets beyond the farthest ray the lens sees (bilinear sampling reads one pixel on) [px].
MARGIN_PAD = 2


def is_distorted(intrinsics) -> bool:
    """True when ``intrinsics`` (one :class:`CameraIntrinsics` or a sequence) has a distorted camera."""
    items = [intrinsics] if isinstance(intrinsics, CameraIntrinsics) else intrinsics
    return any(getattr(k, "distorted", False) for k in items)


def _margins(k: CameraIntrinsics) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) [px] the pinhole with ``k``'s K needs beyond its frame to hold every ray the
    lens sees (its image border and a coarse grid inside), at most :data:`MAX_MARGIN` of the size."""
    if not k.distorted:
        return 0, 0, 0, 0
    w, h = k.width, k.height
    us, vs = np.linspace(0, w - 1, min(w, 64)), np.linspace(0, h - 1, min(h, 64))
    grid = np.stack(np.meshgrid(us, vs), -1).reshape(-1, 2)
    edge = np.concatenate([np.stack([np.arange(w), np.full(w, v)], 1) for v in (0, h - 1)]
                          + [np.stack([np.full(h, u), np.arange(h)], 1) for u in (0, w - 1)]).astype(np.float64)
    uv = undistort_pixels(np.concatenate([grid, edge]), k)
    uv = uv[np.isfinite(uv).all(axis=1)]
    if not len(uv):
        return 0, 0, 0, 0
    cap_w, cap_h = int(np.ceil(MAX_MARGIN * w)), int(np.ceil(MAX_MARGIN * h))
    need = lambda x, cap: int(min(max(np.ceil(x) + MARGIN_PAD, 0), cap)) if x > 0 else 0  # noqa: E731
    return (need(-uv[:, 1].min(), cap_h), need(-uv[:, 0].min(), cap_w),
            need(uv[:, 1].max() - (h - 1), cap_h), need(uv[:, 0].max() - (w - 1), cap_w))


def pinhole_canvas(intrinsics: list[CameraIntrinsics]) -> tuple[list[CameraIntrinsics], np.ndarray]:
    """The pinhole cameras to render for ``intrinsics`` (one size): each the same focal lengths, its principal
    point moved by its top / left margin, on one common canvas (all cameras of a render call share a size).

    Returns:
        (pinholes, inner): the N undistorted :class:`CameraIntrinsics`, and (N, 4) int64 (top, left, height, width)
        [px] of each camera's own pinhole frame (same K) inside the canvas.
    """
    m = np.array([_margins(k) for k in intrinsics], np.int64).reshape(-1, 4)
    w, h = intrinsics[0].width, intrinsics[0].height
    W, H = int(w + (m[:, 1] + m[:, 3]).max()), int(h + (m[:, 0] + m[:, 2]).max())
    pins = [CameraIntrinsics(k.fx, k.fy, k.cx + int(l), k.cy + int(t), W, H)
            for k, (t, l, _, _) in zip(intrinsics, m)]
    inner = np.stack([m[:, 0], m[:, 1], np.full(len(m), h), np.full(len(m), w)], 1)
    return pins, inner


def _nearest_fill(rgb: np.ndarray, hole: np.ndarray) -> None:
    """Fill ``hole`` (H, W) bool of ``rgb`` (H, W, 3) in place with the colour of the nearest other pixel."""
    if not hole.any() or hole.all():
        return
    from scipy.ndimage import distance_transform_edt

    iy, ix = distance_transform_edt(hole, return_distances=False, return_indices=True)
    rgb[hole] = rgb[iy[hole], ix[hole]]


def to_lens(res: RenderResult, pinholes: list[CameraIntrinsics], intrinsics: list[CameraIntrinsics]) -> RenderResult:
    """Resample a render of the ``pinholes`` (N canvases) into the distorted cameras ``intrinsics`` (see the module
    docstring): (N, h, w, ...) arrays at the cameras' size."""
    import cv2

    n, (w, h) = len(intrinsics), (intrinsics[0].width, intrinsics[0].height)
    rgb = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    valid = np.empty((n, h, w), bool)
    modelled = np.empty((n, h, w), bool)
    cover, near = res.coverage, cv2.INTER_NEAREST
    for i, (pin, k) in enumerate(zip(pinholes, intrinsics)):
        flags = distort_image(np.stack([res.valid[i], cover[i], np.ones_like(res.valid[i])], -1).view(np.uint8),
                              pin, k, near)
        rgb[i] = distort_image(res.rgb[i], pin, k)
        depth[i] = distort_image(res.depth[i], pin, k, near)
        seen = flags[..., 2] > 0
        valid[i], modelled[i] = (flags[..., 0] > 0) & seen, (flags[..., 1] > 0) & seen
        _nearest_fill(rgb[i], ~seen)
    return RenderResult(rgb, depth, valid, modelled)


def _subset(object_poses, object_mask, idx: np.ndarray):
    """The object poses and mask of :meth:`PointRenderer.render` for the cameras ``idx`` alone."""
    if isinstance(object_poses, np.ndarray) and object_poses.ndim == 4:
        object_poses = object_poses[idx]
    if object_mask is not None and np.ndim(object_mask) == 2:
        object_mask = np.asarray(object_mask)[idx]
    return object_poses, object_mask


def render_distorted(renderer, camera_poses, intrinsics, object_poses, object_mask, cull: bool,
                     cameras) -> RenderResult:
    """:meth:`PointRenderer.render` of cameras some of which have lens distortion (same arguments and result). The
    pinhole cameras among them are rendered in a call of their own, exactly as without the others."""
    from stag_sim.errors import RendererError, StagSimError

    intr = [intrinsics] if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
    poses = np.asarray(camera_poses, np.float64)
    if poses.shape == (4, 4):
        poses = poses[None]
    if len(intr) == 1 and poses.ndim == 3:
        intr = intr * len(poses)
    if poses.ndim != 3 or len(intr) != len(poses) or (cameras is not None and len(cameras) != len(poses)):
        return renderer._render(camera_poses, intrinsics, object_poses, object_mask, cull, cameras)  # its error
    sizes = {(k.width, k.height) for k in intr}
    if len(sizes) > 1:
        raise RendererError(f"intrinsics: all cameras of one call must share an image size, got {sorted(sizes)}")
    for i, k in enumerate(intr):
        try:
            k.validate()
        except StagSimError as e:  # as PointRenderer._check_cameras words it
            raise RendererError(f"intrinsics[{i}]: {e}") from None
    lens = np.array([k.distorted for k in intr])
    parts = []
    for idx in (np.flatnonzero(lens), np.flatnonzero(~lens)):
        if not len(idx):
            continue
        sub = [intr[i] for i in idx]
        names = None if cameras is None else [cameras[i] for i in idx]
        obj, mask = _subset(object_poses, object_mask, idx)
        if lens[idx[0]]:
            pins, _ = pinhole_canvas(sub)
            res = to_lens(renderer._render(poses[idx], pins, obj, mask, cull, names, ego=False), pins, sub)
            parts.append((idx, renderer._finish(res, None, None, names)))
        else:
            parts.append((idx, renderer._render(poses[idx], sub, obj, mask, cull, names)))
    if len(parts) == 1:
        return parts[0][1]
    out = [np.empty((len(poses),) + getattr(parts[0][1], f).shape[1:], getattr(parts[0][1], f).dtype)
           for f in ("rgb", "depth", "valid")] + [np.empty((len(poses),) + parts[0][1].valid.shape[1:], bool)]
    for idx, r in parts:
        for arr, part in zip(out, (r.rgb, r.depth, r.valid, r.coverage)):
            arr[idx] = part
    return RenderResult(*out)
