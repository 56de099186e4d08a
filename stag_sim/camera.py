"""Cameras (pinhole, optionally with OpenCV lens distortion), camera rigs (1 to 12 cameras, any names),
projection and unprojection.

Camera frame is OpenCV: x right, y down, z forward (optical axis). Pixel (u, v): u along image columns,
v along rows, pixel centres at integer coordinates (so the top-left pixel covers [-0.5, 0.5]^2), the same as
OpenCV and nuScenes' ``view_points``.

Distortion (:mod:`stag_sim.distortion`): :func:`project`, :func:`unproject`, :func:`project_world` and
:func:`unproject_depth_map` honour a camera's distortion; :func:`undistort_image` / :func:`distort_image` move images
between a distorted camera and an undistorted pinhole working camera. Code that reads ``intrinsics.K`` (or fx, fy,
cx, cy) directly treats the camera as a pinhole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.distortion import (check_distortion, distort_image, distort_normalized, distort_pixels, pinhole_of,
                                 undistort_image, undistort_normalized, undistort_pixels)
from stag_sim.errors import ValidationError
from stag_sim.geometry import check_finite, check_transform, invert_transform, make_transform, rot_z

#: The nuScenes rig's camera names, in nuScenes order. Only nuScenes ingestion and the synthetic town use them;
#: everything else follows the rig of the scene it is given (any names, 1 to :data:`MAX_CAMERAS` cameras).
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)

#: Rotation taking OpenCV camera axes to ego axes for a camera looking along ego +x:
#: camera z (forward) -> ego x, camera x (right) -> ego -y, camera y (down) -> ego -z.
R_EGO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

MAX_CAMERAS = 12  # [-] cameras per rig
MIN_DEPTH = 1e-3  # [m] points closer than this to the image plane are treated as behind the camera

__all__ = ["CAMERA_NAMES", "MAX_CAMERAS", "MIN_DEPTH", "R_EGO_FROM_OPENCV", "Camera", "CameraIntrinsics", "CameraRig",
           "camera_extrinsics", "distort_image", "distort_pixels", "in_image", "nuscenes_like_rig", "pixel_grid",
           "project", "project_world", "undistort_image", "undistort_pixels", "unproject", "unproject_depth_map"]


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics, optionally with OpenCV lens distortion (nuScenes images are undistorted).

    Attributes:
        fx, fy: focal lengths [px].
        cx, cy: principal point [px], pixel-centre convention.
        width, height: image size [px].
        model: ``"pinhole"`` (OpenCV radial-tangential distortion, or none) or ``"fisheye"`` (OpenCV fisheye,
            equidistant).
        distortion: tuple of float coefficients [-] on normalised coordinates (resolution-independent):
            ``()`` = undistorted pinhole; ``(k1, k2, p1, p2, k3)`` for ``"pinhole"`` (as ``cv2.projectPoints``);
            ``(k1, k2, k3, k4)`` for ``"fisheye"`` (as ``cv2.fisheye.projectPoints``). A list or array is stored as
            a tuple, and an all-zero pinhole distortion as ``()``, so equal cameras compare and hash equal.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    model: str = "pinhole"
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        d = self.distortion
        if isinstance(d, tuple) and not d:
            return
        try:
            d = tuple(float(x) for x in np.asarray(d, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise ValidationError(f"CameraIntrinsics.distortion: expected a sequence of numbers, got {d!r}") from None
        if self.model == "pinhole" and not any(d):
            d = ()
        object.__setattr__(self, "distortion", d)

    def validate(self) -> "CameraIntrinsics":
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        check_finite(vals, "CameraIntrinsics (fx, fy, cx, cy)")
        if self.fx <= 0 or self.fy <= 0:
            raise ValidationError(f"CameraIntrinsics: focal lengths must be > 0 px, got fx={self.fx}, fy={self.fy}")
        if int(self.width) != self.width or int(self.height) != self.height or self.width <= 0 or self.height <= 0:
            raise ValidationError(f"CameraIntrinsics: width/height must be positive ints, got {self.width}x{self.height}")
        check_distortion(self.model, self.distortion)
        return self

    @property
    def distorted(self) -> bool:
        """True when pixels are not those of an ideal pinhole (any distortion, or the fisheye model)."""
        return bool(self.distortion) or self.model != "pinhole"

    def undistorted(self) -> "CameraIntrinsics":
        """The ideal pinhole camera with the same K and size (the default working camera of :func:`undistort_image`)."""
        return pinhole_of(self)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov(self) -> float:
        """Horizontal field of view [rad] of the pinhole with this K (distortion not counted)."""
        return float(2.0 * np.arctan(self.width / (2.0 * self.fx)))

    @classmethod
    def from_K(cls, K, width: int, height: int, model: str = "pinhole", distortion=()) -> "CameraIntrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValidationError(f"camera matrix K: expected shape (3, 3), got {K.shape}")
        if abs(K[0, 1]) > 1e-9:
            raise ValidationError(f"camera matrix K: skew must be 0, got {K[0, 1]}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height), model,
                   distortion)

    @classmethod
    def from_hfov(cls, hfov: float, width: int, height: int) -> "CameraIntrinsics":
        """Square-pixel camera with horizontal field of view ``hfov`` [rad], principal point at the centre."""
        f = width / (2.0 * np.tan(hfov / 2.0))
        return cls(float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution (pixel-centre convention preserved; the distortion, defined on
        normalised coordinates, is kept)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, int(width), int(height),
            self.model, self.distortion,
        )


@dataclass(frozen=True, eq=False)
class Camera:
    """One calibrated camera of the rig.

    Attributes:
        name: the dataset's own camera name (``CAM_FRONT``, ``CAMERA_01``, ``ring_front_center`` ...).
        intrinsics: pinhole intrinsics, optionally with lens distortion.
        T_ego_from_camera: (4, 4) float64 extrinsics, OpenCV camera frame -> ego frame [m].
        ego_mask: optional (height, width) bool at the intrinsics' resolution, True where the camera sees the
            ego's own body (hood, mirrors, roof). Static in the camera frame: such pixels are never turned into
            scene points, and renderers composite them back from the logged image.
    """

    name: str
    intrinsics: CameraIntrinsics
    T_ego_from_camera: np.ndarray
    ego_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "T_ego_from_camera", np.asarray(self.T_ego_from_camera, dtype=np.float64))
        if self.ego_mask is not None:
            object.__setattr__(self, "ego_mask", np.asarray(self.ego_mask, dtype=bool))

    def validate(self) -> "Camera":
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValidationError(f"Camera.name: expected a non-empty name without surrounding spaces, got {self.name!r}")
        self.intrinsics.validate()
        if self.T_ego_from_camera.shape != (4, 4):
            raise ValidationError(f"Camera {self.name}: T_ego_from_camera must be (4, 4), got {self.T_ego_from_camera.shape}")
        check_transform(self.T_ego_from_camera, f"Camera {self.name}.T_ego_from_camera")
        if self.ego_mask is not None and self.ego_mask.shape != (self.intrinsics.height, self.intrinsics.width):
            raise ValidationError(f"Camera {self.name}.ego_mask: expected ({self.intrinsics.height}, {self.intrinsics.width}) "
                                  f"to match the intrinsics, got {self.ego_mask.shape}")
        return self

    @property
    def azimuth(self) -> float:
        """Heading of the optical axis in the ego frame [rad] (0 = forward, +pi/2 = left)."""
        axis = self.T_ego_from_camera[:3, 2]
        return float(np.arctan2(axis[1], axis[0]))

    def with_resolution(self, width: int, height: int) -> "Camera":
        """The same camera at another image size (intrinsics scaled, ego mask resized by nearest neighbour)."""
        mask = None
        if self.ego_mask is not None:
            import cv2

            mask = cv2.resize(self.ego_mask.astype(np.uint8), (int(width), int(height)), interpolation=cv2.INTER_NEAREST) > 0
        return Camera(self.name, self.intrinsics.scaled(width, height), self.T_ego_from_camera, mask)

    def with_ego_mask(self, mask) -> "Camera":
        return Camera(self.name, self.intrinsics, self.T_ego_from_camera, mask)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Camera)
            and self.name == other.name
            and self.intrinsics == other.intrinsics
            and np.array_equal(self.T_ego_from_camera, other.T_ego_from_camera)
            and (self.ego_mask is None) == (other.ego_mask is None)
            and (self.ego_mask is None or np.array_equal(self.ego_mask, other.ego_mask))
        )


@dataclass(frozen=True)
class CameraRig:
    """A rig of 1 to :data:`MAX_CAMERAS` calibrated cameras, with the dataset's own names, in the dataset's order.

    Attributes:
        cameras: tuple of :class:`Camera`, unique names.
    """

    cameras: tuple[Camera, ...]

    def validate(self) -> "CameraRig":
        names = [c.name for c in self.cameras]
        if not 1 <= len(names) <= MAX_CAMERAS:
            raise ValidationError(f"CameraRig: a rig has 1 to {MAX_CAMERAS} cameras, got {len(names)}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValidationError(f"CameraRig: duplicate camera name(s) {', '.join(map(repr, dup))}; every camera needs its own name")
        for c in self.cameras:
            c.validate()
        return self

    def __len__(self) -> int:
        return len(self.cameras)

    def __iter__(self):
        return iter(self.cameras)

    def __getitem__(self, key: int | str) -> Camera:
        if isinstance(key, str):
            return self.cameras[self.index(key)]
        return self.cameras[key]

    def index(self, name: str) -> int:
        """Position of the camera called ``name``; :class:`ValidationError` naming the rig's cameras otherwise."""
        for i, c in enumerate(self.cameras):
            if c.name == name:
                return i
        raise ValidationError(f"no camera named {name!r} in the rig (have {', '.join(c.name for c in self.cameras)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def azimuths(self) -> np.ndarray:
        """(C,) float64 optical-axis headings in the ego frame [rad] (0 = forward, +pi/2 = left)."""
        return np.array([c.azimuth for c in self.cameras], np.float64)

    @property
    def T_ego_from_cameras(self) -> np.ndarray:
        """(C, 4, 4) extrinsics of all cameras."""
        return np.stack([c.T_ego_from_camera for c in self.cameras])

    def T_world_from_cameras(self, T_world_from_ego) -> np.ndarray:
        """Camera poses (..., C, 4, 4) for ego pose(s) ``T_world_from_ego`` (..., 4, 4): the rig moves rigidly."""
        T = np.asarray(T_world_from_ego, dtype=np.float64)
        return T[..., None, :, :] @ self.T_ego_from_cameras

    def with_resolution(self, width: int, height: int) -> "CameraRig":
        return CameraRig(tuple(c.with_resolution(width, height) for c in self.cameras))

    def translated(self, offset) -> "CameraRig":
        """The rig with every camera moved by ``offset`` = (x, y, z) [m] in the ego frame (y left)."""
        off = np.asarray(offset, np.float64).reshape(3)
        cams = []
        for c in self.cameras:
            T = c.T_ego_from_camera.copy()
            T[:3, 3] += off
            cams.append(Camera(c.name, c.intrinsics, T, c.ego_mask))
        return CameraRig(tuple(cams))

    def subset(self, names) -> "CameraRig":
        """The cameras called ``names``, in rig order."""
        idx = sorted(self.index(n) for n in names)
        return CameraRig(tuple(self.cameras[i] for i in idx))


def camera_extrinsics(x: float, y: float, z: float, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """``T_ego_from_camera`` for a camera at (x, y, z) [m] in the ego frame, looking at heading ``yaw`` [rad]
    (0 = forward, +pi/2 = left) and tilted down by ``pitch`` [rad]."""
    # Tilt down = rotation about the camera x axis (right) by -pitch in OpenCV axes.
    c, s = np.cos(pitch), np.sin(pitch)
    R_tilt = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    R = rot_z(yaw) @ R_EGO_FROM_OPENCV @ R_tilt.T
    return make_transform(R, [x, y, z])


# (x, y, z) [m], yaw [deg], horizontal FOV [deg]: close to the nuScenes rig, with the FOVs asked by the design.
_NUSCENES_LIKE = {
    "CAM_FRONT": (1.70, 0.00, 1.51, 0.0, 70.0),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.49, -55.0, 70.0),
    "CAM_BACK_RIGHT": (1.05, -0.48, 1.59, -110.0, 70.0),
    "CAM_BACK": (0.03, 0.00, 1.57, 180.0, 110.0),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.56, 110.0, 70.0),
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 70.0),
}


