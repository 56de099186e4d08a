"""Frame conversion between CARLA and StagDrive (pure numpy; no ``carla`` import).

CARLA (Unreal) is **left-handed**: x forward, y right, z up, positions in metres, rotations in degrees as
``Rotation(pitch, yaw, roll)``. ``carla.Transform.get_matrix()`` is (CARLA's ``Transform.h``)::

    R_carla = Rz(yaw) @ Ry(-pitch) @ Rx(-roll)        (numbers in the left-handed frame)

StagDrive is **right-handed** (x forward, y left, z up), radians, 4x4 ``T_a_from_b``. Mirroring the y axis,
``S = diag(1, -1, 1)``, turns CARLA's numbers into a right-handed frame ("CARLA-RH": the CARLA world with y
flipped), and the same mirror turns a CARLA actor's local frame (x forward, y right) into our object frame
(x forward, y left). So a CARLA pose ``M`` (get_matrix) is the right-handed pose ``S M S``; conjugating each
elementary rotation by the mirror gives::

    S R_carla S = Rz(-yaw) @ Ry(-pitch) @ Rx(+roll)    (yaw, pitch flip sign; roll keeps it)

i.e. ours: yaw = -yaw_carla, a positive CARLA pitch (nose up) is a rotation of -pitch about our y (which also
lifts the nose, since our y points left), roll keeps its sign. The tests check this against the real
``carla.Transform.get_matrix()`` on random poses, and the inverse round trip.

The scene's world frame and CARLA-RH are related by an explicit rigid :class:`Alignment`
(``T_scene_from_carla``, right-handed), e.g. chosen so the log's start pose lands on a CARLA spawn point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_transform, invert_transform

MIRROR = np.diag([1.0, -1.0, 1.0, 1.0])  # y flip between CARLA's left-handed numbers and CARLA-RH


def _vec3(v, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape[-1:] != (3,):
        raise ValidationError(f"{name}: expected (..., 3), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValidationError(f"{name}: contains NaN or inf")
    return a


def carla_matrix(location_xyz, rotation_pyr_deg) -> np.ndarray:
    """(..., 4, 4) what ``carla.Transform(Location(*xyz), Rotation(*pyr)).get_matrix()`` returns (left-handed
    numbers). ``location_xyz`` (..., 3) [m]; ``rotation_pyr_deg`` (..., 3) = (pitch, yaw, roll) [deg]."""
    loc = _vec3(location_xyz, "location_xyz")
    p, y, r = np.moveaxis(np.deg2rad(_vec3(rotation_pyr_deg, "rotation_pyr_deg")), -1, 0)
    cp, sp, cy, sy, cr, sr = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    shape = np.broadcast_shapes(loc.shape[:-1], p.shape)
    M = np.zeros(shape + (4, 4))
    M[..., 0, 0], M[..., 0, 1], M[..., 0, 2] = cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr
    M[..., 1, 0], M[..., 1, 1], M[..., 1, 2] = cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr
    M[..., 2, 0], M[..., 2, 1], M[..., 2, 2] = sp, -cp * sr, cp * cr
    M[..., :3, 3] = loc
    M[..., 3, 3] = 1.0
    return M


def carla_from_matrix(M) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`carla_matrix`: (location (..., 3) [m], rotation (..., 3) = (pitch, yaw, roll) [deg]).

    Pitch is returned in [-90, 90] deg, yaw and roll in (-180, 180] deg (the same pose CARLA would build)."""
    M = np.asarray(M, dtype=np.float64)
    pitch = np.arcsin(np.clip(M[..., 2, 0], -1.0, 1.0))
    yaw = np.arctan2(M[..., 1, 0], M[..., 0, 0])
    roll = np.arctan2(-M[..., 2, 1], M[..., 2, 2])
    return M[..., :3, 3].copy(), np.rad2deg(np.stack([pitch, yaw, roll], axis=-1))


def T_rh_from_carla_transform(location_xyz, rotation_pyr_deg) -> np.ndarray:
    """(..., 4, 4) right-handed pose in CARLA-RH of an actor at a CARLA transform (our object frame: y left)."""
    return MIRROR @ carla_matrix(location_xyz, rotation_pyr_deg) @ MIRROR


