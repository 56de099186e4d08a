"""Refiner training on tiny scenes (CPU). The real runs are slow-marked; the error paths are fast."""

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from stag_sim.errors import StagSimError  # noqa: E402
from stag_sim.refiner.components import build_components  # noqa: E402
from stag_sim.refiner.pipeline import StagRefinerPipeline  # noqa: E402
from stag_sim.refiner.renderer import load_refiner  # noqa: E402
from stag_sim.refiner.train import TrainConfig, build_examples, train_refiner  # noqa: E402
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
def test_tiny_training_on_the_synthetic_town_lowers_validation_loss(init_dir, tmp_path):
    synth = pytest.importorskip("stag_sim.synth")
    log = synth.generate_scene(seed=0, duration_s=3.0, width=64, height=36)
    cfg = TrainConfig(steps=300, vae_steps=300, holdout_every=3, shifts=(0.0, 1.0), eval_steps=2)
    m = train_refiner([log], init_dir, tmp_path / "run", cfg)
    print({k: v for k, v in m.items() if k != "config"})  # the figures (pytest -s)
    assert m["val_loss_after"] < m["val_loss_before"]
    # the saved default (residual latents + residual decode) is what psnr_refined measures
    assert m["psnr_refined"] == m["psnr_residual"] and m["psnr_holes_refined"] == m["psnr_holes_residual"]
    # measured (seed 0, CPU): holes 25.76 dB residual vs 24.05 plain, 28.82 point render; whole image 20.26 vs
    # 20.01 plain, 20.10 point render. The residual decode beats the plain one in the holes; neither beats the
    # point render there (the tiny VAE caps it, see docs/refiner.md); over the whole image it is on par with it.
    assert m["psnr_holes_residual"] > m["psnr_holes_plain"] + 0.5
    assert m["psnr_residual"] > m["psnr_point"] - 0.5


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
