"""Scenario files: the shipped ones load, bad files give one line naming file:line and field, events behave."""

import numpy as np
import pytest
import yaml

from stag_sim.errors import ScenarioError, ValidationError
from stag_sim.scenario import find_scenarios, load_scenario, load_scenario_text, shipped_dir
from stag_sim.testing import tiny_scene_log
from stag_sim.agent_sources import AgentEvent
from stag_sim.world import World, WorldConfig, reset, step

SHIPPED = {"log_replay", "lane_follow", "lead_hard_brake", "cut_in", "stationary_obstacle", "recover_lateral_offset",
           "intersection_turn", "dense_idm_traffic"}
GOOD = """\
name: t
scene: {synthetic: {seed: 0}}
duration_s: 5.0
ego: {lateral: 1.0, speed: 4.0}
events:
  - {type: insert, name: lead, ahead_m: 10.0, speed: 3.0, behavior: constant}
  - {type: hard_brake, agent: lead, at_s: 1.0, decel: 5.0}
"""


def test_shipped_scenarios_all_load():
    found = {load_scenario(p).name for p in find_scenarios([shipped_dir()])}
    assert SHIPPED <= found
    assert load_scenario("cut_in").events[1].type == "cut_in"  # by name


def test_round_trip_through_to_dict():
    sc = load_scenario_text(GOOD, "good.yaml")
    again = load_scenario_text(yaml.safe_dump(sc.to_dict()), "good.yaml")
    assert again == sc
    assert sc.ego.lateral == 1.0 and sc.events[0].name == "lead" and sc.events[1].decel == 5.0


@pytest.mark.parametrize("text, expected", [
    ("name: t\nduration_s: 3: 4\n", r"bad\.yaml:2: not valid YAML"),
    (GOOD + "colour: red\n", r"bad\.yaml:8: colour: unknown key"),
    (GOOD.replace("duration_s: 5.0", "duration_s: fast"), r"bad\.yaml:3: duration_s: expected number, got 'fast'"),
    (GOOD.replace("duration_s: 5.0\n", ""), r"bad\.yaml:1: missing required field 'duration_s'"),
    (GOOD.replace("speed: 4.0", "sped: 4.0"), r"bad\.yaml:4: ego\.sped: unknown key"),
    (GOOD.replace("type: hard_brake", "type: teleport"), r"bad\.yaml:7: events\[1\]\.type: expected one of"),
    (GOOD.replace("at_s: 1.0, decel", "ahead_m: 1.0, decel"), r"events\[1\]\.ahead_m: not a field of a hard_brake event"),
    (GOOD.replace("behavior: constant", "behavior: polite"), r"events\[0\]\.behavior: expected one of idm"),
    (GOOD + "agents: swarm\n", r"bad\.yaml:8: agents: expected one of log_replay, idm"),
    (GOOD.replace("decel: 5.0", "decel: -5.0"), r"events\[1\]: event hard_brake\.decel: must be > 0"),
    (GOOD + "route: {lanes: []}\n", r"route\.lanes: expected a non-empty list"),
    (GOOD + "env: {gravity: 9.8}\n", r"env\.gravity: not a scenario env setting"),
    # the env block is checked against the typed config tree, nested keys and values included
    (GOOD + "env:\n  world:\n    idm: {v0: 3}\n", r"bad\.yaml:10: env\.world\.idm\.v0: unknown setting"),
    (GOOD + "env:\n  render: {lod_levels: 9}\n", r"bad\.yaml:9: env\.render: RenderConfig\.lod_levels"),
    (GOOD + "env:\n  world: {start_frame: 3}\n", r"env\.world\.start_frame: set by the scenario itself"),
    (GOOD + "env: {action_mode: telepathy}\n", r"bad\.yaml:8: env: action_mode: 'telepathy' is not one of"),
    ("", r"bad\.yaml: empty scenario file"),
])
def test_bad_files_name_file_line_and_field(text, expected):
    with pytest.raises(ScenarioError, match=expected):
        load_scenario_text(text, "bad.yaml")


def test_missing_file_and_scene(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file .*shipped scenarios: "):
        load_scenario(tmp_path / "nope.yaml")
    from stag_sim.scenario import resolve_scene

    sc = load_scenario_text(GOOD.replace("{synthetic: {seed: 0}}", "{path: does/not/exist}"), str(tmp_path / "s.yaml"))
    with pytest.raises(ScenarioError, match="scene.path: does/not/exist: not a scene cache"):
        resolve_scene(sc)


@pytest.fixture(scope="module")
def log():
    return tiny_scene_log(num_frames=40, width=32, height=18)


def world_with(log, *events, agents="log_replay", **kw):
    return World.build(log, WorldConfig(agents=agents, events=tuple(events), **kw))


def test_insert_places_a_parked_cloud_on_the_route_and_hard_brake_stops_it(log):
    # tiny log: the ego drives +x at 5 m/s along y = 0; insert 'auto' takes a scene object and puts it 12 m ahead
    w = world_with(log, AgentEvent("insert", agent="tiny-car-1", name="lead", ahead_m=12.0, speed=4.0, behavior="constant"),
                   AgentEvent("hard_brake", agent="lead", at_s=1.0, decel=5.0))
    s = reset(w)
    poses, valid = w.agent_poses(s)
    assert valid[1] and np.allclose(poses[1, :2, 3], [12.0, 0.0], atol=1e-6)
    speeds = []
    for _ in range(30):
        s = step(w, s, 0.0, 0.0)
        speeds.append(s.agent_speed[1])
    speeds = np.array(speeds)
    assert np.allclose(speeds[:9], 4.0)                   # constant speed before the brake at 1.0 s
    assert np.isclose(speeds[10] - speeds[9], -0.5)       # 5 m/s^2 x 0.1 s
    assert speeds[-1] == 0.0 and np.all(np.diff(speeds) <= 1e-12)


def test_cut_in_moves_sideways_into_the_ego_lane_and_remove_hides(log):
    w = world_with(log, AgentEvent("insert", agent="tiny-car-0", name="c", ahead_m=5.0, lateral_m=3.5, speed=5.0,
                                   behavior="constant"),
                   AgentEvent("cut_in", agent="c", at_s=0.5, duration_s=1.0),
                   AgentEvent("remove", agent="tiny-car-1"))
    s = reset(w)
    lat = []
    for _ in range(20):
        poses, valid = w.agent_poses(s)
        lat.append(poses[0, 1, 3])
        assert not valid[1]
        s = step(w, s, 0.0, 0.0)
    assert np.isclose(lat[0], 3.5) and np.isclose(lat[5], 3.5) and np.isclose(lat[-1], 0.0, atol=1e-9)
    assert np.all(np.diff(lat) <= 1e-12)


def test_event_errors(log):
    with pytest.raises(ScenarioError, match="no agent 'ghost'"):
        world_with(log, AgentEvent("remove", agent="ghost"))
    with pytest.raises(ScenarioError, match="must be inserted by an earlier insert"):
        world_with(log, AgentEvent("cut_in", agent="tiny-car-0", at_s=1.0))
    with pytest.raises(ScenarioError, match="route lanes: 'nowhere' not in the map"):
        world_with(log, route_lanes=("nowhere",))
    with pytest.raises(ValidationError, match="event type: 'fly'"):
        AgentEvent("fly").validate()


def test_lane_route_starts_at_the_ego_and_is_capped(log):
    w = world_with(log, route_lanes=("lane-east",), route_max_length=15.0)
    assert np.allclose(w.route.points[0], [0.0, -1.75]) and np.isclose(w.route_length, 15.0)
