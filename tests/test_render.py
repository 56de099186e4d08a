"""Point renderer tests on an analytic world (ground, a wall, one box car) that is ray-cast exactly: the oracle."""

import numpy as np
import pytest

from stag_sim.camera import CameraIntrinsics, nuscenes_like_rig, project_world
from stag_sim.errors import RendererError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.render import PointRenderer, RenderConfig
from stag_sim.render.fidelity import psnr
from stag_sim.scene4d import SKY_BINS, ObjectCloud, Scene4D, Scene4DConfig, box_proxy_points, build_scene4d
from stag_sim.scene_log import FrameStore, ObjectTracks, SceneLog

WALL_Y = 7.0  # [m] a wall along x on the left of the road
CAR_SIZE = np.array([4.2, 1.9, 1.6])  # [m]
FACE_COLORS = np.array([[200, 40, 40], [40, 40, 200], [40, 180, 40], [220, 200, 40], [120, 40, 160], [40, 180, 180]])


class BoxWorld:
    """Ground z = 0 (2 m checker), a striped wall y = WALL_Y up to 6 m, a box car moving along +x, sky above.

    ``render`` has the synthetic-town oracle's signature and ray-casts the exact image.
    """

    def car_pose(self, time_s: float) -> np.ndarray:
        return pose_xy_yaw(9.0 + 2.0 * time_s, -2.0, 0.0, CAR_SIZE[2] / 2)

    def render(self, T_world_from_camera, intrinsics, time_s, object_poses=None, with_labels=False):
        T = np.asarray(T_world_from_camera, np.float64)
        pose = self.car_pose(time_s) if object_poses is None else object_poses.get("car")
        v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
        dc = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)], -1)
        d = dc @ T[:3, :3].T  # z-depth parametrisation: p = o + t d, t = camera z
        o = T[:3, 3]
        inf = np.full(u.shape, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ground = np.where(d[..., 2] < 0, -o[2] / d[..., 2], inf)
            t_wall = np.where(d[..., 1] > 0, (WALL_Y - o[1]) / d[..., 1], inf)
            z_wall = o[2] + t_wall * d[..., 2]
            t_wall = np.where((z_wall >= 0) & (z_wall <= 6.0), t_wall, inf)
            t_box, face = inf.copy(), np.zeros(u.shape, int)
            if pose is not None:
                R = pose[:3, :3]
                ob = (o - pose[:3, 3]) @ R
                db = d @ R
                t1 = (-CAR_SIZE / 2 - ob) / db
                t2 = (CAR_SIZE / 2 - ob) / db
                tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
                tmin, tmax = tn.max(-1), tf.min(-1)
                hit = (tmax >= np.maximum(tmin, 0)) & (tmin > 0)
                t_box = np.where(hit, tmin, inf)
                axis = tn.argmax(-1)
                sign = np.take_along_axis(db, axis[..., None], -1)[..., 0] > 0
                face = axis * 2 + sign
        ts = np.stack([t_ground, t_wall, t_box], -1)
        ts = np.where(ts > 200.0, np.inf, ts)  # the world ends at 200 m
        which = ts.argmin(-1)
        t = ts.min(-1)
        p = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
        rgb = np.zeros(u.shape + (3,))
        g = p[which == 0]  # smooth textures: the test measures geometry, not aliasing
        wave = (np.sin(g[:, 0] * 0.8) * np.cos(g[:, 1] * 0.7))[:, None]
        rgb[which == 0] = np.array([115, 115, 110]) + wave * np.array([45, 40, 30])
        h = p[which == 1]
        wave = np.sin(h[:, 2] * 1.7 + h[:, 0] * 0.3)[:, None]
        rgb[which == 1] = np.array([210, 135, 90]) + wave * np.array([30, 45, 35])
        rgb[which == 2] = FACE_COLORS[face[which == 2]]
        sky = ~np.isfinite(t)
        elev = np.clip(d[..., 2] / np.linalg.norm(d, axis=-1), 0, 1)
        rgb[sky] = (np.array([200, 220, 240]) * (1 - elev[sky, None]) + np.array([70, 120, 220]) * elev[sky, None])
        depth = np.where(sky, 0.0, t).astype(np.float32)
        out = (np.clip(np.rint(rgb), 0, 255).astype(np.uint8), depth)
        return out + ((np.where(sky, -1, which)),) if with_labels else out


def box_world_log(num_frames=10, width=96, height=54, speed=4.0) -> SceneLog:
    """The BoxWorld logged at 10 Hz by an ego driving +x at ``speed`` [m/s] (PNG images, exact depth)."""
    world = BoxWorld()
    rig = nuscenes_like_rig(width, height)
    ts = np.arange(num_frames, dtype=np.int64) * 100_000
    ego = pose_xy_yaw(speed * 0.1 * np.arange(num_frames), np.zeros(num_frames), np.zeros(num_frames))
    imgs, depths = [], []
    for t in range(num_frames):
        rows = [world.render(T, c.intrinsics, t * 0.1) for T, c in zip(rig.T_world_from_cameras(ego[t]), rig.cameras)]
        imgs.append([r[0] for r in rows])
        depths.append([r[1] for r in rows])
    poses = np.stack([world.car_pose(t * 0.1) for t in range(num_frames)])[:, None]
    objects = ObjectTracks(("car",), ("vehicle.car",), CAR_SIZE[None].copy(), poses, np.ones((num_frames, 1), bool))
    return SceneLog(
        name="box-world", source="test", timestamps_us=ts, ego_poses=ego, rig=rig,
        images=FrameStore.from_arrays(imgs, "png"), camera_timestamps_us=np.repeat(ts[:, None], 6, 1),
        camera_ego_poses=np.repeat(ego[:, None], 6, 1), objects=objects,
        depth=FrameStore.from_arrays(depths, "depth-png16"),
    ).validate()


@pytest.fixture(scope="module")
def world_log():
    return box_world_log()


@pytest.fixture(scope="module")
def held_out(world_log):
    """Scene built without frame 5 (held out) and its renderer."""
    scene = build_scene4d(world_log, Scene4DConfig(voxel_size=0.05, exclude_frames=(5,)))
    return scene, PointRenderer(scene)


def box_only_scene(voxel=0.04) -> Scene4D:
    pts = box_proxy_points(CAR_SIZE, voxel)
    car = ObjectCloud("car", "vehicle.car", CAR_SIZE.copy(), pts, np.tile(np.uint8([255, 0, 0]), (len(pts), 1)), True)
    return Scene4D("box", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), voxel, (car,), voxel,
                   np.zeros(1, np.int64), pose_xy_yaw(10.0, 0.0, 0.0, 0.8)[None, None], np.ones((1, 1), bool),
                   np.zeros((SKY_BINS, 3), np.uint8), np.zeros(SKY_BINS, bool), Scene4DConfig(voxel_size=voxel))


