"""The one place the refiner imports its heavy dependencies (torch, diffusers, transformers, accelerate), lazily.

Every other refiner module gets the modules from these functions, so ``import stag_sim.refiner`` stays light and a
missing extra is reported as :class:`~stag_sim.errors.MissingExtraError` naming ``pip install 'stag-sim[diffusion]'``.
"""

from __future__ import annotations

from stag_sim.errors import MissingExtraError

EXTRA = "diffusion"


def torch():
    """The torch module (a core dependency, imported here for the refiner)."""
    try:
        import torch as _torch
    except ImportError:
        raise MissingExtraError("torch", EXTRA, "the diffusion refiner") from None
    return _torch


def diffusers():
    """The diffusers module."""
    try:
        import diffusers as _diffusers
    except ImportError:
        raise MissingExtraError("diffusers", EXTRA, "the diffusion refiner") from None
    return _diffusers


def transformers():
    """The transformers module (the CLIP image encoder of the reference frame)."""
    try:
        import transformers as _transformers
    except ImportError:
        raise MissingExtraError("transformers", EXTRA, "the refiner's image encoder") from None
    return _transformers


def accelerate():
    """The accelerate module (refiner training: devices, mixed precision, multi-GPU, checkpoints)."""
    try:
        import accelerate as _accelerate
    except ImportError:
        raise MissingExtraError("accelerate", EXTRA, "refiner training") from None
    return _accelerate
