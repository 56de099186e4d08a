"""Colour from the logged images: each rendered pixel takes its colour from the source views best suited to it.

A z-buffer over a cloud fused from many frames shows, at every pixel, whichever point lands nearest, in the colour
of whichever frame it was seen from. Small pose and timing errors between frames then mix colours from frames that
disagree by a few centimetres, and a longer log makes the picture worse. Image-based rendering keeps the geometry
fused but takes the colour per source (the unstructured-lumigraph idea): for every pixel of a render, the surface
point under it (the render's depth) is projected into the logged images the scene was built from
(:class:`~stag_sim.scene4d_types.SourceViews`); an image whose own depth there agrees with the point's distance
(the point is not hidden from it) offers its colour; the image whose ray to the point is closest to the render's
ray wins, with a soft blend among near-ties. Far-field pixels (sky, beyond the depth's reach) are directions: an
image that sees the far field in that direction offers its colour. Pixels on a tracked object are carried to each
source frame with the object's logged pose there, so a moving car is coloured from where it was when each image
was taken. A pixel no source explains keeps the splatted colour.

At a logged camera pose, the image taken there wins everywhere it sees: the render reproduces it up to the
geometry's errors at occlusion edges.
"""

from __future__ import annotations

import numpy as np

from stag_sim.scene4d_types import Scene4D, SourceViews

CANDIDATES = 6  # source views tried per rendered camera (the nearest by viewpoint)
AXIS_WEIGHT_M = 3.0  # [m/rad] viewpoint distance of a source = centre distance + this x optical-axis angle
DEPTH_TOLERANCE_M = 0.3  # [m] a source sees the point when its depth there is within this ...
DEPTH_TOLERANCE_REL = 0.06  # ... or this share of the point's depth
FAR_M = 40.0  # [m] points at least this far may take the colour of a source pixel that sees the far field
BLEND_RAD = 0.005  # [rad] soft blend among sources whose penalties are within ~this of the best one
AXIS_PENALTY = 0.05  # [rad/rad] per radian between a source's optical axis and the render's (another camera of
#                      the rig has another exposure and white balance: the same camera at another time is better)
CENTRE_PENALTY = 0.01  # [rad/m] per metre between a source's centre and the render's (far points, whose rays
#                        barely differ, still prefer the nearest capture)
RANGE_WEIGHT = 0.05  # [rad] penalty per unit of relative extra distance of a source (its pixel is coarser)
NEARBY_M = 0.1  # [m] a source captured this close to the render (and facing within NEARBY_RAD) needs no depth
NEARBY_BONUS = 1.0  # [rad] such a source's penalty is its viewpoint term less this: it outranks any other
NEARBY_RAD = 0.05  # test (parallax is below a pixel whatever the geometry's error): it sees what the render sees
OBJECT_MARGIN_M = 0.2  # [m] a pixel within this of a drawn object's box belongs to that object


def viewpoint_distance(T_world_from_cameras: np.ndarray, T_world_from_camera: np.ndarray) -> np.ndarray:
    """(V,) how far camera poses (V, 4, 4) are from one pose (4, 4) as viewpoints [m]: centre distance plus
    :data:`AXIS_WEIGHT_M` x the angle between optical axes; inf for cameras facing away (axes > 90 degrees)."""
    T = np.asarray(T_world_from_cameras, np.float64).reshape(-1, 4, 4)
    cos = T[:, :3, 2] @ T_world_from_camera[:3, 2]
    score = np.linalg.norm(T[:, :3, 3] - T_world_from_camera[:3, 3], axis=1) + AXIS_WEIGHT_M * np.arccos(np.clip(cos, -1, 1))
    score[cos <= 0.0] = np.inf
    return score


def candidate_views(views: SourceViews, T_world_from_camera: np.ndarray, count: int = CANDIDATES) -> np.ndarray:
    """Indices of the ``count`` source views nearest to a camera pose (4, 4) (:func:`viewpoint_distance`)."""
    score = viewpoint_distance(views.T_world_from_camera, T_world_from_camera)
    order = np.argsort(score, kind="stable")[:count]
    return order[np.isfinite(score[order])]


