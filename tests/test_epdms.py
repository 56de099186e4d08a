"""NAVSIM v2's EPDMS, its rule terms, the human filter and nuPlan's speed limit compliance on hand-built traces (a
two-lane road as tiny RoadRules), plus one episode trace of the layout-only synthetic town."""

import numpy as np
import pytest
import shapely

from stag_sim import metrics as M
from stag_sim.errors import ValidationError
from stag_sim.metrics import AgentTrace, EgoTrace, EpisodeTrace
from stag_sim.metrics.epdms import NO_HUMAN
from stag_sim.metrics.extended_comfort import NO_PLANS
from stag_sim.metrics.rules import NO_RULES
from stag_sim.road_rules import RoadRules, TrafficLight

DT = 0.1  # [s]
EGO_LENGTH, EGO_WIDTH, EGO_OFFSET = 4.8, 2.0, 1.4  # [m]: box centre = rear axle + 1.4 m, front bumper + 3.8 m
ROAD = shapely.box(-100.0, -2.0, 1000.0, 5.5)  # both lanes
LIMIT = 10.0  # [m/s]
PLAN_DT, PLAN_H = 0.5, 8  # [s], waypoints: the env's default trajectory action


def road(*, limits=(LIMIT, LIMIT), lights=(), complete=True) -> RoadRules:
    """Two lanes along x, 3.5 m wide: ``east`` (y = 0, driving +x) and ``west`` (y = 3.5, driving -x)."""
    lanes = (shapely.LineString([(-100, 0), (1000, 0)]), shapely.LineString([(1000, 3.5), (-100, 3.5)]))
    return RoadRules(("east", "west"), lanes, ((), ()), np.array([False, False]), np.array(limits, float),
                     tuple(lights), complete)


def split_road(in_intersection=(False, True, False), limits=(LIMIT, LIMIT, LIMIT)) -> RoadRules:
    """The east lane in three pieces: ``a`` (to x = 20), the junction lane ``j`` (20..40), ``b`` (from 40)."""
    lanes = tuple(shapely.LineString(p) for p in ([(-100, 0), (20, 0)], [(20, 0), (40, 0)], [(40, 0), (1000, 0)]))
    flags = None if in_intersection is None else np.array(in_intersection)
    return RoadRules(("a", "j", "b"), lanes, (("j",), ("b",), ()), flags, np.array(limits, float), (), True)


def light(states=("red",), change_s=(0.0,), x=50.0) -> TrafficLight:
    """A signal for the east lane, stop line across it at ``x`` (right kerb end first: controls +x)."""
    return TrafficLight("L1", ("east",), np.array([[x, -1.75], [x, 1.75]]), np.array([x, -3.0, 3.2]),
                        np.array(change_s, float), tuple(states)).validate()


def drive(speeds, x0=0.0, y=0.0, yaw=0.0) -> EgoTrace:
    """Ego along +x (or -x with yaw = pi) at the per-step speeds [m/s] (trapezoidal integration)."""
    v = np.asarray(speeds, dtype=np.float64)
    s = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2.0 * DT)])
    T = len(v)
    xy = np.stack([x0 + np.cos(yaw) * s, np.broadcast_to(np.asarray(y, float), (T,)) + np.sin(yaw) * s], axis=-1)
    return EgoTrace(np.arange(T) * DT, xy, np.full(T, yaw), v, EGO_LENGTH, EGO_WIDTH, EGO_OFFSET)


def cv_plans(ego: EgoTrace, accel=None) -> np.ndarray:
    """Plans along +x from each step: constant speed, or ``accel[k]`` [m/s^2] at step k; the last step has none."""
    T = ego.num_steps
    t = PLAN_DT * np.arange(1, PLAN_H + 1)
    a = np.zeros(T) if accel is None else np.asarray(accel, float)
    plans = np.zeros((T, PLAN_H, 2))
    plans[:, :, 0] = ego.xy[:, :1] + ego.speed[:, None] * t + 0.5 * a[:, None] * t ** 2
    plans[:, :, 1] = ego.xy[:, 1:]
    plans[-1] = np.nan
    return plans


