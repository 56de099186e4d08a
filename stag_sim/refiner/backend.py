"""The one place the refiner imports its heavy dependencies (torch, diffusers, transformers, accelerate), lazily.

Every other refiner module gets the modules from these functions, so ``import stag_sim.refiner`` stays light and a
missing extra is reported as :class:`~stag_sim.errors.MissingExtraError` naming ``pip install 'stag-sim[diffusion]'``.
"""

from __future__ import annotations

import importlib

from stag_sim.errors import MissingExtraError

EXTRA = "diffusion"


def _load(module: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, EXTRA, purpose) from None


def torch():
    """The torch module (a core dependency, imported here for the refiner)."""
    return _load("torch", "the diffusion refiner")


def diffusers():
    """The diffusers module."""
    return _load("diffusers", "the diffusion refiner")


def transformers():
    """The transformers module (the CLIP image encoder of the reference frame)."""
    return _load("transformers", "the refiner's image encoder")


def accelerate():
    """The accelerate module (refiner training: devices, mixed precision, multi-GPU, checkpoints)."""
    return _load("accelerate", "refiner training")