def _object_of_pixels(points: np.ndarray, obj_poses: np.ndarray, obj_mask: np.ndarray, halves: np.ndarray) -> np.ndarray:
    """(P,) int index of the drawn object whose (inflated) box holds each world point (P, 3), -1 for none."""
    owner = np.full(len(points), -1, np.int64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    for k in np.flatnonzero(obj_mask):
        T = obj_poses[k]
        half = halves[k] + OBJECT_MARGIN_M
        reach = np.abs(T[:3, :3]) @ half  # the box's world-axis-aligned half extent
        if np.any(T[:3, 3] - reach > hi) or np.any(T[:3, 3] + reach < lo):
            continue
        near = np.flatnonzero(np.all(np.abs(points - T[:3, 3]) <= reach, axis=1))
        p = (points[near] - T[:3, 3]) @ T[:3, :3]  # world -> box frame
        inside = near[np.all(np.abs(p) <= half, axis=1)]
        owner[inside[owner[inside] < 0]] = k
    return owner


def apply_source_colour(scene: Scene4D, rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray,
                        modelled: np.ndarray, poses: np.ndarray, K: np.ndarray, obj_poses: np.ndarray,
                        obj_mask: np.ndarray, cache: dict | None = None, compiled: bool = False) -> np.ndarray:
    """Recolour rendered pixels from the scene's source views, in place.

    Args:
        scene: the 4D scene (its :attr:`~stag_sim.scene4d_types.Scene4D.source_views` must be set).
        rgb: (N, H, W, 3) uint8 render, recoloured in place; depth: (N, H, W) float32 z-depth [m] (0: no point);
        valid: (N, H, W) bool, a point landed; modelled: (N, H, W) bool, the render's colour comes from the model
            (points or far field): pixels modelled but not valid are far-field directions.
        poses: (N, 4, 4) ``T_world_from_camera``; K: (N, 4) (fx, fy, cx, cy) [px].
        obj_poses: (N, K_obj, 4, 4) object poses drawn; obj_mask: (N, K_obj) bool.
        cache: a dict the caller keeps between calls (downscaled source images), or None.
        compiled: use the numba kernel (:mod:`stag_sim.render.source_kernel`, ~30x faster) instead of numpy.

    Returns:
        (N, H, W) bool: the pixels that took a source colour.
    """
    import cv2

    views = scene.source_views
    n, h, w = valid.shape
    taken = np.zeros((n, h, w), bool)
    halves = np.array([o.size for o in scene.objects], np.float64).reshape(-1, 3) / 2.0
    v_grid, u_grid = np.mgrid[0:h, 0:w]
    for i in range(n):
        cand = candidate_views(views, poses[i])
        if not len(cand):
            continue
        if compiled:
            _compiled_camera(scene, cand, rgb[i], taken[i], depth[i], valid[i], modelled[i], poses[i], K[i],
                             obj_poses[i], obj_mask[i], halves, cache)
            continue
        near = valid[i] & (depth[i] > 0)
        far = modelled[i] & ~near
        idx_near, idx_far = np.flatnonzero(near), np.flatnonzero(far)
        if not len(idx_near) and not len(idx_far):
            continue
        # the render's rays: surface points (near) and directions (far), world frame
        R, c0 = poses[i][:3, :3], poses[i][:3, 3]
        rays = np.stack([(u_grid.ravel() - K[i, 2]) / K[i, 0], (v_grid.ravel() - K[i, 3]) / K[i, 1],
                         np.ones(h * w)], 1)
        X = (rays[idx_near] * depth[i].ravel()[idx_near, None]) @ R.T + c0
        D = rays[idx_far] @ R.T
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        owner = _object_of_pixels(X, obj_poses[i], obj_mask[i], halves) if obj_mask[i].any() else np.full(len(X), -1)
        r_t = X - c0
        d_t = np.linalg.norm(r_t, axis=1)
        T_obj_from_world = {k: np.linalg.inv(obj_poses[i][k]) for k in np.unique(owner[owner >= 0])}
        best = np.full(len(idx_near) + len(idx_far), np.inf)
        pens, cols = [], []
        for j in cand:
            Xj, ok_obj = X, np.ones(len(X), bool)
            if T_obj_from_world:  # object pixels: where that surface was when view j was taken
                Xj = X.copy()
                f = int(views.frames[j])
                for k, T_ow in T_obj_from_world.items():
                    sel = owner == k
                    if not scene.object_valid[f, k]:
                        ok_obj[sel] = False
                        continue
                    M = scene.object_poses[f, k] @ T_ow
                    Xj[sel] = X[sel] @ M[:3, :3].T + M[:3, 3]
            pen, col = _sample_view(views, j, Xj, D, ok_obj, r_t, d_t, c0, R[:, 2], K[i, 0], cache, cv2)
            pens.append(pen)
            cols.append(col)
            best = np.minimum(best, pen)
        ok = np.isfinite(best)
        _nearby_fill(views, cand[0], rgb[i], taken[i], ~(near | far), near, depth[i], ok, idx_near, idx_far,
                     rays, R, c0, K[i, 0], cache, cv2)
        if not ok.any():
            continue
        acc, wsum = np.zeros((len(best), 3)), np.zeros(len(best))
        for pen, col in zip(pens, cols):
            wgt = np.where(np.isfinite(pen), np.exp(-(pen - np.where(ok, best, 0.0)) / BLEND_RAD), 0.0)
            acc += wgt[:, None] * col
            wsum += wgt
        flat = np.concatenate([idx_near, idx_far])[ok]
        out = rgb[i].reshape(-1, 3)
        out[flat] = np.clip(np.round(acc[ok] / wsum[ok, None]), 0, 255).astype(np.uint8)
        taken[i].reshape(-1)[flat] = True
    return taken


def _compiled_camera(scene: Scene4D, cand, rgb, taken, depth, valid, modelled, T, K, obj_poses, obj_mask, halves,
                     cache) -> None:
    """One camera through :func:`stag_sim.render.source_kernel.source_colour_camera` (arrays gathered here)."""
    from stag_sim.render.kernels import LOCK
    from stag_sim.render.source_kernel import source_colour_camera

    views = scene.source_views
    R, c0 = T[:3, :3], T[:3, 3]
    imgs = [_source_image(views, j, K[0], cache) for j in cand]
    hs, ws = max(im.shape[0] for im, _ in imgs), max(im.shape[1] for im, _ in imgs)
    images = np.zeros((len(cand), hs, ws, 3), np.uint8)
    for n, (im, _) in enumerate(imgs):
        images[n, :im.shape[0], :im.shape[1]] = im
    scales = np.array([s for _, s in imgs], np.float64)
    src_depth = views.depth[cand].astype(np.float32)
    Ts = views.T_world_from_camera[cand]
    dist = np.linalg.norm(Ts[:, :3, 3] - c0, axis=1)
    cos_axis = np.clip(Ts[:, :3, 2] @ R[:, 2], -1.0, 1.0)
    base = AXIS_PENALTY * np.arccos(cos_axis) + CENTRE_PENALTY * dist
    nearby = (dist <= NEARBY_M) & (cos_axis >= np.cos(NEARBY_RAD))
    ks = np.flatnonzero(obj_mask)
    T_ow = np.linalg.inv(obj_poses[ks]) if len(ks) else np.zeros((0, 4, 4))
    frames = views.frames[cand]
    obj_M = np.einsum("jkab,kbc->jkac", scene.object_poses[frames][:, ks], T_ow)[:, :, :3] if len(ks) else \
        np.zeros((len(cand), 0, 3, 4))
    obj_ok = scene.object_valid[frames][:, ks]
    consts = np.array([DEPTH_TOLERANCE_M, DEPTH_TOLERANCE_REL, FAR_M, BLEND_RAD, RANGE_WEIGHT, NEARBY_BONUS])
    with LOCK:
        source_colour_camera(rgb, taken, depth.astype(np.float32), valid, modelled, np.asarray(K, np.float64),
                             R.astype(np.float64), c0.astype(np.float64), np.ascontiguousarray(T_ow[:, :3]),
                             halves[ks] + OBJECT_MARGIN_M, images, scales, views.sizes[cand].astype(np.int64),
                             src_depth, views.K[cand].astype(np.float64), Ts[:, :3, :3].copy(), Ts[:, :3, 3].copy(),
                             base, nearby, np.ascontiguousarray(obj_M), np.ascontiguousarray(obj_ok), consts)


def _source_image(views: SourceViews, j: int, focal_px: float, cache: dict | None) -> tuple[np.ndarray, float]:
    """View ``j``'s image at about the render's scale (INTER_AREA downscaled when its focal length exceeds the
    render's ``focal_px`` by more than 15 %, so a sample does not alias) and the factor its pixel coordinates take."""
    import cv2

    wj, hj = (int(s) for s in views.sizes[j])
    img = views.images[j, :hj, :wj]
    ratio = float(views.K[j, 0]) / max(float(focal_px), 1e-9)
    if ratio <= 1.15:
        return img, 1.0
    w2, h2 = max(1, int(round(wj / ratio))), max(1, int(round(hj / ratio)))
    key = (j, w2, h2)
    if cache is not None and key in cache:
        return cache[key], w2 / wj
    small = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_AREA)
    if cache is not None:
        if len(cache) > 4 * len(views):
            cache.clear()
        cache[key] = small
    return small, w2 / wj


