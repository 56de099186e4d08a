"""Road rules in the core: light schedules, stop lines, the town's signals, map round trip, IDM at red lights,
scenario light schedules and inserts along lanes / at an angle."""

from __future__ import annotations

import numpy as np
import pytest

from stag_sim.errors import ScenarioError, SceneError, ValidationError
from stag_sim.road_rules import GREEN, RED, YELLOW, LightOverride, TrafficLight, episode_lights, stop_crossings


def _light(change=(0.0, 10.0, 13.0), states=("green", "yellow", "red"), period=20.0) -> TrafficLight:
    # a light for eastbound traffic at x = 10 (stop line from the right kerb side, y = -1.75, to the left)
    return TrafficLight("L", ("conn",), np.array([[10.0, -1.75], [10.0, 1.75]]), np.array([11.0, -4.0, 3.2]),
                        np.asarray(change), states, period).validate()


def test_schedule_repeats_and_holds():
    lt = _light()
    assert [lt.state_at(t) for t in (0.0, 9.9, 10.0, 12.9, 13.0, 19.9, 20.0, 30.5, 33.5)] == [
        "green", "green", "yellow", "yellow", "red", "red", "green", "yellow", "red"]
    assert lt.code_at(np.array([[1.0, 11.0], [14.0, 41.0]])).tolist() == [[GREEN, YELLOW], [RED, GREEN]]
    once = _light(change=(5.0, 8.0), states=("red", "green"), period=0.0)
    assert [once.state_at(t) for t in (0.0, 4.9, 5.0, 7.9, 8.0, 100.0)] == ["red"] * 4 + ["green"] * 2
    # a cycle whose first change is not at 0: before it, the cycle's last state
    wrap = _light(change=(4.0, 12.0), states=("green", "red"), period=20.0)
    assert [wrap.state_at(t) for t in (0.0, 3.9, 4.0, 12.0, 24.0)] == ["red", "red", "green", "red", "green"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(change=(0.0, 0.0), states=("red", "green")), "strictly increasing"),
    (dict(change=(0.0,), states=("purple",)), "purple"),
    (dict(change=(0.0, 25.0), states=("red", "green"), period=20.0), r"\[0, 20.0\)"),
    (dict(change=(0.0,), states=("red", "green")), "one length"),
])
def test_bad_schedules_name_the_light(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        _light(**kwargs)


def test_stop_crossings_only_in_the_controlled_direction():
    lt = _light()
    east = np.array([[0.0, 0.0], [5.0, 0.0], [20.0, 0.5]])
    (s, j), = stop_crossings(east, [lt])
    assert j == 0 and s == pytest.approx(10.0, abs=0.01)
    assert stop_crossings(east[::-1], [lt]) == []  # westbound traffic is not controlled by it
    assert stop_crossings(np.array([[0.0, 5.0], [20.0, 5.0]]), [lt]) == []  # passes beside the stop line


def test_episode_lights_shift_to_the_episode_start_and_name_unknown_lights():
    lt = _light()
    (new,) = episode_lights((lt,), (LightOverride("L", ("red", "green"), (0.0, 9.0)),), start_time_s=2.0)
    assert [new.state_at(t) for t in (2.0, 10.9, 11.0)] == ["red", "red", "green"]
    with pytest.raises(ValidationError, match="unknown light 'X'; known: L"):
        episode_lights((lt,), (LightOverride("X", ("red",), (0.0,)),), 0.0)


def test_town_signals_and_map_round_trip(tmp_path):
    from stag_sim.cache import load_scene_cache, write_scene_cache
    from stag_sim.synth import build_town, generate_scene

    m = build_town(0).scene_map
    assert m.lights_complete and len(m.traffic_lights) == 6
    assert sum(m.in_intersection) == len(m.lanes) - 6  # the connectors
    for lt in m.traffic_lights:  # each controls the connectors leaving its lane
        lane = lt.light_id.split(":", 1)[1]
        assert set(lt.lane_ids) == {c for c in m.successors[m.lane_ids.index(lane)]}

    for j in ("jE", "jW"):  # ring and cross phases are never both non-red at one junction
        ring = [lt for lt in m.traffic_lights if lt.light_id.startswith(j + ":ring")]
        cross = [lt for lt in m.traffic_lights if lt.light_id.startswith(j + ":cross")]
        t = np.arange(0.0, 72.0, 0.25)
        for r in ring:
            assert not np.any((r.code_at(t) != RED) & (cross[0].code_at(t) != RED))
    log = generate_scene(0, duration_s=2.0, sensors=False)
    back = load_scene_cache(write_scene_cache(log, tmp_path / "town"))
    assert log.diff(back) == []
    assert [lt.to_json() for lt in back.map.traffic_lights] == [lt.to_json() for lt in m.traffic_lights]
    # a garbled light in map.json names the file
    import json

    p = tmp_path / "town" / "map.json"
    d = json.loads(p.read_text())
    d["traffic_lights"][0]["states"][0] = "purple"  # as long as 'yellow': sizes still match
    p.write_text(json.dumps(d))
    with pytest.raises(SceneError, match=r"map.json: .*'purple'"):
        load_scene_cache(tmp_path / "town", verify=False)


def _scenario_world(text: str, duration_s: float = 30.0):
    from stag_sim.config import from_mapping
    from stag_sim.scenario import env_settings, load_scenario_text
    from stag_sim.synth import generate_scene
    from stag_sim.world import World, WorldConfig

    log = generate_scene(0, duration_s=duration_s, sensors=False)
    settings, _ = env_settings(load_scenario_text(text), log)
    return World.build(log, from_mapping(WorldConfig, settings["world"], ("world",)))


CROSS = """
name: cross
scene: {synthetic: {seed: 0}}
duration_s: 20.0
agents: idm
lights:
  - {light: "jE:cross-e", states: [red, green], at_s: [0, 12]}
events:
  - {type: insert, name: cross, lanes: [cross-e], ahead_m: 80, speed: 8, behavior: idm}
"""


def test_idm_agent_stops_at_red_and_goes_at_green_single_and_batched():
    from stag_sim import world_batch
    from stag_sim.world import reset, step

    w = _scenario_world(CROSS)
    (k,) = list(w.agents.inserted)
    s = reset(w)
    xs, vs = [], []
    for _ in range(200):
        s = step(w, s, 0.0, 0.0)
        P, V = w.agent_poses(s)
        xs.append(P[k, 0, 3] + w.sizes[k, 0] / 2)  # front bumper x (eastbound)
        vs.append(s.agent_speed[k])
    xs, vs, t = np.array(xs), np.array(vs), np.arange(1, 201) * 0.1
    lt = next(lt for lt in w.rules.lights if lt.light_id == "jE:cross-e")
    stop_x = lt.stop_line[0, 0]
    red = t < 11.9
    assert xs[red].max() <= stop_x + 0.05  # never past the stop line while red
    assert vs[(t > 10.0) & red].max() < 0.3  # waiting at it
    assert xs[-1] > stop_x + 5.0 and vs[-1] > 3.0  # went on at green
    # the batched step gives the same agents
    wb, bs = world_batch.reset([w], [reset(w)])
    single = reset(w)
    for _ in range(200):
        bs = world_batch.step(wb, bs, np.zeros(1), np.zeros(1))
        single = step(w, single, 0.0, 0.0)
    np.testing.assert_allclose(bs.state(0, w).agent_s, single.agent_s, atol=1e-9)


def test_inserts_along_lanes_oncoming_and_crossing():
    from stag_sim.world import reset, step

    w = _scenario_world("""
name: inserts
scene: {synthetic: {seed: 0}}
duration_s: 10.0
events:
  - {type: insert, name: front, ahead_m: 50, yaw_deg: 180, lateral_m: 3.5, speed: 6, behavior: constant}
  - {type: insert, name: side, ahead_m: 20, yaw_deg: 90, lateral_m: -10, speed: 4, behavior: constant}
""")
    s0 = reset(w)
    P0, _ = w.agent_poses(s0)
    s1 = s0
    for _ in range(10):
        s1 = step(w, s1, 0.0, 0.0)
    P1, _ = w.agent_poses(s1)
    front, side = sorted(w.agents.inserted, key=lambda k: w.agents.inserted[k].ahead_m, reverse=True)
    route_xy, route_yaw = w.route.interpolate(np.array([50.0, 20.0]))
    tangent = np.stack([np.cos(route_yaw), np.sin(route_yaw)], 1)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    # the oncoming car starts 3.5 m left of the route 50 m ahead and drives against it
    assert np.linalg.norm(P0[front, :2, 3] - (route_xy[0] + 3.5 * normal[0])) < 0.5
    assert (P1[front, :2, 3] - P0[front, :2, 3]) @ tangent[0] == pytest.approx(-6.0, abs=0.3)
    # the crossing car starts 10 m right of the route 20 m ahead and drives to the route's left
    assert np.linalg.norm(P0[side, :2, 3] - (route_xy[1] - 10.0 * normal[1])) < 0.5
    assert (P1[side, :2, 3] - P0[side, :2, 3]) @ normal[1] == pytest.approx(4.0, abs=0.2)


@pytest.mark.parametrize("extra, match", [
    ("lights:\n  - {light: nope, states: [red], at_s: [0]}\n", "unknown light 'nope'"),
    ("lights:\n  - {light: 'jE:cross-e', states: [red, mauve], at_s: [0, 1]}\n", "mauve"),
    ("lights:\n  - {light: 'jE:cross-e', states: [red], at_s: [0, 1]}\n", "one length"),
    ("events:\n  - {type: insert, lanes: [no-such-lane]}\n", "'no-such-lane' not in the map"),
    ("events:\n  - {type: insert, lanes: [cross-e], yaw_deg: 90}\n", "lanes or yaw_deg, not both"),
    ("speed_limits:\n  - {lane: nowhere, limit_mps: 5.0}\n", "lane 'nowhere' is not in the map"),
    ("speed_limits:\n  - {lane: ring-ccw-n, limit_mps: -1.0}\n", "must be > 0 m/s"),
])
def test_bad_rules_in_a_scenario_are_one_clear_error(extra, match):
    text = "name: bad\nscene: {synthetic: {seed: 0}}\nduration_s: 5.0\n" + extra
    with pytest.raises((ScenarioError, ValidationError), match=match):
        _scenario_world(text, duration_s=6.0)


def test_scenario_speed_limits_replace_a_lanes_limit():
    w = _scenario_world("""
name: zone
scene: {synthetic: {seed: 0}}
duration_s: 5.0
speed_limits:
  - {lane: ring-ccw-n, limit_mps: 5.56}
""", duration_s=6.0)
    r = w.rules
    assert r.speed_limits[r.lane_index("ring-ccw-n")] == 5.56
    assert r.speed_limits[r.lane_index("ring-ccw-s")] == pytest.approx(50 / 3.6)
