"""Tiny in-code fixtures for tests and examples (no files, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stag_sim.camera import CAMERA_NAMES, nuscenes_like_rig
from stag_sim.geometry import pose_xy_yaw
from stag_sim.scene_log import FrameStore, LidarSweeps, ObjectTracks, SceneLog, SceneMap


def tiny_scene_log(
    num_frames: int = 3,
    width: int = 32,
    height: int = 18,
    seed: int = 0,
    with_depth: bool = True,
    with_lidar: bool = True,
    with_map: bool = True,
) -> SceneLog:
    """A small but complete SceneLog: ego driving +x at 5 m/s (10 Hz), two tracked cars, random images.

    Images are random (from ``seed``); depth is a flat ground capped by a far plane at 30 m; the log validates.
    """
    from shapely.geometry import LineString, box

    rng = np.random.default_rng(seed)
    T, C = num_frames, len(CAMERA_NAMES)
    ts = 1_600_000_000_000_000 + np.arange(T, dtype=np.int64) * 100_000
    ego = pose_xy_yaw(5.0 * 0.1 * np.arange(T), np.zeros(T), np.zeros(T))
    rig = nuscenes_like_rig(width, height)
    images = FrameStore.from_arrays(
        [[rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(C)] for _ in range(T)], "jpeg"
    )
    depth = None
    if with_depth:
        # flat ground seen from the (level) cameras, capped by a far plane at FAR [m]: smooth, plausible geometry
        maps = []
        for cam in rig:
            i = cam.intrinsics
            v = np.arange(height, dtype=np.float64)[:, None] - i.cy
            height_above_ground = cam.T_ego_from_camera[2, 3]
            ground = np.where(v > 0, height_above_ground * i.fy / np.maximum(v, 1e-9), np.inf)
            maps.append(np.broadcast_to(np.minimum(ground, 30.0), (height, width)).astype(np.float32))
        depth = FrameStore.from_arrays([maps for _ in range(T)], "depth-png16")
    lidar = None
    if with_lidar:
        sweeps = [np.concatenate([rng.uniform(-30, 30, (50, 3)), rng.uniform(0, 255, (50, 1))], 1) for _ in range(T)]
        lidar = LidarSweeps.from_list(sweeps, ts, ego, pose_xy_yaw(0.94, 0.0, 0.0, 1.84))
    poses = np.stack([pose_xy_yaw([10.0 + 0.6 * t, 20.0], [3.5, -3.5], [0.0, np.pi], [0.78, 0.8]) for t in range(T)])
    objects = ObjectTracks(
        ("tiny-car-0", "tiny-car-1"), ("vehicle.car", "vehicle.truck"),
        np.array([[4.5, 1.9, 1.56], [7.0, 2.4, 1.6]]), poses, np.ones((T, 2), bool),
    )
    scene_map = None
    if with_map:
        scene_map = SceneMap(
            drivable_area=box(-20.0, -7.0, 80.0, 7.0),
            lane_ids=("lane-east", "lane-west"),
            lanes=(LineString([(-20.0, -1.75), (80.0, -1.75)]), LineString([(80.0, 1.75), (-20.0, 1.75)])),
            successors=((), ()),
        )
    return SceneLog(
        name=f"tiny-s{seed}", source="test", timestamps_us=ts, ego_poses=ego, rig=rig, images=images,
        camera_timestamps_us=np.repeat(ts[:, None], C, axis=1), camera_ego_poses=np.repeat(ego[:, None], C, axis=1),
        objects=objects, depth=depth, lidar=lidar, map=scene_map, metadata={"seed": seed},
    ).validate()


#: Environment variable naming the folder of the shared real-data samples (``../shared/realdata`` by default).
REALDATA_ENV = "STAG_SIM_REALDATA"


def realdata_path(relative: str) -> Path | None:
    """``<realdata>/<relative>`` where it exists, else None: the shared real samples are looked for beside the
    project checkout (``../shared/realdata``, as CI lays them out), then at ``$STAG_SIM_REALDATA``."""
    roots = [Path(__file__).resolve().parents[2] / "shared" / "realdata"]
    if os.environ.get(REALDATA_ENV):
        roots.append(Path(os.environ[REALDATA_ENV]))
    return next((r / relative for r in roots if (r / relative).exists()), None)
