import numpy as np
import pytest

from stag_sim.errors import ValidationError
from stag_sim.geometry import (
    Pose, check_transform, check_unit_quaternion, invert_transform, make_transform, matrix_to_quat, pose_xy_yaw,
    quat_multiply, quat_to_matrix, transform_points, yaw_of, yaw_to_quat,
)


def random_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quat_matrix_round_trip():
    rng = np.random.default_rng(0)
    q = random_quats(rng, 500)
    R = quat_to_matrix(q)
    assert np.allclose(np.swapaxes(R, 1, 2) @ R, np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1.0)
    q2 = matrix_to_quat(R)
    # q and -q are the same rotation; matrix_to_quat returns w >= 0
    assert np.allclose(np.abs(np.sum(q * q2, axis=1)), 1.0, atol=1e-12)
    assert np.allclose(quat_to_matrix(q2), R, atol=1e-12)


def test_quat_convention_is_wxyz():
    # 90 deg about +z maps x to y
    q = yaw_to_quat(np.pi / 2)
    assert np.allclose(q, [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    assert np.allclose(quat_to_matrix(q) @ [1, 0, 0], [0, 1, 0])


def test_quat_multiply_composes_rotations():
    rng = np.random.default_rng(1)
    a, b = random_quats(rng, 2)
    assert np.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b))


def test_transform_inverse_and_points():
    rng = np.random.default_rng(2)
    T = make_transform(random_quats(rng, 10), rng.normal(size=(10, 3)) * 20)
    Tinv = invert_transform(T)
    assert np.allclose(T @ Tinv, np.eye(4), atol=1e-12)
    pts = rng.normal(size=(100, 3))
    back = transform_points(Tinv[0], transform_points(T[0], pts))
    assert np.allclose(back, pts, atol=1e-12)
    check_transform(T)


def test_planar_pose_and_yaw():
    T = pose_xy_yaw(1.0, 2.0, 0.3)
    assert np.isclose(yaw_of(T), 0.3)
    assert np.allclose(T[:3, 3], [1, 2, 0])


def test_pose_round_trip_and_validate():
    rng = np.random.default_rng(3)
    T = make_transform(random_quats(rng, 1)[0], [1.0, -2.0, 0.5])
    p = Pose.from_matrix(T).validate()
    assert np.allclose(p.matrix, T)


@pytest.mark.parametrize(
    "translation, rotation, match",
    [
        ([np.nan, 0, 0], [1, 0, 0, 0], "non-finite"),
        ([0, 0, 0], [1, 0, 0, 0.5], "unit norm"),
        ([0, 0, 0], [np.nan, 0, 0, 1], "non-finite"),
        ([0, 0], [1, 0, 0, 0], r"shape \(3,\)"),
    ],
)
def test_pose_bad_input(translation, rotation, match):
    with pytest.raises(ValidationError, match=match):
        Pose(translation, rotation).validate()


def test_check_unit_quaternion_and_transform_errors():
    with pytest.raises(ValidationError, match="unit norm"):
        check_unit_quaternion([2.0, 0, 0, 0])
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValidationError, match="orthonormal"):
        check_transform(bad, "T_test")
    refl = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValidationError, match="reflection"):
        check_transform(refl)
    nan = np.eye(4)
    nan[1, 3] = np.nan
    with pytest.raises(ValidationError, match="T_nan: non-finite"):
        check_transform(nan, "T_nan")


def test_matrix_to_quat_half_turns_and_batches():
    for R in (np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0]), np.eye(3)):
        assert np.allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)
    R = quat_to_matrix(random_quats(np.random.default_rng(4), 24)).reshape(2, 3, 4, 3, 3)
    q = matrix_to_quat(R)
    assert q.shape == (2, 3, 4, 4) and np.all(q[..., 0] >= 0)
    assert np.allclose(quat_to_matrix(q), R, atol=1e-12)


def test_check_positive_names_the_field():
    from stag_sim.geometry import check_positive

    class Cfg:
        a, b = 1.0, float("nan")

    check_positive(Cfg(), ("a",))
    with pytest.raises(ValidationError, match=r"^Cfg.b: must be a finite value > 0, got nan$"):
        check_positive(Cfg(), ("a", "b"))
    with pytest.raises(KeyError, match="b: must be"):
        check_positive(Cfg(), ("b",), prefix="", error=KeyError)
