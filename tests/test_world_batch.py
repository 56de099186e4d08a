"""The batched world (stag_sim.world_batch) and the batched vector env against the single-env reference, on random
action sequences: positions, agents, route progress, events, rewards, terminations and state vectors."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

import stag_sim  # noqa: F401  (registers StagDrive-v0)
from stag_sim import world_batch as wbatch
from stag_sim.agent_sources import AgentEvent
from stag_sim.geometry import pose_xy_yaw
from stag_sim.scene_log import ObjectTracks, SceneMap
from stag_sim.testing import tiny_scene_log
from stag_sim.world import World, WorldConfig, reset, step

T = 70


def curvy_log(seed: int, radius: float = 40.0):
    """A log on a curved road (radius [m]) with moving cars ahead and behind the ego in both lanes (IDM has
    leaders to follow), parked cars at the kerb, a pedestrian crossing and a car that appears halfway."""
    from shapely.geometry import LineString, Point

    base = tiny_scene_log(num_frames=T, width=16, height=9, seed=seed, with_depth=False, with_lidar=False,
                          with_map=False)
    rng = np.random.default_rng(seed)
    t = np.arange(T) * 0.1

    def on_arc(s, lateral):
        a = s / radius
        r = radius - lateral
        return r * np.sin(a), radius - r * np.cos(a), a

    ego = pose_xy_yaw(*on_arc(6.0 * t, 0.0))
    specs = [(12 + rng.uniform(0, 6), 3.0 + rng.uniform(0, 2), 0.0), (-15.0, 7.0, 0.0), (25.0, 4.0, 3.5),
             (40.0, 0.0, -3.2), (55.0, 0.0, 3.2), (5.0, 5.0, 3.5)]
    poses = np.stack([pose_xy_yaw(*on_arc(s0 + v * t, lat)) for s0, v, lat in specs], 1)
    ped = pose_xy_yaw(*on_arc(30.0 + 0 * t, -4.0 + 0.8 * t))
    poses = np.concatenate([poses, ped[:, None]], 1)
    valid = np.ones((T, len(specs) + 1), bool)
    valid[: T // 2, 5] = False
    cats = ("vehicle.car",) * 3 + ("vehicle.car", "vehicle.car", "vehicle.truck", "human.pedestrian")
    sizes = np.array([[4.5, 1.9, 1.5]] * 5 + [[7.0, 2.4, 1.6], [0.6, 0.6, 1.7]])
    objects = ObjectTracks(tuple(f"obj-{k}" for k in range(len(cats))), cats, sizes, poses, valid)
    centre = LineString(np.stack(on_arc(np.linspace(-30, 120, 80), 0.0)[:2], 1))
    road = centre.buffer(7.0).union(Point(on_arc(30.0, -6.0)[:2]).buffer(3.0))
    lanes = (LineString(np.stack(on_arc(np.linspace(-30, 120, 80), 1.75)[:2], 1)),)
    scene_map = SceneMap(drivable_area=road, lane_ids=("lane",), lanes=lanes, successors=((),))
    C = len(base.rig)
    return replace(base, name=f"curvy-{seed}", ego_poses=ego, objects=objects, map=scene_map,
                   camera_ego_poses=np.repeat(ego[:, None], C, axis=1)).validate()


@pytest.fixture(scope="module")
def logs():
    return [curvy_log(0), curvy_log(1, radius=25.0), tiny_scene_log(num_frames=60, width=16, height=9)]


def _rows(logs, agents, n, rng, events=()):
    worlds, states = [], []
    for i in range(n):
        log = logs[i % len(logs)]
        cfg = WorldConfig(agents=agents, start_frame=int(rng.integers(0, 20)), events=events if i % 3 == 0 else ())
        w = World.build(log, cfg)
        worlds.append(w)
        states.append(reset(w, ego_offset=(0.0, rng.uniform(-1.5, 1.5), rng.uniform(-0.2, 0.2)),
                            speed=rng.uniform(0.0, 9.0)))
    return worlds, states


def _compare(worlds, states, steps, rng, tol=1e-9):
    wb, bs = wbatch.reset(worlds, states)
    seen = {"collision": 0, "offroad": 0, "route_completed": 0}
    for _ in range(steps):
        accel, steer = rng.uniform(-8.0, 3.0, len(worlds)), rng.uniform(-0.6, 0.6, len(worlds))
        states = [step(w, s, float(a), float(d)) for w, s, a, d in zip(worlds, states, accel, steer)]
        bs = wbatch.step(wb, bs, accel, steer)
        for i, (w, ref) in enumerate(zip(worlds, states)):
            got = bs.state(i, w)
            e, r = got.ego, ref.ego
            assert np.allclose([e.x, e.y, e.yaw, e.speed, e.accel, e.steer, e.yaw_rate, got.route_s, got.time_s],
                               [r.x, r.y, r.yaw, r.speed, r.accel, r.steer, r.yaw_rate, ref.route_s, ref.time_s],
                               rtol=0, atol=tol), (i, got, ref)
            assert np.allclose(got.agent_s, ref.agent_s, atol=tol) and np.allclose(got.agent_speed, ref.agent_speed, atol=tol)
            assert got.events == ref.events, (i, got.events, ref.events)
            poses, valid = w.agent_poses(ref)
            K = len(valid)
            assert np.array_equal(bs.agent_valid[i, :K], valid) and not bs.agent_valid[i, K:].any()
            assert np.allclose(bs.agent_xy[i, :K][valid], poses[valid, :2, 3], atol=tol)
            for k in seen:
                seen[k] += ref.events[k]
    return seen


def test_batched_world_matches_the_single_step_log_replay(logs):
    rng = np.random.default_rng(0)
    seen = _compare(*_rows(logs, "log_replay", 12, rng), steps=45, rng=rng)
    assert seen["collision"] and seen["offroad"], seen  # the comparison covered both events


def test_batched_world_matches_the_single_step_idm_with_brakes_and_removals(logs):
    rng = np.random.default_rng(1)
    events = (AgentEvent("hard_brake", agent="obj-0", at_s=0.8, decel=7.0), AgentEvent("remove", agent="obj-2"))
    worlds, states = _rows(logs[:2], "idm", 8, rng, events)
    wb = wbatch.WorldBatch.build(worlds)
    assert wb.batched.all() and wb.arrays["sim_mask"].sum() >= 8 * 3  # IDM agents as arrays, not the fallback
    _compare(worlds, states, steps=40, rng=rng)


def test_rows_the_arrays_cannot_hold_fall_back_to_the_reference_step(logs):
    rng = np.random.default_rng(2)
    insert = (AgentEvent("insert", agent="obj-3", name="lead", ahead_m=15.0, speed=3.0),
              AgentEvent("cut_in", agent="lead", at_s=0.5, to_lateral_m=0.0))
    worlds, states = _rows(logs[:2], "log_replay", 6, rng, insert)
    wb = wbatch.WorldBatch.build(worlds)
    assert list(wb.batched) == [False, True, True, False, True, True]
    _compare(worlds, states, steps=25, rng=rng)


def test_batch_rejects_worlds_with_different_steps(logs):
    a = World.build(logs[0])
    b = World.build(logs[0], WorldConfig(dt=0.05))
    with pytest.raises(Exception, match="dt"):
        wbatch.WorldBatch.build([a, b])


@pytest.mark.parametrize("kw", [{"world": {"agents": "idm"}}, {"observations": ("state", "ego", "route")},
                                {"traffic": {"brake_prob": 0.8, "cut_in_prob": 0.5, "brake_range_m": (2.0, 60.0)}},
                                {"action_mode": "trajectory", "observations": ("state",)}])
def test_vector_env_matches_single_envs_over_episodes(logs, kw):
    """The batched vector env against N single envs (SyncVectorEnv, same seeds): observations, rewards,
    terminations, infos, across random starts and next-step autoresets."""
    n = 4
    kwargs = {"cameras": (), "start": {"random": True, "lateral_m": 1.5}, "max_steps": 30, **kw}
    vec = gym.make_vec("StagDrive-v0", num_envs=n, vectorization_mode="vector_entry_point", scene=logs[0], **kwargs)
    sync = gym.vector.SyncVectorEnv([lambda: gym.make("StagDrive-v0", scene=logs[0], **kwargs) for _ in range(n)])
    ob_v, info_v = vec.reset(seed=3)
    ob_s, info_s = sync.reset(seed=3)
    rng = np.random.default_rng(3)
    ends = 0
    for t in range(70):
        for k in ob_s:
            assert np.allclose(ob_v[k], ob_s[k], atol=2e-6), (t, k)
        for k in ("route_completion", "collision", "offroad", "clipped_actions", "time_s", "expert_action"):
            assert np.allclose(info_v[k], info_s[k], atol=1e-6), (t, k)
        assert list(info_v["termination_reason"]) == list(info_s["termination_reason"]), t
        actions = rng.uniform(-1.0, 1.0, vec.action_space.shape).astype(np.float32)
        if kw.get("action_mode") == "trajectory":
            actions = np.stack([info_v["expert_action"][i] + rng.normal(0, 0.5, actions.shape[1:]) for i in range(n)])
        ob_v, r_v, term_v, trunc_v, info_v = vec.step(actions)
        ob_s, r_s, term_s, trunc_s, info_s = sync.step(actions)
        assert np.allclose(r_v, r_s, atol=1e-9) and np.array_equal(term_v, term_s) and np.array_equal(trunc_v, trunc_s)
        ends += int((term_v | trunc_v).sum())
    assert ends >= 3  # autoresets were exercised


def test_vector_env_over_a_scene_list_with_different_agent_counts(logs):
    """Sub-envs draw scenes with 7 and 2 agents; rows re-pad when a reset brings a bigger scene."""
    vec = gym.make_vec("StagDrive-v0", num_envs=3, vectorization_mode="vector_entry_point", scene=[logs[2], logs[0]],
                       cameras=(), max_steps=8, expert_action=False)
    vec.reset(seed=0)
    names = set()
    for _ in range(40):
        obs, r, term, trunc, info = vec.step(np.tile([0.3, 0.0], (3, 1)).astype(np.float32))
        assert np.all(np.isfinite(obs["state"])) and "expert_action" not in info
        names |= {w.log.name for w in vec.unwrapped.world_batch.worlds}
        for i, env in enumerate(vec.unwrapped.envs):  # a sub-env's state is its row, read back on demand
            assert env.state.ego.x == pytest.approx(vec.unwrapped.batch_state.x[i])
    assert names == {logs[0].name, logs[2].name}


def test_traffic_events_are_drawn_per_reset_from_the_seed(logs):
    kw = {"scene": logs[0], "cameras": (), "start": {"random": True},
          "traffic": {"brake_prob": 0.8, "cut_in_prob": 0.5, "brake_range_m": (2.0, 60.0)}}
    env = gym.make("StagDrive-v0", **kw)
    drawn = []
    for seed in range(12):
        env.reset(seed=seed)
        drawn.append(tuple((e.type, e.agent, e.at_s) for e in env.unwrapped.world.config.events))
    kinds = {t for d in drawn for t, *_ in d}
    assert {"hard_brake", "insert", "cut_in"} <= kinds and () in drawn  # both kinds, and episodes without
    again = gym.make("StagDrive-v0", **kw)
    for seed in range(12):
        again.reset(seed=seed)
        assert tuple((e.type, e.agent, e.at_s) for e in again.unwrapped.world.config.events) == drawn[seed]
    plain = gym.make("StagDrive-v0", **{**kw, "traffic": {}})
    plain.reset(seed=3)
    assert plain.unwrapped.world.config.events == ()
    with pytest.raises(Exception, match="traffic.brake_prob"):
        gym.make("StagDrive-v0", **{**kw, "traffic": {"brake_prob": 2.0}})
