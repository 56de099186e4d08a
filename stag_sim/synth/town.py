"""The procedural synthetic town: :func:`build_town` turns a seed into a :class:`Town`, a frozen description of
everything the oracle ray caster (:mod:`stag_sim.synth.oracle`) needs, drawn from ``np.random.default_rng(seed)`` in a
fixed order (same seed, same town, same bytes) from the road layout (:mod:`~stag_sim.synth.roads`), ground textures
(:mod:`~stag_sim.synth.ground`), static scenery (:mod:`~stag_sim.synth.props`) and traffic
(:mod:`~stag_sim.synth.traffic`); its four traffic loops are the full counter-clockwise ring (also the ego's route),
the full clockwise ring, and two loops that use the cross road and half of the clockwise ring.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from stag_sim.geometry import pose_xy_yaw
from stag_sim.synth.ground import NOISE_TILE, ground_albedo, ground_noise, ground_origin, periodic_noise
from stag_sim.synth.props import place_props
from stag_sim.synth.roads import LANE_WIDTH, LoopPath, build_scene_map, lane_graph, loop_from_lanes
from stag_sim.synth.signals import town_rules
from stag_sim.synth.traffic import place_traffic

EGO_START_BEFORE_CURVE = 15.0  # [m] the ego starts this far before the south-east curve, then meets junction jE


# --- the town ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Town:
    """Everything the oracle needs to render one synthetic town at any time. Arrays are read-only.

    Attributes:
        seed: the seed it was built from.
        half_extent: (W, H) [m] ring road half-extents; ``corner_radius`` R [m].
        scene_map: the :class:`~stag_sim.scene_log.SceneMap` (drivable area, lanes, successors, signals, speed
            limits: :mod:`~stag_sim.synth.signals`).
        loops: closed traffic loops; ``loops[0]`` is the ego's route.
        ego_s0, ego_speed: ego arc length at time 0 [m] on ``loops[0]`` and its constant speed [m/s].
        box_centres, box_rotations, box_half_sizes: (N, 3), (N, 3, 3), (N, 3) float64 static boxes (world frame) [m].
        box_kinds: (N,) int8 material (``KIND_*``); box_colors: (N, 3) float32 base albedo [0..255];
        box_params: (N, 2) float32 per-box shading parameters (buildings: window spacing, floor height [m];
            signal lamps, ``KIND_LAMP``: the index of their light in ``scene_map.traffic_lights``, the state code
            they show).
        instance_ids, categories: tracked objects (moving vehicles first, then parked cars).
        sizes: (K, 3) float64 (length, width, height) [m].
        object_colors: (K, 3) float32 paint albedo.
        object_loop: (K,) int loop index, -1 for parked; object_s0 [m], object_speed [m/s]: (K,) float64.
        parked_poses: (K, 4, 4) float64 ``T_world_from_object`` of parked cars (identity for moving ones).
        ground_mips: (a property) albedo maps (rows along world y, columns along world x) of the ground, uint8 RGB,
            level l at ``GROUND_RES * GROUND_MIP_FACTOR**l`` [m/texel], rasterised on first use (~2-3 s, ~45 MB:
            only rendering needs them, a layout-only scene never does) from ``road_lines``, the signals' stop lines
            and ``ground_noise`` (the grain and stain tiles); ground_origin: (x0, y0) [m] of texel edge 0.
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
    ground_origin: tuple[float, float]
    noise_tile: np.ndarray
    road_lines: tuple
    ground_noise: tuple[np.ndarray, np.ndarray]

    @functools.cached_property
    def ground_mips(self) -> tuple[np.ndarray, ...]:
        W, H = self.half_extent
        stop_lines = [lt.stop_line for lt in self.scene_map.traffic_lights]
        return tuple(_readonly(m) for m in ground_albedo(W, H, self.road_lines, *self.ground_noise, stop_lines))

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
    lanes, successors, ring = lane_graph(W, H, R)
    road_lines = [LineString(np.concatenate([ring[:, :2], ring[:1, :2]])), LineString([(-W, 0.0), (W, 0.0)])]
    def conn(j, a, b):
        return f"{j}:{a}>{b}"

    loops = (
        loop_from_lanes(lanes, ["ring-ccw-n", conn("jW", "ring-ccw-n", "ring-ccw-s"), "ring-ccw-s",
                                conn("jE", "ring-ccw-s", "ring-ccw-n")]),
        loop_from_lanes(lanes, ["ring-cw-n", conn("jE", "ring-cw-n", "ring-cw-s"), "ring-cw-s",
                                conn("jW", "ring-cw-s", "ring-cw-n")]),
        loop_from_lanes(lanes, ["cross-e", conn("jE", "cross-e", "ring-cw-s"), "ring-cw-s",
                                conn("jW", "ring-cw-s", "cross-e")]),
        loop_from_lanes(lanes, ["cross-w", conn("jW", "cross-w", "ring-cw-n"), "ring-cw-n",
                                conn("jE", "ring-cw-n", "cross-w")]),
    )
    ego_speed = float(rng.uniform(7.5, 9.0))
    cw_speed = float(rng.uniform(6.5, 9.5))
    loop_speeds = (ego_speed, cw_speed, cw_speed, cw_speed)
    # start on the bottom straight, EGO_START_BEFORE_CURVE before the south-east curve, heading east
    ego_s0 = loops[0].project((W - R - EGO_START_BEFORE_CURVE, -H - LANE_WIDTH / 2))
    # signals: each junction mid-green when the logged ego first reaches its stop line
    green_at = {j: np.mod(loops[0].project(lanes[lane][-1]) - ego_s0, loops[0].length) / ego_speed
                for j, lane in (("jE", "ring-ccw-s"), ("jW", "ring-ccw-n"))}
    scene_map = build_scene_map(lanes, successors, [LinearRing(ring[:, :2]), road_lines[1]],
                                town_rules(lanes, successors, green_at))

    grain, stain = ground_noise(rng)  # the ground albedo's draws, in order; the rasterisation waits for a render
    noise_tile = periodic_noise(rng, NOISE_TILE, 3.0)
    jcentres = [np.array([W, 0.0]), np.array([-W, 0.0])]
    (bc, bR, bh, bk, bcol, bpar), parked = place_props(rng, W, H, R, road_lines, jcentres, scene_map.traffic_lights)
    moving = place_traffic(rng, loops, loop_speeds, ego_s0, ego_speed)

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
        ground_origin=ground_origin(W, H), noise_tile=_readonly(noise_tile), road_lines=tuple(road_lines),
        ground_noise=(_readonly(grain), _readonly(stain)),
    )
