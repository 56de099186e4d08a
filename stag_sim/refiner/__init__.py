"""The Stag-1 generative refiner: conditional video diffusion (diffusers) over the point renders of six cameras.

Light to import: the heavy parts (torch, diffusers, transformers) load on first use of these names:

- :class:`StagRefinerPipeline` (``stag_sim.refiner.pipeline``): the diffusers pipeline.
- :func:`build_components` (``stag_sim.refiner.components``): tiny / full untrained parts.
- :class:`RefinedRenderer` (``stag_sim.refiner.renderer``): the env's renderer: point render, then refine.
- :func:`load_refiner` (``stag_sim.refiner.renderer``): load a saved refiner directory with clear errors.
"""

from __future__ import annotations

_LAZY = {
    "StagRefinerPipeline": "stag_sim.refiner.pipeline",
    "StagRefinerOutput": "stag_sim.refiner.pipeline",
    "build_components": "stag_sim.refiner.components",
    "components_from_svd": "stag_sim.refiner.components",
    "CrossCameraAttnProcessor": "stag_sim.refiner.attention",
    "RefinedRenderer": "stag_sim.refiner.renderer",
    "RefinerConfig": "stag_sim.refiner.renderer",
    "load_refiner": "stag_sim.refiner.renderer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stag_sim.refiner' has no attribute {name!r}")