FRONT = nuscenes_like_rig(96, 54)[0]


def front_pose(x=0.0, y=0.0):
    return pose_xy_yaw(x, y, 0.0) @ FRONT.T_ego_from_camera


# --- geometry -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_known_box_renders_where_projection_says(backend):
    scene = box_only_scene()
    pose = scene.object_poses[0, 0]
    res = PointRenderer(scene, RenderConfig(fill_holes=False, backend=backend)).render(front_pose(), FRONT.intrinsics, {"car": pose})
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * CAR_SIZE / 2
    uv, _, vis = project_world(corners @ pose[:3, :3].T + pose[:3, 3], front_pose(), FRONT.intrinsics)
    assert vis.all()
    rows, cols = np.nonzero(res.valid[0])
    # the splatted box fills the projected corners' bounding box (to within a pixel of footprint)
    assert abs(cols.min() - uv[:, 0].min()) <= 1.5 and abs(cols.max() - uv[:, 0].max()) <= 1.5
    assert abs(rows.min() - uv[:, 1].min()) <= 1.5 and abs(rows.max() - uv[:, 1].max()) <= 1.5
    assert np.all(res.rgb[0][res.valid[0]] == [255, 0, 0])
    # depth is the z of the box's rear face (x = 10 - 2.1 m) in the camera frame
    cam_x = FRONT.T_ego_from_camera[0, 3]
    assert np.median(res.depth[0][res.valid[0]]) == pytest.approx(10.0 - CAR_SIZE[0] / 2 - cam_x, abs=0.05)


