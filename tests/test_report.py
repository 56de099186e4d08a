"""report.html: built from a real evaluation of tiny scenarios, checked as HTML, then opened in headless Chromium
(Debian's ``chromium``; `.ci/run` installs it): every video element loads and plays, and a screenshot is saved.
Also what the page is built from: run details, infractions, other agents' tracks, the per-step TTC, the log
expert, the spread over seeds, and the page without matplotlib."""

import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stag_sim.app import evaluate
from stag_sim.cache import write_scene_cache
from stag_sim.testing import tiny_scene_log

ENV = {"image_size": [18, 32], "cameras": ["CAM_FRONT", "CAM_BACK"], "voxel_size": 0.5}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_scene_cache(tiny_scene_log(num_frames=40, width=32, height=18), root / "scene")
    env = json.dumps(ENV)
    (root / "ok.yaml").write_text(f"scene: {{path: scene}}\nduration_s: 2.0\nagents: log_replay\nenv: {env}\n")
    (root / "crash.yaml").write_text(
        f"scene: {{path: scene}}\nduration_s: 3.0\nagents: idm\nenv: {env}\nevents:\n"
        "  - {type: insert, agent: tiny-car-1, name: lead, ahead_m: 8.0, speed: 0.0, behavior: stopped}\n")
    rows = evaluate([root / "ok.yaml", root / "crash.yaml"], "constant_velocity", root / "out", video=True, progress=False)
    return root / "out", rows


def test_report_has_a_sortable_table_videos_plots_and_units(report):
    out, rows = report
    page = (out / "report.html").read_text()
    assert page.count("<video ") == 2 and page.count("data:video/mp4;base64,") == 2
    assert page.count("bird&#39;s-eye plot") == 2 and "class='sortable'" in page
    assert "route completion (env) [%]" in page and "ADE [m]" in page
    # rounded for people: no long float tails in the tables
    tables = re.findall(r"<table.*?</table>", page, re.S)
    assert tables and not re.search(r"\d\.\d{5,}", "".join(tables))
    crash = next(r for r in rows if r["scenario"] == "crash")
    assert crash["termination_reason"] == "collision" and "ended by collision" in page


def test_report_plays_in_headless_chromium(report, tmp_path):
    out, _ = report
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (CI installs Debian's chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
             "--virtual-time-budget=15000"]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    status = json.loads(re.search(r"<pre id=\"media-status\" hidden=\"\">(.*?)</pre>", dom, re.S).group(1))
    assert len(status) == 2, status
    for vid, s in status.items():
        assert s["error"] is None and s["readyState"] >= 2 and s["duration"] > 0 and s["played"], (vid, s)
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1280,1600", f"--screenshot={shot}", url], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 10_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.std() > 10  # not a blank page


def _page(out):
    return (out / "report.html").read_text()


def test_report_and_results_say_what_ran_and_where(report):
    out, rows = report
    run = json.loads((out / "results.json").read_text())["run"]
    for key in ("stag_sim_version", "seeds", "command", "date_utc", "hostname", "platform", "python", "cpu_count"):
        assert key in run, key
    assert run["seeds"] == [0] and all(r["seed"] == 0 for r in rows)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", run["date_utc"])
    page = _page(out)
    assert page.index("date (UTC)") < page.index("class='sortable'")  # at the top, above the overview
    assert f"<code>{run['stag_sim_version']}</code>" in page
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["scenario", "agent", "seed"]


def test_git_commit_of_a_work_tree_clean_dirty_and_absent(tmp_path, monkeypatch):
    from stag_sim.app.run_info import git_commit

    if shutil.which("git") is None:
        pytest.skip("no git here")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(repo) == head
    (repo / "a.py").write_text("x = 2\n")
    assert git_commit(repo) == head + "+dirty"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_commit(plain) is None  # not a work tree
    untracked = repo / "sub"
    untracked.mkdir()
    (untracked / "b.py").write_text("")
    assert git_commit(untracked) is None  # inside a work tree, but not tracked there (an installed copy)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert git_commit(repo) is None  # no git at all: absent, never an error


def test_crash_records_what_was_hit_when_and_where(report):
    out, _ = report
    run = out / "runs" / "crash"
    infractions = json.loads((run / "infractions.json").read_text())
    first = infractions[0]
    assert first["kind"] == "collision" and first["with"] == "tiny-car-1" and first["category"] == "vehicle.truck"
    assert first["at_fault"] is True and first["type"] == "stopped_track" and first["source"] == "simulator"
    steps = list(csv.DictReader((run / "steps.csv").open()))
    hit = steps[first["step"] - 1]  # steps.csv starts at step 1
    assert first["t_s"] == pytest.approx(float(hit["t_s"]))
    assert first["agent_box"][:2] == pytest.approx([8.0, 0.0], abs=0.5)  # the inserted stopped car, 8 m ahead
    assert json.loads((out / "runs" / "ok" / "infractions.json").read_text()) == []
    page = _page(out)
    assert page.count("<h3>Infractions</h3>") == 2 and "tiny-car-1 (vehicle.truck)" in page
    assert "No infractions recorded." in page


