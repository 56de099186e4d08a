"""A NeuroNCAP-style safety-critical suite: scenario families, their jittered variations, and the score.

After NeuroNCAP (Ljungbergh et al., "NeuroNCAP: Photorealistic Closed-loop Safety Testing for Autonomous Driving",
ECCV 2024, arXiv 2404.07762; code github.com/atonderski/neuro-ncap): three families of a vehicle put where a
do-nothing ego hits it, each run many times with the actor jittered, each run scored 0 to 5.

Families (every actor is one vehicle of the scene, inserted by a scenario ``insert`` event named ``target``; the
ego starts at :data:`EGO_SPEED` on its logged pose and route):

* ``stationary``: a stopped vehicle in the ego lane ahead (NeuroNCAP's stationary family).
* ``frontal``: an oncoming vehicle in the ego lane, driving the ego route backwards (``yaw_deg: 180``) at a constant
  speed (their frontal family: an oncoming car in / turning into the ego lane).
* ``side``: a vehicle crossing the ego path at right angles (``yaw_deg: 90`` from the right, ``-90`` from the
  left) at a constant speed, timed so that the do-nothing ego meets it (their side family).

Jitter (:data:`JITTER`, uniform draws from ``np.random.default_rng((family key, seed, redraw))``; NeuroNCAP jitters
the actor's longitudinal / lateral place by up to 1-10 m / 0.75-1.5 m, their scenario files' ``jitter``):

* ``ttc_s``: when the do-nothing ego would touch the actor [s after the start]; it sets the distance.
* ``lateral_m``: (stationary, frontal) the actor's offset to the left of the route [m].
* ``speed``: (frontal, side) the actor's speed [m/s].
* ``offset_s``: (side) how much later the actor's centre crosses the route than the ego's front reaches it [s]
  (its start is ``speed * (ttc_s + offset_s)`` to the side); ``from_left``: which side it comes from.

Score (NeuroNCAP's, their ``docs/evaluation-protocol-overview.md`` and ``Evaluator._compute_ncap_score``): 5 without
a collision, else ``4 * max(0, 1 - v_impact / v_ref)``. As in NeuroNCAP the impact speed is *relative*: the norm of
(ego velocity - actor velocity) at the first collision. ``v_ref`` is that for the do-nothing ego: NeuroNCAP
estimates it from the logged ego's velocity about 4 s into the log and the actor's; here the do-nothing ego is
driven in closed loop (:func:`reference_rollout`: route following by pure pursuit at its start speed, never
braking), so ``v_ref`` is its real impact speed on the same world. A run at the reference's speed scores 0.

A draw whose do-nothing ego does not hit the target (an actor that crosses early, another car in the way) is not a
test. It is redrawn deterministically: redraw ``r`` uses ``default_rng((family key, seed, r))`` for
``r = 0, 1, ...`` up to :data:`MAX_REDRAWS`; the variation records ``redraw``. Same seed, same scene -> same
variation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stag_sim.agent_sources import AgentEvent
from stag_sim.control import lookahead_point, pure_pursuit_steer
from stag_sim.dynamics import VehicleParameters
from stag_sim.errors import ScenarioError, ValidationError
from stag_sim.scenario import EgoSpec, Scenario, SceneSpec, SuccessSpec, env_settings
from stag_sim.world import World, WorldConfig, reset, step

FAMILIES = ("stationary", "frontal", "side")
#: the family's number in the random generator's seed (a name is not a seed)
FAMILY_KEYS = {"stationary": 1, "frontal": 2, "side": 3}
#: uniform jitter ranges per family (see the module docstring); units: [s], [m], [m/s]
JITTER = {
    "stationary": {"ttc_s": (2.0, 4.0), "lateral_m": (-1.0, 1.0)},
    "frontal": {"ttc_s": (2.5, 4.0), "lateral_m": (-0.75, 0.75), "speed": (5.0, 10.0)},
    "side": {"ttc_s": (2.5, 4.0), "speed": (3.0, 7.0), "offset_s": (-0.4, 0.4)},
}
EGO_SPEED = 8.0  # [m/s] the ego's start speed: pure_pursuit's target speed, so pure_pursuit is the do-nothing ego
AFTER_TTC_S = 3.0  # [s] an episode lasts this long past the do-nothing ego's contact time ...
PASS_MARGIN_S = 1.0  # [s] ... and (frontal) until this long after the oncoming actor reaches the ego's start
MAX_REDRAWS = 8  # draws of a variation before its seed is given up (an error naming the family and seed)
TARGET = "target"  # the insert event's name
#: the base scene: the synthetic town, seed 0, from 6.5 s: the logged ego has turned and drives ~56 m straight
TOWN = SceneSpec(synthetic_seed=0)
TOWN_START_S = 6.5  # [s]
MIN_SCORE, MAX_SCORE = 0.0, 5.0


@dataclass(frozen=True)
class Impact:
    """The first collision of a run.

    Attributes:
        time_s: when [s after the episode start].
        agent: instance id of the agent hit.
        speed: impact speed, the norm of (ego velocity - agent velocity) [m/s] (NeuroNCAP's).
        ego_speed: the ego's speed then [m/s].
    """

    time_s: float
    agent: str
    speed: float
    ego_speed: float


@dataclass(frozen=True)
class Variation:
    """One test of the suite: a family's draw on a scene, checked against the do-nothing ego.

    Attributes:
        family, seed: which; redraw: how many draws were not a test before this one (see the module docstring).
        params: the drawn jitter (:func:`draw_parameters`).
        actor: instance id of the scene vehicle inserted as the target.
        scenario: the scenario to run (ego at :data:`EGO_SPEED`, one ``insert`` event named ``target``).
        reference: the do-nothing ego's impact (its ``speed`` is ``v_ref``).
    """

    family: str
    seed: int
    redraw: int
    params: dict
    actor: str
    scenario: Scenario
    reference: Impact


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValidationError(f"safety family: {family!r} is not one of {', '.join(FAMILIES)}")
    return family


def draw_parameters(family: str, seed: int, redraw: int = 0) -> dict:
    """The jitter of variation ``seed`` of ``family`` (draw ``redraw``): plain floats keyed as in :data:`JITTER`
    (plus ``from_left`` for ``side``), from ``np.random.default_rng((FAMILY_KEYS[family], seed, redraw))``."""
    check_family(family)
    if int(seed) < 0 or int(redraw) < 0:
        raise ValidationError(f"safety seed: expected integers >= 0, got seed={seed}, redraw={redraw}")
    rng = np.random.default_rng((FAMILY_KEYS[family], int(seed), int(redraw)))
    out = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in JITTER[family].items()}
    if family == "side":
        out["from_left"] = bool(rng.random() < 0.5)
    return out


def insert_event(family: str, params: dict, actor: str, actor_size: tuple[float, float],
                 vehicle: VehicleParameters, ego_speed: float = EGO_SPEED) -> AgentEvent:
    """The ``insert`` event of ``family`` with ``params``: ``actor`` (length, width) [m] placed so that an ego
    driving the route at ``ego_speed`` [m/s] touches it ``params["ttc_s"]`` after the start (its front bumper,
    ``vehicle.front_length`` ahead of the rear axle, meets the actor's near side)."""
    length, width = actor_size
    ttc, front = params["ttc_s"], vehicle.front_length
    if family == "stationary":
        return AgentEvent(type="insert", agent=actor, name=TARGET, ahead_m=front + ego_speed * ttc + length / 2,
                          lateral_m=params["lateral_m"], speed=0.0, behavior="stopped")
    if family == "frontal":  # both close the gap: ego_speed + speed
        return AgentEvent(type="insert", agent=actor, name=TARGET,
                          ahead_m=front + (ego_speed + params["speed"]) * ttc + length / 2,
                          lateral_m=params["lateral_m"], speed=params["speed"], behavior="constant", yaw_deg=180.0)
    # side: the actor's path crosses the route where the ego front is at ttc (plus the actor's half width); it
    # starts speed * (ttc + offset) to the side, heading across
    sign = 1.0 if params["from_left"] else -1.0
    return AgentEvent(type="insert", agent=actor, name=TARGET, ahead_m=front + ego_speed * ttc + width / 2,
                      lateral_m=sign * params["speed"] * (ttc + params["offset_s"]), speed=params["speed"],
                      behavior="constant", yaw_deg=-90.0 * sign)


def duration_s(family: str, params: dict, ego_speed: float = EGO_SPEED) -> float:
    """Episode length [s]: :data:`AFTER_TTC_S` past the contact time; for ``frontal`` at least until the oncoming
    actor has reached where the ego started (a stopped ego is still met, at the actor's speed) plus
    :data:`PASS_MARGIN_S`."""
    ttc = params["ttc_s"]
    if family == "frontal":
        return max(ttc + AFTER_TTC_S, (ego_speed + params["speed"]) * ttc / params["speed"] + PASS_MARGIN_S)
    return ttc + AFTER_TTC_S


def longest_duration_s(family: str, ego_speed: float = EGO_SPEED) -> float:
    """The longest :func:`duration_s` of ``family``'s jitter ranges [s]."""
    ttc = JITTER[family]["ttc_s"][1]
    return duration_s(family, {"ttc_s": ttc, "speed": JITTER[family].get("speed", (1.0, 1.0))[0]}, ego_speed)


def build_scenario(family: str, seed: int, redraw: int, params: dict, event: AgentEvent, scene: SceneSpec,
                   start_time_s: float, ego_speed: float = EGO_SPEED) -> Scenario:
    """The :class:`Scenario` of one draw (in code; ``scenario.to_dict()`` writes it as a file)."""
    return Scenario(
        name=f"safety-{family}-{seed:04d}" + (f"-r{redraw}" if redraw else ""),
        description=f"NeuroNCAP-style {family} test, seed {seed}: " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()),
        scene=scene, start_time_s=float(start_time_s), duration_s=round(duration_s(family, params, ego_speed), 3),
        ego=EgoSpec(speed=float(ego_speed)), agents="log_replay", events=(event,),
        success=SuccessSpec(min_route_completion=0.0), metrics=(), seed=int(seed))


def world_of(scenario: Scenario, log) -> tuple[World, dict]:
    """The :class:`World` of ``scenario`` on its loaded scene ``log``, and its reset options."""
    settings, options = env_settings(scenario, log)
    return World.build(log, WorldConfig(**settings["world"])), {**options, "max_steps": settings["max_steps"]}


def resolve_actor(log, agent: str, start_frame: int) -> tuple[str, tuple[float, float]]:
    """Instance id and (length, width) [m] of the target vehicle: ``agent`` (an instance id of ``log``) or
    ``auto`` (the parked vehicle the core's ``insert`` event picks; one :class:`ScenarioError` if there is none)."""
    ids = list(log.objects.instance_ids)
    if agent == "auto":
        probe = World.build(log, WorldConfig(start_frame=start_frame, events=(AgentEvent(type="insert"),)))
        k = next(iter(probe.agents.inserted))
    elif agent in ids:
        k = ids.index(agent)
    else:
        raise ScenarioError(f"safety suite: actor: no instance {agent!r} in scene {log.name!r} "
                            f"(known: {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
    size = np.asarray(log.objects.sizes)[k]
    return ids[k], (float(size[0]), float(size[1]))


def velocities(world: World, prev, state) -> tuple[np.ndarray, np.ndarray]:
    """Ego velocity (2,) and agent velocities (K, 2) [m/s] in ``state`` (agents: their move since ``prev``)."""
    e = state.ego
    p0, _ = world.agent_poses(prev)
    p1, _ = world.agent_poses(state)
    return (np.array([e.speed * math.cos(e.yaw), e.speed * math.sin(e.yaw)]),
            (p1[:, :2, 3] - p0[:, :2, 3]) / (state.time_s - prev.time_s))


def impact_of(world: World, prev, state) -> Impact | None:
    """The collision of the step ``prev`` -> ``state`` (:class:`Impact`), or None."""
    hits = state.events.get("collided_with") or []
    if not hits:
        return None
    ids = list(world.log.objects.instance_ids)
    ego_v, agent_v = velocities(world, prev, state)
    speeds = [float(np.linalg.norm(ego_v - agent_v[ids.index(h)])) for h in hits]
    i = int(np.argmax(speeds))  # two at once: the harder one
    return Impact(round(state.time_s - world.start_time_s, 3), hits[i], speeds[i], float(state.ego.speed))


def do_nothing_controls(world: World, state, lookahead_time: float = 1.0, min_lookahead: float = 4.0):
    """(accel, steer) of the do-nothing ego: no acceleration, pure-pursuit steering along the route (the rule of
    the ``pure_pursuit`` agent: a look-ahead of ``lookahead_time`` [s], at least ``min_lookahead`` [m])."""
    e = state.ego
    xy, _ = world.route.interpolate(state.route_s + 2.0 * np.arange(1, 11))
    c, s = math.cos(e.yaw), math.sin(e.yaw)
    d = xy - [e.x, e.y]
    pts = np.vstack([[0.0, 0.0], np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], 1)])
    goal = lookahead_point(pts, max(min_lookahead, lookahead_time * e.speed))
    steer = pure_pursuit_steer(goal, world.config.vehicle.wheelbase)
    v = world.config.vehicle
    return 0.0, float(np.clip(steer, -v.max_steer, v.max_steer))


