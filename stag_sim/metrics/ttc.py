"""Time-to-collision metric: TTC (no projected collision of the ego with an agent 0-0.9 s ahead, NAVSIM / nuPlan),
with the constant-velocity / CTRV projections of the ego and the agents."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stag_sim.metrics.collisions import AGENT_BEHIND_ANGLE, _bearing, _find_collisions, _overlaps
from stag_sim.metrics.registry import MetricResult, register_metric
from stag_sim.metrics.trace import AgentTrace, EgoTrace, EpisodeTrace

TTC_STOPPED_SPEED = 5e-3  # [m/s] NAVSIM PDMScorerConfig.stopped_speed_threshold: no TTC check while stopped
TTC_OFFSETS = (0.0, 0.3, 0.6, 0.9)  # [s] NAVSIM _calculate_ttc: np.arange(0, 10, 3) steps of 0.1 s


@register_metric("time_to_collision")
def time_to_collision(trace: EpisodeTrace) -> MetricResult:
    """TTC: 0 if at some step the ego, 0-0.9 s ahead, would hit an agent projected at constant velocity; else 1.

    Source: NAVSIM ``_calculate_ttc`` with nuPlan ``time_to_collision_within_bound.py``. From every step where the
    ego moves (speed > 0.005 m/s) the ego box and every relevant agent box are moved along their headings at
    their current speeds by 0, 0.3, 0.6 and 0.9 s (NAVSIM's offsets, 1 s horizon at 0.3 s resolution); an
    overlap is a violation. An at-fault collision (see :func:`no_at_fault_collisions`) is also a violation
    (nuPlan: TTC = 0 at an at-fault collision step).

    Relevant agents: valid at the step, not collided with the ego at or before that step (nuPlan excludes
    collided tracks), not behind the ego (bearing from the rear axle <= 150 deg), and, when oncoming (heading
    more than 100 deg from the ego's), only once inside the ego's corridor (lateral offset < half widths).

    The ego moves along its *realised* trajectory (closed loop: its future is known after the episode; NAVSIM
    scores the planned trajectory, nuPlan extrapolates at constant velocity — which on a curve projects the ego
    across the kerb into parked cars), extrapolated at constant velocity only past the episode's end.

    Agents move at constant speed and constant yaw rate (CTRV, yaw rate from their last two steps): nuPlan
    uses constant velocity, which on a curve projects an oncoming car straight across into the ego's lane;
    NAVSIM takes the agents' logged future instead. nuPlan/NAVSIM use only agents ahead (bearing < 20 deg) unless the ego is between lanes, off-road
    or in an intersection, where every agent not behind counts; we have no lane or intersection layers, so we
    apply that wider rule at every step (crossing traffic is always checked; a lateral agent whose projected
    box touches ours counts even when nuPlan would skip it).
    """
    trace.validate()
    at_fault = [c for c in _find_collisions(trace) if c.at_fault]
    details = {"violation": None, "step": None, "id": None, "offset_s": None}
    if at_fault:
        c = at_fault[0]
        details.update(violation="at_fault_collision", step=c.step, id=trace.agents.ids[c.agent], offset_s=0.0)
        return MetricResult(0.0, details)
    offset, agent = ttc_per_step(trace)
    hits = np.flatnonzero(np.isfinite(offset))
    if not len(hits):
        return MetricResult(1.0, details)
    t = int(hits[0])
    details.update(violation="projected_collision", step=t, id=trace.agents.ids[agent[t]], offset_s=float(offset[t]))
    return MetricResult(0.0, details)


def ttc_per_step(trace: EpisodeTrace) -> tuple[np.ndarray, np.ndarray]:
    """Per step of ``trace``, by :func:`time_to_collision`'s rules: (T,) the smallest projection offset [s] of
    :data:`TTC_OFFSETS` at which the ego would overlap a relevant agent (0 at an at-fault collision step, NaN where
    nothing is projected within the horizon) and (T,) that agent's index (-1: none). The TTC score is 0 exactly
    when some step is finite."""
    ego, ag = trace.ego, trace.agents
    T, K = ag.valid.shape
    offset, agent = np.full(T, np.nan), np.full(T, -1)
    collisions = _find_collisions(trace)
    if K == 0:
        return offset, agent
    first_hit = np.full(K, T)
    for c in collisions:
        first_hit[c.agent] = c.step
    collided = np.arange(T)[:, None] >= first_hit[None, :]
    moving = ego.speed > TTC_STOPPED_SPEED
    bearing = _bearing(ego.xy[:, None, :], ego.yaw[:, None], np.where(ag.valid[..., None], ag.xy, 0.0))
    relevant = ag.valid & ~collided & moving[:, None] & (bearing <= AGENT_BEHIND_ANGLE)
    # oncoming traffic (heading differs by > 100 deg) counts only once it is inside the ego's corridor (lateral
    # distance in the ego frame < half widths): our stand-in for nuPlan's lane filter, without which every
    # oncoming car entering a curve is projected straight across the ego lane
    rel = np.where(ag.valid[..., None], ag.xy, 0.0) - ego.xy[:, None, :]
    lateral = np.abs(-np.sin(ego.yaw)[:, None] * rel[..., 0] + np.cos(ego.yaw)[:, None] * rel[..., 1])
    oncoming = np.cos(np.where(ag.valid, ag.yaw, 0.0) - ego.yaw[:, None]) < np.cos(np.deg2rad(100.0))
    relevant &= ~(oncoming & (lateral > (ego.width + ag.sizes[None, :, 1]) / 2.0))
    if relevant.any():
        ego_dir = np.stack([np.cos(ego.yaw), np.sin(ego.yaw)], axis=-1)
        ag_yaw = np.where(ag.valid, ag.yaw, 0.0)
        ag_speed = np.where(ag.valid, ag.speed, 0.0)
        ag_rate = np.zeros_like(ag_yaw)  # [rad/s] yaw rate from consecutive valid steps (0 where unknown)
        if T > 1:
            both = ag.valid[1:] & ag.valid[:-1]
            d_yaw = (np.diff(ag_yaw, axis=0) + np.pi) % (2 * np.pi) - np.pi
            ag_rate[1:] = np.where(both, d_yaw / (ego.time_s[1] - ego.time_s[0]), 0.0)
        dt = float(ego.time_s[1] - ego.time_s[0]) if T > 1 else 1.0
        for tau in sorted(TTC_OFFSETS, reverse=True):  # the smallest offset is written last
            future, centre = _ego_ahead(ego, ego_dir, tau, dt)
            ag_future, ag_centre = _agents_ahead(ag, ag_yaw, ag_speed, ag_rate, tau)
            hit = _overlaps(future, centre, ag_future, ag_centre, relevant)
            steps = hit.any(axis=1)
            offset[steps] = tau
            agent[steps] = hit[steps].argmax(axis=1)  # the first agent hit at that offset
    for c in collisions:
        if c.at_fault:
            offset[c.step], agent[c.step] = 0.0, c.agent
    return offset, agent


def _ego_ahead(ego: EgoTrace, ego_dir: np.ndarray, tau: float, dt: float) -> tuple[EgoTrace, np.ndarray]:
    """The ego ``tau`` [s] after every step: its realised state where the episode reaches that far (closed loop,
    the ego's future is known, as NAVSIM scores the planned trajectory), else moved on at constant velocity from
    the last recorded state. Returns an EgoTrace whose ``yaw`` is the future heading, and the future box centres."""
    T = len(ego.time_s)
    n = int(round(tau / dt))
    j = np.minimum(np.arange(T) + n, T - 1)
    beyond = (np.arange(T) + n - j) * dt  # [s] left to extrapolate past the last step
    yaw = ego.yaw[j]
    centre = ego.centre[j] + (ego.speed[j] * beyond)[:, None] * ego_dir[j]
    return replace(ego, yaw=yaw), centre


def _agents_ahead(ag: AgentTrace, yaw: np.ndarray, speed: np.ndarray, rate: np.ndarray, tau: float):
    """Agents ``tau`` [s] ahead at constant speed and constant yaw rate (CTRV; a straight line where the rate is
    ~0): returns an AgentTrace whose ``yaw`` is the future heading, and the future centres (T, K, 2)."""
    turning = np.abs(rate) > 1e-3
    w = np.where(turning, rate, 1.0)
    yaw1 = yaw + rate * tau
    dx = np.where(turning, speed / w * (np.sin(yaw1) - np.sin(yaw)), speed * tau * np.cos(yaw))
    dy = np.where(turning, speed / w * (np.cos(yaw) - np.cos(yaw1)), speed * tau * np.sin(yaw))
    centre = np.where(ag.valid[..., None], ag.xy, 0.0) + np.stack([dx, dy], axis=-1)
    return replace(ag, yaw=yaw1), centre
