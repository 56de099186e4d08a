import numpy as np
import pytest

from stag_sim.dynamics import EgoState, VehicleParameters, bicycle_step, expert_action, inverse_bicycle
from stag_sim.errors import ValidationError
from stag_sim.geometry import pose_xy_yaw

P = VehicleParameters().validate()
DT = 0.1  # [s]


def roll(state, accel, steer, steps):
    out = [state]
    for _ in range(steps):
        state = bicycle_step(state, accel, steer, DT, P)
        out.append(state)
    return out


def test_straight_constant_speed_covers_v_t():
    traj = roll(EgoState(0.0, 0.0, 0.3, 8.0), 0.0, 0.0, 50)
    end = traj[-1]
    assert np.isclose(np.hypot(end.x, end.y), 8.0 * 5.0)
    assert np.isclose(np.arctan2(end.y, end.x), 0.3) and np.isclose(end.speed, 8.0)


def test_constant_steering_traces_the_bicycle_circle():
    steer = 0.2
    radius = P.wheelbase / np.tan(steer)
    traj = roll(EgoState(0.0, 0.0, 0.0, 5.0), 0.0, steer, 200)
    xy = np.array([[s.x, s.y] for s in traj])
    # left turn from the origin heading +x: centre at (0, R)
    r = np.linalg.norm(xy - [0.0, radius], axis=1)
    assert np.allclose(r, radius, atol=1e-9)
    assert np.isclose(traj[-1].yaw_rate, 5.0 / radius)


def test_braking_stops_without_reversing():
    traj = roll(EgoState(0.0, 0.0, 0.0, 4.0), -8.0, 0.0, 20)
    assert traj[-1].speed == 0.0
    assert np.isclose(traj[-1].x, 4.0**2 / (2 * 8.0))
    assert all(b.x >= a.x for a, b in zip(traj, traj[1:]))


def test_inputs_are_clipped_to_limits():
    s = bicycle_step(EgoState(0, 0, 0, 10.0), 100.0, 5.0, DT, P)
    assert np.isclose(s.accel, P.max_accel) and s.steer == P.max_steer


def test_expert_action_hits_the_target_position():
    rng = np.random.default_rng(0)
    unlimited = VehicleParameters(max_accel=1e3, max_decel=1e3, max_steer=1.5, max_speed=1e3)
    for _ in range(50):
        state = EgoState(*rng.normal(size=2) * 10, rng.uniform(-np.pi, np.pi), rng.uniform(0, 5))  # reachable: arc >= v dt / 2
        T = state.pose() @ pose_xy_yaw(rng.uniform(0.3, 2.0), rng.uniform(-0.1, 0.1), 0.0)
        a, d = expert_action(state, T, DT, unlimited)
        nxt = bicycle_step(state, a, d, DT, unlimited)
        assert np.hypot(nxt.x - T[0, 3], nxt.y - T[1, 3]) < 1e-6


def test_inverse_bicycle_reproduces_a_curved_log():
    # a log made by the bicycle itself: accelerate through an S-curve
    truth = [EgoState(5.0, -3.0, 0.4, 6.0)]
    for k in range(60):
        truth.append(bicycle_step(truth[-1], 0.8 if k < 30 else -1.0, 0.15 * np.sin(k / 10), DT, P))
    poses = np.stack([s.pose() for s in truth])
    accel, steer, states = inverse_bicycle(poses, DT, P)
    err = [np.hypot(s.x - t.x, s.y - t.y) for s, t in zip(states, truth)]
    assert max(err) < 1e-3
    assert np.allclose(accel[1:], [t.accel for t in truth[2:]], atol=0.05)
    assert np.allclose(steer, [t.steer for t in truth[1:]], atol=1e-3)


def test_bad_input():
    with pytest.raises(ValidationError, match="wheelbase"):
        VehicleParameters(wheelbase=-1.0).validate()
    with pytest.raises(ValidationError, match="speed"):
        EgoState(0, 0, 0, -1.0).validate()
    with pytest.raises(ValidationError, match="non-finite"):
        EgoState(np.nan, 0, 0, 1.0).validate()
    with pytest.raises(ValidationError, match="expected"):
        inverse_bicycle(np.eye(4)[None], DT, P)


def test_ego_pose_is_pose_xy_yaw_to_the_bit():
    """EgoState.pose builds the planar pose without the array machinery: the same numbers as pose_xy_yaw."""
    from stag_sim.dynamics import EgoState
    from stag_sim.geometry import pose_xy_yaw

    rng = np.random.default_rng(0)
    for x, y, yaw, z in rng.uniform([-500, -500, -7, -2], [500, 500, 7, 2], (2000, 4)):
        assert np.array_equal(EgoState(x, y, yaw, 1.0).pose(z), pose_xy_yaw(x, y, yaw, z))
