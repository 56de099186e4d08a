"""A drivable area for a log without a map: the LiDAR ground connected to the driven corridor.

Real logs such as DGP / DDAD come without a map, so nothing would ever be off-road. :func:`lidar_drivable_area`
builds a stand-in (a shapely geometry in the world xy plane, like ``SceneMap.drivable_area``) from two facts:

* **the driven corridor** (:func:`driven_corridor`): the logged ego footprints and the logged path, grown by half a
  lane (``half_lane`` [m]) — the logged ego certainly drove there;
* **the LiDAR ground** (:class:`~stag_sim.ground.GroundGrid`: 1 m cells holding the 10th-percentile height of the
  returns): a cell is road when its ground height is within ``height_tolerance`` of the road height at the nearest
  logged ego pose (the median ground height in that pose's corridor; the ego z itself where the LiDAR saw none), and
  it is reachable from the corridor through road cells whose heights step by at most ``max_step`` from cell to cell
  (a curb, 0.1-0.2 m, stops it; road camber and grade, a few cm per metre, do not). Cells farther than
  ``max_distance`` from the logged path are left out.

Holes of up to ``max_hole_m2`` inside the road (cells without returns: the LiDAR shadows of cars, of the ego
itself; small bumps) are filled. Tracked vehicles (``vehicle.*``) are added where their footprints come within a
cell of the road, at every logged time: a parked or moving car stands on road the LiDAR cannot see under, and
driving into it must be the collision check's business, not the off-road check's. Nothing is cut out (collisions
with tracked boxes are checked on their own); the LiDAR shadow behind a car stays off-road unless it is a small
enclosed hole.

What it cannot know: lanes, driving direction, traffic lights (the metrics report those as not scored), and ground
the LiDAR never saw (beyond its range, behind walls) is off-road.
"""

from __future__ import annotations

import weakref

import numpy as np

from stag_sim.ground import GroundGrid
from stag_sim.scene_log import SceneLog

HALF_LANE = 1.75  # [m] the driven corridor is the logged ego footprints grown by this
HEIGHT_TOLERANCE = 0.25  # [m] a road cell's ground height is within this of the road height at the nearest pose
MAX_STEP = 0.1  # [m] largest height step between neighbouring road cells (1 m apart)
MAX_DISTANCE = 40.0  # [m] road cells are at most this far from the logged path
MAX_HOLE_M2 = 30.0  # [m^2] holes in the road up to this area (LiDAR shadows) are filled
SIMPLIFY_M = 0.25  # [m] tolerance of the outline's simplification

_CACHE: "weakref.WeakKeyDictionary[SceneLog, dict]" = weakref.WeakKeyDictionary()


def footprints(poses: np.ndarray, length: float, width: float, centre_offset: float = 0.0) -> list:
    """Shapely footprints (``length`` x ``width`` [m] boxes centred ``centre_offset`` [m] ahead of the pose's
    origin along its x axis) of ``poses`` (N, 4, 4) ``T_world_from_body``, in the world xy plane."""
    from shapely import box
    from shapely.affinity import affine_transform

    foot = box(centre_offset - length / 2.0, -width / 2.0, centre_offset + length / 2.0, width / 2.0)
    # the rotation's xy block as is: a pitched or rolled body's footprint is its projection onto the plane
    return [affine_transform(foot, [T[0, 0], T[0, 1], T[1, 0], T[1, 1], T[0, 3], T[1, 3]]) for T in poses]


def driven_corridor(log: SceneLog, length: float, width: float, centre_offset: float, half_lane: float = HALF_LANE):
    """The logged ego's footprints (``length`` x ``width`` [m] boxes centred ``centre_offset`` [m] ahead of the
    rear axle, at every logged pose) and the logged path, grown by ``half_lane`` [m]: a shapely Polygon."""
    from shapely import union_all
    from shapely.geometry import LineString, Point

    ego = np.asarray(log.ego_poses, dtype=np.float64)
    parts = footprints(ego, length, width, centre_offset)
    xy = ego[:, :2, 3]
    path = LineString(xy) if np.linalg.norm(np.diff(xy, axis=0), axis=1).sum() > 1e-3 else Point(xy[0])
    parts.append(path.buffer(width / 2.0))
    return union_all(parts).buffer(half_lane)


def _road_heights(grid: GroundGrid, ego: np.ndarray, centres: np.ndarray,
                  radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (flattened, as ``centres`` (N, 2)): the index of the nearest logged pose and its distance [m]; and per
    logged pose (T,): the road height [m] (median ground height of the cells within ``radius`` of it, else the
    pose's z shifted by the median ground-minus-z offset of the poses that have one, else the pose's z)."""
    from scipy.spatial import cKDTree

    dist, near = cKDTree(ego[:, :2, 3]).query(centres)
    h = grid.heights.ravel()
    road = np.full(len(ego), np.nan)
    ok = np.flatnonzero(np.isfinite(h) & (dist <= radius))
    ok = ok[np.argsort(near[ok], kind="stable")]
    poses, starts = np.unique(near[ok], return_index=True)
    for t, cells in zip(poses, np.split(ok, starts[1:])):
        road[t] = np.median(h[cells])
    known = np.isfinite(road)
    offset = float(np.median(road[known] - ego[known, 2, 3])) if known.any() else 0.0
    road[~known] = ego[~known, 2, 3] + offset
    return near, dist, road


def _connected_to(seeds: np.ndarray, candidate: np.ndarray, heights: np.ndarray, max_step: float) -> np.ndarray:
    """(H, W) bool: the ``candidate`` cells reachable from a ``seeds`` cell through 4-neighbour candidate cells whose
    heights differ by at most ``max_step`` [m]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    H, W = candidate.shape
    idx = np.arange(H * W).reshape(H, W)
    rows, cols = [], []
    for a, b, ha, hb, ca, cb in ((idx[:, :-1], idx[:, 1:], heights[:, :-1], heights[:, 1:], candidate[:, :-1], candidate[:, 1:]),
                                 (idx[:-1], idx[1:], heights[:-1], heights[1:], candidate[:-1], candidate[1:])):
        with np.errstate(invalid="ignore"):
            edge = ca & cb & (np.abs(ha - hb) <= max_step)
        rows.append(a[edge])
        cols.append(b[edge])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(H * W, H * W))
    _, label = connected_components(graph, directed=False)
    label = label.reshape(H, W)
    keep = np.unique(label[seeds & candidate])
    return candidate & np.isin(label, keep)


