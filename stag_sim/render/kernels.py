"""Compiled CPU kernels of the point renderer (numba): the numpy splatter's algorithm in one pass per point.

The one module of :mod:`stag_sim.render` that imports numba; the renderer imports it only when built with the
``numba`` backend (``PointRenderer.backend``). :func:`render_keys` does, for every camera (cameras shared among
threads by ``prange``, see :func:`schedule`): clear the camera's z-buffer levels, then per point: transform,
near/far test, project, footprint from depth, z-test (min of the packed int64 key), write; then compose the levels
and decode the keys into rgb / depth / valid; then fill the camera's holes (:func:`fill_camera`: the far-field map,
the sky with the exact arithmetic of :func:`stag_sim.render.splat.sky_bins`, then push-pull).

Arithmetic is the numpy path's float32 arithmetic, operation by operation (no fastmath, so no fused
multiply-adds), so rgb / depth / valid before hole filling are byte-identical to ``backend="numpy"`` (the
kernel skips one kind of write the numpy path makes, which cannot change the composed image: see
:func:`splat_range`). Push-pull is compiled too, on an exact 2 x 2 box pyramid instead of OpenCV's ``INTER_AREA``
resizes, so filled hole pixels differ slightly from the numpy path (known pixels never do).

Threads: numba's ``workqueue`` layer unless ``NUMBA_THREADING_LAYER`` says otherwise (OpenMP's spin-waiting
threads cost ~1.5x wall time on a busy 2-core machine, where the Python part of a render competes with them);
the workqueue layer must not be entered from two Python threads at once, so calls go through :data:`LOCK`.

Compiled functions are cached on disk (``cache=True``: beside this file, else numba's user cache directory) so
the compile time (~9 s) is paid once per machine; where no cache directory is writable they compile per process.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
from numba import prange

from stag_sim.render.splat import EMPTY_KEY, NUM_LEVELS

if NUM_LEVELS != 4:  # the kernels spell out the 4 z-buffer levels (footprint level tests, compose)
    raise ImportError(f"stag_sim.render.kernels is written for 4 z-buffer levels, splat.NUM_LEVELS is {NUM_LEVELS}")


if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

#: Held around every call of a parallel kernel (see the module docstring).
LOCK = threading.Lock()


def _jit(**kw):
    """``numba.njit(cache=True, error_model="numpy")`` (no zero-division checks: divisors are tested before), falling
    back to no cache where no cache directory is writable."""
    kw["error_model"] = "numpy"

    def deco(f):
        try:
            return numba.njit(cache=True, **kw)(f)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **kw)(f)
    return deco


@_jit()
def kmin(a, b):
    """min of two non-negative int64 without a branch (LLVM turns ``min`` into a branch here, which mispredicts
    on z-tests about half the time)."""
    d = a - b
    return b + (d & (d >> 63))


@_jit()
def splat_range(xyz, rgb, start, count, P, scale, zbig, zok, near, max_size, off, wp, hp, zbuf):
    """Z-buffer points ``start:start + count`` of ``xyz`` (4, Q) / ``rgb`` (Q,) with the (12,) projection ``P``
    (see :func:`stag_sim.render.splat.splat_keys`, whose float32 arithmetic this repeats). A point with a
    footprint above one pixel writes only its 2 x 2 blocks: they always cover its own pixel (the padding keeps
    clipped blocks out of view), so the level-0 write the numpy path also makes cannot change the composed image."""
    p00, p01, p02, p03 = P[0], P[1], P[2], P[3]
    p10, p11, p12, p13 = P[4], P[5], P[6], P[7]
    p20, p21, p22, p23 = P[8], P[9], P[10], P[11]
    one, half = np.float32(1.0), np.float32(0.5)
    fwp, fhp, mone = np.float32(wp), np.float32(hp), np.float32(-1.0)
    off0 = off[0]
    for q in range(start, start + count):
        x, y, z1 = xyz[0, q], xyz[1, q], xyz[2, q]
        z = x * p20 + y * p21 + z1 * p22 + p23
        zz = z - near
        if not (zz >= 0 and zz < zok):  # also drops NaN
            continue
        iz = one / z
        u = (x * p00 + y * p01 + z1 * p02 + p03) * iz
        v = (x * p10 + y * p11 + z1 * p12 + p13) * iz
        key = (np.int64(np.float32(z).view(np.int32)) << 24) | np.int64(rgb[q])
        if zz >= zbig:
            ui = min(max(np.int64(min(max(u, np.float32(-1.0)), fwp)), 0), wp - 1)
            vi = min(max(np.int64(min(max(v, np.float32(-1.0)), fhp)), 0), hp - 1)
            pix = np.uint64(off0 + vi * wp + ui)
            zbuf[pix] = kmin(key, zbuf[pix])
        else:  # footprint above one pixel: a 2 x 2 square of 2^j-pixel blocks at level j
            yb = min(scale * iz, max_size) * half
            j = 0 if yb <= 1 else (1 if yb <= 2 else (2 if yb <= 4 else 3))
            b = one / np.float32(1 << j)
            w_l = wp >> j
            ub = min(max(np.int64(np.floor(min(max(u * b - half, mone), fwp))), 0), w_l - 2)
            vb = min(max(np.int64(np.floor(min(max(v * b - half, mone), fhp))), 0), (hp >> j) - 2)
            base = np.uint64(off[j] + vb * w_l + ub)
            zbuf[base] = kmin(key, zbuf[base])
            zbuf[base + 1] = kmin(key, zbuf[base + 1])
            b2 = base + np.uint64(w_l)
            zbuf[b2] = kmin(key, zbuf[b2])
            zbuf[b2 + 1] = kmin(key, zbuf[b2 + 1])


@_jit()
def render_camera(i, sxyz, srgb, oxyz, orgb, cam_ptr, it_src, it_start, it_count, it_param, params, zok, near,
                  max_size, offsets, hp, wp, pad, zbuf, rgb_out, depth_out, valid_out):
    """Camera i: clear its z-buffer levels, splat its items, compose the levels and decode into the outputs."""
    H, W = valid_out.shape[1], valid_out.shape[2]
    off = offsets[i]
    for j in range(4):
        zbuf[off[j]: off[j] + (hp >> j) * (wp >> j)] = EMPTY_KEY
    for it in range(cam_ptr[i], cam_ptr[i + 1]):
        pr = params[it_param[it]]  # P (12), scale, zbig
        if it_src[it] == 0:
            splat_range(sxyz, srgb, it_start[it], it_count[it], pr, pr[12], pr[13], zok, near, max_size, off, wp, hp,
                        zbuf)
        else:
            splat_range(oxyz, orgb, it_start[it], it_count[it], pr, pr[12], pr[13], zok, near, max_size, off, wp, hp,
                        zbuf)
    for r in range(H):  # compose the levels (nearest upsampling, min) and decode
        rr = r + pad
        for c in range(W):
            cc = c + pad
            k = zbuf[off[0] + rr * wp + cc]
            for j in range(1, 4):
                k = min(k, zbuf[off[j] + (rr >> j) * (wp >> j) + (cc >> j)])
            if k == EMPTY_KEY:
                valid_out[i, r, c] = False
                depth_out[i, r, c] = 0.0
                rgb_out[i, r, c, 0] = 0
                rgb_out[i, r, c, 1] = 0
                rgb_out[i, r, c, 2] = 0
            else:
                valid_out[i, r, c] = True
                depth_out[i, r, c] = np.int32(k >> 24).view(np.float32)
                rgb_out[i, r, c, 0] = np.uint8((k >> 16) & 255)
                rgb_out[i, r, c, 1] = np.uint8((k >> 8) & 255)
                rgb_out[i, r, c, 2] = np.uint8(k & 255)


@_jit()
def close_pinholes_camera(i, rgb, depth, valid, min_nb):
    """:func:`stag_sim.render.gaps.close_pinholes` for camera i, pixel for pixel (the same neighbour order)."""
    H, W = valid.shape[1], valid.shape[2]
    if min_nb <= 0 or min_nb > 8 or H < 3 or W < 3:
        return
    orig = valid[i].copy()
    dz = depth[i].copy()
    nbr = (-1, -1, -1, 0, 0, 1, 1, 1)
    nbc = (-1, 0, 1, -1, 1, -1, 0, 1)
    for r in range(1, H - 1):
        for c in range(1, W - 1):
            if orig[r, c]:
                continue
            count = 0
            best = -1
            bz = np.float32(np.inf)
            for k in range(8):
                rr, cc = r + nbr[k], c + nbc[k]
                if orig[rr, cc]:
                    count += 1
                    if dz[rr, cc] < bz:
                        bz = dz[rr, cc]
                        best = k
            if count >= min_nb:
                rr, cc = r + nbr[best], c + nbc[best]
                for ch in range(3):
                    rgb[i, r, c, ch] = rgb[i, rr, cc, ch]
                depth[i, r, c] = dz[rr, cc]
                valid[i, r, c] = True


@_jit(parallel=True)
def render_keys(sched_ptr, sched_cams, sxyz, srgb, oxyz, orgb, cam_ptr, it_src, it_start, it_count, it_param, params,
                zok, near, max_size, offsets, hp, wp, pad, zbuf, rgb_out, depth_out, valid_out, modelled_out, fill, R,
                K, sky, edges, has_sky, env, env_valid, env_min_el, env_idx, min_nb):
    """Render all cameras: worker t (in parallel) does cameras ``sched_cams[sched_ptr[t]:sched_ptr[t + 1]]``
    (see :func:`schedule`). Item k of camera i (``cam_ptr[i] <= k < cam_ptr[i + 1]``) is the point range
    ``it_start[k]:+it_count[k]`` of the static (``it_src`` 0: ``sxyz``, ``srgb``) or object (1: ``oxyz``, ``orgb``)
    cloud, drawn with ``params[it_param[k]]`` (12 projection entries, footprint scale, footprint z limit).
    ``modelled_out`` starts as a copy of ``valid_out``'s pixels once composed, plus the far-field hits. With
    ``fill``, holes are filled too (:func:`fill_camera`, arguments from ``R`` on)."""
    for t in prange(len(sched_ptr) - 1):
        for s in range(sched_ptr[t], sched_ptr[t + 1]):
            i = sched_cams[s]
            render_camera(i, sxyz, srgb, oxyz, orgb, cam_ptr, it_src, it_start, it_count, it_param, params, zok,
                          near, max_size, offsets, hp, wp, pad, zbuf, rgb_out, depth_out, valid_out)
            close_pinholes_camera(i, rgb_out, depth_out, valid_out, min_nb)
            modelled_out[i] = valid_out[i]
            if fill:
                fill_camera(i, rgb_out, valid_out, modelled_out, R, K, sky, edges, has_sky, env, env_valid,
                            env_min_el, env_idx)


def schedule(work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share cameras with estimated costs ``work`` (n,) among numba's threads, largest first to the least loaded
    (deterministic). Returns (T + 1,) int64 pointers into (n,) int64 camera indices, thread by thread."""
    T = max(1, min(numba.get_num_threads(), len(work)))
    load = np.zeros(T)
    lists: list[list[int]] = [[] for _ in range(T)]
    for i in np.argsort(-np.asarray(work, np.float64), kind="stable").tolist():
        t = int(np.argmin(load))
        lists[t].append(i)
        load[t] += work[i]
    ptr = np.cumsum([0] + [len(x) for x in lists]).astype(np.int64)
    return ptr, np.array([i for x in lists for i in x], np.int64)


