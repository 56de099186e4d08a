"""``stag-sim refiner init`` and ``stag-sim train-refiner`` (registered on the main CLI by stag_sim/cli.py).

Light to import: click only; the refiner's heavy modules load inside the commands.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from stag_sim.cli_errors import one_line_errors
from stag_sim.errors import RefinerError, ValidationError


@click.group()
def refiner() -> None:
    """The diffusion refiner (needs the extra: pip install 'stag-sim[diffusion]')."""


@refiner.command("init")
@click.option("--size", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True,
              help="tiny: the test config (seconds on CPU); full: the SVD-sized architecture (~2 B parameters).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write.")
@click.option("--from-svd", "from_svd", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Initialise from a local diffusers-format Stable Video Diffusion checkpoint (unet/, vae/, image_encoder/).")
@click.option("--no-mask", is_flag=True, help="No validity-mask input channel (8 UNet input channels, as SVD).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--overwrite", is_flag=True, help="Replace an existing directory at --out.")
@one_line_errors
def init_cmd(size: str, out: Path, from_svd: Path | None, no_mask: bool, seed: int, overwrite: bool) -> None:
    """Write an untrained (or SVD-initialised) refiner pipeline to --out."""
    from stag_sim.refiner.components import build_components, components_from_svd
    from stag_sim.refiner.pipeline import StagRefinerPipeline

    if out.exists() and not overwrite:
        raise RefinerError(f"--out {out}: already exists (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    parts = components_from_svd(from_svd, not no_mask) if from_svd else build_components(size, seed, not no_mask)
    pipe = StagRefinerPipeline(**parts)
    save_pipeline(pipe, out)
    n = sum(p.numel() for p in pipe.unet.parameters())
    click.echo(f"wrote {out} ({'SVD-initialised' if from_svd else size}, UNet {n / 1e6:.1f} M parameters, "
               f"{pipe.unet.config.in_channels} input channels) in {time.perf_counter() - t0:.1f} s")


def save_pipeline(pipe, out: Path) -> Path:
    """Save atomically: the directory appears complete or not at all."""
    from stag_sim.fsutil import atomic_directory

    with atomic_directory(out) as tmp:
        pipe.save_pretrained(tmp)
    return out


@click.command("train-refiner")
@click.option("--scenes", "scenes", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Scene cache directories (repeat the option for several).")
@click.option("--init", "init_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Refiner directory to start from (stag-sim refiner init); default: an untrained --size model.")
@click.option("--size", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True,
              help="Architecture of the untrained start when --init is not given.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory: the trained pipeline, checkpoints/, metrics.json.")
@click.option("--steps", type=int, default=300, show_default=True, help="UNet optimisation steps.")
@click.option("--vae-steps", type=int, default=0, show_default=True,
              help="Autoencoder warm-up steps first (for the untrained tiny VAE; 0 for a pretrained one).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--holdout-every", type=int, default=4, show_default=True,
              help="Frames left out of the point cloud (their renders are the training conditions).")
@click.option("--shifts", default="0,1", show_default=True,
              help="Lateral rig shifts [m] (non-zero ones need a synthetic scene, whose oracle gives the target).")
@click.option("--checkpoint-every", type=int, default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out/checkpoints.")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default="no", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--residual-decode/--plain-decode", default=True, show_default=True,
              help="Saved decode: render + D(z) - D(E(render)) (the VAE's error cancels), or plain D(z).")
@click.option("--composite", is_flag=True, help="Saved option: keep the render's valid pixels, refine only the holes.")
@click.option("--plain-in-holes/--residual-in-holes", default=True, show_default=True,
              help="Saved option, with --residual-decode: the plain decode D(z) in the holes (the render only holds a "
                   "fill there).")
@click.option("--predict-residual/--predict-target", default=True, show_default=True,
              help="Diffuse target-minus-render latents (a zero prediction gives back the render) or the target's.")
@click.option("--hole-weight", type=float, default=0.0, show_default=True,
              help="Extra loss weight on the render's holes (a latent pixel weighs 1 + W x its hole fraction).")
@click.option("--eval-steps", type=int, default=1, show_default=True,
              help="Sampler steps of the final PSNR evaluation.")
@click.option("--window", type=int, default=1, show_default=True,
              help="Consecutive held-out frames per training example (trains the temporal layers).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True)
@one_line_errors
def train_refiner_cmd(scenes, init_dir, size, out, steps, vae_steps, batch_size, lr, holdout_every, shifts, checkpoint_every,
                      resume, mixed_precision, seed, residual_decode, composite, predict_residual, hole_weight,
                      eval_steps, window, lr_schedule, plain_in_holes) -> None:
    """Fine-tune the refiner on scene caches (point renders from clouds without the frame -> logged/oracle frames)."""
    from stag_sim.refiner.train import TrainConfig, train_refiner

    try:
        shift_list = tuple(float(s) for s in shifts.split(",") if s.strip())
    except ValueError:
        raise ValidationError(f"--shifts: expected comma-separated metres, got {shifts!r}") from None
    cfg = TrainConfig(steps=steps, vae_steps=vae_steps, batch_size=batch_size, lr=lr, holdout_every=holdout_every,
                      shifts=shift_list, checkpoint_every=checkpoint_every, mixed_precision=mixed_precision, seed=seed,
                      residual_decode=residual_decode, composite=composite, predict_residual=predict_residual,
                      hole_weight=hole_weight, eval_steps=eval_steps, window=window, lr_schedule=lr_schedule,
                      plain_in_holes=plain_in_holes)
    metrics = train_refiner(list(scenes), init_dir, out, cfg, resume=resume, progress=True, size=size)
    click.echo(format_metrics(metrics))


def format_metrics(m: dict) -> str:
    lines = [f"validation loss: {m['val_loss_before']:.4f} -> {m['val_loss_after']:.4f}"]
    if "psnr_holes_refined" in m:
        lines.append(f"PSNR in holes vs target: point render {m['psnr_holes_point']:.2f} dB, refined "
                     f"{m['psnr_holes_refined']:.2f} dB; whole image: {m['psnr_point']:.2f} -> {m['psnr_refined']:.2f} dB")
        lines.append("  every decode (whole image / holes): " + ", ".join(
            f"{k}: {m[f'psnr_{k}']:.2f} / {m[f'psnr_holes_{k}']:.2f} dB"
            for k in ("plain", "residual", "hybrid", "plain_composite", "residual_composite") if f"psnr_holes_{k}" in m))
    lines.append(f"wrote {m['out']}")
    return "\n".join(lines)