def trace(ego, *, rules=None, agents=None, drivable=ROAD, reference=None, human=None, plans=None) -> EpisodeTrace:
    T = ego.num_steps
    progress = ego.xy[:, 0] - ego.xy[0, 0]
    return EpisodeTrace(ego, agents or AgentTrace.empty(T), drivable, np.array([[-100.0, 0.0], [1000.0, 0.0]]),
                        progress, float(progress[-1]) if reference is None else reference, ego.xy.copy(),
                        np.ones(T, bool), rules=rules, human=human, plans=plans,
                        plan_dt=PLAN_DT if plans is not None else None).validate()


def one_agent(T, category, x, length=4.5, width=1.8, speed=0.0, y=0.0) -> AgentTrace:
    xy = np.stack([x + speed * DT * np.arange(T), np.full(T, y)], axis=-1)[:, None, :]
    return AgentTrace(("a1",), (category,), np.array([[length, width, 1.5]]), xy, np.zeros((T, 1)),
                      np.full((T, 1), speed), np.ones((T, 1), bool))


def clean(T=31, **kw) -> EpisodeTrace:
    ego = drive(np.full(T, 8.0))
    return trace(ego, rules=road(), human=ego, plans=cv_plans(ego), **kw)


# --- EPDMS on a clean drive and a red-light runner ---------------------------------------------------------------


def test_clean_drive_scores_epdms_one_with_every_term_scored():
    r = M.compute_metrics(clean())
    assert r["epdms"].score == 1.0
    for k in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec"):
        assert r["epdms"].details[k] == 1.0, k
    assert r["epdms"].details["unscored"] == {} and r["epdms"].details["human_filtered"] == []
    assert r["speed_limit_compliance"].score == 1.0
    row = M.summarize(r)
    for col in ("epdms", "ddc", "tlc", "lk", "hc", "ec", "speed_limit_compliance", "pdms"):
        assert row[col] == 1.0, col
    assert row["epdms_human_filtered"] == "" and row["red_light_crossings"] == 0 and "unscored" not in row


def test_red_light_runner_scores_epdms_zero():
    ego = drive(np.full(61, 10.0))  # front bumper from x = 3.8 to 63.8: crosses the stop line at x = 50 at 4.62 s
    r = M.compute_metrics(trace(ego, rules=road(lights=[light()]), plans=cv_plans(ego)))
    assert r["traffic_light_compliance"].score == 0.0
    (c,) = r["traffic_light_compliance"].details["crossings"]
    assert c["light"] == "L1" and c["state"] == "red" and c["step"] == 46 and c["time_s"] == pytest.approx(4.62)
    assert r["epdms"].score == 0.0 and r["epdms"].details["multiplier"] == 0.0
    assert r["pdms"].score == 1.0  # PDMS has no traffic-light term
    assert M.summarize(r)["red_light_crossings"] == 1


# --- TLC --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("states,change_s,expected", [
    (("green",), (0.0,), 1.0),
    (("red", "green"), (0.0, 4.0), 1.0),  # green from 4.0 s, crossed at 4.62 s
    (("green", "red"), (0.0, 4.5), 0.0),  # red from 4.5 s
    (("green", "yellow"), (0.0, 4.5), 1.0),  # yellow is not red
])
def test_tlc_takes_the_light_state_at_the_crossing_time(states, change_s, expected):
    ego = drive(np.full(61, 10.0))
    assert M.traffic_light_compliance(trace(ego, rules=road(lights=[light(states, change_s)]))).score == expected