def _nearby_fill(views: SourceViews, j: int, rgb, taken, hole, near, depth, ok, idx_near, idx_far, rays, R, c0,
                 focal_px: float, cache: dict | None, cv2) -> None:
    """The pixels no source explains (holes, and points every source contradicts: the render's depth is wrong
    there), taken from source view ``j`` along the render's own rays when ``j`` was captured within
    :data:`NEARBY_M` of the render's centre and facing its way (parallax is then below a pixel whatever the depth
    error: a logged pose, or an ego standing still). In place on ``rgb`` (H, W, 3) and ``taken`` (H, W)."""
    T = views.T_world_from_camera[j]
    if np.linalg.norm(T[:3, 3] - c0) > NEARBY_M or T[:3, 2] @ R[:, 2] < np.cos(NEARBY_RAD):
        return
    rest = np.concatenate([idx_near[~ok[:len(idx_near)]], idx_far[~ok[len(idx_near):]], np.flatnonzero(hole)])
    if not len(rest):
        return
    z = np.where(near.reshape(-1)[rest], depth.reshape(-1)[rest], 1e4)  # no depth: far away
    pc = ((rays[rest] * z[:, None]) @ R.T + c0 - T[:3, 3]) @ T[:3, :3]
    u, v, inside = _project(views, j, pc, pc[:, 2] > 0.1)
    if not inside.any():
        return
    img, s = _source_image(views, j, focal_px, cache)
    col = _remap_points(img, (u + 0.5) * s - 0.5, (v + 0.5) * s - 0.5, inside, cv2.INTER_LINEAR, cv2)
    rest = rest[inside]
    rgb.reshape(-1, 3)[rest] = col[inside]
    taken.reshape(-1)[rest] = True


