"""Cross-camera attention: the spatial self-attention of each camera also attends to its two ring neighbours.

The cameras of any rig form a ring ordered by the azimuth of their optical axes (for nuScenes: CAM_FRONT,
CAM_FRONT_RIGHT, CAM_BACK_RIGHT, CAM_BACK, CAM_BACK_LEFT, CAM_FRONT_LEFT), so neighbouring cameras overlap at
their image edges. The UNet sees the
cameras as separate videos: its spatial attention layers get tokens of shape (batch * cameras * frames, tokens,
dim). :class:`CrossCameraAttnProcessor` regroups them per frame and lets the queries of camera ``c`` attend to the
keys and values of ``c`` and of its two neighbours (same frame), so information moves one camera per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stag_sim.camera import CAMERA_NAMES
from stag_sim.errors import RendererError
from stag_sim.refiner import backend

torch = backend.torch()


#: [rad] cameras farther apart than this in azimuth are not ring neighbours (their views barely overlap).
MAX_NEIGHBOUR_GAP = np.radians(100.0)


def camera_azimuths(cameras) -> np.ndarray:
    """(C,) optical-axis azimuths [rad] (0 = forward, +pi/2 = left) of ``cameras``: a mapping name -> azimuth
    (e.g. ``dict(zip(rig.names, rig.azimuths))``), or names of the nuScenes rig (their nominal azimuths)."""
    if isinstance(cameras, dict):
        return np.array([float(cameras[c]) for c in cameras], np.float64)
    from stag_sim.camera import nuscenes_like_rig

    nominal = dict(zip(CAMERA_NAMES, nuscenes_like_rig(16, 16).azimuths))
    unknown = [c for c in cameras if c not in nominal]
    if unknown:
        raise RendererError(f"cameras: {unknown} are not nuScenes cameras; give their azimuths "
                            "(cameras={name: azimuth [rad]}, e.g. from the scene's rig) so their ring neighbours are known")
    return np.array([nominal[c] for c in cameras], np.float64)


def ring_neighbours(cameras=CAMERA_NAMES) -> np.ndarray:
    """(C, 2) int64 index of the (left, right) ring neighbour of each camera among ``cameras``.

    The cameras are ordered around the car by azimuth (:func:`camera_azimuths`); the next camera on each side is
    a neighbour when it is within :data:`MAX_NEIGHBOUR_GAP` in azimuth, else (a gap in the rig, or a subset of it)
    the camera itself stands in: its own keys then appear twice, the same as attending to itself alone with a
    log(2) bias.
    """
    az = camera_azimuths(cameras)
    n = len(az)
    order = np.argsort(-az, kind="stable")  # counter-clockwise from behind-left... to the right: one ring
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    out = np.empty((n, 2), np.int64)
    for i in range(n):
        for j, step in enumerate((-1, 1)):
            k = int(order[(rank[i] + step) % n])
            gap = abs((az[i] - az[k] + np.pi) % (2 * np.pi) - np.pi)
            out[i, j] = k if gap <= MAX_NEIGHBOUR_GAP else i
    return out


@dataclass
class CameraLayout:
    """How the UNet's batch is laid out, set by the pipeline before each UNet call (shared by all processors).

    Attributes:
        num_cameras: cameras per sample [-].
        num_frames: frames per video [-].
        neighbours: (num_cameras, 2) ring neighbour indices (see :func:`ring_neighbours`).
        enabled: False turns every processor into plain self-attention.
    """

    num_cameras: int = 1
    num_frames: int = 1
    neighbours: np.ndarray = field(default_factory=lambda: np.zeros((1, 2), np.int64))
    enabled: bool = True

    def set(self, cameras, num_frames: int) -> None:
        self.neighbours = ring_neighbours(cameras if isinstance(cameras, dict) else tuple(cameras))
        self.num_cameras = len(self.neighbours)
        self.num_frames = int(num_frames)


class CrossCameraAttnProcessor:
    """Attention processor for the spatial self-attention (``attn1``) layers of the UNet's transformer blocks.

    Same arithmetic as diffusers' ``AttnProcessor2_0`` when there is one camera (or ``layout.enabled`` is False);
    with C cameras the keys/values of each camera are the concatenation of its own tokens and its two neighbours'.
    """

    def __init__(self, layout: CameraLayout) -> None:
        self.layout = layout

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise RendererError("CrossCameraAttnProcessor: only for spatial self-attention on (batch, tokens, dim) inputs")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        bt, n, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        lay = self.layout
        c, f = lay.num_cameras, lay.num_frames
        if lay.enabled and c > 1:
            if bt % (c * f):
                raise RendererError(f"CrossCameraAttnProcessor: batch {bt} is not a multiple of cameras x frames = {c} x {f}")
            key, value = (self._with_neighbours(x, bt // (c * f), c, f) for x in (key, value))
        head_dim = key.shape[-1] // attn.heads
        query = query.view(bt, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.reshape(bt, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(bt, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(bt, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _with_neighbours(self, x, b: int, c: int, f: int):
        """(b*c*f, N, D) -> (b*c*f, 3N, D): own tokens, then the left and right neighbours' (same frame)."""
        n, d = x.shape[1:]
        v = x.view(b, c, f, n, d)
        nb = torch.as_tensor(self.layout.neighbours, device=x.device)
        parts = [v, v[:, nb[:, 0]], v[:, nb[:, 1]]]
        return torch.cat(parts, dim=3).reshape(b * c * f, 3 * n, d)


def spatial_self_attention_names(unet) -> list[str]:
    """Processor names of the UNet's spatial self-attention layers (not temporal, not cross-attention)."""
    return [k for k in unet.attn_processors
            if ".transformer_blocks." in k and "temporal_transformer_blocks" not in k and k.endswith("attn1.processor")]


def install_cross_camera(unet, layout: CameraLayout) -> int:
    """Put a :class:`CrossCameraAttnProcessor` on every spatial self-attention layer; returns how many."""
    names = spatial_self_attention_names(unet)
    proc = CrossCameraAttnProcessor(layout)
    procs = {k: (proc if k in names else v) for k, v in unet.attn_processors.items()}
    unet.set_attn_processor(procs)
    return len(names)