def test_held_out_frame_matches_the_oracle(world_log, held_out):
    scene, renderer = held_out
    world = BoxWorld()
    t = 5
    ego = world_log.ego_poses[t]
    for shift, floor in ((0.0, 24.5), (1.0, 24.5), (3.0, 23.0)):  # measured 26.5, 26.8, 25.5 dB
        poses = world_log.rig.T_world_from_cameras(ego @ pose_xy_yaw(0.0, shift, 0.0))
        intr = [c.intrinsics for c in world_log.rig.cameras]
        res = renderer.render(poses, intr, scene.object_poses_at(0.5))
        ref = np.stack([world.render(T, k, 0.5)[0] for T, k in zip(poses, intr)])
        assert psnr(res.rgb, ref) > floor, f"shift {shift} m"


def test_object_moved_two_metres_renders_where_the_oracle_puts_it(world_log, held_out):
    scene, renderer = held_out
    world = BoxWorld()
    moved = scene.object_poses_at(0.5)["car"].copy()
    moved[0, 3] += 2.0
    pose = world_log.rig.T_world_from_cameras(world_log.ego_poses[5])[0]
    intr = world_log.rig[0].intrinsics
    res = renderer.render(pose, intr, {"car": moved})
    _, depth, label = world.render(pose, intr, 0.5, {"car": moved}, with_labels=True)
    car = label == 2
    assert car.sum() > 50
    close = np.abs(res.depth[0] - depth) < 0.2
    assert close[car].mean() > 0.8  # the car is drawn at its new place (silhouette pixels may differ) ...
    _, logged_depth, logged_label = world.render(pose, intr, 0.5, with_labels=True)
    vacated = (logged_label == 2) & ~car & (np.abs(depth - logged_depth) > 0.5)
    # ... and is gone from where it was (there the cloud shows background, or a hole the car always hid)
    assert vacated.sum() > 10 and (np.abs(res.depth[0] - logged_depth) < 0.2)[vacated].mean() < 0.05


def test_batched_call_equals_per_camera_calls(world_log, held_out):
    scene, renderer = held_out
    ego = world_log.ego_poses[[2, 7]]
    objs = scene.object_poses_at(0.3)
    batched = renderer.render_rigs(ego, world_log.rig, objs)
    assert batched.rgb.shape == (2, 6, 54, 96, 3) and batched.depth.shape == (2, 6, 54, 96)
    for e in range(2):
        for c, cam in enumerate(world_log.rig.cameras):
            one = renderer.render(world_log.rig.T_world_from_cameras(ego[e])[c], cam.intrinsics, objs)
            np.testing.assert_array_equal(one.rgb[0], batched.rgb[e, c])
            np.testing.assert_array_equal(one.depth[0], batched.depth[e, c])


def test_culling_without_lod_equals_brute_force(world_log, held_out):
    scene, _ = held_out
    renderer = PointRenderer(scene, RenderConfig(lod_factor=0.0))
    poses = world_log.rig.T_world_from_cameras(world_log.ego_poses[4])
    intr = [c.intrinsics for c in world_log.rig.cameras]
    a = renderer.render(poses, intr, scene.object_poses_at(0.4))
    b = renderer.render(poses, intr, scene.object_poses_at(0.4), cull=False)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)


