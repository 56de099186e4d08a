"""Lens distortion: OpenCV radial-tangential (``k1, k2, p1, p2, k3``) and OpenCV fisheye / equidistant
(``k1, k2, k3, k4``), on normalised image coordinates, on pixels, and on whole images.

Normalised coordinates are ``(x / z, y / z)`` of a camera-frame point (OpenCV axes); a distortion model maps the ideal
(pinhole) normalised coordinates to distorted ones, and the camera matrix K maps those to pixels, exactly as
``cv2.projectPoints`` (radial-tangential) and ``cv2.fisheye.projectPoints`` (fisheye) do. The inverse is solved
with Newton's method in float64 (round trips agree to ~1e-12 px).

Each model is only invertible up to the radius where it stops being monotonic (a strong barrel lens folds far
off-axis points back into the image); :func:`valid_limit` gives that radius, :func:`distort_normalized` flags points
beyond it and :func:`undistort_normalized` returns NaN for pixels without a preimage inside it.

Images (uint8 HWC RGB, or any array ``cv2.remap`` takes) are resampled with maps cached per pair of intrinsics:
:func:`undistort_image` (logged distorted image -> pinhole working camera) and :func:`distort_image` (pinhole render
-> the logged distorted camera). Pixels without a source are 0.

This module does not import :mod:`stag_sim.camera` (which builds on it); it reads the intrinsics' ``fx, fy, cx, cy,
width, height, model, distortion`` attributes and re-creates them with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from stag_sim.errors import ValidationError

if TYPE_CHECKING:
    from stag_sim.camera import CameraIntrinsics

#: camera model -> allowed numbers of distortion coefficients (and their names, in order)
MODELS: dict[str, tuple[tuple[int, ...], str]] = {
    "pinhole": ((0, 5), "k1, k2, p1, p2, k3 (OpenCV radial-tangential)"),
    "fisheye": ((4,), "k1, k2, k3, k4 (OpenCV fisheye, equidistant)"),
}
NEWTON_ITERATIONS = 40  # [-] cap on the inverse's Newton steps (quadratic convergence: ~5 are used in practice)
NEWTON_STEP = 1e-14  # [-] a row stops iterating once its Newton step is below this (normalised units)
RESIDUAL_TOLERANCE = 1e-9  # [-] largest normalised residual accepted as a solution (~1e-6 px at f = 1000 px)
CHUNK = 1 << 15  # [points] rows solved at a time (keeps the temporaries in cache)
#: image maps kept (two float32 (H, W) arrays each, 19 MB at 1936x1216): both directions of a six-camera rig
MAP_CACHE_SIZE = 12


def check_distortion(model: str, distortion: tuple[float, ...], where: str = "CameraIntrinsics") -> None:
    """One-line :class:`ValidationError` naming the field and the value for an unknown model, a wrong number of
    coefficients or a non-finite one."""
    if model not in MODELS:
        raise ValidationError(f"{where}.model: expected one of {', '.join(map(repr, MODELS))}, got {model!r}")
    counts, names = MODELS[model]
    if len(distortion) not in counts:
        allowed = " or ".join(map(str, counts))
        raise ValidationError(f"{where}.distortion: a {model!r} camera takes {allowed} coefficients ({names}), "
                              f"got {len(distortion)}: {tuple(distortion)}")
    if not np.all(np.isfinite(np.asarray(distortion, np.float64))):
        raise ValidationError(f"{where}.distortion: coefficients must be finite, got {tuple(distortion)}")


@lru_cache(maxsize=256)
def valid_limit(model: str, distortion: tuple[float, ...]) -> float:
    """Where the model stops being monotonic: for ``"pinhole"`` the squared normalised radius ``r^2`` (radial part
    only), for ``"fisheye"`` the incidence angle theta [rad] (at most pi/2). ``inf`` when it never folds."""
    if model == "fisheye":
        k1, k2, k3, k4 = distortion
        coeffs = [9 * k4, 7 * k3, 5 * k2, 3 * k1, 1.0]  # d theta_d / d theta as a polynomial in theta^2
        cap = np.pi / 2
    else:
        if not distortion:
            return float("inf")
        k1, k2, _, _, k3 = distortion
        coeffs = [7 * k3, 5 * k2, 3 * k1, 1.0]  # d (r * radial(r)) / dr as a polynomial in s = r^2
        cap = np.inf
    roots = np.roots(np.trim_zeros(np.asarray(coeffs, np.float64), "f"))
    s = roots[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)].real
    limit = float(s.min()) if len(s) else np.inf
    return float(min(np.sqrt(limit), cap)) if model == "fisheye" else limit


def distort_normalized(xy, model: str, distortion: tuple[float, ...]):
    """Ideal normalised coordinates (N, 2) -> distorted normalised coordinates (N, 2) float64.

    Returns ``(xy_d, valid)``; ``valid`` (N,) bool is False beyond :func:`valid_limit` (there ``xy_d`` is computed
    but folds back and must not be drawn). Same as ``cv2.projectPoints`` / ``cv2.fisheye.projectPoints``.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    if model == "fisheye":
        k1, k2, k3, k4 = distortion
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        scale = np.where(r > 1e-15, theta_d / np.maximum(r, 1e-15), 1.0)
        return xy * scale[:, None], theta < valid_limit(model, distortion)
    if not distortion:
        return xy.copy(), np.ones(len(xy), bool)
    k1, k2, p1, p2, k3 = distortion
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=1), r2 < valid_limit(model, distortion)


