"""CARLA <-> StagDrive frame conversion, checked against the real installed ``carla`` client types (no server)."""

import numpy as np
import pytest

from stag_sim.carla_bridge.frames import (
    MIRROR,
    Alignment,
    T_rh_from_carla_transform,
    box_in_actor,
    carla_matrix,
    carla_transform_from_matrix,
)
from stag_sim.errors import ValidationError
from stag_sim.geometry import invert_transform, make_transform, pose_xy_yaw, quat_normalize, yaw_of

carla = pytest.importorskip("carla", reason="the real carla client is not installed (pip install 'stag-sim[carla]')")

N = 300


def random_carla_poses(rng, n=N, scale=300.0):
    loc = rng.uniform(-scale, scale, (n, 3))
    rot = np.column_stack([rng.uniform(-89.9, 89.9, n), rng.uniform(-180, 180, n), rng.uniform(-180, 180, n)])
    return loc, rot


def real_transform(loc, rot):
    return carla.Transform(carla.Location(*map(float, loc)), carla.Rotation(*map(float, rot)))


def test_carla_matrix_equals_real_get_matrix():
    loc, rot = random_carla_poses(np.random.default_rng(0))
    ours = carla_matrix(loc, rot)
    for i in range(N):
        real = np.array(real_transform(loc[i], rot[i]).get_matrix())
        np.testing.assert_allclose(ours[i], real, atol=2e-4)  # carla computes in float32


def test_right_handed_pose_maps_points_like_the_real_transform():
    """T_rh applied to a mirrored local point is the mirrored world point that carla.Transform.transform gives."""
    rng = np.random.default_rng(1)
    loc, rot = random_carla_poses(rng)
    T = T_rh_from_carla_transform(loc, rot)
    assert np.allclose(np.linalg.det(T[:, :3, :3]), 1.0)  # proper rotations: right-handed
    for i in range(N):
        p_local = rng.uniform(-5, 5, 3)
        world = carla.Location(*map(float, p_local))
        real_transform(loc[i], rot[i]).transform(world)  # in place, left-handed numbers
        ours = T[i] @ np.append(p_local * [1, -1, 1], 1.0)
        np.testing.assert_allclose(ours[:3], [world.x, -world.y, world.z], atol=2e-4)


def test_axes_match_carla_forward_right_up_vectors():
    loc, rot = random_carla_poses(np.random.default_rng(2), n=50)
    T = T_rh_from_carla_transform(loc, rot)
    for i in range(50):
        r = carla.Rotation(*map(float, rot[i]))
        f, right, up = r.get_forward_vector(), r.get_right_vector(), r.get_up_vector()
        np.testing.assert_allclose(T[i, :3, 0], [f.x, -f.y, f.z], atol=1e-5)  # x forward
        np.testing.assert_allclose(T[i, :3, 1], [-right.x, right.y, -right.z], atol=1e-5)  # our y = left = -right
        np.testing.assert_allclose(T[i, :3, 2], [up.x, -up.y, up.z], atol=1e-5)


def test_sign_conventions_yaw_pitch_roll():
    rng = np.random.default_rng(3)
    for yaw_deg in rng.uniform(-179, 179, 20):
        T = T_rh_from_carla_transform([0, 0, 0], [0, yaw_deg, 0])
        assert np.isclose(yaw_of(T), -np.deg2rad(yaw_deg))  # ours yaw = -CARLA yaw
    nose_up = T_rh_from_carla_transform([0, 0, 0], [20.0, 0, 0])
    assert nose_up[2, 0] > 0  # positive CARLA pitch lifts the nose in our frame too
    right_down = T_rh_from_carla_transform([0, 0, 0], [0, 0, 20.0])
    assert right_down[2, 1] > 0  # positive CARLA roll (right side down) lifts our left (+y) side


def test_inverse_round_trip_through_the_real_client():
    """Random right-handed poses -> CARLA (location, rotation) -> real get_matrix -> mirrored back == original."""
    rng = np.random.default_rng(4)
    q = quat_normalize(rng.normal(size=(N, 4)))
    T = make_transform(q, rng.uniform(-300, 300, (N, 3)))
    loc, rot = carla_transform_from_matrix(T)
    assert np.all(np.abs(rot[:, 0]) <= 90.0) and np.all(np.abs(rot[:, 1:]) <= 180.0)
    for i in range(N):
        real = np.array(real_transform(loc[i], rot[i]).get_matrix())
        np.testing.assert_allclose(MIRROR @ real @ MIRROR, T[i], atol=2e-4)
    loc2, rot2 = carla_transform_from_matrix(T_rh_from_carla_transform(loc, rot))
    np.testing.assert_allclose(T_rh_from_carla_transform(loc2, rot2), T_rh_from_carla_transform(loc, rot), atol=1e-9)