@_jit()
def box_mean(src, w, sf):
    """2^sf x 2^sf box means of (h, w, 3) ``src`` and (h, w) ``w`` (edge boxes average the pixels they have)."""
    f = 1 << sf
    h, ww = w.shape
    h2, w2 = (h + f - 1) >> sf, (ww + f - 1) >> sf
    out = np.zeros((h2, w2, 3), np.float32)
    wo = np.zeros((h2, w2), np.float32)
    for r in range(h):
        r2 = r >> sf
        for c in range(ww):
            c2 = c >> sf
            wo[r2, c2] += w[r, c]
            for ch in range(3):
                out[r2, c2, ch] += src[r, c, ch]
    for r in range(h2):
        nr = min(f, h - r * f)
        for c in range(w2):
            ic = np.float32(1.0) / np.float32(nr * min(f, ww - c * f))
            wo[r, c] *= ic
            for ch in range(3):
                out[r, c, ch] *= ic
    return out, wo


@_jit()
def bilinear_taps(n_out, n_in):
    """Per output index of an (n_in -> n_out) resize with aligned pixel centres: the two input taps and the
    weight of the second (edges clamped)."""
    i0 = np.empty(n_out, np.int64)
    i1 = np.empty(n_out, np.int64)
    a = np.empty(n_out, np.float32)
    s = n_in / n_out
    for k in range(n_out):
        f = (k + 0.5) * s - 0.5
        fl = np.floor(f)
        a[k] = f - fl
        i0[k] = min(max(int(fl), 0), n_in - 1)
        i1[k] = min(max(int(fl) + 1, 0), n_in - 1)
    return i0, i1, a


