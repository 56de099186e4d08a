"""Static scenery of the synthetic town, all oriented boxes: buildings along the straight roads (outside the
sidewalks), trees and street lights on the sidewalks, a traffic signal (pole, head, three lamps) at each stop line,
parked cars in the parking strips, and the boxes a car is drawn with (:func:`car_parts`, all inside its tracked box,
so its box in :class:`~stag_sim.scene_log.ObjectTracks` is exact).
"""

from __future__ import annotations

import numpy as np

from stag_sim.geometry import pose_xy_yaw
from stag_sim.road_rules import GREEN, RED, YELLOW
from stag_sim.synth.roads import JUNCTION_REACH, LANE_WIDTH, PARKING_WIDTH, ROAD_HALF_WIDTH, SIDEWALK_WIDTH

BUILDING_SETBACK = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + 1.0  # [m] centreline to the nearest building front
MAX_PARKED = 24

# Box kinds (materials) understood by the oracle's shader.
# KIND_LAMP: a signal lamp, emissive; its box params are (light index, the state code it shows), and its colour at a
# time is :func:`lamp_colors`'s.
KIND_BUILDING, KIND_TRUNK, KIND_CROWN, KIND_POLE, KIND_CAR_BODY, KIND_CAR_CABIN, KIND_LAMP = range(7)

SIGNAL_GREY = (44, 46, 48)  # signal pole and head housing albedo
LAMP_LIT = np.zeros((4, 3), np.float32)  # lit lamp colour per state code (unknown: none lit)
LAMP_LIT[[RED, YELLOW, GREEN]] = [[255, 36, 24], [255, 184, 16], [40, 236, 112]]
LAMP_DARK = 0.16  # [-] an unlit lamp's colour as a fraction of its lit one
HEAD_HALF = (0.15, 0.2, 0.5)  # [m] signal head half depth (along the traffic), width, height
LAMP_HALF, LAMP_PITCH = 0.12, 0.32  # [m] lamp half side and the vertical distance between lamp centres


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


def signal_boxes(boxes: "_BoxList", lights) -> None:
    """Add a signal for each :class:`~stag_sim.road_rules.TrafficLight` of ``lights`` to ``boxes``: a pole up to a
    head centred at ``head_xyz``, its lamps (red, yellow, green from the top) on the face turned to the traffic it
    controls (against ``stop_direction``). No random draws."""
    hd, hw, hh = HEAD_HALF
    for j, light in enumerate(lights):
        d = light.stop_direction
        yaw = float(np.arctan2(d[1], d[0]))
        x, y, z = (float(v) for v in light.head_xyz)
        boxes.add(x, y, z, yaw, HEAD_HALF, KIND_POLE, SIGNAL_GREY)
        boxes.add(x, y, (z - hh) / 2, yaw, (0.08, 0.08, (z - hh) / 2), KIND_POLE, SIGNAL_GREY)
        fx, fy = np.array([x, y]) - d * (hd + 0.02)
        for k, code in enumerate((RED, YELLOW, GREEN)):
            boxes.add(fx, fy, z + (1 - k) * LAMP_PITCH, yaw, (0.025, LAMP_HALF, LAMP_HALF), KIND_LAMP,
                      LAMP_LIT[code] * LAMP_DARK, (j, code))


def lamp_colors(params: np.ndarray, lights, time_s: float) -> np.ndarray:
    """(n, 3) float32 albedo of n lamps (box ``params`` (n, 2): light index, state code) at ``time_s`` [s]: lit in
    its colour where its light shows its state, dark otherwise (all dark while a light's state is unknown)."""
    idx, code = params[:, 0].astype(np.int64), params[:, 1].astype(np.int64)
    now = np.array([int(lt.code_at(float(time_s))) for lt in lights], np.int64)
    lit = now[idx] == code
    return LAMP_LIT[code] * np.where(lit, np.float32(1), np.float32(LAMP_DARK))[:, None]


def place_props(rng, W, H, R, road_lines, jcentres, lights=()):
    """Buildings, trees, street lights and the traffic signals of ``lights`` (static boxes) and parked car
    poses/sizes."""
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
    signal_boxes(boxes, lights)
    return boxes.arrays(), parked
