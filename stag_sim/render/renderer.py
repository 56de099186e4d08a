"""PointRenderer: render a :class:`~stag_sim.scene4d.Scene4D` from any camera poses, with objects at any pose."""

from __future__ import annotations

import importlib.util
from typing import Mapping, Sequence

import numpy as np

from stag_sim.camera import CameraIntrinsics, CameraRig
from stag_sim.errors import RendererError, StagSimError
from stag_sim.geometry import check_transform
from stag_sim.render.splat import (
    EMPTY_KEY, NUM_LEVELS, CameraBatch, ChunkIndex, ZLayout, decode_zbuffer, lod_pyramid, pack_rgb,
    projection_matrix, push_pull_fill, sky_bins, sky_edges, splat_keys,
)
from stag_sim.render.gaps import close_pinholes
from stag_sim.render.types import BACKENDS, RenderConfig, RenderResult
from stag_sim.scene4d import SKY_BINS, Scene4D

__all__ = ["BACKENDS", "PointRenderer", "RenderConfig", "RenderResult"]

class PointRenderer:
    """Z-buffered point splatting of a :class:`Scene4D` (static cloud + objects placed at given poses).

    Build once per scene (indexing and levels of detail cost ~1 s per million points), then call :meth:`render` or
    :meth:`render_rigs` every step. Stateless between calls: the same inputs give the same bytes. The default
    (numba) backend compiles its kernels on the first render: ~9 s once per machine, then loaded from numba's
    on-disk cache (~0.3 s per process).

    Args:
        scene: the 4D scene.
        config: renderer settings (default :class:`RenderConfig`).

    Attributes:
        backend: the backend in use (``numba``, ``numpy`` or ``torch``; ``auto`` resolved).
    """

    def __init__(self, scene: Scene4D, config: RenderConfig | None = None) -> None:
        self.scene = scene
        self.config = (config or RenderConfig()).validate()
        self.index = ChunkIndex(scene.static_points, scene.static_colors, self.config.chunk_size, scene.voxel_size,
                                self.config.lod_levels, scene.static_layer)
        self._layers = {name: g for g, name in enumerate(scene.static_layers)}
        # far-field maps: the scene's (0) and each camera layer's (1 + layer), stacked for the kernels
        env = scene.env_map
        maps = [env] + list(scene.layer_env_maps) if env is not None else []
        self._env_maps = maps
        self._env_rgb = (np.stack([m.colors if m is not None else np.zeros_like(env.colors) for m in maps])
                         if maps else np.zeros((1, 1, 1, 3), np.uint8))
        self._env_valid = (np.stack([m.valid if m is not None else np.zeros_like(env.valid) for m in maps])
                           if maps else np.zeros((1, 1, 1), bool))
        self._ids = {oid: k for k, oid in enumerate(scene.instance_ids)}
        # per object and level of detail: (4, M) float32 homogeneous box-frame points, (M,) int32 colours
        self._obj_points: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self._obj_voxels = scene.object_voxel_size * 2.0 ** np.arange(self.config.lod_levels)
        radii = []
        for o in scene.objects:
            levels = lod_pyramid(o.points, o.colors, self._obj_voxels)
            packed = []
            for p, c in levels:
                xyz1 = np.ones((4, len(p)), np.float32)
                xyz1[:3] = p.T
                packed.append((xyz1, pack_rgb(c)))
            self._obj_points.append(packed)
            radii.append(float(np.sqrt((np.abs(o.points) ** 2).sum(1).max())) + 1e-3 if len(o.points) else 0.0)
        self._obj_radii = np.asarray(radii, np.float64)
        self._obj_counts = np.array([[len(p[1]) for p in lv] for lv in self._obj_points], np.float64).reshape(
            len(radii), self.config.lod_levels)
        self._sky = _complete_sky(scene.sky_colors, scene.sky_valid)
        self._torch = None
        self.backend = _resolve_backend(self.config.backend)
        if self.backend == "torch":
            from stag_sim.render.torch_backend import TorchSplatter

            self._torch = TorchSplatter(self.index, self._obj_points, self.config.device)
        if self.backend == "numba":  # all objects' levels in one array, and where each (object, level) starts
            from stag_sim.render import kernels  # noqa: F401  (numba's threading layer is chosen on import)

            flat = [lv for levels in self._obj_points for lv in levels]
            self._obj_xyz1 = np.ascontiguousarray(np.concatenate([p for p, _ in flat], 1) if flat
                                                  else np.zeros((4, 0), np.float32))
            self._obj_rgb = np.concatenate([c for _, c in flat]) if flat else np.zeros(0, np.int32)
            sizes = np.array([len(c) for _, c in flat], np.int64)
            self._obj_starts = (np.cumsum(sizes) - sizes).reshape(len(self._obj_points), self.config.lod_levels)
            self._obj_sizes = sizes.reshape(self._obj_starts.shape)

    # --- inputs ------------------------------------------------------------------------------------------------

    def _check_cameras(self, camera_poses, intrinsics) -> tuple[np.ndarray, np.ndarray, int, int]:
        poses = np.asarray(camera_poses, dtype=np.float64)
        if poses.shape == (4, 4):
            poses = poses[None]
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise RendererError(f"camera_poses: expected (N, 4, 4) T_world_from_camera, got shape {poses.shape}")
        try:
            check_transform(poses, "camera_poses")  # all at once; on failure, again one by one to name the camera
        except StagSimError as batch_error:
            for i, T in enumerate(poses):
                try:
                    check_transform(T, f"camera_poses[{i}]")
                except StagSimError as e:
                    raise RendererError(f"{e} (a camera needs a finite rigid pose to look somewhere)") from None
            raise RendererError(str(batch_error)) from None
        intr = [intrinsics] * len(poses) if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
        if len(intr) != len(poses):
            raise RendererError(f"intrinsics: got {len(intr)} for {len(poses)} camera poses (give one, or one per pose)")
        for i, k in enumerate(intr):
            if not isinstance(k, CameraIntrinsics):
                raise RendererError(f"intrinsics[{i}]: expected a CameraIntrinsics, got {type(k).__name__}")
            try:
                k.validate()
            except StagSimError as e:
                raise RendererError(f"intrinsics[{i}]: {e}") from None
        sizes = {(k.width, k.height) for k in intr}
        if len(sizes) > 1:
            raise RendererError(f"intrinsics: all cameras of one call must share an image size, got {sorted(sizes)}")
        w, h = sizes.pop() if sizes else (1, 1)
        K = np.array([[k.fx, k.fy, k.cx, k.cy] for k in intr], np.float64).reshape(-1, 4)
        return poses, K, int(w), int(h)

    def _check_objects(self, object_poses, object_mask, n: int) -> tuple[np.ndarray, np.ndarray]:
        """-> poses (N, K, 4, 4) (possibly a broadcast view) and mask (N, K) bool."""
        K = len(self.scene.objects)
        if object_poses is None:
            return np.zeros((n, K, 4, 4)), np.zeros((n, K), bool)
        if isinstance(object_poses, Mapping):
            poses = np.tile(np.eye(4), (K, 1, 1))
            mask = np.zeros(K, bool)
            for oid, T in object_poses.items():
                if oid not in self._ids:
                    raise RendererError(f"object_poses: no object with instance id {oid!r} in scene {self.scene.name!r}")
                poses[self._ids[oid]] = np.asarray(T, np.float64)
                mask[self._ids[oid]] = True
        else:
            poses = np.asarray(object_poses, np.float64)
            mask = np.ones(poses.shape[:-2], bool) if object_mask is None else np.asarray(object_mask, bool)
        if poses.shape[-3:] != (K, 4, 4) or poses.ndim not in (3, 4) or (poses.ndim == 4 and poses.shape[0] != n):
            raise RendererError(f"object_poses: expected ({K}, 4, 4) or ({n}, {K}, 4, 4) in scene object order, got {poses.shape}")
        if mask.shape != poses.shape[:-2]:
            raise RendererError(f"object_mask: expected shape {poses.shape[:-2]}, got {mask.shape}")
        if mask.any():
            sel = poses[mask]
            bad = ~np.isfinite(sel).all(axis=(1, 2))
            if bad.any():
                raise RendererError(f"object_poses: non-finite pose for object {self._name_of(poses, mask, bad)}")
            try:
                check_transform(sel, "object_poses")
            except StagSimError as e:
                raise RendererError(str(e)) from None
        return np.broadcast_to(poses, (n, K, 4, 4)), np.broadcast_to(mask, (n, K))

    def _name_of(self, poses, mask, bad) -> str:
        k = np.argwhere(mask)[np.flatnonzero(bad)[0]][-1]
        return repr(self.scene.instance_ids[int(k)])

    # --- rendering ---------------------------------------------------------------------------------------------

    def render(self, camera_poses, intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
               object_poses: Mapping[str, np.ndarray] | np.ndarray | None = None,
               object_mask: np.ndarray | None = None, *, cull: bool = True,
               cameras: Sequence[str] | None = None) -> RenderResult:
        """Render N cameras in one call.

        Args:
            camera_poses: (N, 4, 4) ``T_world_from_camera`` (OpenCV camera frame) [m]; a single (4, 4) gives N = 1.
            intrinsics: one :class:`CameraIntrinsics` for all, or one per camera (same image size).
            object_poses: where to draw the objects: ``{instance_id: (4, 4) T_world_from_object}`` (objects not
                named are not drawn), or an array (K, 4, 4) / (N, K, 4, 4) in scene object order with
                ``object_mask`` (K,) / (N, K) bool (None = all). None draws no objects.
            cull: frustum culling and level of detail; False splats every point into every camera (the
                brute-force reference of the benchmark).
            cameras: the rig camera name of each pose (N,), or None. Named cameras get the ego body of the scene
                (:attr:`Scene4D.ego_layers`) composited over the render, as the real camera sees it, and draw only
                their own static layer where the scene has camera layers (:attr:`Scene4D.static_layers`).

        Returns:
            :class:`RenderResult` with (N, H, W, ...) arrays. Pixels no point reached take the far-field map's
            colour where it has one (``fill_holes``). A scene that kept its source images
            (:attr:`Scene4D.source_views`) colours every pixel it can from them (``RenderConfig.source_colour``).

        Raises:
            RendererError: non-finite or non-rigid poses, mismatched intrinsics, unknown object ids.

        Cameras with lens distortion are rendered as an undistorted pinhole (with margins where the lens sees
        beyond the pinhole's frame), resampled into the lens, then get their ego body (:mod:`stag_sim.render.lens`).
        """
        from stag_sim.render.lens import is_distorted, render_distorted

        if is_distorted(intrinsics):
            return render_distorted(self, camera_poses, intrinsics, object_poses, object_mask, cull, cameras)
        return self._render(camera_poses, intrinsics, object_poses, object_mask, cull, cameras)

    def _render(self, camera_poses, intrinsics, object_poses, object_mask, cull: bool, cameras,
                ego: bool = True) -> RenderResult:
        """:meth:`render` of pinhole cameras; ``ego``: composite the ego body (:meth:`_finish`)."""
        poses, K, w, h = self._check_cameras(camera_poses, intrinsics)
        obj_poses, obj_mask = self._check_objects(object_poses, object_mask, len(poses))
        n = len(poses)
        cfg = self.config
        cams = CameraBatch.make(poses, K, w, h, cfg.near, ZLayout.reach_px(cfg.max_footprint_px))
        obj_sets = self._visible_objects(cams, obj_poses, obj_mask, cull)
        layout = ZLayout.make(n, w, h, cfg.max_footprint_px)
        if cameras is not None and len(cameras) != n:
            raise RendererError(f"cameras: got {len(cameras)} names for {n} camera poses")
        allowed = self._allowed_layers(cameras, n)
        res = self._render_pass(cams, obj_sets, layout, poses, K, cull, allowed, cfg.fill_holes,
                                self._env_index(cameras, n))
        if allowed is not None and cfg.fill_holes and cfg.other_layers_fill and not allowed.all():
            # a camera drawn from its own layer: what neither its points, the far field nor the ego body explain is
            # drawn from the other cameras' layers (disocclusions), before generic hole filling is all that is left
            none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4, 4)))
            others = ~allowed & ~allowed.all(axis=1, keepdims=True)
            more = self._render_pass(cams, none, layout, poses, K, cull, others, False, None)
            take = ~res.coverage & more.valid
            res.rgb[take], res.depth[take], res.valid[take], res.modelled[take] = more.rgb[take], more.depth[take], True, True
        if cfg.source_colour and self.scene.source_views is not None:
            from stag_sim.render.source_colour import apply_source_colour

            apply_source_colour(self.scene, res.rgb, res.depth, res.valid, res.coverage, poses, K, obj_poses, obj_mask,
                                self.__dict__.setdefault("_source_cache", {}), compiled=self.backend == "numba")
        return self._finish(res, poses, K, cameras) if ego else res

    def _render_pass(self, cams: CameraBatch, obj_sets, layout: ZLayout, poses: np.ndarray, K: np.ndarray, cull: bool,
                     allowed: np.ndarray | None, fill: bool, env_idx: np.ndarray | None) -> RenderResult:
        """One splatting pass of the static ``allowed`` layers and the objects ``obj_sets``, holes filled if ``fill``
        (far-field map ``env_idx`` (n,) of each camera, see :meth:`_env_index`)."""
        cfg, n, h, w = self.config, len(cams), cams.height, cams.width
        if self.backend == "numba":
            chunks = self.index.select_flat(cams, cfg.max_range, cfg.near, cfg.lod_factor if cull else 0.0, cull,
                                            allowed)
            return self._render_numba(cams, chunks, obj_sets, layout, poses, fill, env_idx)
        ranges = self.index.select(cams, cfg.max_range, cfg.near, cfg.lod_factor if cull else 0.0, cull, allowed)
        o_cam, o_k, o_lv, o_T = obj_sets
        bounds = np.searchsorted(o_cam, np.arange(n + 1))
        obj_sets = [[(int(o_k[j]), int(o_lv[j]), o_T[j]) for j in range(bounds[i], bounds[i + 1])] for i in range(n)]
        if self._torch is not None:
            keys = self._torch.splat(ranges, obj_sets, cams, layout, self._obj_voxels, cfg)
        else:
            zbuf = np.full(layout.size, EMPTY_KEY, np.int64)
            keys = np.empty((n, h, w), np.int64)

            for i in range(n):
                for pix, kk in self._camera_writes(cams, i, ranges[i], obj_sets[i], layout):
                    np.minimum.at(zbuf, pix, kk)
                keys[i] = layout.compose(zbuf, i)
        rgb, depth, valid = decode_zbuffer(keys)
        close_pinholes(rgb, depth, valid, cfg.pinhole_neighbours)
        modelled = valid.copy()
        if fill:
            for i in range(n):
                if not valid[i].all():
                    self._fill(rgb[i], valid[i], modelled[i], poses[i], K[i], int(env_idx[i]))
        return RenderResult(rgb, depth, valid, modelled)

    def _env_index(self, cameras, n: int) -> np.ndarray:
        """(n,) int64 far-field map of each camera in :attr:`_env_maps`: a named camera's own where its layer has
        one, else the scene's (0); -1 without a far field."""
        idx = np.full(n, 0 if self._env_maps else -1, np.int64)
        for i, name in enumerate(cameras or ()):
            g = self._layers.get(name)
            if g is not None and 1 + g < len(self._env_maps) and self._env_maps[1 + g] is not None:
                idx[i] = 1 + g
        return idx

    def _allowed_layers(self, cameras, n: int) -> np.ndarray | None:
        """(n, layers) bool: the static layers each camera draws: a named camera that has a layer draws only its
        own; any other camera every layer. None when the scene has no camera layers."""
        if not self._layers:
            return None
        allowed = np.ones((n, len(self._layers)), bool)
        for i, name in enumerate(cameras or ()):
            g = self._layers.get(name)
            if g is not None:
                allowed[i] = False
                allowed[i, g] = True
        return allowed

    def _finish(self, res: RenderResult, poses: np.ndarray, K: np.ndarray, cameras) -> RenderResult:
        """The ego body of named cameras composited over the render (their pixels count as modelled)."""
        layers = [self.scene.ego_layer(c) for c in cameras] if cameras is not None else []
        if not any(layer is not None for layer in layers):
            return res
        rgb, modelled = res.rgb, res.coverage.copy()
        h, w = res.valid.shape[1:]
        for i, layer in enumerate(layers):
            if layer is not None:
                m, body = layer.at(h, w)
                rgb[i][m] = body[m]
                modelled[i][m] = True
        return RenderResult(rgb, res.depth, res.valid, modelled)

    def _camera_rays(self, K: np.ndarray, w: int, h: int) -> np.ndarray:
        """(H*W, 3) float32 camera-frame pixel rays (z = 1) of intrinsics ``K`` = (fx, fy, cx, cy), cached."""
        key = (tuple(np.round(K, 9)), w, h)
        cache = self.__dict__.setdefault("_ray_cache", {})
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            v, u = np.mgrid[0:h, 0:w]
            cache[key] = np.stack([(u.ravel() - K[2]) / K[0], (v.ravel() - K[3]) / K[1], np.ones(h * w)], 1).astype(np.float32)
        return cache[key]

    def _render_numba(self, cams: CameraBatch, chunks, obj_sets, layout: ZLayout, poses: np.ndarray,
                      fill: bool, env_idx: np.ndarray | None) -> RenderResult:
        """The compiled path: one parallel kernel splats, composes, decodes and fills the holes, camera by camera.
        ``chunks``: (camera, level, chunk) of the static chunks to draw (:meth:`ChunkIndex.select_flat`);
        ``obj_sets``: the objects to draw (:meth:`_visible_objects`)."""
        from stag_sim.render import kernels

        cfg, n, h, w = self.config, len(cams), cams.height, cams.width
        L = len(self.index.voxel_sizes)
        cam, level, chunk = chunks
        # items (point ranges) and their kernel parameters: static level l of camera i uses row i * L + l,
        # drawn objects the rows after
        o_cam, o_k, o_lv, T_obj = obj_sets
        params = self._splat_params(np.concatenate([np.repeat(cams.T_cam_from_world, L, 0), T_obj]),
                                    np.concatenate([np.repeat(cams.K, L, 0), cams.K[o_cam]]), layout,
                                    np.concatenate([np.tile(self.index.voxel_sizes, n), self._obj_voxels[o_lv]]))
        order = np.argsort(np.concatenate([cam, o_cam]), kind="stable")  # camera by camera, objects last
        starts = np.concatenate([self.index.starts[level, chunk], self._obj_starts[o_k, o_lv]])[order]
        counts = np.concatenate([self.index.counts[level, chunk], self._obj_sizes[o_k, o_lv]])[order]
        pidx = np.concatenate([cam * L + level, n * L + np.arange(len(o_cam))])[order]
        per_cam = np.bincount(np.concatenate([cam, o_cam]), minlength=n)
        cam_ptr = np.concatenate([[0], np.cumsum(per_cam)]).astype(np.int64)
        work = np.bincount(np.concatenate([cam, o_cam])[order], weights=counts, minlength=n)  # points per camera
        offsets = np.array([layout.camera_offsets(i) for i in range(n)], np.int64).reshape(n, NUM_LEVELS)
        rgb = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        valid = np.empty((n, h, w), bool)
        modelled = np.empty((n, h, w), bool)
        sky = self._sky if self._sky is not None else np.zeros((SKY_BINS, 3), np.uint8)
        env = self.scene.env_map
        env_idx = np.full(n, -1, np.int64) if env_idx is None else np.asarray(env_idx, np.int64)
        with kernels.LOCK:
            kernels.render_keys(*kernels.schedule(work + h * w), self.index.xyz1, self.index.rgb, self._obj_xyz1,
                                self._obj_rgb, cam_ptr, (pidx >= n * L).astype(np.int64), starts, counts, pidx,
                                params, np.float32(cfg.max_range - cfg.near), np.float32(cfg.near),
                                np.float32(cfg.max_footprint_px), offsets, layout.hp, layout.wp, layout.pad,
                                np.empty(layout.size, np.int64), rgb, depth, valid, modelled, bool(fill),
                                np.ascontiguousarray(poses[:, :3, :3], np.float32), cams.K.astype(np.float32), sky,
                                sky_edges(SKY_BINS), self._sky is not None, self._env_rgb, self._env_valid,
                                float(env.min_elevation) if env is not None else 0.0, env_idx,
                                int(cfg.pinhole_neighbours))
        return RenderResult(rgb, depth, valid, modelled)

    def _splat_params(self, T_cam_from_src: np.ndarray, K: np.ndarray, layout: ZLayout,
                      voxel: np.ndarray) -> np.ndarray:
        """(m, 14) float32 kernel parameters of m (camera, cloud) pairs: the (3, 4) projection (see
        :func:`projection_matrix`), the footprint scale [px m] and the ``z - near`` [m] below which footprints
        exceed a pixel (-1: never); the same float32 values :func:`splat_keys` uses."""
        cfg = self.config
        out = np.empty((len(voxel), 14), np.float32)
        out[:, :12] = projection_matrix(T_cam_from_src, K, layout.pad).reshape(-1, 12)
        scale = voxel * K[:, 0] * cfg.footprint_scale
        out[:, 12] = scale
        z_big = np.minimum(scale, cfg.max_range)
        out[:, 13] = np.where(z_big > cfg.near, z_big - cfg.near, -1.0)
        return out

    def _visible_objects(self, cams: CameraBatch, obj_poses, obj_mask, cull: bool):
        """The objects to draw: (k,) int64 camera, object index and level of detail, and (k, 4, 4)
        ``T_cam_from_object``, camera by camera.

        Level of detail as for static chunks: the coarsest level with ``lod_factor`` points per pixel of the
        object's projected bounding disc (level 0 for objects reaching behind the camera, or without culling).
        """
        cfg = self.config
        cam, obj = np.nonzero(obj_mask)
        level = np.zeros(len(cam), np.int64)
        if len(cam) and cull:
            c, radii, P = obj_poses[cam, obj, :3, 3], self._obj_radii[obj], cams.planes[cam]  # P: (k, 5, 4)
            s = P[:, :, 0] * c[:, :1] + P[:, :, 1] * c[:, 1:2] + P[:, :, 2] * c[:, 2:] + P[:, :, 3]  # as sphere_visible
            vis = np.all(s >= -radii[:, None], axis=1) & (s[:, 4] + cfg.near - radii < cfg.max_range)
            cam, obj, s, radii, level = cam[vis], obj[vis], s[vis], radii[vis], level[vis]
            if cfg.lod_factor > 0 and len(cam):
                z = s[:, 4] + cfg.near - radii  # nearest z [m]
                disc = np.pi * (radii * cams.K[cam, 0] / np.maximum(z, 1e-3)) ** 2  # projected area [px]
                enough = self._obj_counts[obj, 1:] >= cfg.lod_factor * disc[:, None]
                level = np.where(z > cfg.near, enough.sum(1), 0)
        return cam, obj, level, np.matmul(cams.T_cam_from_world[cam], obj_poses[cam, obj])

    def _camera_writes(self, cams: CameraBatch, i: int, rng, objs, layout: ZLayout):
        """Yield the (pix, keys) z-buffer writes of camera i: static levels, then objects."""
        cfg = self.config
        args = (cams.K[i], layout, layout.camera_offsets(i))
        for level, starts, counts in rng:
            yield from splat_keys(*self.index.gather(starts, counts), cams.T_cam_from_world[i], *args,
                                  float(self.index.voxel_sizes[level]), cfg.near, cfg.max_range, cfg.max_footprint_px,
                                  cfg.footprint_scale)
        for k, level, T in objs:
            yield from splat_keys(*self._obj_points[k][level], T, *args, float(self._obj_voxels[level]), cfg.near,
                                  cfg.max_range, cfg.max_footprint_px, cfg.footprint_scale)

    def _fill(self, rgb: np.ndarray, valid: np.ndarray, modelled: np.ndarray, T_wc: np.ndarray, K: np.ndarray,
              env_index: int = 0) -> None:
        """Fill the holes of one (H, W, 3) image in place (the order of :func:`kernels.fill_camera`): the far-field
        map's colour (map ``env_index`` of :attr:`_env_maps`, none if negative) where it has one (set in
        ``modelled`` (H, W)), the sky colour above the horizon, push-pull below."""
        weight = valid.view(np.uint8) * np.uint8(255)
        env = self._env_maps[env_index] if 0 <= env_index < len(self._env_maps) else None
        holes = np.flatnonzero(~valid)
        if env is not None:
            h, w = valid.shape
            rays = self._camera_rays(K, w, h)[holes] @ T_wc[:3, :3].T.astype(np.float32)
            col, hit = env.lookup(rays / np.linalg.norm(rays, axis=1, keepdims=True))
            rgb.reshape(-1, 3)[holes[hit]] = col[hit]
            weight.reshape(-1)[holes[hit]] = 255
            modelled.reshape(-1)[holes[hit]] = True
            holes = holes[~hit]
        if self._sky is not None and len(holes):
            bins = sky_bins(T_wc, K, rgb.shape[1], holes, SKY_BINS)
            up = bins >= 0
            if up.any():
                rgb.reshape(-1, 3)[holes[up]] = self._sky[bins[up]]
                weight.reshape(-1)[holes[up]] = 255
        push_pull_fill(rgb, weight)

    def render_rigs(self, T_world_from_ego, rig: CameraRig,
                    object_poses: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | np.ndarray | None = None,
                    object_mask: np.ndarray | None = None, *, cull: bool = True) -> RenderResult:
        """Render E rigs (E envs x C cameras) in one call.

        Args:
            T_world_from_ego: (E, 4, 4) ego poses (or (4, 4) for one env).
            rig: the camera rig (all cameras of one size).
            object_poses: one dict for every env, a list of E dicts, or (E, K, 4, 4) with ``object_mask`` (E, K).

        Returns:
            :class:`RenderResult` with (E, C, H, W, ...) arrays, cameras in rig order.
        """
        ego = np.asarray(T_world_from_ego, np.float64)
        if ego.shape == (4, 4):
            ego = ego[None]
        if ego.ndim != 3 or ego.shape[1:] != (4, 4):
            raise RendererError(f"T_world_from_ego: expected (E, 4, 4), got shape {ego.shape}")
        E, C = len(ego), len(rig)
        cam_poses = rig.T_world_from_cameras(ego).reshape(E * C, 4, 4)
        intr = [c.intrinsics for c in rig.cameras] * E
        K = len(self.scene.objects)
        if isinstance(object_poses, (list, tuple)):
            if len(object_poses) != E:
                raise RendererError(f"object_poses: got {len(object_poses)} dicts for {E} envs")
            arrs = [self._check_objects(d, None, 1) for d in object_poses]
            object_poses = np.repeat(np.stack([a[0][0] for a in arrs]), C, axis=0)
            object_mask = np.repeat(np.stack([a[1][0] for a in arrs]), C, axis=0)
        elif isinstance(object_poses, np.ndarray) and object_poses.ndim == 4:
            if object_poses.shape[:2] != (E, K):
                raise RendererError(f"object_poses: expected ({E}, {K}, 4, 4), got {object_poses.shape}")
            object_poses = np.repeat(object_poses, C, axis=0)
            object_mask = None if object_mask is None else np.repeat(np.asarray(object_mask, bool), C, axis=0)
        res = self.render(cam_poses, intr, object_poses, object_mask, cull=cull, cameras=list(rig.names) * E)
        h, w = res.valid.shape[1:]
        return RenderResult(res.rgb.reshape(E, C, h, w, 3), res.depth.reshape(E, C, h, w), res.valid.reshape(E, C, h, w),
                            None if res.modelled is None else res.modelled.reshape(E, C, h, w))


def _resolve_backend(name: str) -> str:
    """The backend a config's ``backend`` names: ``auto`` is ``numba`` where numba imports, else ``numpy``."""
    has_numba = importlib.util.find_spec("numba") is not None
    if name == "auto":
        return "numba" if has_numba else "numpy"
    if name == "numba" and not has_numba:
        raise RendererError("RenderConfig.backend: 'numba' needs numba, which is not installed (pip install numba; "
                            "or use backend='numpy')")
    return name


def _complete_sky(colors: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """(SKY_BINS, 3) uint8 sky colours with unseen bins copied from the nearest seen bin; None if none was seen."""
    seen = np.flatnonzero(valid)
    if len(seen) == 0:
        return None
    nearest = seen[np.argmin(np.abs(np.arange(len(valid))[:, None] - seen[None]), axis=1)]
    return np.asarray(colors)[nearest]
