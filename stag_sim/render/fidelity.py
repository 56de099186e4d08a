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


def held_out_frames(num_frames: int, every: int) -> list[int]:
    """Frames ``every // 2, every // 2 + every, ...`` (the middle of each block, so every one has neighbours)."""
    if every < 2:
        raise RendererError(f"holdout_every: must be >= 2 (1 would hold out every frame), got {every}")
    return list(range(every // 2, num_frames, every))


def fidelity_report(log: SceneLog, oracle, shifts: Sequence[float] = DEFAULT_SHIFTS, holdout_every: int = 10,
                    config: Scene4DConfig | None = None, render_config=None, scene_dir: str | os.PathLike | None = None,
                    progress: bool = False) -> list[FidelityRow]:
    """Score held-out, laterally shifted renders against ``oracle`` (see module docstring).

    Args:
        log: the scene log.
        oracle: ground-truth renderer of the same scene.
        shifts: lateral offsets [m].
        holdout_every: hold out one frame in this many.
        config: 4D-scene build parameters (their ``exclude_frames`` is replaced by the held-out frames).
        render_config: :class:`~stag_sim.render.RenderConfig`.
        scene_dir: the log's scene cache, to cache the held-out 4D scene beside it.
    """
    from dataclasses import replace

    from tqdm import tqdm

    from stag_sim.render.renderer import PointRenderer

    frames = held_out_frames(log.num_frames, holdout_every)
    if not frames:
        raise RendererError(f"{log.name}: {log.num_frames} frames is too short to hold out one in {holdout_every}")
    cfg = replace(config or Scene4DConfig(), exclude_frames=tuple(frames))
    scene = (load_scene4d(scene_dir, cfg, progress=progress, log=log) if scene_dir is not None
             else build_scene4d(log, cfg, progress=progress))
    renderer = PointRenderer(scene, render_config)
    intr = [c.intrinsics for c in log.rig.cameras]
    acc = {float(s): ([], [], []) for s in shifts}
    jobs = [(t, float(s)) for t in frames for s in shifts]
    for t, s in tqdm(jobs, desc="fidelity", unit="view", disable=not progress):
        time_s = float(log.timestamps_us[t] - log.timestamps_us[0]) * 1e-6
        poses = log.camera_ego_poses[t] @ pose_xy_yaw(0.0, s, 0.0) @ log.rig.T_ego_from_cameras
        res = renderer.render(poses, intr, scene.object_poses_at(time_s))
        for c in range(len(intr)):
            ref = np.asarray(oracle.render(poses[c], intr[c], time_s)[0])
            acc[s][0].append(psnr(res.rgb[c], ref))
            acc[s][1].append(ssim(res.rgb[c], ref))
            acc[s][2].append(1.0 - float(res.valid[c].mean()))
    return [FidelityRow(s, float(np.mean(p)), float(np.mean(q)), float(np.mean(h)), len(p)) for s, (p, q, h) in acc.items()]


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
