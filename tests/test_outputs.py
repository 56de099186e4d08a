"""Outputs an evaluator can trust: one evaluation per --out at a time, no stale runs, replays that never leave an
earlier verdict behind, and nothing of a user's directory replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from stag_sim.cache import write_scene_cache
from stag_sim.cli import main
from stag_sim.errors import OutputError, StagSimError
from stag_sim.fsutil import output_lock
from stag_sim.testing import tiny_scene_log

ENV = {"image_size": [18, 32], "cameras": ["CAM_FRONT", "CAM_BACK"], "voxel_size": 0.5}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    write_scene_cache(tiny_scene_log(num_frames=40, width=32, height=18), root / "scene")
    path = root / "straight.yaml"
    path.write_text(f"scene: {{path: {root / 'scene'}}}\nduration_s: 2.0\nagents: log_replay\nenv: {json.dumps(ENV)}\n")
    return path


def test_a_second_evaluation_into_a_busy_out_is_refused(scenario, tmp_path):
    from stag_sim.app import evaluate

    out = tmp_path / "ev"
    with output_lock(out, "evaluation"):
        with pytest.raises(OutputError, match=r"another stag-sim evaluation \(pid \d+\) is writing there"):
            evaluate([scenario], "log_replay", out, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".stag-sim.lock"]  # nothing of the refused one
    rows = evaluate([scenario], "log_replay", out, progress=False)  # free again once the holder is done
    assert rows[0]["status"] == "ok"


def test_concurrent_evaluations_in_two_processes_never_mix(scenario, tmp_path):
    """Two `stag-sim eval` processes into one --out: one writes it, the other is refused in one line."""
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "stag_sim.cli", "eval", "--scenarios", str(scenario), "--out", str(out), "--agent"]
    hold = textwrap.dedent(f"""
        import sys, time
        from stag_sim.fsutil import output_lock
        with output_lock({str(out)!r}, "evaluation"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = subprocess.run(cmd + ["constant_velocity"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "is writing there" in res.stderr
        assert not (out / "results.csv").exists()
    finally:
        holder.communicate("\n", timeout=30)


def test_a_failed_rerun_leaves_no_stale_run_or_results(scenario, tmp_path, monkeypatch):
    from stag_sim.app import evaluate

    ev = sys.modules["stag_sim.app.evaluate"]  # the module (stag_sim.app.evaluate is also the function's name)
    out = tmp_path / "ev"
    evaluate([scenario], "log_replay", out, progress=False)
    assert (out / "runs" / "straight" / "record.json").is_file()

    def broken(*a, **k):
        raise RuntimeError("renderer fell over")

    monkeypatch.setattr(ev, "run_episode", broken)
    rows = evaluate([scenario], "log_replay", out, progress=False)
    assert rows[0]["status"] == "failed" and "renderer fell over" in rows[0]["reason"]
    assert not (out / "runs" / "straight").exists()  # the earlier, good run of the same name is not shown as this one
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["status"] for r in results] == ["failed"]
    assert "renderer fell over" in (out / "report.html").read_text()


def test_several_seeds_get_their_own_run_directories(scenario, tmp_path):
    from stag_sim.app import evaluate

    rows = evaluate([scenario], "random", tmp_path / "ev", progress=False, seeds=3)
    assert [r["run_dir"] for r in rows] == ["runs/straight-seed0", "runs/straight-seed1", "runs/straight-seed2"]
    seeds = [json.loads((tmp_path / "ev" / r["run_dir"] / "record.json").read_text())["seed"] for r in rows]
    assert seeds == [0, 1, 2]
    with pytest.raises(StagSimError, match="seeds: must be >= 1"):
        evaluate([scenario], "random", tmp_path / "ev2", progress=False, seeds=0)


def test_two_files_with_one_scenario_name_are_refused(scenario, tmp_path):
    from stag_sim.app import evaluate

    twin = tmp_path / "twin.yaml"
    twin.write_text(scenario.read_text() + "name: straight\n")
    with pytest.raises(StagSimError, match="'straight' is used by more than one file"):
        evaluate([scenario, twin], "log_replay", tmp_path / "ev", progress=False)
    assert not (tmp_path / "ev").exists()


def test_replay_with_a_camera_offset_and_video_writes_its_verdict(scenario, tmp_path):
    """The README's `stag-sim replay RUN --camera-offset 0,1.5,0 --video` (it used to crash on a numpy bool)."""
    from stag_sim.app import run_episode

    run = tmp_path / "run"
    run_episode(scenario, "log_replay", run)
    res = CliRunner().invoke(main, ["replay", str(run), "--camera-offset", "0,1.5,0", "--video"])
    assert res.exit_code == 0, res.output
    verdict = json.loads((run / "replay" / "replay.json").read_text())
    assert verdict["rerendered"] is True and verdict["metrics_identical"] is True
    assert (run / "replay" / "video.mp4").stat().st_size > 0


def test_a_failed_replay_removes_the_earlier_verdict(scenario, tmp_path, monkeypatch):
    from stag_sim.app import replay_run, run_episode

    rp = sys.modules["stag_sim.app.replay"]

    run = tmp_path / "run"
    run_episode(scenario, "log_replay", run)
    assert replay_run(run, run / "replay")["identical"]
    assert json.loads((run / "replay" / "replay.json").read_text())["identical"] is True

    def broken(*a, **k):
        raise StagSimError("scene went away")

    monkeypatch.setattr(rp, "run_episode", broken)
    res = CliRunner().invoke(main, ["replay", str(run)])
    assert res.exit_code == 1 and res.stderr.strip() == "error: scene went away"
    assert not (run / "replay").exists()  # no replay.json saying "identical" about a replay that did not happen


@pytest.mark.parametrize("command", ["replay", "export"])
def test_a_users_own_directory_is_never_replaced(command, scenario, tmp_path):
    from stag_sim.app import export_episodes, replay_run, run_episode

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(StagSimError, match="exists and is not an? (replay|episode export)"):
        if command == "replay":
            run_episode(scenario, "log_replay", tmp_path / "run")
            replay_run(tmp_path / "run", mine)
        else:
            export_episodes([scenario], mine, progress=False)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