@pytest.mark.parametrize("cpu_backend", ["numpy", "numba"])
def test_numpy_and_torch_cpu_paths_agree(world_log, held_out, cpu_backend):
    if cpu_backend == "numba":
        pytest.importorskip("numba")
    scene, _ = held_out
    # without hole filling (a pixel that rounds differently would also change the fill around it)
    renderer = PointRenderer(scene, RenderConfig(backend=cpu_backend, fill_holes=False))
    torch_renderer = PointRenderer(scene, RenderConfig(backend="torch", device="cpu", fill_holes=False))
    poses = world_log.rig.T_world_from_cameras(world_log.ego_poses[5] @ pose_xy_yaw(0.0, 1.0, 0.0))
    intr = [c.intrinsics for c in world_log.rig.cameras]
    a = renderer.render(poses, intr, scene.object_poses_at(0.5))
    b = torch_renderer.render(poses, intr, scene.object_poses_at(0.5))
    assert (a.valid != b.valid).mean() < 1e-3
    assert (a.rgb != b.rgb).any(-1).mean() < 1e-3
    both = a.valid & b.valid
    np.testing.assert_allclose(a.depth[both], b.depth[both], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_path_agrees_with_numpy(world_log, held_out):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    scene, _ = held_out
    renderer = PointRenderer(scene, RenderConfig(backend="numpy"))  # the same hole filling (OpenCV push-pull)
    gpu = PointRenderer(scene, RenderConfig(backend="torch", device="cuda"))
    ego = world_log.ego_poses[[1, 5, 8]]
    a = renderer.render_rigs(ego, world_log.rig, scene.object_poses_at(0.5))
    b = gpu.render_rigs(ego, world_log.rig, scene.object_poses_at(0.5))
    assert (a.rgb != b.rgb).any(-1).mean() < 1e-3
    assert (a.valid != b.valid).mean() < 1e-3


@pytest.mark.parametrize("config", [
    {}, {"footprint_scale": 3.0}, {"max_footprint_px": 4, "lod_factor": 0.0}, {"max_footprint_px": 1},
], ids=["default", "big-footprints", "capped-no-lod", "one-pixel"])
def test_numba_path_equals_numpy_path_before_hole_filling(world_log, held_out, config):
    """The compiled kernel repeats the numpy splatter's float32 arithmetic: the same bytes, objects included."""
    pytest.importorskip("numba")
    scene, _ = held_out
    a = PointRenderer(scene, RenderConfig(backend="numpy", fill_holes=False, **config))
    b = PointRenderer(scene, RenderConfig(backend="numba", fill_holes=False, **config))
    assert b.backend == "numba"
    ego = world_log.ego_poses[[1, 5]] @ pose_xy_yaw(0.3, 1.0, 0.2)
    moved = scene.object_poses_at(0.5)["car"].copy()
    moved[:2, 3] += [-4.0, 1.5]  # the car close to the front camera: footprints of many pixels
    for cull in (True, False):
        ra = a.render_rigs(ego, world_log.rig, {"car": moved}, cull=cull)
        rb = b.render_rigs(ego, world_log.rig, {"car": moved}, cull=cull)
        assert ra.valid.mean() > 0.5 and 0 < (ra.depth[ra.valid] < 3.0).mean()  # near splats are in the test
        np.testing.assert_array_equal(ra.valid, rb.valid)
        np.testing.assert_array_equal(ra.rgb, rb.rgb)
        np.testing.assert_array_equal(ra.depth, rb.depth)


def test_numba_hole_filling_is_close_to_numpy(world_log, held_out):
    """Known pixels are identical; filled holes come from an exact box pyramid instead of OpenCV's area resizes
    (which differ at non-integer scales of small images), so they differ a little, and are as close to the truth."""
    pytest.importorskip("numba")
    scene, _ = held_out
    pose = world_log.rig.T_world_from_cameras(world_log.ego_poses[5] @ pose_xy_yaw(0.0, 3.0, 0.0))
    intr = [c.intrinsics for c in world_log.rig.cameras]
    objs = scene.object_poses_at(0.5)
    a = PointRenderer(scene, RenderConfig(backend="numpy")).render(pose, intr, objs)
    b = PointRenderer(scene, RenderConfig(backend="numba")).render(pose, intr, objs)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.rgb[a.valid], b.rgb[b.valid])
    holes = ~a.valid
    assert holes.mean() > 0.05
    diff = np.abs(a.rgb[holes].astype(int) - b.rgb[holes]).max(-1)
    assert np.median(diff) <= 2 and diff.mean() < 3.0
    ref = np.stack([BoxWorld().render(T, k, 0.5)[0] for T, k in zip(pose, intr)])
    assert psnr(b.rgb[holes], ref[holes]) > psnr(a.rgb[holes], ref[holes]) - 0.5


def test_default_backend_is_numba_when_it_imports(monkeypatch):
    pytest.importorskip("numba")
    assert PointRenderer(box_only_scene()).backend == "numba"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    assert PointRenderer(box_only_scene()).backend == "numpy"  # the fallback
    with pytest.raises(RendererError, match="backend: 'numba' needs numba"):
        PointRenderer(box_only_scene(), RenderConfig(backend="numba"))


def test_camera_schedule_shares_work_evenly():
    pytest.importorskip("numba")
    from stag_sim.render import kernels

    work = np.array([130.0, 90.0, 40.0, 85.0, 180.0, 250.0])
    ptr, cams = kernels.schedule(work)
    assert sorted(cams.tolist()) == list(range(6)) and ptr[0] == 0 and ptr[-1] == 6
    loads = [work[cams[ptr[t]:ptr[t + 1]]].sum() for t in range(len(ptr) - 1)]
    assert max(loads) - min(loads) <= work.max()  # greedy largest-first: within one job of even
    assert np.array_equal(kernels.schedule(work)[1], cams)  # deterministic


