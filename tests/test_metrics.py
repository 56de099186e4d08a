"""Closed-loop metrics on hand-built trajectories: exact PDMS, driving score and log divergence values."""

import math

import numpy as np
import pytest
import shapely

from stag_sim import metrics as M
from stag_sim.errors import ValidationError
from stag_sim.metrics import AgentTrace, EgoTrace, EpisodeTrace
from stag_sim.metrics.comfort import _savgol

DT = 0.1  # [s]
EGO_LENGTH, EGO_WIDTH, EGO_OFFSET = 4.8, 2.0, 1.4  # [m]; ego front bumper = rear axle + 3.8 m
ROAD = shapely.box(-100.0, -4.0, 1000.0, 4.0)  # straight road along x, 8 m wide
ROUTE_LENGTH = 500.0  # [m]


def drive(speeds, x0=0.0, y=0.0) -> EgoTrace:
    """Ego driving along +x at the given per-step speeds (trapezoidal integration)."""
    v = np.asarray(speeds, dtype=np.float64)
    x = x0 + np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2.0 * DT)])
    T = len(v)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), (T,)).copy()
    return EgoTrace(np.arange(T) * DT, np.stack([x, y], axis=-1), np.zeros(T), v, EGO_LENGTH, EGO_WIDTH, EGO_OFFSET)


def agents(T, *specs) -> AgentTrace:
    """specs: (id, category, (length, width), x0, y0, speed along +x [m/s]); valid at every step."""
    if not specs:
        return AgentTrace.empty(T)
    t = np.arange(T) * DT
    ids, cats, sizes, xy, speed = [], [], [], [], []
    for aid, cat, (length, width), x0, y0, v in specs:
        ids.append(aid)
        cats.append(cat)
        sizes.append([length, width, 1.5])
        xy.append(np.stack([x0 + v * t, np.full(T, y0)], axis=-1))
        speed.append(np.full(T, float(v)))
    K = len(specs)
    return AgentTrace(tuple(ids), tuple(cats), np.array(sizes), np.stack(xy, axis=1), np.zeros((T, K)),
                      np.stack(speed, axis=1), np.ones((T, K), dtype=bool))


def episode(ego, ag=None, drivable=ROAD, reference=None, logged_xy=None, logged_valid=None, route_completed=False,
            route_length=ROUTE_LENGTH) -> EpisodeTrace:
    T = ego.num_steps
    progress = np.clip(ego.xy[:, 0], 0.0, route_length)  # straight route from the origin along +x
    reference = float(progress[-1] - progress[0]) if reference is None else reference
    logged_xy = ego.xy.copy() if logged_xy is None else logged_xy
    logged_valid = np.ones(T, dtype=bool) if logged_valid is None else logged_valid
    return EpisodeTrace(ego, agents(T) if ag is None else ag, drivable, np.array([[0.0, 0.0], [route_length, 0.0]]),
                        progress, reference, logged_xy, logged_valid, route_completed).validate()


def pdms_of(nc, dac, ep, ttc, c):
    return nc * dac * (5 * ep + 5 * ttc + 2 * c) / 12


# --- PDMS -----------------------------------------------------------------------------------------------------------


def test_straight_lane_drive_scores_one_everywhere():
    trace = episode(drive(np.full(51, 10.0)), route_length=50.0)  # drives the whole 50 m route
    results = M.compute_metrics(trace)
    assert set(results) == set(M.METRICS)
    row = M.summarize(results)
    for key in ("pdms", "nc", "dac", "ep", "ttc", "comfort", "driving_score"):
        assert row[key] == 1.0, key
    assert row["at_fault_collisions"] == 0 and row["collisions_vehicle"] == 0
    assert row["ade"] == 0.0 and row["fde"] == 0.0 and row["offroad_fraction"] == 0.0
    assert row["progress"] == pytest.approx(50.0)
    assert results["driving_score"].details["route_completion"] == 1.0
    assert M.driving_score(episode(drive(np.full(51, 10.0)))).score == pytest.approx(50.0 / ROUTE_LENGTH)


