"""Ground textures of the synthetic town: periodic noise tiles and the ground albedo mip chain (grass, sidewalk slabs,
kerb, asphalt and painted markings) rasterised from the road centrelines on a world-aligned grid.
"""

from __future__ import annotations

import numpy as np

from stag_sim.synth.roads import JUNCTION_REACH, KERB_WIDTH, LANE_WIDTH, ROAD_HALF_WIDTH, SIDEWALK_WIDTH

MARKING_WIDTH = 0.15  # [m] painted line width
DASH_LENGTH, DASH_PERIOD = 3.0, 9.0  # [m] centre-line dash and dash + gap
STOP_LINE_WIDTH = 0.4  # [m]
GROUND_RES = 0.05  # [m/texel] ground albedo map resolution (mip level 0)
GROUND_MARGIN = 32.0  # [m] ground map extent beyond the ring road's centreline
GROUND_MIP_LEVELS = 3  # mip levels at 0.05, 0.2 and 0.8 m/texel
GROUND_MIP_FACTOR = 4  # linear downsampling factor between mip levels
NOISE_TILE = 256  # [texels] side of the periodic noise tiles


def periodic_noise(rng: np.random.Generator, n: int, feature_texels: float) -> np.ndarray:
    """(n, n) float32 smooth periodic noise, zero mean, unit std, features ~``feature_texels`` wide."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-f2 * (np.pi * feature_texels) ** 2 / 2)))
    out -= out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _raster_geoms(geoms, shape, origin, res, thickness_m: float | None = None) -> np.ndarray:
    """Anti-aliased uint8 mask of shapely polygons (filled) or lines (``thickness_m`` wide) on the ground grid."""
    import cv2

    shift = 4
    scale = (1 << shift) / res
    mask = np.zeros(shape, np.uint8)

    def px(coords):
        c = np.asarray(coords, np.float64)[:, :2]
        return np.round((c - np.asarray(origin)) * scale - 0.5 * (1 << shift)).astype(np.int32)

    for g in geoms:
        parts = getattr(g, "geoms", [g])
        for p in parts:
            if p.is_empty:
                continue
            if p.geom_type == "Polygon":
                cv2.fillPoly(mask, [px(p.exterior.coords)], 255, cv2.LINE_AA, shift)
                for hole in p.interiors:
                    cv2.fillPoly(mask, [px(hole.coords)], 0, cv2.LINE_AA, shift)
            else:
                th = max(int(round(thickness_m / res)), 1)
                cv2.polylines(mask, [px(p.coords)], False, 255, th, cv2.LINE_AA, shift)
    return mask


def ground_origin(W: float, H: float) -> tuple[float, float]:
    """(x0, y0) [m] of texel edge 0 of the ground albedo map of a town of half-extents (W, H)."""
    return (-W - GROUND_MARGIN, -H - GROUND_MARGIN)


def ground_noise(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(grain, stain) noise tiles of the ground albedo: the town's draws from ``rng`` for its ground, in order."""
    grain = periodic_noise(rng, NOISE_TILE, 2.5)  # ~12 cm grain at 5 cm/texel, 12.8 m period
    stain = periodic_noise(rng, 2 * NOISE_TILE, 40.0)  # ~2 m stains, 25.6 m period
    return grain, stain


