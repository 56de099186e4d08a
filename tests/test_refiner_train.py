"""Refiner training on tiny scenes (CPU). The real runs are slow-marked; the error paths are fast."""

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from stag_sim import synth  # noqa: E402
from stag_sim.errors import StagSimError  # noqa: E402
from stag_sim.refiner.components import build_components  # noqa: E402
from stag_sim.refiner.pipeline import StagRefinerPipeline  # noqa: E402
from stag_sim.refiner.renderer import load_refiner  # noqa: E402
from stag_sim.refiner.train import TrainConfig, build_examples, frame_windows, train_refiner  # noqa: E402
from stag_sim.testing import tiny_scene_log  # noqa: E402


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("init")
    StagRefinerPipeline(**build_components("tiny")).save_pretrained(d)
    return d


def test_examples_exclude_the_frame_and_shifts_need_an_oracle():
    log = tiny_scene_log(num_frames=8, width=32, height=20)
    ex = build_examples(log, TrainConfig(holdout_every=3, shifts=(0.0,)))
    assert ex["cond"].shape == (3, 6, 20, 32, 3) and ex["cond"].dtype == np.uint8
    assert ex["valid"].dtype == bool and ex["frame"].tolist() == [1, 4, 7]
    assert np.array_equal(ex["target"][0], np.stack([log.images[1, c] for c in range(6)]))
    assert not ex["valid"].all()  # the frame is not in the cloud: its render has holes
    with pytest.raises(StagSimError, match="synthetic"):
        build_examples(log, TrainConfig(holdout_every=3, shifts=(0.0, 1.0)))


def test_resume_without_checkpoint_and_bad_config(init_dir, tmp_path):
    log = tiny_scene_log(num_frames=8, width=32, height=20)
    with pytest.raises(StagSimError, match="no finished checkpoint"):
        train_refiner([log], init_dir, tmp_path / "run", TrainConfig(shifts=(0.0,)), resume=True)
    with pytest.raises(StagSimError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8").validate()
    for bad, match in (({"hole_weight": -1.0}, "hole_weight"), ({"lr_schedule": "linear"}, "lr_schedule"),
                       ({"window": 0}, "window")):
        with pytest.raises(StagSimError, match=match):
            TrainConfig(**bad).validate()
    # 3 held-out frames, 1 of them for validation: no 2-frame validation window
    with pytest.raises(StagSimError, match="window 2: the validation split"):
        train_refiner([log], init_dir, tmp_path / "win", TrainConfig(shifts=(0.0,), holdout_every=3, window=2))


def test_frame_windows_stay_within_one_scene_and_shift():
    # examples ordered (frame, shift) as build_examples makes them; scene 1's frames are offset by 1e6
    frame = np.array([1, 1, 4, 4, 7, 7, 1_000_001, 1_000_001, 1_000_004, 1_000_004])
    shift = np.array([0.0, 1.0] * 5)
    assert frame_windows(frame, shift, np.arange(10), 1).tolist() == [[i] for i in (0, 2, 4, 1, 3, 5, 6, 8, 7, 9)]
    assert frame_windows(frame, shift, np.arange(10), 2).tolist() == [[0, 2], [2, 4], [1, 3], [3, 5], [6, 8], [7, 9]]
    assert frame_windows(frame, shift, np.arange(10), 3).tolist() == [[0, 2, 4], [1, 3, 5]]
    assert frame_windows(frame, shift, np.array([0, 4, 6]), 2).tolist() == [[0, 4]]  # runs of the given indices
    assert frame_windows(frame, shift, np.arange(10), 4).shape == (0, 4)


@pytest.mark.slow
def test_train_checkpoint_resume(init_dir, tmp_path):
    log = tiny_scene_log(num_frames=8, width=32, height=20)
    cfg = TrainConfig(steps=2, vae_steps=2, batch_size=1, checkpoint_every=2, holdout_every=3, shifts=(0.0,),
                      eval_steps=1)
    train_refiner([log], init_dir, tmp_path / "run", cfg)
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "done.json").is_file()
    with pytest.raises(StagSimError, match="--resume"):
        train_refiner([log], init_dir, tmp_path / "run", cfg)
    m = train_refiner([log], init_dir, tmp_path / "run", TrainConfig(**{**cfg.__dict__, "steps": 4}), resume=True)
    assert (tmp_path / "run" / "checkpoints" / "step-000004" / "done.json").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 4 == m["steps"]
    assert load_refiner(tmp_path / "run" / "refiner").unet.config.in_channels == 9


