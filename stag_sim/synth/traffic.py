"""Moving traffic of the synthetic town: vehicles on closed loops through the lane graph at constant loop speeds
(so vehicles sharing a lane never catch up), sampled and rejected when their boxes would come within a margin of another
vehicle or the ego during the first :data:`TRAFFIC_HORIZON_S` seconds; motion is an analytic function of time (arc
length = s0 + v t along a densely sampled loop polyline) and collision-free over that horizon.
"""

from __future__ import annotations

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.synth.props import CAR_COLORS

TRAFFIC_HORIZON_S = 120.0  # [s] traffic is checked collision-free over [0, TRAFFIC_HORIZON_S]
TRAFFIC_CHECK_DT = 0.1  # [s] time step of that check
TRAFFIC_MARGIN = (0.6, 0.3)  # [m] extra half-length and half-width kept clear around every moving box
NUM_MOVING_TARGET = 8  # moving vehicles the generator tries to place
MIN_MOVING = 5  # fewer than this is a generator bug
EGO_SIZE = (4.08, 1.73, 1.56)  # [m] length, width, height of the (invisible) ego box, for traffic clearance
EGO_REAR_AXLE_TO_CENTRE = 1.35  # [m] ego box centre ahead of the rear axle


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


def place_traffic(rng, loops, loop_speeds, ego_s0, ego_speed):
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
