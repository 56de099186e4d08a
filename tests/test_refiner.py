"""The diffusion refiner with the tiny config (random weights, CPU): pipeline, cross-camera attention, env, errors.

Needs the ``diffusion`` extra (diffusers, transformers, accelerate); skipped without it.
"""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

from stag_sim.camera import CAMERA_NAMES  # noqa: E402
from stag_sim.errors import MissingExtraError, RendererError, StagSimError, ValidationError  # noqa: E402
from stag_sim.refiner import backend  # noqa: E402
from stag_sim.refiner.attention import CameraLayout, CrossCameraAttnProcessor, ring_neighbours  # noqa: E402
from stag_sim.refiner.components import build_components  # noqa: E402
from stag_sim.refiner.pipeline import StagRefinerPipeline  # noqa: E402
from stag_sim.refiner.renderer import (  # noqa: E402
    RefinedRenderer, RefinerConfig, forward_warp, load_refiner, resolve_device,
)
from stag_sim.testing import tiny_scene_log  # noqa: E402


def get_dummy_components(seed=0, mask_channel=True):
    return build_components("tiny", seed=seed, mask_channel=mask_channel)


@pytest.fixture(scope="module")
def pipe():
    p = StagRefinerPipeline(**get_dummy_components())
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    d = tmp_path_factory.mktemp("refiner")
    pipe.save_pretrained(d)
    return d


def inputs(f=2, c=6, h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    renders = rng.integers(0, 256, (f, c, h, w, 3), dtype=np.uint8)
    masks = rng.random((f, c, h, w)) > 0.3
    ref = rng.integers(0, 256, (c, 20, 30, 3), dtype=np.uint8)
    return renders, masks, ref


def run(p, *args, seed=0, **kw):
    return p(*args, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), **kw).frames


def test_output_shapes_and_dtypes(pipe):
    renders, masks, ref = inputs()
    out = run(pipe, renders, masks, ref)
    assert out.shape == renders.shape and out.dtype == np.uint8
    batched = run(pipe, np.stack([renders, renders]), np.stack([masks, masks]), np.stack([ref, ref]))
    assert batched.shape == (2,) + renders.shape and batched.dtype == np.uint8
    pt = run(pipe, renders.astype(np.float32) / 255, masks, ref, output_type="pt")
    assert torch.is_tensor(pt) and pt.dtype == torch.float32 and tuple(pt.shape) == renders.shape
    assert 0 <= float(pt.min()) and float(pt.max()) <= 1


