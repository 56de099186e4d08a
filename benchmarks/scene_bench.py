"""Scene-layer figures: synthetic town generation time, scene-cache size, write and load times.

Prints the median of ``--repeat`` runs for the fast operations, and, as the reference measured in the same run,
an eager load (read every byte into memory, no memory map) beside the default lazy (memory-mapped) load.

    python benchmarks/scene_bench.py                 # default scene: seed 0, 20 s, 400x224
    python benchmarks/scene_bench.py --duration 5    # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from stag_sim.cache import load_scene_cache, write_scene_cache
from stag_sim.summary import dir_size_bytes
from stag_sim.synth import generate_scene


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=20.0, help="[s]")
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    print(f"machine: {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    log = generate_scene(seed=args.seed, duration_s=args.duration, width=args.width, height=args.height,
                         workers=args.workers, progress=False)
    t_synth = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene"
        t0 = time.perf_counter()
        write_scene_cache(log, path)
        t_write = time.perf_counter() - t0
        size = dir_size_bytes(path)
        per_file = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
        t_lazy, _ = timed(lambda: load_scene_cache(path, verify=False), args.repeat)
        t_verified, _ = timed(lambda: load_scene_cache(path, verify=True), args.repeat)
        t_eager, _ = timed(lambda: load_scene_cache(path, verify=True, mmap=False), args.repeat)
        loaded = load_scene_cache(path, verify=False)
        t_frame, _ = timed(lambda: loaded.images.frame(loaded.num_frames // 2), args.repeat)

    T, C = log.num_frames, len(log.rig)
    print(f"scene: {log.name}, {T} frames x {C} cameras at {args.width}x{args.height}, {len(log.objects)} objects")
    print(f"synth (generate, {args.duration:g} s drive):     {t_synth:8.2f} s")
    print(f"cache write:                          {t_write:8.2f} s")
    print(f"cache size:                           {size / 2**20:8.1f} MiB  ({size / T / 2**10:.0f} KiB/frame)")
    for name, n in per_file.items():
        if n > 2**20:
            print(f"  {name:<28} {n / 2**20:8.1f} MiB")
    print(f"load, lazy (mmap, sizes checked):     {t_lazy * 1e3:8.1f} ms  (median of {args.repeat})")
    print(f"load, lazy + sha256 of every file:    {t_verified * 1e3:8.1f} ms")
    print(f"load, eager reference (read all):     {t_eager * 1e3:8.1f} ms  -> lazy load is {t_eager / t_lazy:.0f}x faster")
    print(f"decode one frame (6 JPEGs):           {t_frame * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
