"""Stag-1's three demonstrations of spatial-temporal decoupling, as videos of the six cameras tiled.

* freeze-time: time stands still at ``time_s``; the rig slides sideways from ``-shift`` to ``+shift`` [m] and back,
  then forward and back by the same distance (the objects hold their poses).
* freeze-view: the rig stays where the ego was at ``time_s``; time runs over the whole log (objects move).
* multi-view: the rig follows the logged trajectory at the log's times; all six views.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from stag_sim.errors import RendererError
from stag_sim.geometry import pose_xy_yaw
from stag_sim.render.renderer import PointRenderer
from stag_sim.scene_log import SceneLog

MODES = ("freeze-time", "freeze-view", "multi-view")


def _times(log: SceneLog) -> np.ndarray:
    return (np.asarray(log.timestamps_us) - log.timestamps_us[0]) * 1e-6


def _ego_at(log: SceneLog, time_s: float) -> np.ndarray:
    return np.asarray(log.ego_poses[log.frame_at(time_s)])


def demo_views(log: SceneLog, renderer: PointRenderer, mode: str, time_s: float = 0.0, shift_m: float = 2.0,
               steps: int = 40) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(caption, images (6, H, W, 3) uint8)`` for each video frame of ``mode`` (see module docstring).

    Args:
        log: the scene log (rig, trajectory, times).
        renderer: a renderer of the log's 4D scene.
        mode: one of :data:`MODES`.
        time_s: the frozen time [s] after the first frame (freeze-time, freeze-view).
        shift_m: sweep amplitude [m] (freeze-time).
        steps: frames per sweep leg (freeze-time).
    """
    if mode not in MODES:
        raise RendererError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    scene = renderer.scene
    times = _times(log)
    if not (times[0] <= time_s <= times[-1]):
        raise RendererError(f"time: {time_s} s is outside the log's [0, {times[-1]:.2f}] s")
    if mode == "freeze-time":
        if not (np.isfinite(shift_m) and shift_m >= 0):
            raise RendererError(f"shift: must be a finite distance >= 0 m, got {shift_m}")
        ego = _ego_at(log, time_s)
        objs = scene.object_poses_at(time_s)
        lat = shift_m * np.sin(np.linspace(0, 2 * np.pi, 2 * steps, endpoint=False))
        fwd = shift_m * np.sin(np.linspace(0, np.pi, steps, endpoint=False))
        offsets = [(0.0, y) for y in lat] + [(x, 0.0) for x in fwd]
        for dx, dy in offsets:
            res = renderer.render_rigs(ego @ pose_xy_yaw(dx, dy, 0.0), log.rig, objs)
            yield f"freeze-time t = {time_s:.1f} s  rig offset: {dx:+.2f} m fwd, {dy:+.2f} m left", res.rgb[0]
    elif mode == "freeze-view":
        ego = _ego_at(log, time_s)
        for t in times:
            res = renderer.render_rigs(ego, log.rig, scene.object_poses_at(float(t)))
            yield f"freeze-view: rig at t = {time_s:.1f} s, scene time {t:5.1f} s", res.rgb[0]
    else:
        for k, t in enumerate(times):
            res = renderer.render_rigs(log.ego_poses[k], log.rig, scene.object_poses_at(float(t)))
            yield f"multi-view t = {t:5.1f} s", res.rgb[0]


def num_demo_frames(log: SceneLog, mode: str, steps: int = 40) -> int:
    """Frames :func:`demo_views` yields."""
    return 3 * steps if mode == "freeze-time" else log.num_frames


def write_demo(log: SceneLog, renderer: PointRenderer, mode: str, out: str | os.PathLike, time_s: float = 0.0,
               shift_m: float = 2.0, fps: float = 10.0, progress: bool = False) -> Path:
    """Render :func:`demo_views` as contact sheets into an mp4 at ``out`` (atomically); returns the path."""
    from tqdm import tqdm

    from stag_sim.viz import contact_sheet, write_mp4

    frames = tqdm(demo_views(log, renderer, mode, time_s, shift_m), total=num_demo_frames(log, mode),
                  desc=mode, unit="frame", disable=not progress)
    sheets = (contact_sheet(list(images), log.rig.names, azimuths=log.rig.azimuths, caption=f"{log.name}  {caption}") for caption, images in frames)
    return write_mp4(out, sheets, fps=fps)
