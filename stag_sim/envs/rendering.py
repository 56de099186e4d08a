"""What an env asks of its renderer: the :class:`Renderer` protocol (``render(request)`` and ``reset()``), the
:class:`RenderRequest` it renders, and :func:`as_renderer`, which gives any renderer of arrays (the point renderer,
the refined renderer, an injected object) that protocol.

The env calls ``reset()`` at every ``env.reset``, so a renderer that keeps state across calls (the refiner's
keyframes, frame window and cache) starts every episode afresh: ``reset(seed=s)`` twice gives the same episode.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RenderRequest:
    """The renders one env needs for an observation.

    Attributes:
        camera_poses: (C, 4, 4) ``T_world_from_camera`` of the observed cameras.
        intrinsics: C :class:`~stag_sim.camera.CameraIntrinsics`.
        object_poses: (K, 4, 4) scene-object poses; object_mask: (K,) bool, drawn or not.
        cameras: the C rig camera names (a renderer composites their ego body and draws their own camera layer).
        time_s: the episode's simulation time [s] since the log's first frame (None: not known).
    """

    camera_poses: np.ndarray
    intrinsics: list
    object_poses: np.ndarray
    object_mask: np.ndarray
    cameras: tuple = ()
    time_s: float | None = None


@runtime_checkable
class Renderer(Protocol):
    """What StagDrive-v0 calls on its renderer.

    ``render(request)`` returns a :class:`~stag_sim.render.types.RenderResult` (``rgb`` (C, H, W, 3) uint8, ``depth``
    (C, H, W) [m], ``valid`` (C, H, W) bool) for the C cameras of the :class:`RenderRequest`; ``reset()`` is called
    at every ``env.reset`` and must forget anything carried over from the previous episode.
    """

    def render(self, request: RenderRequest): ...

    def reset(self) -> None: ...


def _parameters(fn) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


class ArrayRenderer:
    """The :class:`Renderer` protocol over a renderer of arrays: ``render(camera_poses, intrinsics, object_poses,
    object_mask[, cameras=...][, time_s=...])`` (:class:`~stag_sim.render.PointRenderer`, the refined renderer, an
    injected renderer of that shape) and, if it has one, its ``reset()``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        params = _parameters(inner.render)
        self._kwargs = tuple(k for k in ("cameras", "time_s") if k in params)

    def render(self, request: RenderRequest):
        kw = {"cameras": list(request.cameras), "time_s": request.time_s}
        return self.inner.render(request.camera_poses, request.intrinsics, request.object_poses, request.object_mask,
                                 **{k: kw[k] for k in self._kwargs})

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if callable(reset):
            reset()


def as_renderer(renderer) -> Renderer:
    """``renderer`` as a :class:`Renderer`: itself when its ``render`` takes one ``request``, else an
    :class:`ArrayRenderer` around it."""
    if isinstance(renderer, ArrayRenderer):
        return renderer
    if _parameters(renderer.render) == ("request",) and callable(getattr(renderer, "reset", None)):
        return renderer
    return ArrayRenderer(renderer)


def camera_names_kwarg(renderer, names) -> dict:
    """``{"cameras": names}`` for a renderer whose ``render`` takes camera names (the point and refined renderers:
    ego body, camera layers); nothing for an injected renderer that does not."""
    return {"cameras": list(names)} if "cameras" in _parameters(renderer.render) else {}