def test_tlc_stopping_before_the_line_or_crossing_against_its_direction_is_compliant():
    stop = drive(np.concatenate([np.full(30, 10.0), np.linspace(10.0, 0.0, 31)]))  # front stops at x ~ 49.2
    assert stop.xy[-1, 0] + 3.8 < 50.0
    r = M.traffic_light_compliance(trace(stop, rules=road(lights=[light()])))
    assert r.score == 1.0 and r.details["crossings"] == []
    back = drive(np.full(61, 10.0), x0=100.0, yaw=np.pi)  # westbound over the east lane's stop line
    assert M.traffic_light_compliance(trace(back, rules=road(lights=[light()]), reference=0.0)).details["crossings"] == []


def test_tlc_is_not_scored_with_unknown_or_unlisted_lights_or_without_a_map():
    ego = drive(np.full(61, 10.0))
    for rules in (road(lights=[light(("unknown",))]), road(complete=False)):  # the reason is RoadRules'
        r = M.traffic_light_compliance(trace(ego, rules=rules))
        assert r.score is None and rules.lights_scorable and r.details["unscored"] == {"tlc": rules.lights_scorable}
        assert M.epdms(trace(ego, rules=rules)).details["unscored"]["tlc"] == rules.lights_scorable
    mapless = M.traffic_light_compliance(trace(ego))
    assert mapless.score is None and mapless.details["unscored"] == {"tlc": NO_RULES}
    none = M.traffic_light_compliance(trace(ego, rules=road()))  # a complete map without signals
    assert none.score == 1.0 and none.details["lights"] == 0


# --- DDC --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed,expected", [(1.8, 1.0), (1.85, 0.5), (5.4, 0.5), (5.5, 0.0), (10.0, 0.0)])
def test_ddc_thresholds_on_oncoming_progress_over_one_second(speed, expected):
    ego = drive(np.full(31, speed), y=3.5)  # eastbound in the westbound lane
    r = M.driving_direction_compliance(trace(ego, rules=road()))
    # NAVSIM sums the window oncoming_progress[i - 10 : i + 1]: 11 steps of 0.1 s (1.98, 2.035, 5.94, 6.05 m)
    assert r.details["max_oncoming_progress"] == pytest.approx(1.1 * speed)
    assert r.score == expected and r.details["oncoming_steps"] == 31


def test_ddc_own_lane_scores_one_and_a_maples_log_is_not_scored():
    ego = drive(np.full(31, 10.0))
    r = M.driving_direction_compliance(trace(ego, rules=road()))
    assert r.score == 1.0 and r.details["max_oncoming_progress"] == 0.0
    mapless = M.driving_direction_compliance(trace(ego))
    assert mapless.score is None and mapless.details["unscored"] == {"ddc": NO_RULES}


def test_ddc_wrong_way_drive_halves_epdms():
    ego = drive(np.full(31, 3.0), y=3.5)
    r = M.epdms(trace(ego, rules=road(), plans=cv_plans(ego)))  # 3.5 m from the east centreline: LK fails too
    assert r.details["ddc"] == 0.5 and r.details["lk"] == 0.0 and r.score == 0.5 * (5 + 5 + 0 + 2 + 2) / 16


# --- LK ---------------------------------------------------------------------------------------------------------


def test_lk_fails_after_two_seconds_off_the_centreline():
    off = 0.6  # [m] > 0.5 m from the east centreline, still in its lane
    r19 = M.lane_keeping(trace(drive(np.full(19, 10.0), y=-off), rules=road()))
    assert r19.score == 1.0 and r19.details["steps_required"] == 20 and r19.details["steps_off_lane"] == 19
    r20 = M.lane_keeping(trace(drive(np.full(20, 10.0), y=-off), rules=road()))
    assert r20.score == 0.0 and r20.details["failed_step"] == 19
    assert r20.details["max_deviation"] == pytest.approx(off)
    near = M.lane_keeping(trace(drive(np.full(40, 10.0), y=-0.4), rules=road()))
    assert near.score == 1.0 and near.details["steps_off_lane"] == 0


