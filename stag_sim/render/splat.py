"""The numpy point splatter: spatial index, z-buffered footprint splatting, and hole filling.

Z-buffer: every splat write is one int64 key ``(float32 bits of z) << 24 | rgb24``. Positive float32 bit patterns
sort like the floats, so the minimum key of a pixel is its nearest point, and the key carries that point's exact
depth and colour with it: one ``np.minimum.at`` scatter is the whole z-test, with no sort and no second gather
(ties in depth go to the smaller colour, deterministically).

Footprint: a point stands for a voxel of edge ``s`` [m], which covers ``s * f / z`` pixels at depth ``z``. Far
points (footprint <= 1 px) write one pixel. Nearer points also write a 2 x 2 square of 2^j-pixel blocks in the
coarser z-buffer level j with 2^(j+1) >= s (see :class:`ZLayout`), so near surfaces stay closed at a cost of 5
writes per point however near it is (a plain s x s splat costs s^2 writes, and oblique ground overlaps many times);
the price is a footprint rounded up to a power of two (at most :data:`MAX_FOOTPRINT_PX`). The z-buffer images are
padded, so writes never need a bounds test: whatever falls outside the view is parked in the padding, which is
cropped away.

Spatial index: points are bucketed into cubic chunks; each chunk has a bounding sphere, tested per camera against
the frustum planes and the maximum range, so the cost scales with what a camera can see. Every chunk also holds
coarser levels of detail (the cloud voxel-downsampled at 2x, 4x, 8x the voxel size); far and grazing chunks draw
the coarsest level that still gives about ``lod_factor`` points per pixel of the chunk's projected bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Z-buffer value of a pixel no point reached (larger than every key).
EMPTY_KEY = np.int64(np.iinfo(np.int64).max)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(n, 3) uint8 RGB -> (n,) int32 ``r << 16 | g << 8 | b``."""
    c = np.asarray(colors).astype(np.int32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


@dataclass(frozen=True, eq=False)
class CameraBatch:
    """Per-camera projection parameters of one render call.

    Attributes:
        T_cam_from_world: (N, 4, 4) float64.
        cam_centres: (N, 3) float64 camera positions in the world [m].
        K: (N, 4) float64 (fx, fy, cx, cy) [px].
        width, height: image size shared by all N cameras [px].
        planes: (N, 5, 4) float64 world-frame half-spaces ``n . p + d >= 0`` (left, right, top, bottom, near);
            the side planes are pushed out by ``margin_px`` (the largest footprint) so edge splats are kept.
    """

    T_cam_from_world: np.ndarray
    cam_centres: np.ndarray
    K: np.ndarray
    width: int
    height: int
    planes: np.ndarray

    @classmethod
    def make(cls, T_world_from_cam: np.ndarray, K: np.ndarray, width: int, height: int, near: float,
             margin_px: float) -> "CameraBatch":
        R_wc = T_world_from_cam[:, :3, :3]
        c = T_world_from_cam[:, :3, 3]
        T_cw = np.zeros_like(T_world_from_cam)
        T_cw[:, :3, :3] = np.swapaxes(R_wc, 1, 2)
        T_cw[:, :3, 3] = -np.einsum("nji,nj->ni", R_wc, c)
        T_cw[:, 3, 3] = 1.0
        fx, fy, cx, cy = K.T
        m = margin_px + 0.5
        z = np.zeros_like(fx)
        # camera-frame normals: u >= -m, u <= W-1+m, v >= -m, v <= H-1+m, z >= near
        n_cam = np.stack([
            np.stack([fx, z, cx + m], 1), np.stack([-fx, z, width - 1 + m - cx], 1),
            np.stack([z, fy, cy + m], 1), np.stack([z, -fy, height - 1 + m - cy], 1),
            np.stack([z, z, np.ones_like(fx)], 1),
        ], 1)
        n_cam /= np.linalg.norm(n_cam, axis=2, keepdims=True)
        n_world = np.einsum("nij,nkj->nki", R_wc, n_cam)
        d = -np.einsum("nki,ni->nk", n_world, c)
        d[:, 4] -= near
        return cls(T_cw, c, K, int(width), int(height), np.concatenate([n_world, d[..., None]], 2))

    def __len__(self) -> int:
        return len(self.K)

    def sphere_visible(self, centres: np.ndarray, radii: np.ndarray, max_range: float, near: float) -> np.ndarray:
        """(N, M) bool: spheres (M, 3) [m] / (M,) [m] that may hold points seen by each camera with
        ``near`` < z < ``max_range`` (z along the optical axis, the same test the splatter applies per point)."""
        P = self.planes[:, :, :, None]  # (N, 5, 4, 1): signed distances (N, 5, M), summed in a fixed order
        s = P[:, :, 0] * centres[:, 0] + P[:, :, 1] * centres[:, 1] + P[:, :, 2] * centres[:, 2] + P[:, :, 3]
        vis = np.all(s >= -radii, axis=1)
        return vis & (s[:, 4] + near - radii < max_range)


class ChunkIndex:
    """Points sorted into cubic chunks, with coarser levels of detail, for frustum culling and LOD.

    Level 0 is the cloud itself (voxel ``voxel_size``); level l is the cloud voxel-downsampled again at
    ``voxel_size * 2^l`` (mean position and colour), so a coarse level is as evenly spaced as the original and
    its points splat with a footprint of their own voxel size: surfaces stay closed at every level.

    Args:
        points: (P, 3) float32 world positions [m].
        colors: (P, 3) uint8 RGB.
        chunk_size: chunk edge [m].
        voxel_size: voxel edge of ``points`` [m].
        num_levels: levels of detail (1 = no LOD).
        groups: (P,) int layer of each point (e.g. the camera whose images it came from), or None (one layer).
            Chunks and their levels of detail never mix layers, so a render can draw some layers only
            (``select_flat(allowed=...)``).

    Attributes:
        xyz1: (4, Q) float32 homogeneous positions (x, y, z [m], 1) of all levels, chunk by chunk (rows contiguous).
        rgb: (Q,) int32 packed colours ``r << 16 | g << 8 | b``.
        starts, counts: (L, M) int64 point range of chunk m at level l.
        voxel_sizes: (L,) float64 voxel edge of each level [m].
        chunk_group: (M,) int64 layer of each chunk; num_groups: layers [-].
        centres: (M, 3) float64 bounding-sphere centres [m]; radii: (M,) float64 [m]; lo, hi: (M, 3) boxes [m].
    """

    def __init__(self, points: np.ndarray, colors: np.ndarray, chunk_size: float, voxel_size: float,
                 num_levels: int = 4, groups: np.ndarray | None = None) -> None:
        points = np.asarray(points, np.float32).reshape(-1, 3)
        colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        groups = np.zeros(len(points), np.int64) if groups is None else np.asarray(groups, np.int64).reshape(-1)
        if len(groups) != len(points):
            raise ValueError(f"ChunkIndex: {len(groups)} group ids for {len(points)} points")
        self.voxel_sizes = voxel_size * 2.0 ** np.arange(num_levels)
        self.num_groups = int(groups.max()) + 1 if len(groups) else 1
        origin = points.min(axis=0) if len(points) else np.zeros(3, np.float32)
        lv_p, lv_c, lv_id = [[] for _ in range(num_levels)], [[] for _ in range(num_levels)], [[] for _ in range(num_levels)]
        chunk_group, M = [], 0
        for g in range(self.num_groups):  # each layer: its own levels of detail and chunks, numbered after the last
            sel = groups == g if self.num_groups > 1 else slice(None)
            levels = lod_pyramid(points[sel], colors[sel], self.voxel_sizes)
            cells = [_row_keys(np.floor((p - origin) / chunk_size).astype(np.int64)) for p, _ in levels]
            ids = np.unique(np.concatenate(cells))
            for lvl, ((p, c), cell) in enumerate(zip(levels, cells)):
                lv_p[lvl].append(p)
                lv_c[lvl].append(c)
                lv_id[lvl].append(M + np.searchsorted(ids, cell))
            chunk_group.append(np.full(len(ids), g, np.int64))
            M += len(ids)
        self.chunk_group = np.concatenate(chunk_group)
        self.starts = np.zeros((num_levels, M), np.int64)
        self.counts = np.zeros((num_levels, M), np.int64)
        xyz, rgb, offset = [], [], 0
        for lvl in range(num_levels):
            if M == 0:
                break
            p, c, cid = np.concatenate(lv_p[lvl]), np.concatenate(lv_c[lvl]), np.concatenate(lv_id[lvl])
            order = np.argsort(cid, kind="stable")
            self.counts[lvl] = np.bincount(cid, minlength=M)
            self.starts[lvl] = offset + np.concatenate([[0], np.cumsum(self.counts[lvl])[:-1]])
            xyz.append(p[order])
            rgb.append(c[order])
            offset += len(p)
        allp = np.concatenate(xyz) if xyz else np.zeros((0, 3), np.float32)
        self.xyz1 = np.ones((4, len(allp)), np.float32)
        self.xyz1[:3] = allp.T
        self.rgb = pack_rgb(np.concatenate(rgb)) if rgb else np.zeros(0, np.int32)
        self.lo = np.full((M, 3), np.inf)
        self.hi = np.full((M, 3), -np.inf)
        for lvl in range(num_levels if M else 0):  # boxes over all levels (coarse voxel means may stick out)
            cid = np.repeat(np.arange(M), self.counts[lvl])
            pts = allp[self.starts[lvl, 0]: self.starts[lvl, 0] + int(self.counts[lvl].sum())]
            np.minimum.at(self.lo, cid, pts)
            np.maximum.at(self.hi, cid, pts)
        self.centres = (self.lo + self.hi) / 2
        self.radii = np.linalg.norm(self.hi - self.lo, axis=1) / 2 + 1e-3
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], np.float64)
        self._corners = self.lo[:, None] + corners[None] * (self.hi - self.lo)[:, None]  # (M, 8, 3)

    @property
    def num_points(self) -> int:
        """Points at level 0 (the cloud itself)."""
        return int(self.counts[0].sum()) if self.counts.size else 0

    def select(self, cams: CameraBatch, max_range: float, near: float, lod_factor: float,
               cull: bool = True, allowed: np.ndarray | None = None) -> list[list[tuple[int, np.ndarray, np.ndarray]]]:
        """Per camera, ``[(level, starts, counts), ...]`` of the chunks to draw (see :meth:`select_flat`)."""
        cam, level, chunk = self.select_flat(cams, max_range, near, lod_factor, cull, allowed)
        bounds = np.searchsorted(cam, np.arange(len(cams) + 1))
        out = []
        for i in range(len(cams)):
            lv, ch = level[bounds[i]:bounds[i + 1]], chunk[bounds[i]:bounds[i + 1]]
            groups = []
            for lvl in np.unique(lv).tolist():
                m = ch[lv == lvl]
                groups.append((int(lvl), self.starts[lvl, m], self.counts[lvl, m]))
            out.append(groups)
        return out

    def select_flat(self, cams: CameraBatch, max_range: float, near: float, lod_factor: float,
                    cull: bool = True, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The chunks to draw: (k,) int64 camera, level of detail and chunk, camera by camera, chunks ascending.

        A chunk is drawn when its bounding sphere meets the frustum between ``near`` and ``max_range`` [m], at the
        coarsest level that still has ``lod_factor`` points per pixel of the chunk's projected bounding box (level 0
        for chunks reaching behind the camera). ``lod_factor`` 0 draws level 0 only; ``cull=False`` draws every
        level-0 point in every camera (the brute-force reference). ``allowed`` (N, num_groups) bool: the layers each
        camera may draw (None: all).
        """
        N, M = len(cams), self.starts.shape[1]
        if not cull or M == 0:
            vis = np.ones((N, M), bool)
        else:
            vis = cams.sphere_visible(self.centres, self.radii, max_range, near)
        if allowed is not None:
            vis &= np.asarray(allowed, bool)[:, self.chunk_group]
        cam, chunk = np.nonzero(vis)
        if not cull or M == 0:
            return cam, np.zeros(len(cam), np.int64), chunk
        level = np.zeros(len(cam), np.int64)
        if lod_factor > 0 and len(cam) and len(self.voxel_sizes) > 1:
            T = cams.T_cam_from_world[cam][:, :3, :, None]  # (k, 3, 4, 1)
            c = self._corners[chunk][:, None]  # (k, 1, 8, 3)
            pc = T[:, :, 0] * c[..., 0] + T[:, :, 1] * c[..., 1] + T[:, :, 2] * c[..., 2] + T[:, :, 3]  # (k, 3, 8)
            x, y, z = pc[:, 0], pc[:, 1], pc[:, 2]
            fx, fy, cx, cy = (k[:, None] for k in cams.K[cam].T)
            front = z.min(axis=1) > 1e-3
            zs = np.where(front[:, None], z, 1.0)
            u = np.clip(fx * x / zs + cx, -0.5, cams.width - 0.5)
            v = np.clip(fy * y / zs + cy, -0.5, cams.height - 0.5)
            need = lod_factor * (u.max(1) - u.min(1) + 1.0) * (v.max(1) - v.min(1) + 1.0)
            level = np.where(front, (self.counts[1:, chunk] >= need).sum(0), 0)
        return cam, level, chunk

    def gather(self, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(4, n) float32 homogeneous positions and (n,) int32 colours of the given chunk ranges."""
        keep = counts > 0
        starts, counts = starts[keep], counts[keep]
        if len(starts) == 0:
            return np.zeros((4, 0), np.float32), np.zeros(0, np.int32)
        # merge ranges that are adjacent in memory (neighbouring chunks), then copy slices
        ends = starts + counts
        brk = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        s0 = starts[np.concatenate([[0], brk])].tolist()
        e0 = ends[np.concatenate([brk - 1, [len(ends) - 1]])].tolist()
        if len(s0) == 1:
            return self.xyz1[:, s0[0]:e0[0]], self.rgb[s0[0]:e0[0]]
        return (np.concatenate([self.xyz1[:, a:b] for a, b in zip(s0, e0)], axis=1),
                np.concatenate([self.rgb[a:b] for a, b in zip(s0, e0)]))


