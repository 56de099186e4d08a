"""The NeuroNCAP-style safety suite (``stag-sim eval --suite safety``, docs/safety.md) at its full size: 100
variations per family (300 in all) with one agent on the synthetic town, camera-free.

Printed: wall time and variations/s with ``--workers`` local processes, the summary (mean score with std and
bootstrap 95 % interval, collision rate with Wilson 95 % interval, per family and overall), the redraws the
do-nothing check needed; then the same suite again in one process (``workers=1``: the reference, and the check
that the same seed gives identical scores whatever the process layout); then a small set on the real DGP sample
(``../shared/realdata/dgp_test_scene/scene_02``) where actors can be inserted there (its 0.2 s are too short:
the one line that says so is printed).

    python benchmarks/safety_suite.py                      # 300 variations, 2 workers, then 1: about a minute
    python benchmarks/safety_suite.py --variations 20 --agent log_replay
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from stag_sim.app.safety_suite import format_summary, run_suite
from stag_sim.errors import StagSimError


def timed(agent: str, out: Path, variations: int, workers: int, **kw) -> tuple[dict, float]:
    t0 = time.perf_counter()
    res = run_suite(agent, out, variations=variations, workers=workers, progress=False, **kw)
    return res, time.perf_counter() - t0


def scores(res: dict) -> list:
    return [(r["family"], r["seed"], r.get("score"), r.get("impact_speed"), r.get("ref_impact_speed"))
            for r in res["rows"]]


def real_dgp(agent: str, root: Path, variations: int) -> None:
    from stag_sim.cache import write_scene_cache
    from stag_sim.ingest.dgp import ingest_dgp
    from stag_sim.testing import realdata_path

    scene = realdata_path("dgp_test_scene/scene_02")
    if scene is None:
        print("real DGP sample: not here (../shared/realdata/dgp_test_scene/scene_02)")
        return
    cache = root / "dgp_scene_02"
    write_scene_cache(ingest_dgp(scene), cache)
    try:
        res, wall = timed(agent, root / "dgp_out", variations, 1, scene=str(cache))
    except StagSimError as e:
        print(f"real DGP sample (scene_02): not run: {e}")
        return
    print(format_summary(res))
    print(f"real DGP sample: {len(res['rows'])} variations in {wall:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent", default="pure_pursuit")
    p.add_argument("--variations", type=int, default=100, help="per family")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) at the start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first, wall = timed(args.agent, root / "a", args.variations, args.workers, seed=args.seed)
        n = len(first["rows"])
        print(format_summary(first))
        redraws = [r.get("redraw", 0) for r in first["rows"] if r["status"] == "ok"]
        print(f"{n} variations with {args.workers} worker(s): {wall:.1f} s wall, {n / wall:.1f} variations/s; "
              f"redrawn: {sum(1 for x in redraws if x)} (at most {max(redraws, default=0)} redraws); "
              f"mean time in a variation {sum(r['wall_s'] for r in first['rows']) / n:.3f} s")
        second, wall1 = timed(args.agent, root / "b", args.variations, 1, seed=args.seed)
        same = scores(first) == scores(second)
        print(f"same seed again in 1 process: {wall1:.1f} s wall, {n / wall1:.1f} variations/s "
              f"(speed-up of {args.workers} workers: {wall1 / wall:.2f}x); identical scores: {same}")
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
        real_dgp(args.agent, root, 2)
        if not same:
            raise SystemExit("scores differ between two runs with the same seed")


if __name__ == "__main__":
    main()