def test_lk_does_not_count_steps_in_an_intersection_lane():
    ego = drive(np.full(30, 10.0), y=-0.6)  # centre x = 1.4 .. 30.4: in the junction lane's corridor from step 17
    exempt = M.lane_keeping(trace(ego, rules=split_road()))
    assert exempt.score == 1.0 and exempt.details["intersection_steps"] == 13
    counted = M.lane_keeping(trace(ego, rules=split_road(in_intersection=(False, False, False))))
    assert counted.score == 0.0 and counted.details["failed_step"] == 19
    unknown = M.lane_keeping(trace(ego, rules=split_road(in_intersection=None)))
    assert unknown.score == 0.0 and unknown.details["intersections_known"] is False
    mapless = M.lane_keeping(trace(ego))
    assert mapless.score is None and mapless.details["unscored"] == {"lk": NO_RULES}


# --- NC, DAC, EP, TTC, HC inside EPDMS ---------------------------------------------------------------------------


def test_nc_static_collision_halves_and_vehicle_collision_zeroes_epdms():
    ego = drive(np.full(31, 8.0))
    plans = cv_plans(ego)
    barrier = M.epdms(trace(ego, rules=road(), agents=one_agent(31, "movable_object.barrier", 20.0, 0.5, 0.5),
                            plans=plans))
    assert barrier.details["nc"] == 0.5 and barrier.details["ttc"] == 0.0
    assert barrier.score == 0.5 * (5 + 0 + 2 + 2 + 2) / 16
    car = M.epdms(trace(ego, rules=road(), agents=one_agent(31, "vehicle.car", 20.0), plans=plans))
    assert car.details["nc"] == 0.0 and car.score == 0.0


def test_dac_zero_or_unscored():
    off = drive(np.full(31, 8.0), y=5.0)  # box from y = 4 to 6: over the road's left edge at 5.5
    r = M.epdms(trace(off, rules=road()))
    assert r.details["dac"] == 0.0 and r.score == 0.0
    ego = drive(np.full(31, 8.0))
    r = M.epdms(trace(ego, rules=road(), drivable=None, plans=cv_plans(ego)))
    assert r.details["dac"] is None and r.score == 1.0 and "dac" in r.details["unscored"]


def test_ep_enters_with_weight_five():
    ego = drive(np.full(31, 8.0))  # 24 m of progress against a 48 m reference
    r = M.epdms(trace(ego, rules=road(), reference=48.0, plans=cv_plans(ego), human=ego))
    assert r.details["ep"] == pytest.approx(0.5) and r.score == pytest.approx((5 * 0.5 + 5 + 2 + 2 + 2) / 16)


def test_ttc_enters_with_weight_five():
    T = 11  # ego 10 m/s closes on a car at 5 m/s to 2 m, never touching it
    ego = drive(np.full(T, 10.0))
    r = M.epdms(trace(ego, rules=road(), agents=one_agent(T, "vehicle.car", 13.05, speed=5.0), plans=cv_plans(ego)))
    assert r.details["nc"] == 1.0 and r.details["ttc"] == 0.0 and r.score == (5 + 0 + 2 + 2 + 2) / 16


def test_hc_is_the_comfort_of_the_driven_ego():
    braking = drive(np.concatenate([np.full(20, 10.0), np.linspace(10.0, 0.0, 11), np.zeros(20)]))  # -10 m/s^2
    r = M.history_comfort(trace(braking, rules=road()))
    assert r.score == 0.0 and "lon_acc" in [f["signal"] for f in r.details["failed"]]
    e = M.epdms(trace(braking, rules=road()))  # no plans: EC left out, weights 5 + 5 + 2 + 2
    assert e.details["hc"] == 0.0 and e.details["ec"] is None and e.score == (5 + 5 + 2 + 0) / 14
    assert M.history_comfort(clean()).score == 1.0


