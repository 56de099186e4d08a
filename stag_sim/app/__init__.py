"""The app layer: evaluation, replay, export, reports and the demo, on top of the env adapter and the agents.

Layers, bottom up (see ARCHITECTURE.md): the core (``stag_sim`` data, geometry, scene, render, world, traffic,
metrics, synth, ingest, refiner) imports neither the env adapter nor the agents nor this package; the env adapter
(:mod:`stag_sim.envs`) and the agents (:mod:`stag_sim.agents`) import the core; this package imports all of them;
the command line (:mod:`stag_sim.cli`, :mod:`stag_sim.app.cli`) sits on top.

Modules: :mod:`~stag_sim.app.episode` (one scenario x one agent), :mod:`~stag_sim.app.evaluate` (many, on local
processes or Ray), :mod:`~stag_sim.app.records` (run directories and typed result rows), :mod:`~stag_sim.app.reports`
(CSV, JSON, chart, HTML, terminal table), :mod:`~stag_sim.app.replay`, :mod:`~stag_sim.app.export` (offline RL
data), :mod:`~stag_sim.app.demo`.
"""

from stag_sim.app.episode import make_env, obs_digest, run_episode
from stag_sim.app.evaluate import evaluate
from stag_sim.app.export import export_episodes, load_episode
from stag_sim.app.records import ResultRow, load_record
from stag_sim.app.replay import replay_run
from stag_sim.app.reports import format_table, mean_scores, write_results

__all__ = ["ResultRow", "evaluate", "export_episodes", "format_table", "load_episode", "load_record", "make_env",
           "mean_scores", "obs_digest", "replay_run", "run_episode", "write_results"]
