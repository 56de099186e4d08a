"""AlpaSim's egodriver gRPC contract, both ends, over real gRPC on local ports.

StagDrive as the runtime (``egodriver://HOST:PORT`` agents, ``stag-sim eval --driver``) drives carla-driver-interface's
reference ``route_follower`` served by its own CLI, and policies that raise, time out, refuse the session or return an
empty or non-finite plan; StagDrive as the policy (``stag-sim serve``) is driven by the package's ``FakeLoop`` and by
StagDrive's own client.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

cdi = pytest.importorskip("carla_driver_interface", reason="needs the driver extra: pip install 'stag-sim[driver]'")

from carla_driver_interface.driver import DriveResult  # noqa: E402
from carla_driver_interface.geometry import Pose, Trajectory, optical_to_body  # noqa: E402
from carla_driver_interface.policies import RouteFollowerPolicy  # noqa: E402
from carla_driver_interface.server import serving  # noqa: E402
from carla_driver_interface.testing import FakeCamera, FakeLoop  # noqa: E402

from stag_sim.agents import check_agent, make_agent  # noqa: E402
from stag_sim.agents.egodriver import driver_spec, parse_driver_spec  # noqa: E402
from stag_sim.app import run_episode  # noqa: E402
from stag_sim.app.episode import make_env  # noqa: E402
from stag_sim.app.serve import check_served, make_policy  # noqa: E402
from stag_sim.cache import write_scene_cache  # noqa: E402
from stag_sim.cli import main  # noqa: E402
from stag_sim.egodriver import plan_waypoints  # noqa: E402
from stag_sim.errors import AgentError  # noqa: E402
from stag_sim.testing import tiny_scene_log  # noqa: E402

ENV = {"image_size": [36, 64], "cameras": ["CAM_FRONT", "CAM_FRONT_LEFT"], "voxel_size": 0.5}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    """Five scenarios on a tiny straight-road log (ego at 5 m/s), named so a test policy can fail some of them."""
    root = tmp_path_factory.mktemp("egodriver")
    write_scene_cache(tiny_scene_log(num_frames=50, width=64, height=36), root / "scene")
    env = json.dumps(ENV)
    paths = {}
    for name in ("follow", "raise", "timeout", "empty", "nan", "refuse"):
        p = root / f"{name}.yaml"
        p.write_text(f"name: {name}\nscene: {{path: scene}}\nstart_time_s: 1.0\nduration_s: 3.0\nagents: log_replay\nenv: {env}\n")
        paths[name] = p
    return paths


class Recording(RouteFollowerPolicy):
    """The reference route follower, keeping what the runtime sent."""

    name = "recording"

    def __init__(self):
        super().__init__(cruise_speed_mps=5.0)
        self.sessions, self.first = [], {}

    def on_session_start(self, session):
        self.sessions.append(session)

    def drive(self, ctx):
        s = ctx.session
        if s.drive_count == 0:
            self.first[s.uuid] = {"poses": len(s.ego_trajectory), "route": s.route_waypoints_in_rig.copy(),
                                  "frames": {k: v[-1].as_array() for k, v in s.frame_history.items() if v}}
        return super().drive(ctx)


class Misbehaving(RouteFollowerPolicy):
    """Follows the route, except in the scenario named after a way to fail."""

    name = "misbehaving"

    def on_session_start(self, session):
        if session.scene_id == "refuse":
            raise ValueError("this policy needs a CAM_REAR")

    def drive(self, ctx):
        kind = ctx.session.scene_id
        if kind == "raise":
            raise RuntimeError("planner exploded")
        if kind == "timeout":
            time.sleep(1.5)
        if kind == "empty":
            return DriveResult(trajectory_in_rig=Trajectory.empty())
        if kind == "nan":
            plan = Trajectory.empty()
            for k in range(1, 5):
                plan.append(ctx.time_now_us + k * 100_000, Pose(np.array([np.nan, 0.0, 0.0]), np.array([0, 0, 0, 1.0])))
            return DriveResult(trajectory_in_rig=plan)
        return super().drive(ctx)


@pytest.fixture
def served():
    """Serve a policy in this process over real gRPC on a free local port: ``with served(policy) as target``."""
    def start(policy):
        return serving(policy, port=0, host="127.0.0.1")
    return start


def test_plan_waypoints_resamples_and_rejects_bad_plans():
    T = np.eye(4)
    T[:2, 3] = (10.0, 5.0)  # ego at (10, 5) heading +x
    t = np.array([1_000_000, 1_500_000, 2_000_000])
    xyz = np.array([[10.0, 5.0, 0.0], [12.5, 5.0, 0.0], [15.0, 5.0, 0.0]])
    wp = plan_waypoints(t, xyz, T, 1_000_000, np.array([0.25, 0.5, 1.0, 2.0]), "test")
    np.testing.assert_allclose(wp, [[1.25, 0], [2.5, 0], [5.0, 0], [5.0, 0]])  # linear in time, held past the end
    with pytest.raises(AgentError, match="empty plan"):
        plan_waypoints(t[:1], xyz[:1], T, 1_000_000, np.array([0.5]), "test")
    with pytest.raises(AgentError, match="non-finite plan"):
        plan_waypoints(t, np.where(np.arange(3)[:, None] == 2, np.nan, xyz), T, 1_000_000, np.array([0.5]), "test")


def test_driver_specs_parse_and_an_unreachable_server_fails_once():
    assert parse_driver_spec(driver_spec("localhost:50051", 2.5)) == ("localhost:50051", 2.5)
    with pytest.raises(AgentError, match="expected egodriver://HOST:PORT"):
        parse_driver_spec("egodriver://host:1?retries=3")
    with pytest.raises(AgentError, match="no policy server answered within 0.5 s"):
        check_agent(driver_spec(f"127.0.0.1:{free_port()}", 0.5))


def inprocess_route_follower() -> str:
    """A registered agent: the reference route follower (5 m/s) in this process, through the contract's in-process
    channel (same stubs, servicer and bytes, no socket)."""
    from carla_driver_interface.inprocess import in_process_channel

    from stag_sim.agents import agent_names, register_agent
    from stag_sim.agents.egodriver import EgodriverAgent

    name = "test_route_follower_inprocess"
    if name not in agent_names():
        register_agent(name, lambda env, seed: EgodriverAgent(env, in_process_channel(RouteFollowerPolicy(5.0))))
    return name


def test_route_follower_served_by_its_cli_drives_a_scenario(scenarios):
    """The reference policy in its own process (``carla-driver-interface serve``) drives StagDrive's env, and
    scores as StagDrive's own route follower does."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "carla-driver-interface"), "serve", "--policy", "route_follower",
                               "--cruise-speed", "5", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        check_agent(driver_spec(f"127.0.0.1:{port}", 20.0))  # waits for the server to come up
        row = run_episode(scenarios["follow"], driver_spec(f"127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(10)
    ref = run_episode(scenarios["follow"], "pure_pursuit", env_overrides={})
    local = run_episode(scenarios["follow"], inprocess_route_follower(), env_overrides={"action_mode": "trajectory"})
    assert row["status"] == "ok", row["reason"]
    # the wire changes nothing: the same policy in this process drives the same episode, observation for observation
    assert local["obs_hash"] == row["obs_hash"] and local["pdms"] == row["pdms"]
    assert row["steps"] >= 20 and not row["collision"] and not row["offroad"]
    assert row["route_completion"] > 0.5
    assert abs(row["pdms"] - ref["pdms"]) <= 0.1, (row["pdms"], ref["pdms"])


def test_runtime_declares_the_rig_and_sends_frames_history_and_route(scenarios, served):
    policy = Recording()
    with served(policy) as port:
        env = make_env(scenarios["follow"], {"action_mode": "trajectory"})
        agent = make_agent(driver_spec(f"127.0.0.1:{port}"), env)
        obs, info = env.reset(seed=0)
        obs0 = obs
        agent.reset(obs, info)
        for _ in range(3):
            obs, *_ = env.step(agent.act(obs))
        agent.close()
    base = env.unwrapped
    (session,) = policy.sessions
    assert session.scene_id == "follow" and sorted(session.cameras) == sorted(base.camera_names)
    for i in base.cam_index:
        cam = base.rig[i]
        declared = session.cameras[cam.name]
        pin = declared.intrinsics.opencv_pinhole_param
        assert (declared.intrinsics.resolution_w, declared.intrinsics.resolution_h) == (64, 36)
        assert pin.focal_length_x == pytest.approx(cam.intrinsics.fx) and pin.principal_point_y == pytest.approx(cam.intrinsics.cy)
        optical = Pose.from_proto(declared.rig_to_camera).as_matrix()  # revision 2: the OpenCV frame in the rig
        np.testing.assert_allclose(optical, cam.T_ego_from_camera, atol=1e-9)
        body = optical_to_body(Pose.from_proto(declared.rig_to_camera))  # body x = the optical axis, forward-ish
        assert body.rotation_matrix[:, 0] @ cam.T_ego_from_camera[:3, 2] == pytest.approx(1.0)
    first = policy.first[session.uuid]
    assert first["poses"] == 11  # the logged second before the start (10 Hz), then the current pose
    np.testing.assert_allclose(first["route"][0, :2], 0.0, atol=0.3)  # the route starts at the ego
    assert np.all(np.diff(first["route"][:, 0]) > 0)  # and runs ahead along +x
    assert sorted(first["frames"]) == sorted(base.camera_names)
    for name, img in first["frames"].items():  # JPEG of what the env rendered at reset
        assert img.shape == (36, 64, 3)
        err = np.abs(img.astype(float) - obs0[name].astype(float)).mean()
        assert err < 12.0, (name, err)


def test_failing_policies_fail_their_scenario_and_the_others_go_on(scenarios, served, tmp_path):
    names = ["raise", "follow", "timeout", "empty", "nan", "refuse"]
    with served(Misbehaving(cruise_speed_mps=5.0)) as port:
        res = CliRunner().invoke(main, ["eval", "--driver", f"127.0.0.1:{port}", "--driver-timeout", "0.5",
                                        "--scenarios", *[str(scenarios[n]) for n in names], "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    rows = {r["scenario"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert rows["follow"]["status"] == "ok" and rows["follow"]["steps"] >= 20
    expected = {"raise": "drive failed: UNKNOWN: Exception calling application: planner exploded",
                "timeout": "drive timed out after 0.5 s", "empty": "empty plan", "nan": "non-finite plan",
                "refuse": "start_session failed: FAILED_PRECONDITION: misbehaving: this policy needs a CAM_REAR"}
    for name, reason in expected.items():
        assert rows[name]["status"] == "failed" and reason in rows[name]["reason"], rows[name]
        assert f"FAILED {name}: " in res.output
    assert "error: 5 of 6 scenario(s) could not run" in res.output


def test_eval_needs_exactly_one_of_agent_and_driver(scenarios, tmp_path):
    for args in ([], ["--agent", "pure_pursuit", "--driver", "127.0.0.1:1"]):
        res = CliRunner().invoke(main, ["eval", *args, "--scenarios", str(scenarios["follow"]), "--out", str(tmp_path)])
        assert res.exit_code == 1 and "exactly one of --agent NAME and --driver HOST:PORT" in res.output


def test_served_agent_drives_the_fake_loop():
    """carla-driver-interface's CARLA-free runtime drives StagDrive's pure_pursuit: it returns to the lane centre
    from 1 m off and speeds up towards its 8 m/s."""
    with serving(make_policy("pure_pursuit"), port=0, host="127.0.0.1") as port:
        with FakeLoop(f"127.0.0.1:{port}", cameras=(FakeCamera(width=160, height=90),),
                      initial_lateral_offset_m=1.0, initial_speed_mps=5.0) as loop:
            result = loop.run(60)
    assert result.steps == 60 and not result.terminated_by_policy
    assert abs(result.lateral_offsets_m[-1]) < 0.15 < abs(result.lateral_offsets_m[0])
    assert 6.5 < result.speeds_mps[-1] <= 8.2
    assert result.debug[-1].policy_name == "pure_pursuit"


def test_served_trajectory_agent_and_agents_that_cannot_be_served():
    with serving(make_policy("constant_velocity", "trajectory"), port=0, host="127.0.0.1") as port:
        with FakeLoop(f"127.0.0.1:{port}", initial_speed_mps=4.0) as loop:
            result = loop.run(20)
    np.testing.assert_allclose(result.speeds_mps[-5:], 4.0, atol=0.2)  # holds its speed along the lane
    np.testing.assert_allclose(result.lateral_offsets_m, 0.0, atol=0.05)
    with pytest.raises(AgentError, match="log_replay' cannot be served: .*expert_action"):
        check_served("log_replay")


def test_stag_sim_serve_is_driven_by_stagdrive(scenarios, tmp_path):
    """``stag-sim serve`` in its own process, driven by StagDrive's client; SIGTERM stops it cleanly; the run
    replays bit-identically without the server (its actions are recorded)."""
    from stag_sim.app import replay_run

    proc = subprocess.Popen([str(BIN / "stag-sim"), "serve", "--agent", "pure_pursuit", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not lines and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert lines, proc.stderr.read() if proc.poll() is not None else "stag-sim serve printed nothing"
        target = lines[0].split(" on ")[1].split()[0]
        row = run_episode(scenarios["follow"], driver_spec(target), tmp_path / "run")
    finally:
        proc.terminate()
        rc = proc.wait(20)
    assert rc == 0
    assert row["status"] == "ok" and row["agent"] == driver_spec(target) and row["route_completion"] > 0.5
    assert replay_run(tmp_path / "run", tmp_path / "replay")["identical"]


def test_a_policy_in_process_through_the_same_contract(scenarios):
    """An open channel instead of HOST:PORT: carla-driver-interface's in-process channel runs the policy through the
    same stubs and servicer without a socket (the benchmark's in-process reference); the agent leaves it open."""
    from carla_driver_interface.inprocess import in_process_channel

    from stag_sim.agents.egodriver import EgodriverAgent

    policy = Recording()
    channel = in_process_channel(policy)
    env = make_env(scenarios["follow"], {"action_mode": "trajectory"})
    agent = EgodriverAgent(env, channel)
    obs, info = env.reset(seed=0)
    agent.reset(obs, info)
    for _ in range(5):
        obs, *_ = env.step(agent.act(obs))
    agent.close()
    assert len(policy.sessions) == 1 and policy.sessions[0].drive_count == 5
    assert env.unwrapped.state.ego.speed > 4.0  # tracking the route follower's 5 m/s plan
    second = EgodriverAgent(env, channel)  # the channel is still open
    second.reset(*env.reset(seed=0))
    second.close()
    assert len(policy.sessions) == 2


def test_without_the_driver_extra_commands_say_which_extra(monkeypatch, scenarios, tmp_path):
    import stag_sim.egodriver as wire

    monkeypatch.setitem(sys.modules, "carla_driver_interface", None)  # as if not installed
    monkeypatch.setattr(wire, "_CDI", None)
    for args in (["serve", "--agent", "pure_pursuit", "--port", "0"],
                 ["eval", "--driver", "127.0.0.1:1", "--scenarios", str(scenarios["follow"]), "--out", str(tmp_path)]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1
        assert "pip install 'stag-sim[driver]'" in res.output and len(res.output.strip().splitlines()) == 1, res.output
