"""The bad-input battery: every wrong thing a user can type, through the CLI and the API, ends in one clear line.

Each CLI case asserts: exit status 1 (or click's own 2 for a malformed command line), exactly one line on stderr,
``error:`` first, the offending file / setting / value named, no traceback, and nothing written, moved or deleted
(the fixture tree and the working directory are compared file by file before and after). Each API case asserts a
:class:`~stag_sim.errors.StagSimError` whose one-line message names the setting.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stag_sim.cache import write_scene_cache
from stag_sim.cli import main
from stag_sim.errors import StagSimError
from stag_sim.testing import tiny_scene_log

ENV = {"image_size": [18, 32], "cameras": ["CAM_FRONT", "CAM_BACK"], "voxel_size": 0.5}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny scene cache, scenarios on it, a recorded run, a plain file; shared (read-only) by every case."""
    from stag_sim.app import run_episode

    root = tmp_path_factory.mktemp("battery")
    write_scene_cache(tiny_scene_log(num_frames=40, width=32, height=18), root / "scene")
    (root / "sc").mkdir()
    env = json.dumps(ENV)

    def scenario(name, body):
        (root / "sc" / f"{name}.yaml").write_text(f"scene: {{path: ../scene}}\nduration_s: 2.0\nenv: {env}\n{body}")

    scenario("ok", "agents: log_replay\nseed: 1\n")
    scenario("neg_speed", "ego: {speed: -3.0}\n")
    scenario("late_start", "start_time_s: 500.0\n")
    scenario("bad_lane", "route: {lanes: [no-such-lane]}\n")
    scenario("insert_neg", "events:\n  - {type: insert, name: a, ahead_m: 10.0, speed: -5.0, behavior: constant}\n")
    (root / "sc" / "no_scene.yaml").write_text("scene: {path: ../missing}\nduration_s: 2.0\n")
    (root / "sc" / "garbled.yaml").write_text("scene: {path: ../scene\nduration_s: [\n")
    (root / "sc" / "typo.yaml").write_text("scene: {path: ../scene}\nduraton_s: 2.0\n")
    run_episode(root / "sc" / "ok.yaml", "log_replay", root / "run")
    (root / "afile").write_text("not a directory\n")
    return root


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def cli(world, tmp_path, monkeypatch):
    """Run the CLI in an empty working directory; check the one-line contract and that nothing changed."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def run(argv, expect: str, status: int = 1, scratch: Path | None = None):
        before = _tree(world), _tree(scratch) if scratch else None
        res = CliRunner().invoke(main, [str(a) for a in argv], catch_exceptions=True)
        err = res.stderr.strip().splitlines()
        assert res.exception is None or isinstance(res.exception, SystemExit), (
            f"{argv}: raised {type(res.exception).__name__}: {res.exception}")
        assert "Traceback" not in res.output, res.output
        assert res.exit_code == status, f"{argv}: exit {res.exit_code}, stderr {res.stderr!r}"
        if status == 2:  # click's usage error: "Usage: ...", "Try ...", "Error: ..."
            assert err and err[-1].startswith("Error:"), res.stderr
        else:
            assert len(err) == 1 and err[0].startswith("error: "), f"{argv}: stderr {res.stderr!r}"
        assert re.search(expect, err[-1]), f"{argv}: {err[-1]!r} does not match {expect!r}"
        assert (_tree(world), _tree(scratch) if scratch else None) == before, f"{argv}: files changed"
        assert not any(cwd.iterdir()), f"{argv}: wrote {list(cwd.iterdir())} into the working directory"
        return err[-1]

    return run


def _copy_scene(world, tmp_path) -> Path:
    dst = tmp_path / "scene"
    shutil.copytree(world / "scene", dst)
    return dst


# ------------------------------------------------------------------------------------------------ scene caches
SCENE_CASES = {
    "info-missing": (["info", "{tmp}/nope"], r"nope"),
    "info-a-file": (["info", "{world}/afile"], r"afile"),
    "info-time-negative": (["info", "{world}/scene", "--time", "-5"], r"--time.*-5"),
    "info-time-past-end": (["info", "{world}/scene", "--time", "1e9"], r"--time.*1e\+?0?9|--time.*1000000000"),
    "info-sheet-under-a-file": (["info", "{world}/scene", "--sheet", "{world}/afile/sheet.png"], r"afile"),
    "render-missing": (["render", "{tmp}/nope", "--out", "{tmp}/v.mp4"], r"nope"),
    "render-out-under-a-file": (["render", "{world}/scene", "--out", "{world}/afile/v.mp4"], r"afile"),
    "render-voxel-negative": (["render", "{world}/scene", "--out", "{tmp}/v.mp4", "--voxel-size", "-1"], r"voxel.*-1"),
    "render-fps-zero": (["render", "{world}/scene", "--out", "{tmp}/v.mp4", "--fps", "0"], r"fps.*0"),
    "render-time-past-end": (["render", "{world}/scene", "--out", "{tmp}/v.mp4", "--time", "999"], r"--time.*999"),
    "render-out-not-mp4": (["render", "{world}/scene", "--out", "{tmp}/v.txt"], r"\.mp4"),
    "fidelity-missing": (["fidelity", "{tmp}/nope"], r"nope"),
    "fidelity-frame-out-of-range": (["fidelity", "{world}/scene", "--hold-out-frames", "999"], r"999"),
    "fidelity-bad-image-size": (["fidelity", "{world}/scene", "--image-size", "0x0"], r"image.size.*0x0"),
    "fidelity-bad-shifts": (["fidelity", "{world}/scene", "--shifts", "abc"], r"shifts.*abc"),
    "fidelity-every-zero": (["fidelity", "{world}/scene", "--every", "0"], r"every.*0"),
    "fidelity-unknown-camera": (["fidelity", "{world}/scene", "--hold-out-camera", "CAM_TOP"], r"CAM_TOP"),
    "fidelity-out-under-a-file": (["fidelity", "{world}/scene", "--out", "{world}/afile/f"], r"afile"),
    "synth-out-under-a-file": (["synth", "--out", "{world}/afile/town"], r"afile"),
    "synth-exists": (["synth", "--out", "{world}/scene"], r"already exists"),
    "synth-negative-duration": (["synth", "--out", "{tmp}/t", "--duration", "-1"], r"duration.*-1"),
    "synth-zero-width": (["synth", "--out", "{tmp}/t", "--width", "0"], r"width.*0"),
    "synth-workers-zero": (["synth", "--out", "{tmp}/t", "--workers", "0"], r"workers.*0"),
    "synth-negative-seed": (["synth", "--out", "{tmp}/t", "--seed", "-1"], r"--seed.*-1"),
    "info-time-nan": (["info", "{world}/scene", "--time", "nan"], r"--time.*nan"),
    "render-shift-nan": (["render", "{world}/scene", "--out", "{tmp}/v.mp4", "--shift", "nan"], r"--shift.*nan"),
    "fidelity-negative-frame": (["fidelity", "{world}/scene", "--hold-out-frames", "-1"], r"hold-out-frames.*-1.*>= 0"),
    "fidelity-every-frame": (["fidelity", "{world}/scene", "--hold-out-frames", ",".join(map(str, range(40)))],
                             r"every frame is held out"),
    "demo-missing-scenario-file": (["demo", "--scenario", "{tmp}/nothere.yaml", "--out", "{tmp}/d"],
                                   r"nothere\.yaml: no such scenario file \(shipped scenarios: "),
    "refine-poses-missing": (["refine-poses", "{tmp}/nope", "--out", "{tmp}/o"], r"nope", 2),
    "refine-poses-window-zero": (["refine-poses", "{world}/scene", "--out", "{tmp}/o", "--window", "0"], r"window.*0"),
    "refine-poses-out-exists": (["refine-poses", "{world}/scene", "--out", "{world}/scene"], r"already exists"),
    "ingest-dgp-missing": (["ingest", "dgp", "{tmp}/nope.json", "--out", "{tmp}/o"], r"nope"),
    "ingest-dgp-garbled": (["ingest", "dgp", "{world}/afile", "--out", "{tmp}/o"], r"afile"),
}


def _fill(argv, world, tmp_path):
    return [a.format(world=world, tmp=tmp_path) for a in argv]


@pytest.mark.parametrize("case", sorted(SCENE_CASES))
def test_scene_commands_refuse_bad_input_in_one_line(case, cli, world, tmp_path):
    argv, expect, *status = SCENE_CASES[case]
    cli(_fill(argv, world, tmp_path), expect, *status)
    assert not [p for p in tmp_path.iterdir() if p.name != "cwd"], f"{case}: left {list(tmp_path.iterdir())}"


def _garble(start: int, junk: bytes):
    """Overwrite bytes from ``start`` with ``junk``, keeping the file's size (so only a parser can notice)."""
    return lambda b: b[:start] + junk + b[start + len(junk):]


