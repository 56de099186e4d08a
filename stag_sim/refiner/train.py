"""Fine-tune the refiner on scene caches (``stag-sim train-refiner``).

Examples: for held-out frames (left out of the 4D point cloud, as the fidelity report does) the point render of
the six cameras is the *condition* and the logged frames are the *target*; on the synthetic town the rig is also
shifted sideways and the town's oracle renders the target at the shifted pose. The reference frame (CLIP
embedding) is the logged frame of the nearest frame kept in the cloud. The validation split is by frame (the last
``val_fraction`` of the held-out frames), so the shifts of one frame never straddle it.

Training: optional autoencoder warm-up of the VAE (only for the untrained tiny VAE), then the UNet with the
v-prediction loss under the pipeline's noise schedule; VAE and image encoder frozen (their outputs are computed
once). accelerate provides devices, mixed precision, multi-GPU (``accelerate launch``) and checkpoints;
``resume=True`` continues from the latest checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stag_sim.errors import RefinerError, ValidationError
from stag_sim.fsutil import atomic_open
from stag_sim.refiner import backend


@dataclass(frozen=True)
class TrainConfig:
    """Attributes:
        steps: UNet optimisation steps; vae_steps: autoencoder warm-up steps before them.
        batch_size: examples (6-camera frames) per step; lr, vae_lr: AdamW learning rates.
        holdout_every: hold out one frame in this many; shifts: lateral rig shifts [m] (non-zero: synthetic only).
        val_fraction: share of held-out frames used for validation; voxel_size: 4D scene voxel [m].
        checkpoint_every: steps between checkpoints; mixed_precision: ``no``, ``fp16``, ``bf16``.
        eval_steps: sampler steps of the final PSNR evaluation (1: the model's mean estimate, the best PSNR);
            seed: all randomness.
        predict_residual: train the UNet on target-minus-render latents (saved with the pipeline).
        hole_weight: extra training-loss weight on the render's holes: a latent pixel weighs
            ``1 + hole_weight * (1 - valid fraction)`` (needs the mask channel; the validation loss stays unweighted).
        lr_schedule: ``cosine`` (decay to zero over the steps, for the VAE warm-up and the UNet) or ``constant``.
        window: frames per UNet training example: that many consecutive held-out frames of one scene and shift, so
            the temporal layers see frame sequences (1: single frames).
        residual_decode, composite, plain_in_holes: the decode options saved with the trained pipeline (see
            :class:`~stag_sim.refiner.pipeline.StagRefinerPipeline`); the evaluation reports every combination.
    """

    steps: int = 300
    vae_steps: int = 0
    batch_size: int = 4
    lr: float = 1e-3
    vae_lr: float = 1e-3
    holdout_every: int = 4
    shifts: tuple[float, ...] = (0.0, 1.0)
    val_fraction: float = 0.25
    voxel_size: float = 0.2  # [m]
    checkpoint_every: int = 100
    mixed_precision: str = "no"
    eval_steps: int = 1
    seed: int = 0
    residual_decode: bool = True
    composite: bool = False
    predict_residual: bool = True
    hole_weight: float = 0.0
    plain_in_holes: bool = True
    lr_schedule: str = "cosine"
    window: int = 1

    def validate(self) -> "TrainConfig":
        for name in ("steps", "batch_size", "holdout_every", "checkpoint_every", "eval_steps", "window"):
            if int(getattr(self, name)) < 1:
                raise ValidationError(f"train-refiner {name}: must be >= 1, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValidationError(f"train-refiner lr_schedule: {self.lr_schedule!r} is not one of constant, cosine")
        if self.hole_weight < 0:
            raise ValidationError(f"train-refiner hole_weight: must be >= 0, got {self.hole_weight}")
        if self.vae_steps < 0:
            raise ValidationError(f"train-refiner vae_steps: must be >= 0, got {self.vae_steps}")
        if not 0 < self.val_fraction < 1:
            raise ValidationError(f"train-refiner val_fraction: must be in (0, 1), got {self.val_fraction}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValidationError(f"train-refiner mixed_precision: {self.mixed_precision!r} is not one of no, fp16, bf16")
        if not self.shifts:
            raise ValidationError("train-refiner shifts: give at least one (0 = the logged rig)")
        return self


def build_examples(log, cfg: TrainConfig, progress: bool = False) -> dict:
    """Conditions and targets of one scene: dict of (N, C, H, W, 3) uint8 ``cond``/``target``/``ref``,
    (N, C, H, W) bool ``valid``, (N,) int ``frame``, (N,) float ``shift`` [m]; ordered by frame, then shift."""
    from stag_sim.geometry import pose_xy_yaw
    from stag_sim.render.fidelity import held_out_frames, synthetic_oracle
    from stag_sim.render.renderer import PointRenderer
    from stag_sim.scene4d import Scene4DConfig, build_scene4d

    frames = held_out_frames(log.num_frames, cfg.holdout_every)
    if len(frames) < 2:
        raise RefinerError(f"{log.name}: {log.num_frames} frames give {len(frames)} held-out frame(s) at "
                           f"holdout_every={cfg.holdout_every}; need >= 2 (one for validation)")
    oracle = None
    if any(s != 0 for s in cfg.shifts):
        oracle = synthetic_oracle(log)  # RendererError naming the scene when it is not synthetic
    scene = build_scene4d(log, Scene4DConfig(voxel_size=cfg.voxel_size, exclude_frames=tuple(frames)), progress=progress)
    renderer = PointRenderer(scene)
    intr = [c.intrinsics for c in log.rig.cameras]
    kept = np.setdiff1d(np.arange(log.num_frames), frames)
    out = {k: [] for k in ("cond", "valid", "target", "ref", "frame", "shift")}
    for t in frames:
        time_s = float(log.timestamps_us[t] - log.timestamps_us[0]) * 1e-6
        t_ref = int(kept[np.argmin(np.abs(kept - t))])
        ref = np.stack([log.images[t_ref, c] for c in range(len(intr))])
        for s in cfg.shifts:
            poses = log.camera_ego_poses[t] @ pose_xy_yaw(0.0, s, 0.0) @ log.rig.T_ego_from_cameras
            res = renderer.render(poses, intr, scene.object_poses_at(time_s))
            if s == 0:
                target = np.stack([log.images[t, c] for c in range(len(intr))])
            else:
                target = np.stack([np.asarray(oracle.render(poses[c], intr[c], time_s)[0]) for c in range(len(intr))])
            for k, v in (("cond", res.rgb), ("valid", res.valid), ("target", target), ("ref", ref), ("frame", t),
                         ("shift", float(s))):
                out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}


# scene i's frame numbers are offset by i x this when several scenes train together
SCENE_FRAME_OFFSET = 1_000_000


def frame_windows(frame, shift, idx, window: int) -> np.ndarray:
    """(n, window) example indices from ``idx``: runs of ``window`` consecutive held-out frames of one scene
    (``frame // SCENE_FRAME_OFFSET``) and one rig shift, in time order."""
    idx = np.asarray(idx)
    scene = frame[idx] // SCENE_FRAME_OFFSET
    out = []
    for scene_shift in sorted(set(zip(scene, shift[idx]))):
        sel = idx[(scene == scene_shift[0]) & (shift[idx] == scene_shift[1])]
        sel = sel[np.argsort(frame[sel], kind="stable")]
        out.extend(sel[k:k + window] for k in range(len(sel) - window + 1))
    return np.asarray(out, dtype=np.int64).reshape(-1, window)


def _latest_checkpoint(ckpt_dir: Path) -> tuple[Path, int] | None:
    found = sorted((int(p.name.split("-")[1]), p) for p in ckpt_dir.glob("step-*") if (p / "done.json").is_file())
    return (found[-1][1], found[-1][0]) if found else None


def train_refiner(scenes, init_dir, out_dir, config: TrainConfig | None = None, *, resume: bool = False,
                  progress: bool = False, size: str = "tiny") -> dict:
    """Train; returns (and writes to ``out_dir/metrics.json``) the validation losses and PSNR figures.

    Args:
        scenes: scene cache directories, or :class:`~stag_sim.scene_log.SceneLog` objects.
        init_dir: refiner directory to start from; None: untrained components of ``size`` (seeded).
        out_dir: output: ``refiner/`` (the trained pipeline), ``checkpoints/``, ``metrics.json``.
    """
    from tqdm import tqdm

    from stag_sim.cache import load_scene_cache
    from stag_sim.refiner.cli import save_pipeline
    from stag_sim.refiner.renderer import load_refiner

    cfg = (config or TrainConfig()).validate()
    torch, accelerate, diffusers = backend.torch(), backend.accelerate(), backend.diffusers()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    latest = _latest_checkpoint(ckpt_dir) if resume else None
    if resume and latest is None:
        raise RefinerError(f"--resume: no finished checkpoint in {ckpt_dir}")
    if not resume and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise RefinerError(f"--out {out}: holds checkpoints already; pass --resume to continue, or another --out")
    acc = accelerate.Accelerator(mixed_precision=cfg.mixed_precision, project_dir=str(out))
    accelerate.utils.set_seed(cfg.seed)
    if init_dir is None:
        from stag_sim.refiner.components import build_components
        from stag_sim.refiner.pipeline import StagRefinerPipeline

        pipe = StagRefinerPipeline(**build_components(size, seed=cfg.seed))
    else:
        pipe = load_refiner(init_dir, "cpu", "float32")
    pipe.to(acc.device)

    logs = [s if not isinstance(s, (str, Path)) else load_scene_cache(s) for s in scenes]
    parts = [build_examples(log, cfg, progress and acc.is_local_main_process) for log in logs]
    data = {}
    for k in parts[0]:
        data[k] = np.concatenate([p[k] + SCENE_FRAME_OFFSET * i if k == "frame" else p[k] for i, p in enumerate(parts)])
    frames = np.unique(data["frame"])
    n_val = max(1, int(round(len(frames) * cfg.val_fraction)))
    is_val = np.isin(data["frame"], frames[-n_val:])
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    tr_win, va_win = (frame_windows(data["frame"], data["shift"], i, cfg.window) for i in (tr, va))
    if not len(tr_win) or not len(va_win):
        raise RefinerError(f"train-refiner window {cfg.window}: the {'training' if not len(tr_win) else 'validation'} "
                           f"split has fewer than {cfg.window} consecutive held-out frames; lower --window or give "
                           "longer scenes")
    rng = np.random.default_rng(cfg.seed)
    bar = lambda n, desc: tqdm(total=n, desc=desc, disable=not (progress and acc.is_local_main_process))  # noqa: E731

    def video(key, idx):  # (len(idx), F=1, C, H, W, 3) float [0, 1]
        return torch.from_numpy(data[key][idx][:, None]).float().div(255.0)

    # --- VAE warm-up (untrained tiny VAE only), saved so a resume skips it ----------------------------------------
    vae_dir = ckpt_dir / "vae"
    if latest is not None and vae_dir.is_dir():
        pipe.vae = type(pipe.vae).from_pretrained(vae_dir).to(acc.device)
    elif cfg.vae_steps:
        pipe.vae.train().requires_grad_(True)
        # not acc.prepare(): the checkpoints then hold only the UNet, so a resume (which skips this) lines up;
        # every process runs the same seeded warm-up, so the VAEs agree without syncing
        vae = pipe.vae
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
        sched_lr = diffusers.optimization.get_scheduler(cfg.lr_schedule, opt, num_warmup_steps=0,
                                                          num_training_steps=cfg.vae_steps)
        imgs = np.concatenate([data["target"][tr], data["cond"][tr]]).reshape(-1, *data["target"].shape[2:])
        with bar(cfg.vae_steps, "vae warm-up") as pb:
            for _ in range(cfg.vae_steps):
                x = torch.from_numpy(imgs[rng.integers(0, len(imgs), 4 * cfg.batch_size)]).permute(0, 3, 1, 2)
                x = x.float().div(127.5).sub(1.0).to(acc.device)
                with acc.autocast():
                    post = vae.encode(x).latent_dist
                    rec = vae.decode(post.sample()).sample
                    loss = torch.nn.functional.mse_loss(rec.float(), x) + 1e-6 * post.kl().mean()
                loss.backward()
                opt.step()
                sched_lr.step()
                opt.zero_grad()
                pb.update()
                pb.set_postfix(loss=f"{loss.item():.4f}")
        pipe.vae = vae.eval().requires_grad_(False)
        if acc.is_main_process:
            pipe.vae.save_pretrained(vae_dir)
    pipe.vae.requires_grad_(False).eval()
    pipe.image_encoder.requires_grad_(False).eval()

    # --- frozen encoders: condition / target latents and reference embeddings, once ---------------------------------
    with torch.no_grad():
        all_idx = np.arange(len(data["frame"]))
        cond = torch.cat([pipe.encode_condition(video("cond", i), torch.from_numpy(data["valid"][i][:, None]))
                          for i in np.array_split(all_idx, max(1, len(all_idx) // 8))])
        b, c = len(all_idx), data["cond"].shape[1]
        tgt = torch.cat([pipe.encode_images(video("target", i).permute(0, 2, 1, 5, 3, 4).flatten(0, 2))
                         for i in np.array_split(all_idx, max(1, len(all_idx) // 8))])
        tgt = tgt.view(b * c, 1, *tgt.shape[1:])
        if cfg.predict_residual:
            tgt = tgt - cond[:, :, :tgt.shape[2]]
        # unit variance against unit noise (train rows only; deterministic, so a resume gets the same scale)
        sample_scale = float(1.0 / tgt.reshape(b, c, -1)[torch.from_numpy(tr)].float().std().clamp_min(1e-6))
        tgt = tgt * sample_scale
        emb = pipe.embed_reference(torch.from_numpy(data["ref"]).float().div(255.0))
        ids = pipe.time_ids(b * c, 10.0, 127.0, 0.02)
    cams = pipe.camera_layout
    cameras = tuple(logs[0].rig.names)
    if any(tuple(log.rig.names) != cameras for log in logs):
        raise RefinerError("train-refiner: all scenes must have the same camera rig names and order")
    sched = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    alphas = sched.alphas_cumprod.to(acc.device)

    def v_loss(unet, wins, gen=None, t=None, hole_weight=0.0):
        """v-prediction loss of windows (n, F) of example indices: UNet batch (n * C, F, ...), camera fastest."""
        wins = np.asarray(wins)
        f = wins.shape[1]
        r = (wins[:, None, :] * c + np.arange(c)[None, :, None]).reshape(-1, f)  # (n * C, F) rows
        r = torch.from_numpy(r).to(acc.device)
        x0, cnd = tgt[:, 0][r], cond[:, 0][r]
        noise = torch.randn(x0.shape, generator=gen, device="cpu").to(acc.device)
        if t is None:
            t = torch.randint(0, sched.config.num_train_timesteps, (len(wins),), generator=gen).to(acc.device)
        t_rows = t.repeat_interleave(c)
        a = alphas[t_rows].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        cams.set(cameras, f)
        x = torch.cat([noisy, cnd], dim=2)
        with acc.autocast():  # the reference frame and micro-conditioning of a window: its first frame's
            pred = unet(x, t_rows, encoder_hidden_states=emb[r[:, 0]], added_time_ids=ids[r[:, 0]]).sample
        err = (pred.float() - target.float()) ** 2
        if hole_weight and pipe.uses_mask:
            w = 1.0 + hole_weight * (1.0 - cnd[:, :, -1:].float())  # the mask channel: valid fraction
            return (err * w).mean() / w.mean()
        return err.mean()

    def val_loss(unet) -> float:
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        ts = torch.linspace(50, sched.config.num_train_timesteps - 50, 4).long()
        with torch.no_grad():
            vals = [v_loss(unet, va_win, gen, t.repeat(len(va_win)).to(acc.device)).item() for t in ts]
        return float(np.mean(vals))

    # --- UNet --------------------------------------------------------------------------------------------------
    pipe.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(pipe.unet.parameters(), lr=cfg.lr)
    # accelerate steps a prepared scheduler once per process per optimiser step
    lr_sched = diffusers.optimization.get_scheduler(cfg.lr_schedule, opt,
                                                    num_warmup_steps=0, num_training_steps=cfg.steps * acc.num_processes)
    unet, opt, lr_sched = acc.prepare(pipe.unet, opt, lr_sched)
    meta_file = ckpt_dir / "meta.json"
    start = 0
    if latest is not None:
        acc.load_state(str(latest[0]))
        start = latest[1]
        meta = json.loads(meta_file.read_text())
        rng = np.random.default_rng([cfg.seed, start])
    else:
        meta = {"val_loss_before": val_loss(unet), "config": asdict(cfg)}
        if acc.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(meta_file) as f:
                json.dump(meta, f)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    with bar(cfg.steps, "refiner") as pb:
        pb.update(start)
        for step in range(start, cfg.steps):
            pick = rng.choice(len(tr_win), size=min(cfg.batch_size, len(tr_win)), replace=False)
            loss = v_loss(unet, tr_win[pick], gen, hole_weight=cfg.hole_weight)
            acc.backward(loss)
            opt.step()
            lr_sched.step()
            opt.zero_grad()
            pb.update()
            pb.set_postfix(loss=f"{loss.item():.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                d = ckpt_dir / f"step-{step + 1:06d}"
                acc.save_state(str(d))
                if acc.is_main_process:
                    with atomic_open(d / "done.json") as f:
                        json.dump({"step": step + 1, "loss": loss.item()}, f)
    unet.eval()
    metrics = {**meta, "val_loss_after": val_loss(unet), "steps": cfg.steps, "train_examples": int(len(tr)),
               "val_examples": int(len(va)), "train_windows": int(len(tr_win)), "val_windows": int(len(va_win))}
    pipe.unet = acc.unwrap_model(unet).requires_grad_(False)
    pipe.register_to_config(residual_decode=bool(cfg.residual_decode), composite=bool(cfg.composite),
                            predict_residual=bool(cfg.predict_residual), sample_scale=sample_scale,
                            plain_in_holes=bool(cfg.plain_in_holes))
    metrics["sample_scale"] = sample_scale
    metrics.update(hole_psnr(pipe, data, va, cfg))
    if acc.is_main_process:
        metrics["out"] = str(save_pipeline(pipe, out / "refiner"))
        with atomic_open(out / "metrics.json") as f:
            json.dump(metrics, f, indent=1)
    return metrics


def hole_psnr(pipe, data: dict, idx, cfg: TrainConfig) -> dict:
    """PSNR [dB] vs the target of the point render and of the refined frames (the saved decode options:
    ``psnr_refined``; every decode: ``psnr_{plain,residual,hybrid}[_composite]``, hybrid = residual at valid pixels,
    plain in the holes), inside the holes (``psnr_holes_*``) and overall. Same seed, so all decodes share the sampled
    latents."""
    from stag_sim.render.fidelity import psnr

    torch = backend.torch()
    gen = torch.Generator(device=pipe.device).manual_seed(cfg.seed)
    holes = ~data["valid"][idx]
    tgt, pt = data["target"][idx], data["cond"][idx]
    m = {"psnr_point": psnr(pt, tgt), "hole_fraction": float(holes.mean())}
    if holes.any():
        m["psnr_holes_point"] = psnr(pt[holes], tgt[holes])
    def name(residual, hybrid, comp):
        if comp and hybrid:  # the render at valid pixels, the plain decode in the holes
            residual = hybrid = False
        return ("hybrid" if residual and hybrid else "residual" if residual else "plain") + ("_composite" if comp else "")

    saved = name(pipe.config.residual_decode, pipe.config.plain_in_holes, pipe.config.composite)
    for residual, hybrid, comp in ((False, False, False), (True, False, False), (True, True, False),
                                   (False, False, True), (True, False, True)):
        key = name(residual, hybrid, comp)
        out = np.stack([pipe(data["cond"][i][None], data["valid"][i][None], data["ref"][i],
                             num_inference_steps=cfg.eval_steps, generator=gen.manual_seed(cfg.seed),
                             residual_decode=residual, composite=comp, plain_in_holes=hybrid).frames[0]
                        for i in idx])
        m[f"psnr_{key}"] = psnr(out, tgt)
        if holes.any():
            m[f"psnr_holes_{key}"] = psnr(out[holes], tgt[holes])
    m["psnr_refined"] = m[f"psnr_{saved}"]
    if holes.any():
        m["psnr_holes_refined"] = m[f"psnr_holes_{saved}"]
    return m