def nuscenes_like_rig(width: int = 400, height: int = 224) -> CameraRig:
    """A six-camera rig with nuScenes-like extrinsics: ~70 deg horizontal FOV, CAM_BACK ~110 deg."""
    cams = []
    for name in CAMERA_NAMES:
        x, y, z, yaw_deg, fov_deg = _NUSCENES_LIKE[name]
        cams.append(
            Camera(name, CameraIntrinsics.from_hfov(np.radians(fov_deg), width, height), camera_extrinsics(x, y, z, np.radians(yaw_deg)))
        )
    return CameraRig(tuple(cams)).validate()


def project(points_cam, intrinsics: CameraIntrinsics | np.ndarray):
    """Project (N, 3) camera-frame points [m] to pixels (through the lens distortion when the intrinsics have one;
    a bare (3, 3) K is a pinhole).

    Returns:
        uv: (N, 2) float64 pixel coordinates (u = column, v = row).
        depth: (N,) float64 z in the camera frame [m] (the z-buffer value, not the ray length).
        in_front: (N,) bool, depth > MIN_DEPTH and, with distortion, inside the lens model's valid radius
            (uv is meaningless where False).
    """
    K = intrinsics.K if isinstance(intrinsics, CameraIntrinsics) else np.asarray(intrinsics, dtype=np.float64)
    p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    z = p[:, 2]
    in_front = z > MIN_DEPTH
    zs = np.where(in_front, z, 1.0)
    if isinstance(intrinsics, CameraIntrinsics) and intrinsics.distorted:
        xy, valid = distort_normalized(p[:, :2] / zs[:, None], intrinsics.model, intrinsics.distortion)
        uv = np.stack([K[0, 0] * xy[:, 0] + K[0, 2], K[1, 1] * xy[:, 1] + K[1, 2]], axis=1)
        return uv, z, in_front & valid
    uv = np.stack([K[0, 0] * p[:, 0] / zs + K[0, 2], K[1, 1] * p[:, 1] / zs + K[1, 2]], axis=1)
    return uv, z, in_front


