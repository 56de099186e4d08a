"""The procedural synthetic town: layout, lane graph, static props, traffic and ground textures.

:func:`build_town` turns a seed into a :class:`Town`, a frozen description of everything the oracle ray caster
(:mod:`stag_sim.synth.oracle`) needs, drawn from ``np.random.default_rng(seed)`` in a fixed order (same seed, same
town, same bytes).

Layout (flat ground, z = 0; right-hand traffic):

* A *ring road*: a rounded rectangle of half-extents ``(W, H)`` [m] with corner radius ``R`` (the curves), and a
  straight *cross road* along y = 0 that meets the ring at two T-junctions, ``jE`` at (W, 0) and ``jW`` at (-W, 0).
* Every road has one lane per direction (:data:`LANE_WIDTH`), a 2 m parking strip on each side, a kerb and a
  sidewalk. Lane centrelines are split at the junctions and joined by cubic-Bezier connector lanes for every
  non-U-turn movement, so the lane graph has real branching (an incoming lane has a straight and a turning successor).
* Buildings line the straight roads (outside the sidewalks), trees and street lights stand on the sidewalks,
  parked cars sit in the parking strips.
* Traffic runs on four closed *loops* through the lane graph at constant speeds (vehicles sharing a lane share its
  loop speed, so they never catch up): the full counter-clockwise ring (also the ego's route), the full clockwise
  ring, and two loops that use the cross road and half of the clockwise ring. Candidate vehicles are sampled and
  rejected when their boxes would come within a margin of another vehicle or the ego during the first
  :data:`TRAFFIC_HORIZON_S` seconds, so motion is an analytic function of time (arc length = s0 + v t along a
  densely sampled loop polyline) and collision-free over that horizon.

Everything rendered is a set of oriented boxes on a textured ground plane. A vehicle is drawn as boxes that lie
inside its tracked box (body + cabin), so its box in :class:`~stag_sim.scene_log.ObjectTracks` is exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.geometry import pose_xy_yaw

LANE_WIDTH = 3.5  # [m]
PARKING_WIDTH = 2.0  # [m] parking strip outside each lane
ROAD_HALF_WIDTH = LANE_WIDTH + PARKING_WIDTH  # [m] centreline to kerb
KERB_WIDTH = 0.25  # [m] painted kerb stone stripe on the sidewalk side of the kerb line
SIDEWALK_WIDTH = 4.0  # [m]
BUILDING_SETBACK = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + 1.0  # [m] centreline to the nearest building front
JUNCTION_REACH = 12.0  # [m] lanes stop this far from a junction centre; connectors span the rest
MARKING_WIDTH = 0.15  # [m] painted line width
DASH_LENGTH, DASH_PERIOD = 3.0, 9.0  # [m] centre-line dash and dash + gap
STOP_LINE_WIDTH = 0.4  # [m]
GROUND_RES = 0.05  # [m/texel] ground albedo map resolution (mip level 0)
GROUND_MARGIN = 32.0  # [m] ground map extent beyond the ring road's centreline
GROUND_MIP_LEVELS = 3  # mip levels at 0.05, 0.2 and 0.8 m/texel
GROUND_MIP_FACTOR = 4  # linear downsampling factor between mip levels
NOISE_TILE = 256  # [texels] side of the periodic noise tiles
TRAFFIC_HORIZON_S = 120.0  # [s] traffic is checked collision-free over [0, TRAFFIC_HORIZON_S]
TRAFFIC_CHECK_DT = 0.1  # [s] time step of that check
TRAFFIC_MARGIN = (0.6, 0.3)  # [m] extra half-length and half-width kept clear around every moving box
NUM_MOVING_TARGET = 8  # moving vehicles the generator tries to place
MIN_MOVING = 5  # fewer than this is a generator bug
MAX_PARKED = 24
EGO_SIZE = (4.08, 1.73, 1.56)  # [m] length, width, height of the (invisible) ego box, for traffic clearance
EGO_REAR_AXLE_TO_CENTRE = 1.35  # [m] ego box centre ahead of the rear axle
EGO_START_BEFORE_CURVE = 15.0  # [m] the ego starts this far before the south-east curve, then meets junction jE

# Box kinds (materials) understood by the oracle's shader.
KIND_BUILDING, KIND_TRUNK, KIND_CROWN, KIND_POLE, KIND_CAR_BODY, KIND_CAR_CABIN = range(6)


# --- paths -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoopPath:
    """A closed polyline parametrised by arc length, with smoothly interpolated heading.

    Attributes:
        points: (N + 1, 2) float64 vertices [m]; the last equals the first.
        s: (N + 1,) float64 cumulative arc length [m]; ``s[-1]`` is the loop length.
        heading: (N + 1,) float64 unwrapped vertex headings [rad].
    """

    points: np.ndarray
    s: np.ndarray
    heading: np.ndarray

    @classmethod
    def from_points(cls, pts: np.ndarray) -> "LoopPath":
        pts = np.asarray(pts, np.float64)
        keep = np.concatenate([[True], np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6])
        pts = pts[keep]
        if np.linalg.norm(pts[-1] - pts[0]) < 1e-6:
            pts = pts[:-1]
        closed = np.concatenate([pts, pts[:1]])
        seg = np.diff(closed, axis=0)
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
        seg_heading = np.arctan2(seg[:, 1], seg[:, 0])
        prev = np.roll(seg_heading, 1)
        # vertex heading: mean direction of the two adjacent segments
        vh = prev + np.angle(np.exp(1j * (seg_heading - prev))) / 2
        vh = np.unwrap(np.concatenate([vh, vh[:1]]))
        return cls(closed, s, vh)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def pose(self, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) [m, m, rad] at arc length(s) ``s`` [m] (taken modulo the loop length)."""
        s = np.mod(np.asarray(s, np.float64), self.length)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 2)
        f = (s - self.s[i]) / (self.s[i + 1] - self.s[i])
        xy = self.points[i] * (1 - f)[..., None] + self.points[i + 1] * f[..., None]
        h = self.heading[i] * (1 - f) + self.heading[i + 1] * f
        return xy[..., 0], xy[..., 1], h

    def project(self, xy) -> float:
        """Arc length [m] of the vertex nearest to point ``xy``."""
        return float(self.s[np.argmin(np.linalg.norm(self.points[:-1] - np.asarray(xy), axis=1))])


