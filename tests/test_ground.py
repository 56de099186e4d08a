"""The ground model: the planar ego state lifted into a log's 3D frame (``stag_sim.ground``).

On the real DGP sample (origin 12.7 m above the road), the env's cameras must sit exactly where the log put them at
a logged frame; on the planar synthetic town nothing changes (no model). A tiny tilted log checks the plane and the
LiDAR grid away from the logged path.
"""

import numpy as np
import pytest

from stag_sim.geometry import yaw_of
from stag_sim.ground import GroundGrid, GroundModel
from stag_sim.testing import realdata_path

DGP = realdata_path("dgp_test_scene/scene_02")


def test_planar_log_has_no_ground_model(tiny_log):
    assert GroundModel.from_log(tiny_log) is None


def _tilted(tiny_log, slope=0.05, z0=-3.0):
    """``tiny_log`` with its ego on a road rising ``slope`` along world x, origin ``z0`` below."""
    import dataclasses

    ego = np.array(tiny_log.ego_poses, dtype=np.float64)
    pitch = np.arctan(slope)
    c, s = np.cos(pitch), np.sin(pitch)
    R_pitch = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # rotate about y: x axis rises
    for T in ego:
        T[2, 3] = z0 + slope * T[0, 3]
        T[:3, :3] = R_pitch @ T[:3, :3]
    return dataclasses.replace(tiny_log, ego_poses=ego)


def test_logged_positions_get_the_logged_pose(tiny_log):
    log = _tilted(tiny_log)
    ground = GroundModel.from_log(log)
    assert ground is not None
    for T in log.ego_poses:
        x, y, yaw = T[0, 3], T[1, 3], float(yaw_of(T))
        P = ground.pose(x, y, yaw)
        np.testing.assert_allclose(P[:3, 3], T[:3, 3], atol=1e-6)
        np.testing.assert_allclose(P[:3, :3], T[:3, :3], atol=1e-6)
        np.testing.assert_allclose(P[:3, :3] @ P[:3, :3].T, np.eye(3), atol=1e-9)


def test_beside_the_path_the_height_follows_the_logged_plane(tiny_log):
    log = _tilted(tiny_log, slope=0.05)
    ground = GroundModel.from_log(log)
    T = log.ego_poses[0]
    x, y, yaw = T[0, 3], T[1, 3], float(yaw_of(T))
    # 2 m to the side of a road that rises along x only: same height; 2 m further along x: 0.1 m higher
    z_side = ground.pose(x - 2.0 * np.sin(yaw), y + 2.0 * np.cos(yaw), yaw)[2, 3]
    assert abs(z_side - (-3.0 + 0.05 * (x - 2.0 * np.sin(yaw)))) < 1e-6


def test_grid_takes_the_low_returns_per_cell():
    # 3 cells of returns: ground at z=-2 plus poles up to +3 m; the 10th percentile sits on the ground
    rng = np.random.default_rng(0)
    pts = []
    for cx in (0.5, 1.5, 2.5):
        ground = np.c_[cx + rng.uniform(-0.4, 0.4, 40), rng.uniform(0.1, 0.9, 40), np.full(40, -2.0)]
        pole = np.c_[np.full(4, cx), np.full(4, 0.5), np.linspace(0, 3, 4)]
        pts.append(np.r_[ground, pole])
    pts = np.concatenate(pts)

    class _Lidar:
        points = pts
        ego_poses = np.eye(4)[None]
        T_ego_from_lidar = np.eye(4)

        def __len__(self):
            return 1

        def sweep(self, t):
            return pts

    class _Log:
        lidar = _Lidar()

    grid = GroundGrid.from_lidar(_Log())
    np.testing.assert_allclose(grid.height([[1.5, 0.5]]), [-2.0], atol=1e-9)
    assert np.isnan(grid.height([[40.0, 40.0]])[0])


@pytest.mark.skipif(DGP is None, reason="real DGP sample data absent (../shared/realdata)")
def test_dgp_env_cameras_sit_where_the_log_put_them(tmp_path):
    """The env's reset camera poses on DGP scene_02 equal the logged ones (the ego origin is 12.7 m below z = 0)."""
    import gymnasium as gym

    import stag_sim  # noqa: F401  (registers the env)
    from stag_sim.cache import write_scene_cache
    from stag_sim.ingest.dgp import ingest_dgp

    log = ingest_dgp(DGP)
    write_scene_cache(log, tmp_path / "cache")
    assert log.ego_poses[0][2, 3] < -10.0
    ground = GroundModel.from_log(log)
    assert ground is not None and ground.grid is not None
    # DGP's ego origin is on the road: the LiDAR ground is within a few decimetres of it (not 12.7 m off)
    assert abs(ground.ego_height) < 0.5
    env = gym.make("StagDrive-v0", scene=str(tmp_path / "cache"), observations=("state",)).unwrapped
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["ego_pose"][:3, 3], log.ego_poses[0][:3, 3], atol=1e-3)
    want = np.array([log.ego_poses[0] @ cam.T_ego_from_camera for cam in log.rig.cameras])
    got = env.rig.T_world_from_cameras(info["ego_pose"])
    np.testing.assert_allclose(got[:, :3, 3], want[:, :3, 3], atol=0.02)
    np.testing.assert_allclose(got[:, :3, :3], want[:, :3, :3], atol=2e-3)
