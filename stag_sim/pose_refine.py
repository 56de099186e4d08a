"""Refine a log's poses where its LiDAR sweeps overlap: point-to-plane ICP of each sweep against its neighbours.

A log's ego poses (GPS/IMU, odometry) can disagree with its own sensors by centimetres and tenths of a degree; a 4D
scene fused from many frames then doubles every edge. :func:`refine_poses` aligns each LiDAR sweep (moving objects'
boxes cut out) to the sweeps of the ``window`` frames on either side of it, placed with their current poses, by
point-to-plane ICP, a few passes over the log (each pass aligns every sweep to its neighbours as the previous pass
left them). The correction of each sweep is a world-frame rigid transform ``C`` (``T_refined = C @ T_logged``); every
pose of that instant moves with it: the ego and camera poses of the frames nearest in time, and the tracked boxes
(they were measured from the ego). A correction larger than ``max_shift_m`` / ``max_angle_deg``, or one that does not
lower the residual, is not applied (the ICP fell into a wrong minimum, or the scene has no structure to align on).

Needs LiDAR (a camera-only log is returned unchanged, with a note). Only relative consistency is restored: the
trajectory as a whole stays where the log put it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from stag_sim.scene_log import SceneLog

MIN_RANGE_M = 2.0  # [m] returns nearer than this to the sensor (the ego's own body) are not used
MAX_RANGE_M = 60.0  # [m] nor farther ones (sparse, noisy)
NEIGHBOURS = 10  # points in the plane fit of a reference normal


@dataclass(frozen=True)
class PoseRefinement:
    """What :func:`refine_poses` did.

    Attributes:
        corrections: (S, 4, 4) world-frame correction of each LiDAR sweep (identity where not applied).
        applied: (S,) bool, the correction was applied.
        residual_before, residual_after: (S,) median point-to-plane distance to the neighbours [m] (NaN without
            neighbours).
        shift_m: (S,) translation of each correction [m]; angle_deg: (S,) its rotation [deg].
        note: why nothing was done, or "".
    """

    corrections: np.ndarray
    applied: np.ndarray
    residual_before: np.ndarray
    residual_after: np.ndarray
    shift_m: np.ndarray
    angle_deg: np.ndarray
    note: str = ""

    def summary(self) -> str:
        if self.note:
            return self.note
        ok = np.isfinite(self.residual_before)
        if not ok.any():
            return f"0 of {len(self.applied)} sweeps corrected: none had enough static returns overlapping its neighbours"
        return (f"{int(self.applied.sum())} of {len(self.applied)} sweeps corrected (median shift "
                f"{np.median(self.shift_m[self.applied]) * 100 if self.applied.any() else 0.0:.1f} cm, "
                f"{np.median(self.angle_deg[self.applied]) if self.applied.any() else 0.0:.2f} deg); median "
                f"point-to-plane residual {np.median(self.residual_before[ok]) * 100:.1f} -> "
                f"{np.median(self.residual_after[ok]) * 100:.1f} cm")


def _static_points(log: SceneLog, s: int, max_points: int, rng) -> np.ndarray:
    """(N, 3) sweep ``s`` in the ego frame of its capture: within range, outside every tracked box of the nearest
    frame, at most ``max_points`` (random subset)."""
    lid = log.lidar
    p = lid.sweep(s)[:, :3].astype(np.float64)
    r = np.linalg.norm(p, axis=1)
    p = p[(r > MIN_RANGE_M) & (r < MAX_RANGE_M)] @ lid.T_ego_from_lidar[:3, :3].T + lid.T_ego_from_lidar[:3, 3]
    t = int(np.argmin(np.abs(log.timestamps_us - lid.timestamps_us[s])))
    if len(log.objects):
        world = p @ lid.ego_poses[s][:3, :3].T + lid.ego_poses[s][:3, 3]
        keep = np.ones(len(p), bool)
        half = np.asarray(log.objects.sizes, np.float64) / 2 + 0.3
        for k in np.flatnonzero(log.objects.valid[t]):
            T = log.objects.poses[t, k]
            q = (world - T[:3, 3]) @ T[:3, :3]
            keep &= ~np.all(np.abs(q) <= half[k], axis=1)
        p = p[keep]
    if len(p) > max_points:
        p = p[rng.choice(len(p), max_points, replace=False)]
    return p


def _normals(points: np.ndarray, tree) -> np.ndarray:
    """(N, 3) unit normals of ``points`` (N, 3) from the plane through their :data:`NEIGHBOURS` nearest points."""
    _, idx = tree.query(points, k=NEIGHBOURS)
    nb = points[idx] - points[idx].mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vec = np.linalg.eigh(cov)
    return vec[:, :, 0]


def _icp(src: np.ndarray, ref: np.ndarray, normals: np.ndarray, tree, T0: np.ndarray, iterations: int,
         max_distance: float) -> tuple[np.ndarray, float, float]:
    """Point-to-plane ICP of ``src`` (N, 3, ego frame) placed by ``T0`` (4, 4) onto ``ref`` (M, 3, world) with
    ``normals`` (M, 3): (T (4, 4), median residual before, after) [m]."""
    from scipy.spatial.transform import Rotation

    T = T0.copy()
    before = after = np.nan
    for it in range(iterations):
        w = src @ T[:3, :3].T + T[:3, 3]
        dist, idx = tree.query(w, distance_upper_bound=max_distance)
        ok = np.isfinite(dist)
        if ok.sum() < 50:
            break
        n, q, p = normals[idx[ok]], ref[idx[ok]], w[ok]
        res = np.einsum("ij,ij->i", p - q, n)
        if it == 0:
            before = float(np.median(np.abs(res)))
        # robust weights (Huber-like), then the linearised 6-DoF step: minimise sum w (n . (p + a x p + t - q))^2
        scale = max(1.4826 * np.median(np.abs(res)), 0.01)
        wgt = 1.0 / np.maximum(1.0, np.abs(res) / (2.0 * scale))
        A = np.c_[np.cross(p, n), n]
        x = np.linalg.lstsq(A * wgt[:, None] ** 0.5, -res * wgt ** 0.5, rcond=None)[0]
        D = np.eye(4)
        D[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
        D[:3, 3] = x[3:]
        T = D @ T
        max_distance = max(0.3, max_distance * 0.7)
        if np.linalg.norm(x[:3]) < 1e-5 and np.linalg.norm(x[3:]) < 1e-4:
            break
    w = src @ T[:3, :3].T + T[:3, 3]
    dist, idx = tree.query(w, distance_upper_bound=max_distance)
    ok = np.isfinite(dist)
    if ok.any():
        after = float(np.median(np.abs(np.einsum("ij,ij->i", w[ok] - ref[idx[ok]], normals[idx[ok]]))))
    return T, before, after


def refine_poses(log: SceneLog, window: int = 2, passes: int = 3, iterations: int = 20, max_points: int = 15_000,
                 max_distance_m: float = 1.0, max_shift_m: float = 0.5, max_angle_deg: float = 3.0,
                 seed: int = 0, progress: bool = False) -> tuple[SceneLog, PoseRefinement]:
    """The log with its poses refined against its own LiDAR (see the module docstring), and what was done.

    Args:
        log: any scene log with LiDAR sweeps.
        window: neighbours on each side a sweep is aligned to [sweeps].
        passes: rounds over the log; iterations: ICP steps per sweep and pass.
        max_points: returns per sweep used (random subset; the reference keeps the same per neighbour).
        max_distance_m: first correspondence distance [m] (shrinks to 0.3 m).
        max_shift_m, max_angle_deg: larger corrections are not applied (ICP failure).
    """
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation
    from tqdm import tqdm

    lid = log.lidar
    S = 0 if lid is None else len(lid)
    eye = np.tile(np.eye(4), (S, 1, 1))
    nan = np.full(S, np.nan)
    if S < 2:
        note = "no LiDAR: poses left as logged" if lid is None else "one LiDAR sweep: nothing to align it to"
        return log, PoseRefinement(eye, np.zeros(S, bool), nan, nan, np.zeros(S), np.zeros(S), note)
    rng = np.random.default_rng(seed)
    pts = [_static_points(log, s, max_points, rng) for s in range(S)]
    logged = np.asarray(lid.ego_poses, np.float64)
    poses = logged.copy()
    before, after = nan.copy(), nan.copy()
    bar = tqdm(total=passes * S, desc=f"refine poses {log.name}", unit="sweep", disable=not progress)
    for k in range(passes):
        new = poses.copy()
        for s in range(S):
            nb = [o for o in range(max(0, s - window), min(S, s + window + 1)) if o != s and len(pts[o])]
            bar.update()
            if not nb or len(pts[s]) < 100:
                continue
            ref = np.concatenate([pts[o] @ poses[o][:3, :3].T + poses[o][:3, 3] for o in nb])
            tree = cKDTree(ref)
            T, b, a = _icp(pts[s], ref, _normals(ref, tree), tree, poses[s], iterations, max_distance_m)
            C = T @ np.linalg.inv(logged[s])
            shift = np.linalg.norm(C[:3, 3] + (C[:3, :3] - np.eye(3)) @ logged[s][:3, 3])
            angle = np.degrees(np.linalg.norm(Rotation.from_matrix(C[:3, :3]).as_rotvec()))
            if np.isfinite(a) and np.isfinite(b) and a <= b and shift <= max_shift_m and angle <= max_angle_deg:
                new[s] = T
            if k == 0:
                before[s] = b
            after[s] = min(a, b) if np.isfinite(a) else b
        poses = new
    bar.close()
    corrections = poses @ np.linalg.inv(logged)
    applied = ~np.all(np.isclose(corrections, np.eye(4), atol=1e-9), axis=(1, 2))
    shift = np.linalg.norm(poses[:, :3, 3] - logged[:, :3, 3], axis=1)
    angle = np.degrees(np.linalg.norm(Rotation.from_matrix(corrections[:, :3, :3]).as_rotvec(), axis=1))
    report = PoseRefinement(corrections, applied, before, after, shift, angle)
    return apply_corrections(log, corrections), report


def apply_corrections(log: SceneLog, corrections: np.ndarray) -> SceneLog:
    """``log`` with world-frame corrections (S, 4, 4) of its LiDAR sweeps applied to every pose of the same instant
    (each frame, camera image and tracked box takes the correction of the sweep nearest in time)."""
    lid = log.lidar
    ts = np.asarray(lid.timestamps_us)
    near = lambda t_us: np.abs(ts[None, :] - np.asarray(t_us).reshape(-1, 1)).argmin(axis=1)  # noqa: E731
    C_frame = corrections[near(log.timestamps_us)]
    C_cam = corrections[near(log.camera_timestamps_us)].reshape(log.camera_ego_poses.shape)
    objects = log.objects
    if len(objects):
        poses = np.einsum("tij,tkjl->tkil", C_frame, objects.poses)
        poses[~objects.valid] = np.eye(4)
        objects = dataclasses.replace(objects, poses=poses)
    lidar = dataclasses.replace(lid, ego_poses=corrections @ lid.ego_poses)
    meta = {**log.metadata, "poses_refined": True}
    return dataclasses.replace(log, ego_poses=C_frame @ log.ego_poses, camera_ego_poses=C_cam @ log.camera_ego_poses,
                               objects=objects, lidar=lidar, metadata=meta)


def with_pose_noise(log: SceneLog, sigma_m: float, sigma_deg: float, seed: int = 1) -> SceneLog:
    """``log`` with a random rigid error per LiDAR sweep instant (each sweep's ego frame moved by N(0, ``sigma_m``)
    [m] per axis and rotated by about N(0, ``sigma_deg``) [deg] per axis), applied to every pose of that instant as a
    bad GPS/IMU pose would (:func:`apply_corrections`): the benchmark's and tests' noisy logs."""
    from stag_sim.geometry import make_transform, quat_to_matrix

    rng = np.random.default_rng(seed)
    C = []
    for T in log.lidar.ego_poses:
        half = np.radians(sigma_deg) * rng.standard_normal(3) / 2
        q = np.r_[1.0, half] / np.linalg.norm(np.r_[1.0, half])
        C.append(T @ make_transform(quat_to_matrix(q), sigma_m * rng.standard_normal(3)) @ np.linalg.inv(T))
    return apply_corrections(log, np.array(C))