def ground_albedo(W, H, road_lines, grain, stain, stop_lines=()) -> tuple[np.ndarray, ...]:
    """Ground albedo mip chain (grass, sidewalk tiles, kerb, asphalt, markings and the painted ``stop_lines``, each
    (2, 2) world xy end points [m]) from :func:`ground_origin` on, with the :func:`ground_noise` tiles ``grain`` and
    ``stain`` (a pure function of its arguments: no random draws)."""
    import cv2
    from shapely.geometry import LineString, box
    from shapely.ops import substring, unary_union

    x0, y0 = origin = ground_origin(W, H)
    nx = int(np.ceil(2 * (W + GROUND_MARGIN) / GROUND_RES))
    ny = int(np.ceil(2 * (H + GROUND_MARGIN) / GROUND_RES))
    shape = (ny, nx)
    road = unary_union([ln.buffer(ROAD_HALF_WIDTH, cap_style="flat") for ln in road_lines])
    kerb = unary_union([ln.buffer(ROAD_HALF_WIDTH + KERB_WIDTH, cap_style="flat") for ln in road_lines])
    walk = unary_union([ln.buffer(ROAD_HALF_WIDTH + SIDEWALK_WIDTH) for ln in road_lines])
    jr = JUNCTION_REACH
    junction_boxes = unary_union([box(W - jr, -jr, W + ROAD_HALF_WIDTH + 1, jr),
                                  box(-W - ROAD_HALF_WIDTH - 1, -jr, -W + jr, jr)])
    solid, dashes = [], []
    for ln in road_lines:
        for side in (1, -1):
            solid.append(ln.offset_curve(side * LANE_WIDTH).difference(junction_boxes))
        for a in np.arange(0.0, ln.length - DASH_LENGTH, DASH_PERIOD):
            d = substring(ln, a, a + DASH_LENGTH)
            if not d.intersects(junction_boxes):
                dashes.append(d)
    stops = [LineString(np.asarray(line, np.float64)) for line in stop_lines]
    m_walk = _raster_geoms([walk], shape, origin, GROUND_RES)
    m_kerb = _raster_geoms([kerb], shape, origin, GROUND_RES)
    m_road = _raster_geoms([road], shape, origin, GROUND_RES)
    m_mark = _raster_geoms(solid + dashes, shape, origin, GROUND_RES, MARKING_WIDTH)
    m_mark = np.maximum(m_mark, _raster_geoms(stops, shape, origin, GROUND_RES, STOP_LINE_WIDTH))

    grass_c = np.array([86, 118, 58], np.float32)
    walk_c = np.array([168, 164, 156], np.float32)
    kerb_c = np.array([196, 194, 188], np.float32)
    asphalt_c = np.array([82, 82, 86], np.float32)
    mark_c = np.array([232, 232, 226], np.float32)
    out = np.empty((ny, nx, 3), np.uint8)
    cols = np.arange(nx)
    xs = x0 + (cols + 0.5) * GROUND_RES
    for r0 in range(0, ny, 512):
        rows = np.arange(r0, min(r0 + 512, ny))
        ys = y0 + (rows + 0.5) * GROUND_RES
        g = grain[np.ix_(rows % NOISE_TILE, cols % NOISE_TILE)][..., None]
        st = stain[np.ix_(rows % (2 * NOISE_TILE), cols % (2 * NOISE_TILE))][..., None]
        # 2 m x 2 m sidewalk slabs: soft dark joints ~5 cm wide
        jx = np.exp(-((1.0 - np.abs(((xs + 1.0) % 2.0) - 1.0)) / 0.04) ** 2).astype(np.float32)
        jy = np.exp(-((1.0 - np.abs(((ys + 1.0) % 2.0) - 1.0)) / 0.04) ** 2).astype(np.float32)
        joints = np.maximum(jx[None, :], jy[:, None])[..., None]
        col = grass_c * (1 + 0.10 * g + 0.12 * st)
        sw = walk_c * (1 + 0.04 * g + 0.05 * st) * (1 - 0.18 * joints)
        a = m_walk[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + sw * a
        a = m_kerb[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + kerb_c * (1 + 0.03 * g) * a
        a = m_road[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + asphalt_c * (1 + 0.07 * g + 0.09 * st) * a
        a = m_mark[rows, :, None].astype(np.float32) * np.float32(1 / 255)
        col = col * (1 - a) + mark_c * (1 + 0.02 * g) * a
        out[rows] = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    mips = [out]
    for _ in range(1, GROUND_MIP_LEVELS):
        prev = mips[-1]
        size = (max(prev.shape[1] // GROUND_MIP_FACTOR, 1), max(prev.shape[0] // GROUND_MIP_FACTOR, 1))
        mips.append(cv2.resize(prev, size, interpolation=cv2.INTER_AREA))
    return tuple(mips)
