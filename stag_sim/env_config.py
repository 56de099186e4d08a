"""StagDrive-v0 settings: one typed tree of frozen dataclasses (:class:`EnvConfig` holding the world's
:class:`~stag_sim.world.WorldConfig`, the point renderer's :class:`~stag_sim.render.renderer.RenderConfig` and the
refiner's :class:`~stag_sim.refiner.renderer.RefinerConfig`), built from keyword arguments or a scenario's ``env:``
block by :func:`stag_sim.config.from_mapping`; unknown keys are errors (never silently ignored)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stag_sim.config import from_mapping
from stag_sim.errors import ValidationError
from stag_sim.geometry import check_positive
from stag_sim.refiner.renderer import RefinerConfig
from stag_sim.render.renderer import RenderConfig
from stag_sim.world import WorldConfig

ACTION_MODES = ("control", "trajectory")
RENDERERS = ("point", "refined")


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
        world: the episode's :class:`~stag_sim.world.WorldConfig` (``agents``: ``log_replay`` or ``idm``, ``idm``,
            ``vehicle``, ``start_frame``, ...; a mapping of its fields is accepted).
        max_steps: truncate after this many steps (None: when the log ends).
        num_route_points, route_spacing: the route observation: points every ``route_spacing`` [m] ahead.
        num_waypoints, waypoint_dt: trajectory action shape and timing (default 8 x 0.5 s = 4 s, as NAVSIM).
        reward_progress: reward per metre of route progress [1/m].
        penalty_collision, penalty_offroad: subtracted on the terminating step.
        penalty_clipped: subtracted per out-of-range action component.
        renderer: ``point`` (the z-buffered point renderer) or ``refined`` (point render, then the diffusion
            refiner; needs ``refiner`` and the ``diffusion`` extra).
        render: the point renderer's :class:`~stag_sim.render.renderer.RenderConfig`.
        refiner: the refiner's :class:`~stag_sim.refiner.renderer.RefinerConfig` (``path``, ``refine_every``,
            ``steps``, ``window``, ``device``, ``dtype``, ...), for ``renderer="refined"``.
        voxel_size: static-cloud voxel edge for the 4D scene [m].
    """

    action_mode: str = "control"
    cameras: tuple[str, ...] | None = None
    image_size: tuple[int, int] = (224, 400)
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m]
    depth: bool = False
    world: WorldConfig = field(default_factory=WorldConfig)
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
    render: RenderConfig = field(default_factory=RenderConfig)
    refiner: RefinerConfig | None = None
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
        if self.renderer == "refined" and self.refiner is None:
            raise ValidationError("refiner: required with renderer='refined', e.g. refiner={'path': DIR} "
                                  "(create one: stag-sim refiner init --out DIR)")
        for name in ("num_route_points", "num_waypoints"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"{name}: must be >= 1, got {getattr(self, name)}")
        check_positive(self, ("route_spacing", "waypoint_dt", "voxel_size"), prefix="")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValidationError(f"max_steps: must be >= 1 or None, got {self.max_steps}")
        return self

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EnvConfig":
        """The settings from ``gym.make`` keyword arguments (nested ``world`` / ``render`` / ``refiner`` as mappings
        or config objects); errors name the key path, e.g. ``StagDrive-v0: world.idm.v0: unknown setting``."""
        if kwargs.get("cameras") is not None:
            cams = kwargs["cameras"]
            kwargs["cameras"] = (cams,) if isinstance(cams, str) else tuple(cams)
        if "image_size" in kwargs:
            kwargs["image_size"] = tuple(int(v) for v in kwargs["image_size"])
        if kwargs.get("camera_offset") is not None:
            kwargs["camera_offset"] = tuple(float(v) for v in kwargs["camera_offset"])
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