def test_same_seed_same_frames_other_seed_other_frames(pipe):
    renders, masks, ref = inputs()
    a, b, c = run(pipe, renders, masks, ref, seed=1), run(pipe, renders, masks, ref, seed=1), run(pipe, renders, masks, ref, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_output_depends_on_the_render_and_the_mask(pipe):
    renders, masks, ref = inputs()
    base = run(pipe, renders, masks, ref)
    assert not np.array_equal(base, run(pipe, 255 - renders, masks, ref))
    assert not np.array_equal(base, run(pipe, renders, ~masks, ref))


def test_save_load_round_trip(pipe, saved):
    assert json.loads((saved / "model_index.json").read_text())["_class_name"] == "StagRefinerPipeline"
    loaded = load_refiner(saved, "cpu", "float32")
    assert loaded.num_cross_camera_layers == pipe.num_cross_camera_layers > 0
    renders, masks, ref = inputs()
    assert np.array_equal(run(pipe, renders, masks, ref), run(loaded, renders, masks, ref))
    a, b = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decode_options_are_saved_with_the_model(tmp_path):
    p = StagRefinerPipeline(**get_dummy_components(), residual_decode=False, composite=True, predict_residual=True)
    p.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["residual_decode"] is False and index["composite"] is True and index["predict_residual"] is True
    loaded = load_refiner(tmp_path, "cpu", "float32")
    assert loaded.config.residual_decode is False and loaded.config.composite is True
    assert loaded.config.predict_residual is True
    renders, masks, ref = inputs()
    assert np.array_equal(run(p, renders, masks, ref), run(loaded, renders, masks, ref))
    assert np.array_equal(run(loaded, renders, masks, ref),
                          run(loaded, renders, masks, ref, residual_decode=False, composite=True))


def test_residual_decode_gives_back_the_render_for_its_own_latents(pipe):
    renders, masks, _ = inputs()
    video, mk, _, _, _ = pipe.prepare_inputs(renders, masks)
    lat = pipe.encode_condition(video, mk)[:, :, :pipe.vae.config.latent_channels]
    plain = pipe.finish(lat, video, mk, lat, residual=False, composite=False)
    residual = pipe.finish(lat, video, mk, lat, residual=True, composite=False)
    assert torch.allclose(residual, video, atol=1e-5)  # the VAE's reconstruction error cancels exactly
    assert (plain - video).abs().max() > 0.05  # while the plain decode carries it (untrained VAE)
    other = pipe.finish(torch.zeros_like(lat), video, mk, lat, residual=True, composite=False)
    assert not torch.allclose(other, video, atol=1e-3)  # other latents: a correction on top of the render


def test_plain_in_holes_is_residual_at_valid_pixels_and_plain_in_the_holes(pipe):
    renders, masks, _ = inputs()
    video, mk, _, _, _ = pipe.prepare_inputs(renders, masks)
    lat = pipe.encode_condition(video, mk)[:, :, :pipe.vae.config.latent_channels]
    z = lat + 0.5 * torch.randn(lat.shape, generator=torch.Generator().manual_seed(1))
    plain = pipe.finish(z, video, mk, lat, residual=False, composite=False)
    residual = pipe.finish(z, video, mk, lat, residual=True, composite=False)
    hybrid = pipe.finish(z, video, mk, lat, residual=True, composite=False, plain_in_holes=True)
    valid = mk[..., None].expand_as(hybrid) > 0.5
    assert 0 < valid.float().mean() < 1
    assert torch.equal(hybrid[valid], residual[valid]) and torch.equal(hybrid[~valid], plain[~valid])
    assert torch.equal(pipe.finish(z, video, mk, lat, residual=False, composite=False, plain_in_holes=True), plain)


def test_predict_residual_zero_prediction_gives_back_the_render(monkeypatch):
    p = StagRefinerPipeline(**get_dummy_components(), predict_residual=True)
    p.set_progress_bar_config(disable=True)
    renders, masks, ref = inputs(f=1)
    # v = 0 at the zero-SNR first step means x0 = 0: no correction to the render's latents
    monkeypatch.setattr(p, "predict", lambda x, *a: torch.zeros_like(x))
    out = p(renders, masks, ref, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames
    assert np.array_equal(out, renders)
    plain = p(renders, masks, ref, num_inference_steps=1, generator=torch.Generator().manual_seed(0),
              residual_decode=False).frames
    assert not np.array_equal(plain, renders)  # the plain decode of the same latents carries the VAE's error


def test_sample_scale_divides_the_sampled_latents(monkeypatch, tmp_path):
    # zero-SNR first step: x0 = -v, so a constant v gives the sample x0 = -v; it is decoded as x0 / sample_scale
    renders, masks, ref = inputs(f=1)
    outs = []
    for scale, v in ((1.0, -0.3), (4.0, -1.2), (1.0, -1.2)):
        p = StagRefinerPipeline(**get_dummy_components(), predict_residual=True, sample_scale=scale)
        p.set_progress_bar_config(disable=True)
        monkeypatch.setattr(p, "predict", lambda x, *a, v=v: torch.full_like(x, v))
        outs.append(p(renders, masks, ref, num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                      output_type="pt").frames)
    # (up to the noise's 2**-12 weight left at the clamped zero-SNR step)
    assert torch.allclose(outs[0], outs[1], atol=1e-3) and not torch.allclose(outs[0], outs[2], atol=1e-2)
    p.save_pretrained(tmp_path)
    assert load_refiner(tmp_path, "cpu", "float32").config.sample_scale == 1.0
    p = StagRefinerPipeline(**get_dummy_components(), sample_scale=2.5)
    p.save_pretrained(tmp_path / "s")
    assert load_refiner(tmp_path / "s", "cpu", "float32").config.sample_scale == 2.5
    with pytest.raises(RendererError, match="sample_scale"):
        StagRefinerPipeline(**get_dummy_components(), sample_scale=0.0)


def test_composite_keeps_the_valid_pixels_of_the_render(pipe):
    renders, masks, ref = inputs()
    out = run(pipe, renders, masks, ref, composite=True)
    free = run(pipe, renders, masks, ref, composite=False)
    assert np.array_equal(out[masks], renders[masks])
    assert np.array_equal(out[~masks], free[~masks]) and not np.array_equal(free[masks], renders[masks])


def test_bfloat16_runs_on_cpu(saved):
    p = load_refiner(saved, "cpu", "bfloat16")
    assert p.unet.dtype == torch.bfloat16
    renders, masks, ref = inputs(f=1)
    out = run(p, renders, masks, ref)
    assert out.shape == renders.shape and out.dtype == np.uint8


def _attn_layer(pipe):
    name = next(k for k, v in pipe.unet.attn_processors.items() if isinstance(v, CrossCameraAttnProcessor))
    module = pipe.unet
    for part in name.split(".")[:-1]:
        module = getattr(module, part)
    return module


def test_cross_camera_processor_mixes_ring_neighbours_only(pipe):
    attn = _attn_layer(pipe)
    layout = CameraLayout()
    layout.set(CAMERA_NAMES, num_frames=2)
    proc = CrossCameraAttnProcessor(layout)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6 * 2, 10, attn.to_q.in_features, generator=g)
    y = x.clone()
    y[0:2] += torch.randn(2, 10, x.shape[-1], generator=g)  # camera 0 (CAM_FRONT), both frames
    with torch.no_grad():
        a, b = proc(attn, x).view(6, 2, 10, -1), proc(attn, y).view(6, 2, 10, -1)
        changed = [(a[c] - b[c]).abs().max().item() > 1e-6 for c in range(6)]
        assert changed == [True, True, False, False, False, True]  # FRONT, its neighbours FRONT_RIGHT and FRONT_LEFT
        layout.enabled = False  # control: plain self-attention mixes nothing
        a, b = proc(attn, x).view(6, 2, 10, -1), proc(attn, y).view(6, 2, 10, -1)
        assert [(a[c] - b[c]).abs().max().item() > 1e-6 for c in range(6)] == [True] + [False] * 5


def test_cross_camera_single_camera_equals_default_attention(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = _attn_layer(pipe)
    layout = CameraLayout()
    layout.set(("CAM_FRONT",), num_frames=3)
    x = torch.randn(3, 10, attn.to_q.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(CrossCameraAttnProcessor(layout)(attn, x), AttnProcessor2_0()(attn, x), atol=1e-6)


def test_ring_neighbours_of_a_subset():
    assert ring_neighbours(CAMERA_NAMES).tolist() == [[5, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 0]]
    # FRONT's ring neighbours FRONT_LEFT / FRONT_RIGHT are absent: itself stands in
    assert ring_neighbours(("CAM_FRONT", "CAM_BACK")).tolist() == [[0, 0], [1, 1]]
    with pytest.raises(RendererError, match="CAM_TOP"):
        ring_neighbours(("CAM_TOP",))


def test_bad_inputs_are_one_line_errors(pipe):
    renders, masks, ref = inputs()
    with pytest.raises(RendererError, match="renders: expected"):
        pipe(renders[0, 0])
    with pytest.raises(RendererError, match="multiple of the VAE"):
        pipe(renders[:, :, :15])
    with pytest.raises(RendererError, match="masks: expected"):
        pipe(renders, masks[:, :3])
    with pytest.raises(RendererError, match="reference: expected"):
        pipe(renders, masks, ref[:2])
    with pytest.raises(RendererError, match="name them"):
        pipe(renders[:, :3])
    with pytest.raises(RendererError, match="in \\[0, 1\\]"):
        pipe(renders.astype(np.float32))


def test_missing_or_wrong_refiner_dir(tmp_path):
    with pytest.raises(RendererError, match="not a directory"):
        load_refiner(tmp_path / "nope")
    with pytest.raises(RendererError, match="no model_index.json"):
        load_refiner(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(RendererError, match="expected a StagRefinerPipeline"):
        load_refiner(tmp_path)


def test_checkpoint_with_mismatched_channels(saved, tmp_path):
    import shutil

    from diffusers import UNetSpatioTemporalConditionModel

    from stag_sim.refiner.components import unet_config

    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    cfg = {**unet_config("tiny"), "in_channels": 7}
    UNetSpatioTemporalConditionModel(**cfg).save_pretrained(bad / "unet")
    with pytest.raises(RendererError, match="7 input channels"):
        load_refiner(bad)
    # config says 9 channels but the weights hold 8: the loader's error, as one line
    cfg_file = bad / "unet" / "config.json"
    UNetSpatioTemporalConditionModel(**{**unet_config("tiny"), "in_channels": 8}).save_pretrained(bad / "unet")
    cfg_json = json.loads(cfg_file.read_text())
    cfg_json["in_channels"] = 9
    cfg_file.write_text(json.dumps(cfg_json))
    with pytest.raises(RendererError, match="cannot load") as e:
        load_refiner(bad)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_asked_without_gpu_is_a_clear_error(saved):
    with pytest.raises(RendererError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(RendererError, match="no CUDA GPU"):
        load_refiner(saved, device="cuda")
    with pytest.raises(RendererError, match="refiner_dtype"):
        resolve_device("cpu", "float8")


def test_missing_extra_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingExtraError, match=r"stag-sim\[diffusion\]"):
        backend.diffusers()


def test_forward_warp_identity_and_shift():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    depth = np.full((12, 16), 10.0, np.float32)
    depth[:2] = 0  # no return: nothing to warp
    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    out, hit = forward_warp(rgb, depth, K, np.eye(4), K, np.eye(4))
    assert np.array_equal(hit, depth > 0) and np.array_equal(out[hit], rgb[hit])
    T = np.eye(4)
    T[0, 3] = 0.5  # camera moves 0.5 m right: a 10 m plane moves 1 px left
    out, hit = forward_warp(rgb, depth, K, np.eye(4), K, T)
    assert np.array_equal(out[2:, :-1], rgb[2:, 1:]) and not hit[:, -1].any()


class _FakePoint:
    """A stand-in point renderer counting calls (the refined renderer only needs render() and config.near)."""

    class config:
        near = 0.1

    scene = None

    def __init__(self, h=16, w=24):
        self.calls, self.h, self.w = 0, h, w

    def render(self, poses, intr, obj=None, mask=None, cull=True, cameras=None):
        from stag_sim.render.renderer import RenderResult

        self.calls += 1
        n = len(poses)
        rgb = np.random.default_rng(self.calls).integers(0, 256, (n, self.h, self.w, 3), dtype=np.uint8)
        return RenderResult(rgb, np.full((n, self.h, self.w), 8.0, np.float32), np.ones((n, self.h, self.w), bool))


def test_refined_renderer_keyframes_cache_and_reset(pipe):
    from stag_sim.camera import CameraIntrinsics

    point = _FakePoint()
    rr = RefinedRenderer(point, pipe, RefinerConfig(path="x", refine_every=2, steps=1, window=2), CAMERA_NAMES)
    K = CameraIntrinsics(fx=20.0, fy=20.0, cx=12.0, cy=8.0, width=24, height=16)
    poses = np.tile(np.eye(4), (6, 1, 1))
    outs = []
    for k in range(4):
        p = poses.copy()
        p[:, 2, 3] += 0.1 * k
        outs.append(rr.render(p, K, time_s=0.1 * k))
    assert rr.stats == {"refined": 2, "warped": 2, "cached": 0}
    again = rr.render(p, K, time_s=0.1 * 3)
    assert again is outs[-1] and rr.stats["cached"] == 1 and point.calls == 4
    assert outs[0].rgb.shape == (6, 16, 24, 3) and outs[0].rgb.dtype == np.uint8
    p[:, 0, 3] += 0.01
    rr.render(p, K, time_s=0.05)  # time went backwards: a new episode, which starts with a keyframe
    assert rr.stats["refined"] == 3 and rr.stats["warped"] == 2
    with pytest.raises(RendererError, match="camera poses"):
        rr.render(poses[:3], K)


def test_env_runs_five_steps_with_the_refined_renderer(saved):
    log = tiny_scene_log(num_frames=12, width=64, height=36)
    env = gym.make("StagDrive-v0", scene=log, image_size=(36, 64), voxel_size=0.25, renderer="refined",
                   refiner={"path": str(saved), "refine_every": 2, "steps": 1})
    obs, info = env.reset(seed=0)
    assert obs["CAM_FRONT"].shape == (36, 64, 3) and obs["CAM_FRONT"].dtype == np.uint8
    for _ in range(5):
        obs, r, term, trunc, info = env.step(info["expert_action"])
        assert env.observation_space.contains(obs)
    rr = env.unwrapped.renderer
    assert isinstance(rr, RefinedRenderer) and rr.stats["refined"] >= 3 and rr.stats["warped"] >= 2


def test_env_refined_settings_errors(saved):
    log = tiny_scene_log(num_frames=12, width=64, height=36)
    with pytest.raises(ValidationError, match="refiner: required with renderer='refined'"):
        gym.make("StagDrive-v0", scene=log, image_size=(36, 64), renderer="refined")
    with pytest.raises(ValidationError, match=r"refiner: refiner refine_every"):
        gym.make("StagDrive-v0", scene=log, image_size=(36, 64), renderer="refined",
                 refiner={"path": str(saved), "refine_every": 0})
    with pytest.raises(ValidationError, match=r"refiner\.steps_per_frame: unknown setting"):
        gym.make("StagDrive-v0", scene=log, image_size=(36, 64), renderer="refined",
                 refiner={"path": str(saved), "steps_per_frame": 2})
    with pytest.raises(StagSimError, match="not a directory"):
        gym.make("StagDrive-v0", scene=log, image_size=(36, 64), voxel_size=0.25, renderer="refined",
                 refiner={"path": str(saved / "missing")})


def _fake_svd_dir(root):
    """A tiny checkpoint laid out like diffusers' SVD: 8-channel UNet, temporal-decoder VAE, CLIP image encoder."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from stag_sim.refiner.components import image_encoder_config, unet_config

    torch.manual_seed(0)
    UNetSpatioTemporalConditionModel(**unet_config("tiny", mask_channel=False)).save_pretrained(root / "unet")
    AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                 latent_channels=4, layers_per_block=1).save_pretrained(root / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**image_encoder_config("tiny"))).save_pretrained(root / "image_encoder")
    return root


def test_cli_init_tiny_and_from_svd(tmp_path):
    from click.testing import CliRunner
    from diffusers import UNetSpatioTemporalConditionModel

    from stag_sim.cli import main

    r = CliRunner().invoke(main, ["refiner", "init", "--size", "tiny", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert load_refiner(tmp_path / "t").unet.config.in_channels == 9
    r = CliRunner().invoke(main, ["refiner", "init", "--size", "tiny", "--out", str(tmp_path / "t")])
    assert r.exit_code == 1 and "already exists" in r.output
    svd = _fake_svd_dir(tmp_path / "svd")
    r = CliRunner().invoke(main, ["refiner", "init", "--from-svd", str(svd), "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    p = load_refiner(tmp_path / "s")
    old = UNetSpatioTemporalConditionModel.from_pretrained(svd / "unet").conv_in.weight
    w = p.unet.conv_in.weight
    assert w.shape[1] == 9 and torch.equal(w[:, :8], old) and not w[:, 8].any()  # mask channel starts at zero
    renders, masks, ref = inputs(f=3)
    out = run(p, renders, masks, ref)  # the temporal-decoder VAE path
    assert out.shape == renders.shape and out.dtype == np.uint8
    r = CliRunner().invoke(main, ["refiner", "init", "--from-svd", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "no unet/config.json" in r.output


@pytest.mark.parametrize("cache_size", [0, 8])
def test_refined_env_reset_with_a_seed_repeats_the_episode(saved, cache_size):
    """The refiner keeps keyframes, a frame window and a cache; the env resets them through the Renderer protocol,
    so an episode does not depend on the one before it. Here the one before is a reset 1 m to the side: the same
    clock and a jump under ``reset_distance``, which the refiner cannot tell from a step of one episode."""
    from stag_sim.envs.rendering import Renderer

    log = tiny_scene_log(num_frames=12, width=64, height=36)
    env = gym.make("StagDrive-v0", scene=log, image_size=(36, 64), voxel_size=0.25, renderer="refined",
                   refiner={"path": str(saved), "refine_every": 3, "steps": 1, "window": 2, "cache_size": cache_size})
    assert isinstance(env.unwrapped._draw, Renderer)

    def episode(actions):
        obs, _ = env.reset(seed=0)
        frames = [obs["CAM_FRONT"]]
        for a in actions:
            obs, *_ = env.step(np.asarray(a, np.float32))
            frames.append(obs["CAM_FRONT"])
        return np.stack(frames)

    steady = [[0.3, 0.0]] * 4
    first = episode(steady)
    env.reset(seed=0, options={"ego_offset": (0.0, 1.0, 0.0)})  # a start 1 m to the left in between, no step
    again = episode(steady)
    np.testing.assert_array_equal(first, again)
