"""Ego vehicle dynamics: a kinematic bicycle about the rear axle, and its inverse (expert actions from a log).

The ego frame's origin is the rear-axle centre (nuScenes ego_pose convention), which is exactly the reference
point of the rear-axle kinematic bicycle, so no offset is needed between the pose and the model state.

State update over ``dt`` with acceleration ``a`` and front-wheel steering angle ``delta`` held constant (zero-order
hold, exact arc integration — a constant steering angle traces a circle of radius ``wheelbase / tan(delta)``)::

    v'   = clip(v + a dt, 0, v_max)
    s    = distance travelled in dt (speed never goes negative: braking stops the car, it does not reverse)
    yaw' = yaw + s tan(delta) / wheelbase
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_finite, check_positive, yaw_of


@dataclass(frozen=True)
class VehicleParameters:
    """Ego vehicle geometry and limits. Defaults: the nuPlan ego (Chrysler Pacifica).

    Attributes:
        wheelbase: rear to front axle [m].
        width: body width [m].
        front_length: rear axle to front bumper [m].
        rear_length: rear axle to rear bumper [m].
        height: body height [m].
        max_accel: largest forward acceleration [m/s^2].
        max_decel: largest braking deceleration, positive [m/s^2].
        max_steer: largest front-wheel steering angle [rad].
        max_speed: speed cap [m/s].
    """

    wheelbase: float = 3.089  # [m]
    width: float = 2.297  # [m]
    front_length: float = 4.049  # [m]
    rear_length: float = 1.127  # [m]
    height: float = 1.777  # [m]
    max_accel: float = 3.0  # [m/s^2]
    max_decel: float = 8.0  # [m/s^2]
    max_steer: float = 0.6  # [rad]
    max_speed: float = 30.0  # [m/s]

    def validate(self) -> "VehicleParameters":
        check_positive(self, self.__dataclass_fields__)
        if self.max_steer >= np.pi / 2:
            raise ValidationError(f"VehicleParameters.max_steer: must be < pi/2 rad, got {self.max_steer}")
        return self

    @property
    def length(self) -> float:
        """Bumper to bumper [m]."""
        return self.front_length + self.rear_length

    @property
    def centre_offset(self) -> float:
        """Distance from the rear axle forward to the box centre [m]."""
        return (self.front_length - self.rear_length) / 2.0


@dataclass(frozen=True)
class EgoState:
    """Planar ego state at the rear axle.

    Attributes:
        x, y: position in the world frame [m].
        yaw: heading [rad].
        speed: forward speed, >= 0 [m/s].
        accel: longitudinal acceleration applied over the last step [m/s^2].
        steer: front-wheel steering angle [rad].
        yaw_rate: heading rate over the last step [rad/s].
    """

    x: float
    y: float
    yaw: float
    speed: float
    accel: float = 0.0
    steer: float = 0.0
    yaw_rate: float = 0.0

    def validate(self) -> "EgoState":
        check_finite(np.array([self.x, self.y, self.yaw, self.speed, self.accel, self.steer, self.yaw_rate]), "EgoState")
        if self.speed < 0:
            raise ValidationError(f"EgoState.speed: must be >= 0 m/s, got {self.speed}")
        return self

    def pose(self, z: float = 0.0) -> np.ndarray:
        """(4, 4) ``T_world_from_ego`` (planar: roll and pitch 0); the same numbers as
        :func:`~stag_sim.geometry.pose_xy_yaw` (rotation from the normalised half-angle quaternion), without its
        array machinery (a step builds several)."""
        qw, qz = math.cos(self.yaw / 2.0), math.sin(self.yaw / 2.0)
        n = math.sqrt(qw * qw + qz * qz)
        qw, qz = qw / n, qz / n
        c, s = 1.0 - 2.0 * (qz * qz), 2.0 * (qz * qw)
        return np.array([[c, -s, 0.0, self.x], [s, c, 0.0, self.y], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])

    @classmethod
    def from_pose(cls, T_world_from_ego, speed: float = 0.0) -> "EgoState":
        T = np.asarray(T_world_from_ego, dtype=np.float64)
        return cls(float(T[0, 3]), float(T[1, 3]), float(yaw_of(T)), float(speed))


def wrap_angle(a):
    """Wrap angle(s) [rad] to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def bicycle_step(state: EgoState, accel: float, steer: float, dt: float, params: VehicleParameters) -> EgoState:
    """Advance ``state`` by ``dt`` [s] with acceleration ``accel`` [m/s^2] and steering ``steer`` [rad] held.

    Inputs are clipped to the vehicle's limits. Exact for constant inputs (arc integration).
    """
    a = min(max(float(accel), -params.max_decel), params.max_accel)
    delta = min(max(float(steer), -params.max_steer), params.max_steer)
    v0 = state.speed
    v1 = v0 + a * dt
    if v1 < 0.0:  # stops within the step: travel until v = 0
        s = v0 * v0 / (2.0 * -a) if a < 0 else 0.0
        v1 = 0.0
    elif v1 > params.max_speed:
        v1 = params.max_speed
        s = (v0 + v1) / 2.0 * dt
    else:
        s = (v0 + v1) / 2.0 * dt
    curvature = np.tan(delta) / params.wheelbase  # [1/m]
    dyaw = s * curvature
    if abs(dyaw) > 1e-9:
        r = 1.0 / curvature
        x = state.x + r * (np.sin(state.yaw + dyaw) - np.sin(state.yaw))
        y = state.y - r * (np.cos(state.yaw + dyaw) - np.cos(state.yaw))
    else:
        x = state.x + s * np.cos(state.yaw)
        y = state.y + s * np.sin(state.yaw)
    return EgoState(float(x), float(y), float(wrap_angle(state.yaw + dyaw)), float(v1),
                    accel=(v1 - v0) / dt, steer=delta, yaw_rate=dyaw / dt)


