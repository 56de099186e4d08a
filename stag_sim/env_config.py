"""StagDrive-v0 settings: one frozen dataclass, validated; unknown keys are errors (never silently ignored)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from stag_sim.errors import ValidationError
from stag_sim.geometry import check_positive

ACTION_MODES = ("control", "trajectory")
RENDERERS = ("point", "refined")
REFINER_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EnvConfig:
    """Everything ``gym.make("StagDrive-v0", **kwargs)`` accepts besides ``scene``, ``scenario``, ``render_mode``.

    Attributes:
        action_mode: ``control`` — (acceleration, steering) in [-1, 1]; ``trajectory`` — ``num_waypoints``
            future (x, y) [m] in the ego frame, ``waypoint_dt`` [s] apart, tracked by pure pursuit + PI.
        cameras: camera names to observe (the scene rig's own names; observed in rig order). None: every camera
            of the rig.
        image_size: (height, width) of observed images [px].
        camera_offset: (x, y, z) [m] shift of the whole camera rig in the ego frame (y left), e.g. to re-render a
            run from beside the logged path.
        depth: add ``depth_<CAM>`` (H, W) float32 z-depth [m] observations.
        agents: ``log_replay`` or ``idm``.
        world: extra :class:`stag_sim.world.WorldConfig` values (``idm``, ``vehicle``, ``start_frame``, ...).
        max_steps: truncate after this many steps (None: when the log ends).
        num_route_points, route_spacing: the route observation: points every ``route_spacing`` [m] ahead.
        num_waypoints, waypoint_dt: trajectory action shape and timing (default 8 x 0.5 s = 4 s, as NAVSIM).
        reward_progress: reward per metre of route progress [1/m].
        penalty_collision, penalty_offroad: subtracted on the terminating step.
        penalty_clipped: subtracted per out-of-range action component.
        renderer: ``point`` (the z-buffered point renderer) or ``refined`` (point render, then the diffusion
            refiner of ``refiner_path``; needs the ``diffusion`` extra).
        refiner_path: refiner directory (``stag-sim refiner init`` / ``train-refiner``), for ``renderer="refined"``.
        refine_every: refine every K-th step, forward-warp the last refined frames in between (1 = every step).
        refiner_steps: sampler steps per refinement.
        refiner_window: frames per refinement (the current render and up to window - 1 previous ones).
        refiner_device: torch device of the refiner (``cpu``, ``cuda``, ``cuda:1``).
        refiner_dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16``, ``bfloat16``.
        voxel_size: static-cloud voxel edge for the 4D scene [m].
    """

    action_mode: str = "control"
    cameras: tuple[str, ...] | None = None
    image_size: tuple[int, int] = (224, 400)
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m]
    depth: bool = False
    agents: str = "log_replay"
    world: dict = field(default_factory=dict)
    max_steps: int | None = None
    num_route_points: int = 10
    route_spacing: float = 2.0  # [m]
    num_waypoints: int = 8
    waypoint_dt: float = 0.5  # [s]
    reward_progress: float = 0.1  # [1/m]
    penalty_collision: float = 10.0
    penalty_offroad: float = 10.0
    penalty_clipped: float = 0.0
    renderer: str = "point"
    refiner_path: str | None = None
    refine_every: int = 1
    refiner_steps: int = 4
    refiner_window: int = 1
    refiner_device: str = "cpu"
    refiner_dtype: str = "auto"
    voxel_size: float = 0.2  # [m] 0.2 renders ~1.3 M points on the synthetic town; 0.05 is sharper and ~2x slower

    def validate(self) -> "EnvConfig":
        if self.action_mode not in ACTION_MODES:
            raise ValidationError(f"action_mode: {self.action_mode!r} is not one of {', '.join(ACTION_MODES)}")
        if self.cameras is not None and (not self.cameras or len(set(self.cameras)) != len(self.cameras)):
            raise ValidationError(f"cameras: {list(self.cameras)} must be a non-empty list of distinct camera names (or None: all)")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValidationError(f"image_size: expected (height, width) of at least 8 px, got {self.image_size}")
        if len(self.camera_offset) != 3 or not all(np.isfinite(v) for v in self.camera_offset):
            raise ValidationError(f"camera_offset: expected three finite (x, y, z) [m], got {self.camera_offset}")
        if self.renderer not in RENDERERS:
            raise ValidationError(f"renderer: {self.renderer!r} is not one of {', '.join(RENDERERS)}")
        if self.renderer == "refined" and not self.refiner_path:
            raise ValidationError("refiner_path: required with renderer='refined' (create one: stag-sim refiner init --out DIR)")
        for name in ("refine_every", "refiner_steps", "refiner_window"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValidationError(f"{name}: must be an int >= 1, got {getattr(self, name)!r}")
        if self.refiner_dtype not in REFINER_DTYPES:
            raise ValidationError(f"refiner_dtype: {self.refiner_dtype!r} is not one of {', '.join(REFINER_DTYPES)}")
        for name in ("num_route_points", "num_waypoints"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"{name}: must be >= 1, got {getattr(self, name)}")
        check_positive(self, ("route_spacing", "waypoint_dt", "voxel_size"), prefix="")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValidationError(f"max_steps: must be >= 1 or None, got {self.max_steps}")
        return self

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EnvConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValidationError(f"StagDrive-v0: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if kwargs.get("cameras") is not None:
            cams = kwargs["cameras"]
            kwargs["cameras"] = (cams,) if isinstance(cams, str) else tuple(cams)
        if "image_size" in kwargs:
            kwargs["image_size"] = tuple(int(v) for v in kwargs["image_size"])
        if kwargs.get("camera_offset") is not None:
            kwargs["camera_offset"] = tuple(float(v) for v in kwargs["camera_offset"])
        else:
            kwargs.pop("camera_offset", None)
        return cls(**kwargs).validate()

    def camera_names(self, rig) -> tuple[str, ...]:
        """The observed cameras of ``rig`` (a :class:`~stag_sim.camera.CameraRig`), in rig order; a name the rig
        does not have is a :class:`ValidationError` naming the rig's cameras."""
        if self.cameras is None:
            return rig.names
        unknown = [c for c in self.cameras if c not in rig.names]
        if unknown:
            raise ValidationError(f"cameras: {unknown} not in the scene's rig ({', '.join(rig.names)})")
        return tuple(n for n in rig.names if n in set(self.cameras))
