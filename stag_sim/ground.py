"""Where the ground is: the 3D ego pose of a planar ego state on a logged drive.

The closed loop moves the ego in the plane (x, y, yaw: :class:`~stag_sim.dynamics.EgoState`); the cameras must sit
where the log put them, height, roll and pitch included. A log's world frame is rarely on the road (DGP's origin is
12.7 m above it, nuScenes' maps tilt), so :class:`GroundModel` lifts a planar state into the logged 3D frame:

* **near the logged path** (within ``corridor_m`` of it), the ego origin's height and up axis are those of the
  logged ego poses, interpolated along the path's arc length at the state's projection, and the height follows the
  plane through that point (so a state 1 m to the left sits on the logged road's camber);
* **away from it**, the height comes from a ground grid of the LiDAR (lowest returns per cell, ``cell_m`` cells)
  plus the logged ego origin's height above that ground, blended in over one more corridor width.

At a logged frame's position and heading, :meth:`GroundModel.pose` returns exactly the logged ``T_world_from_ego``
(same height, same up axis; the heading is the state's). A log whose ego poses are all level at z = 0 (the
synthetic town) needs none: :meth:`GroundModel.from_log` returns None and the planar pose is the 3D pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.scene_log import SceneLog
from stag_sim.traffic import PolylinePath

PLANAR_TOLERANCE = 1e-6  # [m] / [-] a log is planar when every ego z and every up-axis tilt is below this
CORRIDOR_M = 4.0  # [m] within this lateral distance of the logged path, the logged poses place the ego
GRID_CELL_M = 1.0  # [m] ground grid cell
GRID_MIN_POINTS = 3  # LiDAR returns a cell needs to have a ground height
GRID_PERCENTILE = 10.0  # the ground height of a cell is this percentile of its returns' heights


@dataclass(frozen=True, eq=False)
class GroundGrid:
    """Ground heights on a regular grid in the world xy plane.

    Attributes:
        origin: (2,) world xy of cell (0, 0)'s corner [m]; cell_m: cell edge [m].
        heights: (H, W) ground height [m] per cell (row = y, column = x), NaN where no LiDAR return fell.
    """

    origin: np.ndarray
    cell_m: float
    heights: np.ndarray

    @classmethod
    def from_lidar(cls, log: SceneLog, cell_m: float = GRID_CELL_M, max_points: int = 400_000) -> "GroundGrid | None":
        """The grid of ``log``'s LiDAR returns in the world frame (None without LiDAR or returns)."""
        lid = log.lidar
        if lid is None or len(lid) == 0 or lid.points.shape[0] == 0:
            return None
        pts = []
        stride = max(1, lid.points.shape[0] // max_points)
        for t in range(len(lid)):
            p = lid.sweep(t)[::stride, :3].astype(np.float64)
            T = lid.ego_poses[t] @ lid.T_ego_from_lidar
            pts.append(p @ T[:3, :3].T + T[:3, 3])
        pts = np.concatenate(pts)
        if len(pts) == 0:
            return None
        origin = np.floor(pts[:, :2].min(axis=0) / cell_m) * cell_m
        ij = np.floor((pts[:, :2] - origin) / cell_m).astype(np.int64)
        W, H = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
        key = ij[:, 1] * W + ij[:, 0]
        order = np.lexsort((pts[:, 2], key))
        key, z = key[order], pts[order, 2]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        counts = np.diff(np.r_[starts, len(key)])
        heights = np.full(H * W, np.nan)
        ok = counts >= GRID_MIN_POINTS
        pick = starts + np.floor(counts * GRID_PERCENTILE / 100.0).astype(np.int64)
        heights[key[starts[ok]]] = z[pick[ok]]
        return cls(origin, float(cell_m), heights.reshape(H, W))

    def height(self, xy) -> np.ndarray:
        """(N,) ground height [m] at world points ``xy`` (N, 2): the mean of the known cells in the 3 x 3 cells
        around each point, NaN where none is known."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        ij = np.floor((xy - self.origin) / self.cell_m).astype(np.int64)
        H, W = self.heights.shape
        total = np.zeros(len(xy))
        count = np.zeros(len(xy))
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                i, j = ij[:, 0] + di, ij[:, 1] + dj
                inside = (i >= 0) & (i < W) & (j >= 0) & (j < H)
                h = np.full(len(xy), np.nan)
                h[inside] = self.heights[j[inside], i[inside]]
                known = np.isfinite(h)
                total[known] += h[known]
                count[known] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True, eq=False)
class GroundModel:
    """The logged ground under a planar ego state (see the module docstring).

    Attributes:
        path: the logged ego path in the xy plane (None when the ego never moved: the first pose then holds).
        path_z: (M,) logged ego origin height [m] at the path's vertices.
        path_up: (M, 3) logged ego up axis (unit, world frame) at the path's vertices.
        grid: the LiDAR ground grid, or None.
        ego_height: the logged ego origin's height above the LiDAR ground [m] (0 without a grid).
        corridor_m: lateral distance from the path within which the logged poses alone place the ego [m].
    """

    path: PolylinePath | None
    path_z: np.ndarray
    path_up: np.ndarray
    grid: GroundGrid | None
    ego_height: float
    corridor_m: float = CORRIDOR_M

    @classmethod
    def from_log(cls, log: SceneLog, corridor_m: float = CORRIDOR_M) -> "GroundModel | None":
        """The ground model of ``log``, or None when every logged ego pose is level at z = 0 (nothing to lift)."""
        ego = np.asarray(log.ego_poses, dtype=np.float64)
        up = ego[:, :3, 2]
        if np.abs(ego[:, 2, 3]).max() < PLANAR_TOLERANCE and np.abs(up - [0.0, 0.0, 1.0]).max() < PLANAR_TOLERANCE:
            return None
        xy = ego[:, :2, 3]
        keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
        path = PolylinePath(xy[keep]) if keep.sum() >= 2 else None
        # PolylinePath drops (near-)duplicate vertices too: take the poses of the vertices it kept
        idx = np.flatnonzero(keep)
        if path is not None and len(path.points) != len(idx):
            idx = idx[np.concatenate([[True], np.linalg.norm(np.diff(xy[idx], axis=0), axis=1) > 1e-9])]
        grid = GroundGrid.from_lidar(log)
        ego_height = 0.0
        if grid is not None:
            below = ego[:, 2, 3] - grid.height(xy)
            below = below[np.isfinite(below)]
            if len(below):
                ego_height = float(np.median(below))
            else:  # the LiDAR never sees right under the ego: the ground beside the path, one corridor away
                side = np.concatenate([xy + [0.0, corridor_m], xy - [0.0, corridor_m], xy + [corridor_m, 0.0],
                                       xy - [corridor_m, 0.0]])
                h = grid.height(side)
                ok = np.isfinite(h)
                ego_height = float(np.median(np.tile(ego[:, 2, 3], 4)[ok] - h[ok])) if ok.any() else 0.0
        return cls(path, ego[idx, 2, 3], up[idx] / np.linalg.norm(up[idx], axis=1, keepdims=True), grid, ego_height,
                   float(corridor_m))

    def height_and_up(self, x: float, y: float) -> tuple[float, np.ndarray]:
        """The ego origin's height [m] and up axis (3,) at world ``(x, y)``."""
        if self.path is None:
            foot, z0, up, lateral = np.array([x, y]), float(self.path_z[0]), self.path_up[0], 0.0
        else:
            s, lat = self.path.project([[x, y]])
            s, lateral = float(np.clip(s[0], 0.0, self.path.length)), abs(float(lat[0]))
            ps = self.path.s
            i = int(np.clip(np.searchsorted(ps, s, side="right") - 1, 0, len(ps) - 2))
            w = float(np.clip((s - ps[i]) / max(ps[i + 1] - ps[i], 1e-12), 0.0, 1.0))
            z0 = float((1 - w) * self.path_z[i] + w * self.path_z[i + 1])
            up = (1 - w) * self.path_up[i] + w * self.path_up[i + 1]
            up = up / np.linalg.norm(up)
            foot = self.path.interpolate(s)[0]
        # the plane through the logged pose with the logged up axis
        z = z0 - (up[0] * (x - foot[0]) + up[1] * (y - foot[1])) / up[2]
        if self.grid is not None and lateral > self.corridor_m:
            g = float(self.grid.height([[x, y]])[0])
            if np.isfinite(g):
                blend = min(1.0, (lateral - self.corridor_m) / self.corridor_m)
                z = (1.0 - blend) * z + blend * (g + self.ego_height)
        return float(z), up

    def pose(self, x: float, y: float, yaw: float) -> np.ndarray:
        """(4, 4) ``T_world_from_ego`` of the planar state (x [m], y [m], yaw [rad]): the ego origin at the ground
        model's height, its up axis the logged one, its forward axis the heading ``yaw`` tilted onto that plane."""
        z, up = self.height_and_up(x, y)
        c, s = np.cos(yaw), np.sin(yaw)
        fwd = np.array([c, s, -(up[0] * c + up[1] * s) / up[2]])  # in the plane, same heading in xy
        fwd /= np.linalg.norm(fwd)
        left = np.cross(up, fwd)
        left /= np.linalg.norm(left)
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = fwd, left, np.cross(fwd, left), (x, y, z)
        return T