def _project(views: SourceViews, j: int, pc: np.ndarray, front: np.ndarray):
    """Pixel coordinates (u, v) (P,) in view ``j`` of camera-frame points ``pc`` (P, 3) and whether each is in front
    (``front``) and inside the image."""
    fx, fy, cx, cy = views.K[j]
    wj, hj = (int(s) for s in views.sizes[j])
    zs = np.where(front, pc[:, 2], 1.0)
    u, v = fx * pc[:, 0] / zs + cx, fy * pc[:, 1] / zs + cy
    return u, v, front & (u >= -0.5) & (u <= wj - 0.5) & (v >= -0.5) & (v <= hj - 0.5)


def _remap_points(img: np.ndarray, u: np.ndarray, v: np.ndarray, inside: np.ndarray, interpolation: int, cv2,
                  border=None) -> np.ndarray:
    """``img`` sampled at (u, v) (P,) where ``inside`` (``border`` value, or the nearest edge pixel, elsewhere):
    (P, ...) of ``img``'s dtype. cv2.remap takes maps under 32767 columns: the points go in as rows of 1024."""
    P = len(u)
    rows = max(1, -(-P // 1024))
    m1, m2 = np.full(rows * 1024, -10.0, np.float32), np.full(rows * 1024, -10.0, np.float32)
    m1[:P][inside], m2[:P][inside] = u[inside], v[inside]
    mode = cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT
    out = cv2.remap(img, m1.reshape(rows, 1024), m2.reshape(rows, 1024), interpolation, borderMode=mode,
                    borderValue=0 if border is None else border)
    return out.reshape((rows * 1024,) + img.shape[2:])[:P]


def _sample_view(views: SourceViews, j: int, X: np.ndarray, D: np.ndarray, ok_obj: np.ndarray, r_t: np.ndarray,
                 d_t: np.ndarray, c_render: np.ndarray, axis_render: np.ndarray, focal_px: float,
                 cache: dict | None, cv2) -> tuple[np.ndarray, np.ndarray]:
    """Penalty (P,) (inf where view ``j`` does not see the point) and colour (P, 3) float of view ``j`` for the
    render's surface points ``X`` (P_near, 3) then far directions ``D`` (P_far, 3); ``r_t`` (P_near, 3), ``d_t``
    (P_near,): the render's rays to the points and their lengths [m]; ``c_render`` (3,), ``axis_render`` (3,): the
    render's centre [m] and optical axis."""
    T = views.T_world_from_camera[j]
    R, c = T[:3, :3], T[:3, 3]
    wj, hj = (int(s) for s in views.sizes[j])
    pc = np.concatenate([(X - c) @ R, D @ R])  # camera frame (points, then directions)
    z = pc[:, 2]
    u, v, inside = _project(views, j, pc, np.r_[z[:len(X)] > 0.1, z[len(X):] > 1e-3])
    pen = np.full(len(pc), np.inf)
    if not inside.any():
        return pen, np.zeros((len(pc), 3))
    img, s = _source_image(views, j, focal_px, cache)
    col = _remap_points(img, (u + 0.5) * s - 0.5, (v + 0.5) * s - 0.5, inside, cv2.INTER_LINEAR, cv2).astype(np.float64)
    dsrc = _remap_points(views.depth[j, :hj, :wj].astype(np.float32), u, v, inside, cv2.INTER_NEAREST, cv2,
                         border=float("nan"))
    n_near = len(X)
    # near points: the source's depth agrees with the point's (not hidden), or both are far
    zn, dn = z[:n_near], dsrc[:n_near]
    with np.errstate(invalid="ignore"):
        seen = (np.abs(dn - zn) <= np.maximum(DEPTH_TOLERANCE_M, DEPTH_TOLERANCE_REL * zn)) | (np.isinf(dn) & (zn >= FAR_M))
    T_axis = R[:, 2] @ axis_render
    nearby = np.linalg.norm(c - c_render) <= NEARBY_M and T_axis >= np.cos(NEARBY_RAD)
    seen = (seen | nearby) & inside[:n_near] & ok_obj
    r_s = X - c
    d_s = np.linalg.norm(r_s, axis=1)
    cos = np.einsum("ij,ij->i", r_t, r_s) / np.maximum(d_t * d_s, 1e-9)
    pen_near = np.arccos(np.clip(cos, -1.0, 1.0)) + RANGE_WEIGHT * np.maximum(d_s / np.maximum(d_t, 1e-9) - 1.0, 0.0)
    base = (AXIS_PENALTY * np.arccos(np.clip(R[:, 2] @ axis_render, -1.0, 1.0))
            + CENTRE_PENALTY * np.linalg.norm(c - c_render))
    pen[:n_near] = np.where(seen, pen_near + base, np.inf)
    # far directions: the source sees the far field there; prefer the source whose centre is nearest the render's
    df = dsrc[n_near:]
    seen_far = inside[n_near:] & (np.isinf(df) | (df >= FAR_M) | nearby)
    off_axis = np.arccos(np.clip(pc[n_near:, 2], -1.0, 1.0))
    pen[n_near:] = np.where(seen_far, RANGE_WEIGHT * off_axis + base, np.inf)
    if nearby:  # a capture at the render's own viewpoint outranks every other (several such blend evenly)
        pen[np.isfinite(pen)] = base - NEARBY_BONUS
    return pen, col
