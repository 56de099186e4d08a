"""The NeuroNCAP-style safety suite: the score, the jittered variations, the do-nothing reference, the runner and
``stag-sim eval --suite safety`` (all on the synthetic town's layout-only log: camera-free, a few seconds)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from stag_sim import safety
from stag_sim.errors import ScenarioError, ValidationError


class BrakingAgent:
    """Brakes as hard as it can from the first step (keeps the lane): stops short of a stationary or crossing
    actor, meets an oncoming one at the actor's speed only. Reads no camera."""

    camera_free = True

    def reset(self, obs, info) -> None:
        pass

    def act(self, obs):
        return np.array([-1.0, 0.0], np.float32)


@pytest.fixture(scope="module")
def town():
    from stag_sim.app.safety_suite import scene_log

    log, path, spec = scene_log(None)
    return log, path


def _same_rows(a, b):
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in a]
    return strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in b]


def test_score_is_neuroncaps_formula_on_hand_values():
    assert safety.ncap_score(None, 8.0) == 5.0  # no collision
    assert safety.ncap_score(0.0, 8.0) == 4.0  # touched at no relative speed
    assert safety.ncap_score(4.0, 8.0) == pytest.approx(2.0)
    assert safety.ncap_score(6.0, 8.0) == pytest.approx(1.0)
    assert safety.ncap_score(8.0, 8.0) == 0.0  # as hard as doing nothing
    assert safety.ncap_score(12.0, 8.0) == 0.0  # harder: clamped at 0
    with pytest.raises(ValidationError, match="reference_speed"):
        safety.ncap_score(1.0, 0.0)
    lo, hi = safety.wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35  # Wilson 95 %: [0, 0.278]
    assert safety.bootstrap_interval([1.0, 2.0, 3.0]) == safety.bootstrap_interval([1.0, 2.0, 3.0])
    s = safety.summarize_runs([5.0, 0.0, 2.0, 4.0], [False, True, True, True])
    assert s["mean_score"] == pytest.approx(2.75) and s["collision_rate"] == 0.75 and s["n"] == 4
    assert s["score_ci95"][0] <= 2.75 <= s["score_ci95"][1]


def test_variations_are_reproducible_per_seed_and_differ_across_seeds():
    for family in safety.FAMILIES:
        a = safety.draw_parameters(family, 7)
        assert a == safety.draw_parameters(family, 7)
        assert a != safety.draw_parameters(family, 8) and a != safety.draw_parameters(family, 7, redraw=1)
        for key, (lo, hi) in safety.JITTER[family].items():
            assert lo <= a[key] <= hi, (family, key)
    draws = [safety.draw_parameters("side", s)["from_left"] for s in range(20)]
    assert 0 < sum(draws) < 20  # both sides occur
    with pytest.raises(ValidationError, match="sideways"):
        safety.draw_parameters("sideways", 0)


@pytest.mark.parametrize("family", safety.FAMILIES)
def test_each_family_collides_with_the_do_nothing_ego(family, town):
    import yaml

    from stag_sim.scenario import load_scenario_text

    log, _ = town
    for seed in range(3):
        v = safety.draw_variation(family, seed, log)
        assert v.reference.agent == v.actor and v.reference.speed > 0.5
        # the do-nothing ego touches the actor about when the draw says (one step, 0.1 s, of slack)
        assert abs(v.reference.time_s - v.params["ttc_s"]) <= 0.15 + (0.45 if family == "side" else 0.0)
        (event,) = v.scenario.events
        assert event.name == safety.TARGET and event.agent == v.actor
        assert event.yaw_deg == {"stationary": 0.0, "frontal": 180.0, "side": (-90.0 if v.params.get("from_left")
                                                                              else 90.0)}[family]
        # the scenario is a valid scenario file
        back = load_scenario_text(yaml.safe_dump(v.scenario.to_dict()), source="safety.yaml")
        assert back.events == v.scenario.events and back.ego == v.scenario.ego
    if family == "stationary":  # relative impact speed = the ego's speed against a stopped car
        assert v.reference.speed == pytest.approx(safety.EGO_SPEED, abs=1e-6)
    if family == "frontal":  # head on: both speeds add
        assert v.reference.speed == pytest.approx(safety.EGO_SPEED + v.params["speed"], rel=0.02)


def test_a_draw_without_a_do_nothing_collision_is_redrawn_deterministically(town, monkeypatch):
    log, _ = town
    # a crossing actor that may arrive up to 3 s late: some draws miss the do-nothing ego
    monkeypatch.setitem(safety.JITTER, "side", {**safety.JITTER["side"], "offset_s": (-0.4, 3.0)})
    found = [safety.draw_variation("side", s, log) for s in range(6)]
    redrawn = [v for v in found if v.redraw > 0]
    assert redrawn, [v.redraw for v in found]
    v = redrawn[0]
    again = safety.draw_variation("side", v.seed, log)
    assert (again.redraw, again.params, again.reference) == (v.redraw, v.params, v.reference)
    assert v.params == safety.draw_parameters("side", v.seed, v.redraw) and v.scenario.name.endswith(f"-r{v.redraw}")
    monkeypatch.setitem(safety.JITTER, "side", {**safety.JITTER["side"], "offset_s": (2.5, 3.0)})  # never meets it
    with pytest.raises(ScenarioError, match=r"side seed 0 .*no draw of \d+ makes the do-nothing ego hit"):
        safety.draw_variation("side", 0, log)


