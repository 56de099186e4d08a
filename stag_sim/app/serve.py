"""``stag-sim serve``: any StagDrive agent as a policy server of AlpaSim's egodriver gRPC contract.

The servicer is carla-driver-interface's (:mod:`stag_sim.egodriver`), so the wire is AlpaSim's unchanged and any
runtime drives the agent: an AlpaSim runtime, autoware_carla_scenario against CARLA, the package's ``FakeLoop``, or
StagDrive itself (``stag-sim eval --driver HOST:PORT``).

Per session the agent is built for the declared cameras (:class:`ServedEnv` gives it the observation and action
spaces and settings a StagDrive-v0 env would, and nothing of a simulator). Each ``drive`` assembles its StagDrive
observation from what the runtime sent -- the latest frame of every camera (decoded to RGB at its declared size),
``ego`` = (speed, acceleration, yaw rate, steering inferred from the yaw rate) and ``route`` resampled every
``route_spacing`` from the ego's projection on the submitted route -- and answers with a plan in the rig frame:

- ``control`` agents: their (acceleration, steering) held over ``horizon_s``, rolled out by the kinematic bicycle;
- ``trajectory`` agents: their waypoints, ``waypoint_dt`` apart, headed along the path.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from stag_sim.errors import AgentError

#: Plan horizon [s] and spacing [s] of a control agent's rolled-out plan.
HORIZON_S = 4.0
PLAN_DT = 0.1


class ServedEnv:
    """The env a served agent is built for: spaces and settings, no simulator (``env.unwrapped`` is itself).

    Args:
        cameras: {camera id: (height, width)} of the session's declared cameras.
        config: the :class:`~stag_sim.env_config.EnvConfig` whose action mode, route and waypoint settings apply.
    """

    def __init__(self, cameras: dict[str, tuple[int, int]], config) -> None:
        from types import SimpleNamespace

        from gymnasium import spaces

        from stag_sim.envs.stag_drive import EGO_STATE_BOUND, EGO_STATE_FIELDS, ROUTE_BOUND

        self.config = config
        self.camera_names = tuple(cameras)
        self.world = SimpleNamespace(config=config.world)
        obs = {name: spaces.Box(0, 255, (h, w, 3), np.uint8) for name, (h, w) in cameras.items()}
        obs["ego"] = spaces.Box(-EGO_STATE_BOUND, EGO_STATE_BOUND, (len(EGO_STATE_FIELDS),), np.float32)
        obs["route"] = spaces.Box(-ROUTE_BOUND, ROUTE_BOUND, (2 * config.num_route_points,), np.float32)
        self.observation_space = spaces.Dict(obs)
        if config.action_mode == "control":
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            reach = config.world.vehicle.max_speed * config.waypoint_dt * config.num_waypoints
            self.action_space = spaces.Box(-reach, reach, (config.num_waypoints, 2), np.float32)

    @property
    def unwrapped(self) -> "ServedEnv":
        return self

    def __getattr__(self, name: str):  # an AttributeError, so hasattr / copy / pickle behave
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"a served agent sees only its observation (cameras, ego, route) and the env's spaces and "
                         f"settings; env.{name} is a simulator's, which the egodriver contract does not carry")


def observation(session, env: ServedEnv) -> dict[str, np.ndarray]:
    """The StagDrive observation of a carla-driver-interface ``SessionState``."""
    import cv2

    from stag_sim.traffic import PolylinePath

    obs: dict[str, np.ndarray] = {}
    for name in env.camera_names:
        h, w = env.observation_space[name].shape[:2]
        frame = session.latest_frame(name)
        img = None
        if frame is not None:
            bgr = cv2.imdecode(np.frombuffer(frame.image_bytes, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AgentError(f"camera {name!r}: the frame at t={frame.timestamp_us} us is not a decodable image")
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        obs[name] = img if img is not None else np.zeros((h, w, 3), np.uint8)
    state = session.latest_dynamic_state()
    speed = session.speed_mps()
    accel = float(state.linear_acceleration.x) if state is not None else 0.0
    yaw_rate = float(state.angular_velocity.z) if state is not None else 0.0
    vehicle = env.config.world.vehicle
    steer = float(np.arctan(vehicle.wheelbase * yaw_rate / speed)) if speed > 0.5 else 0.0
    obs["ego"] = np.array([speed, accel, yaw_rate, steer], np.float32)
    c = env.config
    route = np.asarray(session.route_waypoints_in_rig, np.float64).reshape(-1, 3)[:, :2]
    keep = np.concatenate([[True], np.linalg.norm(np.diff(route, axis=0), axis=1) > 1e-6]) if len(route) else []
    route = route[keep]
    if len(route) >= 2:
        path = PolylinePath(route)
        s0, _ = path.project(np.zeros((1, 2)))
        pts, _ = path.interpolate(s0[0] + c.route_spacing * np.arange(1, c.num_route_points + 1))
    else:  # no route: straight ahead
        pts = np.stack([c.route_spacing * np.arange(1, c.num_route_points + 1), np.zeros(c.num_route_points)], 1)
    obs["route"] = pts.reshape(-1).astype(np.float32)
    return obs


def plan_in_rig(action: np.ndarray, env: ServedEnv, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """An agent's action as a plan in the rig frame: (times after now [s] (K,), poses (K, 3) x, y, yaw)."""
    from stag_sim.control import control_inputs
    from stag_sim.dynamics import EgoState, bicycle_step

    a = np.asarray(action, np.float64)
    if a.shape != env.action_space.shape or not np.all(np.isfinite(a)):
        raise AgentError(f"the agent returned {a.tolist()}, expected finite numbers of shape {env.action_space.shape}")
    a = np.clip(a, env.action_space.low, env.action_space.high)
    c, vehicle = env.config, env.config.world.vehicle
    if c.action_mode == "control":
        accel, steer = control_inputs(a[0], a[1], vehicle)
        s, out = EgoState(0.0, 0.0, 0.0, float(speed)), []
        for _ in range(int(round(HORIZON_S / PLAN_DT))):
            s = bicycle_step(s, accel, steer, PLAN_DT, vehicle)
            out.append((s.x, s.y, s.yaw))
        return PLAN_DT * np.arange(1, len(out) + 1), np.asarray(out)
    pts = np.vstack([[0.0, 0.0], a])
    d = np.diff(pts, axis=0)
    yaw = np.arctan2(d[:, 1], d[:, 0])
    return c.waypoint_dt * np.arange(1, len(a) + 1), np.column_stack([a, yaw])