def test_leaving_the_road_gives_dac_zero_and_pdms_zero():
    ego = drive(np.full(51, 10.0))
    y = np.linspace(0.0, 6.0, 51)  # drifts left off the 4 m half-width road
    ego = EgoTrace(ego.time_s, np.stack([ego.xy[:, 0], y], -1), ego.yaw, ego.speed, EGO_LENGTH, EGO_WIDTH, EGO_OFFSET)
    trace = episode(ego)
    dac = M.drivable_area_compliance(trace)
    assert dac.score == 0.0
    assert dac.details["first_offroad_step"] == int(np.argmax(y + EGO_WIDTH / 2 > 4.0))
    assert dac.details["max_outside_distance"] == pytest.approx(6.0 + 1.0 - 4.0)
    assert M.pdms(trace).score == 0.0
    # no drivable area (no map, no LiDAR ground): DAC is not scored, and PDMS is the product of the rest
    unscored = M.pdms(episode(ego, drivable=None))
    assert unscored.details["dac"] is None and set(unscored.details["unscored"]) == {"dac"}
    parts = unscored.details
    assert unscored.score == pytest.approx(parts["nc"] * (5 * parts["ep"] + 5 * parts["ttc"] + 2 * parts["comfort"]) / 12)


def test_rear_ending_a_stopped_car_is_at_fault():
    trace = episode(drive(np.full(51, 10.0)), agents(51, ("car", "vehicle.car", (4.5, 1.9), 40.0, 0.0, 0.0)))
    nc = M.no_at_fault_collisions(trace)
    assert nc.score == 0.0
    assert nc.details["at_fault_ids"] == ["car"] and nc.details["at_fault_vehicle"] == 1
    [event] = nc.details["events"]
    assert event["type"] == "stopped_track"
    # front bumper (x + 3.8) reaches the car's rear (40 - 2.25) first at x = 34 -> step 34
    assert event["step"] == 34
    assert M.time_to_collision(trace).score == 0.0
    assert M.pdms(trace).score == 0.0


def test_running_into_a_slower_moving_lead_is_an_active_front_collision():
    trace = episode(drive(np.full(51, 10.0)), agents(51, ("lead", "vehicle.car", (4.5, 1.9), 15.0, 0.0, 5.0)))
    nc = M.no_at_fault_collisions(trace)
    assert nc.details["events"][0]["type"] == "active_front"
    assert nc.score == 0.0


def test_being_rear_ended_while_stopped_is_not_at_fault():
    trace = episode(drive(np.zeros(51)), agents(51, ("tailgater", "vehicle.car", (4.5, 1.9), -30.0, 0.0, 8.0)))
    nc = M.no_at_fault_collisions(trace)
    assert nc.score == 1.0
    assert nc.details["collisions"] == 1 and nc.details["at_fault_collisions"] == 0
    assert nc.details["events"][0]["type"] == "stopped_ego"
    assert M.pdms(trace).score == 1.0  # stopped: no TTC check; no progress expected (reference 0 m -> EP 1)
    # CARLA counts every collision, at fault or not
    assert M.driving_score(trace).details["infraction_penalty"] == pytest.approx(0.6)


def test_being_rear_ended_while_moving_is_not_at_fault():
    trace = episode(drive(np.full(51, 5.0)), agents(51, ("fast", "vehicle.car", (4.5, 1.9), -20.0, 0.0, 12.0)))
    nc = M.no_at_fault_collisions(trace)
    assert nc.details["events"][0]["type"] == "active_rear"
    assert nc.score == 1.0
    assert M.time_to_collision(trace).score == 1.0  # agents behind are ignored for TTC


def test_lateral_collision_is_at_fault_only_off_the_drivable_area():
    # a car alongside drifting into the ego's side while both move (y of the car crosses into the ego box)
    T = 31
    ag = agents(T, ("side", "vehicle.car", (4.5, 1.9), 0.5, 3.0, 10.0))  # beside, clear of the front bumper
    ag = AgentTrace(ag.ids, ag.categories, ag.sizes, ag.xy - np.stack([np.zeros(T), np.linspace(0, 2.5, T)], -1)[:, None],
                    ag.yaw, ag.speed, ag.valid)
    on_road = episode(drive(np.full(T, 10.0)), ag)
    nc = M.no_at_fault_collisions(on_road)
    assert nc.details["events"][0]["type"] == "active_lateral"
    assert nc.score == 1.0
    narrow = shapely.box(-100.0, -0.5, 1000.0, 0.5)  # the ego box sticks out of this road at every step
    assert M.no_at_fault_collisions(episode(drive(np.full(T, 10.0)), ag, drivable=narrow)).score == 0.0


