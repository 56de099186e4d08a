"""Closing pinholes between splats: a pixel no point reached, enclosed by pixels that points did reach, takes the
nearest of them (its colour and depth), so gaps narrower than a splat's spacing do not fall through to generic
hole filling. The numba kernel (:func:`stag_sim.render.kernels.close_pinholes_camera`) applies the same rule
pixel for pixel.

Rule, per camera, on the splatted image before any hole filling: an interior pixel without a point whose eight
neighbours hold at least ``min_neighbours`` points takes the neighbour of smallest depth (the first in the order
of :data:`NEIGHBOURS` on a tie). Only pixels that had a point are sources, so one pass closes pinholes and never
grows surfaces into open holes.
"""

from __future__ import annotations

import numpy as np

#: The eight neighbours, in the order ties are broken: (row, column) offsets.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def close_pinholes(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, min_neighbours: int) -> None:
    """In place on (n, H, W, 3) uint8 ``rgb``, (n, H, W) float32 ``depth`` [m] and (n, H, W) bool ``valid``;
    ``min_neighbours`` <= 0 or > 8 does nothing."""
    if not 0 < min_neighbours <= 8 or valid.shape[1] < 3 or valid.shape[2] < 3:
        return
    inner = (slice(None), slice(1, -1), slice(1, -1))
    H, W = valid.shape[1:]
    nb_valid = np.stack([valid[:, 1 + dr:H - 1 + dr, 1 + dc:W - 1 + dc] for dr, dc in NEIGHBOURS])  # (8, n, H-2, W-2)
    nb_depth = np.stack([depth[:, 1 + dr:H - 1 + dr, 1 + dc:W - 1 + dc] for dr, dc in NEIGHBOURS])
    close = ~valid[inner] & (nb_valid.sum(0) >= min_neighbours)
    if not close.any():
        return
    pick = np.argmin(np.where(nb_valid, nb_depth, np.float32(np.inf)), axis=0)  # first minimum on ties
    i, r, c = np.nonzero(close)
    k = pick[i, r, c]
    dr, dc = np.asarray(NEIGHBOURS)[k].T
    rgb[i, r + 1, c + 1] = rgb[i, r + 1 + dr, c + 1 + dc]
    depth[i, r + 1, c + 1] = depth[i, r + 1 + dr, c + 1 + dc]
    valid[i, r + 1, c + 1] = True
