"""Logs without a map: a drivable area from the LiDAR ground and the driven corridor (stag_sim.drivable), off-road
and collisions on it, and metrics that say what they cannot score.

The DGP sample (real, 3 frames / 0.2 s, no map) is skipped when absent; a tiny synthetic map-less log with a flat
12 m road between raised verges (40 frames) lets an env episode run long enough to leave the road."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import stag_sim  # noqa: F401  (registers StagDrive-v0)
from stag_sim.dynamics import EgoState
from stag_sim.errors import ValidationError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.scene_log import LidarSweeps
from stag_sim.testing import realdata_path, tiny_scene_log
from stag_sim.world import LIDAR_GROUND, World, WorldConfig, reset, step

ROAD_HALF_WIDTH = 6.0  # [m] the tiny log's road: |y| <= this at z = 0
VERGE_HEIGHT = 0.4  # [m] ... and raised verges beyond it


def mapless_tiny_log(num_frames: int = 40):
    """tiny_scene_log without its map, its LiDAR replaced by returns off a flat road (|y| <= 6 m, z = 0) between
    verges 0.4 m higher, up to 15 m to either side and 20 m behind / 30 m ahead of each pose."""
    log = tiny_scene_log(num_frames=num_frames, width=32, height=18, with_map=False)
    rng = np.random.default_rng(0)
    T_ego_from_lidar = pose_xy_yaw(0.94, 0.0, 0.0, 1.84)
    sweeps = []
    for T in log.ego_poses:
        xy = np.stack([T[0, 3] + rng.uniform(-20.0, 30.0, 3000), rng.uniform(-15.0, 15.0, 3000)], axis=1)
        z = np.where(np.abs(xy[:, 1]) <= ROAD_HALF_WIDTH, 0.0, VERGE_HEIGHT)
        world = np.c_[xy, z, np.ones(len(z))]
        local = (np.linalg.inv(T @ T_ego_from_lidar) @ world.T).T[:, :3]
        sweeps.append(np.c_[local, np.full(len(z), 100.0)])
    lidar = LidarSweeps.from_list(sweeps, log.timestamps_us, log.ego_poses, T_ego_from_lidar)
    return dataclasses.replace(log, lidar=lidar).validate()


@pytest.fixture(scope="module")
def tiny():
    return mapless_tiny_log()


@pytest.fixture(scope="module")
def dgp02():
    path = realdata_path("dgp_test_scene/scene_02")
    if path is None:
        pytest.skip("DGP sample absent (../shared/realdata/dgp_test_scene)")
    from stag_sim.ingest.dgp import ingest_dgp

    return ingest_dgp(path)


def outside(world, box) -> float:
    """How far the farthest corner of ``box`` is outside the world's drivable area [m]."""
    from shapely.geometry import Point

    return max(world.drivable_area.distance(Point(c)) for c in box.exterior.coords)


def logged_footprints(world):
    return [world.ego_box(EgoState.from_pose(T, 0.0)) for T in world.log.ego_poses]


# --- the drivable area ----------------------------------------------------------------------------------------


def test_the_lidar_ground_of_a_real_log_is_its_drivable_area(dgp02):
    w = World.build(dgp02)
    assert dgp02.map is None and w.drivable_source == LIDAR_GROUND and w.drivable is not None
    assert all(w.drivable_area.contains(f) for f in logged_footprints(w))
    # measured 1326 m^2 (about 47 x 64 m around a 2.5 m drive); the driven corridor alone is 62 m^2
    assert 600.0 < w.drivable_area.area < 3000.0
    x0, y0, x1, y1 = w.drivable_area.bounds
    assert max(x1 - x0, y1 - y0) < 2 * 40.0 + 10.0  # within MAX_DISTANCE of the path