def test_hitting_a_static_barrier_halves_nc():
    barrier = ("barrier", "movable_object.barrier", (0.5, 2.0), 30.0, 0.0, 0.0)
    trace = episode(drive(np.full(51, 10.0)), agents(51, barrier))
    result = M.pdms(trace)
    assert result.details["nc"] == 0.5
    assert result.details["ttc"] == 0.0  # an at-fault collision is a TTC violation (nuPlan)
    assert result.details["ep"] == 1.0 and result.details["comfort"] == 1.0
    assert result.score == pytest.approx(pdms_of(0.5, 1.0, 1.0, 0.0, 1.0)) == pytest.approx(7 / 24)
    # nuPlan allows one static collision: a second one gives NC 0
    second = ("cone", "movable_object.trafficcone", (0.4, 0.4), 45.0, 0.0, 0.0)
    assert M.no_at_fault_collisions(episode(drive(np.full(51, 10.0)), agents(51, barrier, second))).score == 0.0


def test_hard_braking_is_uncomfortable():
    speeds = np.concatenate([np.full(20, 14.0), 14.0 - 0.6 * np.arange(20), np.full(21, 2.0)])  # -6 m/s^2 for 2 s
    trace = episode(drive(speeds))
    c = M.comfort(trace)
    assert c.score == 0.0
    failed = {f["signal"]: f for f in c.details["failed"]}
    assert failed["lon_acc"]["value"] == pytest.approx(-6.0, abs=1e-6)
    assert 20 <= failed["lon_acc"]["step"] <= 40
    assert M.pdms(trace).score == pytest.approx(pdms_of(1, 1, 1, 1, 0)) == pytest.approx(10 / 12)


@pytest.mark.parametrize("accel, ok", [(2.3, True), (2.5, False), (-4.0, True), (-4.1, False)])
def test_longitudinal_acceleration_bounds(accel, ok):
    speeds = 10.0 + accel * np.arange(21) * DT
    c = M.comfort(episode(drive(speeds)))
    assert c.details["extremes"]["lon_acc"]["min"] == pytest.approx(accel, abs=1e-6)
    assert c.score == (1.0 if ok else 0.0)
    if not ok:
        assert [f["signal"] for f in c.details["failed"]] == ["lon_acc"]


@pytest.mark.parametrize("yaw_rate, ok", [(0.9, True), (1.0, False)])
def test_yaw_rate_bound_on_a_circle(yaw_rate, ok):
    T, v = 41, 3.0  # lateral acceleration v * yaw_rate = 2.7 / 3.0 m/s^2, within its bound
    yaw = yaw_rate * np.arange(T) * DT
    r = v / yaw_rate
    xy = np.stack([r * np.sin(yaw), r * (1 - np.cos(yaw))], -1)
    ego = EgoTrace(np.arange(T) * DT, xy, yaw, np.full(T, v), EGO_LENGTH, EGO_WIDTH, EGO_OFFSET)
    c = M.comfort(episode(ego, drivable=None))
    assert c.details["extremes"]["yaw_rate"]["max"] == pytest.approx(yaw_rate, abs=1e-6)
    assert c.details["extremes"]["lat_acc"]["max"] == pytest.approx(v * yaw_rate, abs=1e-6)
    assert c.score == (1.0 if ok else 0.0)
    if not ok:
        assert [f["signal"] for f in c.details["failed"]] == ["yaw_rate"]


def test_half_the_reference_progress_gives_ep_one_half():
    trace = episode(drive(np.full(21, 10.0)), reference=40.0)  # 20 m of 40 m
    assert M.ego_progress(trace).score == pytest.approx(0.5)
    assert M.pdms(trace).score == pytest.approx(pdms_of(1, 1, 0.5, 1, 1)) == pytest.approx(9.5 / 12)
    # below NAVSIM's 5 m threshold progress is not judged
    assert M.ego_progress(episode(drive(np.full(3, 10.0)), reference=4.0)).score == 1.0
    # more progress than the reference is capped at 1
    assert M.ego_progress(episode(drive(np.full(21, 10.0)), reference=10.0)).score == 1.0