# --- the town ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Town:
    """Everything the oracle needs to render one synthetic town at any time. Arrays are read-only.

    Attributes:
        seed: the seed it was built from.
        half_extent: (W, H) [m] ring road half-extents; ``corner_radius`` R [m].
        scene_map: the :class:`~stag_sim.scene_log.SceneMap` (drivable area, lanes, successors).
        loops: closed traffic loops; ``loops[0]`` is the ego's route.
        ego_s0, ego_speed: ego arc length at time 0 [m] on ``loops[0]`` and its constant speed [m/s].
        box_centres, box_rotations, box_half_sizes: (N, 3), (N, 3, 3), (N, 3) float64 static boxes (world frame) [m].
        box_kinds: (N,) int8 material (``KIND_*``); box_colors: (N, 3) float32 base albedo [0..255];
        box_params: (N, 2) float32 per-box shading parameters (buildings: window spacing, floor height [m]).
        instance_ids, categories: tracked objects (moving vehicles first, then parked cars).
        sizes: (K, 3) float64 (length, width, height) [m].
        object_colors: (K, 3) float32 paint albedo.
        object_loop: (K,) int loop index, -1 for parked; object_s0 [m], object_speed [m/s]: (K,) float64.
        parked_poses: (K, 4, 4) float64 ``T_world_from_object`` of parked cars (identity for moving ones).
        ground_mips: albedo maps (rows along world y, columns along world x) of the ground, uint8 RGB,
            level l at ``GROUND_RES * GROUND_MIP_FACTOR**l`` [m/texel]; ground_origin: (x0, y0) [m] of texel edge 0.
        noise_tile: (NOISE_TILE, NOISE_TILE) float32 zero-mean periodic noise for box-face textures.
    """

    seed: int
    half_extent: tuple[float, float]
    corner_radius: float
    scene_map: object
    loops: tuple[LoopPath, ...]
    ego_s0: float
    ego_speed: float
    box_centres: np.ndarray
    box_rotations: np.ndarray
    box_half_sizes: np.ndarray
    box_kinds: np.ndarray
    box_colors: np.ndarray
    box_params: np.ndarray
    instance_ids: tuple[str, ...]
    categories: tuple[str, ...]
    sizes: np.ndarray
    object_colors: np.ndarray
    object_loop: np.ndarray
    object_s0: np.ndarray
    object_speed: np.ndarray
    parked_poses: np.ndarray
    ground_mips: tuple[np.ndarray, ...]
    ground_origin: tuple[float, float]
    noise_tile: np.ndarray

    @property
    def num_objects(self) -> int:
        return len(self.instance_ids)

    def ego_pose(self, time_s: float) -> np.ndarray:
        """(4, 4) ``T_world_from_ego`` at ``time_s`` [s]: rear axle on the lane centreline, z = 0."""
        x, y, h = self.loops[0].pose(self.ego_s0 + self.ego_speed * float(time_s))
        return pose_xy_yaw(x, y, h)

    def object_poses(self, time_s: float) -> np.ndarray:
        """(K, 4, 4) ``T_world_from_object`` (box centres) of all tracked objects at ``time_s`` [s]."""
        poses = self.parked_poses.copy()
        for k in np.flatnonzero(self.object_loop >= 0):
            x, y, h = self.loops[self.object_loop[k]].pose(self.object_s0[k] + self.object_speed[k] * float(time_s))
            poses[k] = pose_xy_yaw(x, y, h, self.sizes[k, 2] / 2)
        return poses