def test_scene_without_a_parked_vehicle_or_too_short_is_one_clear_error(town):
    log, _ = town
    objs = log.objects
    moving = [bool(np.ptp(objs.poses[objs.valid[:, k], k, 0, 3]) > 1.0) for k in range(len(objs))]
    cats = tuple(c if m else "static.object" for c, m in zip(objs.categories, moving))
    no_parked = dataclasses.replace(log, objects=dataclasses.replace(objs, categories=cats))
    with pytest.raises(ScenarioError, match="no parked vehicle") as e:
        safety.draw_variation("stationary", 0, no_parked)
    assert "\n" not in str(e.value)
    v = safety.draw_variation("stationary", 0, no_parked, actor=log.objects.instance_ids[0])  # a named one works
    assert v.actor == log.objects.instance_ids[0]
    with pytest.raises(ScenarioError, match=r"needs at least 11\.4 s"):
        safety.draw_variation("frontal", 0, log, start_time_s=17.0)


def test_real_dgp_log_is_too_short_for_the_suite():
    from stag_sim.testing import realdata_path

    root = realdata_path("dgp_test_scene/scene_02")
    if root is None:
        pytest.skip("../shared/realdata/dgp_test_scene is not here")
    from stag_sim.ingest.dgp import ingest_dgp
    from stag_sim.scenario import SceneSpec

    log = ingest_dgp(root)
    with pytest.raises(ScenarioError, match=r"scene_02.* 0\.2 s of log .*needs at least"):
        safety.draw_variation("stationary", 0, log, SceneSpec(synthetic_seed=None, path=str(root)))


def test_same_seed_same_scores_and_braking_beats_pure_pursuit(tmp_path):
    from stag_sim.app.safety_suite import run_suite, run_variation

    pp = run_suite("pure_pursuit", tmp_path / "pp", variations=2, progress=False)
    again = run_suite("pure_pursuit", tmp_path / "pp2", variations=2, progress=False)
    assert _same_rows(pp["rows"], again["rows"]) and pp["summary"] == again["summary"]
    assert pp["camera_free"] and all(r["status"] == "ok" and r["collision"] for r in pp["rows"])
    assert pp["summary"]["overall"]["mean_score"] == pytest.approx(0.0, abs=0.05)  # pure_pursuit is do-nothing
    other = run_variation("frontal", 5, "pure_pursuit")
    assert other["speed"] != pp["rows"][2]["speed"]  # another seed, another draw
    brake = run_suite("test_safety:BrakingAgent", tmp_path / "brake", variations=2, progress=False)
    s = brake["summary"]
    assert s["overall"]["mean_score"] > pp["summary"]["overall"]["mean_score"] + 2.0
    assert s["stationary"]["mean_score"] == 5.0 and s["side"]["mean_score"] == 5.0  # stops short
    assert 0.0 < s["frontal"]["mean_score"] < 4.0 and s["frontal"]["collision_rate"] == 1.0  # still hit, softer


def test_cli_suite_prints_the_summary_and_writes_files(tmp_path, town):
    from stag_sim.cli import main

    out = tmp_path / "safety"
    res = CliRunner().invoke(main, ["eval", "--suite", "safety", "--agent", "pure_pursuit", "--variations", "2",
                                    "--out", str(out), "--scene", str(town[1]), "--families", "side,stationary"])
    assert res.exit_code == 0, res.output
    for word in ("side", "stationary", "overall", "95% CI", "variations.csv"):
        assert word in res.stdout
    assert "frontal" not in res.stdout
    rows = list(csv.DictReader((out / "variations.csv").open()))
    assert [(r["family"], r["seed"]) for r in rows] == [("side", "0"), ("side", "1"), ("stationary", "0"),
                                                        ("stationary", "1")]
    data = json.loads((out / "results.json").read_text())
    assert data["families"] == ["side", "stationary"] and data["summary"]["overall"]["n"] == 4
    assert data["summary"]["side"]["collision_rate"] == 1.0


BAD = {  # extra arguments to `stag-sim eval --suite safety --agent pure_pursuit --variations 1` -> the one line
    "family": (["--families", "stationary,sideways"], r"--families: .*sideways"),
    "variations": (["--variations", "0"], r"--variations: .*0"),
    "seed": (["--suite-seed", "-1"], r"--suite-seed: .*-1"),
    "scene": (["--scene", "{tmp}/nope"], r"--scene: .*nope.*not a scene cache"),
    "actor": (["--actor", "nosuch"], r"actor: no instance 'nosuch'"),
    "scenarios": (["--scenarios", "cut_in"], r"--scenarios: not with --suite safety"),
    "seeds": (["--seeds", "3"], r"--seeds: not with --suite safety"),
    "agent": (["--agent", "nosuch"], r"nosuch"),
    "workers": (["--workers", "0"], r"--workers: .*0"),
}


@pytest.mark.parametrize("case", sorted(BAD) + ["without-suite"])
def test_cli_suite_bad_inputs_are_one_line(case, tmp_path):
    import re

    from stag_sim.cli import main

    if case == "without-suite":
        argv, expect = ["eval", "--agent", "pure_pursuit", "--scenarios", "cut_in", "--families", "side"], \
            r"--families: only with --suite safety"
    else:
        extra, expect = BAD[case]
        argv = ["eval", "--suite", "safety", "--agent", "pure_pursuit", "--variations", "1",
                *[a.replace("{tmp}", str(tmp_path)) for a in extra]]  # a later --agent / --variations wins
    res = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "out")])
    err = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(err) == 1 and err[0].startswith("error: "), res.output
    assert re.search(expect, err[0]), err[0]
    assert not (tmp_path / "out").exists()
