"""Closed-loop evaluation: eval rows and files, failing agents, replay bit-identity, export, the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from stag_sim.cache import write_scene_cache
from stag_sim.cli import main
from stag_sim.errors import StagSimError
from stag_sim.app import evaluate, replay_run, run_episode
from stag_sim.app import load_episode
from stag_sim.testing import tiny_scene_log

ENV = {"image_size": [18, 32], "cameras": ["CAM_FRONT", "CAM_BACK"], "voxel_size": 0.5}


class RaisingAgent:
    """A planner that crashes on its third step."""

    def __init__(self):
        self.n = 0

    def reset(self, obs, info):
        self.n = 0

    def act(self, obs):
        self.n += 1
        if self.n == 3:
            raise RuntimeError('planner exploded, "badly"')
        return np.zeros(2, np.float32)


class NaNAgent:
    def reset(self, obs, info):
        pass

    def act(self, obs):
        return np.array([np.nan, 0.0], np.float32)


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_scene_cache(tiny_scene_log(num_frames=40, width=32, height=18), root / "scene")
    env = json.dumps(ENV)
    (root / "scenarios").mkdir()
    (root / "scenarios" / "straight.yaml").write_text(
        f"scene: {{path: ../scene}}\nduration_s: 3.0\nagents: log_replay\nenv: {env}\nseed: 1\n")
    (root / "scenarios" / "brake.yaml").write_text(
        f"scene: {{path: ../scene}}\nduration_s: 3.5\nagents: idm\nenv: {env}\nevents:\n"
        "  - {type: insert, agent: tiny-car-1, name: lead, ahead_m: 12.0, speed: 5.0, behavior: constant}\n"
        "  - {type: hard_brake, agent: lead, at_s: 0.5, decel: 6.0}\n")
    return root


def test_run_episode_scores_and_writes_a_run_record(scenario_dir, tmp_path):
    row = run_episode(scenario_dir / "scenarios" / "straight.yaml", "log_replay", tmp_path / "run", video=True)
    assert row["status"] == "ok" and row["success"] and row["termination_reason"] == "route_completed"
    assert row["pdms"] == pytest.approx(1.0, abs=0.02) and row["driving_score"] == 1.0 and row["ade"] < 0.05
    for name in ("record.json", "actions.npy", "steps.csv", "video.mp4"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert len(record["obs_hashes"]) == row["steps"] + 1 and record["agent"] == "log_replay"
    # the video is H.264 (what browsers play), one frame per observation
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(tmp_path / "run" / "video.mp4"))
    meta = next(frames)
    assert meta["codec"].startswith("h264") and sum(1 for _ in frames) == row["steps"] + 1


def test_brake_scenario_log_replay_collides_with_the_braking_lead(scenario_dir):
    row = run_episode(scenario_dir / "scenarios" / "brake.yaml", "log_replay")
    assert row["termination_reason"] == "collision" and row["nc"] == 0.0 and row["pdms"] == 0.0
    assert row["collisions_vehicle"] == 1 and row["driving_score"] == pytest.approx(0.6 * row["ds_route_completion"])


def test_evaluate_orders_expert_above_random_and_writes_reports(scenario_dir, tmp_path):
    scen = sorted((scenario_dir / "scenarios").glob("*.yaml"))
    means = {}
    for agent in ("log_replay", "random"):
        rows = evaluate(scen, agent, tmp_path / agent, progress=False)
        assert [r["scenario"] for r in rows] == ["brake", "straight"]
        means[agent] = np.mean([r["driving_score"] for r in rows])
        for name in ("results.csv", "results.json", "report.html"):
            assert (tmp_path / agent / name).stat().st_size > 0
    assert means["log_replay"] > means["random"]


def test_failing_agents_are_marked_failed_and_eval_continues(scenario_dir, tmp_path):
    scen = [scenario_dir / "scenarios" / "straight.yaml", scenario_dir / "scenarios" / "brake.yaml"]
    rows = evaluate(scen, "test_evaluation:RaisingAgent", tmp_path / "raise", progress=False)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["reason"] == 'agent raised RuntimeError: planner exploded, "badly"' and rows[0]["steps"] == 2
    import csv

    with open(tmp_path / "raise" / "results.csv", newline="") as f:  # commas and quotes survive the CSV
        assert [r["reason"] for r in csv.DictReader(f)] == [r["reason"] for r in rows]
    rows = evaluate(scen[:1], "test_evaluation:NaNAgent", tmp_path / "nan", progress=False)
    assert rows[0]["status"] == "failed" and "non-finite action" in rows[0]["reason"]
    missing = tmp_path / "missing.yaml"
    missing.write_text("scene: {path: /no/such/scene}\nduration_s: 2.0\n")
    with pytest.raises(StagSimError, match="missing.yaml: scene.path: /no/such/scene: not a scene cache"):
        evaluate([missing, scen[0]], "log_replay", tmp_path / "missing", progress=False)
    assert not (tmp_path / "missing").exists()  # found before the first scenario ran: nothing run, nothing written


def test_unknown_agent_is_one_clear_error(scenario_dir, tmp_path):
    with pytest.raises(StagSimError, match="not a registered agent"):
        evaluate([scenario_dir / "scenarios" / "straight.yaml"], "wizard", tmp_path)
    # checked before anything runs: one error, no output directory
    with pytest.raises(StagSimError, match="cannot import module 'no_such_pkg.mod'"):
        evaluate([scenario_dir / "scenarios" / "straight.yaml"], "no_such_pkg.mod:Planner", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_every_scenario_file_is_checked_before_the_first_runs(scenario_dir, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("scene: {synthetic: {seed: 0}}\nduration_s: fast\n")
    with pytest.raises(StagSimError, match=r"1 of 2 scenario file\(s\) cannot run, nothing was run: .*broken\.yaml:2"):
        evaluate([scenario_dir / "scenarios" / "straight.yaml", broken], "log_replay", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_eval_exit_status_says_whether_every_scenario_ran(scenario_dir, tmp_path):
    runner = CliRunner()
    ok = scenario_dir / "scenarios" / "straight.yaml"
    res = runner.invoke(main, ["eval", "--agent", "log_replay", "--scenarios", str(ok), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["eval", "--agent", "test_evaluation:RaisingAgent", "--scenarios", str(ok),
                               "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "FAILED straight: agent raised RuntimeError" in res.output
    assert "1 of 1 scenario(s) could not run" in res.output and (tmp_path / "b" / "results.csv").is_file()
    broken = tmp_path / "broken.yaml"
    broken.write_text("scene: {synthetic: {seed: 0}}\nduration_s: 3\ncolour: red\n")
    res = runner.invoke(main, ["eval", "--agent", "log_replay", "--scenarios", str(ok), str(broken), "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "broken.yaml:3: colour: unknown key" in res.output and "nothing was run" in res.output
    assert not (tmp_path / "c").exists()


def test_unreachable_carla_fails_once_within_its_timeout(scenario_dir, tmp_path):
    pytest.importorskip("carla")
    import socket

    with socket.socket() as sock:  # a free local port: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scen = [str(scenario_dir / "scenarios" / "straight.yaml"), str(scenario_dir / "scenarios" / "brake.yaml")]
    res = CliRunner().invoke(main, ["eval", "--agent", "log_replay", "--scenarios", *scen, "--carla", f"127.0.0.1:{port}",
                                    "--carla-timeout", "1", "--out", str(tmp_path / "carla")])
    assert res.exit_code == 1 and res.output.count("no CARLA server answered") == 1, res.output  # once, not per scenario
    assert not (tmp_path / "carla").exists()


def test_replay_is_bit_identical_and_rerenders(scenario_dir, tmp_path):
    run = tmp_path / "runs"
    evaluate([scenario_dir / "scenarios" / "brake.yaml"], "random", run, progress=False)
    rec = run / "runs" / "brake"
    same = replay_run(rec, tmp_path / "again")
    assert same["identical"] and same["obs_identical"] and same["metrics_identical"] and same["first_divergent_step"] is None
    moved = replay_run(rec, tmp_path / "moved", camera_offset=(0.0, 1.0, 0.0))
    assert moved["rerendered"] and moved["metrics_identical"] and not moved["obs_identical"]
    assert moved["first_divergent_step"] == 0
    # a tampered record is caught
    rec_json = json.loads((rec / "record.json").read_text())
    rec_json["obs_hashes"][3] = "0" * 64
    rec_json["result"]["obs_hash"] = "0" * 64
    (rec / "record.json").write_text(json.dumps(rec_json))
    bad = replay_run(rec, tmp_path / "bad")
    assert not bad["identical"] and bad["first_divergent_step"] == 3


def test_export_writes_transitions(scenario_dir, tmp_path):
    from stag_sim.app import export_episodes

    out = export_episodes([scenario_dir / "scenarios" / "straight.yaml"], tmp_path / "ds", episodes=2, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert [e["seed"] for e in index["episodes"]] == [1, 2]
    ep = load_episode(out / index["episodes"][0]["file"])
    T = index["episodes"][0]["steps"]
    assert ep["action"].shape == (T, 2) and ep["reward"].shape == (T,) and ep["done"][-1] and not ep["done"][:-1].any()
    assert ep["obs"]["CAM_FRONT"].shape == (T, 18, 32, 3) and np.array_equal(ep["obs"]["ego"][1:], ep["next_obs"]["ego"][:-1])
    assert np.allclose(ep["action"], ep["expert_action"])  # the expert drove


def test_cli_eval_and_replay(scenario_dir, tmp_path):
    runner = CliRunner()
    files = sorted(str(p) for p in (scenario_dir / "scenarios").glob("*.yaml"))
    res = runner.invoke(main, ["eval", "--agent", "constant_velocity", "--scenarios", *files, "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "mean: pdms" in res.output and (tmp_path / "e" / "results.csv").read_text().count("\n") == 3
    res = runner.invoke(main, ["replay", str(tmp_path / "e" / "runs" / "straight")])
    assert res.exit_code == 0 and "bit-identical" in res.output, res.output
    res = runner.invoke(main, ["replay", str(tmp_path)])
    assert res.exit_code == 1 and "not a run directory" in res.output
    res = runner.invoke(main, ["eval", "--agent", "random", "--scenarios", str(tmp_path / "none.yaml"), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "no such scenario file or directory" in res.output


@pytest.mark.slow
def test_ray_and_local_backends_agree(scenario_dir, tmp_path):
    pytest.importorskip("ray")
    scen = sorted((scenario_dir / "scenarios").glob("*.yaml"))
    local = evaluate(scen, "random", tmp_path / "local", workers=2, progress=False)
    on_ray = evaluate(scen, "random", tmp_path / "ray", workers=2, backend="ray", progress=False)
    drop = ("wall_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in local] == \
        [{k: v for k, v in r.items() if k not in drop} for r in on_ray]


def test_cli_demo_writes_video_table_and_record(scenario_dir, tmp_path):
    res = CliRunner().invoke(main, ["demo", "--scenario", str(scenario_dir / "scenarios" / "straight.yaml"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "demo-straight"
    for name in ("video.mp4", "results.csv", "report.html", "steps.csv", "record.json", "trajectory.json"):
        assert (run / name).stat().st_size > 0, name
    assert "pure_pursuit" in res.output and f"stag-sim replay {run}" in res.output
    page = (run / "report.html").read_text()  # the demo's report embeds its video and plot
    assert page.count("data:video/mp4;base64,") == 1 and "bird&#39;s-eye plot" in page


def test_replay_rerenders_with_the_refiner(scenario_dir, tmp_path):
    pytest.importorskip("diffusers")
    res = CliRunner().invoke(main, ["refiner", "init", "--size", "tiny", "--out", str(tmp_path / "refiner")])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs"
    evaluate([scenario_dir / "scenarios" / "straight.yaml"], "pure_pursuit", run, progress=False)
    res = CliRunner().invoke(main, ["replay", str(run / "runs" / "straight"), "--out", str(tmp_path / "refined"),
                                    "--renderer", "refined", "--refiner-path", str(tmp_path / "refiner")])
    assert res.exit_code == 0, res.output
    assert "re-rendered with other cameras/renderer: driving and metrics identical: True" in res.output
    replay = json.loads((tmp_path / "refined" / "replay.json").read_text())
    assert replay["rerendered"] and not replay["obs_identical"] and replay["first_divergent_step"] == 0


def test_agents_come_from_a_registry_and_entry_points(monkeypatch):
    """A registered name builds through make_agent; an entry point of the stag_sim.agents group is found by name;
    a second registration of a name is refused."""
    import importlib.metadata as md

    from stag_sim import agents
    from stag_sim.errors import AgentError

    env = type("E", (), {"action_space": None, "observation_space": None, "unwrapped": None})()
    monkeypatch.setattr(agents, "_REGISTRY", dict(agents._REGISTRY))
    agents.register_agent("nan_agent", lambda env, seed: NaNAgent())
    assert isinstance(agents.make_agent("nan_agent", env), NaNAgent)
    with pytest.raises(AgentError, match="already registered"):
        agents.register_agent("nan_agent", lambda env, seed: NaNAgent())
    ep = md.EntryPoint("raising_plugin", f"{__name__}:RaisingAgent", agents.ENTRY_POINT_GROUP)
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: [ep] if kw.get("group") == agents.ENTRY_POINT_GROUP else real(**kw))
    assert "raising_plugin" in agents.agent_names()
    assert isinstance(agents.make_agent("raising_plugin", env), RaisingAgent)
    with pytest.raises(AgentError, match="not a registered agent"):
        agents.make_agent("no_such_agent", env)


def test_result_rows_carry_the_scenario_seed(scenario_dir):
    from stag_sim.app.records import LEAD_COLUMNS, failed_row

    row = run_episode(scenario_dir / "scenarios" / "straight.yaml", "constant_velocity")
    assert row["seed"] == 1  # straight.yaml says seed: 1
    assert LEAD_COLUMNS.index("seed") == LEAD_COLUMNS.index("agent") + 1
    assert failed_row("x", "a", "broken")["seed"] is None