def test_a_standing_ego_gets_the_ground_around_it():
    """DGP scene_01: the ego stands still (no route: no World), among ~95 tracked boxes; its LiDAR ground alone."""
    path = realdata_path("dgp_test_scene/scene_01")
    if path is None:
        pytest.skip("DGP sample absent (../shared/realdata/dgp_test_scene)")
    from stag_sim.drivable import footprints, lidar_drivable_area
    from stag_sim.dynamics import VehicleParameters
    from stag_sim.ingest.dgp import ingest_dgp

    log, v = ingest_dgp(path), VehicleParameters()
    area = lidar_drivable_area(log, v.length, v.width, v.centre_offset)
    assert all(area.contains(f) for f in footprints(np.asarray(log.ego_poses), v.length, v.width, v.centre_offset))
    assert 300.0 < area.area < 2000.0  # measured 752 m^2


def test_the_flat_road_between_raised_verges_is_found(tiny):
    w = World.build(tiny)
    assert w.drivable_source == LIDAR_GROUND
    assert all(w.drivable_area.contains(f) for f in logged_footprints(w))
    x0, y0, x1, y1 = w.drivable_area.bounds
    assert -ROAD_HALF_WIDTH - 1.0 <= y0 <= -ROAD_HALF_WIDTH + 0.5 and ROAD_HALF_WIDTH - 0.5 <= y1 <= ROAD_HALF_WIDTH + 1.0
    assert x1 - x0 > 40.0  # along the whole drive


def test_drivable_source_settings(tiny):
    assert World.build(tiny, WorldConfig(drivable_source="none")).drivable is None
    assert World.build(tiny, WorldConfig(drivable_source="map")).drivable is None  # no map, none
    town = tiny_scene_log()
    w = World.build(town)
    assert w.drivable_source == "map" and w.drivable_area is town.map.drivable_area
    assert World.build(town, WorldConfig(drivable_source="lidar")).drivable_source == LIDAR_GROUND
    with pytest.raises(ValidationError, match="drivable_source: 'lidar' needs LiDAR, scene 'tiny-s0' has none"):
        World.build(dataclasses.replace(town, lidar=None), WorldConfig(drivable_source="lidar"))
    with pytest.raises(ValidationError, match="WorldConfig.drivable_source: 'lanes' is not one of"):
        WorldConfig(drivable_source="lanes").validate()


# --- off-road and collisions --------------------------------------------------------------------------------------


def test_steering_hard_off_a_real_road_is_offroad(dgp02):
    w = World.build(dgp02)
    st = reset(w, speed=5.0)
    for n in range(1, 41):  # noqa: B007 - n is read after the loop
        st = step(w, st, 0.0, -0.6)  # hard right
        if st.events["offroad"]:
            break
    assert st.events["offroad"] and not st.events["collision"]
    # measured: off-road after 7 steps (0.7 s, 3.4 m from the start), the farthest corner 0.57 m outside
    assert n <= 15
    assert 0.1 < outside(w, w.ego_box(st.ego)) < 1.0  # past the 0.1 m tolerance, by less than a step's travel


def test_driving_into_a_tracked_car_on_a_real_log_is_a_collision(dgp02):
    w = World.build(dgp02)
    car = dgp02.objects.instance_ids.index("1545514913")  # 21.9 m behind the ego on its road
    st = reset(w, ego_offset=(-10.0, 0.0, np.pi), speed=5.0)  # turned round, facing it
    for _ in range(40):
        st = step(w, st, 0.0, 0.0)
        if st.events["collision"] or st.events["offroad"]:
            break
    # the car's footprint counts as road: hitting it is a collision, not an off-road
    assert st.events["collision"] and st.events["collided_with"] == [dgp02.objects.instance_ids[car]]
    assert not st.events["offroad"]


