"""Road layout of the synthetic town (flat ground, z = 0; right-hand traffic): a ring road, a rounded rectangle of
half-extents ``(W, H)`` [m] with corner radius ``R`` (the curves), and a straight cross road along y = 0 that meets it at
two T-junctions, ``jE`` at (W, 0) and ``jW`` at (-W, 0). Every road has one lane per direction (:data:`LANE_WIDTH`), a
2 m parking strip on each side, a kerb and a sidewalk; lane centrelines are split at the junctions and joined by
cubic-Bezier connector lanes for every non-U-turn movement, so an incoming lane has a straight and a turning successor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANE_WIDTH = 3.5  # [m]
PARKING_WIDTH = 2.0  # [m] parking strip outside each lane
ROAD_HALF_WIDTH = LANE_WIDTH + PARKING_WIDTH  # [m] centreline to kerb
KERB_WIDTH = 0.25  # [m] painted kerb stone stripe on the sidewalk side of the kerb line
SIDEWALK_WIDTH = 4.0  # [m]
JUNCTION_REACH = 12.0  # [m] lanes stop this far from a junction centre; connectors span the rest


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


def lane_graph(W: float, H: float, R: float):
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


def loop_from_lanes(lanes: dict, ids: list[str]) -> LoopPath:
    return LoopPath.from_points(np.concatenate([lanes[i] for i in ids]))


def build_scene_map(lanes: dict, successors: dict, road_lines, rules: tuple = ((), (), ())):
    """The town's SceneMap; ``rules``: (traffic_lights, in_intersection, speed_limits) (:func:`~stag_sim.synth.
    signals.town_rules`), every signal listed (``lights_complete``)."""
    from shapely.geometry import LineString
    from shapely.ops import unary_union

    from stag_sim.scene_log import SceneMap

    drivable = unary_union([ln.buffer(ROAD_HALF_WIDTH, cap_style="flat", join_style="round") for ln in road_lines])
    ids = tuple(lanes)
    return SceneMap(drivable_area=drivable, lane_ids=ids, lanes=tuple(LineString(lanes[i]) for i in ids),
                    successors=tuple(successors[i] for i in ids), traffic_lights=tuple(rules[0]),
                    in_intersection=tuple(rules[1]), speed_limits=tuple(rules[2]), lights_complete=True).validate()
