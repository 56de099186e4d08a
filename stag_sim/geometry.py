"""Rigid transforms and quaternions: the one set of conventions every module shares.

Conventions (see shared DESIGN.md):

* Quaternions are stored ``(w, x, y, z)`` (nuScenes / pyquaternion order), unit norm, as float64.
* Transforms are 4x4 homogeneous matrices named ``T_a_from_b``: ``p_a = T_a_from_b @ p_b``.
* World frame: right-handed, z up. Ego frame: x forward, y left, z up, origin at the rear-axle centre on
  the ground. Camera frame: OpenCV (x right, y down, z forward).
* Units: metres and radians. Never pass Euler angles between modules; ``yaw`` helpers exist for planar
  (bird's-eye) code only.

All functions accept batched inputs (leading dimensions broadcast) unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError

QUAT_NORM_TOLERANCE = 1e-6  # [-] allowed deviation of |q| from 1
ROTATION_TOLERANCE = 1e-6  # [-] allowed deviation of R^T R from identity


def _as_float_array(x, name: str, last_dims: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[arr.ndim - len(last_dims):] != last_dims or arr.ndim < len(last_dims):
        raise ValidationError(f"{name}: expected shape (..., {', '.join(map(str, last_dims))}), got {arr.shape}")
    return arr


def check_finite(x, name: str) -> None:
    """Raise :class:`ValidationError` naming ``name`` when ``x`` holds NaN or inf."""
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValidationError(f"{name}: non-finite value {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}")


def check_positive(obj, names, prefix: str | None = None, error: type[Exception] = ValidationError) -> None:
    """Raise ``error`` naming the field when any attribute ``names`` of ``obj`` is not a finite value > 0.

    Messages read ``<prefix><name>: must be a finite value > 0, got <v>``; ``prefix`` defaults to the class name.
    """
    prefix = f"{type(obj).__name__}." if prefix is None else prefix
    for name in names:
        v = getattr(obj, name)
        if not (np.isfinite(v) and v > 0):
            raise error(f"{prefix}{name}: must be a finite value > 0, got {v}")


def check_unit_quaternion(q, name: str = "quaternion") -> None:
    """Raise when ``q`` (..., 4) is not finite and unit-norm within :data:`QUAT_NORM_TOLERANCE`."""
    q = _as_float_array(q, name, (4,))
    check_finite(q, name)
    norms = np.linalg.norm(q, axis=-1)
    bad = np.abs(norms - 1.0) > QUAT_NORM_TOLERANCE
    if np.any(bad):
        idx = np.argwhere(np.atleast_1d(bad))[0]
        raise ValidationError(
            f"{name}: quaternion (w, x, y, z) must have unit norm, got norm {np.atleast_1d(norms)[tuple(idx)]:.9g}"
        )


def check_transform(T, name: str = "transform") -> None:
    """Raise when ``T`` (..., 4, 4) is not a finite rigid transform (orthonormal, det +1, last row 0 0 0 1)."""
    T = _as_float_array(T, name, (4, 4))
    check_finite(T, name)
    R = T[..., :3, :3]
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(initial=0.0)
    if err > ROTATION_TOLERANCE:
        raise ValidationError(f"{name}: rotation block is not orthonormal (max |R^T R - I| = {err:.3g})")
    if np.any(np.linalg.det(R) < 0):
        raise ValidationError(f"{name}: rotation block has det -1 (a reflection, not a rotation)")
    if np.abs(T[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(initial=0.0) > 1e-9:
        raise ValidationError(f"{name}: last row must be [0, 0, 0, 1]")


def quat_normalize(q) -> np.ndarray:
    q = _as_float_array(q, "quaternion", (4,))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product ``a * b`` of (w, x, y, z) quaternions (rotation b first, then a)."""
    a = _as_float_array(a, "a", (4,))
    b = _as_float_array(b, "b", (4,))
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_to_matrix(q) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    q = quat_normalize(q)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - z * w)
    R[..., 0, 2] = 2 * (x * z + y * w)
    R[..., 1, 0] = 2 * (x * y + z * w)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - x * w)
    R[..., 2, 0] = 2 * (x * z - y * w)
    R[..., 2, 1] = 2 * (y * z + x * w)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def matrix_to_quat(R) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Uses the numerically stable branch selection of Shepperd's method.
    """
    R = _as_float_array(R, "rotation", (3, 3))
    flat = R.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    tr = np.trace(flat, axis1=1, axis2=2)
    diag = np.stack([flat[:, 0, 0], flat[:, 1, 1], flat[:, 2, 2]], axis=1)
    choice = np.argmax(np.concatenate([tr[:, None], diag], axis=1), axis=1)
    m = flat
    for c in range(4):
        sel = choice == c
        if not np.any(sel):
            continue
        r = m[sel]
        if c == 0:
            s = 2.0 * np.sqrt(np.maximum(tr[sel] + 1.0, 0.0))
            q = [0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 1, 0] - r[:, 0, 1]) / s]
        elif c == 1:
            s = 2.0 * np.sqrt(np.maximum(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2], 0.0))
            q = [(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s, (r[:, 0, 1] + r[:, 1, 0]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s]
        elif c == 2:
            s = 2.0 * np.sqrt(np.maximum(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2], 0.0))
            q = [(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s, 0.25 * s, (r[:, 1, 2] + r[:, 2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(np.maximum(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1], 0.0))
            q = [(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s, (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s]
        out[sel] = np.stack(q, axis=1)
    out = out / np.linalg.norm(out, axis=1, keepdims=True)
    out[out[:, 0] < 0] *= -1.0
    return out.reshape(R.shape[:-2] + (4,))


def quat_slerp(q0, q1, w) -> np.ndarray:
    """Spherical linear interpolation of (..., 4) unit quaternions at fractions ``w`` (...) in [0, 1] along the
    shorter arc (constant angular speed; normalised linear interpolation where the two are within 1e-6 rad)."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    w = np.asarray(w, np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    small = theta < 1e-6
    sin_t = np.where(small, 1.0, np.sin(theta))
    a = np.where(small, 1.0 - w, np.sin((1.0 - w) * theta) / sin_t)
    b = np.where(small, w, np.sin(w * theta) / sin_t)
    q = a * q0 + b * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def interpolate_poses(P0, P1, w, q0=None, q1=None) -> np.ndarray:
    """(..., 4, 4) rigid transforms between ``P0`` and ``P1`` (..., 4, 4) at fractions ``w`` (...) in [0, 1]:
    translation linearly, rotation by quaternion slerp (roll and pitch included). The one pose interpolation of
    the package (logged ego and object tracks, the 4D scene's objects). ``q0`` / ``q1``: the rotations' quaternions
    when already known (:func:`matrix_to_quat` of ``P0`` / ``P1``; the same result, faster)."""
    P0 = np.asarray(P0, np.float64)
    P1 = np.asarray(P1, np.float64)
    w = np.broadcast_to(np.asarray(w, np.float64), P0.shape[:-2])
    q0 = matrix_to_quat(P0[..., :3, :3]) if q0 is None else q0
    q1 = matrix_to_quat(P1[..., :3, :3]) if q1 is None else q1
    out = np.zeros(P0.shape)
    out[..., :3, :3] = quat_to_matrix(quat_slerp(q0, q1, w))
    out[..., :3, 3] = (1.0 - w)[..., None] * P0[..., :3, 3] + w[..., None] * P1[..., :3, 3]
    out[..., 3, 3] = 1.0
    return out