def test_env_terminates_offroad_on_a_mapless_log(tiny):
    env = gym.make("StagDrive-v0", scene=tiny, observations=("state",))
    env.reset(seed=0)
    for _ in range(39):
        _, r, term, trunc, info = env.step(np.array([0.0, 1.0], np.float32))  # full left lock
        if term or trunc:
            break
    assert term and info["termination_reason"] == "offroad" and r < 0
    w = env.unwrapped.world
    box = w.ego_box(EgoState.from_pose(info["ego_pose"], 0.0))
    past = box.bounds[3] - ROAD_HALF_WIDTH  # measured: after 10 steps (1 s), the farthest corner 0.63 m past the edge
    assert 0.1 < past < 1.0 and 0.1 < outside(w, box) < 1.0
    env.close()


# --- metrics ------------------------------------------------------------------------------------------------------


def run_expert(log, world_settings=None):
    """The episode's metrics summary (app.episode's trace) of the log's expert on ``log``."""
    from stag_sim.app.episode import TraceRecorder, episode_trace
    from stag_sim.metrics import compute_metrics, summarize
    from stag_sim.world import expert

    w = World.build(log, WorldConfig(**(world_settings or {})))
    st = reset(w)
    rec = TraceRecorder()
    rec.add(w, st)
    while st.time_s + w.config.dt <= w.end_time_s + 1e-9:
        st = step(w, st, *expert(w, st))
        rec.add(w, st)
    results = compute_metrics(episode_trace(w, rec, st.events["route_completed"], st.time_s - w.start_time_s))
    return results, summarize(results)


def test_pdms_of_a_mapless_log_without_a_drivable_area_lists_what_it_cannot_score(tiny):
    results, row = run_expert(tiny, {"drivable_source": "none"})
    p = results["pdms"].details
    assert p["dac"] is None and set(p["unscored"]) == {"dac"} and "no map" in p["unscored"]["dac"]
    assert results["pdms"].score == pytest.approx(p["nc"] * (5 * p["ep"] + 5 * p["ttc"] + 2 * p["comfort"]) / 12)
    assert row["dac"] is None and row["offroad_fraction"] is None and row["dac_source"] is None
    assert row["unscored"].startswith("dac: no drivable area") and "offroad_fraction" in row["unscored"]
    assert results["driving_score"].score == pytest.approx(row["route_completion"])  # no collision, no off-road term


def test_pdms_of_a_mapless_log_scores_dac_on_the_lidar_ground(tiny):
    results, row = run_expert(tiny)
    assert row["dac"] == 1.0 and row["dac_source"] == LIDAR_GROUND
    assert row["offroad_fraction"] == 0.0 and results["pdms"].details["unscored"] == {}
    # what a map-less log cannot support is listed, never scored 1: lanes, directions, lights, speed limits
    unscored = dict(part.split(": ", 1) for part in row["unscored"].split("; "))
    assert "dac" not in unscored and {"ddc", "tlc", "lk"} <= set(unscored), unscored
    assert row["ddc"] is None and row["tlc"] is None and row["lk"] is None


def test_reports_say_n_a_for_what_is_not_scored():
    from stag_sim.app.report import NOT_SCORED, fmt
    from stag_sim.app.reports import format_table

    table = format_table([{"scenario": "s", "pdms": 0.9, "driving_score": None}], cols=("scenario", "pdms", "driving_score"))
    assert table.splitlines()[-1].split() == ["s", "0.900", NOT_SCORED]
    assert fmt("dac", 1.0, "{:.2f}") == "1.00"


def test_bev_draws_the_lidar_ground_of_a_mapless_log(tiny):
    from stag_sim.envs.observations import BEV_CHANNELS

    env = gym.make("StagDrive-v0", scene=tiny, observations=("bev",), bev={"size_px": 48, "resolution_m": 0.5})
    obs, _ = env.reset(seed=0)
    drivable = obs["bev"][BEV_CHANNELS.index("drivable")] > 0
    # 24 x 24 m around the ego; the 12 m road crosses it: about half the pixels (the verges are not drivable)
    assert 0.35 < drivable.mean() < 0.65
    env.close()