def test_inverse_matrix_matches_real_get_inverse_matrix():
    loc, rot = random_carla_poses(np.random.default_rng(5), n=50)
    for i in range(50):
        real_inv = np.array(real_transform(loc[i], rot[i]).get_inverse_matrix())
        ours = MIRROR @ invert_transform(T_rh_from_carla_transform(loc[i], rot[i])) @ MIRROR
        np.testing.assert_allclose(ours, real_inv, atol=2e-3)


def test_box_corners_match_real_bounding_box_world_vertices():
    rng = np.random.default_rng(6)
    loc, rot = random_carla_poses(rng, n=40, scale=100.0)
    for i in range(40):
        bb_loc, bb_ext = rng.uniform(-1, 1, 3), rng.uniform(0.2, 3, 3)
        bb_rot = rng.uniform(-30, 30, 3)
        bb = carla.BoundingBox(carla.Location(*map(float, bb_loc)), carla.Vector3D(*map(float, bb_ext)))
        bb.rotation = carla.Rotation(*map(float, bb_rot))
        real = np.array([[v.x, -v.y, v.z] for v in bb.get_world_vertices(real_transform(loc[i], rot[i]))])
        T_actor_from_box, size = box_in_actor(bb_loc, bb_ext, bb_rot)
        np.testing.assert_allclose(size, 2 * bb_ext)
        signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
        corners = (T_rh_from_carla_transform(loc[i], rot[i]) @ T_actor_from_box
                   @ np.column_stack([signs * size / 2, np.ones(8)]).T).T[:, :3]
        dist = np.linalg.norm(real[:, None] - corners[None], axis=2)
        assert dist.min(axis=1).max() < 2e-3  # every real vertex is one of ours
        assert dist.min(axis=0).max() < 2e-3  # and every one of ours is a real vertex


def test_scene_box_to_carla_bounding_box_and_back():
    """Our box -> CARLA world BoundingBox: the real get_world_vertices gives our corners (mirrored, aligned)."""
    rng = np.random.default_rng(8)
    al = Alignment(pose_xy_yaw(30.0, -12.0, 2.1, 0.4))
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
    for _ in range(30):
        T_box = make_transform(quat_normalize(rng.normal(size=4)), rng.uniform(-80, 80, 3))
        size = rng.uniform(0.3, 6.0, 3)
        loc, extent, rot = al.carla_box_from_scene(T_box, size)
        bb = carla.BoundingBox(carla.Location(*map(float, loc)), carla.Vector3D(*map(float, extent)))
        bb.rotation = carla.Rotation(*map(float, rot))
        real = np.array([[v.x, -v.y, v.z, 1.0] for v in bb.get_world_vertices(carla.Transform())])
        real_scene = (al.T_scene_from_carla @ real.T).T[:, :3]
        ours = (T_box @ np.column_stack([signs * size / 2, np.ones(8)]).T).T[:, :3]
        dist = np.linalg.norm(real_scene[:, None] - ours[None], axis=2)
        assert dist.min(axis=1).max() < 2e-3 and dist.min(axis=0).max() < 2e-3
        T_back, size_back = box_in_actor(loc, extent, rot)  # a world-frame box is a box in an identity actor
        np.testing.assert_allclose(al.T_scene_from_carla @ T_back, T_box, atol=1e-9)
        np.testing.assert_allclose(size_back, size)


def test_alignment_anchor_and_round_trip():
    rng = np.random.default_rng(7)
    T_anchor = pose_xy_yaw(123.0, -45.0, 0.7, 2.0)
    spawn_loc, spawn_rot = np.array([-10.0, 200.0, 0.3]), np.array([0.0, -135.0, 0.0])
    al = Alignment.from_anchor(T_anchor, spawn_loc, spawn_rot)
    np.testing.assert_allclose(al.scene_from_carla(spawn_loc, spawn_rot), T_anchor, atol=1e-9)
    loc, rot = random_carla_poses(rng, n=50)
    T_scene = al.scene_from_carla(loc, rot)
    loc2, rot2 = al.carla_from_scene(T_scene)
    np.testing.assert_allclose(al.scene_from_carla(loc2, rot2), T_scene, atol=1e-9)
    # a CARLA displacement (velocity) maps like the difference of two mapped points
    p0, p1 = rng.uniform(-50, 50, (2, 3))
    d_scene = al.scene_from_carla(p1, (0, 0, 0))[:3, 3] - al.scene_from_carla(p0, (0, 0, 0))[:3, 3]
    np.testing.assert_allclose(al.vector_to_scene(p1 - p0), d_scene, atol=1e-9)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValidationError, match="rotation_pyr_deg"):
        carla_matrix([0, 0, 0], [0, 0])
    with pytest.raises(ValidationError, match="location_xyz"):
        carla_matrix([0, np.nan, 0], [0, 0, 0])
    with pytest.raises(Exception, match="Alignment.T_scene_from_carla"):
        Alignment(np.diag([1.0, -1.0, 1.0, 1.0])).validate()  # a mirror is not a rigid right-handed transform