def test_closing_on_a_slower_lead_within_one_second_fails_ttc():
    # gap 4 m, closing at 5 m/s: the 0.9 s projection overlaps, 0.6 s does not; no actual collision in 0.4 s
    lead_x = 3.8 + 4.0 + 2.25
    trace = episode(drive(np.full(5, 10.0)), agents(5, ("lead", "vehicle.car", (4.5, 1.9), lead_x, 0.0, 5.0)))
    ttc = M.time_to_collision(trace)
    assert ttc.score == 0.0
    assert ttc.details == {"violation": "projected_collision", "step": 0, "id": "lead", "offset_s": 0.9}
    assert M.no_at_fault_collisions(trace).score == 1.0
    assert M.pdms(trace).score == pytest.approx(pdms_of(1, 1, 1, 0, 1)) == pytest.approx(7 / 12)
    # same gap, same speed: no violation; a faster car approaching from behind is ignored
    same = episode(drive(np.full(5, 10.0)), agents(5, ("lead", "vehicle.car", (4.5, 1.9), lead_x, 0.0, 10.0)))
    assert M.time_to_collision(same).score == 1.0
    behind = episode(drive(np.full(5, 10.0)), agents(5, ("rear", "vehicle.car", (4.5, 1.9), -9.0, 0.0, 20.0)))
    assert M.time_to_collision(behind).score == 1.0


# --- driving score --------------------------------------------------------------------------------------------------


def test_driving_score_multiplies_collision_penalties():
    ag = agents(61, ("car", "vehicle.car", (4.5, 1.9), 20.0, 0.0, 0.0),
                ("ped", "human.pedestrian.adult", (0.6, 0.6), 45.0, 0.5, 0.0))
    trace = episode(drive(np.full(61, 10.0)), ag, route_length=100.0)  # 60 m of a 100 m route
    ds = M.driving_score(trace)
    assert ds.details["route_completion"] == pytest.approx(0.6)
    assert ds.details["collisions_vehicle"] == 1 and ds.details["collisions_pedestrian"] == 1
    assert ds.details["collisions_static"] == 0
    assert ds.score == pytest.approx(0.6 * 0.6 * 0.5)
    done = episode(drive(np.full(61, 10.0)), ag, route_length=100.0, route_completed=True)
    assert M.driving_score(done).score == pytest.approx(0.6 * 0.5)


def test_driving_score_removes_route_driven_off_road():
    short_road = shapely.box(-100.0, -4.0, 50.0, 4.0)
    trace = episode(drive(np.full(101, 10.0)), drivable=short_road, route_length=100.0, route_completed=True)
    ds = M.driving_score(trace)
    # front corners (x + 3.8) leave the road from x = 47 m on: 54 of the 100 route metres are driven off-road
    assert ds.details["offroad_fraction"] == pytest.approx(0.54)
    assert ds.details["route_completion"] == 1.0
    assert ds.score == pytest.approx(0.46)


# --- log divergence -------------------------------------------------------------------------------------------------


def test_constant_lateral_offset_gives_ade_fde_one():
    ego = drive(np.full(31, 10.0))
    logged = ego.xy + np.array([0.0, 1.0])
    ld = M.log_divergence(episode(ego, logged_xy=logged))
    assert ld.score == pytest.approx(1.0)
    assert ld.details["fde"] == pytest.approx(1.0) and ld.details["max_displacement"] == pytest.approx(1.0)


def test_log_divergence_uses_valid_steps_only():
    ego = drive(np.full(11, 10.0))
    offset = np.arange(11, dtype=np.float64)
    logged = ego.xy + np.stack([np.zeros(11), offset], -1)
    valid = offset <= 6
    logged[~valid] = np.nan  # NaN is allowed where there is no log
    ld = M.log_divergence(episode(ego, logged_xy=logged, logged_valid=valid))
    assert ld.details["ade"] == pytest.approx(3.0)
    assert ld.details["fde"] == pytest.approx(6.0)
    assert ld.details["valid_steps"] == 7
    assert math.isnan(M.log_divergence(episode(ego, logged_xy=logged, logged_valid=np.zeros(11, bool))).score)


# --- registry, validation, helpers ----------------------------------------------------------------------------------


def test_registry_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="pdms"):
        M.register_metric("pdms")(lambda trace: M.MetricResult(0.0))


def test_custom_metric_is_computed_and_summarized():
    name = "test_only_constant"

    @M.register_metric(name)
    def constant(trace):
        return M.MetricResult(0.25)

    try:
        results = M.compute_metrics(episode(drive(np.full(5, 1.0))), names=[name, "pdms"])
        row = M.summarize(results)
        assert row[name] == 0.25 and row["pdms"] == 1.0 and row["nc"] == 1.0
    finally:
        del M.METRICS[name]


def test_unknown_metric_name_is_an_error():
    with pytest.raises(ValidationError, match="nope"):
        M.compute_metrics(episode(drive(np.full(5, 1.0))), names=["nope"])


