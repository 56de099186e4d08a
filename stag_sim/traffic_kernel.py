"""The IDM leader search compiled (numba, through :mod:`stag_sim.render.kernels`' cached ``jit``): for every
simulated agent of every row, the nearest obstacle ahead on its own path — :func:`stag_sim.traffic.find_leaders`'s
rule, with its arithmetic, in loops that skip far obstacles before projecting them (numpy would project every
obstacle onto every segment of a 100 m window: most of an IDM step). Shapes: N rows, S simulated agents per row, O
obstacles per row, P path segments.
"""

from __future__ import annotations

import numpy as np

from stag_sim.render.kernels import _jit

CHUNK = 16  # path segments per bounding circle


@_jit()
def _segment_at(arc, nseg, s):
    """Index of the path segment holding arc length ``s`` (``searchsorted(arc, s, "right") - 1``, clamped)."""
    i = np.searchsorted(arc[:nseg + 1], s, side="right") - 1
    return min(max(i, 0), nseg - 1)


@_jit()
def leaders_kernel(sim_mask, sim_idx, s0, own_len, pts, dirs, seg, arc, heading, nseg, obs_xy, obs_len, obs_speed,
                   obs_yaw, obs_ok, lateral, horizon, gap, lead):
    """Fill ``gap`` (N, S) [m] (inf: a free road) and ``lead`` (N, S) [m/s]. Per agent: ``sim_mask``, ``sim_idx``
    (its obstacle index, never its own leader), ``s0`` arc length [m], ``own_len`` [m], its path (``pts`` (N, S,
    P+1, 2), ``dirs`` (N, S, P, 2), ``seg`` (N, S, P), ``arc`` (N, S, P+1), ``heading`` (N, S, P), ``nseg`` (N,
    S)); per obstacle: ``obs_xy`` (N, O, 2), ``obs_len``, ``obs_speed``, ``obs_yaw``, ``obs_ok`` (N, O)."""
    N, S = sim_mask.shape
    O = obs_xy.shape[1]
    for n in range(N):
        for a in range(S):
            gap[n, a] = np.inf
            lead[n, a] = 0.0
            if not sim_mask[n, a]:
                continue
            ns = nseg[n, a]
            sa = s0[n, a]
            i = _segment_at(arc[n, a], ns, sa)
            hx = pts[n, a, i, 0] + dirs[n, a, i, 0] * (sa - arc[n, a, i])
            hy = pts[n, a, i, 1] + dirs[n, a, i, 1] * (sa - arc[n, a, i])
            lo = _segment_at(arc[n, a], ns, sa - lateral - 1.0)
            hi = min(max(np.searchsorted(arc[n, a, :ns + 1], sa + horizon + lateral + 1.0, side="left"), lo + 1), ns)
            # the window in chunks of CHUNK segments, each bounded by a circle: an obstacle's nearest segment is
            # searched in the chunks that could hold one nearer than the best so far (exact: the same first minimum)
            nc = (hi - lo + CHUNK - 1) // CHUNK
            cx, cy, cr = np.empty(nc), np.empty(nc), np.empty(nc)
            for c in range(nc):
                m0, m1 = lo + c * CHUNK, min(lo + (c + 1) * CHUNK, hi)
                cx[c] = 0.5 * (pts[n, a, m0, 0] + pts[n, a, m1, 0])
                cy[c] = 0.5 * (pts[n, a, m0, 1] + pts[n, a, m1, 1])
                r = 0.0
                for m in range(m0, m1 + 1):
                    r = max(r, np.hypot(pts[n, a, m, 0] - cx[c], pts[n, a, m, 1] - cy[c]))
                cr[c] = r * (1.0 + 1e-9) + 1e-9
            lb = np.empty(nc)
            best, best_along = np.inf, 0.0
            for o in range(O):
                if not obs_ok[n, o] or o == sim_idx[n, a]:
                    continue
                ox, oy = obs_xy[n, o, 0], obs_xy[n, o, 1]
                if np.hypot(ox - hx, oy - hy) > horizon + lateral:
                    continue
                first = 0
                for c in range(nc):
                    lb[c] = max(np.hypot(ox - cx[c], oy - cy[c]) - cr[c], 0.0)
                    if lb[c] < lb[first]:
                        first = c
                bd, bj, bt = np.inf, lo, 0.0
                for step in range(nc + 1):
                    c = first if step == 0 else step - 1
                    if (step > 0 and c == first) or lb[c] * lb[c] > bd:
                        continue
                    for m in range(lo + c * CHUNK, min(lo + (c + 1) * CHUNK, hi)):
                        rx, ry = ox - pts[n, a, m, 0], oy - pts[n, a, m, 1]
                        t = min(max(rx * dirs[n, a, m, 0] + ry * dirs[n, a, m, 1], 0.0), seg[n, a, m])
                        fx = ox - (pts[n, a, m, 0] + dirs[n, a, m, 0] * t)
                        fy = oy - (pts[n, a, m, 1] + dirs[n, a, m, 1] * t)
                        d2 = fx * fx + fy * fy
                        if d2 < bd or (d2 == bd and m < bj):  # the first of equal minima, as argmin
                            bd, bj, bt = d2, m, t
                cross = dirs[n, a, bj, 0] * (oy - pts[n, a, bj, 1]) - dirs[n, a, bj, 1] * (ox - pts[n, a, bj, 0])
                ahead = arc[n, a, bj] + bt - sa
                if not (abs(cross) < lateral and ahead > 0.0 and ahead < horizon):
                    continue
                g = ahead - own_len[n, a] / 2.0 - obs_len[n, o] / 2.0
                if g < best:
                    k = _segment_at(arc[n, a], ns, arc[n, a, bj] + bt)
                    best, best_along = g, obs_speed[n, o] * np.cos(obs_yaw[n, o] - heading[n, a, k])
            if best < np.inf:
                gap[n, a] = best
                lead[n, a] = max(best_along, 0.0)
