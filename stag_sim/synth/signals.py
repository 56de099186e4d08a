"""The synthetic town's road rules: a signal at each of its two T-junctions' incoming lanes, speed limits per lane,
and which lanes lie inside the junctions.

Each junction runs a two-phase fixed-time plan (:data:`RING_GREEN_S` ... ; one period :data:`CYCLE_S`): the ring
road's two incoming lanes go together, then the cross road's. A light's stop line spans its incoming lane where the
lane ends (``JUNCTION_REACH`` before the junction centre); it controls the connector lanes leaving that lane. Each
junction's plan is offset so that the logged ego (constant speed on ``loops[0]``) reaches it mid-green the first
time; a longer generated log may meet a later red (the logged traffic, constant-speed loops, does not stop at lights:
closed-loop agents do, :mod:`stag_sim.agent_sources`).
"""

from __future__ import annotations

import numpy as np

from stag_sim.road_rules import TrafficLight
from stag_sim.synth.roads import LANE_WIDTH, PARKING_WIDTH

RING_GREEN_S, CROSS_GREEN_S, YELLOW_S, ALL_RED_S = 18.0, 10.0, 3.0, 1.0  # [s]
CYCLE_S = RING_GREEN_S + CROSS_GREEN_S + 2 * (YELLOW_S + ALL_RED_S)  # [s] 36
HEAD_HEIGHT = 3.2  # [m] signal head above the road
SPEED_LIMITS = {"ring": 50 / 3.6, "cross": 30 / 3.6, "turn": 30 / 3.6}  # [m/s] ring road, cross road, turning connectors


def _phase_plan(ring_phase: bool, offset_s: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """One light's (change_s, states) over a period, the ring phase starting green at ``offset_s`` [s]."""
    ring = [(0.0, "green"), (RING_GREEN_S, "yellow"), (RING_GREEN_S + YELLOW_S, "red")]
    c0 = RING_GREEN_S + YELLOW_S + ALL_RED_S  # the cross phase's green starts
    cross = [(0.0, "red"), (c0, "green"), (c0 + CROSS_GREEN_S, "yellow"), (c0 + CROSS_GREEN_S + YELLOW_S, "red")]
    plan = ring if ring_phase else cross
    t = np.mod(np.array([p[0] for p in plan]) + offset_s, CYCLE_S)
    order = np.argsort(t, kind="stable")
    t, states = t[order], [plan[i][1] for i in order]
    keep = [i for i in range(len(t)) if states[i] != states[i - 1]]  # one red, not "red then red" across the wrap
    return t[keep], tuple(states[i] for i in keep)


def _stop_line(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stop line across the end of the lane ``pts`` (N, 2) (right kerb side first) and the signal head's position."""
    p, d = pts[-1], pts[-1] - pts[-2]
    d = d / np.linalg.norm(d)
    right = np.array([d[1], -d[0]])
    line = np.stack([p + right * LANE_WIDTH / 2, p - right * LANE_WIDTH / 2])
    head = np.append(p + right * (LANE_WIDTH / 2 + PARKING_WIDTH + 0.6), HEAD_HEIGHT)
    return line, head


def town_rules(lanes: dict, successors: dict, green_at: dict[str, float]) -> tuple:
    """(traffic_lights, in_intersection, speed_limits) of the town, the last two in ``lanes`` order.

    ``green_at``: junction id -> a time [s] at which its ring phase is mid-green (the logged ego passes then)."""
    lights = []
    for lid, pts in lanes.items():
        if ":" in lid:
            continue
        for jid in ("jE", "jW"):
            controlled = tuple(s for s in successors[lid] if s.startswith(f"{jid}:"))
            if not controlled:
                continue
            offset = green_at[jid] - RING_GREEN_S / 2
            change, states = _phase_plan(lid.startswith("ring"), offset)
            line, head = _stop_line(np.asarray(pts))
            lights.append(TrafficLight(f"{jid}:{lid}", controlled, line, head, change, states, CYCLE_S).validate())
    inter = tuple(":" in lid for lid in lanes)

    def limit(lid: str) -> float:
        if ":" not in lid:
            return SPEED_LIMITS["ring" if lid.startswith("ring") else "cross"]
        a, b = lid.split(":", 1)[1].split(">")
        straight = a.split("-")[:2] == b.split("-")[:2]
        return SPEED_LIMITS["ring"] if straight and a.startswith("ring") else SPEED_LIMITS["turn"]

    return tuple(lights), inter, tuple(limit(lid) for lid in lanes)
