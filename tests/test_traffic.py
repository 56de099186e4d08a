import numpy as np
import pytest

from stag_sim.errors import ValidationError
from stag_sim.traffic import IDMParameters, Obstacle, PolylinePath, find_leaders, idm_acceleration, idm_step

P = IDMParameters().validate()
DT = 0.1  # [s]
CAR = 4.5  # [m]


def follow(leader_speed_fn, steps, s0=0.0, v0=10.0, lead_s0=40.0):
    path = PolylinePath([[0.0, 0.0], [2000.0, 0.0]])
    s, v, lead_s = s0, v0, lead_s0
    gaps, speeds = [], []
    for k in range(steps):
        lv = leader_speed_fn(k * DT)
        obs = [Obstacle((lead_s, 0.3), CAR, lv, 0.0)]
        gap, lead_speed = find_leaders(path, s, CAR, obs)
        s, v, _ = idm_step(s, v, gap, lead_speed, DT, P)
        lead_s += lv * DT
        gaps.append(lead_s - s - CAR)
        speeds.append(v)
    return np.array(gaps), np.array(speeds)


def test_free_road_converges_to_target_speed():
    path = PolylinePath([[0.0, 0.0], [5000.0, 0.0]])
    s, v = 0.0, 0.0
    for _ in range(600):
        gap, lv = find_leaders(path, s, CAR, [])
        s, v, _ = idm_step(s, v, gap, lv, DT, P)
    assert abs(v - P.target_speed) < 0.2


def test_follower_keeps_its_gap_behind_a_steady_leader():
    gaps, speeds = follow(lambda t: 8.0, 900)
    # equilibrium IDM gap at v: s = (s0 + vT) / sqrt(1 - (v/v0)^4)
    v = 8.0
    s_eq = (P.min_gap + v * P.headway) / np.sqrt(1 - (v / P.target_speed) ** 4)
    assert abs(speeds[-1] - v) < 0.05 and abs(gaps[-1] - s_eq) < 0.3
    assert gaps.min() > P.min_gap


def test_follower_stops_behind_a_stopped_leader():
    gaps, speeds = follow(lambda t: 0.0, 600, lead_s0=60.0)
    assert speeds[-1] < 1e-3
    assert P.min_gap * 0.9 < gaps[-1] < P.min_gap + 1.0
    assert gaps.min() > 0.0  # never collides


def test_leader_on_another_lane_is_ignored():
    path = PolylinePath([[0.0, 0.0], [100.0, 0.0]])
    gap, _ = find_leaders(path, 0.0, CAR, [Obstacle((20.0, 3.5), CAR, 0.0, 0.0)])
    assert gap == float("inf")
    gap, _ = find_leaders(path, 30.0, CAR, [Obstacle((20.0, 0.0), CAR, 0.0, 0.0)])  # behind us
    assert gap == float("inf")


def test_path_interpolate_and_project():
    path = PolylinePath([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    assert path.length == 20.0
    xy, yaw = path.interpolate(np.array([5.0, 15.0]))
    assert np.allclose(xy, [[5, 0], [10, 5]]) and np.allclose(yaw, [0, np.pi / 2])
    s, lat = path.project([[5.0, 1.0], [11.0, 5.0]])
    assert np.allclose(s, [5, 15]) and np.allclose(lat, [1.0, -1.0])


def test_idm_vectorised_and_bad_params():
    a = idm_acceleration(np.array([0.0, 10.0]), np.array([np.inf, 2.0]), np.array([0.0, 0.0]), P)
    assert np.isclose(a[0], P.accel_max) and a[1] == -P.decel_limit
    with pytest.raises(ValidationError, match="headway"):
        IDMParameters(headway=0.0).validate()
    with pytest.raises(ValidationError, match="points"):
        PolylinePath([[0.0, 0.0]])


def test_project_within_a_stretch_of_a_looping_path():
    from stag_sim.traffic import PolylinePath

    # out along +x, then back along y = 1: a point at (2, 0.6) is nearest to the return leg (s = 19) but, searched
    # only on the first 10 m, it projects onto the outbound leg at s = 2 with lateral +0.6
    path = PolylinePath([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [0.0, 1.0]])
    s_all, lat_all = path.project([[2.0, 0.6]])
    assert np.isclose(s_all[0], 19.0) and np.isclose(lat_all[0], 0.4)
    s, lat = path.project([[2.0, 0.6]], s_range=(0.0, 10.0))
    assert np.isclose(s[0], 2.0) and np.isclose(lat[0], 0.6)


def test_the_array_leader_search_is_find_leaders():
    """stag_sim.world_batch_ops.leaders (every simulated agent of every row at once: what the worlds step with)
    gives find_leaders' gap and leader speed, on random obstacles along a curved path."""
    from stag_sim.world_batch_ops import leaders

    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 3.0, 60)
    path = PolylinePath(np.stack([40 * np.sin(t), 40 * (1 - np.cos(t))], 1))
    A = {"sim_idx": np.array([[0]]), "sim_mask": np.array([[True]]), "sizes": np.array([[[4.5, 1.9, 1.5]]]),
         "path_pts": path.points[None, None], "path_dir": path._dir[None, None], "path_seg": path._seg_len[None, None],
         "path_s": path.s[None, None], "path_heading": np.arctan2(path._dir[:, 1], path._dir[:, 0])[None, None],
         "path_nseg": np.array([[len(path._seg_len)]])}
    for trial in range(200):
        s_self = rng.uniform(0.0, 60.0)
        n = int(rng.integers(1, 8))
        s_obs = rng.uniform(0.0, path.length, n)
        xy, yaw = path.interpolate(s_obs)
        xy = xy + rng.normal(0.0, 1.5, (n, 2))
        obs = [Obstacle(tuple(p), float(L), float(v), float(h)) for p, L, v, h in
               zip(xy, rng.uniform(3, 6, n), rng.uniform(0, 10, n), yaw + rng.normal(0, 0.3, n))]
        want = find_leaders(path, s_self, 4.5, obs)
        # the agent itself is obstacle 0 (never its own leader); the others follow
        got = leaders(A, np.array([[s_self]]), np.concatenate([[[0.0, 0.0]], xy])[None],
                      np.array([[4.5] + [o.length for o in obs]]), np.array([[0.0] + [o.speed for o in obs]]),
                      np.array([[0.0] + [o.yaw for o in obs]]), np.ones((1, n + 1), bool))
        assert (got[0][0, 0], got[1][0, 0]) == pytest.approx(want, abs=1e-9), trial