def _radtan_step(xy: np.ndarray, xy_d: np.ndarray, distortion: tuple[float, ...]) -> np.ndarray:
    """One Newton step (N, 2) for ``distort(xy) = xy_d`` (analytic 2x2 Jacobian of the radial-tangential model)."""
    k1, k2, p1, p2, k3 = distortion
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial = 2 * (k1 + r2 * (2 * k2 + 3 * k3 * r2))  # 2 * d radial / d (r^2)
    fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xy_d[:, 0]
    fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - xy_d[:, 1]
    a = radial + x * x * dradial + 2 * p1 * y + 6 * p2 * x  # d fx / dx
    b = x * y * dradial + 2 * p1 * x + 2 * p2 * y  # d fx / dy = d fy / dx
    d = radial + y * y * dradial + 6 * p1 * y + 2 * p2 * x  # d fy / dy
    det = a * d - b * b
    det = np.where(np.abs(det) > 1e-300, det, 1e-300)
    return np.stack([(d * fx - b * fy) / det, (a * fy - b * fx) / det], axis=1)


def _fisheye_step(theta: np.ndarray, theta_d: np.ndarray, distortion: tuple[float, ...]) -> np.ndarray:
    """One Newton step for ``theta * (1 + k1 theta^2 + ... + k4 theta^8) = theta_d``."""
    k1, k2, k3, k4 = distortion
    t2 = theta * theta
    f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
    df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
    return f / np.where(np.abs(df) > 1e-300, df, 1e-300)


def _radtan_reach(distortion: tuple[float, ...], limit: float) -> float:
    """An upper bound of the distorted normalised radius of any point inside ``limit`` (= r^2): the radial part's
    maximum plus a bound of the tangential part (|tangential| <= 3 (|p1| + |p2|) r^2)."""
    if not np.isfinite(limit):
        return float("inf")
    k1, k2, p1, p2, k3 = distortion
    r = np.sqrt(np.linspace(0.0, limit, 257))
    s = r * r
    return float(np.max(np.abs(r * (1 + s * (k1 + s * (k2 + s * k3))))) + 3 * (abs(p1) + abs(p2)) * limit)


def _newton(x0: np.ndarray, target: np.ndarray, step_fn, distortion: tuple[float, ...],
            limit: float = np.inf) -> np.ndarray:
    """Newton's method from ``x0``, iterating only the rows not yet converged (step <= NEWTON_STEP). Rows whose
    step turns non-finite, or (after 8 steps) whose iterate's squared norm is beyond ``limit``, stop there; the
    caller's residual check rejects them."""
    x = x0.copy()
    active = np.arange(len(x))
    for i in range(NEWTON_ITERATIONS):
        if not len(active):
            break
        step = step_fn(x[active], target[active], distortion)
        x[active] = x[active] - step
        keep = np.abs(step).reshape(len(active), -1).max(axis=1) > NEWTON_STEP  # NaN: dropped
        if i >= 8 and np.isfinite(limit):
            keep &= np.square(x[active]).reshape(len(active), -1).sum(axis=1) < limit
        active = active[keep]
    return x


