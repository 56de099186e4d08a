"""The ego's own body in its cameras: find it from the log, keep it out of the scene, composite it back.

The hood, mirrors or roof of the logging car sit still in a camera's image while the world moves past. Where the
rig carries a static mask per camera (``Camera.ego_mask``; DDAD ships such masks), that mask is used. Otherwise
it is found from the log (:func:`ego_votes`, :func:`mask_from_votes`): pixels that pairs of frames taken while the
ego moved explain better as standing still in the image than as the world seen through the dense depth, counted
column by column from the bottom edge up. Those pixels
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
#: Mean Sobel gradient [grey levels] below which a window is too flat to vote.
MIN_TEXTURE = 12.0
#: A column is body at its bottom only with at least H / MIN_NET_VOTES_DIV more body votes than world votes [-].
MIN_NET_VOTES_DIV = 25


@dataclass(frozen=True, eq=False)
class EgoLayer:
    """The ego body as one camera sees it, at the 4D scene's working resolution: in the working pinhole image, or
    for a camera with lens distortion in its own (distorted) image, where renderers composite it after the lens.

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


def ego_votes(image_a: np.ndarray, image_b: np.ndarray, depth_a: np.ndarray, K: np.ndarray, T_b_from_a: np.ndarray,
              margin: float = 4.0, window: int = 9) -> np.ndarray:
    """Per-pixel body (+1) / world (-1) / undecided (0) votes of camera images ``a`` and ``b`` (H, W, 3) uint8
    taken while the ego moved.

    Two explanations compete at every pixel of ``a``: the world (frame ``a``'s dense depth ``depth_a`` (H, W) [m]
    warps ``b`` onto ``a`` through the relative camera motion ``T_b_from_a`` (4, 4)), and the ego body (the pixel
    stays where it is). The one whose grey-level error (averaged over ``window`` px) is smaller by more than
    ``margin`` grey levels gets the vote; pixels the warp cannot explain (no depth, leaving the image) abstain.
    ``K`` = (3, 3) camera matrix of the images.

    Returns:
        (H, W) int32 in {-1, 0, 1}.
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
    gx, gy = cv2.Sobel(ga, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(ga, cv2.CV_32F, 0, 1, ksize=3)
    textured = cv2.blur(np.abs(gx) + np.abs(gy), (window, window)) > MIN_TEXTURE  # flat areas fit anything: abstain
    judged = known & textured
    return (judged & (e_body + margin < e_world)).astype(np.int32) - (judged & (e_world + margin < e_body))


def mask_from_votes(votes: np.ndarray) -> np.ndarray | None:
    """The ego-body mask (H, W) bool of summed :func:`ego_votes` (H, W): per column, the rows from the bottom
    edge up to where body votes minus world votes below the row peak (so scattered misses on a shiny hood do not
    cut the body short; a column needs a net H / :data:`MIN_NET_VOTES_DIV` body votes), the upper edge smoothed by a median over neighbouring columns. None when the mask would
    cover more than :data:`MAX_MASK_FRACTION` of the image."""
    H, W = votes.shape
    up = np.cumsum(votes[::-1], axis=0)  # row 0 = bottom
    run = np.where(up.max(0) >= max(3, H // MIN_NET_VOTES_DIV), up.argmax(0) + 1, 0)
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