def test_other_agents_time_series_and_log_expert_are_recorded_and_drawn(report):
    out, _ = report
    traj = json.loads((out / "runs" / "crash" / "trajectory.json").read_text())
    agents = {a["id"]: a for a in traj["agents"]}
    assert agents["tiny-car-1"]["end"][:2] == pytest.approx([8.0, 0.0], abs=0.5)
    assert agents["tiny-car-1"]["size"] == pytest.approx([7.0, 2.4])
    assert len(traj["ego_end"]) == 5
    for name in ("ok", "crash"):
        steps = list(csv.DictReader((out / "runs" / name / "steps.csv").open()))
        assert {"ttc_s", "logged_speed_mps", "speed_mps", "lateral_offset_m"} <= set(steps[0])
    crash = list(csv.DictReader((out / "runs" / "crash" / "steps.csv").open()))
    assert crash[-1]["ttc_s"] == "0.0"  # at the at-fault collision
    ok = list(csv.DictReader((out / "runs" / "ok" / "steps.csv").open()))
    assert all(s["ttc_s"] == "" for s in ok)
    # the logged ego's speed is what the log replay drives
    assert all(float(s["logged_speed_mps"]) > 0 for s in ok)
    expert = json.loads((out / "runs" / "ok" / "log_expert.json").read_text())
    assert expert["pdms"] == pytest.approx(1.0) and expert["steps"] == len(ok)
    page = _page(out)
    assert page.count("time series of") == 2 and "log expert PDMS" in page and "<th>log expert</th>" in page


def test_route_completions_are_labelled_apart(report):
    page = _page(report[0])
    assert "route completion (env)" in page and "route completion (DS)" in page
    assert ">route completion (CARLA)<" not in page and "route completion [%]" not in page


def _trace(ego_speed, lead_x, lead_speed, T=12, oncoming=False):
    from stag_sim.metrics import AgentTrace, EgoTrace, EpisodeTrace

    t = np.arange(T) * 0.1
    x = ego_speed * t
    ego = EgoTrace(t, np.stack([x, np.zeros(T)], -1), np.zeros(T), np.full(T, float(ego_speed)), 4.8, 2.0, 1.4)
    sign = -1.0 if oncoming else 1.0
    ag = AgentTrace(("lead",), ("vehicle.car",), np.array([[4.5, 1.9, 1.5]]),
                    np.stack([lead_x + sign * lead_speed * t, np.zeros(T)], -1)[:, None, :],
                    np.full((T, 1), np.pi if oncoming else 0.0), np.full((T, 1), float(lead_speed)),
                    np.ones((T, 1), bool))
    import shapely

    return EpisodeTrace(ego, ag, shapely.box(-50, -4, 200, 4), np.array([[0.0, 0.0], [200.0, 0.0]]), x, 10.0,
                        ego.xy, np.ones(T, bool)).validate()


@pytest.mark.parametrize("ego_speed,lead_x,lead_speed,oncoming,T,violation", [
    (10.0, 10.05, 5.0, False, 5, "projected_collision"), (10.0, 10.05, 5.0, False, 12, "at_fault_collision"),
    (10.0, 10.05, 10.0, False, 12, None), (10.0, 30.0, 0.0, False, 12, None),
    (10.0, 14.0, 0.0, False, 12, "at_fault_collision"), (8.0, 40.0, 9.0, True, 12, "projected_collision"),
    (0.0, 6.0, 0.0, False, 12, None), (10.0, -9.0, 20.0, False, 12, None)])
def test_ttc_series_agrees_with_the_ttc_metric(ego_speed, lead_x, lead_speed, oncoming, T, violation):
    """The per-step TTC of steps.csv follows the TTC metric's rules: the score is 0 exactly where some step has a
    finite TTC, and the metric's first violation is the series' first finite step, at the same offset."""
    from stag_sim.app.report_data import ttc_series
    from stag_sim.metrics import time_to_collision

    tr = _trace(ego_speed, lead_x, lead_speed, T=T, oncoming=oncoming)
    series, metric = ttc_series(tr), time_to_collision(tr)
    assert metric.details["violation"] == violation
    finite = np.flatnonzero(np.isfinite(series))
    assert (metric.score == 0.0) == bool(len(finite))
    if metric.details["violation"] == "projected_collision":
        assert finite[0] == metric.details["step"] and series[finite[0]] == metric.details["offset_s"]
    if metric.details["violation"] == "at_fault_collision":
        assert series[metric.details["step"]] == 0.0
    assert set(series[finite]) <= {0.0, 0.3, 0.6, 0.9}


def test_several_seeds_of_a_scenario_show_their_spread(report, tmp_path):
    out = tmp_path / "out"
    rows = evaluate([report[0].parent / "ok.yaml"], "random", out, seeds=3, progress=False)
    assert [r["seed"] for r in rows] == [0, 1, 2] and len({r["run_dir"] for r in rows}) == 3
    spread = json.loads((out / "results.json").read_text())["per_scenario"]["ok"]
    assert spread["runs"] == 3 and spread["seeds"] == [0, 1, 2]
    pdms = np.array([r["pdms"] for r in rows])
    assert pdms.std() > 0  # random actions differ by seed, so the spread says something
    assert spread["pdms"]["mean"] == pytest.approx(pdms.mean(), abs=1e-4)
    assert spread["pdms"]["std"] == pytest.approx(pdms.std(ddof=1), abs=1e-4)
    assert spread["pdms"]["min"] == pytest.approx(pdms.min(), abs=1e-4)
    page = _page(out)
    assert "Spread over seeds" in page and "±" in page
    for r in rows:  # each run's own section and plots, found through its run_dir
        anchor = "s-" + r["run_dir"].split("/")[-1]
        assert f"id='{anchor}'" in page and f"href='#{anchor}'" in page
    assert page.count("bird&#39;s-eye plot") == 3 and page.count("<h3>Infractions</h3>") == 3


def test_report_without_matplotlib_keeps_its_tables(report, tmp_path, monkeypatch):
    from stag_sim.app.report import write_report

    out = tmp_path / "out"
    shutil.copytree(report[0], out)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    page = write_report(report[1], out, "constant_velocity").read_text()
    assert "matplotlib is not installed" in page and "<img" not in page
    assert "<h3>Infractions</h3>" in page and "class='sortable'" in page and page.count("<video ") == 2