def undistort_normalized(xy_d, model: str, distortion: tuple[float, ...]) -> np.ndarray:
    """Inverse of :func:`distort_normalized`: distorted normalised coordinates (N, 2) -> ideal ones (N, 2) float64.

    Rows without a preimage inside :func:`valid_limit` (or where Newton's method did not converge) are NaN.
    """
    xy_d = np.asarray(xy_d, np.float64).reshape(-1, 2)
    if model == "pinhole" and not distortion:
        return xy_d.copy()
    if len(xy_d) <= CHUNK:
        return _undistort_chunk(xy_d, model, distortion)
    # In cache-sized chunks: the Newton steps are memory-bound, ~3x faster on chunks than on a whole image.
    return np.concatenate([_undistort_chunk(xy_d[i:i + CHUNK], model, distortion)
                           for i in range(0, len(xy_d), CHUNK)])


def _undistort_chunk(xy_d: np.ndarray, model: str, distortion: tuple[float, ...]) -> np.ndarray:
    limit = valid_limit(model, distortion)
    if model == "fisheye":
        theta_d = np.sqrt((xy_d * xy_d).sum(axis=1))
        theta = _newton(np.minimum(theta_d, np.pi / 2 - 1e-9), theta_d, _fisheye_step, distortion)
        ok = (theta >= 0) & (theta < limit) & (np.abs(_fisheye_step(theta, theta_d, distortion)) < RESIDUAL_TOLERANCE)
        scale = np.tan(np.where(ok, theta, 0.0)) / np.maximum(theta_d, 1e-300)
        xy = xy_d * np.where(theta_d > 1e-15, scale, 1.0)[:, None]
    else:
        xy = np.full_like(xy_d, np.nan)
        reach = _radtan_reach(distortion, limit)
        rows = np.flatnonzero((xy_d * xy_d).sum(axis=1) <= reach * reach)  # the others have no preimage
        xy[rows] = _newton(xy_d[rows], xy_d[rows], _radtan_step, distortion, limit)
        residual = np.abs(distort_normalized(xy, model, distortion)[0] - xy_d).max(axis=1)
        ok = (residual < RESIDUAL_TOLERANCE) & ((xy * xy).sum(axis=1) < limit)
    xy[~ok] = np.nan
    return xy


def _to_normalized(uv, intr) -> np.ndarray:
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    return np.stack([(uv[:, 0] - intr.cx) / intr.fx, (uv[:, 1] - intr.cy) / intr.fy], axis=1)


def _to_pixels(xy: np.ndarray, intr) -> np.ndarray:
    return np.stack([xy[:, 0] * intr.fx + intr.cx, xy[:, 1] * intr.fy + intr.cy], axis=1)


def distort_pixels(uv, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Pixels (N, 2) of the ideal pinhole camera with the same K -> pixels (N, 2) float64 of the distorted camera.

    Rows beyond the model's valid radius (see :func:`valid_limit`) are NaN. A pinhole camera returns a copy.
    """
    if intrinsics.model == "pinhole" and not intrinsics.distortion:
        return np.array(uv, np.float64).reshape(-1, 2)
    xy_d, ok = distort_normalized(_to_normalized(uv, intrinsics), intrinsics.model, intrinsics.distortion)
    xy_d[~ok] = np.nan
    return _to_pixels(xy_d, intrinsics)


def undistort_pixels(uv, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Inverse of :func:`distort_pixels`: distorted pixels (N, 2) -> pixels (N, 2) float64 of the pinhole camera
    with the same K; NaN where there is no preimage. A pinhole camera returns a copy."""
    if intrinsics.model == "pinhole" and not intrinsics.distortion:
        return np.array(uv, np.float64).reshape(-1, 2)
    return _to_pixels(undistort_normalized(_to_normalized(uv, intrinsics), intrinsics.model, intrinsics.distortion),
                      intrinsics)


def pinhole_of(intrinsics: CameraIntrinsics) -> CameraIntrinsics:
    """The undistorted pinhole camera with the same K and size (the default working camera)."""
    return dataclasses.replace(intrinsics, model="pinhole", distortion=())


def _grid(intr) -> np.ndarray:
    v, u = np.mgrid[0:intr.height, 0:intr.width]
    return np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)


