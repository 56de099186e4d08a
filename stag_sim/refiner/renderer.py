"""RefinedRenderer: the point renderer, then the diffusion refiner; same interface as ``PointRenderer.render``.

Fidelity knob: ``refine_every=1`` refines every call; ``refine_every=K`` refines every K-th call (keyframes) and in
between forward-warps the last refined frames into the new camera poses with the keyframe's depth (pixels the warp
does not reach keep the current point render). A small cache keyed by (camera poses, object poses, time) returns
the same frames for a repeated pose without running the model. Keyframe state restarts on :meth:`reset`, when
``time_s`` goes backwards, or when the cameras jump farther than ``reset_distance`` (a new episode).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stag_sim.camera import CAMERA_NAMES, CameraIntrinsics
from stag_sim.errors import MissingExtraError, RendererError, StagSimError
from stag_sim.render.renderer import RenderResult

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class RefinerConfig:
    """Refined-renderer settings.

    Attributes:
        path: refiner directory (``stag-sim refiner init`` or ``train-refiner`` output).
        refine_every: refine every K-th call; warp the last refined frames in between (1 = every call) [-].
        steps: sampler steps per refinement [-].
        window: frames per refinement: the current render and up to ``window - 1`` previous ones [-].
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
        dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16``, ``bfloat16``.
        seed: seed of the initial noise (the same noise every call: temporally steadier) [-].
        cache_size: refined results kept by (pose, time) key [-].
        reset_distance: a camera jump larger than this starts new keyframes [m].
    """

    path: str = ""
    refine_every: int = 1
    steps: int = 4
    window: int = 1
    device: str = "cpu"
    dtype: str = "auto"
    seed: int = 0
    cache_size: int = 64
    reset_distance: float = 5.0  # [m]

    def validate(self) -> "RefinerConfig":
        if not self.path:
            raise RendererError("refiner_path: required with renderer='refined' (a directory from `stag-sim refiner init`)")
        for name in ("refine_every", "steps", "window"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise RendererError(f"refiner {name}: must be an int >= 1, got {v!r}")
        if int(self.cache_size) != self.cache_size or self.cache_size < 0:
            raise RendererError(f"refiner cache_size: must be an int >= 0, got {self.cache_size!r}")
        if self.dtype not in DTYPES:
            raise RendererError(f"refiner_dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not (np.isfinite(self.reset_distance) and self.reset_distance > 0):
            raise RendererError(f"refiner reset_distance: must be > 0 [m], got {self.reset_distance}")
        return self


def resolve_device(device: str, dtype: str = "auto"):
    """-> (torch.device, torch.dtype); RendererError when CUDA is asked for and absent, or the dtype is unknown."""
    from stag_sim.refiner import backend

    torch = backend.torch()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise RendererError(f"refiner_device: {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RendererError(f"refiner_device: {device!r} asked for, but no CUDA GPU is available "
                                "(torch.cuda.is_available() is False); use refiner_device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RendererError(f"refiner_device: {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise RendererError(f"refiner_device: {device!r}: only cpu and cuda devices are supported")
    if dtype not in DTYPES:
        raise RendererError(f"refiner_dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        dtype = "float16" if dev.type == "cuda" else "float32"
    return dev, getattr(torch, dtype)


def load_refiner(path: str | Path, device: str = "cpu", dtype: str = "auto"):
    """Load a :class:`StagRefinerPipeline` from a local directory, on ``device`` in ``dtype``; one-line errors."""
    root = Path(path)
    if not root.is_dir():
        raise RendererError(f"refiner_path: {str(root)!r} is not a directory; create one with "
                            "`stag-sim refiner init --size tiny --out DIR`")
    index = root / "model_index.json"
    if not index.is_file():
        raise RendererError(f"refiner_path: {str(root)!r} has no model_index.json (not a saved refiner pipeline)")
    try:
        cls_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as e:
        raise RendererError(f"refiner_path: {index} is not readable JSON ({e})") from None
    if cls_name != "StagRefinerPipeline":
        raise RendererError(f"refiner_path: {str(root)!r} holds a {cls_name!r}, expected a StagRefinerPipeline")
    dev, dt = resolve_device(device, dtype)
    from stag_sim.refiner.pipeline import StagRefinerPipeline

    try:
        pipe = StagRefinerPipeline.from_pretrained(str(root), local_files_only=True, **{_dtype_kwarg(): dt})
    except (StagSimError, MissingExtraError):
        raise
    except Exception as e:  # diffusers/transformers raise many types for bad checkpoints; report one line
        msg = " ".join(str(e).split())[:400]
        raise RendererError(f"refiner_path: cannot load {str(root)!r}: {type(e).__name__}: {msg}") from None
    try:
        pipe.to(dev)
    except Exception as e:
        raise RendererError(f"refiner: cannot move the model to {dev} as {dt} ({type(e).__name__}: {e})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dtype_kwarg() -> str:
    """``dtype`` for diffusers >= 0.42 (verified; ``torch_dtype`` is deprecated there), ``torch_dtype`` before."""
    from stag_sim.refiner import backend

    ver = tuple(int(v) for v in backend.diffusers().__version__.split(".")[:2] if v.isdigit())
    return "dtype" if ver >= (0, 42) else "torch_dtype"


def forward_warp(rgb: np.ndarray, depth: np.ndarray, K_src: np.ndarray, T_world_from_src: np.ndarray,
                 K_dst: np.ndarray, T_world_from_dst: np.ndarray, near: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Warp one (H, W, 3) image with its (H, W) z-depth [m] into another camera (nearest point wins).

    Args:
        K_src, K_dst: (3, 3) intrinsic matrices (same image size).
        T_world_from_src, T_world_from_dst: (4, 4) camera poses (OpenCV frame).

    Returns:
        (H, W, 3) uint8 warped image (0 where nothing landed) and (H, W) bool hit mask.
    """
    h, w = depth.shape
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    pts = np.stack([(u - K_src[0, 2]) / K_src[0, 0] * z, (v - K_src[1, 2]) / K_src[1, 1] * z, z], axis=1)
    T = np.linalg.inv(T_world_from_dst) @ T_world_from_src
    p = pts @ T[:3, :3].T + T[:3, 3]
    ok = p[:, 2] > near
    p, src = p[ok], (v[ok], u[ok])
    u2 = np.rint(K_dst[0, 0] * p[:, 0] / p[:, 2] + K_dst[0, 2]).astype(np.int64)
    v2 = np.rint(K_dst[1, 1] * p[:, 1] / p[:, 2] + K_dst[1, 2]).astype(np.int64)
    inb = (u2 >= 0) & (u2 < w) & (v2 >= 0) & (v2 < h)
    order = np.argsort(-p[inb, 2], kind="stable")  # far first: the nearest write lands last and wins
    u2, v2 = u2[inb][order], v2[inb][order]
    out = np.zeros((h, w, 3), np.uint8)
    hit = np.zeros((h, w), bool)
    out[v2, u2] = rgb[src[0][inb][order], src[1][inb][order]]
    hit[v2, u2] = True
    return out, hit


