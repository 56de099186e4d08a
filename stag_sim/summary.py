"""Human-readable facts about a scene (what ``stag-sim info`` prints)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from stag_sim.scene_log import SceneLog


def dir_size_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _frames_line(log: SceneLog) -> str:
    """Frame count, duration, mean rate and ego path length; a one-frame log has no duration and no rate."""
    T = log.num_frames
    if T < 2:
        return f"frames     {_count(T, 'frame')} (single keyframe: no duration, no frame rate)"
    ego_xy = np.asarray(log.ego_poses)[:, :2, 3]
    path_len = float(np.linalg.norm(np.diff(ego_xy, axis=0), axis=1).sum())
    rate = (T - 1) / log.duration_s  # > 0: frame timestamps are strictly increasing
    return f"frames     {T} over {log.duration_s:.2f} s  (~{rate:.1f} Hz); ego drives {path_len:.1f} m"


def scene_summary(log: SceneLog, scene_dir: str | Path | None = None) -> str:
    """A multi-line summary: duration, frames, cameras, depth sources, objects, map extent, sizes."""
    lines = [f"scene      {log.name}  (source: {log.source})", _frames_line(log), "cameras"]
    for c in log.rig:
        i = c.intrinsics
        x, y, z = c.T_ego_from_camera[:3, 3]
        lines.append(f"  {c.name:<16} {i.width}x{i.height}  hfov {np.degrees(i.hfov):5.1f} deg  at ({x:+.2f}, {y:+.2f}, {z:+.2f}) m")
    lines.append(f"images     {log.images.codec}, {_mib(log.images.nbytes)}" if log.images is not None
                 else "images     none (layout-only log: poses, tracks, map and rig)")
    lines.append(f"depth      {'dense maps (png16), ' + _mib(log.depth.nbytes) if log.depth is not None else 'none'}")
    if log.lidar is not None:
        n = np.diff(log.lidar.offsets)
        merged = log.metadata.get("lidar_sweeps")
        how = (f" (merging {merged} sensor sweeps, motion-compensated)"
               if isinstance(merged, int) and merged > len(log.lidar) else "")
        lines.append(f"lidar      {_count(len(log.lidar), 'sweep')}{how}, {int(n.mean()) if len(n) else 0} points/sweep on average")
    else:
        lines.append("lidar      none")
    cats = Counter(log.objects.categories)
    lines.append(f"objects    {len(log.objects)} tracked: " + (", ".join(f"{k} x{v}" for k, v in sorted(cats.items())) or "none"))
    if log.map is not None:
        x0, y0, x1, y1 = log.map.bounds
        lines.append(
            f"map        drivable area {log.map.drivable_area.area:.0f} m^2, extent x [{x0:.0f}, {x1:.0f}] "
            f"y [{y0:.0f}, {y1:.0f}] m ({x1 - x0:.0f} x {y1 - y0:.0f} m), {len(log.map.lanes)} lanes"
        )
        lines.append(f"rules      {_rules_line(log.map)}")
    else:
        lines.append("map        none (lanes, lights and speed limits unknown: those metrics are not scored)")
    if scene_dir is not None:
        lines.append(f"on disk    {_mib(dir_size_bytes(scene_dir))} at {scene_dir}")
    return "\n".join(lines)


def _rules_line(m) -> str:
    """One line on a map's road rules: lights (and whether their states are known), intersections, speed limits."""
    import numpy as np

    n = len(m.traffic_lights)
    known = sum("unknown" not in lt.states for lt in m.traffic_lights)
    if n:
        lights = f"{_count(n, 'traffic light')} ({known} with states)"
    else:
        lights = "no traffic lights" if m.lights_complete else "traffic lights not listed"
    inter = f"{sum(m.in_intersection)} intersection lanes" if len(m.in_intersection) else "intersections unknown"
    limits = np.asarray(m.speed_limits, float)
    known_limits = limits[np.isfinite(limits)]
    speed = (f"speed limits on {len(known_limits)} lanes ({known_limits.min() * 3.6:.0f}-{known_limits.max() * 3.6:.0f}"
             " km/h)" if len(known_limits) else "no speed limits")
    return f"{lights}, {inter}, {speed}"
