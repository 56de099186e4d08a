"""StagRefinerPipeline: a diffusers pipeline that turns sparse point renders of the six cameras into realistic frames.

Assembled from injected parts (diffusers style): a ``UNetSpatioTemporalConditionModel`` whose input per frame is
[noisy latents, VAE latents of the point render, validity mask]; a VAE (``AutoencoderKL`` per frame or SVD's
``AutoencoderKLTemporalDecoder``); a CLIP image encoder for the reference (logged) frame of each camera, fed to the
UNet's cross-attention; a v-prediction scheduler (DDIM, zero terminal SNR, trailing spacing: few steps). The cameras
are separate videos in the UNet's batch; a :class:`~stag_sim.refiner.attention.CrossCameraAttnProcessor` on every
spatial self-attention layer lets each camera attend to its ring neighbours, so the six views stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stag_sim.camera import CAMERA_NAMES
from stag_sim.errors import RendererError
from stag_sim.refiner import backend
from stag_sim.refiner.attention import CameraLayout, install_cross_camera

torch = backend.torch()
diffusers = backend.diffusers()

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class StagRefinerOutput(diffusers.utils.BaseOutput):
    """Attributes:
        frames: (B, F, C, H, W, 3) uint8 (``output_type="np"``) or float in [0, 1] torch tensor (``"pt"``); no
            leading B when the input had none.
    """

    frames: object


class StagRefinerPipeline(diffusers.DiffusionPipeline):
    """Conditional video diffusion over (frames x cameras) point renders.

    Args:
        unet: ``UNetSpatioTemporalConditionModel`` with ``in_channels`` = 2 x latent channels (+1 for the mask).
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder``.
        image_encoder: ``transformers.CLIPVisionModelWithProjection``; its ``projection_dim`` must equal the UNet's
            ``cross_attention_dim``.
        scheduler: a diffusers scheduler (trained with v-prediction; DDIM with trailing spacing by default).
        residual_decode: output = render + (D(z) - D(E(render))) instead of D(z): the VAE's reconstruction error
            cancels between the two decodes, so latents equal to the render's give back the render exactly and the
            model's latents act as a correction (saved with the model, in model_index.json).
        composite: keep the render's exact values at valid (mask) pixels; refine only the holes.
        plain_in_holes: with ``residual_decode``, use it at valid pixels only and the plain decode D(z) in the
            holes: there the render holds a fill, not an observation, so anchoring the output to it gains nothing.
        predict_residual: the diffusion runs over the *difference* of the target's and the render's latents (the
            sample is added to the render's latents before decoding), so a model that predicts zero gives back the
            render; must match how the UNet was trained (``train-refiner`` sets it).
        sample_scale: the diffusion sample is ``sample_scale`` x (the target's latents, or their difference from
            the render's): ``train-refiner`` sets it to 1 / std of those latents over its training examples so the
            sample has unit variance against unit noise (as Stable Diffusion's VAE scaling factor does; residual
            latents are far smaller than the latents themselves). Saved with the model.
    """

    model_cpu_offload_seq = "image_encoder->unet->vae"

    def __init__(self, unet, vae, image_encoder, scheduler, residual_decode: bool = True,
                 composite: bool = False, predict_residual: bool = False, sample_scale: float = 1.0,
                 plain_in_holes: bool = False) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, image_encoder=image_encoder, scheduler=scheduler)
        self.register_to_config(residual_decode=bool(residual_decode), composite=bool(composite),
                                predict_residual=bool(predict_residual), sample_scale=float(sample_scale),
                                plain_in_holes=bool(plain_in_holes))
        if not np.isfinite(self.config.sample_scale) or self.config.sample_scale <= 0:
            raise RendererError(f"refiner sample_scale: must be a positive number, got {sample_scale}")
        check_components(unet, vae, image_encoder)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.camera_layout = CameraLayout()
        self.num_cross_camera_layers = install_cross_camera(unet, self.camera_layout)

    @property
    def uses_mask(self) -> bool:
        return self.unet.config.in_channels == 2 * self.vae.config.latent_channels + 1

    # --- inputs -------------------------------------------------------------------------------------------------

    def prepare_inputs(self, renders, masks=None, reference=None, cameras=None):
        """Validate and convert: -> (video (B, F, C, H, W, 3) float [0, 1], masks (B, F, C, H, W) float,
        reference (B, C, h, w, 3) float, cameras, batched)."""
        video = _to_float_image(renders, "renders")
        batched = video.ndim == 6
        if video.ndim == 5:
            video = video[None]
        if video.ndim != 6 or video.shape[-1] != 3:
            raise RendererError(f"renders: expected (F, C, H, W, 3) or (B, F, C, H, W, 3), got {tuple(np.shape(renders))}")
        b, f, c, h, w, _ = video.shape
        m = self.vae_scale_factor
        if h % m or w % m:
            raise RendererError(f"renders: image size {h}x{w} must be a multiple of the VAE's {m} px downsampling")
        if masks is None:
            masks = torch.ones((b, f, c, h, w))
        else:
            masks = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks).float()
            if masks.ndim == 4:
                masks = masks[None]
            if tuple(masks.shape) != (b, f, c, h, w):
                raise RendererError(f"masks: expected {(b, f, c, h, w)} (one per render pixel), got {tuple(masks.shape)}")
        if reference is None:
            ref = video[:, 0]
        else:
            ref = _to_float_image(reference, "reference")
            if ref.ndim == 4:
                ref = ref[None]
            if ref.ndim != 5 or ref.shape[:2] != (b, c) or ref.shape[-1] != 3:
                raise RendererError(f"reference: expected ({c}, h, w, 3) or ({b}, {c}, h, w, 3) (one per camera), "
                                    f"got {tuple(ref.shape)}")
        if cameras is None:
            if c not in (1, len(CAMERA_NAMES)):
                raise RendererError(f"cameras: {c} cameras given; name them (cameras=...) so their ring neighbours are known")
            cameras = CAMERA_NAMES[:c]
        if len(cameras) != c:
            raise RendererError(f"cameras: got {len(cameras)} names for {c} cameras")
        return video, masks, ref, (dict(cameras) if isinstance(cameras, dict) else tuple(cameras)), batched

    # --- model pieces (shared with training) ----------------------------------------------------------------------

    def encode_condition(self, video, masks, chunk: int = 16):
        """(B, F, C, H, W, 3) float [0, 1] renders, (B, F, C, H, W) masks -> (B*C, F, ch, h, w) UNet condition."""
        b, f, c, h, w, _ = video.shape
        x = video.permute(0, 2, 1, 5, 3, 4).reshape(b * c * f, 3, h, w)
        lat = self.encode_images(x, chunk)
        lat = lat.view(b * c, f, *lat.shape[1:])
        if not self.uses_mask:
            return lat
        mk = masks.permute(0, 2, 1, 3, 4).reshape(b * c * f, 1, h, w).to(lat.device, lat.dtype)
        mk = torch.nn.functional.interpolate(mk, size=lat.shape[-2:], mode="area")
        return torch.cat([lat, mk.view(b * c, f, 1, *lat.shape[-2:])], dim=2)

    def encode_images(self, x, chunk: int = 16, sample_generator=None):
        """(N, 3, H, W) float [0, 1] -> (N, latent, h, w) scaled latents (the mode; a sample with a generator)."""
        vae = self.vae
        x = x.to(vae.device, vae.dtype) * 2.0 - 1.0
        outs = []
        for i in range(0, len(x), chunk):
            dist = vae.encode(x[i:i + chunk]).latent_dist
            outs.append(dist.sample(sample_generator) if sample_generator is not None else dist.mode())
        return torch.cat(outs) * vae.config.scaling_factor

    def decode_latents(self, latents, chunk: int = 16):
        """(B*C, F, latent, h, w) -> (B*C, F, 3, H, W) float [0, 1]."""
        n, f = latents.shape[:2]
        z = latents.flatten(0, 1) / self.vae.config.scaling_factor
        temporal = isinstance(self.vae, diffusers.AutoencoderKLTemporalDecoder)
        outs = []
        step = f * max(1, chunk // f) if temporal else chunk
        for i in range(0, len(z), step):
            zz = z[i:i + step].to(self.vae.dtype)
            kw = {"num_frames": len(zz) if len(zz) < f else f} if temporal else {}
            outs.append(self.vae.decode(zz, **kw).sample)
        img = ((torch.cat(outs).float() + 1.0) / 2.0).clamp(0, 1)
        return img.view(n, f, *img.shape[1:])

    def embed_reference(self, ref):
        """(B, C, h, w, 3) float [0, 1] -> (B*C, 1, D) CLIP image embeddings."""
        enc = self.image_encoder
        b, c = ref.shape[:2]
        x = ref.reshape(b * c, *ref.shape[2:]).permute(0, 3, 1, 2).to(enc.device, torch.float32)
        s = enc.config.image_size
        x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(enc.dtype)
        return enc(pixel_values=x).image_embeds.unsqueeze(1)

    def time_ids(self, n: int, fps: float, motion_bucket_id: float, noise_aug_strength: float):
        """(n, 3) SVD micro-conditioning (fps - 1, motion bucket, noise augmentation)."""
        ids = torch.tensor([[fps - 1.0, motion_bucket_id, noise_aug_strength]], device=self.unet.device)
        return ids.to(self.unet.dtype).repeat(n, 1)

    def predict(self, latents, t, condition, embeddings, time_ids, cameras):
        """One UNet call: latents (B*C, F, latent, h, w) -> v-prediction of the same shape."""
        self.camera_layout.set(cameras, latents.shape[1])
        x = torch.cat([latents, condition.to(latents.dtype)], dim=2).to(self.unet.dtype)
        return self.unet(x, t, encoder_hidden_states=embeddings.to(self.unet.dtype), added_time_ids=time_ids).sample

    # --- sampling ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, renders, masks=None, reference=None, *, cameras=None, num_inference_steps: int = 4,
                 generator=None, fps: float = 10.0, motion_bucket_id: float = 127.0, noise_aug_strength: float = 0.02,
                 output_type: str = "np", return_dict: bool = True, progress: bool = False,
                 residual_decode: bool | None = None, composite: bool | None = None,
                 plain_in_holes: bool | None = None):
        """Refine point renders.

        Args:
            renders: (F, C, H, W, 3) or (B, F, C, H, W, 3) uint8, or float in [0, 1] (numpy or torch).
            masks: validity of each render pixel, (F, C, H, W) / (B, F, C, H, W) bool (None: all valid).
            reference: the logged frame of each camera, (C, h, w, 3) / (B, C, h, w, 3) (None: the first render).
            cameras: camera names in the C axis (default: the six in rig order; needed for other counts).
            num_inference_steps: sampler steps (1-4 is the intended range).
            generator: ``torch.Generator`` for the initial noise (same seed -> same frames).
            fps, motion_bucket_id, noise_aug_strength: SVD micro-conditioning.
            output_type: ``np`` (uint8 HWC) or ``pt`` (float [0, 1] tensor, same layout).
            residual_decode, composite, plain_in_holes: override the saved options (None: ``self.config``'s).

        Returns:
            :class:`StagRefinerOutput` (or a 1-tuple with ``return_dict=False``).
        """
        if output_type not in ("np", "pt"):
            raise RendererError(f"output_type: {output_type!r} is not one of np, pt")
        if int(num_inference_steps) < 1:
            raise RendererError(f"num_inference_steps: must be >= 1, got {num_inference_steps}")
        video, masks, ref, cameras, batched = self.prepare_inputs(renders, masks, reference, cameras)
        b, f, c, h, w, _ = video.shape
        device = self._execution_device
        cond = self.encode_condition(video, masks)
        emb = self.embed_reference(ref)
        ids = self.time_ids(b * c, fps, motion_bucket_id, noise_aug_strength)
        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        shape = (b * c, f, self.vae.config.latent_channels, h // self.vae_scale_factor, w // self.vae_scale_factor)
        latents = diffusers.utils.torch_utils.randn_tensor(shape, generator=generator, device=device,
                                                          dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            x = self.scheduler.scale_model_input(latents, t)
            v = self.predict(x, t, cond, emb, ids, cameras)
            latents = self.scheduler.step(v, t, latents).prev_sample
        residual = self.config.residual_decode if residual_decode is None else residual_decode
        comp = self.config.composite if composite is None else composite
        hybrid = self.config.plain_in_holes if plain_in_holes is None else plain_in_holes
        render_latents = cond[:, :, :self.vae.config.latent_channels]
        latents = latents / self.config.sample_scale
        if self.config.predict_residual:
            latents = latents + render_latents.to(latents.dtype)
        frames = self.finish(latents, video, masks, render_latents, residual, comp, hybrid)
        if not batched:
            frames = frames[0]
        if output_type == "np":
            frames = (frames * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
        self.maybe_free_model_hooks()
        return StagRefinerOutput(frames=frames) if return_dict else (frames,)


    def finish(self, latents, video, masks, render_latents, residual: bool, composite: bool,
               plain_in_holes: bool = False):
        """Sampled latents (B*C, F, ...) -> (B, F, C, H, W, 3) float [0, 1] frames (plain or residual decode, the
        plain one in the holes with ``plain_in_holes``, optional composite of the render's valid pixels)."""
        b, f, c, h, w, _ = video.shape
        out = self.decode_latents(latents).view(b, c, f, 3, h, w).permute(0, 2, 1, 4, 5, 3)
        valid = masks.to(out.device)[..., None] > 0.5
        if residual:
            rec = self.decode_latents(render_latents.to(latents.dtype)).view(b, c, f, 3, h, w).permute(0, 2, 1, 4, 5, 3)
            res = (video.to(out.device) + out - rec).clamp(0, 1)
            out = torch.where(valid, res, out) if plain_in_holes else res
        if composite:
            out = torch.where(valid, video.to(out.device, out.dtype), out)
        return out


def check_components(unet, vae, image_encoder) -> None:
    """Raise :class:`RendererError` when the parts do not fit together (channels, embedding width)."""
    lc = vae.config.latent_channels
    cin = unet.config.in_channels
    if cin not in (2 * lc, 2 * lc + 1):
        raise RendererError(f"refiner unet: {cin} input channels, expected {2 * lc} (noisy + render latents) or "
                            f"{2 * lc + 1} (+ validity mask) for a VAE with {lc} latent channels")
    if unet.config.out_channels != lc:
        raise RendererError(f"refiner unet: {unet.config.out_channels} output channels, expected the VAE's {lc} latent channels")
    proj = image_encoder.config.projection_dim
    cross = unet.config.cross_attention_dim
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    if proj != cross:
        raise RendererError(f"refiner image_encoder: projection_dim {proj} != unet cross_attention_dim {cross}")


def _to_float_image(x, name: str):
    """uint8 or float [0, 1] (numpy/torch) -> float32 tensor [0, 1]."""
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise RendererError(f"{name}: expected uint8 or float in [0, 1], got {t.dtype}")
    t = t.float()
    if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
        raise RendererError(f"{name}: float images must be finite and in [0, 1]")
    return t
