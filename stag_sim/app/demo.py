"""``stag-sim demo``: closed loop on the embedded synthetic town, with a video, a metrics table and a run record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable


def run_demo(out: Path, scenario: str = "recover_lateral_offset", agent: str = "pure_pursuit",
             echo: Callable[[str], None] = print) -> Path:
    """Run ``agent`` on ``scenario`` with video and write its run directory ``out/demo-<scenario>``; ``echo`` gets
    the progress lines. Returns the run directory."""
    from stag_sim.app.episode import make_env, run_episode
    from stag_sim.app.reports import format_table, write_results
    from stag_sim.scenario import load_scenario

    from stag_sim.agents import check_agent
    from stag_sim.app.preflight import check_scenario
    from stag_sim.fsutil import atomic_directory, check_writable

    t0 = time.perf_counter()
    check_agent(agent)  # everything that can be wrong is found before the town loads
    sc = load_scenario(scenario)
    check_scenario(sc)
    check_writable(Path(out) / f"demo-{sc.name}", "--out")
    env = make_env(sc, render_mode="rgb_array")
    base = env.unwrapped
    echo(f"scene ready in {time.perf_counter() - t0:.1f} s: {base.scene_dir} "
         f"({base.renderer.scene.num_points / 1e6:.1f} M points); scenario {sc.name}: {sc.description}")
    run_dir = Path(out) / f"demo-{sc.name}"
    with atomic_directory(run_dir) as tmp:  # built aside and moved into place: never half a demo, never two mixed
        row = run_episode(sc, agent, tmp, video=True, env=env, progress=True)
        write_results([row], tmp, agent)
    echo(format_table([row], ("scenario", "agent", "success", "steps", "termination_reason", "route_completion",
                              "pdms", "driving_score", "ade")))
    echo(f"video:   {run_dir / 'video.mp4'}\nmetrics: {run_dir / 'results.csv'} (scores), "
         f"{run_dir / 'steps.csv'} (per step), {run_dir / 'report.html'}\n"
         f"replay:  stag-sim replay {run_dir}")
    return run_dir
