"""The video VAE wrapper around diffusers (offline, tiny Cosmos architecture): shapes, latent
statistics, save/load, and refusal of folders that do not fit their config."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from lyra_core.models.vae import VideoVAE
from lyra_core.utils.errors import CheckpointError
from tokenizer_files import write_cosmos_folder

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE.tiny().eval()


def test_cosmos_compression_factors(vae):
    frames = torch.rand(2, 17, 32, 48, 3)
    with torch.no_grad():
        latents = vae.encode(frames)
        decoded = vae.decode(latents)
    assert latents.shape == (2, vae.latent_frames(17), 16, 4, 6) == (2, 3, 16, 4, 6)
    assert decoded.shape == frames.shape
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_bad_shapes_are_refused(vae):
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.encode(torch.rand(1, 10, 32, 32, 3))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.rand(1, 9, 30, 32, 3))
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(torch.rand(1, 2, 4, 4, 4))


def test_save_and_load_a_diffusers_folder(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["_class_name"] == (
        "AutoencoderKLCosmos"
    )
    loaded = VideoVAE.from_pretrained(tmp_path / "vae").eval()
    frames = torch.rand(1, 9, 16, 16, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(frames), vae.encode(frames))


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def _drop_a_weight(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / WEIGHTS))
    state.pop(sorted(state)[0])
    save_file(state, str(folder / WEIGHTS))


VAE_CORRUPTIONS = {
    "no folder": (lambda f: shutil.rmtree(f), "config.json is missing"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{oops"), "not a readable"),
    "not a diffusers model": (lambda f: _edit_config(f, _class_name="NotAModel"), "NotAModel"),
    "weights missing": (lambda f: (f / WEIGHTS).unlink(), "video VAE"),
    "weights truncated": (
        lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:300]),
        "video VAE",
    ),
    "a weight missing": (_drop_a_weight, "missing"),
    "weights of another shape": (
        lambda f: _edit_config(f, encoder_block_out_channels=[8, 32, 32, 32]),
        "video VAE",
    ),
}


@pytest.mark.parametrize("corruption", VAE_CORRUPTIONS)
def test_folders_that_do_not_fit_raise_checkpoint_error(vae, tmp_path, corruption):
    corrupt, message = VAE_CORRUPTIONS[corruption]
    vae.save_pretrained(tmp_path / "vae")
    corrupt(tmp_path / "vae")
    with pytest.raises(CheckpointError, match=message) as info:
        VideoVAE.from_pretrained(tmp_path / "vae")
    assert str(tmp_path / "vae") in str(info.value)


def test_per_frame_latent_statistics_are_applied():
    torch.manual_seed(0)
    base = VideoVAE.tiny().eval()
    stats = {"latents_mean": [0.5] * 16 * 4, "latents_std": [2.0] * 16 * 4}
    from diffusers import AutoencoderKLCosmos

    shifted = VideoVAE(AutoencoderKLCosmos.from_config({**base.vae.config, **stats}))
    shifted.vae.load_state_dict(base.vae.state_dict())
    frames = torch.rand(1, 9, 16, 16, 3)
    with torch.no_grad():
        torch.testing.assert_close(shifted.encode(frames), (base.encode(frames) - 0.5) / 2.0)


def test_architecture_overrides_set_the_compression():
    """A 4x space / 4x time variant: 17 frames of 48x64 -> 5 latent frames of 12x16."""
    torch.manual_seed(0)
    vae = VideoVAE.tiny(spatial_compression_ratio=4, temporal_compression_ratio=4, patch_size=2)
    assert (vae.spatial_factor, vae.temporal_factor) == (4, 4)
    frames = torch.rand(1, 17, 48, 64, 3)
    with torch.no_grad():
        latents = vae.encode(frames)
        assert latents.shape == (1, 5, 16, 12, 16)
        assert vae.decode(latents).shape == frames.shape
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.encode(torch.rand(1, 17, 46, 64, 3))


# ------------------------------------------------------------------ released Cosmos tokenizer


def test_cosmos_jit_tokenizer_encodes_like_the_released_one(tmp_path):
    encoder, decoder, (mean, std) = write_cosmos_folder(tmp_path / "tok")
    vae = VideoVAE.from_cosmos_jit(tmp_path / "tok")
    frames = torch.rand(2, 17, 16, 24, 3)
    with torch.no_grad():
        latents = vae.encode(frames)
        raw = encoder(frames.permute(0, 4, 1, 2, 3) * 2 - 1)[0]  # what Cosmos itself gives
    assert latents.shape == (2, 3, 16, 2, 3)
    expected = (raw - mean[None, :, :3, None, None]) / std[None, :, :3, None, None]
    torch.testing.assert_close(latents, expected.permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(vae.denormalize(latents), raw.permute(0, 2, 1, 3, 4))
    with torch.no_grad():
        video = vae.decode(latents)
        reference = decoder(raw)
    assert video.shape == frames.shape
    torch.testing.assert_close(video, ((reference + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1))


def test_chunked_encoding_equals_whole_and_raw_signals_pass_unscaled(tmp_path):
    write_cosmos_folder(tmp_path / "tok")
    vae = VideoVAE.from_cosmos_jit(tmp_path / "tok")
    frames = torch.rand(3, 9, 16, 16, 3)
    with torch.no_grad():
        whole = vae.encode(frames)
        chunked = vae.encode(frames, batch_size=1)
        raw = vae.encode_raw(frames * 2 - 1, batch_size=2)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(vae.normalize(raw), whole)
    with pytest.raises(ValueError, match="batch_size"):
        vae.encode(frames, batch_size=0)


def test_diffusers_and_jit_paths_share_the_api(vae, tmp_path):
    write_cosmos_folder(tmp_path / "tok")
    jit = VideoVAE.from_cosmos_jit(tmp_path / "tok")
    frames = torch.rand(1, 9, 16, 16, 3)
    with torch.no_grad():
        a, b = vae.encode(frames), jit.encode(frames)
    assert a.shape == b.shape and vae.latent_frames(9) == jit.latent_frames(9) == 2
    torch.testing.assert_close(vae.denormalize(vae.normalize(a)), a)


def _bad_stats(folder):
    torch.save({"mean": torch.zeros(16)}, folder / "mean_std.pt")


class NotATensor:
    pass


JIT_CORRUPTIONS = {
    "encoder missing": (lambda f: (f / "encoder.jit").unlink(), "encoder.jit is missing"),
    "decoder not TorchScript": (
        lambda f: (f / "decoder.jit").write_bytes(b"garbage"),
        "not a TorchScript module",
    ),
    "stats not a pair": (_bad_stats, r"expected \(mean, std\)"),
    "stats pickle an object": (
        lambda f: torch.save((NotATensor(), NotATensor()), f / "mean_std.pt"),
        "not plain tensors",
    ),
    "stats of another channel count": (
        lambda f: torch.save((torch.zeros(15), torch.ones(15)), f / "mean_std.pt"),
        "16 x frames",
    ),
    "zero std": (
        lambda f: torch.save((torch.zeros(16), torch.zeros(16)), f / "mean_std.pt"),
        "std > 0",
    ),
}


@pytest.mark.parametrize("corruption", JIT_CORRUPTIONS)
def test_bad_cosmos_folders_raise_checkpoint_error(tmp_path, corruption):
    corrupt, message = JIT_CORRUPTIONS[corruption]
    write_cosmos_folder(tmp_path / "tok")
    corrupt(tmp_path / "tok")
    with pytest.raises(CheckpointError, match=message):
        VideoVAE.from_cosmos_jit(tmp_path / "tok")


def test_an_encoder_of_the_wrong_width_is_reported(tmp_path):
    write_cosmos_folder(tmp_path / "tok")
    vae = VideoVAE.from_cosmos_jit(tmp_path / "tok", latent_channels=8)
    with pytest.raises(ValueError, match="expected 8"):
        vae.encode(torch.rand(1, 9, 16, 16, 3))
