"""Refiner components from configs: the tiny test config, the full (SVD-sized) architecture, or an SVD checkpoint.

The UNet's input per frame is [noisy latents (4), VAE latents of the point render (4), validity mask (1)] = 9
channels; SVD's UNet takes 8 (noisy + image latents), so initialising from SVD widens ``conv_in`` by one zero-weight
channel (the pretrained behaviour is unchanged until training uses the mask).
"""

from __future__ import annotations

from pathlib import Path

from stag_sim.errors import RefinerError, ValidationError
from stag_sim.refiner import backend

SIZES = ("tiny", "full")
LATENT_CHANNELS = 4

# fps (camera rate), motion bucket, noise augmentation: SVD's micro-conditioning, 3 ids
NUM_TIME_IDS = 3


def unet_config(size: str, mask_channel: bool = True) -> dict:
    """UNetSpatioTemporalConditionModel arguments for ``size``."""
    cin = 2 * LATENT_CHANNELS + int(mask_channel)
    if size == "tiny":
        return dict(sample_size=16, in_channels=cin, out_channels=LATENT_CHANNELS,
                    # attention at the half-resolution level only: cheap on CPU, still one cross-camera layer each way
                    down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
                    up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
                    block_out_channels=(32, 64), addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=8 * NUM_TIME_IDS, layers_per_block=1,
                    cross_attention_dim=32, num_attention_heads=(2, 4), num_frames=4)
    if size == "full":  # Stable Video Diffusion (img2vid) UNet
        return dict(sample_size=96, in_channels=cin, out_channels=LATENT_CHANNELS,
                    block_out_channels=(320, 640, 1280, 1280), addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=256 * NUM_TIME_IDS, layers_per_block=2,
                    cross_attention_dim=1024, num_attention_heads=(5, 10, 20, 20), num_frames=25)
    raise ValidationError(f"size: {size!r} is not one of {', '.join(SIZES)}")


def vae_config(size: str) -> dict:
    """AutoencoderKL arguments (tiny: 2x downsampling) / AutoencoderKLTemporalDecoder (full: SVD's, 8x)."""
    if size == "tiny":
        return dict(in_channels=3, out_channels=3, block_out_channels=(32, 32),
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    latent_channels=LATENT_CHANNELS, layers_per_block=1, norm_num_groups=32, sample_size=32)
    if size == "full":
        return dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, latent_channels=LATENT_CHANNELS,
                    layers_per_block=2, sample_size=768, scaling_factor=0.18215)
    raise ValidationError(f"size: {size!r} is not one of {', '.join(SIZES)}")


def image_encoder_config(size: str) -> dict:
    """CLIPVisionConfig arguments (full: OpenCLIP ViT-H/14 as in SVD)."""
    if size == "tiny":
        return dict(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, image_size=32, patch_size=8, num_channels=3)
    if size == "full":
        return dict(hidden_size=1280, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16,
                    intermediate_size=5120, image_size=224, patch_size=14, num_channels=3, hidden_act="gelu")
    raise ValidationError(f"size: {size!r} is not one of {', '.join(SIZES)}")


def scheduler_config() -> dict:
    """DDIM, v-prediction, zero terminal SNR, trailing spacing: good at 1-4 steps."""
    return dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                clip_sample=False, set_alpha_to_one=True)


def build_components(size: str = "tiny", seed: int = 0, mask_channel: bool = True) -> dict:
    """Untrained components (random weights from ``seed``) for :class:`StagRefinerPipeline`."""
    torch, diffusers, transformers = backend.torch(), backend.diffusers(), backend.transformers()
    torch.manual_seed(seed)  # diffusers/transformers initialise weights from the global torch RNG
    unet = diffusers.UNetSpatioTemporalConditionModel(**unet_config(size, mask_channel))
    vae_cls = diffusers.AutoencoderKL if size == "tiny" else diffusers.AutoencoderKLTemporalDecoder
    vae = vae_cls(**vae_config(size))
    enc = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**image_encoder_config(size)))
    sched = diffusers.DDIMScheduler(**scheduler_config())
    return {"unet": unet, "vae": vae, "image_encoder": enc, "scheduler": sched}


def components_from_svd(svd_dir: str | Path, mask_channel: bool = True) -> dict:
    """Components from a local diffusers-format Stable Video Diffusion checkpoint (unet/, vae/, image_encoder/).

    The scheduler is replaced by the few-step DDIM of :func:`scheduler_config`; with ``mask_channel`` the UNet's
    ``conv_in`` grows from 8 to 9 input channels (the new one zero-initialised).
    """
    diffusers, transformers = backend.diffusers(), backend.transformers()
    root = Path(svd_dir)
    for sub in ("unet", "vae", "image_encoder"):
        if not (root / sub / "config.json").is_file():
            raise RefinerError(f"--from-svd {root}: no {sub}/config.json; expected a diffusers-format SVD checkpoint "
                               "(unet/, vae/, image_encoder/ folders)")
    unet = diffusers.UNetSpatioTemporalConditionModel.from_pretrained(root / "unet")
    if unet.config.in_channels != 2 * LATENT_CHANNELS:
        raise RefinerError(f"--from-svd {root}: unet has {unet.config.in_channels} input channels, expected "
                           f"{2 * LATENT_CHANNELS} (noisy + image latents)")
    if mask_channel:
        unet = widen_conv_in(unet, 2 * LATENT_CHANNELS + 1)
    vae = diffusers.AutoencoderKLTemporalDecoder.from_pretrained(root / "vae")
    enc = transformers.CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder")
    return {"unet": unet, "vae": vae, "image_encoder": enc, "scheduler": diffusers.DDIMScheduler(**scheduler_config())}


def widen_conv_in(unet, in_channels: int):
    """A copy of ``unet`` whose ``conv_in`` takes ``in_channels`` (extra input channels start at zero weight)."""
    torch, diffusers = backend.torch(), backend.diffusers()
    old = unet.conv_in
    cfg = dict(unet.config)
    cfg["in_channels"] = in_channels
    new_unet = diffusers.UNetSpatioTemporalConditionModel.from_config(cfg)
    state = unet.state_dict()
    w = torch.zeros((old.out_channels, in_channels) + tuple(old.kernel_size), dtype=old.weight.dtype)
    w[:, :old.in_channels] = old.weight.detach()
    state["conv_in.weight"] = w
    new_unet.load_state_dict(state)
    return new_unet
