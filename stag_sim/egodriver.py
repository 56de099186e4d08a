"""The AlpaSim egodriver gRPC contract (``egodriver.EgodriverService``): StagDrive's side of the wire.

The contract's messages, stubs, servicer and geometry come from ``carla-driver-interface`` (the ``driver`` extra:
``pip install 'stag-sim[driver]'``), which vendors AlpaSim's proto unchanged; this is the one module that imports
it. It knows nothing of envs or agents:

- :class:`EgodriverClient` is the runtime end: it opens a session with the rig (camera ids, pinhole intrinsics,
  ``rig_to_camera`` as the optical frame in the rig, contract revision 2), then each step sends the ego pose
  history, the route and JPEG camera frames (concurrently) and asks for a plan, which comes back checked and
  resampled into ego-frame waypoints (:func:`plan_waypoints`).
- :func:`require` gives the package to the serving end (:mod:`stag_sim.app.serve`).

Frames: StagDrive's world frame is the contract's ``local`` frame and its ego frame (rear axle on the ground, x
forward, y left, z up) is the contract's rig frame. Times on the wire are the simulation time [us].
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from stag_sim.errors import AgentError, MissingExtraError

#: Seconds a single call may take before the policy counts as timed out.
DEFAULT_TIMEOUT_S = 10.0
#: JPEG quality of the frames sent.
DEFAULT_JPEG_QUALITY = 90

_CDI = None


def require() -> SimpleNamespace:
    """carla-driver-interface's modules (``protocol``, ``geometry``, ``contract``, ``driver``, ``server``,
    ``testing``) and ``grpc``; one :class:`MissingExtraError` line naming the ``driver`` extra when absent."""
    global _CDI
    if _CDI is None:
        try:
            import grpc
            from carla_driver_interface import contract, driver, geometry, protocol, server, testing
        except ImportError:
            raise MissingExtraError("carla-driver-interface", "driver", "the egodriver gRPC contract") from None
        _CDI = SimpleNamespace(grpc=grpc, contract=contract, driver=driver, geometry=geometry, protocol=protocol,
                               server=server, testing=testing)
    return _CDI


def wire_pose(T: np.ndarray):
    """(4, 4) rigid transform -> the contract's Pose (carla_driver_interface.geometry.Pose)."""
    from scipy.spatial.transform import Rotation

    T = np.asarray(T, np.float64)
    return require().geometry.Pose.from_rotation(T[:3, 3], Rotation.from_matrix(T[:3, :3]))


def available_camera(name: str, intrinsics, T_rig_from_camera: np.ndarray):
    """One camera as contract revision 2 declares it: OpenCV pinhole intrinsics [px], resolution, and
    ``rig_to_camera`` = the OpenCV (optical) camera frame in the rig frame, ``T_rig_from_camera`` (4, 4) [m]."""
    p = require().protocol
    spec = p.CameraSpec(
        opencv_pinhole_param=p.OpenCVPinholeCameraParam(
            principal_point_x=float(intrinsics.cx), principal_point_y=float(intrinsics.cy),
            focal_length_x=float(intrinsics.fx), focal_length_y=float(intrinsics.fy)),
        logical_id=name, resolution_w=int(intrinsics.width), resolution_h=int(intrinsics.height),
        shutter_type=p.ShutterType.GLOBAL)
    return p.AvailableCamera(intrinsics=spec, rig_to_camera=wire_pose(T_rig_from_camera).to_proto(), logical_id=name)