def car_parts(size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes a car of ``size`` (length, width, height) [m] is drawn with, all inside its tracked box.

    Returns (P, 3) part centres in the object frame [m], (P, 3) half sizes [m] and (P,) kinds:
    a body from 0.3 m above the ground to 10 % of the height above the box centre, and a cabin on top.
    """
    L, Wd, Hh = (float(v) for v in size)
    clearance = 0.3  # [m]
    body_top = 0.1 * Hh
    body = ([0.0, 0.0, (-Hh / 2 + clearance + body_top) / 2], [L / 2, Wd / 2, (body_top - (-Hh / 2 + clearance)) / 2])
    cabin_x0, cabin_x1 = -0.32 * L, 0.18 * L
    cabin = ([(cabin_x0 + cabin_x1) / 2, 0.0, (body_top + Hh / 2) / 2],
             [(cabin_x1 - cabin_x0) / 2, Wd / 2 - 0.1, (Hh / 2 - body_top) / 2])
    centres = np.array([body[0], cabin[0]])
    halves = np.array([body[1], cabin[1]])
    return centres, halves, np.array([KIND_CAR_BODY, KIND_CAR_CABIN], np.int8)


# --- road geometry -----------------------------------------------------------------------------------------------


def _ring_centreline(W: float, H: float, R: float, step: float = 0.25) -> np.ndarray:
    """(N, 4) samples (x, y, tx, ty) of the ring road centreline, counter-clockwise from (W, 0) [m]."""
    a, b = H - R, W - R
    pieces = []

    def straight(p0, p1):
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        n = max(int(np.ceil(np.linalg.norm(p1 - p0) / step)), 1)
        f = np.arange(n)[:, None] / n
        t = (p1 - p0) / np.linalg.norm(p1 - p0)
        pieces.append(np.concatenate([p0 + f * (p1 - p0), np.tile(t, (n, 1))], 1))

    def arc(c, a0):
        n = max(int(np.ceil(R * np.pi / 2 / step)), 1)
        ang = a0 + np.arange(n) / n * np.pi / 2
        pieces.append(np.stack([c[0] + R * np.cos(ang), c[1] + R * np.sin(ang), -np.sin(ang), np.cos(ang)], 1))

    straight((W, 0.0), (W, a))
    arc((b, a), 0.0)
    straight((b, H), (-b, H))
    arc((-b, a), np.pi / 2)
    straight((-W, a), (-W, -a))
    arc((-b, -a), np.pi)
    straight((-b, -H), (b, -H))
    arc((b, -a), 3 * np.pi / 2)
    straight((W, -a), (W, 0.0))
    return np.concatenate(pieces)


def _bezier(p0, h0, p1, h1, step: float = 0.25) -> np.ndarray:
    """Cubic Bezier from p0 (heading h0) to p1 (heading h1), sampled every ~``step`` [m], endpoints included."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    k = 0.4 * np.linalg.norm(p1 - p0)
    c0 = p0 + k * np.array([np.cos(h0), np.sin(h0)])
    c1 = p1 - k * np.array([np.cos(h1), np.sin(h1)])
    n = max(int(np.ceil(1.3 * np.linalg.norm(p1 - p0) / step)), 2)
    u = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - u) ** 3 * p0 + 3 * (1 - u) ** 2 * u * c0 + 3 * (1 - u) * u ** 2 * c1 + u ** 3 * p1