@_jit()
def sample(x, r0, r1, ay, c0, c1, ax, ch):
    top = x[r0, c0, ch] * (1 - ax) + x[r0, c1, ch] * ax
    bot = x[r1, c0, ch] * (1 - ax) + x[r1, c1, ch] * ax
    return top * (1 - ay) + bot * ay


@_jit()
def push_pull(rgb, known):
    """Push-pull fill of one (H, W, 3) uint8 image in place (the algorithm of
    :func:`stag_sim.render.splat.push_pull_fill` on exact box means): ``known`` (H, W) bool marks the pixels to
    keep; the others get the quarter-resolution result, upsampled bilinearly."""
    H, W = known.shape
    a, b = box_mean(rgb, known, 2)  # 4 x 4: premultiplied colour (rgb is 0 where not known) and coverage
    prem, wts = [a], [b]
    while min(wts[-1].shape[0], wts[-1].shape[1]) > 2:
        a, b = box_mean(prem[-1], wts[-1], 1)
        prem.append(a)
        wts.append(b)
    top_p, top_w = prem[-1], wts[-1]
    tot = np.zeros(3, np.float64)
    tw = 0.0
    for r in range(top_w.shape[0]):
        for c in range(top_w.shape[1]):
            tw += top_w[r, c]
            for ch in range(3):
                tot[ch] += top_p[r, c, ch]
    filled = np.empty(top_p.shape, np.float32)
    for r in range(top_w.shape[0]):
        for c in range(top_w.shape[1]):
            for ch in range(3):
                if top_w[r, c] > 0:
                    filled[r, c, ch] = top_p[r, c, ch] / top_w[r, c]
                else:
                    filled[r, c, ch] = tot[ch] / max(tw, 1e-6)
    for lvl in range(len(prem) - 2, -1, -1):  # pull: blend each level's own colour with the coarser one
        wl, pl = wts[lvl], prem[lvl]
        h, w = wl.shape
        r0, r1, ay = bilinear_taps(h, filled.shape[0])
        c0, c1, ax = bilinear_taps(w, filled.shape[1])
        up = np.empty((h, w, 3), np.float32)
        for r in range(h):
            for c in range(w):
                al = min(wl[r, c] * np.float32(4.0), np.float32(1.0))
                iw = np.float32(1.0) / wl[r, c] if al > 0 else np.float32(0.0)
                for ch in range(3):
                    up[r, c, ch] = (al * pl[r, c, ch] * iw
                                    + (1 - al) * sample(filled, r0[r], r1[r], ay[r], c0[c], c1[c], ax[c], ch))
        filled = up
    r0, r1, ay = bilinear_taps(H, filled.shape[0])
    c0, c1, ax = bilinear_taps(W, filled.shape[1])
    for r in range(H):
        for c in range(W):
            if not known[r, c]:
                for ch in range(3):
                    val = sample(filled, r0[r], r1[r], ay[r], c0[c], c1[c], ax[c], ch) + np.float32(0.5)
                    rgb[r, c, ch] = np.uint8(min(max(val, np.float32(0.0)), np.float32(255.0)))


