"""The oracle: exact ray casting of the synthetic town for any camera or LiDAR pose at any time.

The town is a textured ground plane (z = 0) plus oriented boxes (buildings, tree trunks and crowns, street lights,
traffic signals, vehicle bodies and cabins). A view is rendered by casting one ray per pixel (numpy, float32):

1. Ground: analytic plane intersection; colour from the town's ground albedo mip chain (bilinear ``cv2.remap``,
   trilinear blend between the two mip levels that match the pixel's ground footprint, which keeps distant
   markings and noise from aliasing).
2. Boxes: each box is culled by range, by its screen-space (or, for LiDAR, azimuth/elevation) bounding window,
   and by occlusion (the box's nearest possible depth is behind everything already drawn in its window); the
   survivors run a vectorised slab test over the pixels of their window only, into a z-buffer.
3. Shading: face textures from face (u, v) coordinates in metres (facade windows and plaster noise, roofs,
   glass cabins, lamps), Lambertian light from a fixed sun, and a light distance haze. Signal lamps are emissive
   (unlit by the sun), coloured by their light's state at the render time (:func:`~stag_sim.synth.props.lamp_colors`). Rays that hit nothing
   within :data:`RENDER_RANGE` show the sky gradient and get depth 0.

Camera rays are parametrised by camera z (the direction has camera-frame z = 1), so the ray parameter of the hit
*is* the z-depth; LiDAR rays are unit vectors, so it is the range. Everything is a pure function of (town, pose,
intrinsics, time), hence deterministic and identical in any process.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from stag_sim.camera import CameraIntrinsics
from stag_sim.errors import RendererError
from stag_sim.geometry import check_transform, invert_transform, pose_xy_yaw
from stag_sim.synth.ground import GROUND_MIP_FACTOR, GROUND_RES, NOISE_TILE
from stag_sim.synth.props import (KIND_BUILDING, KIND_CAR_BODY, KIND_CAR_CABIN, KIND_CROWN, KIND_LAMP, KIND_TRUNK,
                                   car_parts, lamp_colors)
from stag_sim.synth.town import Town, build_town

RENDER_RANGE = 200.0  # [m] nothing farther is drawn (depth 0, sky colour); below the 255.99 m of depth-png16
NEAR = 0.05  # [m] boxes with a corner closer than this to the image plane are tested over the whole image
SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])  # unit direction towards the sun
AMBIENT = 0.58  # [-] light on faces turned away from the sun
HAZE_DISTANCE = 450.0  # [m] e-folding distance of the blend towards the horizon colour
SKY_HORIZON = np.array([206, 221, 236], np.float32)
SKY_ZENITH = np.array([92, 142, 212], np.float32)
FACADE_NOISE_RES = 0.04  # [m/texel] facade / bark / foliage noise texture scale
GLASS = np.array([52, 62, 76], np.float32)

LIDAR_T_EGO_FROM_SENSOR = pose_xy_yaw(0.94, 0.0, 0.0, 1.84)  # nuScenes-like roof mount, x forward
LIDAR_BEAMS = 32
LIDAR_ELEVATION_RANGE = (np.radians(-30.67), np.radians(10.67))  # [rad] lowest and highest beam
LIDAR_AZIMUTH_STEPS = 1024  # per sweep
LIDAR_RANGE = 70.0  # [m] no return beyond


def _remap(src: np.ndarray, mx: np.ndarray, my: np.ndarray, border: int) -> np.ndarray:
    """Bilinear lookup of ``src`` at N texel coordinates (pixel-centre convention), via ``cv2.remap``.

    cv2.remap needs maps below 32767 texels on each side, so the (N,) coordinates are laid out as rows of
    :data:`_REMAP_ROW` and clamped to just outside the source (callers pass in-range or pre-wrapped values).
    """
    import cv2

    n = len(mx)
    rows = max(-(-n // _REMAP_ROW), 1)
    pad = rows * _REMAP_ROW - n
    h, w = src.shape[:2]
    mxp = np.pad(np.clip(mx, -2, w + 1).astype(np.float32), (0, pad)).reshape(rows, _REMAP_ROW)
    myp = np.pad(np.clip(my, -2, h + 1).astype(np.float32), (0, pad)).reshape(rows, _REMAP_ROW)
    out = cv2.remap(src, mxp, myp, cv2.INTER_LINEAR, borderMode=border)
    return out.reshape((rows * _REMAP_ROW,) + src.shape[2:])[:n]


_REMAP_ROW = 4096


class TownOracle:
    """Ground-truth renderer of a :class:`~stag_sim.synth.town.Town` (what the generator itself uses).

    Times are float seconds since the scene's first frame. Object poses default to the town's analytic traffic at
    that time; ``object_poses`` overrides them per instance id (a mapping) or for all objects (a (K, 4, 4) array).
    """

    def __init__(self, town: Town) -> None:
        self.town = town
        town.ground_mips  # noqa: B018 - rasterised now (once per town), so forked render workers share them
        hs = town.box_half_sizes
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
        self._static_corners = town.box_centres[:, None] + np.einsum("nij,nkj->nki", town.box_rotations,
                                                                     signs[None] * hs[:, None])
        self._static_radius = np.linalg.norm(hs, axis=1)
        self._corner_signs = signs
        self._parts = [car_parts(s) for s in town.sizes]
        beams = np.linspace(*LIDAR_ELEVATION_RANGE, LIDAR_BEAMS)
        az = -np.pi + (np.arange(LIDAR_AZIMUTH_STEPS) + 0.5) * (2 * np.pi / LIDAR_AZIMUTH_STEPS)
        self._lidar_el, self._lidar_az = beams, az
        ce, se = np.cos(beams)[:, None], np.sin(beams)[:, None]
        self._lidar_dirs = np.stack(np.broadcast_arrays(ce * np.cos(az), ce * np.sin(az), se), -1)

    # --- public API --------------------------------------------------------------------------------------------

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return self.town.instance_ids

    def ego_pose(self, time_s: float) -> np.ndarray:
        """(4, 4) ``T_world_from_ego`` of the logged ego at ``time_s`` [s]."""
        return self.town.ego_pose(time_s)

    def object_poses(self, time_s: float) -> np.ndarray:
        """(K, 4, 4) ``T_world_from_object`` (box centres) of all tracked objects at ``time_s`` [s]."""
        return self.town.object_poses(time_s)

    def render(self, T_world_from_camera, intrinsics: CameraIntrinsics, time_s: float,
               object_poses: Mapping[str, np.ndarray] | np.ndarray | None = None, with_labels: bool = False):
        """Render a pinhole camera.

        Args:
            T_world_from_camera: (4, 4) camera pose (OpenCV axes).
            intrinsics: the camera's intrinsics (any resolution).
            time_s: time [s] since the first frame (places the moving vehicles).
            object_poses: optional override of object poses (see class docstring).
            with_labels: also return the per-pixel object index.

        Returns:
            rgb: (H, W, 3) uint8. depth: (H, W) float32 camera z-depth [m], 0 where nothing is hit within
            :data:`RENDER_RANGE` (sky). With ``with_labels``: labels (H, W) int32, the index into
            :attr:`instance_ids` of the object seen at each pixel, -1 for the static world and sky.
        """
        T = np.asarray(T_world_from_camera, np.float64)
        if T.shape != (4, 4):
            raise RendererError(f"T_world_from_camera: expected a (4, 4) transform, got shape {T.shape}")
        check_transform(T, "T_world_from_camera")
        h, w = int(intrinsics.height), int(intrinsics.width)
        # per-pixel ray directions with camera-frame z = 1, rotated to the world (no BLAS: keeps workers 1-thread)
        xc = ((np.arange(w) - intrinsics.cx) / intrinsics.fx)[None, :]
        yc = ((np.arange(h) - intrinsics.cy) / intrinsics.fy)[:, None]
        R = T[:3, :3]
        dirs = np.stack([R[k, 0] * xc + R[k, 1] * yc + R[k, 2] for k in range(3)], -1).astype(np.float32)
        T_cam_from_world = invert_transform(T)

        def windows(corners):
            """Pixel windows (r0, r1, c0, c1) and a lower bound of the depth of each box's corners (N, 8, 3)."""
            pc = corners @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3]
            z = pc[..., 2]
            zs = np.where(z > NEAR, z, 1.0)
            uu = intrinsics.fx * pc[..., 0] / zs + intrinsics.cx
            vv = intrinsics.fy * pc[..., 1] / zs + intrinsics.cy
            behind = (z <= NEAR).any(1)
            c0 = np.where(behind, 0, np.floor(uu.min(1) + 0.5))
            c1 = np.where(behind, w, np.floor(uu.max(1) + 0.5) + 1)
            r0 = np.where(behind, 0, np.floor(vv.min(1) + 0.5))
            r1 = np.where(behind, h, np.floor(vv.max(1) + 0.5) + 1)
            win = np.stack([np.clip(r0, 0, h), np.clip(r1, 0, h), np.clip(c0, 0, w), np.clip(c1, 0, w)], 1).astype(np.int64)
            visible = ~(z <= NEAR).all(1) & (win[:, 1] > win[:, 0]) & (win[:, 3] > win[:, 2])
            return [[tuple(wi)] for wi in win], np.maximum(z.min(1), 0.0), visible

        t, ids, boxes = self._cast(T[:3, 3], dirs, windows, time_s, object_poses, RENDER_RANGE)
        rgb = self._shade(T[:3, 3], dirs, t, ids, boxes, pixel_scale=1.0 / intrinsics.fx)
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
        if with_labels:
            labels = np.where(ids >= 0, boxes["obj"][np.maximum(ids, 0)], -1).astype(np.int32)
            return rgb, depth, labels
        return rgb, depth

    def lidar_scan(self, T_world_from_lidar, time_s: float,
                   object_poses: Mapping[str, np.ndarray] | np.ndarray | None = None) -> np.ndarray:
        """One 360 deg sweep of the 32-beam LiDAR at ``T_world_from_lidar`` (4, 4), all beams fired at ``time_s``.

        Returns (N, 4) float32 points (x, y, z [m] in the LiDAR frame, intensity 0..255), beam-major then azimuth
        order, only the rays with a return within :data:`LIDAR_RANGE`. Intensity is the surface albedo luminance
        times the cosine of the incidence angle (lane markings bright, asphalt dark).
        """
        T = np.asarray(T_world_from_lidar, np.float64)
        check_transform(T, "T_world_from_lidar")
        R = T[:3, :3]
        dirs_l = self._lidar_dirs
        dirs = np.einsum("hwj,ij->hwi", dirs_l, R).astype(np.float32)
        T_l_from_w = invert_transform(T)
        n_az = LIDAR_AZIMUTH_STEPS
        daz = 2 * np.pi / n_az
        el = self._lidar_el

        def windows(corners):
            pc = corners @ T_l_from_w[:3, :3].T + T_l_from_w[:3, 3]
            r_xy = np.hypot(pc[..., 0], pc[..., 1])
            centre = pc.mean(1)
            rad = np.linalg.norm(pc - centre[:, None], axis=-1).max(1)
            r_min = np.maximum(np.hypot(centre[:, 0], centre[:, 1]) - rad, 1e-3)
            r_max = r_xy.max(1)
            zmin, zmax = pc[..., 2].min(1), pc[..., 2].max(1)
            el_lo = np.arctan2(zmin, np.where(zmin < 0, r_min, r_max))
            el_hi = np.arctan2(zmax, np.where(zmax > 0, r_min, r_max))
            b0 = np.searchsorted(el, el_lo - 1e-6)
            b1 = np.searchsorted(el, el_hi + 1e-6)
            az_c = np.arctan2(centre[:, 1], centre[:, 0])
            rel = np.angle(np.exp(1j * (np.arctan2(pc[..., 1], pc[..., 0]) - az_c[:, None])))
            full = (np.abs(rel).max(1) > np.pi / 2) | (np.hypot(centre[:, 0], centre[:, 1]) <= rad)
            out = []
            for i in range(len(pc)):
                if full[i]:
                    out.append([(b0[i], b1[i], 0, n_az)])
                    continue
                a0 = int(np.floor((az_c[i] + rel[i].min() + np.pi) / daz - 0.5))
                a1 = int(np.floor((az_c[i] + rel[i].max() + np.pi) / daz - 0.5)) + 2
                spans = [(a0, a1)] if a0 >= 0 and a1 <= n_az else \
                    [(max(a0 % n_az, 0), n_az), (0, a1 - n_az)] if a1 > n_az else [(a0 + n_az, n_az), (0, a1)]
                out.append([(b0[i], b1[i], s0, s1) for s0, s1 in spans if s1 > s0])
            near = np.maximum(np.linalg.norm(centre, axis=1) - rad, 0.0)
            return out, near, b1 > b0

        t, ids, boxes = self._cast(T[:3, 3], dirs, windows, time_s, object_poses, LIDAR_RANGE)
        hit = np.isfinite(t)
        albedo, _, cosi = self._surface(T[:3, 3], dirs, t, ids, boxes, pixel_scale=None)
        lum = np.einsum("hwc,c->hw", np.clip(albedo, 0, 255), np.array([0.299, 0.587, 0.114], np.float32))
        intensity = np.clip(np.rint(lum * (0.25 + 0.75 * cosi)), 0, 255)
        pts = dirs_l[hit].astype(np.float32) * t[hit][:, None]
        return np.concatenate([pts, intensity[hit][:, None].astype(np.float32)], 1).astype(np.float32)

    # --- scene assembly ----------------------------------------------------------------------------------------

    def _resolve_object_poses(self, time_s, object_poses) -> np.ndarray:
        poses = self.object_poses(time_s)
        if object_poses is None:
            return poses
        if isinstance(object_poses, Mapping):
            for key, pose in object_poses.items():
                try:
                    k = self.town.instance_ids.index(key)
                except ValueError:
                    raise RendererError(f"object_poses: unknown instance id {key!r}") from None
                poses[k] = np.asarray(pose, np.float64)
            return poses
        arr = np.asarray(object_poses, np.float64)
        if arr.shape != poses.shape:
            raise RendererError(f"object_poses: expected ({len(poses)}, 4, 4) or a mapping of instance ids, got {arr.shape}")
        return arr.copy()

    def _boxes(self, origin, time_s, object_poses, max_range):
        """All candidate boxes (static within range + object parts) as a dict of arrays."""
        tw = self.town
        near = np.linalg.norm(tw.box_centres - origin, axis=1) - self._static_radius < max_range
        cen, rot, hs = [tw.box_centres[near]], [tw.box_rotations[near]], [tw.box_half_sizes[near]]
        kind, col, par = [tw.box_kinds[near]], [tw.box_colors[near]], [tw.box_params[near]]
        lamp = kind[0] == KIND_LAMP
        if lamp.any():  # signal lamps: lit or dark by their light's state now
            col[0] = col[0].copy()
            col[0][lamp] = lamp_colors(par[0][lamp], tw.scene_map.traffic_lights, time_s)
        obj = [np.full(int(near.sum()), -1, np.int64)]
        uid = [np.flatnonzero(near)]  # stable box identity (texture offsets), independent of culling
        corners = [self._static_corners[near]]
        poses = self._resolve_object_poses(time_s, object_poses)
        for k, (pc, ph, pk) in enumerate(self._parts):
            P = poses[k]
            if np.linalg.norm(P[:3, 3] - origin) - np.linalg.norm(tw.sizes[k]) / 2 >= max_range:
                continue
            c = pc @ P[:3, :3].T + P[:3, 3]
            cen.append(c)
            rot.append(np.repeat(P[None, :3, :3], len(pc), 0))
            hs.append(ph)
            kind.append(pk)
            col.append(np.repeat(tw.object_colors[k][None], len(pc), 0))
            par.append(np.zeros((len(pc), 2), np.float32))
            obj.append(np.full(len(pc), k, np.int64))
            uid.append(len(tw.box_centres) + 2 * k + np.arange(len(pc)))
            corners.append(c[:, None] + np.einsum("nij,nkj->nki", rot[-1], self._corner_signs[None] * ph[:, None]))
        return {
            "centre": np.concatenate(cen), "rot": np.concatenate(rot), "hs": np.concatenate(hs),
            "kind": np.concatenate(kind), "color": np.concatenate(col), "params": np.concatenate(par),
            "obj": np.concatenate(obj), "uid": np.concatenate(uid), "corners": np.concatenate(corners),
        }

    # --- ray casting -------------------------------------------------------------------------------------------

    def _cast(self, origin, dirs, windows_fn, time_s, object_poses, max_range):
        """Z-buffer of ray parameters ``t`` (inf = no hit) and box ids (-1 = ground or nothing)."""
        boxes = self._boxes(origin, time_s, object_poses, max_range)
        shape = dirs.shape[:2]
        zbuf = np.full(shape, np.inf, np.float32)
        ids = np.full(shape, -1, np.int32)
        wins, near, visible = windows_fn(boxes["corners"])
        o = origin.astype(np.float64)
        comps = [np.ascontiguousarray(dirs[..., k]) for k in range(3)]
        with np.errstate(divide="ignore"):
            inv_dz = np.float32(1.0) / comps[2]
        for i in np.flatnonzero(visible)[np.argsort(near[visible], kind="stable")]:
            Rb = boxes["rot"][i]
            ob = (o - boxes["centre"][i]) @ Rb
            hs = boxes["hs"][i]
            upright = abs(Rb[2, 0]) + abs(Rb[2, 1]) + abs(Rb[0, 2]) + abs(Rb[1, 2]) == 0.0
            for r0, r1, c0, c1 in wins[i]:
                zb = zbuf[r0:r1, c0:c1]
                if zb.max() < near[i]:  # fully occluded by nearer boxes
                    continue
                dx, dy, dz = (c[r0:r1, c0:c1] for c in comps)
                tn = tf = None
                for k in range(3):
                    if upright and k == 2:  # a box rotated about z only: its z slab uses the world z component
                        inv = inv_dz[r0:r1, c0:c1]
                    else:
                        with np.errstate(divide="ignore"):
                            inv = np.float32(1.0) / (dx * np.float32(Rb[0, k]) + dy * np.float32(Rb[1, k])
                                                     + dz * np.float32(Rb[2, k]))
                    with np.errstate(invalid="ignore"):
                        ta = np.float32(-hs[k] - ob[k]) * inv
                        tb = np.float32(hs[k] - ob[k]) * inv
                    lo, hi = np.fmin(ta, tb), np.fmax(ta, tb)
                    tn = lo if tn is None else np.fmax(tn, lo, out=tn)
                    tf = hi if tf is None else np.fmin(tf, hi, out=tf)
                upd = (tn <= tf) & (tn > 0) & (tn < zb)
                zb[upd] = tn[upd]
                ids[r0:r1, c0:c1][upd] = i
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(dirs[..., 2] < 0, np.float32(-origin[2]) / dirs[..., 2], np.float32(np.inf))
        ground = tg < zbuf
        t = np.where(ground, tg, zbuf)
        ids[ground] = -1
        t[t > max_range] = np.inf
        ids[~np.isfinite(t)] = -1
        return t, ids, boxes

    # --- shading -----------------------------------------------------------------------------------------------

    def _ground_albedo(self, x, y, footprint):
        """(N, 3) float32 trilinear mip lookup of the ground albedo at world (x, y) [m], texel footprint [m]."""
        import cv2

        tw = self.town
        level = np.clip(np.log(np.maximum(footprint, 1e-6) / GROUND_RES) / np.log(GROUND_MIP_FACTOR), 0,
                        len(tw.ground_mips) - 1).astype(np.float32)
        lo = np.floor(level).astype(np.int64)
        frac = (level - lo)[:, None]
        out = np.zeros((len(x), 3), np.float32)
        for lev, mip in enumerate(tw.ground_mips):
            wgt = np.where(lo == lev, 1 - frac[:, 0], 0) + np.where(lo + 1 == lev, frac[:, 0], 0)
            sel = np.flatnonzero(wgt > 0)
            if not len(sel):
                continue
            res = GROUND_RES * GROUND_MIP_FACTOR ** lev
            mx = (x[sel] - tw.ground_origin[0]) / res - 0.5
            my = (y[sel] - tw.ground_origin[1]) / res - 0.5
            val = _remap(mip, mx, my, cv2.BORDER_REPLICATE).astype(np.float32)
            out[sel] += val * wgt[sel, None].astype(np.float32)
        return out

    def _noise(self, u, v):
        """(N,) float32 periodic facade noise at face coordinates (u, v) [m]."""
        import cv2

        mx = np.mod(u / FACADE_NOISE_RES, NOISE_TILE)
        my = np.mod(v / FACADE_NOISE_RES, NOISE_TILE)
        return _remap(self.town.noise_tile, mx, my, cv2.BORDER_WRAP)

    def _surface(self, origin, dirs, t, ids, boxes, pixel_scale):
        """Surface properties of every ray's hit.

        Returns albedo (H, W, 3) float32 [0..255], sunlight factor (H, W) float32 and |cos| of the incidence angle
        (H, W) float32 (zero where nothing is hit). ``pixel_scale`` is the angular pixel size [rad] that picks the
        ground mip level (None: a fixed coarse level, enough for LiDAR intensities).
        """
        shape = t.shape
        tf = t.reshape(-1)
        idf = ids.reshape(-1)
        d = dirs.reshape(-1, 3)
        albedo = np.zeros((tf.size, 3), np.float32)
        light = np.zeros(tf.size, np.float32)
        cosi = np.zeros(tf.size, np.float32)
        o32 = origin.astype(np.float32)
        # ground
        g = np.flatnonzero(np.isfinite(tf) & (idf < 0))
        dg = d[g]
        tg = tf[g]
        p = o32 + dg * tg[:, None]
        length = np.sqrt((dg * dg).sum(1))
        cz = np.abs(dg[:, 2]) / length
        if pixel_scale is None:
            footprint = np.full(len(g), GROUND_RES * GROUND_MIP_FACTOR, np.float32)
        else:
            footprint = tg * length * np.float32(pixel_scale) / np.sqrt(np.maximum(cz, 0.02))
        albedo[g] = self._ground_albedo(p[:, 0], p[:, 1], footprint)
        light[g] = AMBIENT + (1 - AMBIENT) * SUN[2]
        cosi[g] = cz
        # boxes
        sel = np.flatnonzero(idf >= 0)
        if len(sel):
            b = idf[sel]
            ds = d[sel]
            p = o32 + ds * tf[sel][:, None]
            rot = boxes["rot"][b].astype(np.float32)
            local = np.einsum("nj,nji->ni", p - boxes["centre"][b].astype(np.float32), rot)
            hs = boxes["hs"][b].astype(np.float32)
            axis = np.argmax(np.abs(local) / hs, axis=1)
            sign = np.where(np.take_along_axis(local, axis[:, None], 1)[:, 0] >= 0, np.float32(1), np.float32(-1))
            normals = rot[np.arange(len(b)), :, axis] * sign[:, None]
            light[sel] = AMBIENT + (1 - AMBIENT) * np.maximum(np.einsum("nj,j->n", normals, SUN.astype(np.float32)), 0.0)
            cosi[sel] = np.abs((normals * ds).sum(1)) / np.sqrt((ds * ds).sum(1))
            kind = boxes["kind"][b]
            base = boxes["color"][b]
            uid = boxes["uid"][b]
            side = axis < 2
            # face coordinates [m]: horizontal from the face's left edge (shifted per box), vertical = height
            u = np.where(axis == 0, local[:, 1] + hs[:, 1], local[:, 0] + hs[:, 0])
            u = np.where(side, u, local[:, 0]) + (uid % 97).astype(np.float32) * np.float32(7.31)
            v = np.where(side, p[:, 2], local[:, 1])
            n = self._noise(u, v)
            c = base * (1 + np.float32(0.05) * n)[:, None]
            c = self._facades(c, kind, side, local, hs, axis, p, boxes["params"][b], uid, n)
            c = self._vehicles(c, kind, side, local, hs, axis, sign, n)
            for k, amp in ((KIND_CROWN, 0.16), (KIND_TRUNK, 0.12), (KIND_LAMP, 0.0)):
                m = kind == k
                c[m] = base[m] * (1 + np.float32(amp) * n[m])[:, None]
            light[sel[kind == KIND_LAMP]] = 1.0  # emissive
            albedo[sel] = c
        return albedo.reshape(shape + (3,)), light.reshape(shape), cosi.reshape(shape)

    def _shade(self, origin, dirs, t, ids, boxes, pixel_scale):
        """(H, W, 3) uint8 RGB: lit albedo with distance haze, sky gradient where nothing is hit."""
        albedo, light, _ = self._surface(origin, dirs, t, ids, boxes, pixel_scale)
        out = albedo * light[..., None]
        hit = np.isfinite(t)
        length = np.sqrt((dirs * dirs).sum(-1))
        h = np.flatnonzero(hit.reshape(-1))
        flat = out.reshape(-1, 3)
        haze = (1 - np.exp(-(t.reshape(-1)[h] * length.reshape(-1)[h]) / np.float32(HAZE_DISTANCE)))[:, None]
        flat[h] = flat[h] * (1 - haze) + SKY_HORIZON * haze
        s = np.flatnonzero(~hit.reshape(-1))
        elev = (np.clip(dirs.reshape(-1, 3)[s, 2] / length.reshape(-1)[s], 0.0, 1.0) ** np.float32(0.7))[:, None]
        flat[s] = SKY_HORIZON * (1 - elev) + SKY_ZENITH * elev
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    @staticmethod
    def _facades(c, kind, side, local, hs, axis, p, params, uid, n):
        """Buildings: windows on the walls above the ground floor, gravel roofs."""
        bld = kind == KIND_BUILDING
        wall = bld & side
        roof = bld & ~side
        c[roof] = np.array([112, 108, 104], np.float32) * (1 + 0.08 * n[roof])[:, None]
        if not wall.any():
            return c
        spacing, floor_h = params[wall, 0], params[wall, 1]
        width = 2 * np.where(axis[wall] == 0, hs[wall, 1], hs[wall, 0])
        uu = np.where(axis[wall] == 0, local[wall, 1] + hs[wall, 1], local[wall, 0] + hs[wall, 0])
        ncol = np.maximum(np.floor(width / spacing), 1)
        margin = (width - ncol * spacing) / 2
        fu = (uu - margin) / spacing
        fz = p[wall, 2] / floor_h
        du = np.minimum(fu % 1 - 0.25, 0.75 - fu % 1) * spacing  # [m] inside the window column if > 0
        dz = np.minimum(fz % 1 - 0.3, 0.78 - fz % 1) * floor_h
        top = 2 * hs[wall, 2] - p[wall, 2]
        inside = np.minimum(np.minimum(du, dz), np.minimum(top - 0.6, p[wall, 2] - floor_h))
        inside = np.where((fu >= 0) & (fu < ncol), inside, -1.0)
        alpha = np.clip(inside / 0.08 + 0.5, 0.0, 1.0)[:, None].astype(np.float32)
        # per-window tint from a hash of the window's cell and building index
        cell = np.floor(fu) * 12.9898 + np.floor(fz) * 78.233 + uid[wall] * 3.7
        tint = (np.sin(cell) * 43758.5453) % 1.0
        glass = GLASS * (0.8 + 0.5 * tint.astype(np.float32))[:, None]
        c[wall] = c[wall] * (1 - alpha) + glass * alpha
        return c

    @staticmethod
    def _vehicles(c, kind, side, local, hs, axis, sign, n):
        """Cars: dark sills, head/tail lights on the body; glass cabin sides with a painted roof."""
        body = kind == KIND_CAR_BODY
        sill = body & side & (local[:, 2] < -hs[:, 2] + 0.18)
        c[sill] = np.array([38, 38, 40], np.float32)
        lamp = body & (axis == 0) & (np.abs(local[:, 1]) > hs[:, 1] - 0.45) & (np.abs(local[:, 1]) < hs[:, 1] - 0.1) \
            & (local[:, 2] > hs[:, 2] - 0.22) & (local[:, 2] < hs[:, 2] - 0.05)
        front = sign > 0
        c[lamp & front] = np.array([240, 236, 210], np.float32)
        c[lamp & ~front] = np.array([200, 30, 30], np.float32)
        cab_side = (kind == KIND_CAR_CABIN) & side
        c[cab_side] = GLASS * (1 + 0.05 * n[cab_side])[:, None]
        return c


def oracle_for_scene(scene_log) -> TownOracle:
    """The oracle of a scene made by :func:`stag_sim.synth.generate_scene` (rebuilt from its seed).

    Raises :class:`~stag_sim.errors.SceneError` when the scene is not a synthetic town scene.
    """
    from stag_sim.errors import SceneError
    from stag_sim.synth.generate import GENERATOR_NAME, GENERATOR_VERSION

    meta = scene_log.metadata or {}
    if scene_log.source != "synthetic" or meta.get("generator") != GENERATOR_NAME or "seed" not in meta:
        raise SceneError(f"scene {scene_log.name!r}: not a synthetic town scene (source={scene_log.source!r}); "
                         "the oracle exists only for scenes made by stag_sim.synth.generate_scene")
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise SceneError(f"scene {scene_log.name!r}: made by synth generator version {meta.get('generator_version')}, "
                         f"this is version {GENERATOR_VERSION}; regenerate the scene")
    return TownOracle(build_town(int(meta["seed"])))