@pytest.mark.slow
def test_training_on_frame_windows_with_hole_weight(init_dir, tmp_path):
    log = tiny_scene_log(num_frames=14, width=32, height=20)  # held out: 1, 4, 7 (train), 10, 13 (validation)
    cfg = TrainConfig(steps=2, batch_size=2, holdout_every=3, shifts=(0.0,), val_fraction=0.5, window=2,
                      hole_weight=4.0, eval_steps=1)
    m = train_refiner([log], init_dir, tmp_path / "run", cfg)
    assert (m["train_windows"], m["val_windows"]) == (2, 1)
    assert np.isfinite(m["val_loss_after"]) and m["val_loss_after"] != m["val_loss_before"]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 12-24 min on 2 CPU cores
def test_tiny_training_on_the_synthetic_town_lowers_validation_loss(init_dir, tmp_path):
    log = synth.generate_scene(seed=0, duration_s=10.0, width=64, height=36)
    cfg = TrainConfig(steps=600, vae_steps=1000, holdout_every=3, shifts=(0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5),
                      hole_weight=8.0, eval_steps=1)
    m = train_refiner([log], init_dir, tmp_path / "run", cfg)
    print({k: v for k, v in m.items() if k != "config"})  # the figures (pytest -s)
    assert (m["train_examples"], m["val_examples"]) == (175, 56)
    assert m["val_loss_after"] < 0.75 * m["val_loss_before"]
    assert m["sample_scale"] > 1.0  # residual latents are far smaller than unit noise
    # the saved default (residual latents, residual decode at valid pixels, plain in the holes) is psnr_refined
    assert m["psnr_refined"] == m["psnr_hybrid"] and m["psnr_holes_refined"] == m["psnr_holes_hybrid"]
    # measured (seed 0, 2 CPU cores): whole image 22.24 dB vs 21.23 point render; holes 24.23 vs 23.75
    assert m["psnr_refined"] > m["psnr_point"] + 0.5
    assert m["psnr_holes_refined"] > m["psnr_holes_point"]


def test_cli_train_refiner_bad_scene_is_one_line(tmp_path):
    from click.testing import CliRunner

    from stag_sim.cli import main

    (tmp_path / "scene").mkdir()
    r = CliRunner().invoke(main, ["train-refiner", "--scenes", str(tmp_path / "scene"), "--out", str(tmp_path / "o"),
                                  "--steps", "1"])
    assert r.exit_code == 1 and r.output.startswith("error:") and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train-refiner", "--scenes", str(tmp_path / "scene"), "--out", str(tmp_path / "o"),
                                  "--shifts", "a,b"])
    assert r.exit_code == 1 and "--shifts" in r.output
    r = CliRunner().invoke(main, ["train-refiner", "--scenes", str(tmp_path / "scene"), "--out", str(tmp_path / "o"),
                                  "--window", "0"])
    assert r.exit_code == 1 and r.output.startswith("error:") and "window: must be >= 1" in r.output
    r = CliRunner().invoke(main, ["train-refiner", "--scenes", str(tmp_path / "scene"), "--out", str(tmp_path / "o"),
                                  "--hole-weight", "-2"])
    assert r.exit_code == 1 and "hole_weight: must be >= 0" in r.output
