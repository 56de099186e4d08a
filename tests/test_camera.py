import numpy as np
import pytest

from stag_sim.camera import (
    CAMERA_NAMES, Camera, CameraIntrinsics, CameraRig, in_image, nuscenes_like_rig, project, project_world, unproject,
    unproject_depth_map,
)
from stag_sim.errors import ValidationError
from stag_sim.geometry import invert_transform, pose_xy_yaw, transform_points


def test_rig_order_fov_and_orientation():
    rig = nuscenes_like_rig(400, 224)
    assert rig.names == CAMERA_NAMES
    fovs = {c.name: np.degrees(c.intrinsics.hfov) for c in rig}
    assert all(abs(fovs[n] - 70) < 1 for n in CAMERA_NAMES if n != "CAM_BACK")
    assert abs(fovs["CAM_BACK"] - 110) < 1
    # the front camera's optical axis (camera +z) points along ego +x, its image right (camera +x) is ego -y
    T = rig["CAM_FRONT"].T_ego_from_camera
    assert np.allclose(T[:3, 2], [1, 0, 0]) and np.allclose(T[:3, 0], [0, -1, 0]) and np.allclose(T[:3, 1], [0, 0, -1])
    # the back camera looks backwards
    assert np.allclose(rig["CAM_BACK"].T_ego_from_camera[:3, 2], [-1, 0, 0], atol=1e-12)


def test_project_unproject_round_trip():
    rng = np.random.default_rng(0)
    intr = CameraIntrinsics.from_hfov(np.radians(70), 400, 224)
    uv = rng.uniform([0, 0], [399, 223], size=(1000, 2))
    d = rng.uniform(0.5, 100, 1000)
    pts = unproject(uv, d, intr)
    uv2, d2, front = project(pts, intr)
    assert front.all() and np.allclose(uv2, uv) and np.allclose(d2, d)


def test_point_ahead_projects_to_principal_point():
    rig = nuscenes_like_rig(400, 224)
    cam = rig["CAM_FRONT"]
    ego = pose_xy_yaw(10.0, 5.0, np.pi / 2)  # ego facing +y in the world
    T_world_cam = ego @ cam.T_ego_from_camera
    # a point 20 m in front of the camera along its optical axis
    p_world = transform_points(T_world_cam, np.array([[0.0, 0.0, 20.0]]))
    uv, depth, vis = project_world(p_world, T_world_cam, cam.intrinsics)
    assert vis[0] and np.allclose(uv[0], [cam.intrinsics.cx, cam.intrinsics.cy]) and np.isclose(depth[0], 20.0)
    # a point left of the ego lands left of centre in the front camera, right of centre in the back camera
    p_left = transform_points(ego, np.array([[20.0, 3.0, 1.5]]))
    uv, _, vis = project_world(p_left, T_world_cam, cam.intrinsics)
    assert vis[0] and uv[0, 0] < cam.intrinsics.cx
    behind = transform_points(ego, np.array([[-20.0, 3.0, 1.5]]))
    back = rig["CAM_BACK"]
    uv, _, vis = project_world(behind, ego @ back.T_ego_from_camera, back.intrinsics)
    assert vis[0] and uv[0, 0] > back.intrinsics.cx


def test_project_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    intr = CameraIntrinsics(300.0, 310.0, 200.5, 110.25, 400, 224)
    T_world_cam = pose_xy_yaw(3.0, -2.0, 0.7, 1.5) @ nuscenes_like_rig()["CAM_FRONT"].T_ego_from_camera
    pts = transform_points(T_world_cam, rng.uniform([-5, -3, 2], [5, 3, 50], size=(50, 3)))
    uv, _, _ = project_world(pts, T_world_cam, intr)
    T_cam_world = invert_transform(T_world_cam)
    rvec, _ = cv2.Rodrigues(T_cam_world[:3, :3])
    uv_cv, _ = cv2.projectPoints(pts, rvec, T_cam_world[:3, 3], intr.K, None)
    assert np.allclose(uv, uv_cv.reshape(-1, 2), atol=1e-6)


def test_points_behind_are_flagged():
    intr = CameraIntrinsics.from_hfov(np.radians(70), 400, 224)
    _, _, front = project(np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 5.0]]), intr)
    assert front.tolist() == [False, True]


def test_unproject_depth_map_and_in_image():
    intr = CameraIntrinsics.from_hfov(np.radians(90), 8, 6)
    depth = np.full((6, 8), 10.0, np.float32)
    depth[0, 0] = 0.0
    pts, idx = unproject_depth_map(depth, intr)
    assert len(pts) == 47 and idx[0] == 1
    uv, _, _ = project(pts, intr)
    assert in_image(uv, intr).all()
    with pytest.raises(ValidationError, match="expected shape"):
        unproject_depth_map(np.ones((3, 3)), intr)


def test_scaled_intrinsics_keep_the_same_rays():
    intr = CameraIntrinsics.from_hfov(np.radians(70), 1600, 900)
    small = intr.scaled(400, 225)
    p = np.array([[1.0, -0.5, 10.0]])
    uv_big, _, _ = project(p, intr)
    uv_small, _, _ = project(p, small)
    assert np.allclose((uv_small + 0.5) * 4, uv_big + 0.5)


def test_rig_validation_errors():
    rig = nuscenes_like_rig(64, 36)
    # any subset, any order, any names: a rig is the dataset's own cameras
    assert CameraRig(tuple(c for c in rig if c.name != "CAM_BACK_LEFT")).validate().names[-1] == "CAM_FRONT_LEFT"
    assert CameraRig(tuple(reversed(rig.cameras))).validate().names[0] == "CAM_FRONT_LEFT"
    with pytest.raises(ValidationError, match="duplicate camera name.*'CAM_FRONT'"):
        CameraRig(rig.cameras + (rig["CAM_FRONT"],)).validate()
    with pytest.raises(ValidationError, match="1 to 12 cameras, got 0"):
        CameraRig(()).validate()
    with pytest.raises(ValidationError, match="1 to 12 cameras, got 13"):
        CameraRig(tuple(Camera(f"c{i}", rig[0].intrinsics, rig[0].T_ego_from_camera) for i in range(13))).validate()
    with pytest.raises(ValidationError, match="ego_mask: expected \\(36, 64\\)"):
        Camera("CAM_X", rig[0].intrinsics, rig[0].T_ego_from_camera, np.zeros((4, 4), bool)).validate()
    with pytest.raises(ValidationError, match="focal lengths"):
        CameraIntrinsics(0.0, 1.0, 1.0, 1.0, 4, 4).validate()
    bad = rig["CAM_FRONT"].T_ego_from_camera.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValidationError, match="CAM_FRONT"):
        Camera("CAM_FRONT", rig["CAM_FRONT"].intrinsics, bad).validate()
    with pytest.raises(ValidationError, match="no camera named 'CAM_TOP'"):
        rig["CAM_TOP"]
