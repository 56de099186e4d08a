"""What an env asks of its renderer: :class:`RenderRequest` (the renders of one observation) and the camera names a
renderer is given with them (:func:`camera_names_kwarg`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RenderRequest:
    """The renders one env needs for an observation.

    Attributes:
        camera_poses: (C, 4, 4) ``T_world_from_camera`` of the observed cameras.
        intrinsics: C :class:`~stag_sim.camera.CameraIntrinsics`.
        object_poses: (K, 4, 4) scene-object poses; object_mask: (K,) bool, drawn or not.
        cameras: the C rig camera names (a renderer composites their ego body and draws their own camera layer).
    """

    camera_poses: np.ndarray
    intrinsics: list
    object_poses: np.ndarray
    object_mask: np.ndarray
    cameras: tuple = ()


def camera_names_kwarg(renderer, names) -> dict:
    """``{"cameras": names}`` for a renderer whose ``render`` takes camera names (the point and refined renderers:
    ego body, camera layers); nothing for an injected renderer that does not."""
    import inspect

    try:
        takes = "cameras" in inspect.signature(renderer.render).parameters
    except (TypeError, ValueError):
        takes = False
    return {"cameras": list(names)} if takes else {}