# --- EC ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decel,expected", [(0.5, 1.0), (1.0, 1.0 - 2 / 9)])
def test_ec_is_the_fraction_of_consistent_consecutive_plans(decel, expected):
    ego = drive(np.full(11, 10.0))
    accel = np.zeros(11)
    accel[5] = -decel  # one plan that brakes: compared with the plans before and after it (2 of 9 pairs)
    r = M.extended_comfort(trace(ego, rules=road(), plans=cv_plans(ego, accel)))
    assert r.details["pairs"] == 9
    assert r.score == pytest.approx(expected, abs=1e-12)
    assert r.details["max_rms"]["acceleration"] == pytest.approx(decel)
    if expected < 1:
        assert [p["step"] for p in r.details["failed_pairs"]] == [4, 5]
        assert r.details["failed_pairs"][0]["features"] == ["acceleration"]


def test_ec_is_not_scored_without_plans():
    r = M.extended_comfort(trace(drive(np.full(11, 10.0)), rules=road()))
    assert r.score is None and r.details["unscored"] == {"ec": NO_PLANS}
    row = M.summarize(M.compute_metrics(trace(drive(np.full(11, 10.0)), rules=road())))
    assert row["ec"] is None and "ec: " + NO_PLANS in row["unscored"]


def test_plans_and_human_are_validated():
    ego = drive(np.full(11, 10.0))
    plans = cv_plans(ego)
    with pytest.raises(ValidationError, match="EpisodeTrace.plans: expected shape"):
        trace(ego, plans=plans[:, :, :1])
    bad = plans.copy()
    bad[3, 2, 0] = np.nan
    with pytest.raises(ValidationError, match="EpisodeTrace.plans: step 3 is partly non-finite"):
        trace(ego, plans=bad)
    with pytest.raises(ValidationError, match="EpisodeTrace.human: expected the ego's 11 times"):
        trace(ego, human=drive(np.full(12, 10.0)))
    with pytest.raises(ValidationError, match="EpisodeTrace.rules: expected a RoadRules"):
        trace(ego, rules="map")


# --- speed limit compliance ---------------------------------------------------------------------------------------


def test_speed_limit_compliance_nuplan_score():
    fast = M.speed_limit_compliance(trace(drive(np.full(11, 12.0)), rules=road()))
    # 2 m/s over at 11 steps of 0.1 s over a 1 s episode: 1 - 2.2 / 2.23
    assert fast.score == pytest.approx(1.0 - 2.2 / 2.23) and fast.details["max_overspeed"] == pytest.approx(2.0)
    assert M.speed_limit_compliance(trace(drive(np.full(11, 9.0)), rules=road())).score == 1.0
    assert M.speed_limit_compliance(trace(drive(np.full(11, 20.0)), rules=road())).score == 0.0


def test_speed_limit_on_a_connector_is_the_largest_of_its_neighbours():
    ego = drive(np.full(11, 12.0), x0=22.0)  # centre x = 23.4 .. 34.4: only in the junction lane's corridor
    r = M.speed_limit_compliance(trace(ego, rules=split_road(limits=(10.0, np.nan, 15.0))))
    assert r.score == 1.0 and r.details["known_limit_steps"] == 11
    r = M.speed_limit_compliance(trace(ego, rules=split_road(limits=(10.0, 20.0, np.nan))))
    assert r.score is None and r.details["unknown_limit_steps"] == 11


def test_speed_limit_is_not_scored_where_unknown():
    ego = drive(np.full(11, 12.0))
    r = M.speed_limit_compliance(trace(ego, rules=road(limits=(np.nan, np.nan))))
    assert r.score is None and r.details["unscored"] == {"speed_limit": "the map gives no speed limits"}
    r = M.speed_limit_compliance(trace(ego))
    assert r.score is None and r.details["unscored"] == {"speed_limit": NO_RULES}


# --- human filter -------------------------------------------------------------------------------------------------


