"""The Lyra student decoder: shapes, multi-view fusion, activations, save/load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.utils.errors import CheckpointError

B, V, T, C, h, w = 1, 2, 2, 16, 4, 6
H, W = h * 8, w * 8


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, V, T, C, h, w, generator=gen)
    poses = torch.stack(
        [
            look_at((0.1 * i - 0.1, 0.0, 0.05 * t), (0.0, 0.0, 3.0))
            for i in range(V)
            for t in range(T)
        ]
    ).reshape(B, V, T, 4, 4)
    Ks = Intrinsics.from_fov(1.0, W, H).matrix().expand(B, V, T, 3, 3)
    return latents, poses, Ks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LyraDecoder(LyraDecoderConfig.tiny()).eval()


def test_one_gaussian_per_pixel_per_latent_frame_per_view(model):
    out = model(*inputs())
    assert out.means.shape == (B, V, T, H, W, 3)
    assert out.quats.shape == (B, V, T, H, W, 4) and out.rgb.shape == (B, V, T, H, W, 3)
    assert out.opacity_logits.shape == out.depth.shape == (B, V, T, H, W)
    assert len(out.to_gaussians()) == V * T * H * W


def test_activations_follow_lyra(model):
    latents, poses, Ks = inputs()
    out = model(latents, poses, Ks)
    cfg = model.config
    assert ((out.depth >= cfg.near) & (out.depth <= cfg.far)).all()
    assert (out.scales <= cfg.max_scale + 1e-6).all() and (out.scales > 0).all()
    torch.testing.assert_close(out.quats.norm(dim=-1), torch.ones_like(out.depth))
    assert ((out.rgb >= 0) & (out.rgb <= 1)).all()
    # every Gaussian lies on its pixel's ray at its depth
    origins = poses[..., None, None, :3, 3]
    offsets = out.means - origins
    torch.testing.assert_close(offsets.norm(dim=-1), out.depth, rtol=1e-4, atol=1e-4)


def test_z_depth_is_the_depth_map_convention(model):
    """z-depth = ray distance x cos(angle to the optical axis): equal at the principal point,
    smaller towards the corners; and a Gaussian at z-depth d projects back to its pixel."""
    latents, poses, Ks = inputs()
    out = model(latents, poses, Ks)
    z = out.z_depth(poses)
    assert z.shape == out.depth.shape
    assert (z <= out.depth + 1e-5).all() and (z > 0.5 * out.depth).all()
    assert (out.depth[..., 0, 0] - z[..., 0, 0] > (out.depth - z)[..., H // 2, W // 2]).all()
    worldtocams = torch.linalg.inv(poses)[..., None, None, :, :]
    points = (worldtocams[..., :3, :3] @ out.means[..., None])[..., 0] + worldtocams[..., :3, 3]
    torch.testing.assert_close(points[..., 2], z, rtol=1e-4, atol=1e-4)
    pixels = (Ks[..., None, None, :, :] @ (points / points[..., 2:])[..., None])[..., 0]
    # the Gaussian of pixel (row 5, column 7) projects to that pixel's centre (OpenCV: integers)
    torch.testing.assert_close(
        pixels[0, 0, 0, 5, 7, :2], torch.tensor([7.0, 5.0]), atol=1e-3, rtol=0
    )


def test_all_views_are_fused_into_one_sequence(model):
    latents, poses, Ks = inputs()
    base = model(latents, poses, Ks)
    changed = latents.clone()
    changed[:, 1] += 1.0  # only view 1's latents
    out = model(changed, poses, Ks)
    assert not torch.allclose(out.rgb[:, 0], base.rgb[:, 0])  # view 0 sees view 1


def test_plucker_embedding_starts_at_zero(model):
    latents, poses, Ks = inputs()
    moved = poses.clone()
    moved[..., :3, 3] += 0.5
    a, b = model(latents, poses, Ks), model(latents, moved, Ks)
    torch.testing.assert_close(a.rgb, b.rgb)  # zero-initialised: cameras only move the rays
    torch.testing.assert_close(b.means - a.means, torch.full_like(a.means, 0.5))


def test_pruning_keeps_the_most_opaque_fifth(model):
    out = model(*inputs())
    full, pruned = out.to_gaussians(), out.to_gaussians(prune_ratio=0.8)
    assert len(pruned) == round(0.2 * len(full))
    assert pruned.opacities.min() >= torch.quantile(full.opacities, 0.79)


def test_backward_reaches_every_parameter(model):
    train = LyraDecoder(model.config)
    out = train(*inputs())
    (out.rgb.mean() + out.depth.mean() + out.opacities.mean()).backward()
    for name, param in train.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_all_transformer_variant_of_the_same_size():
    cfg = LyraDecoderConfig.tiny()
    cfg.transformer_layers = tuple(range(cfg.num_layers))
    out = LyraDecoder(cfg)(*inputs())
    assert out.means.shape == (B, V, T, H, W, 3)


def test_save_and_load_round_trip(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "student")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = LyraDecoder.from_pretrained(folder).eval()
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(*inputs()).means, model(*inputs()).means)


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


DECODER_CORRUPTIONS = {
    "another width": (lambda f: _edit_config(f, width=32), "does not match its config"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{not json"), "config.json"),
    "config not an object": (lambda f: (f / "config.json").write_text("[1]"), "JSON object"),
    "unknown config key": (lambda f: _edit_config(f, widht=32), "widht"),
    "invalid config value": (lambda f: _edit_config(f, transformer_layers=[9]), "transformer"),
    "weights unreadable": (
        lambda f: (f / "model.safetensors").write_bytes(b"garbage"),
        "unreadable weights",
    ),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors"),
    "no folder": (lambda f: shutil.rmtree(f), "no decoder at"),
}


@pytest.mark.parametrize("corruption", DECODER_CORRUPTIONS)
def test_mismatched_or_corrupt_checkpoints_raise_checkpoint_error(model, tmp_path, corruption):
    corrupt, message = DECODER_CORRUPTIONS[corruption]
    folder = model.save_pretrained(tmp_path / "decoder")
    corrupt(folder)
    with pytest.raises(CheckpointError, match=message) as info:
        LyraDecoder.from_pretrained(folder)
    assert str(folder) in str(info.value) and isinstance(info.value, ValueError)


def test_bad_inputs_and_configs():
    with pytest.raises(ValueError, match="transformer_layers"):
        LyraDecoderConfig(num_layers=4, transformer_layers=(4,))
    with pytest.raises(ValueError, match="channels"):
        LyraDecoder(LyraDecoderConfig.tiny())(torch.zeros(B, V, T, 3, h, w), *inputs()[1:])