def test_rendering_is_deterministic(world_log, held_out):
    scene, _ = held_out
    poses = world_log.rig.T_world_from_cameras(world_log.ego_poses[3])
    intr = [c.intrinsics for c in world_log.rig.cameras]
    a = PointRenderer(scene).render(poses, intr, scene.object_poses_at(0.3))
    b = PointRenderer(scene).render(poses, intr, scene.object_poses_at(0.3))
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()


def test_holes_are_filled_and_reported(world_log, held_out):
    scene, renderer = held_out
    pose = world_log.rig.T_world_from_cameras(world_log.ego_poses[5] @ pose_xy_yaw(0.0, 3.0, 0.0))
    intr = [c.intrinsics for c in world_log.rig.cameras]
    raw = PointRenderer(scene, RenderConfig(fill_holes=False)).render(pose, intr)
    filled = renderer.render(pose, intr)
    np.testing.assert_array_equal(raw.valid, filled.valid)
    holes = ~raw.valid
    assert holes.any() and np.all(raw.rgb[holes] == 0)
    assert np.all(filled.depth[holes] == 0)
    sky_like = filled.rgb[holes].astype(int)  # the sky model paints the sky blue-ish, not black
    assert sky_like[:, 2].mean() > 150


# --- bad input ------------------------------------------------------------------------------------------------


def test_nan_pose_is_an_error():
    r = PointRenderer(box_only_scene())
    pose = front_pose()
    pose[0, 3] = np.nan
    with pytest.raises(RendererError, match=r"camera_poses\[0\].*non-finite"):
        r.render(pose, FRONT.intrinsics)


def test_degenerate_rotation_is_an_error():
    r = PointRenderer(box_only_scene())
    pose = front_pose()
    pose[:3, :3] = 0.0  # a camera looking nowhere
    with pytest.raises(RendererError, match="camera_poses"):
        r.render(np.stack([front_pose(), pose]), FRONT.intrinsics)


def test_unknown_object_and_bad_object_pose_are_errors():
    r = PointRenderer(box_only_scene())
    with pytest.raises(RendererError, match="no object with instance id 'nope'"):
        r.render(front_pose(), FRONT.intrinsics, {"nope": np.eye(4)})
    bad = np.eye(4)
    bad[1, 3] = np.inf
    with pytest.raises(RendererError, match="non-finite pose for object 'car'"):
        r.render(front_pose(), FRONT.intrinsics, {"car": bad})
    with pytest.raises(RendererError, match="object_poses: expected"):
        r.render(front_pose(), FRONT.intrinsics, np.zeros((3, 4, 4)))


def test_mismatched_intrinsics_are_an_error():
    r = PointRenderer(box_only_scene())
    with pytest.raises(RendererError, match="share an image size"):
        r.render(np.stack([front_pose(), front_pose()]), [FRONT.intrinsics, FRONT.intrinsics.scaled(48, 27)])
    with pytest.raises(RendererError, match="intrinsics"):
        r.render(np.stack([front_pose(), front_pose()]), [FRONT.intrinsics])
    with pytest.raises(RendererError, match="camera_poses: expected"):
        r.render(np.zeros((2, 3, 4)), FRONT.intrinsics)


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_empty_frustum_and_empty_scene_give_all_invalid(backend):
    scene = box_only_scene()
    r = PointRenderer(scene, RenderConfig(backend=backend))
    away = front_pose() @ pose_xy_yaw(0.0, 0.0, 0.0)
    away[:3, :3] = away[:3, :3] @ np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]])  # look backwards
    res = r.render(away, FRONT.intrinsics, {"car": scene.object_poses[0, 0]})
    assert not res.valid.any() and np.all(res.depth == 0) and res.hole_fraction == 1.0
    empty = Scene4D("empty", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), 0.05, (), 0.05,
                    np.zeros(1, np.int64), np.zeros((1, 0, 4, 4)), np.zeros((1, 0), bool),
                    np.zeros((SKY_BINS, 3), np.uint8), np.zeros(SKY_BINS, bool), Scene4DConfig())
    res = PointRenderer(empty, RenderConfig(backend=backend)).render(front_pose(), FRONT.intrinsics)
    assert res.rgb.shape == (1, 54, 96, 3) and not res.valid.any()