def lod_pyramid(points: np.ndarray, colors: np.ndarray, voxel_sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Levels of detail of a cloud: level 0 is ``points`` (P, 3) / ``colors`` (P, 3) themselves, level l the level
    before voxel-downsampled at ``voxel_sizes[l]`` [m] (mean position and colour), so each level is as evenly spaced
    as its voxel. Returns ``[(points, colors), ...]``, one per entry of ``voxel_sizes``."""
    from stag_sim.voxels import VoxelAccumulator

    levels = [(points, colors)]
    for vs in list(voxel_sizes)[1:]:
        acc = VoxelAccumulator(vs)
        acc.add(*levels[-1])
        levels.append(acc.result())
    return levels


def _row_keys(ijk: np.ndarray) -> np.ndarray:
    """(n,) int64 keys of (n, 3) non-negative chunk indices (21 bits each)."""
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


#: Number of z-buffer resolution levels: level j has blocks of 2^j x 2^j pixels.
NUM_LEVELS = 4
_BLOCK = 1 << (NUM_LEVELS - 1)
#: The largest splat footprint: 2 x 2 blocks of the coarsest level [px].
MAX_FOOTPRINT_PX = 2 * _BLOCK


@dataclass(frozen=True)
class ZLayout:
    """Layout of the flat z-buffer of one render call: N cameras x NUM_LEVELS levels, each level a padded image.

    Level j has 2^j-pixel blocks: a point whose footprint is s > 1 pixels writes a 2 x 2 square of blocks at the
    level with 2^j >= s / 2, so no point needs more than 4 block writes however near it is. The levels are
    upsampled (nearest) and min-combined at the end. Every level image is padded by ``pad`` pixels on all sides
    (whatever falls outside the view is parked there, so writes need no bounds test).

    Attributes:
        n, width, height: cameras and image size [px].
        pad: padding [px], a multiple of the coarsest block, >= the largest footprint.
        hp, wp: padded level-0 image size [px] (multiples of the coarsest block).
    """

    n: int
    width: int
    height: int
    pad: int
    hp: int
    wp: int

    @classmethod
    def make(cls, n: int, width: int, height: int, max_size: int) -> "ZLayout":
        pad = -(-cls.reach_px(max_size) // _BLOCK) * _BLOCK
        rnd = lambda x: -(-x // _BLOCK) * _BLOCK  # noqa: E731
        return cls(n, width, height, pad, rnd(height + 2 * pad), rnd(width + 2 * pad))

    @staticmethod
    def reach_px(max_size: int) -> int:
        """How far [px] from its projected centre a point can write: its footprint plus the block rounding."""
        return int(max_size) + _BLOCK

    def level_shape(self, j: int) -> tuple[int, int]:
        return self.hp >> j, self.wp >> j

    def level_base(self, j: int) -> int:
        """Flat offset of level j (all N cameras) in the buffer."""
        return sum(self.n * (self.hp >> k) * (self.wp >> k) for k in range(j))

    @property
    def size(self) -> int:
        return self.level_base(NUM_LEVELS)

    def camera_offsets(self, i: int) -> np.ndarray:
        """(NUM_LEVELS,) int64 flat offset of camera i's image at each level."""
        return np.array([self.level_base(j) + i * (self.hp >> j) * (self.wp >> j) for j in range(NUM_LEVELS)], np.int64)

    def compose(self, zbuf: np.ndarray, i: int) -> np.ndarray:
        """Min-combine the levels of camera i: (H, W) int64 keys of its visible image area."""
        p, H, W = self.pad, self.height, self.width
        off = self.camera_offsets(i)
        out = zbuf[off[0]: off[0] + self.hp * self.wp].reshape(self.hp, self.wp)[p:p + H, p:p + W].copy()
        for j in range(1, NUM_LEVELS):
            h, w = self.level_shape(j)
            b = 1 << j
            lv = zbuf[off[j]: off[j] + h * w].reshape(h, w)[p // b: -(-(p + H) // b), p // b: -(-(p + W) // b)]
            if (lv != EMPTY_KEY).any():
                up = np.repeat(np.repeat(lv, b, axis=0), b, axis=1)[:H, :W]
                np.minimum(out, up, out=out)
        return out


def projection_matrix(T_cam_from_src: np.ndarray, K: np.ndarray, pad: int) -> np.ndarray:
    """(..., 3, 4) float32 ``K' @ T[:3]`` of (..., 4, 4) transforms and (..., 4) intrinsics: source points
    (homogeneous) -> (u' z, v' z, z), where u' = u + pad + 0.5 and v' = v + pad + 0.5 are padded pixel coordinates
    shifted by half a pixel, so that truncating u', v' to integers rounds u, v to the nearest pixel. Written out
    (float64, then rounded once) so one camera or a batch gives the same bits in every backend."""
    T = np.asarray(T_cam_from_src, np.float64)
    K = np.asarray(K, np.float64)
    out = np.empty(T.shape[:-2] + (3, 4), np.float64)
    out[..., 0, :] = K[..., 0, None] * T[..., 0, :] + (K[..., 2, None] + pad + 0.5) * T[..., 2, :]
    out[..., 1, :] = K[..., 1, None] * T[..., 1, :] + (K[..., 3, None] + pad + 0.5) * T[..., 2, :]
    out[..., 2, :] = T[..., 2, :]
    return out.astype(np.float32)


def _f32_bits(x: float) -> np.uint32:
    return np.array([x], np.float32).view(np.uint32)[0]


def splat_keys(xyz1: np.ndarray, rgb: np.ndarray, T_cam_from_src: np.ndarray, K: np.ndarray, layout: ZLayout,
               offsets: np.ndarray, voxel_size: float, near: float, far: float, max_size: int,
               footprint_scale: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Project points into one camera and turn them into z-buffer writes.

    Args:
        xyz1: (4, n) float32 homogeneous points in the source frame (world or object) [m].
        rgb: (n,) int32 packed colours.
        T_cam_from_src: (4, 4) source -> OpenCV camera.
        K: (fx, fy, cx, cy) [px].
        layout: the z-buffer layout; offsets: (NUM_LEVELS,) this camera's flat offsets (``layout.camera_offsets``).
        voxel_size: edge of the voxel a point stands for [m]; its footprint is ``voxel_size * fx / z`` px, times
            ``footprint_scale``, capped at ``max_size`` px.
        near, far: z range drawn [m].

    Returns:
        A list of ``(pix, keys)``: (m,) int64 flat buffer indices and (m,) int64 z-buffer keys; scatter each with
        ``np.minimum.at``. Points outside [near, far) are parked on the camera's first (padding) pixel.
    """
    pad, wp, hp = layout.pad, layout.wp, layout.hp
    P = projection_matrix(T_cam_from_src, K, pad)
    x, y, z1 = xyz1[0], xyz1[1], xyz1[2]
    pc = []
    for r in range(3):  # explicit multiply-adds: BLAS is slow for (3, 4) @ (4, n)
        row = x * P[r, 0]
        row += y * P[r, 1]
        row += z1 * P[r, 2]
        row += P[r, 3]
        pc.append(row)
    z = pc[2]
    # near <= z < far as one unsigned compare: negative differences have the sign bit set
    zz = z - np.float32(near)
    zbits = zz.view(np.uint32)
    zok = zbits < _f32_bits(far - near)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iz = np.divide(np.float32(1.0), z)
        u = pc[0] * iz
        v = pc[1] * iz
        ui = u.astype(np.int64)  # truncation = rounding (see projection_matrix); garbage where not zok
        vi = v.astype(np.int64)
    np.clip(ui, 0, wp - 1, out=ui)
    np.clip(vi, 0, hp - 1, out=vi)
    vi *= wp
    vi += ui
    vi += offsets[0]
    pix = np.where(zok, vi, offsets[0])
    keys = z.view(np.int32).astype(np.int64)
    keys <<= 24
    keys |= rgb
    # points nearer than z_big have a footprint above one pixel: they also write blocks at a coarser level
    z_big = min(voxel_size * float(K[0]) * footprint_scale, far)
    if z_big <= near:
        return [(pix, keys)]
    big = np.flatnonzero(zbits < _f32_bits(z_big - near))
    if len(big) == 0:
        return [(pix, keys)]
    sb = np.minimum(np.float32(voxel_size * K[0] * footprint_scale) * iz[big], np.float32(max_size))
    j = footprint_level(sb * np.float32(0.5))
    b = np.float32(1.0) / (1 << j).astype(np.float32)
    # a 2 x 2 square of blocks of 2^j px (>= the footprint), the one nearest to centred on the point
    ub = np.floor(u[big] * b - np.float32(0.5)).astype(np.int64)
    vb = np.floor(v[big] * b - np.float32(0.5)).astype(np.int64)
    w_l = wp >> j
    np.clip(ub, 0, w_l - 2, out=ub)
    np.clip(vb, 0, (hp >> j) - 2, out=vb)
    vb *= w_l
    vb += ub
    vb += offsets[j]
    kb = keys[big]
    return [(pix, keys), (vb, kb), (vb + 1, kb), (vb + w_l, kb), (vb + (w_l + 1), kb)]


def footprint_level(half_size: np.ndarray) -> np.ndarray:
    """(m,) int64 z-buffer level j of footprints of ``2 * half_size`` (m,) float32 [px]: the smallest j in
    [0, NUM_LEVELS) with 2^j >= half_size, i.e. ``clip(ceil(log2(half_size)), 0, NUM_LEVELS - 1)`` computed by
    comparisons (exact at powers of two, and the same in every backend)."""
    j = np.zeros(half_size.shape, np.int64)
    for lvl in range(NUM_LEVELS - 1):
        j += half_size > np.float32(1 << lvl)
    return j


def decode_zbuffer(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(...) int64 z-buffer keys -> rgb (..., 3) uint8, depth (...) float32 [m] (0 = empty), valid (...) bool."""
    valid = keys != EMPTY_KEY
    k = np.where(valid, keys, 0)
    rgb = np.empty(k.shape + (3,), np.uint8)
    rgb[..., 0] = (k >> 16).astype(np.uint8)  # the casts keep the low byte
    rgb[..., 1] = (k >> 8).astype(np.uint8)
    rgb[..., 2] = k.astype(np.uint8)
    depth = (k >> 24).astype(np.int32).view(np.float32)
    return rgb, depth, valid


# --- hole filling ------------------------------------------------------------------------------------------------


def sky_bins(T_world_from_cam: np.ndarray, K: np.ndarray, width: int, pixels: np.ndarray, num_bins: int) -> np.ndarray:
    """(m,) int64 sky bin of the world elevation of the rays through flat pixel indices ``pixels`` (m,):
    ``num_bins`` equal bins over [0, pi/2] rad, -1 below the horizon."""
    fx, fy, cx, cy = (np.float32(k) for k in K)
    u = (pixels % width).astype(np.float32)
    v = (pixels // width).astype(np.float32)
    u -= cx
    u /= fx
    v -= cy
    v /= fy
    R = T_world_from_cam[:3, :3].astype(np.float32)
    d = R[:, 0, None] * u + R[:, 1, None] * v + R[:, 2, None]  # (3, m) world ray directions
    sin_elev = d[2] / np.sqrt((d * d).sum(0))
    return np.searchsorted(sky_edges(num_bins), sin_elev, side="right").astype(np.int64) - 1


def sky_edges(num_bins: int) -> np.ndarray:
    """(num_bins,) float32 sines of the lower elevation edges of the sky bins (equal bins over [0, pi/2] rad)."""
    return np.sin(np.linspace(0.0, np.pi / 2, num_bins + 1)[:-1]).astype(np.float32)


def push_pull_fill(rgb: np.ndarray, weight: np.ndarray) -> None:
    """Fill the holes of ``rgb`` (H, W, 3) uint8 in place by push-pull interpolation.

    ``weight`` (H, W) uint8 is 255 at known pixels and 0 at holes, where ``rgb`` must be 0. Push: average the known
    colours down an image pyramid, weights travelling with them (the first two halvings in one OpenCV call on the
    uint8 images, then float32). Pull: from the coarsest level up, blend each level's own colour with the upsampled
    coarser one by its coverage. Holes get the quarter-resolution result, upsampled; known pixels are untouched.
    """
    import cv2

    h, w = weight.shape
    size = ((w + 3) // 4, (h + 3) // 4)
    prem = [cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)]
    wts = [cv2.resize(weight, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)]
    while min(wts[-1].shape) > 2:
        hh, ww = wts[-1].shape
        size = ((ww + 1) // 2, (hh + 1) // 2)
        prem.append(cv2.resize(prem[-1], size, interpolation=cv2.INTER_AREA))
        wts.append(cv2.resize(wts[-1], size, interpolation=cv2.INTER_AREA))
    top_w = wts[-1]
    mean = prem[-1].reshape(-1, 3).sum(0) / max(float(top_w.sum()), 1e-6)
    filled = np.where(top_w[..., None] > 0, prem[-1] / np.maximum(top_w, 1e-6)[..., None], mean).astype(np.float32)
    for lvl in range(len(prem) - 2, -1, -1):
        hh, ww = wts[lvl].shape
        up = cv2.resize(filled, (ww, hh), interpolation=cv2.INTER_LINEAR)
        wl = wts[lvl]
        alpha = np.minimum(wl * np.float32(4.0), np.float32(1.0))[..., None]
        own = prem[lvl] / np.maximum(wl, np.float32(1e-6))[..., None]
        filled = alpha * own + (1.0 - alpha) * up
    full = cv2.resize(np.clip(filled, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    np.copyto(rgb, full, where=(weight == 0)[..., None])
