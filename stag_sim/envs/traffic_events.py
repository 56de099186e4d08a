"""Traffic events drawn per reset for RL diversity (:class:`~stag_sim.env_config.TrafficConfig`): a lead vehicle
that brakes hard, a vehicle that cuts in. They are the scenarios' own :class:`~stag_sim.agent_sources.AgentEvent` s
(``hard_brake``; ``insert`` + ``cut_in``), added to the episode's world."""

from __future__ import annotations

import numpy as np

from stag_sim.agent_sources import AgentEvent

LANE_HALF_WIDTH = 2.0  # [m] a vehicle this close to the route is in the ego's lane
NEXT_LANE = 3.5  # [m] the lane beside the route


def _grid(rng, lo_hi, step: float) -> float:
    """A value drawn uniformly from ``lo_hi`` = (low, high), rounded to ``step`` (few distinct worlds)."""
    lo, hi = lo_hi
    return float(np.clip(np.round(rng.uniform(lo, hi) / step) * step, lo, hi))


def draw_events(world, rng, config, logged_speed: float) -> tuple[AgentEvent, ...]:
    """Events for an episode of ``world`` (its start frame, route and agents) drawn from ``rng`` with ``config``
    (:class:`~stag_sim.env_config.TrafficConfig`); ``logged_speed`` [m/s]: the logged ego's speed at the start."""
    events: list[AgentEvent] = []
    agents = world.agents
    if config.brake_prob > 0 and rng.random() < config.brake_prob and hasattr(agents, "agent_moving"):
        poses, valid = world.logged_object_poses(world.start_time_s)
        ego_s = float(world.route.project(world.log.ego_poses[world.config.start_frame][None, :2, 3])[0][0])
        ks = np.flatnonzero(valid & agents.agent_moving & ~agents.removed)
        if len(ks):
            s, lat = world.route.project(poses[ks, :2, 3])
            ahead = s - ego_s
            near, far = config.brake_range_m
            ok = (ahead >= near) & (ahead <= far) & (np.abs(lat) < LANE_HALF_WIDTH)
            if ok.any():
                k = ks[ok][np.argmin(ahead[ok])]
                events.append(AgentEvent("hard_brake", agent=world.log.objects.instance_ids[k],
                                         at_s=_grid(rng, config.brake_after_s, 0.5),
                                         decel=_grid(rng, config.brake_decel, 1.0)))
    if config.cut_in_prob > 0 and rng.random() < config.cut_in_prob and _has_parked_vehicle(world):
        speed = max(logged_speed, 2.0) * _grid(rng, config.cut_in_speed_fraction, 0.1)
        side = NEXT_LANE if rng.random() < 0.5 else -NEXT_LANE
        events += [AgentEvent("insert", name="cut_in", ahead_m=_grid(rng, config.cut_in_ahead_m, 5.0), lateral_m=side,
                              speed=round(speed, 1), behavior="constant"),
                   AgentEvent("cut_in", agent="cut_in", at_s=_grid(rng, config.cut_in_after_s, 0.5), to_lateral_m=0.0)]
    return tuple(events)


def _has_parked_vehicle(world) -> bool:
    """The scene has a vehicle that never moves (``insert`` with agent ``auto`` takes one)."""
    cats = world.log.objects.categories
    moving = getattr(world.agents, "agent_moving", np.zeros(len(cats), bool))
    valid = np.asarray(world.log.objects.valid).any(0)
    return any(c.startswith("vehicle") and not m and v for c, m, v in zip(cats, moving, valid))