def _lane_graph(W: float, H: float, R: float):
    """Lane centrelines (id -> (N, 2) points, driving direction), successors (id -> tuple of ids) and the ring
    road's centreline samples (see :func:`_ring_centreline`)."""
    ring = _ring_centreline(W, H, R)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ring[:, :2], axis=0), axis=1))])
    L = s[-1] + np.linalg.norm(ring[0, :2] - ring[-1, :2])
    outward = np.stack([ring[:, 3], -ring[:, 2]], 1)  # right of the counter-clockwise direction
    ccw = ring[:, :2] + outward * LANE_WIDTH / 2
    cw = ring[:, :2] - outward * LANE_WIDTH / 2
    jr = JUNCTION_REACH

    def piece(lane_pts, s0, s1):
        ext = np.concatenate([lane_pts, lane_pts[:1]])
        se = np.concatenate([s, [L]])
        m = (se >= s0) & (se <= s1)
        return ext[m]

    # the junction jE sits at s = 0 (= L), jW at s = L / 2 (the ring is point-symmetric)
    lanes = {
        "ring-ccw-n": piece(ccw, jr, L / 2 - jr),
        "ring-ccw-s": piece(ccw, L / 2 + jr, L - jr),
        "ring-cw-n": piece(cw, jr, L / 2 - jr)[::-1],
        "ring-cw-s": piece(cw, L / 2 + jr, L - jr)[::-1],
        "cross-e": np.array([[-W + jr, -LANE_WIDTH / 2], [W - jr, -LANE_WIDTH / 2]]),
        "cross-w": np.array([[W - jr, LANE_WIDTH / 2], [-W + jr, LANE_WIDTH / 2]]),
    }
    # junction -> (incoming lanes, outgoing lanes)
    junctions = {
        "jE": (("ring-ccw-s", "ring-cw-n", "cross-e"), ("ring-ccw-n", "ring-cw-s", "cross-w")),
        "jW": (("ring-ccw-n", "ring-cw-s", "cross-w"), ("ring-ccw-s", "ring-cw-n", "cross-e")),
    }
    successors = {lid: [] for lid in lanes}

    def heading(pts, end):
        d = pts[-1] - pts[-2] if end else pts[1] - pts[0]
        return float(np.arctan2(d[1], d[0]))

    for jid, (ins, outs) in junctions.items():
        for a in ins:
            for b in outs:
                ha, hb = heading(lanes[a], True), heading(lanes[b], False)
                if np.cos(hb - ha) < -0.9:  # U-turn
                    continue
                cid = f"{jid}:{a}>{b}"
                lanes[cid] = _bezier(lanes[a][-1], ha, lanes[b][0], hb)
                successors[a].append(cid)
                successors[cid] = [b]
    return lanes, {k: tuple(v) for k, v in successors.items()}, ring


def _loop_from_lanes(lanes: dict, ids: list[str]) -> LoopPath:
    return LoopPath.from_points(np.concatenate([lanes[i] for i in ids]))


def _scene_map(lanes: dict, successors: dict, road_lines):
    from shapely.geometry import LineString
    from shapely.ops import unary_union

    from stag_sim.scene_log import SceneMap

    drivable = unary_union([ln.buffer(ROAD_HALF_WIDTH, cap_style="flat", join_style="round") for ln in road_lines])
    ids = tuple(lanes)
    return SceneMap(drivable_area=drivable, lane_ids=ids, lanes=tuple(LineString(lanes[i]) for i in ids),
                    successors=tuple(successors[i] for i in ids)).validate()


# --- textures ----------------------------------------------------------------------------------------------------