def make_policy(agent_spec: str, action_mode: str = "control"):
    """A carla-driver-interface ``BaseDriver`` serving ``agent_spec`` (a registered name or ``pkg.module:Class``)."""
    from stag_sim.agents import make_agent
    from stag_sim.egodriver import require
    from stag_sim.env_config import EnvConfig

    cdi = require()
    config = EnvConfig.from_kwargs(action_mode=action_mode)

    class StagDriveAgentPolicy(cdi.driver.BaseDriver):
        name = agent_spec

        def __init__(self) -> None:
            self._sessions: dict[str, tuple[Any, ServedEnv, list]] = {}
            self._lock = threading.Lock()

        def on_session_start(self, session) -> None:
            cameras = {cid: (int(c.intrinsics.resolution_h), int(c.intrinsics.resolution_w))
                       for cid, c in session.cameras.items()}
            env = ServedEnv(cameras, config)
            agent = make_agent(agent_spec, env, seed=session.seed)
            with self._lock:
                self._sessions[session.uuid] = (agent, env, [False])

        def on_session_close(self, session) -> None:
            with self._lock:
                agent, _, _ = self._sessions.pop(session.uuid, (None, None, None))
            if callable(getattr(agent, "close", None)):
                agent.close()

        def drive(self, ctx):
            geo = cdi.geometry
            with self._lock:
                agent, env, started = self._sessions[ctx.session.uuid]
            with ctx.session.lock:
                obs = observation(ctx.session, env)
            if not started[0]:
                agent.reset(obs, {"time_s": ctx.time_now_us * 1e-6})
                started[0] = True
            times, poses = plan_in_rig(agent.act(obs), env, float(obs["ego"][0]))
            plan = geo.Trajectory.empty()
            for t, (x, y, yaw) in zip(times, poses):
                plan.append(ctx.time_now_us + int(round(t * 1e6)), geo.Pose.from_xyz_yaw(x, y, 0.0, yaw))
            return cdi.driver.DriveResult(trajectory_in_rig=plan)

    return StagDriveAgentPolicy()


def check_served(agent_spec: str, action_mode: str = "control") -> None:
    """Build ``agent_spec`` for a one-camera session and take one step on a blank observation, so an agent that
    cannot be served (one that reads the simulator, say) fails before serving: one :class:`AgentError` line."""
    from stag_sim.agents import make_agent
    from stag_sim.env_config import EnvConfig

    env = ServedEnv({"CAM_FRONT": (64, 112)}, EnvConfig.from_kwargs(action_mode=action_mode))
    obs = {k: np.zeros(s.shape, s.dtype) for k, s in env.observation_space.spaces.items()}
    agent = make_agent(agent_spec, env)
    try:
        agent.reset(obs, {})
        plan_in_rig(agent.act(obs), env, 0.0)
    except Exception as e:  # noqa: BLE001 - any failure is the agent's; name it in one line
        raise AgentError(f"agent {agent_spec!r} cannot be served: {type(e).__name__}: {e}".splitlines()[0]) from None


def serve(agent_spec: str, port: int = 50051, host: str = "127.0.0.1", action_mode: str = "control",
          mode: str = "carla", max_workers: int = 8, ready=None) -> None:
    """Serve ``agent_spec`` on ``host:port`` until interrupted (SIGTERM or Ctrl-C). ``mode`` is the runtime on the
    other end (``carla``: carla-driver-interface's own payloads, also StagDrive's; ``alpasim``: an upstream
    runtime). ``ready(port)`` is called once the server listens."""
    from stag_sim.egodriver import require

    if not 0 <= int(port) < 65536:
        raise AgentError(f"serve: --port must be in 0..65535 (0: any free port), got {port}")
    check_served(agent_spec, action_mode)  # the agent and the port first, then the extra they need
    cdi = require()
    policy = make_policy(agent_spec, action_mode)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ctx = cdi.server.serving(policy, port=port, host=host, max_workers=max_workers, mode=mode)
        bound = ctx.__enter__()
    except RuntimeError as e:
        raise AgentError(f"serve: {e} (is the port in use?)") from None
    try:
        if ready is not None:
            ready(bound)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        ctx.__exit__(None, None, None)
