"""Fidelity of the point renderer against ground truth: PSNR, SSIM and holes on held-out, shifted views.

Held-out frames (every ``holdout_every``-th, counted from the middle of each block) are left out of the 4D scene;
their camera rigs are shifted sideways by each lateral offset and rendered, and compared with an *oracle*: for the
synthetic town, the town itself rendered at exactly the same shifted pose and time. An oracle is any object with
``render(T_world_from_camera, intrinsics, time_s, object_poses=None) -> (rgb (H, W, 3) uint8, depth (H, W))``
(``time_s`` [s] after the scene's first frame).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from stag_sim.errors import RendererError, StagSimError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.scene4d import Scene4DConfig, build_scene4d, load_scene4d
from stag_sim.scene_log import SceneLog

DEFAULT_SHIFTS = (0.0, 0.5, 1.0, 2.0, 3.0)  # [m] lateral (ego +y, left) rig offsets
PSNR_CAP = 100.0  # [dB] reported for identical images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio [dB] of uint8 images (any matching shape), peak 255; capped at PSNR_CAP."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise RendererError(f"psnr: image shapes differ, {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W, 3) or (H, W) uint8 images: Gaussian window of
    ``sigma`` [px] (11 x 11 for 1.5), K1 = 0.01, K2 = 0.03, averaged over pixels and channels."""
    import cv2

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise RendererError(f"ssim: image shapes differ, {a.shape} vs {b.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ksize = (int(2 * round(3.5 * sigma) + 1),) * 2
    blur = lambda img: cv2.GaussianBlur(img, ksize, sigma, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


@dataclass(frozen=True)
class FidelityRow:
    """Scores of one lateral shift, averaged over the held-out frames and the six cameras.

    Attributes:
        shift_m: lateral rig offset [m] (ego +y).
        psnr_db: mean PSNR [dB]; ssim: mean SSIM [-]; hole_fraction: mean fraction of pixels no point reached [-].
        num_images: images compared.
    """

    shift_m: float
    psnr_db: float
    ssim: float
    hole_fraction: float
    num_images: int


@dataclass(frozen=True)
class ViewRow:
    """One rendered view of a fidelity run.

    Attributes:
        camera: rig camera name; frame: log frame index; shift_m: lateral rig offset [m] (ego +y, left).
        psnr, ssim: against the ground truth ([dB], [-]); None where there is none (a shifted view of a real log).
        coverage: fraction of pixels reached by points (the scene's geometry) [-]; the far field and the ego body
            are not counted (``far_field``).
        hole_fraction: fraction of pixels no point reached [-] (far field, ego body and filled holes).
        baseline_psnr, baseline_ssim: the baseline scored the same way: the nearest real frame of that camera used in
            the build, or with a held-out camera, the nearest other camera's image at the same frame (None where
            there is no such image or no ground truth).
        far_field: fraction of pixels drawn from the far-field map (sky, beyond the depth's reach) [-].
        baseline: what the baseline image was (``frame 2``, ``CAMERA_05``), or None.
    """

    camera: str
    frame: int
    shift_m: float
    psnr: float | None
    ssim: float | None
    coverage: float
    hole_fraction: float
    baseline_psnr: float | None
    baseline_ssim: float | None
    far_field: float = 0.0
    baseline: str | None = None


def held_out_frames(num_frames: int, every: int) -> list[int]:
    """Frames ``every // 2, every // 2 + every, ...`` (the middle of each block, so every one has neighbours)."""
    if every < 2:
        raise RendererError(f"holdout_every: must be >= 2 (1 would hold out every frame), got {every}")
    return list(range(every // 2, num_frames, every))


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return img if img.shape[:2] == (height, width) else cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def fidelity_views(log: SceneLog, hold_out_frames: Sequence[int] = (), hold_out_camera: str | None = None,
                   shifts: Sequence[float] = (0.0,), image_size: tuple[int, int] | None = None, oracle=None,
                   config: Scene4DConfig | None = None, render_config=None, scene_dir: str | os.PathLike | None = None,
                   progress: bool = False, keep_images: int = 0):
    """Build the 4D scene without the held-out frames / camera, render the held-out views, score them.

    Args:
        log: any scene log.
        hold_out_frames: frames left out of the build and rendered.
        hold_out_camera: a camera left out of the build and rendered (at ``hold_out_frames``, or every frame).
        shifts: lateral rig offsets [m]; a real log has ground truth only at 0.
        image_size: (height, width) of the renders [px] (default: the rig's, at most 640 px wide).
        oracle: ground-truth renderer (the synthetic town's), else the logged images are the ground truth.
        config: 4D-scene build parameters (their exclusions are replaced).
        render_config: :class:`~stag_sim.render.RenderConfig`.
        scene_dir: the log's scene cache, to cache the 4D scene beside it.
        keep_images: keep (truth, render, baseline) images of this many views for figures.

    Returns:
        (rows: list of :class:`ViewRow`, images: list of (name, truth or None, render, baseline or None)).
    """
    from dataclasses import replace

    from tqdm import tqdm

    from stag_sim.render.renderer import PointRenderer

    log.require_images("fidelity_views")
    frames = sorted({int(t) for t in hold_out_frames})
    bad = [t for t in frames if not 0 <= t < log.num_frames]
    if bad:
        raise RendererError(f"{log.name}: hold-out frame(s) {bad} outside the log's {log.num_frames} frames (0..{log.num_frames - 1})")
    if hold_out_camera is not None and hold_out_camera not in log.rig.names:
        raise RendererError(f"{log.name}: --hold-out-camera {hold_out_camera!r} is not a camera of the rig "
                            f"({', '.join(log.rig.names)})")
    if not frames and hold_out_camera is None:
        raise RendererError(f"{log.name}: nothing held out; give hold-out frames or a hold-out camera")
    if len(frames) == log.num_frames and hold_out_camera is None:
        raise RendererError(f"{log.name}: every frame is held out; nothing is left to build the scene from")
    cfg = replace(config or Scene4DConfig(), exclude_frames=tuple(frames),
                  exclude_cameras=(hold_out_camera,) if hold_out_camera else ())
    scene = (load_scene4d(scene_dir, cfg, progress=progress, log=log) if scene_dir is not None
             else build_scene4d(log, cfg, progress=progress))
    renderer = PointRenderer(scene, render_config)
    targets = frames or list(range(log.num_frames))
    cams = [hold_out_camera] if hold_out_camera else list(log.rig.names)
    built = [t for t in range(log.num_frames) if t not in set(frames)]
    rows, images = [], []
    jobs = [(t, float(s), name) for t in targets for s in shifts for name in cams]
    for t, s, name in tqdm(jobs, desc="fidelity", unit="view", disable=not progress):
        c = log.rig.index(name)
        cam = log.rig[c]
        if image_size is None:
            w = min(cam.intrinsics.width, 640)
            h = int(round(cam.intrinsics.height * w / cam.intrinsics.width))
        else:
            h, w = image_size
        intr = cam.intrinsics.scaled(w, h)
        pose = log.camera_ego_poses[t, c] @ pose_xy_yaw(0.0, s, 0.0) @ cam.T_ego_from_camera
        time_s = float(log.camera_timestamps_us[t, c] - log.timestamps_us[0]) * 1e-6
        res = renderer.render(pose[None], [intr], scene.object_poses_at(time_s), cameras=[name])
        if oracle is not None:
            truth = np.asarray(oracle.render(pose, intr, time_s)[0])
        elif s == 0.0 and log.images.has(t, c):
            truth = _resize(log.images[t, c], w, h)
        else:
            truth = None
        base, base_name = (None, None) if truth is None else _baseline(log, t, c, built, hold_out_camera, w, h)
        rgb = res.rgb[0]
        layer = scene.ego_layer(name)
        body = layer.at(h, w)[0] if layer is not None else np.zeros((h, w), bool)
        far = res.coverage[0] & ~res.valid[0] & ~body
        rows.append(ViewRow(name, t, s, None if truth is None else psnr(rgb, truth),
                            None if truth is None else ssim(rgb, truth), float(res.valid[0].mean()),
                            float(1.0 - res.valid[0].mean()), None if base is None else psnr(base, truth),
                            None if base is None else ssim(base, truth), float(far.mean()), base_name))
        if len(images) < keep_images:
            images.append((f"{name} frame {t} shift {s:g} m", truth, rgb, base))
    return rows, images


def _baseline(log: SceneLog, t: int, c: int, built: list[int], hold_out_camera: str | None, w: int, h: int):
    """(image (h, w, 3) or None, its name): what a renderer must beat for view (t, c). Held-out frames: the same
    camera's frame nearest in time among those built. A held-out camera: the other camera whose logged pose at
    frame t is the nearest viewpoint (:func:`~stag_sim.render.source_colour.viewpoint_distance`)."""
    if hold_out_camera is None:
        near = [f for f in built if log.images.has(f, c)]
        if not near:
            return None, None
        f = min(near, key=lambda f: abs(int(log.camera_timestamps_us[f, c]) - int(log.camera_timestamps_us[t, c])))
        return _resize(log.images[f, c], w, h), f"frame {f}"
    from stag_sim.render.source_colour import viewpoint_distance

    others = [o for o in range(len(log.rig)) if o != c and log.images.has(t, o)]
    if not others:
        return None, None
    poses = np.array([log.camera_ego_poses[t, o] @ log.rig[o].T_ego_from_camera for o in others])
    d = viewpoint_distance(poses, log.camera_ego_poses[t, c] @ log.rig[c].T_ego_from_camera)
    o = others[int(np.argmin(d))]
    return _resize(log.images[t, o], w, h), log.rig[o].name


def summarise(rows: Sequence[ViewRow]) -> list[dict]:
    """Mean of every score per shift: ``[{shift_m, psnr, ssim, coverage, far_field, hole_fraction, baseline_psnr,
    baseline_ssim, num_views, num_scored}]`` (a mean over the rows that have the score; None if none has)."""
    out = []
    for s in sorted({r.shift_m for r in rows}):
        sel = [r for r in rows if r.shift_m == s]
        mean = lambda k: (float(np.mean(v)) if (v := [getattr(r, k) for r in sel if getattr(r, k) is not None]) else None)  # noqa: E731
        out.append({"shift_m": s, **{k: mean(k) for k in ("psnr", "ssim", "coverage", "far_field", "hole_fraction",
                                                          "baseline_psnr", "baseline_ssim")},
                    "num_views": len(sel), "num_scored": sum(r.psnr is not None for r in sel)})
    return out


def fidelity_report(log: SceneLog, oracle, shifts: Sequence[float] = DEFAULT_SHIFTS, holdout_every: int = 10,
                    config: Scene4DConfig | None = None, render_config=None, scene_dir: str | os.PathLike | None = None,
                    progress: bool = False) -> list[FidelityRow]:
    """Score held-out (one frame in ``holdout_every``), laterally shifted renders against ``oracle``, averaged per
    shift over frames and cameras (:func:`fidelity_views` with an oracle)."""
    frames = held_out_frames(log.num_frames, holdout_every)
    if not frames:
        raise RendererError(f"{log.name}: {log.num_frames} frames is too short to hold out one in {holdout_every}")
    h, w = log.rig[0].intrinsics.height, log.rig[0].intrinsics.width
    rows, _ = fidelity_views(log, frames, None, shifts, (h, w), oracle, config, render_config, scene_dir, progress)
    return [FidelityRow(m["shift_m"], m["psnr"], m["ssim"], m["hole_fraction"], m["num_views"]) for m in summarise(rows)]


def views_figure(images, width: int = 484) -> np.ndarray:
    """(H, W, 3) uint8 RGB figure: one row per view of (ground truth | render | nearest-frame baseline)."""
    import cv2

    rows = []
    for title, truth, render, base in images:
        h = int(round(render.shape[0] * width / render.shape[1]))
        tiles = []
        for label, img in (("real (held out)", truth), ("StagDrive render", render), ("nearest real frame", base)):
            tile = np.zeros((h, width, 3), np.uint8) if img is None else _resize(np.ascontiguousarray(img), width, h).copy()
            cv2.putText(tile, f"{label}: {title}" if label.startswith("Stag") else label, (6, 18),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def format_table(rows: Sequence[FidelityRow]) -> str:
    """Fixed-width text table of the rows."""
    lines = [f"{'shift [m]':>9}  {'PSNR [dB]':>9}  {'SSIM':>6}  {'holes':>6}  {'images':>6}"]
    lines += [f"{r.shift_m:9.2f}  {r.psnr_db:9.2f}  {r.ssim:6.3f}  {r.hole_fraction:6.3f}  {r.num_images:6d}" for r in rows]
    return "\n".join(lines)


def plot_rows(rows: Sequence[FidelityRow], title: str = "") -> np.ndarray:
    """(400, 640, 3) uint8 RGB chart: PSNR [dB] (blue) and hole fraction (orange, right axis) against shift."""
    import cv2

    H, W, L, R, T, B = 400, 640, 70, 70, 40, 50
    img = np.full((H, W, 3), 255, np.uint8)
    xs = np.array([r.shift_m for r in rows], float)
    ps = np.array([r.psnr_db for r in rows], float)
    hs = np.array([r.hole_fraction for r in rows], float)
    x_max = max(float(xs.max()), 1e-6) if len(xs) else 1.0
    p_lo, p_hi = 0.0, max(40.0, float(np.ceil(ps.max() / 5) * 5) if len(ps) else 40.0)
    px = lambda x: int(L + (W - L - R) * x / x_max)  # noqa: E731
    py = lambda p: int(H - B - (H - T - B) * (p - p_lo) / (p_hi - p_lo))  # noqa: E731
    hy = lambda h: int(H - B - (H - T - B) * h)  # noqa: E731
    black, blue, orange, grey = (0, 0, 0), (31, 119, 180), (255, 127, 14), (210, 210, 210)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for p in np.arange(p_lo, p_hi + 1e-9, 5.0):
        cv2.line(img, (L, py(p)), (W - R, py(p)), grey, 1)
        cv2.putText(img, f"{p:.0f}", (L - 35, py(p) + 5), font, 0.45, blue, 1, cv2.LINE_AA)
    for h in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.putText(img, f"{h:.2f}", (W - R + 8, hy(h) + 5), font, 0.45, orange, 1, cv2.LINE_AA)
    cv2.rectangle(img, (L, T), (W - R, H - B), black, 1)
    for x in xs:
        cv2.putText(img, f"{x:g}", (px(x) - 8, H - B + 20), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, "lateral shift [m]", (W // 2 - 60, H - 10), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(img, "PSNR [dB]", (5, T - 12), font, 0.5, blue, 1, cv2.LINE_AA)
    cv2.putText(img, "hole fraction", (W - R - 60, T - 12), font, 0.5, orange, 1, cv2.LINE_AA)
    if title:
        cv2.putText(img, title, (L + 80, T - 12), font, 0.5, black, 1, cv2.LINE_AA)
    for series, f, col in ((ps, py, blue), (hs, hy, orange)):
        pts = [(px(x), f(v)) for x, v in zip(xs, series)]
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(img, a, b, col, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, col, -1, cv2.LINE_AA)
    return img


def write_report(rows: Sequence[FidelityRow], out_dir: str | os.PathLike, scene_name: str, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``results.json`` and ``fidelity.png`` (atomically) into ``out_dir``; returns their paths."""
    from stag_sim.fsutil import atomic_open
    from stag_sim.viz import write_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"scene": scene_name, "rows": [asdict(r) for r in rows], **(extra or {})}
    with atomic_open(out / "results.json") as f:
        json.dump(data, f, indent=1)
    png = write_png(out / "fidelity.png", plot_rows(rows, scene_name))
    return out / "results.json", png


def synthetic_oracle(log: SceneLog):
    """The ground-truth renderer of a synthetic-town scene; :class:`RendererError` for any other scene."""
    if log.source != "synthetic":
        raise RendererError(f"scene {log.name!r} has source {log.source!r}: a fidelity report needs a synthetic "
                            "scene (its oracle renders the ground truth); create one with `stag-sim synth`")
    try:
        from stag_sim.synth import oracle_for_scene
    except ImportError as e:
        raise RendererError(f"the synthetic town's oracle is not available ({e})") from None
    try:
        return oracle_for_scene(log)
    except StagSimError as e:
        raise RendererError(f"scene {log.name!r}: no oracle ({e})") from None