def _replace(obj, **kw):
    from dataclasses import replace

    return replace(obj, **kw)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda e, t: _replace(t, ego=_replace(e, xy=np.zeros((5, 3)))), r"EgoTrace.xy: expected shape \(5, 2\)"),
        (lambda e, t: _replace(t, ego=_replace(e, yaw=np.array([0, 0, np.nan, 0, 0.0]))), "EgoTrace.yaw: non-finite"),
        (lambda e, t: _replace(t, ego=_replace(e, speed=-np.ones(5))), "EgoTrace.speed: must be >= 0"),
        (lambda e, t: _replace(t, ego=_replace(e, time_s=np.array([0, 0.1, 0.2, 0.4, 0.5]))), "uniform"),
        (lambda e, t: _replace(t, ego=_replace(e, time_s=np.array([0, 0.1, 0.1, 0.2, 0.3]))), "strictly increasing"),
        (lambda e, t: _replace(t, ego=_replace(e, length=0.0)), "EgoTrace.length"),
        (lambda e, t: _replace(t, agents=AgentTrace.empty(4)), "expected 5 steps"),
        (lambda e, t: _replace(t, route_progress=np.zeros(4)), r"route_progress: expected shape \(5,\)"),
        (lambda e, t: _replace(t, logged_xy=np.full((5, 2), np.nan)), r"logged_xy \(where valid\): non-finite"),
        (lambda e, t: _replace(t, drivable_area=[1, 2]), "drivable_area: expected a shapely"),
        (lambda e, t: _replace(t, route=np.zeros((2, 2))), "positive length"),
        (lambda e, t: _replace(t, reference_progress=float("nan")), "reference_progress"),
        (lambda e, t: _replace(t, logged_valid=np.ones(5)), "logged_valid: expected dtype bool"),
    ],
)
def test_validate_rejects_bad_traces(make, message):
    ego = drive(np.full(5, 1.0))
    trace = episode(ego)
    with pytest.raises(ValidationError, match=message):
        make(ego, trace).validate()


def test_agent_validate_checks_shapes_and_nan_where_valid():
    ag = agents(5, ("a", "vehicle.car", (4.5, 1.9), 10.0, 0.0, 1.0))
    xy = ag.xy.copy()
    xy[2, 0, 0] = np.nan
    with pytest.raises(ValidationError, match=r"AgentTrace.xy \(where valid\): non-finite"):
        _replace(ag, xy=xy).validate()
    valid = ag.valid.copy()
    valid[2, 0] = False
    _replace(ag, xy=xy, yaw=np.where(valid, ag.yaw, np.nan), valid=valid).validate()  # NaN where absent is fine
    with pytest.raises(ValidationError, match=r"AgentTrace.sizes: expected shape \(1, 3\)"):
        _replace(ag, sizes=np.ones((1, 2))).validate()
    with pytest.raises(ValidationError, match="AgentTrace.categories"):
        _replace(ag, categories=()).validate()
    with pytest.raises(ValidationError, match="unique"):
        AgentTrace(("a", "a"), ("vehicle.car",) * 2, np.ones((2, 3)), np.zeros((5, 2, 2)), np.zeros((5, 2)),
                   np.zeros((5, 2)), np.ones((5, 2), bool)).validate()


def test_invalid_agent_steps_are_ignored():
    ag = agents(51, ("car", "vehicle.car", (4.5, 1.9), 40.0, 0.0, 0.0))
    gone = _replace(ag, xy=np.full_like(ag.xy, np.nan), yaw=np.full_like(ag.yaw, np.nan),
                    speed=np.full_like(ag.speed, np.nan), valid=np.zeros_like(ag.valid))
    result = M.pdms(episode(drive(np.full(51, 10.0)), gone))
    assert result.score == 1.0


def test_agent_class_by_category_prefix():
    assert M.agent_class("vehicle.bicycle") == "vehicle"
    assert M.agent_class("human.pedestrian.child") == "pedestrian"
    assert M.agent_class("movable_object.barrier") == "static"
    assert M.agent_class("static_object.bicycle_rack") == "static"


def test_savgol_is_exact_on_polynomials():
    t = np.arange(30) * DT
    y = 1.0 + 2.0 * t - 0.7 * t**2
    np.testing.assert_allclose(_savgol(y, 15, 2, 1, DT), 2.0 - 1.4 * t, atol=1e-9)
    np.testing.assert_allclose(_savgol(y, 15, 3, 2, DT), np.full(30, -1.4), atol=1e-8)
    np.testing.assert_allclose(_savgol(y[:4], 15, 2, 1, DT), 2.0 - 1.4 * t[:4], atol=1e-9)  # window shrinks


