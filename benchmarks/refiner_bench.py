"""Refiner figures: seconds per 6-camera env step (one frame) at 256x448 and 576x1024, for 1 / 4 / 25 sampler steps.

Prints, from one run on one machine (random weights: speed does not depend on them):

* per-component times of the refiner (CLIP image encoder, VAE encode, one UNet forward, VAE decode) for 6 cameras
  x 1 frame, median of ``--repeat`` runs, and seconds per refined step for 1 / 4 / 25 sampler steps computed as
  ``encoder + vae_encode + steps x unet + n x vae_decode`` (the pipeline runs exactly these, plus a scheduler update
  that costs microseconds; n = 2 with the residual decode, which also decodes the render's latents, else 1);
* on CUDA: also the timed end-to-end pipeline call (to check the sum), and env-step rates in keyframe mode
  (refine every K-th step, forward-warp in between);
* the reference in the same run: one point render of the 6 cameras is *not* included (see render_bench.py).

    python benchmarks/refiner_bench.py --size tiny                     # CPU, the tiny test config
    python benchmarks/refiner_bench.py --size full --resolutions 256x448 --repeat 1   # CPU, full architecture
    python benchmarks/refiner_bench.py --size full --device cuda --dtype float16      # one GPU

On CPU the full architecture at 576x1024 needs tens of GB for the cross-camera attention of the first UNet
level; pass ``--resolutions`` to skip it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from stag_sim.refiner import backend
from stag_sim.refiner.components import build_components
from stag_sim.refiner.pipeline import StagRefinerPipeline
from stag_sim.refiner.renderer import forward_warp, resolve_device

SAMPLER_STEPS = (1, 4, 25)


def timed(fn, repeat: int, sync) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--resolutions", default="256x448,576x1024", help="HxW list")
    ap.add_argument("--frames", type=int, default=1, help="frames per refinement (window)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--refine-every", type=int, default=4, help="K of the keyframe-mode figure")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    torch = backend.torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, dt = resolve_device(args.device, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    pipe = StagRefinerPipeline(**build_components(args.size)).to(dev, dt)
    pipe.set_progress_bar_config(disable=True)
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    print(f"refiner {args.size}: UNet {n_unet / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s; "
          f"device {dev} {dt}, torch threads {torch.get_num_threads()}, {args.frames} frame(s) x 6 cameras")
    for res in args.resolutions.split(","):
        h, w = (int(v) for v in res.lower().split("x"))
        rng = np.random.default_rng(0)
        renders = rng.integers(0, 256, (args.frames, 6, h, w, 3), dtype=np.uint8)
        masks = rng.random((args.frames, 6, h, w)) > 0.2
        try:
            with torch.no_grad():
                video, mk, ref, cams, _ = pipe.prepare_inputs(renders, masks)
                t_enc = timed(lambda: pipe.embed_reference(ref), args.repeat, sync)
                cond = pipe.encode_condition(video, mk)
                t_vae_e = timed(lambda: pipe.encode_condition(video, mk), args.repeat, sync)
                emb = pipe.embed_reference(ref)
                ids = pipe.time_ids(6, 10.0, 127.0, 0.02)
                lat = torch.randn((6, args.frames) + tuple(cond.shape[2:]), device=dev, dtype=dt)[:, :, :4]
                t = pipe.scheduler.timesteps[0] if len(pipe.scheduler.timesteps) else torch.tensor(999)
                pipe.scheduler.set_timesteps(1, device=dev)
                t = pipe.scheduler.timesteps[0]
                t_unet = timed(lambda: pipe.predict(lat, t, cond, emb, ids, cams), args.repeat, sync)
                t_dec = timed(lambda: pipe.decode_latents(lat), args.repeat, sync)
        except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
            print(f"{h}x{w}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        print(f"{h}x{w}: image encoder {t_enc:.3f} s, VAE encode {t_vae_e:.3f} s, UNet forward {t_unet:.3f} s, "
              f"VAE decode {t_dec:.3f} s (medians of {args.repeat})")
        warp = timed(lambda: [forward_warp(renders[0, c], np.full((h, w), 10.0, np.float32), np.diag([w, w, 1.0]),
                                           np.eye(4), np.diag([w, w, 1.0]), np.eye(4)) for c in range(6)], 1, sync)
        for steps in SAMPLER_STEPS:
            per = t_enc + t_vae_e + steps * t_unet + (2 if pipe.config.residual_decode else 1) * t_dec
            key = (per + (args.refine_every - 1) * warp) / args.refine_every
            line = (f"  {steps:2d} sampler steps: {per:8.3f} s per refined 6-camera step ({1 / per:6.2f} Hz); keyframe "
                    f"mode K={args.refine_every}: {key:8.3f} s per env step ({1 / key:6.2f} Hz, warp {warp:.3f} s)")
            if dev.type == "cuda":
                g = torch.Generator(device=dev)
                e2e = timed(lambda: pipe(renders, masks, num_inference_steps=steps, generator=g.manual_seed(0)),
                            args.repeat, sync)
                line += f"; end-to-end call {e2e:.3f} s"
            print(line)


if __name__ == "__main__":
    main()
