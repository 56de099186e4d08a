"""report.html: built from a real evaluation of tiny scenarios, checked as HTML, then opened in headless Chromium
(Debian's ``chromium``; `.ci/run` installs it): every video element loads and plays, and a screenshot is saved."""

import json
import re
import shutil
import subprocess

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
    assert "route completion [%]" in page and "ADE [m]" in page
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
