import dataclasses

import numpy as np
import pytest
from shapely.geometry import box

from stag_sim.errors import ValidationError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.scene_log import ObjectTracks
from stag_sim.testing import tiny_scene_log
from stag_sim.world import World, WorldConfig, expert, reset, step


def straight_log(num_frames=40, objects=None, area=None):
    log = tiny_scene_log(num_frames=num_frames)
    if objects is not None:
        log = dataclasses.replace(log, objects=objects)
    if area is not None:
        log = dataclasses.replace(log, map=dataclasses.replace(log.map, drivable_area=area))
    return log.validate()


def run(world, state, n, policy):
    for _ in range(n):
        state = step(world, state, *policy(state))
        if state.events["collision"] or state.events["offroad"]:
            break
    return state


def test_expert_follows_the_log():
    w = World.build(straight_log())
    s = run(w, reset(w), 30, lambda st: expert(w, st))
    logged = w.logged_ego_pose(s.time_s)
    assert np.hypot(s.ego.x - logged[0, 3], s.ego.y - logged[1, 3]) < 1e-6
    assert not s.events["collision"] and not s.events["offroad"]


def test_collision_with_a_stopped_car_names_it():
    T = 40
    parked = ObjectTracks(("parked",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]),
                          np.repeat(pose_xy_yaw(12.0, 0.0, 0.0, 0.75)[None, None], T, 0), np.ones((T, 1), bool))
    w = World.build(straight_log(T, objects=parked))
    s = run(w, reset(w), 39, lambda st: (0.0, 0.0))
    assert s.events["collision"] and s.events["collided_with"] == ["parked"]
    # the ego's front bumper reached the car's rear
    assert s.ego.x + w.config.vehicle.front_length >= 12.0 - 2.25


def test_leaving_the_drivable_area_is_offroad():
    w = World.build(straight_log(area=box(-20.0, -3.0, 80.0, 3.0)))
    s = run(w, reset(w), 39, lambda st: (0.0, 0.4))
    assert s.events["offroad"] and not s.events["collision"]


def test_route_completion_and_progress():
    w = World.build(straight_log())
    s = reset(w)
    assert s.route_s == pytest.approx(0.0)
    s = run(w, s, 39, lambda st: expert(w, st))
    assert s.events["route_completed"] and s.route_s > w.route_length - 2.0


def test_idm_agents_stop_behind_a_stopped_ego():
    T = 80
    follower = ObjectTracks(("follower",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]),
                            np.stack([pose_xy_yaw(-30.0 + 0.8 * t, 0.0, 0.0, 0.75)[None] for t in range(T)]),
                            np.ones((T, 1), bool))
    w = World.build(straight_log(T, objects=follower), WorldConfig(agents="idm"))
    s = reset(w, speed=0.0)
    for _ in range(300):
        s = step(w, s, -5.0, 0.0)  # the ego stands still
    poses, _ = w.agent_poses(s)
    gap = (s.ego.x - w.config.vehicle.rear_length) - (poses[0, 0, 3] + 2.25)
    assert s.agent_speed[0] < 0.05 and 0.5 < gap < 3.0 and not s.events["collision"]


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match=r"world.warp_speed: unknown setting"):
        WorldConfig.from_dict({"warp_speed": 9})
    with pytest.raises(ValidationError, match=r"world.idm.v0: unknown setting"):
        WorldConfig.from_dict({"idm": {"v0": 3}})
    with pytest.raises(ValidationError, match="agents"):
        WorldConfig(agents="kamikaze").validate()
    assert WorldConfig.from_dict({"idm": {"target_speed": 5.0}}).idm.target_speed == 5.0
