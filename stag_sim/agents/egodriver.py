"""An egodriver policy server as a StagDrive agent: StagDrive is the runtime of AlpaSim's egodriver contract.

``make_agent("egodriver://HOST:PORT")`` (``stag-sim eval --driver HOST:PORT``) drives any planner served over
``egodriver.EgodriverService`` -- ``carla-driver-interface serve --policy route_follower``, an AlpaSim driver
container, ``stag-sim serve`` -- with StagDrive's rendered cameras:

- on ``reset`` it opens a session declaring the observed cameras (ids, pinhole intrinsics, rig-to-camera poses)
  and sends the logged ego poses of the ``history_s`` before the episode's start;
- each ``act`` sends the new ego pose (with speed, yaw rate and acceleration), the route ahead (from the ego's projection on it) and the camera
  frames as JPEG, asks ``drive``, and returns the plan resampled as the env's ``trajectory`` action (its waypoints
  in the ego frame, ``waypoint_dt`` apart), which the env's trajectory controller tracks.

A policy that errors, times out (``timeout`` [s] per call), ends the session, or returns an empty or non-finite
plan raises :class:`~stag_sim.errors.AgentError`, which the evaluation records as that scenario's failure.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from stag_sim.egodriver import DEFAULT_TIMEOUT_S, EgodriverClient, EgoSample, decode_plan, plan_waypoints
from stag_sim.errors import AgentError

#: Agent specs of this form name a policy server: ``egodriver://HOST:PORT[?timeout=SECONDS]``.
SCHEME = "egodriver://"


def is_driver_spec(spec: str) -> bool:
    return str(spec).startswith(SCHEME)


def driver_spec(target: str, timeout_s: float | None = None) -> str:
    """The agent spec for the policy server at ``target`` (``HOST:PORT``) with a per-call ``timeout_s``."""
    return SCHEME + target + (f"?timeout={float(timeout_s):g}" if timeout_s is not None else "")


def parse_driver_spec(spec: str) -> tuple[str, float]:
    """``egodriver://HOST:PORT[?timeout=S]`` -> (``HOST:PORT``, timeout [s])."""
    parts = urlsplit(spec)
    query = parse_qs(parts.query)
    if not parts.netloc or set(query) - {"timeout"}:
        raise AgentError(f"agent {spec!r}: expected egodriver://HOST:PORT[?timeout=SECONDS]")
    try:
        timeout = float(query.get("timeout", [DEFAULT_TIMEOUT_S])[0])
    except ValueError:
        raise AgentError(f"agent {spec!r}: timeout must be a number of seconds") from None
    return parts.netloc, timeout


def check_driver(spec: str) -> str:
    """Connect once (within the spec's timeout) and return the server's version id; one AgentError otherwise."""
    target, timeout = parse_driver_spec(spec)
    client = EgodriverClient(target, timeout)
    try:
        return client.connect()
    finally:
        client.close()


class EgodriverAgent:
    """Drive the egodriver policy server at ``target`` (``HOST:PORT``, or an open ``grpc.Channel`` such as
    ``carla_driver_interface.inprocess.in_process_channel(policy)`` for a policy in this process) from a
    StagDrive-v0 env in ``trajectory`` action mode (``env`` may be wrapped).

    Args:
        timeout_s: deadline of every call [s].
        history_s: logged ego history sent at the start of a session [s].
        route_points, route_spacing: the route sent each step: this many points, every ``route_spacing`` [m].
    """

    def __init__(self, env, target, timeout_s: float = DEFAULT_TIMEOUT_S, history_s: float = 2.0,
                 route_points: int = 50, route_spacing: float = 2.0) -> None:
        self.env = env.unwrapped
        if self.env.config.action_mode != "trajectory":
            raise AgentError(f"agent egodriver: needs action_mode='trajectory' (the plan is tracked by "
                             f"the env's trajectory controller), got {self.env.config.action_mode!r}")
        self.client = EgodriverClient(target, timeout_s)
        self.history_s = float(history_s)
        self.route_count, self.route_spacing = int(route_points), float(route_spacing)
        c = self.env.config
        self.query_s = c.waypoint_dt * np.arange(1, c.num_waypoints + 1)
        self._pending: list[EgoSample] = []

    @property
    def where(self) -> str:
        return f"egodriver {self.client.target}"

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Open a new session (closing the previous one) and queue the logged ego history."""
        env = self.env
        self.client.close_session()
        cams = [(env.rig[i].name, env.rig[i].intrinsics, env.rig[i].T_ego_from_camera) for i in env.cam_index]
        scene_id = env.scenario.name if env.scenario is not None else env.log.name
        seed = env.scenario.seed if env.scenario is not None else 0
        self.client.start_session(cams, scene_id, seed)
        self._pending = self._history(env.state)

    def _history(self, state) -> list[EgoSample]:
        """The logged ego poses in the ``history_s`` before ``state`` (planar, as the simulated ego)."""
        from stag_sim.dynamics import EgoState

        dt = self.env.world.config.dt
        times = state.time_s - dt * np.arange(int(round(self.history_s / dt)), 0, -1)
        times = times[times >= 0.0]
        poses = [EgoState.from_pose(self.env.world.logged_ego_pose(t)).pose() for t in times]
        out = []
        for k, (t, T) in enumerate(zip(times, poses)):
            prev = poses[k - 1] if k else None
            v = (T[:3, :3].T @ (T[:3, 3] - prev[:3, 3]) / dt) if prev is not None else np.zeros(3)
            out.append(EgoSample(int(round(t * 1e6)), T, tuple(float(x) for x in v)))
        return out

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        env = self.env
        state = env.state
        e = state.ego
        now_us = int(round(state.time_s * 1e6))
        T = e.pose()
        current = EgoSample(now_us, T, (e.speed, 0.0, 0.0), e.yaw_rate, (e.accel, 0.0, 0.0))
        egomotion, self._pending = self._pending + [current], []
        route = env.route_points(state, self.route_count, self.route_spacing, first=0)  # from the ego on
        route = np.concatenate([route, np.zeros((len(route), 1))], axis=1)
        images = {name: obs[name] for name in env.camera_names}
        resp = self.client.step(now_us, now_us + int(round(env.world.config.dt * 1e6)), egomotion, route, images)
        if resp.terminate_session:
            raise AgentError(f"{self.where}: the policy ended the session (terminate_session) at t={state.time_s:.2f} s")
        times, xyz = decode_plan(resp.trajectory)
        waypoints = plan_waypoints(times, xyz, T, now_us, self.query_s, self.where)
        return waypoints.astype(np.float32)

    def close(self) -> None:
        """Close the session and the channel."""
        self.client.close()