class RefinedRenderer:
    """Point render, then refine with a :class:`StagRefinerPipeline`; a drop-in for ``PointRenderer``.

    Args:
        point_renderer: the :class:`~stag_sim.render.PointRenderer` of the scene.
        pipeline: a loaded refiner pipeline (see :func:`load_refiner`).
        config: :class:`RefinerConfig`.
        cameras: the cameras each call renders, in order (their ring neighbours are mixed): ``{name: azimuth [rad]}``
            for any rig, or nuScenes camera names.
        reference: optional callable ``(camera_poses (C, 4, 4)) -> (C, h, w, 3) uint8`` giving the logged frame
            each camera is conditioned on (None: the point render itself).
    """

    def __init__(self, point_renderer, pipeline, config: RefinerConfig, cameras=CAMERA_NAMES, reference=None) -> None:
        self.point = point_renderer
        self.scene = point_renderer.scene
        self.pipeline = pipeline
        self.config = config.validate()
        self.cameras = dict(cameras) if isinstance(cameras, dict) else tuple(cameras)  # dict: name -> azimuth [rad]
        self.reference = reference
        self.stats = {"refined": 0, "warped": 0, "cached": 0}
        self._cache: OrderedDict[str, RenderResult] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Forget keyframes, the frame window and the cache (a new episode): what an episode renders then depends
        on that episode alone, so ``env.reset(seed=s)`` twice renders the same frames."""
        self._cache.clear()
        self._count = 0
        self._history: list[tuple[np.ndarray, np.ndarray]] = []
        self._key = None  # last keyframe: (refined rgb (C,H,W,3), depth (C,H,W), poses (C,4,4), K (C,3,3))
        self._last_poses = None
        self._last_time = None

    def _cache_key(self, poses, intrinsics, object_poses, object_mask, time_s) -> str:
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(np.round(poses, 6)).tobytes())
        h.update(repr([(k.fx, k.fy, k.cx, k.cy, k.width, k.height) for k in intrinsics]).encode())
        if isinstance(object_poses, dict):
            for k in sorted(object_poses):
                h.update(k.encode() + np.round(np.asarray(object_poses[k], np.float64), 6).tobytes())
        elif object_poses is not None:
            h.update(np.round(np.asarray(object_poses, np.float64), 6).tobytes())
        if object_mask is not None:
            h.update(np.asarray(object_mask, bool).tobytes())
        h.update(repr(time_s).encode())
        return h.hexdigest()

    def render(self, camera_poses, intrinsics, object_poses=None, object_mask=None, *, cull: bool = True,
               time_s: float | None = None, cameras=None) -> RenderResult:
        """As :meth:`PointRenderer.render` (one camera per name in ``cameras``), with refined ``rgb``.

        ``depth`` and ``valid`` stay those of the point render. ``time_s`` [s] (optional) joins the cache key
        and detects a new episode when it goes backwards. ``cameras``, if given, must be the cameras the refiner
        was built for, in order.
        """
        if cameras is not None and tuple(cameras) != tuple(self.cameras):
            raise RendererError(f"refined renderer: built for cameras {', '.join(self.cameras)}, asked for "
                                f"{', '.join(cameras)}")
        poses = np.asarray(camera_poses, np.float64).reshape(-1, 4, 4)
        intr = [intrinsics] * len(poses) if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
        if len(poses) != len(self.cameras) and len(poses) % len(self.cameras) == 0:
            raise RendererError(f"refined renderer: got {len(poses)} camera poses, {len(poses) // len(self.cameras)} envs' "
                                "worth; the batched vector env is not supported with renderer='refined' (its keyframe "
                                "state is per env): make one env per refiner")
        if len(poses) != len(self.cameras):
            raise RendererError(f"refined renderer: got {len(poses)} camera poses for the {len(self.cameras)} cameras "
                                f"{', '.join(self.cameras)} it was built for")
        key = self._cache_key(poses, intr, object_poses, object_mask, time_s) if self.config.cache_size else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            self.stats["cached"] += 1
            return self._cache[key]
        if self._new_episode(poses, time_s):
            self.reset()
        res = self.point.render(poses, intr, object_poses, object_mask, cull=cull, cameras=list(self.cameras))
        K = np.stack([k.K for k in intr])
        self._history = (self._history + [(res.rgb, res.valid)])[-self.config.window:]
        if self._key is None or self._count % self.config.refine_every == 0:
            rgb = self._refine(poses)
            self._key = (rgb, res.depth, poses, K)
            self.stats["refined"] += 1
        else:
            rgb = self._warp(res, poses, K)
            self.stats["warped"] += 1
        self._count += 1
        self._last_poses, self._last_time = poses, time_s
        out = RenderResult(rgb, res.depth, res.valid)
        if key is not None:
            self._cache[key] = out
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return out

    def render_rigs(self, *args, **kwargs):
        raise RendererError("refined renderer: render_rigs (batched envs) is not supported; use one env per refiner")

    def _new_episode(self, poses, time_s) -> bool:
        if self._last_poses is None:
            return False
        if time_s is not None and self._last_time is not None and time_s < self._last_time:
            return True
        jump = np.linalg.norm(poses[:, :3, 3] - self._last_poses[:, :3, 3], axis=1).max()
        return bool(jump > self.config.reset_distance)

    def _refine(self, poses) -> np.ndarray:
        from stag_sim.refiner import backend

        torch = backend.torch()
        renders = np.stack([h[0] for h in self._history])  # (F, C, H, W, 3)
        masks = np.stack([h[1] for h in self._history])
        ref = self.reference(poses) if self.reference is not None else None
        dev = self.pipeline.device
        gen = torch.Generator(device=dev).manual_seed(int(self.config.seed))
        try:
            frames = self.pipeline(renders, masks, ref, cameras=self.cameras, num_inference_steps=self.config.steps,
                                   generator=gen).frames
        except torch.OutOfMemoryError:
            f, c, h, w = masks.shape
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            raise RendererError(f"refiner: out of memory on {dev} refining {c} cameras x {f} frames at {h}x{w}; "
                                "lower refiner_window or image_size, use refiner_dtype='float16', or refine_every > 1"
                                ) from None
        except RuntimeError as e:  # a device or kernel failure mid-episode: say where, in one line
            msg = " ".join(str(e).split())[:300]
            raise RendererError(f"refiner: failed on render call {self._count} ({dev}): {type(e).__name__}: {msg}") from None
        return np.ascontiguousarray(frames[-1])

    def _warp(self, res: RenderResult, poses, K) -> np.ndarray:
        key_rgb, key_depth, key_poses, key_K = self._key
        out = res.rgb.copy()
        for i in range(len(poses)):
            warped, hit = forward_warp(key_rgb[i], key_depth[i], key_K[i], key_poses[i], K[i], poses[i], self.point.config.near)
            out[i][hit] = warped[hit]
        return out


def make_reference_provider(log, cam_index):
    """Reference frames for the env: for each observed camera, the logged image taken nearest to where it is now."""
    log.require_images("the refined renderer's reference frames")
    T_ego_cam = log.rig.T_ego_from_cameras
    centres = np.stack([(log.camera_ego_poses[:, c] @ T_ego_cam[c])[:, :3, 3] for c in cam_index], axis=1)  # (T, C, 3)

    def provider(poses: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(centres - poses[None, :, :3, 3], axis=2).sum(1)
        t = int(np.argmin(d))
        return np.stack([log.images[t, c] for c in cam_index])

    return provider


def make_refined_renderer(point_renderer, config: RefinerConfig, log, cam_index) -> RefinedRenderer:
    """The refined renderer of ``config`` over ``point_renderer``, for cameras ``cam_index`` of ``log``'s rig (their
    reference frames come from the log)."""
    cfg = config.validate()
    pipe = load_refiner(cfg.path, cfg.device, cfg.dtype)
    cameras = {log.rig.names[i]: float(log.rig.azimuths[i]) for i in cam_index}  # names and ring order
    return RefinedRenderer(point_renderer, pipe, cfg, cameras, make_reference_provider(log, cam_index))