def test_savgol_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    y = np.random.default_rng(0).normal(size=40)
    for window, order, deriv in ((15, 2, 1), (15, 3, 2), (7, 2, 0)):
        expected = signal.savgol_filter(y, window, order, deriv=deriv, delta=DT, mode="interp")
        np.testing.assert_allclose(_savgol(y, window, order, deriv, DT), expected, atol=1e-9)


# --- TTC on curves: realised ego path, CTRV agents, oncoming-lane filter ---------------------------------------------

def _arc(radius, speed, T, x0=0.0, y0=0.0, yaw0=0.0, turn=1.0):
    """(xy (T, 2), yaw (T,)) along a circle of ``radius`` [m] at ``speed`` [m/s], turning left (turn=1) or right."""
    yaw = yaw0 + turn * speed / radius * DT * np.arange(T)
    cx, cy = x0 - turn * radius * np.sin(yaw0), y0 + turn * radius * np.cos(yaw0)
    xy = np.stack([cx + turn * radius * np.sin(yaw), cy - turn * radius * np.cos(yaw)], axis=-1)
    return xy, yaw


def test_ttc_follows_the_realised_ego_path_through_a_curve():
    # the ego turns left on a 20 m circle; a car parked just outside the curve (0.9 s straight ahead of step 10,
    # 1.5 m outward) would be hit by a straight constant-velocity projection, but never by the realised path
    T = 30
    xy, yaw = _arc(20.0, 8.0, T)
    ego = EgoTrace(np.arange(T) * DT, xy, yaw, np.full(T, 8.0), EGO_LENGTH, EGO_WIDTH, EGO_OFFSET)
    straight_ahead = xy[10] + EGO_OFFSET * np.array([np.cos(yaw[10]), np.sin(yaw[10])]) + 8.0 * 0.9 * np.array(
        [np.cos(yaw[10]), np.sin(yaw[10])]) + 1.5 * np.array([np.sin(yaw[10]), -np.cos(yaw[10])])  # 1.5 m outward
    parked = AgentTrace(("p",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]), np.tile(straight_ahead, (T, 1, 1)),
                        np.full((T, 1), yaw[10]), np.zeros((T, 1)), np.ones((T, 1), bool))
    road = shapely.Point(0.0, 20.0).buffer(30.0)
    tr = EpisodeTrace(ego, parked, road, xy, np.arange(T) * 0.8, 20.0, xy, np.ones(T, bool)).validate()
    assert M.no_at_fault_collisions(tr).score == 1.0
    assert M.time_to_collision(tr).score == 1.0
    # the same car inside the realised path is a violation
    on_path = AgentTrace(("p",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]), np.tile(xy[20], (T, 1, 1)),
                         np.full((T, 1), yaw[20]), np.zeros((T, 1)), np.ones((T, 1), bool))
    tr2 = EpisodeTrace(ego, on_path, road, xy, np.arange(T) * 0.8, 20.0, xy, np.ones(T, bool)).validate()
    assert M.time_to_collision(tr2).score == 0.0


def test_ttc_ignores_oncoming_traffic_in_its_own_lane_but_not_in_ours():
    # ego drives +x at y = 0; an oncoming car at -x, 3.5 m to the left, aimed slightly toward us (it is entering
    # a curve): constant velocity would cross into our lane within 0.9 s, but it is not in our corridor
    T = 20
    ego = drive(np.full(T, 8.0))
    t = np.arange(T) * DT
    yaw = np.pi - 0.25
    xy = np.stack([14.0 + 9.0 * np.cos(yaw) * t, 3.5 + 9.0 * np.sin(yaw) * t * 0], axis=-1)
    other = AgentTrace(("o",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]), xy[:, None, :], np.full((T, 1), yaw),
                       np.full((T, 1), 9.0), np.ones((T, 1), bool))
    assert M.time_to_collision(episode(ego, other)).score == 1.0
    # an oncoming car in the ego's own lane is a violation
    head_on = agents(T, ("h", "vehicle.car", (4.5, 1.9), 30.0, 0.0, 0.0))
    head_on = AgentTrace(head_on.ids, head_on.categories, head_on.sizes,
                         np.stack([30.0 - 9.0 * t, np.zeros(T)], -1)[:, None, :], np.full((T, 1), np.pi),
                         np.full((T, 1), 9.0), head_on.valid)
    assert M.time_to_collision(episode(ego, head_on)).score == 0.0