def unproject(uv, depth, intrinsics: CameraIntrinsics | np.ndarray) -> np.ndarray:
    """Inverse of :func:`project`: pixels (N, 2) and z-depth (N,) [m] -> (N, 3) camera-frame points.

    With distortion, rows whose pixel has no preimage inside the lens model's valid radius are NaN."""
    K = intrinsics.K if isinstance(intrinsics, CameraIntrinsics) else np.asarray(intrinsics, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    d = np.asarray(depth, dtype=np.float64).reshape(-1)
    if isinstance(intrinsics, CameraIntrinsics) and intrinsics.distorted:
        xy_d = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1]], axis=1)
        xy = undistort_normalized(xy_d, intrinsics.model, intrinsics.distortion)
        return np.stack([xy[:, 0] * d, xy[:, 1] * d, np.where(np.isnan(xy[:, 0]), np.nan, d)], axis=1)
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * d
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * d
    return np.stack([x, y, d], axis=1)


def in_image(uv, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N,) bool: pixel coordinates fall inside the image (pixel-centre convention)."""
    uv = np.asarray(uv)
    return (uv[:, 0] >= -0.5) & (uv[:, 0] < intrinsics.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < intrinsics.height - 0.5)


def project_world(points_world, T_world_from_camera, intrinsics: CameraIntrinsics):
    """Project world points (N, 3) into a camera at ``T_world_from_camera``.

    Returns ``uv`` (N, 2), ``depth`` (N,) [m] and ``visible`` (N,) bool (in front and inside the image).
    """
    T_cam_from_world = invert_transform(T_world_from_camera)
    p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3) @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3]
    uv, depth, in_front = project(p, intrinsics)
    return uv, depth, in_front & in_image(uv, intrinsics)


def pixel_grid(width: int, height: int) -> np.ndarray:
    """(H*W, 2) float64 pixel centres (u, v), row-major (v outer)."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)


def unproject_depth_map(depth, intrinsics: CameraIntrinsics):
    """Unproject a (H, W) z-depth map [m] (0 or non-finite = no return).

    Returns ``points_cam`` (M, 3) float64 and ``pixel_index`` (M,) int64 flat row-major indices of the valid pixels
    (with distortion, pixels without a preimage inside the lens model's valid radius are left out too).
    """
    depth = np.asarray(depth)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValidationError(
            f"depth map: expected shape ({intrinsics.height}, {intrinsics.width}) to match the intrinsics, got {depth.shape}"
        )
    flat = depth.reshape(-1).astype(np.float64)
    idx = np.flatnonzero(np.isfinite(flat) & (flat > 0))
    uv = np.stack([idx % intrinsics.width, idx // intrinsics.width], axis=1).astype(np.float64)
    points = unproject(uv, flat[idx], intrinsics)
    if intrinsics.distorted:
        ok = np.isfinite(points).all(axis=1)
        points, idx = points[ok], idx[ok]
    return points, idx