def reference_rollout(world: World, options: dict) -> Impact | None:
    """Drive the do-nothing ego (:func:`do_nothing_controls`) from the reset ``options`` (``ego_offset``,
    ``speed``, ``max_steps``) until it collides (its :class:`Impact`), completes its route or time runs out (None)."""
    state = reset(world, options["ego_offset"], options["speed"])
    steps = min(int(options["max_steps"]), int((world.end_time_s - state.time_s) / world.config.dt + 1e-6))
    for _ in range(steps):
        nxt = step(world, state, *do_nothing_controls(world, state))
        hit = impact_of(world, state, nxt)
        if hit is not None or nxt.events.get("route_completed") or nxt.events.get("offroad"):
            return hit
        state = nxt
    return None


def draw_variation(family: str, seed: int, log, scene: SceneSpec = TOWN, actor: str = "auto",
                   start_time_s: float | None = None, ego_speed: float = EGO_SPEED) -> Variation:
    """Variation ``seed`` of ``family`` on the loaded scene ``log`` (``scene`` says where it came from, for the
    scenario): the first draw whose do-nothing ego hits the target (see the module docstring).

    ``start_time_s``: episode start [s after the log's first frame]; default :data:`TOWN_START_S` on the town,
    else 0. A log too short for the family's longest episode (:func:`longest_duration_s`), or a seed without a
    valid draw in :data:`MAX_REDRAWS`, is one :class:`ScenarioError` line."""
    check_family(family)
    if start_time_s is None:
        start_time_s = TOWN_START_S if scene.path is None else 0.0
    rel = (np.asarray(log.timestamps_us) - log.timestamps_us[0]) * 1e-6
    need = longest_duration_s(family, ego_speed)
    if rel[-1] - start_time_s < need:
        raise ScenarioError(f"safety suite: scene {log.name!r} has {max(rel[-1] - start_time_s, 0.0):.1f} s of log "
                            f"after {start_time_s:g} s; the {family} family needs at least {need:.1f} s (its "
                            "longest episode)")
    start_frame = int(np.searchsorted(rel, start_time_s + 1e-6, side="right") - 1)
    actor_id, size = resolve_actor(log, actor, start_frame)
    vehicle = WorldConfig().vehicle
    tried = []
    for redraw in range(MAX_REDRAWS):
        params = draw_parameters(family, seed, redraw)
        event = insert_event(family, params, actor_id, size, vehicle, ego_speed)
        sc = build_scenario(family, seed, redraw, params, event, scene, start_time_s, ego_speed)
        world, options = world_of(sc, log)
        hit = reference_rollout(world, options)
        if hit is not None and hit.agent == actor_id and hit.speed > 0.5:
            return Variation(family, int(seed), redraw, params, actor_id, sc, hit)
        tried.append("no collision" if hit is None else f"hit {hit.agent!r} at {hit.speed:.1f} m/s")
    raise ScenarioError(f"safety suite: {family} seed {seed} on scene {log.name!r}: no draw of {MAX_REDRAWS} makes "
                        f"the do-nothing ego hit the target ({'; '.join(tried[:3])}, ...)")


