"""StagDrive-v0 settings: one typed tree of frozen dataclasses (:class:`EnvConfig` holding the world's
:class:`~stag_sim.world.WorldConfig`, the point renderer's :class:`~stag_sim.render.renderer.RenderConfig` and the
refiner's :class:`~stag_sim.refiner.renderer.RefinerConfig`), built from keyword arguments or a scenario's ``env:``
block by :func:`stag_sim.config.from_mapping`; unknown keys are errors (never silently ignored)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from stag_sim.config import from_mapping
from stag_sim.errors import ValidationError
from stag_sim.geometry import check_positive
from stag_sim.refiner.renderer import RefinerConfig
from stag_sim.render.types import RenderConfig
from stag_sim.world import WorldConfig

ACTION_MODES = ("control", "trajectory")
RENDERERS = ("point", "refined")
#: Observation keys: ``cameras`` (one image per observed camera, keys = camera names, plus ``depth_<CAM>`` with
#: ``depth``), ``ego``, ``route``, ``state`` and ``bev`` (see :mod:`stag_sim.envs.observations`).
OBSERVATION_KEYS = ("cameras", "ego", "route", "state", "bev")


@dataclass(frozen=True)
class BevConfig:
    """The ``bev`` observation's raster (:mod:`stag_sim.envs.observations`).

    Attributes:
        size_px: image side [px].
        resolution_m: metres per pixel [m].
        ego_row_fraction: where the ego sits, as a fraction of the image height from the top (0.75: three quarters
            of the view lie ahead).
        motion_horizon_s: the ``agents_future`` channel draws agents this far ahead at constant velocity [s].
    """

    size_px: int = 64
    resolution_m: float = 0.5
    ego_row_fraction: float = 0.75
    motion_horizon_s: float = 1.0

    def validate(self) -> "BevConfig":
        if int(self.size_px) != self.size_px or not 8 <= self.size_px <= 512:
            raise ValidationError(f"bev.size_px: must be an int in [8, 512] px, got {self.size_px!r}")
        if not (np.isfinite(self.resolution_m) and self.resolution_m > 0):
            raise ValidationError(f"bev.resolution_m: must be > 0 m per px, got {self.resolution_m!r}")
        if not 0.0 < self.ego_row_fraction < 1.0:
            raise ValidationError(f"bev.ego_row_fraction: must be in (0, 1), got {self.ego_row_fraction!r}")
        if not (np.isfinite(self.motion_horizon_s) and self.motion_horizon_s >= 0):
            raise ValidationError(f"bev.motion_horizon_s: must be >= 0 s, got {self.motion_horizon_s!r}")
        return self


@dataclass(frozen=True)
class RewardConfig:
    """The reward (README, "Reward"): the share of the route driven, less an idling penalty and terminal penalties.

    Attributes:
        progress: reward for driving the whole route, paid per metre as ``progress * metres / route length``.
        idle: penalty for an episode spent standing still while the road ahead is free, paid per step as
            ``idle / max_steps``; so stopping for good costs ``idle``, never less than a crash at the start.
        collision, offroad: paid on the terminating step.
        clipped: per out-of-range action component.
        idle_speed: below this speed the ego idles [m/s].
        free_distance: the road ahead is free when no agent is within this distance ahead in the ego's lane [m].
    """

    progress: float = 1.0
    idle: float = 0.5
    collision: float = 0.5
    offroad: float = 0.5
    clipped: float = 0.0
    idle_speed: float = 0.5  # [m/s]
    free_distance: float = 15.0  # [m]

    def validate(self) -> "RewardConfig":
        for name in ("progress", "idle", "collision", "offroad", "clipped", "idle_speed", "free_distance"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValidationError(f"reward.{name}: must be a finite value >= 0, got {v!r}")
        return self


@dataclass(frozen=True)
class StartConfig:
    """Where an episode starts (without reset options): the logged start, or a random one drawn from the env's seed.

    Attributes:
        random: draw the start (frame, lateral and heading offset, speed) at every reset.
        max_frame_fraction: the start frame is drawn from this first fraction of the frames that leave room to drive.
        lateral_m, heading_rad: offsets drawn uniformly in [-value, value] [m], [rad].
        speed_fraction: initial speed drawn uniformly in this range, as fractions of the logged speed there.
    """

    random: bool = False
    max_frame_fraction: float = 0.5
    lateral_m: float = 1.0
    heading_rad: float = 0.15
    speed_fraction: tuple[float, float] = (0.0, 1.2)

    def validate(self) -> "StartConfig":
        if not 0.0 <= self.max_frame_fraction <= 1.0:
            raise ValidationError(f"start.max_frame_fraction: must be in [0, 1], got {self.max_frame_fraction!r}")
        for name in ("lateral_m", "heading_rad"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValidationError(f"start.{name}: must be >= 0, got {getattr(self, name)!r}")
        lo, hi = self.speed_fraction
        if not 0.0 <= lo <= hi:
            raise ValidationError(f"start.speed_fraction: expected 0 <= low <= high, got {self.speed_fraction!r}")
        return self


@dataclass(frozen=True)
class TrafficConfig:
    """Traffic events drawn at every random-start reset on top of the scene's own traffic (RL diversity; nothing
    is drawn with the defaults): a lead vehicle that brakes hard, and a vehicle that cuts in
    (:func:`stag_sim.envs.traffic_events.draw_events`). Values are drawn on coarse grids (0.5 s, 1 m/s^2, 5 m) so
    the worlds they make are few and built once.

    Attributes:
        brake_prob: chance that the nearest moving vehicle ahead in the ego's lane (within ``brake_range_m``)
            brakes hard during the episode.
        brake_range_m: (near, far) distance ahead of the ego at the start [m].
        brake_after_s: (earliest, latest) start of the braking after the episode start [s].
        brake_decel: (lowest, highest) deceleration [m/s^2].
        cut_in_prob: chance that a parked vehicle of the scene is put in the lane beside the ego route, ahead,
            and cuts into the ego's lane.
        cut_in_ahead_m: (near, far) where it starts, ahead of the ego along the route [m].
        cut_in_after_s: (earliest, latest) when it starts moving over [s]; it takes 2 s.
        cut_in_speed_fraction: (low, high) its speed, as fractions of the ego's logged speed there.
    """

    brake_prob: float = 0.0
    brake_range_m: tuple[float, float] = (5.0, 40.0)
    brake_after_s: tuple[float, float] = (0.5, 6.0)
    brake_decel: tuple[float, float] = (3.0, 8.0)
    cut_in_prob: float = 0.0
    cut_in_ahead_m: tuple[float, float] = (10.0, 25.0)
    cut_in_after_s: tuple[float, float] = (0.5, 4.0)
    cut_in_speed_fraction: tuple[float, float] = (0.4, 0.9)

    def validate(self) -> "TrafficConfig":
        for name in ("brake_prob", "cut_in_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValidationError(f"traffic.{name}: must be a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("brake_range_m", "brake_after_s", "brake_decel", "cut_in_ahead_m", "cut_in_after_s",
                     "cut_in_speed_fraction"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo <= hi):
                raise ValidationError(f"traffic.{name}: expected 0 <= low <= high, got {getattr(self, name)!r}")
        if self.brake_decel[0] <= 0:
            raise ValidationError(f"traffic.brake_decel: must be > 0 m/s^2, got {self.brake_decel!r}")
        return self

    @property
    def active(self) -> bool:
        return self.brake_prob > 0 or self.cut_in_prob > 0


#: ``image_size="auto"``: the rig's size divided by the smallest whole number that makes it at most this wide [px].
AUTO_MAX_WIDTH = 512
#: ``voxel_size=None``: the static-cloud voxel [m] by scene kind. A rendered scene (the synthetic town, test
#: fixtures; :data:`RENDERED_SOURCES`) has exact depth and flat textures: 0.2 m keeps it fast. A real log's
#: textures need 0.05 m (DGP scene_02 env reset: 0.2 m blurs every edge).
VOXEL_BY_KIND = {"rendered": 0.2, "real": 0.05}
RENDERED_SOURCES = ("synthetic", "test")


def auto_image_size(rig, cameras=None) -> tuple[int, int]:
    """(height, width) [px] for ``image_size="auto"``: the observed cameras' size (they must share an aspect ratio
    within 1 %) divided by the smallest whole number that brings the width to at most :data:`AUTO_MAX_WIDTH`."""
    names = list(cameras) if cameras else list(rig.names)
    intr = [rig[n].intrinsics for n in names if n in rig.names] or [rig[0].intrinsics]
    aspects = {n: k.width / k.height for n, k in zip(names, intr)}
    lo, hi = min(aspects.values()), max(aspects.values())
    if hi > lo * 1.01:
        a, b = min(aspects, key=aspects.get), max(aspects, key=aspects.get)
        raise ValidationError(f"image_size='auto': cameras {a} ({aspects[a]:.3f}:1) and {b} ({aspects[b]:.3f}:1) have "
                              "different aspect ratios; observe cameras of one shape or give image_size=(height, width)")
    k = intr[0]
    d = max(1, -(-k.width // AUTO_MAX_WIDTH))
    return max(8, int(round(k.height / d))), max(8, int(round(k.width / d)))


def _numbers(value, name: str, kind, expected: str) -> tuple:
    """``value`` as a tuple of ``kind`` (int / float); one line naming the setting ``name`` otherwise."""
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ValidationError(f"StagDrive-v0: {name}: expected {expected}, got {value!r}") from None


@dataclass(frozen=True)
class EnvConfig:
    """Everything ``gym.make("StagDrive-v0", **kwargs)`` accepts besides ``scene``, ``scenario``, ``render_mode``.

    Attributes:
        action_mode: ``control`` — (acceleration, steering) in [-1, 1]; ``trajectory`` — ``num_waypoints``
            future (x, y) [m] in the ego frame, ``waypoint_dt`` [s] apart, tracked by pure pursuit + PI.
        cameras: camera names to observe (the scene rig's own names; observed in rig order). None: every camera
            of the rig; ``()``: none (a camera-free env: nothing is rendered).
        observations: the observation keys (:data:`OBSERVATION_KEYS`). None: ``cameras``, ``ego`` and ``route``,
            or ``state`` alone for a camera-free env.
        num_state_agents: agents in the ``state`` vector (the nearest ones) [-].
        bev: the ``bev`` raster (:class:`BevConfig`).
        image_size: (height, width) of observed images [px], or ``auto`` (default): the rig's own aspect ratio at
            the largest whole fraction of its size at most :data:`AUTO_MAX_WIDTH` wide (DGP 1936 x 1216 -> 484 x
            304, nuScenes 1600 x 900 -> 400 x 225, the synthetic town 400 x 224 as it is). Resolved when the env is
            made (``env.unwrapped.config.image_size`` holds the size in use).
        camera_offset: (x, y, z) [m] shift of the whole camera rig in the ego frame (y left), e.g. to re-render a
            run from beside the logged path.
        depth: add ``depth_<CAM>`` (H, W) float32 z-depth [m] observations.
        world: the episode's :class:`~stag_sim.world.WorldConfig` (``agents``: ``log_replay`` or ``idm``, ``idm``,
            ``vehicle``, ``start_frame``, ...; a mapping of its fields is accepted).
        max_steps: truncate after this many steps (None: when the log ends).
        num_route_points, route_spacing: the route observation: points every ``route_spacing`` [m] ahead.
        num_waypoints, waypoint_dt: trajectory action shape and timing (default 8 x 0.5 s = 4 s, as NAVSIM).
        reward: the reward's parts and weights (:class:`RewardConfig`).
        start: where episodes start (:class:`StartConfig`).
        traffic: traffic events drawn at every random-start reset (:class:`TrafficConfig`; none by default).
        renderer: ``point`` (the z-buffered point renderer) or ``refined`` (point render, then the diffusion
            refiner; needs ``refiner`` and the ``diffusion`` extra).
        render: the point renderer's :class:`~stag_sim.render.renderer.RenderConfig`.
        refiner: the refiner's :class:`~stag_sim.refiner.renderer.RefinerConfig` (``path``, ``refine_every``,
            ``steps``, ``window``, ``device``, ``dtype``, ...), for ``renderer="refined"``.
        expert_action: put ``info["expert_action"]`` (the log's action) in every reset and step info. It costs two
            logged-pose interpolations, a quarter of a camera-free step: the RL recipes turn it off.
        voxel_size: static-cloud voxel edge for the 4D scene [m]. None (default): by scene kind, 0.2 m for a
            rendered scene (the synthetic town: ~1.3 M points, fast) and 0.05 m for a real log (real views turn
            blocky at 0.2 m); resolved when the env is made.
    """

    action_mode: str = "control"
    cameras: tuple[str, ...] | None = None
    observations: tuple[str, ...] | None = None
    num_state_agents: int = 8
    bev: BevConfig = field(default_factory=BevConfig)
    image_size: tuple[int, int] | str = "auto"
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m]
    depth: bool = False
    world: WorldConfig = field(default_factory=WorldConfig)
    max_steps: int | None = None
    num_route_points: int = 10
    route_spacing: float = 2.0  # [m]
    num_waypoints: int = 8
    waypoint_dt: float = 0.5  # [s]
    reward: RewardConfig = field(default_factory=RewardConfig)
    start: StartConfig = field(default_factory=StartConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    renderer: str = "point"
    render: RenderConfig = field(default_factory=RenderConfig)
    refiner: RefinerConfig | None = None
    voxel_size: float | None = None  # [m] None: by scene kind (VOXEL_BY_KIND)
    expert_action: bool = True

    def validate(self) -> "EnvConfig":
        if self.action_mode not in ACTION_MODES:
            raise ValidationError(f"action_mode: {self.action_mode!r} is not one of {', '.join(ACTION_MODES)}")
        if self.cameras is not None and len(set(self.cameras)) != len(self.cameras):
            raise ValidationError(f"cameras: {list(self.cameras)} must be distinct camera names (or None: all, (): none)")
        keys = self.observation_keys
        unknown = [k for k in keys if k not in OBSERVATION_KEYS]
        if unknown:
            raise ValidationError(f"observations: unknown key {unknown[0]!r}; known: {', '.join(OBSERVATION_KEYS)}")
        if not keys or len(set(keys)) != len(keys):
            raise ValidationError(f"observations: expected distinct keys, at least one, got {list(keys)}")
        if self.cameras == () and "cameras" in keys:
            raise ValidationError("observations: 'cameras' with cameras=() (a camera-free env has no images)")
        if self.cameras == () and self.renderer == "refined":
            raise ValidationError("renderer: 'refined' needs cameras; cameras=() is a camera-free env")
        if int(self.num_state_agents) != self.num_state_agents or self.num_state_agents < 0:
            raise ValidationError(f"num_state_agents: must be an int >= 0, got {self.num_state_agents!r}")
        if isinstance(self.image_size, str):
            if self.image_size != "auto":
                raise ValidationError(f"image_size: expected (height, width) [px] or 'auto', got {self.image_size!r}"
                                      " (a string other than 'auto': pass a tuple such as (56, 100))")
        elif len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValidationError(f"image_size: expected (height, width) of at least 8 px, got {self.image_size}")
        if len(self.camera_offset) != 3 or not all(np.isfinite(v) for v in self.camera_offset):
            raise ValidationError(f"camera_offset: expected three finite (x, y, z) [m], got {self.camera_offset}")
        if self.renderer not in RENDERERS:
            raise ValidationError(f"renderer: {self.renderer!r} is not one of {', '.join(RENDERERS)}")
        if self.renderer == "refined" and self.refiner is None:
            raise ValidationError("refiner: required with renderer='refined', e.g. refiner={'path': DIR} "
                                  "(create one: stag-sim refiner init --out DIR)")
        for name in ("num_route_points", "num_waypoints"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"{name}: must be >= 1, got {getattr(self, name)}")
        check_positive(self, ("route_spacing", "waypoint_dt") + (("voxel_size",) if self.voxel_size is not None else ()),
                       prefix="")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValidationError(f"max_steps: must be >= 1 or None, got {self.max_steps}")
        return self

    def resolved(self, log) -> "EnvConfig":
        """These settings with ``image_size="auto"`` and ``voxel_size=None`` resolved for the scene ``log``."""
        out = self
        if self.voxel_size is None:
            out = dataclasses.replace(out, voxel_size=VOXEL_BY_KIND["rendered" if log.source in RENDERED_SOURCES else "real"])
        if self.image_size == "auto":
            out = dataclasses.replace(out, image_size=auto_image_size(log.rig, self.cameras))
        return out

    @property
    def observation_keys(self) -> tuple[str, ...]:
        """The observation keys in use (``observations``, or its default)."""
        if self.observations is not None:
            return tuple(self.observations)
        return ("state",) if self.cameras == () else ("cameras", "ego", "route")

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EnvConfig":
        """The settings from ``gym.make`` keyword arguments (nested ``world`` / ``render`` / ``refiner`` as mappings
        or config objects); errors name the key path, e.g. ``StagDrive-v0: world.idm.v0: unknown setting``."""
        if kwargs.get("cameras") is not None:
            cams = kwargs["cameras"]
            kwargs["cameras"] = (cams,) if isinstance(cams, str) else tuple(cams)
        if "image_size" in kwargs and not isinstance(kwargs["image_size"], str):
            kwargs["image_size"] = _numbers(kwargs["image_size"], "image_size", int, "(height, width) [px]")
        if kwargs.get("observations") is not None:
            obs = kwargs["observations"]
            kwargs["observations"] = (obs,) if isinstance(obs, str) else tuple(obs)
        if kwargs.get("camera_offset") is not None:
            kwargs["camera_offset"] = _numbers(kwargs["camera_offset"], "camera_offset", float, "(x, y, z) [m]")
        else:
            kwargs.pop("camera_offset", None)
        return from_mapping(cls, kwargs, error=lambda path, msg: ValidationError(
            f"StagDrive-v0: {'.'.join(map(str, path)) + ': ' if path else ''}{msg}"))

    def camera_names(self, rig) -> tuple[str, ...]:
        """The observed cameras of ``rig`` (a :class:`~stag_sim.camera.CameraRig`), in rig order; a name the rig
        does not have is a :class:`ValidationError` naming the rig's cameras."""
        if self.cameras is None:
            return rig.names
        unknown = [c for c in self.cameras if c not in rig.names]
        if unknown:
            raise ValidationError(f"cameras: {unknown} not in the scene's rig ({', '.join(rig.names)})")
        return tuple(n for n in rig.names if n in set(self.cameras))
