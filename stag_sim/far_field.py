"""The far field: an environment map at infinity, textured from the logged images themselves.

Pixels of the logged images that hold no geometry (sky, and structures above the reach of the LiDAR) cannot
become 3D points. Seen from a few metres away they barely move, so they are kept as colours per world direction:
an equirectangular map over azimuth [-pi, pi) and elevation [``min_elevation``, pi/2] in the world frame.
Renderers look up the direction of every pixel that no point reached and take the map's colour there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError


def pixel_rays(T_world_from_camera: np.ndarray, fx: float, fy: float, cx: float, cy: float, u: np.ndarray,
               v: np.ndarray) -> np.ndarray:
    """(n, 3) float64 unit world directions of pixels (u, v) (pixel-centre convention) of a pinhole camera."""
    d = np.stack([(np.asarray(u, np.float64) - cx) / fx, (np.asarray(v, np.float64) - cy) / fy,
                  np.ones(np.shape(u))], -1)
    d = d @ np.asarray(T_world_from_camera, np.float64)[:3, :3].T
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


@dataclass(frozen=True, eq=False)
class EnvMap:
    """Colours of the far field per world direction.

    Attributes:
        colors: (H, W, 3) uint8 RGB; row 0 is elevation pi/2 (straight up), column 0 azimuth -pi.
        valid: (H, W) bool, the texel was seen (or filled from a seen neighbour).
        min_elevation: lowest elevation the map covers [rad].
    """

    colors: np.ndarray
    valid: np.ndarray
    min_elevation: float

    def validate(self) -> "EnvMap":
        if self.colors.ndim != 3 or self.colors.shape[2] != 3 or self.colors.dtype != np.uint8:
            raise ValidationError(f"EnvMap.colors: expected (H, W, 3) uint8, got {self.colors.shape} {self.colors.dtype}")
        if self.valid.shape != self.colors.shape[:2] or self.valid.dtype != np.bool_:
            raise ValidationError(f"EnvMap.valid: expected {self.colors.shape[:2]} bool, got {self.valid.shape} {self.valid.dtype}")
        if not -np.pi / 2 <= self.min_elevation < np.pi / 2:
            raise ValidationError(f"EnvMap.min_elevation: must be in [-pi/2, pi/2) rad, got {self.min_elevation}")
        return self

    @property
    def coverage(self) -> float:
        """Fraction of texels seen [-]."""
        return float(self.valid.mean()) if self.valid.size else 0.0

    def texels(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (n,) int64 of unit world directions (n, 3), and (n,) bool inside the covered elevations."""
        return _texels(dirs, self.colors.shape[0], self.colors.shape[1], self.min_elevation)

    def lookup(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) uint8 colours and (n,) bool hit (seen texel) of unit world directions (n, 3)."""
        r, c, inside = self.texels(dirs)
        hit = inside & self.valid[r, c]
        return self.colors[r, c], hit


def _texels(dirs, H: int, W: int, min_elevation: float):
    dirs = np.asarray(dirs, np.float64)
    az = np.arctan2(dirs[:, 1], dirs[:, 0])
    el = np.arcsin(np.clip(dirs[:, 2], -1.0, 1.0))
    inside = el >= min_elevation
    col = np.clip(((az + np.pi) / (2 * np.pi) * W).astype(np.int64), 0, W - 1)
    row = np.clip(((np.pi / 2 - el) / (np.pi / 2 - min_elevation) * H).astype(np.int64), 0, H - 1)
    return row, col, inside


class EnvMapAccumulator:
    """Weighted mean colour per texel, accumulated over the far pixels of many images.

    Args:
        resolution: texel size [rad] (the same in azimuth and elevation).
        min_elevation: lowest elevation kept [rad].
    """

    def __init__(self, resolution: float, min_elevation: float) -> None:
        if not (np.isfinite(resolution) and resolution > 0):
            raise ValidationError(f"far-field resolution: must be > 0 rad, got {resolution}")
        self.H = int(np.ceil((np.pi / 2 - min_elevation) / resolution))
        self.W = int(np.ceil(2 * np.pi / resolution))
        self.min_elevation = float(min_elevation)
        self._sum = np.zeros((self.H * self.W, 3))
        self._w = np.zeros(self.H * self.W)

    def add(self, dirs: np.ndarray, colors: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add unit world directions (n, 3) with (n, 3) uint8 colours (and (n,) weights, default 1)."""
        if len(dirs) == 0:
            return
        r, c, inside = _texels(dirs, self.H, self.W, self.min_elevation)
        idx = (r * self.W + c)[inside]
        w = np.ones(len(dirs)) if weights is None else np.asarray(weights, np.float64)
        w = w[inside]
        cols = np.asarray(colors, np.float64)[inside]
        n = self.H * self.W
        self._w += np.bincount(idx, weights=w, minlength=n)
        for k in range(3):
            self._sum[:, k] += np.bincount(idx, weights=w * cols[:, k], minlength=n)

    def result(self, fill_texels: int = 2) -> EnvMap:
        """The map; unseen texels within ``fill_texels`` of a seen one take the mean of their seen neighbours
        (closes the gaps between the rays of neighbouring pixels)."""
        import cv2

        seen = self._w > 0
        col = np.zeros((self.H * self.W, 3))
        col[seen] = self._sum[seen] / self._w[seen, None]
        col = col.reshape(self.H, self.W, 3).astype(np.float32)
        valid = seen.reshape(self.H, self.W)
        for _ in range(int(fill_texels)):
            wgt = valid.astype(np.float32)
            num = cv2.boxFilter(col * wgt[..., None], -1, (3, 3), normalize=False, borderType=cv2.BORDER_REPLICATE)
            den = cv2.boxFilter(wgt, -1, (3, 3), normalize=False, borderType=cv2.BORDER_REPLICATE)
            grow = ~valid & (den > 0)
            col[grow] = num[grow] / den[grow, None]
            valid = valid | grow
        rgb = np.clip(np.round(col), 0, 255).astype(np.uint8)
        rgb[~valid] = 0
        return EnvMap(rgb, valid, self.min_elevation).validate()