@lru_cache(maxsize=MAP_CACHE_SIZE)
def _remap(src, dst, undistorting: bool) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 (dst.height, dst.width): where each ``dst`` pixel samples ``src`` (-1 = nowhere)."""
    if undistorting:  # dst pinhole pixel -> ray -> distorted src pixel
        xy, ok = distort_normalized(_to_normalized(_grid(dst), dst), src.model, src.distortion)
        xy[~ok] = np.nan
    else:  # dst distorted pixel -> ray -> pinhole src pixel
        xy = undistort_normalized(_to_normalized(_grid(dst), dst), dst.model, dst.distortion)
    uv = _to_pixels(xy, src)
    uv[~np.isfinite(uv).all(axis=1)] = -1.0
    maps = tuple(np.ascontiguousarray(uv[:, i].reshape(dst.height, dst.width), np.float32) for i in (0, 1))
    for m in maps:
        m.flags.writeable = False
    return maps


def _check_image(image, intr, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.shape[:2] != (intr.height, intr.width):
        raise ValidationError(f"{what}: expected an image of {intr.height}x{intr.width} (height x width) to match its "
                              f"intrinsics, got shape {image.shape}")
    return image


def _resample(image: np.ndarray, maps, interpolation: int | None) -> np.ndarray:
    import cv2

    interp = cv2.INTER_LINEAR if interpolation is None else interpolation
    out = cv2.remap(image, maps[0], maps[1], interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(maps[0].shape + image.shape[2:])


def undistort_image(image, intrinsics: CameraIntrinsics, pinhole: CameraIntrinsics | None = None,
                    interpolation: int | None = None) -> tuple[np.ndarray, CameraIntrinsics]:
    """Resample a distorted camera's image into an undistorted pinhole camera.

    Args:
        image: (H, W) or (H, W, C) array at ``intrinsics``' size (uint8 RGB, or float: depth with
            ``interpolation=cv2.INTER_NEAREST``).
        intrinsics: the distorted camera (a pinhole one is returned unchanged, as a copy).
        pinhole: the undistorted working camera to resample into; default the same K and size
            (:func:`pinhole_of`). Must have no distortion.
        interpolation: a ``cv2.INTER_*`` flag; default bilinear.

    Returns:
        ``(image, pinhole)``: the (pinhole.height, pinhole.width[, C]) image, 0 where no source pixel exists, and
        the pinhole intrinsics it is in. The maps are cached per (intrinsics, pinhole).
    """
    image = _check_image(image, intrinsics, "undistort_image: image")
    pinhole = pinhole_of(intrinsics) if pinhole is None else pinhole
    if pinhole.model != "pinhole" or pinhole.distortion:
        raise ValidationError(f"undistort_image: pinhole must have no distortion, got {pinhole.model!r} "
                              f"distortion {pinhole.distortion}")
    if not intrinsics.distortion and intrinsics.model == "pinhole" and pinhole == intrinsics:
        return image.copy(), pinhole
    return _resample(image, _remap(intrinsics, pinhole, True), interpolation), pinhole


def distort_image(pinhole_image, pinhole_intrinsics: CameraIntrinsics, intrinsics: CameraIntrinsics,
                  interpolation: int | None = None) -> np.ndarray:
    """Resample an undistorted pinhole image (e.g. a render of the working camera) into the distorted camera.

    Args:
        pinhole_image: (h, w) or (h, w, C) array at ``pinhole_intrinsics``' size.
        pinhole_intrinsics: the undistorted camera ``pinhole_image`` is in (no distortion).
        intrinsics: the distorted target camera.
        interpolation: a ``cv2.INTER_*`` flag; default bilinear.

    Returns:
        (intrinsics.height, intrinsics.width[, C]) array, same dtype, 0 where the pinhole image has no source
        (outside its frame, or beyond the lens model's valid radius). Maps cached per (pinhole, intrinsics).
    """
    image = _check_image(pinhole_image, pinhole_intrinsics, "distort_image: pinhole_image")
    if pinhole_intrinsics.model != "pinhole" or pinhole_intrinsics.distortion:
        raise ValidationError(f"distort_image: pinhole_intrinsics must have no distortion, got "
                              f"{pinhole_intrinsics.model!r} distortion {pinhole_intrinsics.distortion}")
    if not intrinsics.distortion and intrinsics.model == "pinhole" and pinhole_intrinsics == intrinsics:
        return image.copy()
    return _resample(image, _remap(pinhole_intrinsics, intrinsics, False), interpolation)