def periodic_noise(rng: np.random.Generator, n: int, feature_texels: float) -> np.ndarray:
    """(n, n) float32 smooth periodic noise, zero mean, unit std, features ~``feature_texels`` wide."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-f2 * (np.pi * feature_texels) ** 2 / 2)))
    out -= out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _raster_geoms(geoms, shape, origin, res, thickness_m: float | None = None) -> np.ndarray:
    """Anti-aliased uint8 mask of shapely polygons (filled) or lines (``thickness_m`` wide) on the ground grid."""
    import cv2

    shift = 4
    scale = (1 << shift) / res
    mask = np.zeros(shape, np.uint8)

    def px(coords):
        c = np.asarray(coords, np.float64)[:, :2]
        return np.round((c - np.asarray(origin)) * scale - 0.5 * (1 << shift)).astype(np.int32)

    for g in geoms:
        parts = getattr(g, "geoms", [g])
        for p in parts:
            if p.is_empty:
                continue
            if p.geom_type == "Polygon":
                cv2.fillPoly(mask, [px(p.exterior.coords)], 255, cv2.LINE_AA, shift)
                for hole in p.interiors:
                    cv2.fillPoly(mask, [px(hole.coords)], 0, cv2.LINE_AA, shift)
            else:
                th = max(int(round(thickness_m / res)), 1)
                cv2.polylines(mask, [px(p.coords)], False, 255, th, cv2.LINE_AA, shift)
    return mask


def _ground_albedo(rng, W, H, road_lines) -> tuple[tuple[np.ndarray, ...], tuple[float, float]]:
    """Ground albedo mip chain (grass, sidewalk tiles, kerb, asphalt, markings) and its origin [m]."""
    import cv2
    from shapely.geometry import LineString, box
    from shapely.ops import substring, unary_union

    x0, y0 = -W - GROUND_MARGIN, -H - GROUND_MARGIN
    nx = int(np.ceil(2 * (W + GROUND_MARGIN) / GROUND_RES))
    ny = int(np.ceil(2 * (H + GROUND_MARGIN) / GROUND_RES))
    shape, origin = (ny, nx), (x0, y0)
    road = unary_union([ln.buffer(ROAD_HALF_WIDTH, cap_style="flat") for ln in road_lines])
    kerb = unary_union([ln.buffer(ROAD_HALF_WIDTH + KERB_WIDTH, cap_style="flat") for ln in road_lines])
    walk = unary_union([ln.buffer(ROAD_HALF_WIDTH + SIDEWALK_WIDTH) for ln in road_lines])
    jr = JUNCTION_REACH
    junction_boxes = unary_union([box(W - jr, -jr, W + ROAD_HALF_WIDTH + 1, jr),
                                  box(-W - ROAD_HALF_WIDTH - 1, -jr, -W + jr, jr)])
    solid, dashes = [], []
    for ln in road_lines:
        for side in (1, -1):
            solid.append(ln.offset_curve(side * LANE_WIDTH).difference(junction_boxes))
        for a in np.arange(0.0, ln.length - DASH_LENGTH, DASH_PERIOD):
            d = substring(ln, a, a + DASH_LENGTH)
            if not d.intersects(junction_boxes):
                dashes.append(d)
    stops = [LineString([(s * (W - jr), 0.0), (s * (W - jr), -s * LANE_WIDTH)]) for s in (1, -1)]
    m_walk = _raster_geoms([walk], shape, origin, GROUND_RES)
    m_kerb = _raster_geoms([kerb], shape, origin, GROUND_RES)
    m_road = _raster_geoms([road], shape, origin, GROUND_RES)
    m_mark = _raster_geoms(solid + dashes, shape, origin, GROUND_RES, MARKING_WIDTH)
    m_mark = np.maximum(m_mark, _raster_geoms(stops, shape, origin, GROUND_RES, STOP_LINE_WIDTH))

    grain = periodic_noise(rng, NOISE_TILE, 2.5)  # ~12 cm grain at 5 cm/texel, 12.8 m period
    stain = periodic_noise(rng, 2 * NOISE_TILE, 40.0)  # ~2 m stains, 25.6 m period
    grass_c = np.array([86, 118, 58], np.float32)
    walk_c = np.array([168, 164, 156], np.float32)
    kerb_c = np.array([196, 194, 188], np.float32)
    asphalt_c = np.array([82, 82, 86], np.float32)
    mark_c = np.array([232, 232, 226], np.float32)
    out = np.empty((ny, nx, 3), np.uint8)
    cols = np.arange(nx)
    xs = x0 + (cols + 0.5) * GROUND_RES
    for r0 in range(0, ny, 512):
        rows = np.arange(r0, min(r0 + 512, ny))
        ys = y0 + (rows + 0.5) * GROUND_RES
        g = grain[np.ix_(rows % NOISE_TILE, cols % NOISE_TILE)][..., None]
        st = stain[np.ix_(rows % (2 * NOISE_TILE), cols % (2 * NOISE_TILE))][..., None]
        # 2 m x 2 m sidewalk slabs: soft dark joints ~5 cm wide
        jx = np.exp(-((1.0 - np.abs(((xs + 1.0) % 2.0) - 1.0)) / 0.04) ** 2).astype(np.float32)
        jy = np.exp(-((1.0 - np.abs(((ys + 1.0) % 2.0) - 1.0)) / 0.04) ** 2).astype(np.float32)
        joints = np.maximum(jx[None, :], jy[:, None])[..., None]
        col = grass_c * (1 + 0.10 * g + 0.12 * st)
        sw = walk_c * (1 + 0.04 * g + 0.05 * st) * (1 - 0.18 * joints)
        a = m_walk[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + sw * a
        a = m_kerb[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + kerb_c * (1 + 0.03 * g) * a
        a = m_road[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + asphalt_c * (1 + 0.07 * g + 0.09 * st) * a
        a = m_mark[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + mark_c * (1 + 0.02 * g) * a
        out[rows] = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    mips = [out]
    for _ in range(1, GROUND_MIP_LEVELS):
        prev = mips[-1]
        size = (max(prev.shape[1] // GROUND_MIP_FACTOR, 1), max(prev.shape[0] // GROUND_MIP_FACTOR, 1))
        mips.append(cv2.resize(prev, size, interpolation=cv2.INTER_AREA))
    return tuple(mips), origin


# --- props -------------------------------------------------------------------------------------------------------


class _BoxList:
    """Accumulates static boxes (centre, yaw, half sizes, kind, colour, params)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, x, y, z, yaw, hs, kind, color, params=(0.0, 0.0)) -> None:
        self.rows.append((x, y, z, yaw, *hs, kind, *color, *params))

    def arrays(self):
        a = np.array(self.rows, np.float64).reshape(-1, 13)
        c, s = np.cos(a[:, 3]), np.sin(a[:, 3])
        Rm = np.zeros((len(a), 3, 3))
        Rm[:, 0, 0], Rm[:, 0, 1], Rm[:, 1, 0], Rm[:, 1, 1], Rm[:, 2, 2] = c, -s, s, c, 1.0
        return (a[:, :3].copy(), Rm, a[:, 4:7].copy(), a[:, 7].astype(np.int8), a[:, 8:11].astype(np.float32),
                a[:, 11:13].astype(np.float32))


