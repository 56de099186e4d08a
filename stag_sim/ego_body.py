"""The ego's own body in its cameras: find it from the log, keep it out of the scene, composite it back.

The hood, mirrors or roof of the logging car sit still in a camera's image while the world moves past. Where the
rig carries a static mask per camera (``Camera.ego_mask``; DDAD ships such masks), that mask is used. Otherwise
:func:`detect_ego_mask` finds it from the log: pixels that two frames taken while the ego moved explain better as
standing still in the image than as the world seen through the dense depth, connected to the bottom edge of the
image, taken column by column from the bottom up. Those pixels
never become scene points, and renderers paste them back from the logged images (:class:`EgoLayer`), so renders
show the car's own hood just as the real camera does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The ego must move at least this far between two frames for them to tell its body from the world [m].
MIN_EGO_MOTION = 0.5
#: A detected mask larger than this fraction of the image is rejected (a stalled or textureless scene) [-].
MAX_MASK_FRACTION = 0.45


@dataclass(frozen=True, eq=False)
class EgoLayer:
    """The ego body as one camera sees it, at the 4D scene's working resolution.

    Attributes:
        camera: the rig camera's name.
        mask: (H, W) bool, True on the ego's body.
        rgb: (H, W, 3) uint8, the body's colours (per-pixel median over the logged frames).
    """

    camera: str
    mask: np.ndarray
    rgb: np.ndarray

    def at(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Mask (h, w) bool and colours (h, w, 3) uint8 at another image size."""
        import cv2

        if self.mask.shape == (height, width):
            return self.mask, self.rgb
        m = cv2.resize(self.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        rgb = cv2.resize(self.rgb, (width, height), interpolation=cv2.INTER_AREA)
        return m, rgb

    def composite(self, image: np.ndarray) -> np.ndarray:
        """``image`` (h, w, 3) uint8 with the ego body pasted over it (a new array)."""
        m, rgb = self.at(*image.shape[:2])
        out = np.array(image, copy=True)
        out[m] = rgb[m]
        return out


def moving_frame_pairs(ego_poses: np.ndarray, frames, min_motion: float = MIN_EGO_MOTION) -> list[tuple[int, int]]:
    """Pairs (a, b) of consecutive usable frames between which the ego moved at least ``min_motion`` [m]."""
    frames = list(frames)
    return [(a, b) for a, b in zip(frames[:-1], frames[1:])
            if np.linalg.norm(ego_poses[b][:3, 3] - ego_poses[a][:3, 3]) >= min_motion]


def detect_ego_mask(image_a: np.ndarray, image_b: np.ndarray, depth_a: np.ndarray, K: np.ndarray,
                    T_b_from_a: np.ndarray, margin: float = 4.0, window: int = 9) -> np.ndarray | None:
    """The ego body in camera images ``a`` and ``b`` (H, W, 3) uint8 taken while the ego moved.

    Two explanations compete at every pixel: the world (frame ``a``'s dense depth ``depth_a`` (H, W) [m] warps
    ``b`` onto ``a`` through the relative camera motion ``T_b_from_a`` (4, 4)), and the ego body (the pixel
    stays where it is). A pixel is body when the static explanation fits better by ``margin`` grey levels
    (errors averaged over ``window`` px); pixels the warp cannot explain (no depth, leaving the image) count as
    world. The mask is, per column, the run of body pixels that starts at the bottom row, its upper edge smoothed
    by a median over neighbouring columns. ``K`` = (3, 3) camera matrix of the images.

    Returns:
        (H, W) bool, or None when the mask would cover more than :data:`MAX_MASK_FRACTION` of the image.
    """
    import cv2

    grey = lambda i: cv2.GaussianBlur(cv2.cvtColor(i, cv2.COLOR_RGB2GRAY).astype(np.float32), (5, 5), 1.5)  # noqa: E731
    ga, gb = grey(image_a), grey(image_b)
    H, W = ga.shape
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float32)
    d = np.asarray(depth_a, np.float32)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.stack([(uu - cx) / fx * d, (vv - cy) / fy * d, d], -1) @ T_b_from_a[:3, :3].T.astype(np.float32) \
        + T_b_from_a[:3, 3].astype(np.float32)
    z = np.maximum(P[..., 2], 1e-3)
    mu = (fx * P[..., 0] / z + cx).astype(np.float32)
    mv = (fy * P[..., 1] / z + cy).astype(np.float32)
    warped = cv2.remap(gb, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1e4)
    known = (d > 0) & (P[..., 2] > 0.1) & (warped > -1.0)
    e_world = cv2.blur(np.where(known, np.abs(ga - warped), 0).astype(np.float32), (window, window))
    e_body = cv2.blur(np.abs(ga - gb), (window, window))
    body = known & (e_body + margin < e_world)
    rev = ~body[::-1]  # row 0 = bottom
    run = np.where(rev.any(0), rev.argmax(0), H)
    k = max(3, (W // 20) | 1)
    run = np.median(np.lib.stride_tricks.sliding_window_view(np.pad(run, k // 2, mode="edge"), k), axis=1).astype(np.int64)
    mask = np.arange(H)[::-1, None] < run[None, :]
    if mask.mean() > MAX_MASK_FRACTION:
        return None
    return mask


def ego_layer(name: str, mask: np.ndarray, images: list[np.ndarray]) -> EgoLayer:
    """The :class:`EgoLayer` of camera ``name``: ``mask`` and the per-pixel median colour of ``images``."""
    rgb = np.median(np.stack(images), axis=0).astype(np.uint8) if len(images) > 1 else np.array(images[0])
    rgb = np.where(mask[..., None], rgb, 0).astype(np.uint8)
    return EgoLayer(name, np.asarray(mask, bool), rgb)