def expert_action(state: EgoState, T_world_from_target, dt: float, params: VehicleParameters) -> tuple[float, float]:
    """The (accel [m/s^2], steer [rad]) that carry ``state`` onto the target pose's position in one step of ``dt``.

    Geometry of the exact arc model: an arc leaving the current heading reaches the target point (dx, dy) in the
    ego frame with curvature ``2 dy / (dx^2 + dy^2)``; the acceleration then makes the distance travelled in
    ``dt`` equal that arc length. Targets behind the car give a stop. Returned values are not clipped.
    """
    T = np.asarray(T_world_from_target, dtype=np.float64)
    c, s_ = np.cos(state.yaw), np.sin(state.yaw)
    gx, gy = T[0, 3] - state.x, T[1, 3] - state.y
    dx, dy = c * gx + s_ * gy, -s_ * gx + c * gy
    d2 = dx * dx + dy * dy
    if dx <= 1e-6 or d2 < 1e-10:  # target behind or on top of us: brake to a stop
        return (-state.speed / dt, 0.0)
    curvature = 2.0 * dy / d2
    theta = 2.0 * np.arctan2(dy, dx)  # heading change along the arc
    half = abs(theta) / 2.0
    arc = np.sqrt(d2) * (half / np.sin(half) if half > 1e-9 else 1.0)
    accel = 2.0 * (arc - state.speed * dt) / (dt * dt)
    return float(accel), float(np.arctan(curvature * params.wheelbase))


def inverse_bicycle(poses, dt: float, params: VehicleParameters, initial_speed: float | None = None):
    """Expert actions for a logged trajectory: the actions that make the bicycle follow it.

    Solved in closed loop: at each step :func:`expert_action` aims the simulated state at the next logged pose,
    then :func:`bicycle_step` applies it (with the vehicle's limits), so small errors never accumulate.

    Args:
        poses: (T, 4, 4) ``T_world_from_ego`` at a fixed step ``dt`` [s].
        initial_speed: speed at pose 0 [m/s]; default: estimated from the first two steps.

    Returns:
        accel (T-1,) [m/s^2], steer (T-1,) [rad], and the (T,) simulated :class:`EgoState` trajectory.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) < 2:
        raise ValidationError(f"inverse_bicycle: expected (T>=2, 4, 4) poses, got {poses.shape}")
    check_finite(poses, "inverse_bicycle poses")
    if initial_speed is None:
        step = np.linalg.norm(np.diff(poses[:3, :2, 3], axis=0), axis=1) / dt
        initial_speed = float(1.5 * step[0] - 0.5 * step[1]) if len(step) > 1 else float(step[0])
    state = EgoState.from_pose(poses[0], max(initial_speed, 0.0))
    states, accel, steer = [state], [], []
    for k in range(1, len(poses)):
        a, d = expert_action(state, poses[k], dt, params)
        state = bicycle_step(state, a, d, dt, params)
        accel.append(state.accel)
        steer.append(state.steer)
        states.append(state)
    return np.array(accel), np.array(steer), states