def _fill_small_holes(mask: np.ndarray, max_cells: int) -> np.ndarray:
    """``mask`` with its holes (8-connected background parts not touching the border) of up to ``max_cells`` filled."""
    from scipy import ndimage

    label, n = ndimage.label(~mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(label.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]]))
    small = sizes <= max_cells
    small[0] = False
    small[border] = False
    return mask | small[label]


def _cells_polygon(mask: np.ndarray, origin: np.ndarray, cell_m: float):
    """The union of the ``mask`` cells (row = y, column = x) as a shapely geometry: one box per run of a row."""
    from shapely import box, union_all

    boxes = []
    for j in np.flatnonzero(mask.any(axis=1)):
        row = np.concatenate([[False], mask[j], [False]]).astype(np.int8)
        d = np.diff(row)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        y0 = origin[1] + j * cell_m
        boxes.extend(box(origin[0] + s * cell_m, y0, origin[0] + e * cell_m, y0 + cell_m) for s, e in zip(starts, ends))
    return union_all(boxes)


def lidar_drivable_area(log: SceneLog, length: float, width: float, centre_offset: float,
                        grid: GroundGrid | None = None, half_lane: float = HALF_LANE,
                        height_tolerance: float = HEIGHT_TOLERANCE, max_step: float = MAX_STEP,
                        max_distance: float = MAX_DISTANCE, max_hole_m2: float = MAX_HOLE_M2):
    """The drivable area of ``log`` from its LiDAR ground and its driven corridor (see the module docstring): a
    shapely Polygon / MultiPolygon in the world xy plane [m], or None when the log has no LiDAR returns.

    ``length``, ``width``, ``centre_offset`` [m]: the ego box (as :meth:`stag_sim.world.World.ego_box`); ``grid``:
    the log's ground grid when already built (:meth:`GroundGrid.from_lidar`). Results are cached per log object and
    settings (a log's worlds for several start frames share one)."""
    key = (float(length), float(width), float(centre_offset), half_lane, height_tolerance, max_step, max_distance,
           max_hole_m2)
    cached = _CACHE.setdefault(log, {})
    if key in cached:
        return cached[key]
    grid = grid if grid is not None else GroundGrid.from_lidar(log)
    if grid is None:
        cached[key] = None
        return None
    corridor = driven_corridor(log, length, width, centre_offset, half_lane)
    H, W = grid.heights.shape
    jj, ii = np.mgrid[0:H, 0:W]
    centres = np.stack([ii.ravel(), jj.ravel()], axis=1) * grid.cell_m + grid.origin + 0.5 * grid.cell_m
    ego = np.asarray(log.ego_poses, dtype=np.float64)
    near, dist, road = _road_heights(grid, ego, centres, half_lane + width / 2.0)
    with np.errstate(invalid="ignore"):
        candidate = (np.abs(grid.heights.ravel() - road[near]) <= height_tolerance) & (dist <= max_distance)
    seeds = (dist <= half_lane + width / 2.0).reshape(H, W)
    mask = _connected_to(seeds, candidate.reshape(H, W), grid.heights, max_step)
    mask = _fill_small_holes(mask, int(max_hole_m2 / grid.cell_m ** 2))
    area = corridor
    if mask.any():
        area = _cells_polygon(mask, grid.origin, grid.cell_m).simplify(SIMPLIFY_M).union(corridor)
    area = _with_vehicles(log, area, grid.cell_m)
    cached[key] = area
    return area


def _with_vehicles(log: SceneLog, area, reach: float):
    """``area`` with the footprints of the tracked vehicles (``vehicle.*``, at every logged time they exist) that
    come within ``reach`` [m] of it: a vehicle stands on road the LiDAR cannot see under, and driving into it
    must be a collision, not an off-road."""
    from shapely import union_all

    obj = log.objects
    poses, valid, sizes = np.asarray(obj.poses), np.asarray(obj.valid), np.asarray(obj.sizes)
    grown = area.buffer(reach)
    cars = []
    for k, cat in enumerate(obj.categories):
        if cat.startswith("vehicle.") and valid[:, k].any():
            cars.extend(f for f in footprints(poses[valid[:, k], k], sizes[k, 0], sizes[k, 1]) if f.intersects(grown))
    return union_all([area, *cars]) if cars else area
