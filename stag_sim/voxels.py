"""Voxel fusion: :class:`VoxelAccumulator` streams coloured, weighted points in and keeps one weighted mean
position and colour per occupied voxel (deterministic order by packed voxel key)."""

from __future__ import annotations

import numpy as np

from stag_sim.errors import SceneError

_VOXEL_BITS = 21  # bits per axis of the packed voxel key: 2^21 voxels per axis (105 km at 0.05 m)
_VOXEL_OFFSET = 1 << (_VOXEL_BITS - 1)
_MERGE_EVERY = 4_000_000  # raw points buffered (at least) before a voxel merge


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