CORRUPTIONS = {
    "npy-header-garbled": ("lidar_points.npy", _garble(12, b"{'descr': '<f4', 'fortran_order': Fa(")),
    "npy-header-unterminated": ("ego_poses.npy", _garble(10, b"{'descr': \"<f8")),
    "npy-truncated": ("lidar_points.npy", lambda b: b[: len(b) // 2]),
    "scene-json-garbled": ("scene.json", lambda b: b[: len(b) // 2]),
    "map-json-truncated": ("map.json", lambda b: b[: len(b) // 3]),
    "map-json-garbled": ("map.json", _garble(5, b"}}}]]]")),
    "map-json-wrong-types": ("map.json", lambda b: json.dumps({k: 7 for k in json.loads(b)}).encode().ljust(len(b))),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_corrupt_scene_cache_names_the_file(case, verify, cli, world, tmp_path):
    scene = _copy_scene(world, tmp_path)
    name, corrupt = CORRUPTIONS[case]
    if not (scene / name).exists():
        name = next(p.name for p in scene.iterdir() if p.suffix == Path(name).suffix)
    (scene / name).write_bytes(corrupt((scene / name).read_bytes()))
    cli(["info", scene, "--sheet", tmp_path / "s.png"] + ([] if verify else ["--no-verify"]),
        re.escape(name), scratch=scene)
    assert not (tmp_path / "s.png").exists()


# ------------------------------------------------------------------------------------------------ eval / export / demo
EVAL = ["eval", "--agent", "log_replay", "--out", "{tmp}/ev"]
EVAL_CASES = {
    "no-agent": (["eval", "--scenarios", "{world}/sc/ok.yaml", "--out", "{tmp}/ev"], r"--agent"),
    "both-agent-and-driver": (EVAL[:3] + ["--driver", "localhost:1", "--scenarios", "{world}/sc/ok.yaml"], r"--driver"),
    "unknown-agent": (["eval", "--agent", "nosuch", "--scenarios", "{world}/sc/ok.yaml", "--out", "{tmp}/ev"], r"nosuch"),
    "unimportable-agent": (["eval", "--agent", "no_pkg.mod:Cls", "--scenarios", "{world}/sc/ok.yaml"], r"no_pkg"),
    "unknown-shipped-name": (EVAL + ["--scenarios", "cut-in"], r"cut-in.*did you mean 'cut_in'"),
    "missing-scenario-file": (EVAL + ["--scenarios", "{tmp}/nope.yaml"], r"nope\.yaml"),
    "garbled-yaml": (EVAL + ["--scenarios", "{world}/sc/garbled.yaml"], r"garbled\.yaml.*YAML"),
    "typo-key": (EVAL + ["--scenarios", "{world}/sc/typo.yaml"], r"typo\.yaml.*duraton_s"),
    "missing-scene": (EVAL + ["--scenarios", "{world}/sc/no_scene.yaml"], r"no_scene\.yaml.*missing"),
    "negative-ego-speed": (EVAL + ["--scenarios", "{world}/sc/neg_speed.yaml"], r"neg_speed\.yaml.*speed.*-3"),
    "negative-insert-speed": (EVAL + ["--scenarios", "{world}/sc/insert_neg.yaml"], r"insert_neg\.yaml.*speed.*-5"),
    "start-past-end": (EVAL + ["--scenarios", "{world}/sc/late_start.yaml"], r"late_start\.yaml.*start_time_s.*500"),
    "unknown-lane": (EVAL + ["--scenarios", "{world}/sc/bad_lane.yaml"], r"bad_lane\.yaml.*no-such-lane"),
    "image-size-zero": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--image-size", "0x0"], r"image.size.*0"),
    "image-size-garbled": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--image-size", "big"], r"image-size.*big"),
    "unknown-camera": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--cameras", "CAM_TOP"], r"CAM_TOP"),
    "voxel-negative": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--voxel-size", "-1"], r"voxel.size.*-1"),
    "workers-zero": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--workers", "0"], r"workers.*0"),
    "workers-negative": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--workers", "-1"], r"workers.*-1"),
    "backend-unknown": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--backend", "slurm"], r"slurm", 2),
    "scenario-dir-empty": (EVAL + ["--scenarios", "{world}/scene"], r"no \*\.yaml scenario files"),
    "seeds-zero": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--seeds", "0"], r"seeds.*0"),
    "out-under-a-file": (["eval", "--agent", "log_replay", "--scenarios", "{world}/sc/ok.yaml", "--out",
                          "{world}/afile/ev"], r"afile"),
    "out-is-a-file": (["eval", "--agent", "log_replay", "--scenarios", "{world}/sc/ok.yaml", "--out", "{world}/afile"],
                      r"afile", 2),
    "refined-without-path": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--renderer", "refined"], r"refiner"),
    "refiner-path-missing": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--renderer", "refined",
                                     "--refiner-path", "{tmp}/noref"], r"noref"),
    "driver-not-host-port": (["eval", "--driver", "nohostport", "--scenarios", "{world}/sc/ok.yaml"], r"nohostport"),
    "driver-timeout-negative": (["eval", "--driver", "localhost:1", "--driver-timeout", "-1", "--scenarios",
                                 "{world}/sc/ok.yaml"], r"driver-timeout.*-1"),
    "carla-not-host-port": (EVAL + ["--scenarios", "{world}/sc/ok.yaml", "--carla", "nohost"], r"nohost"),
    "export-episodes-zero": (["export", "--scenarios", "{world}/sc/ok.yaml", "--out", "{tmp}/x", "--episodes", "0"],
                             r"episodes.*0"),
    "export-unknown-agent": (["export", "--scenarios", "{world}/sc/ok.yaml", "--out", "{tmp}/x", "--agent", "nosuch"],
                             r"nosuch"),
    "export-out-under-a-file": (["export", "--scenarios", "{world}/sc/ok.yaml", "--out", "{world}/afile/x"], r"afile"),
    "export-bad-scenario": (["export", "--scenarios", "{world}/sc/typo.yaml", "--out", "{tmp}/x"], r"duraton_s"),
    "export-image-size-zero": (["export", "--scenarios", "{world}/sc/ok.yaml", "--out", "{tmp}/x", "--image-size",
                                "0x0"], r"image.size"),
    "demo-unknown-agent": (["demo", "--agent", "nosuch", "--out", "{tmp}/d"], r"nosuch"),
    "demo-unknown-scenario": (["demo", "--scenario", "nosuch", "--out", "{tmp}/d"], r"nosuch"),
    "demo-out-under-a-file": (["demo", "--out", "{world}/afile/d"], r"afile"),
    "serve-unknown-agent": (["serve", "--agent", "nosuch"], r"nosuch"),
    "serve-port-out-of-range": (["serve", "--agent", "pure_pursuit", "--port", "70000"], r"port.*70000"),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_run_commands_refuse_bad_input_before_any_work(case, cli, world, tmp_path):
    argv, expect, *status = EVAL_CASES[case]
    cli(_fill(argv, world, tmp_path), expect, *status)
    assert not [p for p in tmp_path.iterdir() if p.name != "cwd"], f"{case}: left {list(tmp_path.iterdir())}"


# ------------------------------------------------------------------------------------------------ replay
def _copy_run(world, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(world / "run", dst)
    return dst


RUN_CORRUPTIONS = {
    "actions-truncated": ("actions.npy", lambda b: b[: len(b) - 7], r"actions\.npy"),
    "actions-garbled-header": ("actions.npy", lambda b: b[:12] + b"garbage" + b[19:], r"actions\.npy"),
    "record-garbled": ("record.json", lambda b: b[: len(b) // 2], r"record\.json.*JSON"),
    "record-other-format": ("record.json", lambda b: json.dumps({**json.loads(b), "version": 99}).encode(),
                            r"record\.json.*v99"),
    "record-missing": ("record.json", None, r"record\.json"),
    "actions-missing": ("actions.npy", None, r"actions\.npy"),
}


@pytest.mark.parametrize("case", sorted(RUN_CORRUPTIONS))
def test_replay_of_a_broken_run_names_the_file(case, cli, world, tmp_path):
    run = _copy_run(world, tmp_path)
    name, corrupt, expect = RUN_CORRUPTIONS[case]
    if corrupt is None:
        (run / name).unlink()
    else:
        (run / name).write_bytes(corrupt((run / name).read_bytes()))
    cli(["replay", run], expect, scratch=run)


REPLAY_CASES = {
    "offset-two-values": (["--camera-offset", "1,2"], r"camera-offset.*1,2"),
    "offset-not-numbers": (["--camera-offset", "a,b,c"], r"camera-offset.*a,b,c"),
    "image-size-zero": (["--image-size", "0x0"], r"image.size"),
    "unknown-camera": (["--cameras", "CAM_TOP"], r"CAM_TOP"),
    "voxel-negative": (["--voxel-size", "-2"], r"voxel.size.*-2"),
    "out-under-a-file": (["--out", "{world}/afile/r"], r"afile"),
    "not-a-run": (None, r"not a run directory"),
}


@pytest.mark.parametrize("case", sorted(REPLAY_CASES))
def test_replay_refuses_bad_settings_before_running(case, cli, world, tmp_path):
    extra, expect = REPLAY_CASES[case]
    run = _copy_run(world, tmp_path)
    argv = ["replay", str(world / "sc") if extra is None else run] + _fill(extra or [], world, tmp_path)
    cli(argv, expect, scratch=run)


# ------------------------------------------------------------------------------------------------ the API
API_CASES = {
    "image-size-string": ({"image_size": "56x100"}, r"image_size.*56x100"),
    "image-size-zero": ({"image_size": (0, 0)}, r"image_size"),
    "image-size-words": ({"image_size": ("a", "b")}, r"image_size"),
    "image-size-three": ({"image_size": (8, 8, 8)}, r"image_size"),
    "unknown-camera": ({"cameras": ["CAM_TOP"]}, r"cameras.*CAM_TOP"),
    "voxel-negative": ({"voxel_size": -1.0}, r"voxel_size.*-1"),
    "unknown-setting": ({"voxle_size": 0.2}, r"voxle_size"),
    "max-steps-zero": ({"max_steps": 0}, r"max_steps.*0"),
    "action-mode": ({"action_mode": "steer"}, r"action_mode.*steer"),
    "agents-mode": ({"world": {"agents": "bogus"}}, r"agents.*bogus"),
    "unknown-world-key": ({"world": {"agnets": "idm"}}, r"world\.agnets"),
    "refined-without-refiner": ({"renderer": "refined"}, r"refiner"),
    "renderer-name": ({"renderer": "nerf"}, r"renderer.*nerf"),
    "bev-size": ({"bev": {"size_px": 3}, "observations": ["bev"]}, r"bev\.size_px.*3"),
    "observation-key": ({"observations": ["lidar"]}, r"observations.*lidar"),
    "camera-offset-two": ({"camera_offset": (1.0, 2.0)}, r"camera_offset"),
    "camera-offset-words": ({"camera_offset": ("a", 0, 0)}, r"camera_offset"),
    "num-state-agents": ({"num_state_agents": -1}, r"num_state_agents.*-1"),
    "reward-negative": ({"reward": {"collision": -1.0}}, r"reward\.collision.*-1"),
    "num-route-points": ({"num_route_points": 0}, r"num_route_points.*0"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_gym_make_names_the_bad_setting(case, world):
    import gymnasium as gym

    import stag_sim.envs  # noqa: F401

    kwargs, expect = API_CASES[case]
    with pytest.raises(StagSimError) as e:
        gym.make("StagDrive-v0", scene=str(world / "scene"), **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and re.search(expect, msg), msg


@pytest.fixture(scope="module")
def env(world):
    import gymnasium as gym

    import stag_sim.envs  # noqa: F401

    e = gym.make("StagDrive-v0", scene=str(world / "scene"), **ENV)
    yield e
    e.close()


STEP_CASES = {
    "string": ("left", r"action.*'left'"),
    "nan": ([np.nan, 0.0], r"action.*nan"),
    "wrong-shape": ([0.0, 0.0, 0.0], r"action.*shape"),
    "none": (None, r"action.*None"),
    "nested": ([[0.0, 0.0]], r"action.*shape"),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_step_names_the_bad_action_and_keeps_the_state(case, env):
    env.reset(seed=0)
    before = env.unwrapped.state
    action, expect = STEP_CASES[case]
    with pytest.raises(StagSimError) as e:
        env.step(action)
    assert re.search(expect, str(e.value)) and "\n" not in str(e.value), str(e.value)
    assert env.unwrapped.state is before  # nothing moved
    env.step(np.zeros(2, np.float32))  # and the episode goes on


RESET_CASES = {
    "ego-offset-two": ({"ego_offset": (1.0, 2.0)}, r"ego_offset"),
    "ego-offset-words": ({"ego_offset": ("a", 0, 0)}, r"ego_offset"),
    "unknown-option": ({"start_fram": 3}, r"start_fram"),
    "speed-negative": ({"speed": -4.0}, r"speed.*-4"),
}


@pytest.mark.parametrize("case", sorted(RESET_CASES))
def test_reset_names_the_bad_option(case, env):
    options, expect = RESET_CASES[case]
    with pytest.raises(StagSimError) as e:
        env.reset(seed=0, options=options)
    assert re.search(expect, str(e.value)) and "\n" not in str(e.value), str(e.value)


def test_the_battery_is_at_least_sixty_cases():
    n = (len(SCENE_CASES) + 2 * len(CORRUPTIONS) + len(EVAL_CASES) + len(RUN_CORRUPTIONS) + len(REPLAY_CASES)
         + len(API_CASES) + len(STEP_CASES) + len(RESET_CASES))
    assert n >= 60, n


def test_unexpected_errors_are_one_line_with_the_traceback_kept(cli, world, tmp_path, monkeypatch):
    """A bug (not a user error) still ends in one line, naming where the traceback was saved."""
    import stag_sim.summary

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(stag_sim.summary, "scene_summary", boom)
    monkeypatch.setenv("STAG_SIM_CACHE", str(tmp_path / "cache"))
    line = cli(["info", world / "scene", "--sheet", tmp_path / "s.png"], r"ZeroDivisionError.*traceback")
    logs = list((tmp_path / "cache" / "crashes").glob("*.txt"))
    assert len(logs) == 1 and "boom" in logs[0].read_text() and str(logs[0]) in line
    shutil.rmtree(tmp_path / "cache")