def _sample_line(pts: np.ndarray, step: float):
    """Points, unit tangents and arc lengths every ``step`` [m] along polyline ``pts``."""
    seg = np.diff(pts, axis=0)
    sl = np.linalg.norm(seg, axis=1)
    s = np.concatenate([[0.0], np.cumsum(sl)])
    q = np.arange(0.0, s[-1], step)
    i = np.clip(np.searchsorted(s, q, side="right") - 1, 0, len(seg) - 1)
    f = ((q - s[i]) / sl[i])[:, None]
    return pts[i] + f * seg[i], seg[i] / sl[i][:, None], q


BUILDING_COLORS = np.array([[176, 92, 70], [196, 170, 140], [150, 150, 146], [214, 200, 172], [120, 84, 70],
                            [188, 180, 168], [160, 120, 96], [206, 186, 150]], np.float32)  # brick / plaster albedo
CAR_COLORS = np.array([[200, 30, 30], [30, 60, 160], [225, 225, 225], [25, 25, 28], [140, 140, 145],
                       [30, 110, 60], [220, 170, 30], [90, 40, 110], [170, 90, 40]], np.float32)


def _props(rng, W, H, R, road_lines, jcentres):
    """Buildings, trees and street lights (static boxes) and parked car poses/sizes."""
    from shapely.geometry import Point, Polygon
    from shapely.ops import unary_union

    boxes = _BoxList()
    road_zone = unary_union([ln.buffer(BUILDING_SETBACK - 0.3) for ln in road_lines])
    footprints: list = []
    a = H - R
    # straight road pieces: (start, end) of the centreline
    straights = [((W, -a), (W, a)), ((W - R, H), (-W + R, H)), ((-W, a), (-W, -a)), ((-W + R, -H), (W - R, -H)),
                 ((-W, 0.0), (W, 0.0))]
    for p0, p1 in straights:
        p0, p1 = np.array(p0), np.array(p1)
        t = (p1 - p0) / np.linalg.norm(p1 - p0)
        n_left = np.array([-t[1], t[0]])
        length = float(np.linalg.norm(p1 - p0))
        yaw = float(np.arctan2(t[1], t[0]))
        for side in (1.0, -1.0):
            pos = float(rng.uniform(0.0, 4.0))
            while True:
                w = float(rng.uniform(8.0, 18.0))
                d = float(rng.uniform(8.0, 14.0))
                h = float(rng.uniform(6.0, 22.0))
                front = BUILDING_SETBACK + float(rng.uniform(0.0, 1.5))
                color = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))] * rng.uniform(0.9, 1.1, 3)
                params = (float(rng.uniform(2.4, 3.4)), float(rng.uniform(2.9, 3.5)))
                gap = float(rng.uniform(1.0, 5.0))
                if pos + w > length:
                    break
                c = p0 + t * (pos + w / 2) + n_left * side * (front + d / 2)
                fp = Polygon([c + t * sx * w / 2 + n_left * sy * d / 2 for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
                if not fp.intersects(road_zone) and not any(fp.buffer(0.5).intersects(o) for o in footprints):
                    footprints.append(fp)
                    boxes.add(c[0], c[1], h / 2, yaw, (w / 2, d / 2, h / 2), KIND_BUILDING, color, params)
                pos += w + gap
    blocked = unary_union(footprints)

    def near_junction(p, reach):
        return min(np.hypot(*(p - j)) for j in jcentres) < reach

    # trees and street lights along every road, both sides, on the sidewalk
    for ln in road_lines:
        pts = np.asarray(ln.coords)
        for side in (1.0, -1.0):
            q, tg, _ = _sample_line(pts, 1.0)
            nl = np.stack([-tg[:, 1], tg[:, 0]], 1) * side
            i = int(rng.integers(0, 8))
            while i < len(q):
                p = q[i] + nl[i] * (ROAD_HALF_WIDTH + 2.9)
                crown = float(rng.uniform(1.2, 1.8))
                if not near_junction(q[i], JUNCTION_REACH + 4) and not Point(p).buffer(crown + 0.3).intersects(blocked):
                    trunk_h = float(rng.uniform(1.8, 2.6))
                    crown_h = float(rng.uniform(2.5, 4.0))
                    yaw = float(rng.uniform(0, np.pi / 2))
                    boxes.add(p[0], p[1], trunk_h / 2 + 0.1, yaw, (0.15, 0.15, trunk_h / 2 + 0.1), KIND_TRUNK, (96, 70, 46))
                    green = np.array([62, 112, 46]) * rng.uniform(0.8, 1.2, 3)
                    boxes.add(p[0], p[1], trunk_h + crown_h / 2, yaw, (crown, crown, crown_h / 2), KIND_CROWN, green)
                    boxes.add(p[0], p[1], trunk_h + crown_h + 0.5, yaw + np.pi / 4,
                              (crown * 0.6, crown * 0.6, 0.5), KIND_CROWN, green * 1.1)
                i += int(rng.integers(10, 17))
            i = int(rng.integers(0, 25))
            while i < len(q):
                p = q[i] + nl[i] * (ROAD_HALF_WIDTH + 0.7)
                if not near_junction(q[i], JUNCTION_REACH + 2):
                    h = float(rng.uniform(6.0, 7.0))
                    yaw = float(np.arctan2(tg[i, 1], tg[i, 0]))
                    boxes.add(p[0], p[1], h / 2, yaw, (0.1, 0.1, h / 2), KIND_POLE, (120, 122, 128))
                    arm = p - nl[i] * 0.8
                    boxes.add(arm[0], arm[1], h - 0.1, yaw, (0.12, 0.8, 0.1), KIND_POLE, (120, 122, 128))
                i += int(rng.integers(25, 35))

    # parked cars in the parking strips of the straight pieces
    parked = []
    for p0, p1 in straights:
        p0, p1 = np.array(p0), np.array(p1)
        t = (p1 - p0) / np.linalg.norm(p1 - p0)
        n_left = np.array([-t[1], t[0]])
        length = float(np.linalg.norm(p1 - p0))
        for side in (1.0, -1.0):
            # right-hand traffic: the strip on the left of t faces -t
            yaw = float(np.arctan2(t[1], t[0])) + (np.pi if side > 0 else 0.0)
            for pos in np.arange(4.0, length - 4.0, 7.0):
                c = p0 + t * pos + n_left * side * (LANE_WIDTH + PARKING_WIDTH / 2)
                size = (float(rng.uniform(3.9, 4.8)), float(rng.uniform(1.75, 1.95)), float(rng.uniform(1.45, 1.65)))
                color = CAR_COLORS[rng.integers(len(CAR_COLORS))] * rng.uniform(0.9, 1.1, 3)
                if rng.uniform() < 0.3 and not near_junction(c, JUNCTION_REACH + 6):
                    parked.append((pose_xy_yaw(c[0], c[1], yaw, size[2] / 2), size, color))
    if len(parked) > MAX_PARKED:
        keep = np.sort(rng.choice(len(parked), MAX_PARKED, replace=False))
        parked = [parked[i] for i in keep]
    return boxes.arrays(), parked


# --- traffic -----------------------------------------------------------------------------------------------------


def _obb_overlap(c1, y1, h1, c2, y2, h2) -> np.ndarray:
    """(T,) bool: 2D oriented boxes (centres (T, 2), yaws (T,), half sizes (2,)) overlap (separating axes)."""
    u1 = np.stack([np.cos(y1), np.sin(y1)], -1)
    v1 = np.stack([-np.sin(y1), np.cos(y1)], -1)
    u2 = np.stack([np.cos(y2), np.sin(y2)], -1)
    v2 = np.stack([-np.sin(y2), np.cos(y2)], -1)
    d = c2 - c1
    sep = np.zeros(len(d), bool)
    for ax in (u1, v1, u2, v2):
        r1 = h1[0] * np.abs((ax * u1).sum(-1)) + h1[1] * np.abs((ax * v1).sum(-1))
        r2 = h2[0] * np.abs((ax * u2).sum(-1)) + h2[1] * np.abs((ax * v2).sum(-1))
        sep |= np.abs((d * ax).sum(-1)) > r1 + r2
    return ~sep


def _traffic(rng, loops, loop_speeds, ego_s0, ego_speed):
    """Sample moving vehicles (loop, s0, speed, size, colour), rejecting any that come close to another or the ego."""
    times = np.arange(0.0, TRAFFIC_HORIZON_S + 1e-9, TRAFFIC_CHECK_DT)
    mx, my = TRAFFIC_MARGIN

    def track(loop, s0, v, forward_offset=0.0):
        x, y, h = loops[loop].pose(s0 + v * times)
        c = np.stack([x + forward_offset * np.cos(h), y + forward_offset * np.sin(h)], -1)
        return c, h

    ego_c, ego_h = track(0, ego_s0, ego_speed, EGO_REAR_AXLE_TO_CENTRE)
    placed = [(ego_c, ego_h, np.array([EGO_SIZE[0] / 2 + mx, EGO_SIZE[1] / 2 + my]))]
    vehicles = []
    loop_weights = np.array([0.3, 0.3, 0.2, 0.2])
    for _ in range(400):
        if len(vehicles) == NUM_MOVING_TARGET:
            break
        loop = int(rng.choice(len(loops), p=loop_weights))
        s0 = float(rng.uniform(0.0, loops[loop].length))
        size = (float(rng.uniform(3.9, 4.9)), float(rng.uniform(1.75, 1.95)), float(rng.uniform(1.45, 1.7)))
        color = CAR_COLORS[rng.integers(len(CAR_COLORS))] * rng.uniform(0.9, 1.1, 3)
        c, h = track(loop, s0, loop_speeds[loop])
        half = np.array([size[0] / 2 + mx, size[1] / 2 + my])
        if any(_obb_overlap(c, h, half, oc, oh, ohalf).any() for oc, oh, ohalf in placed):
            continue
        placed.append((c, h, half))
        vehicles.append((loop, s0, float(loop_speeds[loop]), size, color))
    if len(vehicles) < MIN_MOVING:
        raise ValidationError(f"synthetic town: could only place {len(vehicles)} moving vehicles, expected >= {MIN_MOVING}")
    return vehicles


# --- assembly ----------------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=4)
def build_town(seed: int = 0) -> Town:
    """Build the synthetic town for ``seed`` (deterministic; cached, the result is immutable)."""
    from shapely.geometry import LineString, LinearRing

    rng = np.random.default_rng(seed)
    W = float(rng.uniform(62.0, 80.0))
    H = float(rng.uniform(42.0, 55.0))
    R = float(rng.uniform(16.0, 24.0))
    lanes, successors, ring = _lane_graph(W, H, R)
    road_lines = [LineString(np.concatenate([ring[:, :2], ring[:1, :2]])), LineString([(-W, 0.0), (W, 0.0)])]
    scene_map = _scene_map(lanes, successors, [LinearRing(ring[:, :2]), road_lines[1]])

    def conn(j, a, b):
        return f"{j}:{a}>{b}"

    loops = (
        _loop_from_lanes(lanes, ["ring-ccw-n", conn("jW", "ring-ccw-n", "ring-ccw-s"), "ring-ccw-s",
                                 conn("jE", "ring-ccw-s", "ring-ccw-n")]),
        _loop_from_lanes(lanes, ["ring-cw-n", conn("jE", "ring-cw-n", "ring-cw-s"), "ring-cw-s",
                                 conn("jW", "ring-cw-s", "ring-cw-n")]),
        _loop_from_lanes(lanes, ["cross-e", conn("jE", "cross-e", "ring-cw-s"), "ring-cw-s",
                                 conn("jW", "ring-cw-s", "cross-e")]),
        _loop_from_lanes(lanes, ["cross-w", conn("jW", "cross-w", "ring-cw-n"), "ring-cw-n",
                                 conn("jE", "ring-cw-n", "cross-w")]),
    )
    ego_speed = float(rng.uniform(7.5, 9.0))
    cw_speed = float(rng.uniform(6.5, 9.5))
    loop_speeds = (ego_speed, cw_speed, cw_speed, cw_speed)
    # start on the bottom straight, EGO_START_BEFORE_CURVE before the south-east curve, heading east
    ego_s0 = loops[0].project((W - R - EGO_START_BEFORE_CURVE, -H - LANE_WIDTH / 2))

    ground_mips, ground_origin = _ground_albedo(rng, W, H, road_lines)
    noise_tile = periodic_noise(rng, NOISE_TILE, 3.0)
    jcentres = [np.array([W, 0.0]), np.array([-W, 0.0])]
    (bc, bR, bh, bk, bcol, bpar), parked = _props(rng, W, H, R, road_lines, jcentres)
    moving = _traffic(rng, loops, loop_speeds, ego_s0, ego_speed)

    K = len(moving) + len(parked)
    ids = tuple([f"synth-veh-{i:03d}" for i in range(len(moving))] + [f"synth-parked-{i:03d}" for i in range(len(parked))])
    sizes = np.array([m[3] for m in moving] + [p[1] for p in parked], np.float64).reshape(K, 3)
    colors = np.array([m[4] for m in moving] + [p[2] for p in parked], np.float32).reshape(K, 3)
    parked_poses = np.tile(np.eye(4), (K, 1, 1))
    for i, p in enumerate(parked):
        parked_poses[len(moving) + i] = p[0]
    return Town(
        seed=int(seed), half_extent=(W, H), corner_radius=R, scene_map=scene_map, loops=loops,
        ego_s0=ego_s0, ego_speed=ego_speed,
        box_centres=_readonly(bc), box_rotations=_readonly(bR), box_half_sizes=_readonly(bh),
        box_kinds=_readonly(bk), box_colors=_readonly(bcol), box_params=_readonly(bpar),
        instance_ids=ids, categories=("vehicle.car",) * K, sizes=_readonly(sizes), object_colors=_readonly(colors),
        object_loop=_readonly(np.array([m[0] for m in moving] + [-1] * len(parked), np.int64)),
        object_s0=_readonly(np.array([m[1] for m in moving] + [0.0] * len(parked), np.float64)),
        object_speed=_readonly(np.array([m[2] for m in moving] + [0.0] * len(parked), np.float64)),
        parked_poses=_readonly(parked_poses),
        ground_mips=tuple(_readonly(m) for m in ground_mips), ground_origin=ground_origin,
        noise_tile=_readonly(noise_tile),
    )
