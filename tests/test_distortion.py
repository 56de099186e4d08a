"""Lens distortion (OpenCV radial-tangential and fisheye): projection against OpenCV, round trips, images, validation,
the scene cache and DGP ingestion of distorted cameras."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from stag_sim.cache import load_scene_cache, write_scene_cache
from stag_sim.camera import (Camera, CameraIntrinsics, CameraRig, distort_image, distort_pixels, pixel_grid, project,
                             undistort_image, undistort_pixels, unproject, unproject_depth_map)
from stag_sim.distortion import valid_limit
from stag_sim.errors import IngestError, ValidationError
from stag_sim.testing import realdata_path, tiny_scene_log

#: DDAD-like front camera at a third of its resolution, mild barrel distortion with tangential terms
RADTAN = CameraIntrinsics(722.6, 718.7, 317.0, 201.5, 645, 405, distortion=(-0.21, 0.08, 1.2e-3, -7e-4, -0.012))
FISHEYE = CameraIntrinsics(300.0, 301.0, 319.5, 239.5, 640, 480, "fisheye", (0.04, -0.012, 0.004, -7e-4))


def _points(rng, n=2000, spread=0.6):
    """(n, 3) camera-frame points in front of the camera, normalised radius up to ~spread * sqrt(2)."""
    xy = rng.uniform(-spread, spread, (n, 2))
    z = rng.uniform(0.5, 80.0, n)
    return np.c_[xy * z[:, None], z]


@pytest.mark.parametrize("intr", [RADTAN, FISHEYE], ids=["radtan", "fisheye"])
def test_project_agrees_with_opencv(intr):
    p = _points(np.random.default_rng(0), spread=1.2 if intr.model == "fisheye" else 0.6)
    uv, depth, ok = project(p, intr.validate())
    if intr.model == "fisheye":
        ref, _ = cv2.fisheye.projectPoints(p.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), intr.K, np.array(intr.distortion))
    else:
        ref, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), intr.K, np.array(intr.distortion))
    assert ok.all() and np.array_equal(depth, p[:, 2])
    assert np.abs(uv - ref.reshape(-1, 2)).max() < 1e-6


@pytest.mark.parametrize("intr", [RADTAN, FISHEYE], ids=["radtan", "fisheye"])
def test_unproject_project_round_trip(intr):
    rng = np.random.default_rng(1)
    uv = pixel_grid(intr.width, intr.height)
    depth = rng.uniform(0.5, 100.0, len(uv))
    pts = unproject(uv, depth, intr)
    assert np.isfinite(pts).all() and np.array_equal(pts[:, 2], depth)
    uv2, depth2, ok = project(pts, intr)
    assert ok.all() and np.abs(uv2 - uv).max() < 1e-3 and np.allclose(depth2, depth)
    # and from 3D: project then unproject gives back the points
    p = _points(rng)
    q, d, ok = project(p, intr)
    assert ok.all() and np.abs(unproject(q, d, intr) - p).max() < 1e-6


def test_pixel_round_trip_and_fold():
    uv = pixel_grid(RADTAN.width, RADTAN.height)
    und = undistort_pixels(uv, RADTAN)
    assert np.abs(distort_pixels(und, RADTAN) - uv).max() < 1e-3
    # barrel distortion: undistorted corners lie further from the principal point than the distorted ones
    c = np.array([[0.0, 0.0]])
    assert np.linalg.norm(undistort_pixels(c, RADTAN) - [RADTAN.cx, RADTAN.cy]) > np.linalg.norm(c - [RADTAN.cx, RADTAN.cy])
    # beyond the radius where the lens folds back: flagged, never drawn
    r = np.sqrt(valid_limit("pinhole", RADTAN.distortion))
    far = np.array([[1.1 * r, 0.0, 1.0], [0.9 * r, 0.0, 1.0]])
    _, _, ok = project(far, RADTAN)
    assert ok.tolist() == [False, True]
    assert np.isnan(distort_pixels(project(far, RADTAN.undistorted())[0][:1], RADTAN)).all()
    # a distorted pixel far outside every reachable radius has no preimage
    assert np.isnan(unproject([[RADTAN.cx + 50 * RADTAN.fx, RADTAN.cy]], [1.0], RADTAN)).all()


def test_pinhole_path_is_unchanged():
    rng = np.random.default_rng(2)
    pin = RADTAN.undistorted()
    assert pin == CameraIntrinsics(RADTAN.fx, RADTAN.fy, RADTAN.cx, RADTAN.cy, RADTAN.width, RADTAN.height)
    assert not pin.distorted and RADTAN.distorted and pin.distortion == ()
    # all-zero radial-tangential coefficients are the plain pinhole, equal and with the same hash
    zero = CameraIntrinsics(pin.fx, pin.fy, pin.cx, pin.cy, pin.width, pin.height, distortion=[0.0] * 5)
    assert zero == pin and hash(zero) == hash(pin) and zero.distortion == ()
    p = _points(rng)
    uv, d, ok = project(p, pin)
    uvK, dK, okK = project(p, pin.K)
    assert np.array_equal(uv, uvK) and np.array_equal(ok, okK)
    expected = np.stack([pin.fx * p[:, 0] / p[:, 2] + pin.cx, pin.fy * p[:, 1] / p[:, 2] + pin.cy], axis=1)
    assert np.array_equal(uv, expected)
    assert np.array_equal(unproject(uv, d, pin), unproject(uv, d, pin.K))
    assert np.array_equal(distort_pixels(uv, pin), uv) and np.array_equal(undistort_pixels(uv, pin), uv)


def test_equality_hash_and_scaled():
    a = CameraIntrinsics(500.0, 500.0, 99.5, 49.5, 200, 100, distortion=[-0.1, 0.01, 0.0, 0.0, 0.0])
    b = CameraIntrinsics(500.0, 500.0, 99.5, 49.5, 200, 100, distortion=np.array([-0.1, 0.01, 0.0, 0.0, 0.0]))
    assert a == b and hash(a) == hash(b) and isinstance(a.distortion, tuple)
    assert a != a.undistorted() and len({a, b, a.undistorted()}) == 2
    s = a.scaled(400, 200)
    assert s.distortion == a.distortion and s.model == a.model and s.width == 400 and s.fx == 1000.0
    # the same ray lands on the same (rescaled) spot: distortion is resolution-independent
    p = _points(np.random.default_rng(3), 50, 0.15)
    uv_a, uv_s = project(p, a)[0], project(p, s)[0]
    assert np.allclose((uv_a + 0.5) * 2.0 - 0.5, uv_s, atol=1e-9)
    f = FISHEYE.scaled(320, 240)
    assert f.model == "fisheye" and f.distortion == FISHEYE.distortion
    assert CameraIntrinsics.from_K(RADTAN.K, RADTAN.width, RADTAN.height, distortion=RADTAN.distortion) == RADTAN


@pytest.mark.parametrize("kw, field, value", [
    (dict(distortion=(0.1, 0.2, 0.3)), "CameraIntrinsics.distortion", "(0.1, 0.2, 0.3)"),
    (dict(distortion=(0.1, 0.0, 0.0, 0.0, float("nan"))), "CameraIntrinsics.distortion", "nan"),
    (dict(model="fisheye", distortion=(0.1,) * 5), "CameraIntrinsics.distortion", "'fisheye'"),
    (dict(model="fisheye"), "CameraIntrinsics.distortion", "got 0"),
    (dict(model="kannala", distortion=(0.1,) * 4), "CameraIntrinsics.model", "'kannala'"),
    (dict(distortion="abc"), "CameraIntrinsics.distortion", "'abc'"),
], ids=["count", "nan", "fisheye-count", "fisheye-empty", "model", "not-numbers"])
def test_validation_errors_are_one_line(kw, field, value):
    with pytest.raises(ValidationError) as e:
        CameraIntrinsics(500.0, 500.0, 99.5, 49.5, 200, 100, **kw).validate()
    msg = str(e.value)
    assert "\n" not in msg and field in msg and value in msg, msg


def _checkerboard(h, w, square=12):
    v, u = np.mgrid[0:h, 0:w]
    board = (((u // square) + (v // square)) % 2).astype(np.float32)
    board = cv2.GaussianBlur(board, (0, 0), 1.0)  # band-limited: bilinear resampling is then near lossless
    rgb = np.stack([board, 0.5 + 0.5 * np.sin(u / 17.0) * board, np.cos(v / 23.0) ** 2], -1)
    return np.round(rgb * 255).astype(np.uint8)


def _psnr(a, b, mask):
    err = (a.astype(np.float64) - b.astype(np.float64))[mask]
    return 10 * np.log10(255.0 ** 2 / max(np.mean(err ** 2), 1e-12))


@pytest.mark.parametrize("intr", [RADTAN, FISHEYE], ids=["radtan", "fisheye"])
def test_image_undistort_distort_round_trip(intr):
    img = _checkerboard(intr.height, intr.width)
    pin = intr.undistorted() if intr.model == "pinhole" else CameraIntrinsics.from_hfov(np.radians(110), 800, 560)
    und, pin_out = undistort_image(img, intr, None if intr.model == "pinhole" else pin)
    assert pin_out == pin and not pin_out.distorted and und.shape == (pin.height, pin.width, 3) and und.dtype == np.uint8
    back = distort_image(und, pin, intr)
    assert back.shape == img.shape and back.dtype == np.uint8
    # compare where the pinhole frame covers the distorted one (away from its edges)
    uv = undistort_pixels(pixel_grid(intr.width, intr.height), intr)
    src = np.c_[uv[:, 0] - intr.cx, uv[:, 1] - intr.cy] / [intr.fx, intr.fy] * [pin.fx, pin.fy] + [pin.cx, pin.cy]
    inside = (src[:, 0] > 2) & (src[:, 0] < pin.width - 3) & (src[:, 1] > 2) & (src[:, 1] < pin.height - 3)
    inside = inside.reshape(intr.height, intr.width)
    assert inside.mean() > 0.5
    psnr = _psnr(back, img, inside)
    assert psnr > 33.0, psnr  # measured 36.6 dB (radtan), 37.5 dB (fisheye): two bilinear resamplings
    # the distortion really moved pixels: undistorted vs logged differ a lot
    if intr.model == "pinhole":
        assert _psnr(und, img, np.ones(img.shape[:2], bool)) < psnr - 8
    # cached maps: a second call gives the same bytes
    assert np.array_equal(distort_image(und, pin, intr), back)


def test_image_functions_check_their_inputs():
    img = np.zeros((RADTAN.height, RADTAN.width, 3), np.uint8)
    with pytest.raises(ValidationError, match=r"undistort_image: image: expected an image of 405x645"):
        undistort_image(img[:-1], RADTAN)
    with pytest.raises(ValidationError, match="pinhole must have no distortion"):
        undistort_image(img, RADTAN, pinhole=RADTAN)
    with pytest.raises(ValidationError, match="pinhole_intrinsics must have no distortion"):
        distort_image(img, RADTAN, RADTAN)
    pin = RADTAN.undistorted()
    out, k = undistort_image(img, pin)
    assert k == pin and np.array_equal(out, img) and out is not img
    depth = np.full((RADTAN.height, RADTAN.width), 7.0, np.float32)
    und, _ = undistort_image(depth, RADTAN, interpolation=cv2.INTER_NEAREST)
    assert und.shape == depth.shape and set(np.unique(und)) <= {0.0, 7.0}


def test_unproject_depth_map_with_distortion():
    intr = CameraIntrinsics(40.0, 40.0, 31.5, 17.5, 64, 36, distortion=(-0.2, 0.05, 0.0, 1e-3, 0.0))
    depth = np.full((36, 64), 5.0)
    pts, idx = unproject_depth_map(depth, intr)
    assert len(idx) == 64 * 36 and np.isfinite(pts).all()
    uv, _, ok = project(pts, intr)
    assert ok.all() and np.abs(uv - np.c_[idx % 64, idx // 64]).max() < 1e-3


def _distorted_log():
    log = tiny_scene_log()
    cams = list(log.rig.cameras)
    k = cams[0].intrinsics
    cams[0] = Camera(cams[0].name, CameraIntrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height,
                                                    distortion=(-0.1, 0.02, 1e-3, -1e-3, 0.001)),
                     cams[0].T_ego_from_camera)
    k = cams[3].intrinsics
    cams[3] = Camera(cams[3].name, CameraIntrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height, "fisheye",
                                                    (0.01, -0.002, 0.0, 0.0)), cams[3].T_ego_from_camera)
    return type(log)(**{**log.__dict__, "rig": CameraRig(tuple(cams))}).validate()


def test_scene_log_and_cache_round_trip(tmp_path):
    log = _distorted_log()
    path = write_scene_cache(log, tmp_path / "s")
    loaded = load_scene_cache(path)
    assert log.diff(loaded) == [] and loaded.rig == log.rig
    assert loaded.rig.cameras[0].intrinsics.distortion == log.rig.cameras[0].intrinsics.distortion
    assert loaded.rig.cameras[3].intrinsics.model == "fisheye"
    rig_json = json.loads((path / "scene.json").read_text())["rig"]
    # pinhole cameras are written exactly as before distortion existed (old caches read as pinhole)
    assert set(rig_json[1]["intrinsics"]) == {"fx", "fy", "cx", "cy", "width", "height"}
    assert rig_json[0]["intrinsics"]["distortion"] == [-0.1, 0.02, 1e-3, -1e-3, 0.001]


DGP = realdata_path("dgp_test_scene/scene_02")


def _dgp_copy(tmp_path, **fields) -> Path:
    scene = Path(shutil.copytree(DGP, tmp_path / "scene_02"))
    cal_path = next((scene / "calibration").glob("*.json"))
    cal = json.loads(cal_path.read_text())
    cal["intrinsics"][cal["names"].index("CAMERA_01")].update(fields)
    cal_path.write_text(json.dumps(cal))
    return scene


@pytest.mark.skipif(DGP is None, reason="real DGP sample data absent: expected ../shared/realdata/dgp_test_scene")
def test_dgp_with_radial_tangential_distortion_ingests(tmp_path):
    from stag_sim.ingest.dgp import ingest_dgp

    scene = _dgp_copy(tmp_path, k1=-0.12, k2=0.03, p1=4e-4, p2=-2e-4, k3=-0.002, fov=1.2)
    log = ingest_dgp(scene, cameras="CAMERA_01,CAMERA_05")
    assert log.rig["CAMERA_01"].intrinsics.distortion == (-0.12, 0.03, 4e-4, -2e-4, -0.002)
    assert log.rig["CAMERA_05"].intrinsics.distortion == ()
    loaded = load_scene_cache(write_scene_cache(log, tmp_path / "cache"))
    assert loaded.rig == log.rig


@pytest.mark.skipif(DGP is None, reason="real DGP sample data absent: expected ../shared/realdata/dgp_test_scene")
@pytest.mark.parametrize("fields, expected", [
    (dict(k1=-0.1, k4=0.02), "has k4=0.02"),
    (dict(fisheye=1, k1=0.1), "has fisheye=1"),
    (dict(xi=0.5), "has xi=0.5"),
    (dict(p1="x"), "field intrinsics[1].p1 is not a number"),
], ids=["rational", "fisheye", "double-sphere", "not-a-number"])
def test_dgp_unsupported_intrinsics_are_one_line(tmp_path, fields, expected):
    from stag_sim.ingest.dgp import ingest_dgp

    scene = _dgp_copy(tmp_path, **fields)
    with pytest.raises(IngestError) as e:
        ingest_dgp(scene, cameras="CAMERA_01")
    msg = str(e.value)
    assert "\n" not in msg and expected in msg and "calibration" in msg, msg


def test_nuscenes_export_refuses_a_distorted_camera(tmp_path):
    from stag_sim.ingest.nuscenes_export import export_nuscenes

    with pytest.raises(ValidationError, match=r"export_nuscenes: camera\(s\) CAM_FRONT, CAM_BACK .* lens distortion"):
        export_nuscenes(_distorted_log(), tmp_path / "ns")
    assert not (tmp_path / "ns").exists()
