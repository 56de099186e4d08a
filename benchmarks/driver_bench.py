"""A planner over AlpaSim's egodriver gRPC contract vs the same planner in process.

Starts ``carla-driver-interface serve --policy route_follower`` on a free local port (its own process) and measures:

  * closed loop, on the shipped scenarios (default: lane_follow): ``route_follower`` served over gRPC
    (``stag-sim eval --driver``), the same policy run in this process through the same contract
    (``carla_driver_interface.inprocess.in_process_channel``: the same stubs, servicer and bytes, no socket), and
    StagDrive's built-in ``pure_pursuit``: PDMS, route completion, eval wall time.
    Targets: PDMS over gRPC within 0.05 of pure_pursuit on lane_follow; eval wall time with --driver <= 1.3x the
    in-process agent (printed against both in-process agents);
  * gRPC overhead per step with six 224x400 town frames (JPEG q90): the client's whole step (encoding, egomotion,
    route, six frames in flight together, drive, the plan's checks) over gRPC minus the same step in process;
    target <= 5 ms. Printed beside it: the step's time beyond the policy's own compute (``inference_seconds``) and
    the JPEG encoding alone.

    python benchmarks/driver_bench.py [--scenarios lane_follow cut_in ...] [--steps 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inprocess_channel():
    from carla_driver_interface.inprocess import in_process_channel
    from carla_driver_interface.policies import load_policy

    return in_process_channel(load_policy("route_follower"))


def overhead(target: str, steps: int) -> dict:
    """Per-step client time over gRPC and in process, six 224x400 frames of the town."""
    from stag_sim.app.episode import make_env
    from stag_sim.egodriver import EgodriverClient, EgoSample, encode_jpeg

    env = make_env("lane_follow", {"action_mode": "trajectory"})
    obs, _ = env.reset(seed=0)
    base = env.unwrapped
    frames = {c: obs[c] for c in base.camera_names}
    assert len(frames) == 6 and next(iter(frames.values())).shape == (224, 400, 3)
    cams = [(base.rig[i].name, base.rig[i].intrinsics, base.rig[i].T_ego_from_camera) for i in base.cam_index]
    route = np.column_stack([np.arange(0, 100, 2.0), np.zeros(50), np.zeros(50)])
    out = {"steps": steps, "frames": "6 x 224x400 JPEG q90",
           "jpeg_kib_per_step": round(sum(len(encode_jpeg(f)) for f in frames.values()) / 1024, 1)}
    enc = []
    for _ in range(50):
        t0 = time.perf_counter()
        for f in frames.values():
            encode_jpeg(f)
        enc.append(time.perf_counter() - t0)
    out["jpeg_encode_ms_median"] = round(1e3 * statistics.median(enc), 2)
    for label, where in (("grpc", target), ("inprocess", inprocess_channel())):
        client = EgodriverClient(where, timeout_s=10.0)
        client.start_session(cams, "bench")
        total, infer = [], []
        for k in range(steps + 10):
            T = np.eye(4)
            T[0, 3] = 0.8 * k
            t_us = k * 100_000
            t0 = time.perf_counter()
            client.step(t_us, t_us + 100_000, [EgoSample(t_us, T, (8.0, 0.0, 0.0))], route, frames)
            if k >= 10:  # warm-up
                total.append(time.perf_counter() - t0)
                infer.append(client.last_debug.inference_seconds)
        client.close()
        out[f"{label}_step_ms_median"] = round(1e3 * statistics.median(total), 2)
        out[f"{label}_step_ms_p95"] = round(1e3 * float(np.percentile(total, 95)), 2)
        out[f"{label}_beyond_policy_ms_median"] = round(1e3 * float(np.median(np.subtract(total, infer))), 2)
    out["grpc_overhead_ms"] = round(out["grpc_step_ms_median"] - out["inprocess_step_ms_median"], 2)
    env.close()
    return out


def closed_loop(target: str, scenarios: list[str]) -> list[dict]:
    from stag_sim.agents import agent_names, register_agent
    from stag_sim.agents.egodriver import EgodriverAgent, driver_spec
    from stag_sim.app.evaluate import evaluate
    from stag_sim.scenario import find_scenarios

    if "route_follower_inprocess" not in agent_names():
        register_agent("route_follower_inprocess", lambda env, seed: EgodriverAgent(env, inprocess_channel()))
    paths = find_scenarios(scenarios)
    runs = (("pure_pursuit", "pure_pursuit", None),
            ("route_follower_inprocess", "route_follower_inprocess", {"action_mode": "trajectory"}),
            ("route_follower_grpc", driver_spec(target), None))
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        evaluate(paths[:1], "pure_pursuit", Path(tmp) / "warm", progress=False)  # town, 4D scene, numba: warm
        for label, spec, overrides in runs:
            t0 = time.perf_counter()
            rows = evaluate(paths, spec, Path(tmp) / label, progress=False, env_overrides=overrides)
            res[label] = (rows, time.perf_counter() - t0)
    out = []
    for i in range(len(paths)):
        r = {"scenario": res["pure_pursuit"][0][i]["scenario"]}
        for label in res:
            row = res[label][0][i]
            r[label] = {"status": row["status"], "pdms": round(row["pdms"], 3), "rc": row["route_completion"],
                        "steps": row["steps"], "wall_s": row["wall_s"]}
        r["pdms_grpc_minus_pure_pursuit"] = round(r["route_follower_grpc"]["pdms"] - r["pure_pursuit"]["pdms"], 3)
        out.append(r)
    walls = {label: round(t, 2) for label, (_, t) in res.items()}
    per_step = {label: t / max(1, sum(r["steps"] for r in rows)) for label, (rows, t) in res.items()}
    grpc = "route_follower_grpc"
    out.append({"eval_wall_s": walls, "eval_ms_per_step": {k: round(1e3 * v, 1) for k, v in per_step.items()},
                "ratio_grpc_vs_route_follower_inprocess": round(walls[grpc] / walls["route_follower_inprocess"], 3),
                "ratio_grpc_vs_pure_pursuit": round(walls[grpc] / walls["pure_pursuit"], 3),
                "ratio_per_step_grpc_vs_pure_pursuit": round(per_step[grpc] / per_step["pure_pursuit"], 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=["lane_follow"])
    ap.add_argument("--steps", type=int, default=300, help="steps of the overhead measurement")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    port = free_port()
    exe = Path(sys.executable).parent / "carla-driver-interface"
    server = subprocess.Popen([str(exe), "serve", "--policy", "route_follower", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    try:
        from stag_sim.agents.egodriver import check_driver, driver_spec

        print("server:", check_driver(driver_spec(target, 30.0)), "on", target)
        rows = closed_loop(target, args.scenarios)
        for r in rows:
            print(json.dumps(r))
        ovh = overhead(target, args.steps)
        print(json.dumps(ovh))
    finally:
        server.terminate()
        server.wait(10)
    if args.json:
        args.json.write_text(json.dumps({"closed_loop": rows, "overhead": ovh}, indent=1))


if __name__ == "__main__":
    main()