@_jit()
def fill_camera(i, rgb, valid, modelled, R, K, sky, edges, has_sky, env, env_valid, env_min_el, env_idx):
    """Fill the holes of image i of (n, H, W, 3) ``rgb`` in place: the far-field map's colour where it has one
    (map ``env_idx[i]``, none if negative; those pixels are set in ``modelled``), then the sky colour above the
    horizon (``has_sky``), then push-pull. R: (n, 3, 3) float32 world-from-camera rotations; K: (n, 4) float32
    (fx, fy, cx, cy); sky: (B, 3) uint8 colours of the elevation bins whose lower edges (sin of the elevation) are
    ``edges``; env: (E, He, We, 3) uint8 / env_valid: (E, He, We) bool, equirectangular far-field maps
    (:class:`stag_sim.far_field.EnvMap`) down to elevation ``env_min_el`` [rad]."""
    H, W = valid.shape[1], valid.shape[2]
    B = len(edges)
    known = valid[i].copy()
    if known.all():
        return
    fx, fy, cx, cy = K[i, 0], K[i, 1], K[i, 2], K[i, 3]
    Ri = R[i]
    e = env_idx[i]
    has_env = e >= 0
    e = max(e, 0)
    He, We = env_valid.shape[1], env_valid.shape[2]
    el_span = np.pi / 2 - env_min_el
    if has_sky or has_env:
        us = np.empty(W, np.float32)
        for c in range(W):
            us[c] = (np.float32(c) - cx) / fx
        for r in range(H):
            v = (np.float32(r) - cy) / fy
            for c in range(W):
                if known[r, c]:
                    continue
                u = us[c]
                d0 = Ri[0, 0] * u + Ri[0, 1] * v + Ri[0, 2]
                d1 = Ri[1, 0] * u + Ri[1, 1] * v + Ri[1, 2]
                d2 = Ri[2, 0] * u + Ri[2, 1] * v + Ri[2, 2]
                s = d2 / np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                if has_env:
                    el = np.arcsin(min(max(np.float64(s), -1.0), 1.0))
                    if el >= env_min_el:
                        az = np.arctan2(np.float64(d1), np.float64(d0))
                        ec = min(max(int((az + np.pi) / (2 * np.pi) * We), 0), We - 1)
                        er = min(max(int((np.pi / 2 - el) / el_span * He), 0), He - 1)
                        if env_valid[e, er, ec]:
                            for ch in range(3):
                                rgb[i, r, c, ch] = env[e, er, ec, ch]
                            known[r, c] = True
                            modelled[i, r, c] = True
                            continue
                if has_sky:
                    k = 0
                    while k < B and edges[k] <= s:
                        k += 1
                    if k > 0:  # above the horizon: bin k - 1
                        for ch in range(3):
                            rgb[i, r, c, ch] = sky[k - 1, ch]
                        known[r, c] = True
    if not known.all():
        push_pull(rgb[i], known)