def test_human_filter_lifts_what_the_human_also_fails():
    ego = drive(np.full(61, 10.0))
    rules = road(lights=[light()])
    runner = M.epdms(trace(ego, rules=rules, human=ego, plans=cv_plans(ego)))  # the human ran the red light too
    assert runner.score == 1.0 and runner.details["human_filtered"] == ["tlc"]
    assert runner.details["own"]["tlc"] == 0.0 and runner.details["human"]["tlc"] == 0.0
    stopper = drive(np.concatenate([np.full(30, 10.0), np.linspace(10.0, 0.0, 31)]))
    r = M.epdms(trace(ego, rules=rules, human=stopper, plans=cv_plans(ego)))
    assert r.score == 0.0 and r.details["human_filtered"] == [] and r.details["human"]["tlc"] == 1.0
    alone = M.epdms(trace(ego, rules=rules, plans=cv_plans(ego)))
    assert alone.score == 0.0 and alone.details["human"] is None and alone.details["human_note"] == NO_HUMAN
    assert M.summarize({"epdms": runner})["epdms_human_filtered"] == "tlc"


def test_human_filter_keeps_ep_and_half_scores():
    ego = drive(np.full(31, 3.0), y=3.5)  # wrong way at 3 m/s: DDC 0.5 and LK 0, for the human too
    r = M.epdms(trace(ego, rules=road(), human=ego, reference=2 * 9.0, plans=cv_plans(ego)))
    assert r.details["human"]["ddc"] == 0.5 and r.details["human"]["lk"] == 0.0
    assert r.details["human_filtered"] == ["lk"]  # NAVSIM lifts only what the human scores 0: not DDC's 0.5
    assert r.details["own"]["lk"] == 0.0 and r.details["lk"] == 1.0
    assert r.details["ep"] == pytest.approx(0.5)  # EP is never filtered
    assert r.score == pytest.approx(0.5 * (5 * 0.5 + 5 + 2 + 2 + 2) / 16)


# --- the layout-only town -----------------------------------------------------------------------------------------


def test_town_episode_trace_carries_rules_human_and_is_scored():
    from stag_sim.app.episode import TraceRecorder, episode_trace
    from stag_sim.synth import generate
    from stag_sim.world import World, expert, reset, step

    log = generate.generate_scene(0, duration_s=4.0, sensors=False)
    world = World.build(log)
    rec = TraceRecorder(plan_dt=PLAN_DT)
    state = reset(world)
    for _ in range(30):
        rec.add(world, state)
        rec.add_plan(state.ego, np.stack([np.arange(1, PLAN_H + 1) * PLAN_DT * state.ego.speed, np.zeros(PLAN_H)], 1))
        state = step(world, state, *expert(world, state))
    rec.add(world, state)
    ep = episode_trace(world, rec, False, 3.0)
    assert ep.rules is world.rules and ep.rules is not None and ep.plans.shape == (31, PLAN_H, 2)
    assert np.isnan(ep.plans[-1]).all() and ep.human.num_steps == 31
    k = 10  # the ego-frame waypoints (v * 0.5 s * j, 0) land ahead of the ego along its heading
    heading = np.array([np.cos(ep.ego.yaw[k]), np.sin(ep.ego.yaw[k])])
    assert np.allclose(ep.plans[k, 1], ep.ego.xy[k] + 2 * PLAN_DT * ep.ego.speed[k] * heading)
    assert np.allclose(ep.human.xy, ep.logged_xy)
    r = M.compute_metrics(ep)
    assert r["traffic_light_compliance"].score == 1.0  # the logged drive meets green
    assert r["driving_direction_compliance"].score == 1.0 and r["lane_keeping"].score == 1.0
    assert r["speed_limit_compliance"].score == 1.0 and r["extended_comfort"].score is not None
    assert 0.0 <= r["epdms"].score <= 1.0 and r["epdms"].details["human"] is not None