def carla_transform_from_matrix(T_rh) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`T_rh_from_carla_transform`: (location [m], (pitch, yaw, roll) [deg]) in CARLA numbers."""
    T = np.asarray(T_rh, dtype=np.float64)
    check_transform(T, "T_rh")
    return carla_from_matrix(MIRROR @ T @ MIRROR)


def carla_vector_to_rh(v) -> np.ndarray:
    """A CARLA vector (velocity, extent offset, ...) (..., 3) in CARLA-RH (y flipped)."""
    v = np.array(v, dtype=np.float64)
    v[..., 1] *= -1.0
    return v


@dataclass(frozen=True)
class Alignment:
    """The rigid map between the CARLA world and the scene's world frame.

    Attributes:
        T_scene_from_carla: (4, 4) float64, right-handed, maps points of CARLA-RH (CARLA's world with y flipped,
            see the module docstring) into the scene's world frame [m].
    """

    T_scene_from_carla: np.ndarray

    def validate(self) -> "Alignment":
        T = np.asarray(self.T_scene_from_carla)
        if T.shape != (4, 4):
            raise ValidationError(f"Alignment.T_scene_from_carla: expected (4, 4), got {T.shape}")
        check_transform(T, "Alignment.T_scene_from_carla")
        return self

    @classmethod
    def identity(cls) -> "Alignment":
        return cls(np.eye(4))

    @classmethod
    def from_anchor(cls, T_scene_from_anchor, carla_location_xyz, carla_rotation_pyr_deg) -> "Alignment":
        """The alignment that puts the scene pose ``T_scene_from_anchor`` (e.g. the log's start ego pose) exactly
        on the CARLA transform (e.g. a spawn point): ``T_scene_from_carla = T_scene_from_anchor @ inv(T_rh)``."""
        T_anchor = np.asarray(T_scene_from_anchor, dtype=np.float64)
        check_transform(T_anchor, "T_scene_from_anchor")
        T_rh = T_rh_from_carla_transform(carla_location_xyz, carla_rotation_pyr_deg)
        return cls(T_anchor @ invert_transform(T_rh)).validate()

    def scene_from_carla(self, location_xyz, rotation_pyr_deg) -> np.ndarray:
        """(..., 4, 4) ``T_scene_from_actor`` of an actor at a CARLA transform."""
        return self.T_scene_from_carla @ T_rh_from_carla_transform(location_xyz, rotation_pyr_deg)

    def carla_from_scene(self, T_scene_from_actor) -> tuple[np.ndarray, np.ndarray]:
        """The CARLA transform (location [m], (pitch, yaw, roll) [deg]) of an actor at ``T_scene_from_actor``."""
        return carla_transform_from_matrix(invert_transform(self.T_scene_from_carla) @ np.asarray(T_scene_from_actor, np.float64))

    def carla_box_from_scene(self, T_scene_from_box, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A scene box (pose of its centre, (length, width, height) [m]) as a CARLA world-frame ``BoundingBox``:
        (location [m], extent = half size [m], rotation (pitch, yaw, roll) [deg])."""
        location, rotation = self.carla_from_scene(T_scene_from_box)
        return location, np.asarray(size, np.float64) / 2.0, rotation

    def vector_to_scene(self, v) -> np.ndarray:
        """A CARLA world vector (..., 3) (e.g. a velocity [m/s]) rotated into the scene frame."""
        return carla_vector_to_rh(v) @ np.asarray(self.T_scene_from_carla)[:3, :3].T


def box_in_actor(location_xyz, extent_xyz, rotation_pyr_deg=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A CARLA ``bounding_box`` (relative to its actor) -> (``T_actor_from_box`` (4, 4) in our object frames,
    size (3,) = (length, width, height) [m]). ``extent`` is CARLA's half size."""
    extent = _vec3(extent_xyz, "extent_xyz")
    if np.any(extent < 0):
        raise ValidationError(f"extent_xyz: must be >= 0, got {extent.tolist()}")
    return T_rh_from_carla_transform(location_xyz, rotation_pyr_deg), 2.0 * extent
