"""The GEN3C teacher on the CPU: a tiny random Cosmos transformer and tiny VAE through the whole
loop, the sampler's values with a denoiser whose output is known, guidance and conditioning as
the transformer sees them, the checkpoint import and the text-embedding file."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.models import gen3c_checkpoint
from lyra_core.models.gen3c import (
    Gen3CTransformerConfig,
    build_transformer,
    encode_prompts,
    load_text_embeddings,
    load_transformer,
    save_text_embeddings,
)
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.gen3c import Gen3CPipeline, make_scheduler
from lyra_core.utils.errors import CheckpointError

H, W, T = 32, 48, 9  # 2 latent frames of 4 x 6; tokens 2 x 2 x 3


def _inputs():
    v, u = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    image = torch.stack([u, v, 0.5 * (u + v)]) * 0.8 + 0.1  # smooth: discs render it back
    depth = torch.full((H, W), 2.0)
    intrinsics = Intrinsics.from_fov(1.0, W, H)
    poses = torch.eye(4).repeat(T, 1, 1)
    poses[:, 0, 3] = torch.linspace(0.0, 0.3, T)  # slide right: the cache uncovers a border
    return image, depth, intrinsics.matrix(), Cameras.from_intrinsics(poses, intrinsics)


@pytest.fixture(scope="module")
def pipe():
    return Gen3CPipeline.tiny(seed=0)


def test_teacher_loop_end_to_end(pipe, tmp_path):
    image, depth, K, cameras = _inputs()
    out = pipe(image, depth, K, cameras, torch.Generator().manual_seed(0), 3, 1.0)
    assert out.latents.shape == (1, 16, 2, 4, 6) and out.latents.dtype == torch.float32
    assert out.frames.shape == (T, 3, H, W) and 0 <= out.frames.min() <= out.frames.max() <= 1
    assert out.cache_rgb.shape == (T, 3, H, W) and out.cache_mask.shape == (T, H, W)
    # The cache: the input view sees the image itself; moving right uncovers the right border.
    assert out.cache_mask[0].all()
    assert torch.allclose(out.cache_rgb[0], image, atol=0.05)
    assert not out.cache_mask[-1][:, -2:].any() and (out.cache_rgb[-1][:, :, -2:] == 0).all()
    # Its depth: the fronto-parallel wall at 2 m where covered, 0 where not.
    assert out.cache_depth.shape == (T, H, W) and out.cache_depth.dtype == torch.float32
    assert torch.allclose(out.cache_depth[out.cache_mask], torch.tensor(2.0), atol=0.02)
    assert (out.cache_depth[~out.cache_mask] == 0).all()
    # The frames are the decoded latents.
    decoded = pipe.vae.decode(out.latents.permute(0, 2, 1, 3, 4))[0].permute(0, 3, 1, 2)
    assert torch.allclose(decoded, out.frames, atol=1e-5)
    # Seeded; a saved and reloaded teacher gives the same video.
    again = pipe(image, depth, K, cameras, torch.Generator().manual_seed(0), 3, 1.0)
    other = pipe(image, depth, K, cameras, torch.Generator().manual_seed(1), 3, 1.0)
    assert torch.equal(again.latents, out.latents)
    assert not torch.allclose(other.latents, out.latents)
    pipe.save_pretrained(tmp_path / "teacher")
    config = json.loads((tmp_path / "teacher" / "transformer" / "config.json").read_text())
    assert (config["in_channels"], config["concat_padding_mask"]) == (81, True)
    loaded = Gen3CPipeline.from_pretrained(tmp_path / "teacher", progress=False)
    reloaded = loaded(image, depth, K, cameras, torch.Generator().manual_seed(0), 3, 1.0)
    assert torch.allclose(reloaded.latents, out.latents, atol=1e-5)


def test_inputs_that_do_not_fit_are_refused(pipe):
    image, depth, K, cameras = _inputs()
    with pytest.raises(ValueError, match="multiple of 8"):
        pipe(image, depth, K, cameras[:8])
    with pytest.raises(ValueError, match="depth"):
        pipe(image, depth[:-1], K, cameras)
    small = Cameras(cameras.camtoworlds, cameras.Ks, W - 8, H)
    with pytest.raises(ValueError, match="cameras are"):
        pipe(image, depth, K, small)


def _spy(module: nn.Module) -> list[dict]:
    calls: list[dict] = []
    module.register_forward_pre_hook(
        lambda _m, _a, kwargs: calls.append({k: v for k, v in kwargs.items()}), with_kwargs=True
    )
    return calls


def test_guidance_zeroes_pose_latents_and_the_condition_frame_stays_clean():
    pipe = Gen3CPipeline.tiny(seed=3)
    calls = _spy(pipe.transformer)
    image_latent = torch.randn(1, 16, 1, 4, 6)
    pose = torch.randn(1, 64, 2, 4, 6)
    steps = 4
    pipe.sample(image_latent, pose, torch.Generator().manual_seed(0), steps, guidance_scale=2.0)
    assert len(calls) == 2 * steps
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    c_in_augment = 1 / math.sqrt(0.001**2 + 0.25)
    for i, call in enumerate(calls):
        step, unconditional = divmod(i, 2)
        mask = call["condition_mask"]  # [condition mask, 64 pose channels, padding channel]
        assert mask.shape == (1, 66, 2, 4, 6) and "padding_mask" not in call
        assert (mask[:, 0, 0] == 1).all() and (mask[:, 0, 1:] == 0).all()
        assert (mask[:, -1] == 0).all()
        expected_pose = torch.zeros_like(pose) if unconditional else pose
        assert torch.equal(mask[:, 1:65], expected_pose)
        embeds = pipe.negative_prompt_embeds if unconditional else pipe.prompt_embeds
        assert torch.equal(call["encoder_hidden_states"], embeds)
        # The condition frame: its clean latent with 0.001 of noise, scaled to c_in(0.001),
        # while sigma > 0.001 (the last step, sigma 0.0002, denoises it like the others).
        frame0 = call["hidden_states"][:, :, :1] / c_in_augment
        if scheduler.sigmas[step] > 0.001:
            assert (frame0 - image_latent).abs().max() < 0.01
        sigma = torch.exp(4 * call["timestep"].double())
        assert torch.allclose(sigma.float(), scheduler.sigmas[step : step + 1], rtol=1e-3)


class KnownDenoiser(nn.Module):
    """Outputs F such that the EDM-preconditioned x0 = c_skip x + c_out F is ``cond`` when the
    pose latents are non-zero and ``uncond`` when they are zero."""

    def __init__(self, cond: float, uncond: float, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            out_channels=16, concat_padding_mask=False, patch_size=(1, 2, 2), text_embed_dim=32
        )
        self.cond, self.uncond, self.sigma_data = cond, uncond, sigma_data

    def forward(self, hidden_states, timestep, condition_mask, return_dict=False, **_):
        sigma = torch.exp(4 * timestep.double())
        s2, d2 = sigma**2, self.sigma_data**2
        x = hidden_states.double() * torch.sqrt(s2 + d2)
        target = self.cond if condition_mask[:, 1:65].abs().sum() > 0 else self.uncond
        out = (target - d2 / (s2 + d2) * x) / (sigma * self.sigma_data / torch.sqrt(s2 + d2))
        return (out.float(),)


def _known_pipe(**kwargs) -> Gen3CPipeline:
    text = torch.zeros(1, 4, 32)
    return Gen3CPipeline(
        KnownDenoiser(0.7, -0.2),
        VideoVAE.tiny(),
        text,
        text,
        device="cpu",
        progress=False,
        **kwargs,
    )


def test_sampler_values_with_a_known_denoiser():
    image_latent = torch.randn(1, 16, 1, 4, 6)
    pose = torch.ones(1, 64, 3, 4, 6)
    guided = 0.7 + 1.0 * (0.7 - (-0.2))  # cond + g (cond - uncond), g = 1
    # One step from sigma 80 to 0 ends at x0: the condition latent in frame 0, guided x0 after.
    out = _known_pipe().sample(image_latent, pose, torch.Generator().manual_seed(0), 1, 1.0)
    assert torch.allclose(out[:, :, :1], image_latent, atol=1e-4)
    assert torch.allclose(out[:, :, 1:], torch.full_like(out[:, :, 1:], guided), atol=1e-4)
    # Euler with a constant x0 = c: x_{i+1} - c = (x_i - c) sigma_{i+1} / sigma_i, so ending at
    # sigma_min the noise is scaled by sigma_min / sigma_max (frames 1.. never conditioned).
    pipe = _known_pipe(scheduler=make_scheduler(final_sigmas_type="sigma_min"))
    out = pipe.sample(image_latent, pose, torch.Generator().manual_seed(5), 6, 0.0)
    start = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(5)) * 80.0
    expected = 0.7 + (start - 0.7) * (0.0002 / 80.0)
    assert torch.allclose(out[:, :, 1:], expected[:, :, 1:], atol=1e-5)
    # With the default final sigma 0, every frame ends at the guided x0 (frame 0 included: it
    # is denoised freely at the last sigma, below the 0.001 augment noise).
    out = _known_pipe().sample(image_latent, pose, torch.Generator().manual_seed(5), 6, 1.0)
    assert torch.allclose(out, torch.full_like(out, guided), atol=1e-4)


# ---------------------------------------------------------------------- checkpoint import


def _released(config: Gen3CTransformerConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_transformer(config, fold_padding=False)
        for p in model.parameters():
            nn.init.normal_(p, std=0.02)  # nothing left at zero: every weight is distinct
    state = {
        gen3c_checkpoint.to_released(k): v.to(torch.bfloat16) for k, v in model.state_dict().items()
    }
    state["net.logvar.0.freqs"] = torch.zeros(128)  # training-only: dropped by the converter
    state["net.pos_embedder.seq"] = torch.arange(10.0)
    return state


def test_import_teacher_converts_gen3c_names(tmp_path, capsys):
    config = Gen3CTransformerConfig.tiny(num_layers=3)
    state = _released(config)
    assert state["net.x_embedder.proj.1.weight"].shape == (32, 328)  # GEN3C's 82 x 1 x 2 x 2
    assert "net.blocks.block2.blocks.2.block.layer2.weight" in state
    path = tmp_path / "model.pt"
    torch.save({"model": state}, path)
    assert gen3c_checkpoint.main([str(path), "--out", str(tmp_path / "transformer")]) == 0
    assert "3 blocks, width 32" in capsys.readouterr().out
    model = load_transformer(tmp_path / "transformer")
    loaded = model.state_dict()
    assert model.config.in_channels == 82 and not model.config.concat_padding_mask  # folded
    for name, value in loaded.items():
        released = state[gen3c_checkpoint.to_released(name)]
        assert torch.equal(value, released.float()), name
    stored = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert (stored["in_channels"], stored["num_layers"], stored["text_embed_dim"]) == (81, 3, 32)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("missing", "missing [net.blocks.block1.blocks.1.block.attn.to_v.0.weight]"),
        ("unexpected", "unexpected [net.extra_head.weight]"),
        ("not net", "unexpected [blocks.block0.extra]"),
        ("mis-shaped", "mis-shaped [net.x_embedder.proj.1.weight (32, 72) (expected (32, 328))]"),
    ],
)
def test_import_teacher_refuses_bad_keys_in_one_line(change, needle, tmp_path, capsys):
    state = _released(Gen3CTransformerConfig.tiny())
    if change == "missing":
        del state["net.blocks.block1.blocks.1.block.attn.to_v.0.weight"]
    elif change == "unexpected":
        state["net.extra_head.weight"] = torch.zeros(2)
    elif change == "not net":
        state["blocks.block0.extra"] = torch.zeros(2)
    else:  # Cosmos Video2World's own 72-wide input (18 channels), not GEN3C's
        state["net.x_embedder.proj.1.weight"] = torch.zeros(32, 72)
    path = tmp_path / "model.pt"
    torch.save({"model": state}, path)
    assert gen3c_checkpoint.main([str(path), "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lyra import-teacher: error: ")
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_import_teacher_refuses_pickled_objects(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"model": {"net.x": SimpleNamespace(a=1)}}, path)
    assert gen3c_checkpoint.main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "not a torch checkpoint of plain tensors" in capsys.readouterr().err


def test_full_config_is_gen3c_7b():
    config = Gen3CTransformerConfig.full()
    shapes = gen3c_checkpoint.released_shapes(config)
    assert shapes["net.x_embedder.proj.1.weight"] == (4096, 328)
    assert config.in_channels == 81 and config.width == 4096
    assert sum(1 for k in shapes if k.endswith("blocks.0.block.attn.to_q.0.weight")) == 28
    parameters = sum(math.prod(s) for s in shapes.values())
    assert 7.0e9 < parameters < 7.5e9


# ---------------------------------------------------------------------- text embeddings


def test_text_embeddings_file_and_prompt_encoding(tmp_path):
    prompt, negative = torch.randn(2, 1, 6, 8)
    path = save_text_embeddings(tmp_path / "t.safetensors", prompt, negative)
    loaded = load_text_embeddings(path)
    assert torch.equal(loaded[0], prompt) and torch.equal(loaded[1], negative)
    save_text_embeddings(tmp_path / "bad.safetensors", prompt, negative)
    with pytest.raises(CheckpointError, match="share one"):
        save_text_embeddings(tmp_path / "bad.safetensors", prompt, negative[:, :3])
    with pytest.raises(CheckpointError, match="encode-text"):
        load_text_embeddings(tmp_path / "missing.safetensors")

    def tokenizer(texts, **options):
        assert options["padding"] == "max_length" and options["max_length"] == 5
        lengths = [1 + len(t.split()) for t in texts]  # words + end token
        mask = torch.tensor([[int(j < n) for j in range(5)] for n in lengths])
        return SimpleNamespace(
            input_ids=torch.ones(len(texts), 5, dtype=torch.long), attention_mask=mask
        )

    def encoder(ids, attention_mask):
        return SimpleNamespace(last_hidden_state=torch.ones(*ids.shape, 3))

    embeds = encode_prompts(tokenizer, encoder, ["", "two words"], max_sequence_length=5)
    assert embeds.shape == (2, 5, 3)
    assert embeds[0, :1].eq(1).all() and embeds[0, 1:].eq(0).all()  # zero after the tokens
    assert embeds[1, :3].eq(1).all() and embeds[1, 3:].eq(0).all()