def encode_jpeg(rgb: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise AgentError(f"egodriver: JPEG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()


def decode_plan(trajectory) -> tuple[np.ndarray, np.ndarray]:
    """A wire Trajectory -> (times [us] (K,) int64, positions (K, 3) [m]) without building rotations, so a
    non-finite plan is reported instead of raising inside scipy."""
    t = np.array([p.timestamp_us for p in trajectory.poses], np.int64)
    xyz = np.array([[p.pose.vec.x, p.pose.vec.y, p.pose.vec.z] for p in trajectory.poses], np.float64).reshape(-1, 3)
    return t, xyz


def plan_waypoints(times_us: np.ndarray, xyz_local: np.ndarray, T_local_from_ego: np.ndarray, now_us: int,
                   query_s: np.ndarray, where: str) -> np.ndarray:
    """A plan's positions resampled at ``now + query_s`` [s] in the ego frame: (len(query_s), 2) [m].

    Linear in time between the plan's poses; held at its last pose past its end (a short plan means "stop
    there"). An empty plan (no pose after ``now``) or a non-finite one is an :class:`AgentError` naming ``where``.
    """
    ahead = times_us > now_us
    if not np.any(ahead):
        raise AgentError(f"{where}: the policy returned an empty plan ({len(times_us)} pose(s), none after "
                         f"t={now_us} us)")
    if not np.all(np.isfinite(xyz_local)):
        bad = int(np.argmax(~np.all(np.isfinite(xyz_local), axis=1)))
        raise AgentError(f"{where}: the policy returned a non-finite plan (pose {bad}: {xyz_local[bad].tolist()})")
    if np.any(np.diff(times_us) <= 0):
        raise AgentError(f"{where}: the plan's timestamps are not increasing ({times_us.tolist()[:6]}...)")
    R, t = T_local_from_ego[:3, :3], T_local_from_ego[:3, 3]
    ego_xy = ((xyz_local - t) @ R)[:, :2]
    if times_us[0] > now_us:  # the plan does not start at the ego: it starts from where the ego is now
        times_us, ego_xy = np.concatenate([[now_us], times_us]), np.vstack([[0.0, 0.0], ego_xy])
    q = now_us + np.asarray(query_s, np.float64) * 1e6
    return np.stack([np.interp(q, times_us, ego_xy[:, 0]), np.interp(q, times_us, ego_xy[:, 1])], axis=1)


@dataclass(frozen=True)
class EgoSample:
    """One ego pose sent as egomotion: ``time_us`` [us], ``T_local_from_rig`` (4, 4), and its motion in the rig
    frame: ``velocity`` (3,) [m/s], ``yaw_rate`` [rad/s], ``accel`` (3,) [m/s^2]."""

    time_us: int
    T_local_from_rig: np.ndarray
    velocity: tuple = (0.0, 0.0, 0.0)
    yaw_rate: float = 0.0
    accel: tuple = (0.0, 0.0, 0.0)


class EgodriverClient:
    """The runtime end of the egodriver contract, for one policy server at ``target``: ``HOST:PORT``, or an open
    ``grpc.Channel`` -- e.g. carla-driver-interface's ``inprocess.in_process_channel(policy)``, which runs a policy
    in this process through the same stubs, servicer and bytes, without the socket.

    :meth:`connect` checks the server once (reachable, contract revision) within ``timeout_s`` [s]; every call
    after that has the same deadline. Failures are one :class:`AgentError` line naming the server and the call.
    """

    def __init__(self, target, timeout_s: float = DEFAULT_TIMEOUT_S, jpeg_quality: int = DEFAULT_JPEG_QUALITY):
        self._given = None if isinstance(target, str) else target
        target = target if isinstance(target, str) else "in-process"
        if float(timeout_s) <= 0:
            raise AgentError(f"egodriver {target}: timeout must be > 0 s, got {timeout_s}")
        self.target = target
        self.timeout_s = float(timeout_s)
        self.jpeg_quality = int(jpeg_quality)
        self._cdi = require()
        self._channel = None
        self._stub = None
        self.version = None
        self.revision = None
        self.session: str | None = None
        self.last_debug = None
        self._pool = None

    def _error(self, call: str, e) -> AgentError:
        grpc = self._cdi.grpc
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentError(f"egodriver {self.target}: {call} timed out after {self.timeout_s:g} s")
        details = (e.details() if hasattr(e, "details") else str(e)) or ""
        return AgentError(f"egodriver {self.target}: {call} failed: {getattr(code, 'name', code)}: "
                          f"{details.splitlines()[0] if details else ''}".rstrip(": "))

    def connect(self) -> str:
        """Open the channel and ask the server's version; returns its ``version_id``."""
        if self._stub is not None:
            return self.version.version_id
        grpc, p = self._cdi.grpc, self._cdi.protocol
        if self._given is not None:
            self._channel = self._given
        else:
            self._channel = grpc.insecure_channel(self.target, options=p.channel_options())
            try:
                grpc.channel_ready_future(self._channel).result(timeout=self.timeout_s)
            except grpc.FutureTimeoutError:
                self.close()
                raise AgentError(f"egodriver {self.target}: no policy server answered within {self.timeout_s:g} s") from None
        stub = p.EgodriverServiceStub(self._channel)
        try:
            self.version, self.revision = self._cdi.contract.negotiate(stub, timeout=self.timeout_s)
        except grpc.RpcError as e:
            self.close()
            raise self._error("get_version", e) from None
        except self._cdi.contract.ContractError as e:
            self.close()
            raise AgentError(f"egodriver {self.target}: {e}") from None
        self._stub = stub
        return self.version.version_id

    def start_session(self, cameras, scene_id: str, seed: int = 0) -> str:
        """Open a rollout; ``cameras`` = [(name, CameraIntrinsics, T_rig_from_camera (4, 4)), ...]."""
        self.connect()
        c, p = self._cdi.contract, self._cdi.protocol
        declared = [available_camera(*cam) for cam in cameras]
        declared = c.cameras_to_revision(declared, c.CONTRACT_REVISION, self.revision)
        session = str(uuid.uuid4())
        req = p.DriveSessionRequest(session_uuid=session, random_seed=int(seed) & 0xFFFFFFFF)
        req.debug_info.scene_id = str(scene_id)
        req.rollout_spec.vehicle.available_cameras.extend(declared)
        try:
            self._stub.start_session(req, timeout=self.timeout_s, metadata=c.contract_metadata(self.revision))
        except self._cdi.grpc.RpcError as e:
            raise self._error("start_session", e) from None
        self.session = session
        return session

    def step(self, now_us: int, query_us: int, egomotion: list[EgoSample], route_rig: np.ndarray,
             images: dict[str, np.ndarray]):
        """Send this step's observations (the new ego poses, the route ahead (N, 3) [m] in the rig frame, and
        the camera images (H, W, 3) uint8 RGB by name), then ``drive``. Returns the DriveResponse."""
        if self.session is None:
            raise AgentError(f"egodriver {self.target}: step before start_session")
        p, geo, grpc = self._cdi.protocol, self._cdi.geometry, self._cdi.grpc
        s, t = self.session, self.timeout_s
        ego = p.RolloutEgoTrajectory(session_uuid=s)
        for e in egomotion:
            ego.trajectory.poses.append(wire_pose(e.T_local_from_rig).to_proto_at_time(int(e.time_us)))
            ego.dynamic_states.append(p.DynamicState(
                linear_velocity=p.Vec3(x=e.velocity[0], y=e.velocity[1], z=e.velocity[2]),
                angular_velocity=p.Vec3(x=0.0, y=0.0, z=float(e.yaw_rate)),
                linear_acceleration=p.Vec3(x=e.accel[0], y=e.accel[1], z=e.accel[2])))
        route = p.RouteRequest(session_uuid=s, route=p.Route(timestamp_us=int(now_us),
                                                             waypoints=geo.waypoints_to_proto(np.asarray(route_rig))))
        calls = [("submit_egomotion_observation", self._stub.submit_egomotion_observation.future(ego, timeout=t)),
                 ("submit_route", self._stub.submit_route.future(route, timeout=t))]
        # frames are encoded on a thread pool (OpenCV releases the GIL) and each is sent as soon as it is ready
        for name, jpeg in zip(images, self._encoder().map(self._encode, images.values())):
            img = p.RolloutCameraImage(session_uuid=s)
            img.camera_image.logical_id = name
            img.camera_image.frame_start_us = int(now_us)
            img.camera_image.frame_end_us = int(now_us)
            img.camera_image.image_bytes = jpeg
            calls.append((f"submit_image_observation({name})", self._stub.submit_image_observation.future(img, timeout=t)))
        for name, fut in calls:  # all in flight together; every one must land before drive
            try:
                fut.result()
            except grpc.RpcError as e:
                raise self._error(name, e) from None
        try:
            resp = self._stub.drive(p.DriveRequest(session_uuid=s, time_now_us=int(now_us), time_query_us=int(query_us)),
                                    timeout=t)
        except grpc.RpcError as e:
            raise self._error("drive", e) from None
        self.last_debug = p.unpack_debug_info(resp.debug_info.unstructured_debug_info)
        return resp

    def _encode(self, rgb: np.ndarray) -> bytes:
        return encode_jpeg(rgb, self.jpeg_quality)

    def _encoder(self):
        if self._pool is None:
            import os
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                            thread_name_prefix="egodriver-jpeg")
        return self._pool

    def close_session(self) -> None:
        """End the rollout (best effort: a server that is gone or stuck does not raise here)."""
        if self.session is None or self._stub is None:
            return
        session, self.session = self.session, None
        try:
            self._stub.close_session(self._cdi.protocol.DriveSessionCloseRequest(session_uuid=session),
                                     timeout=min(self.timeout_s, 2.0))
        except self._cdi.grpc.RpcError:
            pass

    def close(self) -> None:
        self.close_session()
        if self._channel is not None and self._given is None:  # a channel given to us stays its owner's
            self._channel.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._channel = self._stub = self._pool = None