def yaw_to_quat(yaw) -> np.ndarray:
    """Rotation about +z by ``yaw`` [rad] as (..., 4) quaternions (w, x, y, z)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zeros, zeros, np.sin(yaw / 2)], axis=-1)


def yaw_of(T) -> np.ndarray:
    """Heading [rad] of the x axis of transform(s) ``T`` (..., 4, 4) projected on the world xy plane."""
    T = np.asarray(T, dtype=np.float64)
    return np.arctan2(T[..., 1, 0], T[..., 0, 0])


def rot_z(yaw) -> np.ndarray:
    """(..., 3, 3) rotation about +z by ``yaw`` [rad]."""
    return quat_to_matrix(yaw_to_quat(yaw))


def make_transform(rotation, translation) -> np.ndarray:
    """Build (..., 4, 4) ``T`` from a rotation (..., 3, 3) matrix or (..., 4) quaternion and (..., 3) translation [m]."""
    rotation = np.asarray(rotation, dtype=np.float64)
    R = quat_to_matrix(rotation) if rotation.shape[-1:] == (4,) and rotation.shape[-2:] != (3, 3) else rotation
    t = _as_float_array(translation, "translation", (3,))
    shape = np.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = np.zeros(shape + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def pose_xy_yaw(x, y, yaw, z=0.0) -> np.ndarray:
    """(..., 4, 4) planar pose: position (x, y, z) [m], heading ``yaw`` [rad] about +z."""
    x, y, yaw, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, yaw, z)))
    return make_transform(rot_z(yaw), np.stack([x, y, z], axis=-1))


def invert_transform(T) -> np.ndarray:
    """Inverse of rigid transform(s) (..., 4, 4): ``T_b_from_a`` from ``T_a_from_b``."""
    T = _as_float_array(T, "transform", (4, 4))
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def transform_points(T, points) -> np.ndarray:
    """Apply ``T`` (4, 4) to ``points`` (N, 3) (or (..., 3)); returns the same shape, float64 unless float32 given."""
    T = np.asarray(T)
    pts = np.asarray(points)
    dtype = pts.dtype if pts.dtype in (np.float32, np.float64) else np.float64
    R = T[:3, :3].astype(dtype)
    t = T[:3, 3].astype(dtype)
    return pts.astype(dtype, copy=False) @ R.T + t


@dataclass(frozen=True, eq=False)
class Pose:
    """A rigid pose stored as translation + quaternion, the way nuScenes stores it.

    Attributes:
        translation: (3,) float64 [m].
        rotation: (4,) float64 unit quaternion (w, x, y, z).
    """

    translation: np.ndarray
    rotation: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "translation", np.asarray(self.translation, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=np.float64).reshape(-1))

    def validate(self) -> "Pose":
        if self.translation.shape != (3,):
            raise ValidationError(f"Pose.translation: expected shape (3,), got {self.translation.shape}")
        if self.rotation.shape != (4,):
            raise ValidationError(f"Pose.rotation: expected shape (4,) (w, x, y, z), got {self.rotation.shape}")
        check_finite(self.translation, "Pose.translation")
        check_unit_quaternion(self.rotation, "Pose.rotation")
        return self

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous transform."""
        return make_transform(self.rotation, self.translation)

    @classmethod
    def from_matrix(cls, T) -> "Pose":
        T = np.asarray(T, dtype=np.float64)
        return cls(translation=T[:3, 3].copy(), rotation=matrix_to_quat(T[:3, :3]))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pose)
            and np.array_equal(self.translation, other.translation)
            and np.array_equal(self.rotation, other.rotation)
        )