def test_render_config_validation():
    with pytest.raises(RendererError, match="backend"):
        RenderConfig(backend="vulkan").validate()
    with pytest.raises(RendererError, match="max_range"):
        RenderConfig(max_range=-1.0).validate()


def test_intrinsics_must_be_camera_intrinsics():
    r = PointRenderer(box_only_scene())
    with pytest.raises(RendererError, match="CameraIntrinsics"):
        r.render(front_pose(), [np.eye(3)])
    with pytest.raises(RendererError, match="focal"):
        r.render(front_pose(), CameraIntrinsics(-1.0, 1.0, 0.0, 0.0, 8, 8))


def test_chunk_index_layers_never_mix_and_select_by_camera():
    from stag_sim.render.splat import CameraBatch, ChunkIndex, ZLayout

    rng = np.random.default_rng(0)
    pts = rng.uniform(-20, 20, (4000, 3)).astype(np.float32)
    pts[:, 0] = np.abs(pts[:, 0]) + 2.0  # in front of a camera looking down +x
    cols = rng.integers(0, 256, (4000, 3)).astype(np.uint8)
    groups = np.repeat([0, 1], 2000)
    one = ChunkIndex(pts, cols, 8.0, 0.1, 3)
    two = ChunkIndex(pts, cols, 8.0, 0.1, 3, groups)
    assert one.num_groups == 1 and two.num_groups == 2 and one.num_points == two.num_points == 4000
    for g in (0, 1):  # each chunk holds points of one layer only, at every level of detail
        for lvl in range(3):
            ch = np.flatnonzero(two.chunk_group == g)
            got = two.gather(two.starts[lvl, ch], two.counts[lvl, ch])[0][:3].T
            if lvl == 0:
                assert sorted(map(tuple, got)) == sorted(map(tuple, pts[groups == g]))
    rig = nuscenes_like_rig(64, 36)
    T = np.eye(4)
    poses = rig.T_world_from_cameras(T)[:2]
    K = np.array([[c.intrinsics.fx, c.intrinsics.fy, c.intrinsics.cx, c.intrinsics.cy] for c in rig.cameras[:2]])
    cams = CameraBatch.make(poses, K, 64, 36, 0.1, ZLayout.reach_px(16))
    cam, _, chunk = two.select_flat(cams, 80.0, 0.1, 1.5, True, np.array([[True, False], [True, True]]))
    assert set(two.chunk_group[chunk[cam == 0]]) <= {0}
    all_cam, _, all_chunk = two.select_flat(cams, 80.0, 0.1, 1.5, True)
    np.testing.assert_array_equal(chunk[cam == 1], all_chunk[all_cam == 1])
    with pytest.raises(ValueError, match="group ids"):
        ChunkIndex(pts, cols, 8.0, 0.1, 3, groups[:10])


def test_pinholes_close_from_the_nearest_neighbour_the_same_in_numba_and_numpy():
    from stag_sim.render import kernels
    from stag_sim.render.gaps import close_pinholes

    rng = np.random.default_rng(3)
    valid = rng.random((2, 12, 16)) < 0.8
    depth = np.where(valid, rng.uniform(1, 50, valid.shape), 0).astype(np.float32)
    rgb = rng.integers(0, 256, valid.shape + (3,)).astype(np.uint8)
    a = (rgb.copy(), depth.copy(), valid.copy())
    close_pinholes(*a, 6)
    b = (rgb.copy(), depth.copy(), valid.copy())
    for i in range(2):
        kernels.close_pinholes_camera(i, *b, 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    closed = a[2] & ~valid
    assert closed.any() and not closed[:, 0].any() and not closed[:, -1].any()  # interior pixels only
    i, r, c = np.argwhere(closed)[0]
    nb = [(r + dr, c + dc) for dr, dc in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
          if valid[i, r + dr, c + dc]]
    assert len(nb) >= 6
    rr, cc = min(nb, key=lambda p: depth[i, p[0], p[1]])
    assert a[1][i, r, c] == depth[i, rr, cc] and (a[0][i, r, c] == rgb[i, rr, cc]).all()
    untouched = (rgb.copy(), depth.copy(), valid.copy())
    close_pinholes(*untouched, 0)
    np.testing.assert_array_equal(untouched[2], valid)
