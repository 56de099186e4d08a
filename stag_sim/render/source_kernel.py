"""Compiled colour-per-source pass (numba): :mod:`stag_sim.render.source_colour`'s algorithm, one pixel at a time.

The numpy path of :func:`~stag_sim.render.source_colour.apply_source_colour` makes a dozen full-image arrays per
candidate view; this kernel walks each rendered pixel once (rows shared among threads by ``prange``), tries every
candidate view in registers and writes the blended colour. Same rules, same constants (passed in); colours agree
with the numpy path to rounding (bilinear sampling here, OpenCV's fixed-point bilinear there). Imported only where
numba is installed (the renderer's ``numba`` backend); calls go through the renderer kernels' lock.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange


@numba.njit(cache=True, inline="always")
def _bilinear(img, u, v, out):
    h, w = img.shape[0], img.shape[1]
    u = min(max(u, 0.0), w - 1.0)
    v = min(max(v, 0.0), h - 1.0)
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    u1, v1 = min(u0 + 1, w - 1), min(v0 + 1, h - 1)
    a, b = u - u0, v - v0
    for ch in range(3):
        out[ch] = ((1 - a) * (1 - b) * img[v0, u0, ch] + a * (1 - b) * img[v0, u1, ch]
                   + (1 - a) * b * img[v1, u0, ch] + a * b * img[v1, u1, ch])


@numba.njit(cache=True, parallel=True)
def source_colour_camera(rgb, taken, depth, valid, modelled, K, R, c0, owner_T, owner_half, images, scales,
                         sizes, src_depth, src_K, src_R, src_c, base, nearby, obj_M, obj_ok, consts):
    """Recolour one rendered camera in place.

    Args:
        rgb: (H, W, 3) uint8, recoloured; taken: (H, W) bool, set where a source coloured the pixel.
        depth, valid, modelled: (H, W) the render's z-depth [m], point-reached and modelled masks.
        K: (4,) fx, fy, cx, cy of the render; R: (3, 3) and c0: (3,) its ``T_world_from_camera``.
        owner_T: (O, 3, 4) ``T_obj_from_world`` of the drawn objects; owner_half: (O, 3) inflated half extents [m].
        images: (J, Hs, Ws, 3) uint8 candidate images (each at its sampling scale); scales: (J,) pixel scale.
        sizes: (J, 2) int (width, height) of each candidate at working resolution; src_depth: (J, Hd, Wd) float32.
        src_K: (J, 4); src_R: (J, 3, 3); src_c: (J, 3): the candidates' intrinsics and poses.
        base: (J,) viewpoint penalty; nearby: (J,) bool (no depth test, outranks the rest).
        obj_M: (J, O, 3, 4) world -> world motion of each drawn object from the render to candidate j's frame;
            obj_ok: (J, O) bool, the object is tracked in that frame.
        consts: (DEPTH_TOLERANCE_M, DEPTH_TOLERANCE_REL, FAR_M, BLEND_RAD, RANGE_WEIGHT, NEARBY_BONUS).
    """
    H, W = depth.shape
    J, O = images.shape[0], owner_T.shape[0]
    tol_m, tol_rel, far_m, blend, range_w, bonus = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    any_nearby = False
    for j in range(J):
        any_nearby |= nearby[j]
    for v in prange(H):
        pen = np.empty(J)
        col = np.empty((J, 3))
        tmp = np.empty(3)
        for u in range(W):
            x = (u - K[2]) / K[0]
            y = (v - K[3]) / K[1]
            kind = 0  # 1: surface point, 2: far-field direction, 3: hole (nearby sources only)
            if valid[v, u] and depth[v, u] > 0:
                kind, z = 1, depth[v, u]
            elif modelled[v, u]:
                kind, z = 2, 1.0
            elif any_nearby:
                kind, z = 3, 1e4
            if kind == 0:
                continue
            px = R[0, 0] * x + R[0, 1] * y + R[0, 2]
            py = R[1, 0] * x + R[1, 1] * y + R[1, 2]
            pz = R[2, 0] * x + R[2, 1] * y + R[2, 2]
            if kind == 2:
                nrm = np.sqrt(px * px + py * py + pz * pz)
                px, py, pz = px / nrm, py / nrm, pz / nrm
            else:
                px, py, pz = c0[0] + px * z, c0[1] + py * z, c0[2] + pz * z
            d_t = np.sqrt((px - c0[0]) ** 2 + (py - c0[1]) ** 2 + (pz - c0[2]) ** 2)
            k_own = -1
            if kind == 1:
                for k in range(O):
                    T = owner_T[k]
                    qx = T[0, 0] * px + T[0, 1] * py + T[0, 2] * pz + T[0, 3]
                    qy = T[1, 0] * px + T[1, 1] * py + T[1, 2] * pz + T[1, 3]
                    qz = T[2, 0] * px + T[2, 1] * py + T[2, 2] * pz + T[2, 3]
                    if abs(qx) <= owner_half[k, 0] and abs(qy) <= owner_half[k, 1] and abs(qz) <= owner_half[k, 2]:
                        k_own = k
                        break
            best = np.inf
            for j in range(J):
                pen[j] = np.inf
                if kind == 3 and not nearby[j]:
                    continue
                wx, wy, wz = px, py, pz
                if k_own >= 0:
                    if not obj_ok[j, k_own]:
                        continue
                    M = obj_M[j, k_own]
                    wx = M[0, 0] * px + M[0, 1] * py + M[0, 2] * pz + M[0, 3]
                    wy = M[1, 0] * px + M[1, 1] * py + M[1, 2] * pz + M[1, 3]
                    wz = M[2, 0] * px + M[2, 1] * py + M[2, 2] * pz + M[2, 3]
                Rs, cs = src_R[j], src_c[j]
                if kind == 2:
                    dx, dy, dz = wx, wy, wz
                else:
                    dx, dy, dz = wx - cs[0], wy - cs[1], wz - cs[2]
                sx = Rs[0, 0] * dx + Rs[1, 0] * dy + Rs[2, 0] * dz
                sy = Rs[0, 1] * dx + Rs[1, 1] * dy + Rs[2, 1] * dz
                sz = Rs[0, 2] * dx + Rs[1, 2] * dy + Rs[2, 2] * dz
                if sz <= (1e-3 if kind == 2 else 0.1):
                    continue
                su = src_K[j, 0] * sx / sz + src_K[j, 2]
                sv = src_K[j, 1] * sy / sz + src_K[j, 3]
                wj, hj = sizes[j, 0], sizes[j, 1]
                if su < -0.5 or su > wj - 0.5 or sv < -0.5 or sv > hj - 0.5:
                    continue
                iu = min(max(int(np.floor(su + 0.5)), 0), wj - 1)
                iv = min(max(int(np.floor(sv + 0.5)), 0), hj - 1)
                ds = src_depth[j, iv, iu]
                if kind == 1:
                    seen = nearby[j] or abs(ds - sz) <= max(tol_m, tol_rel * sz) or (np.isinf(ds) and sz >= far_m)
                    if not seen:
                        continue
                    d_s = np.sqrt(dx * dx + dy * dy + dz * dz)
                    cosang = ((px - c0[0]) * dx + (py - c0[1]) * dy + (pz - c0[2]) * dz) / max(d_t * d_s, 1e-9)
                    p = np.arccos(min(max(cosang, -1.0), 1.0)) + range_w * max(d_s / max(d_t, 1e-9) - 1.0, 0.0)
                elif kind == 2:
                    if not (nearby[j] or np.isinf(ds) or ds >= far_m):
                        continue
                    p = range_w * np.arccos(min(max(sz / np.sqrt(sx * sx + sy * sy + sz * sz), -1.0), 1.0))
                else:
                    p = 0.0
                p = base[j] - bonus if nearby[j] else p + base[j]
                s = scales[j]
                _bilinear(images[j], (su + 0.5) * s - 0.5, (sv + 0.5) * s - 0.5, tmp)
                pen[j] = p
                col[j, 0], col[j, 1], col[j, 2] = tmp[0], tmp[1], tmp[2]
                best = min(best, p)
            if not np.isfinite(best):
                continue
            acc0 = acc1 = acc2 = wsum = 0.0
            for j in range(J):
                if np.isfinite(pen[j]):
                    wgt = np.exp(-(pen[j] - best) / blend)
                    acc0 += wgt * col[j, 0]
                    acc1 += wgt * col[j, 1]
                    acc2 += wgt * col[j, 2]
                    wsum += wgt
            rgb[v, u, 0] = min(max(int(np.floor(acc0 / wsum + 0.5)), 0), 255)
            rgb[v, u, 1] = min(max(int(np.floor(acc1 / wsum + 0.5)), 0), 255)
            rgb[v, u, 2] = min(max(int(np.floor(acc2 / wsum + 0.5)), 0), 255)
            taken[v, u] = True