def ncap_score(impact_speed: float | None, reference_speed: float) -> float:
    """NeuroNCAP's score of one run: 5 without a collision (``impact_speed`` None), else
    ``4 * max(0, 1 - impact_speed / reference_speed)`` (speeds [m/s], ``reference_speed`` > 0)."""
    if impact_speed is None:
        return MAX_SCORE
    if not reference_speed > 0 or not impact_speed >= 0:
        raise ValidationError(f"ncap_score: expected impact_speed >= 0 and reference_speed > 0 [m/s], got "
                              f"{impact_speed}, {reference_speed}")
    return 4.0 * max(0.0, 1.0 - float(impact_speed) / float(reference_speed))


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a rate of ``k`` in ``n``."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` (``resamples`` draws from
    ``default_rng(seed)``: the same values give the same interval)."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))
    means = v[idx].mean(1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def summarize_runs(scores, collided) -> dict:
    """Mean score with its std and bootstrap 95 % interval, collision rate with its Wilson 95 % interval."""
    s = np.asarray(scores, np.float64)
    c = np.asarray(collided, bool)
    n = len(s)
    return {"n": n, "mean_score": float(s.mean()) if n else float("nan"),
            "std_score": float(s.std(ddof=1)) if n > 1 else 0.0, "score_ci95": bootstrap_interval(s),
            "collision_rate": float(c.mean()) if n else float("nan"),
            "collision_ci95": wilson_interval(int(c.sum()), n)}


__all__ = ["FAMILIES", "JITTER", "Impact", "Variation", "draw_parameters", "draw_variation", "insert_event",
           "build_scenario", "impact_of", "ncap_score", "reference_rollout", "summarize_runs"]
