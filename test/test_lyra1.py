"""Lyra-1's released decoder: the full-size network on CPU (random weights), its shared
bidirectional Mamba-2, conditioning signals, folders, and the import of released checkpoints."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from lyra_core.cli import main as lyra_main
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig, count_parameters
from lyra_core.models.lyra1 import (
    Lyra1Decoder,
    build_decoder,
    encode_plucker,
    load_decoder,
    time_embedding,
)
from lyra_core.models.lyra1_checkpoint import (
    KEY_MAP,
    infer_config,
    released_shapes,
    to_ours,
    to_released,
)
from lyra_core.models.mamba2 import Mamba2, Mamba2Block, SharedBidirectionalMamba2
from lyra_core.utils.errors import CheckpointError

SPEC = json.loads((Path(__file__).parent / "data" / "lyra1_released_keys.json").read_text())
RELEASED = {name: tuple(shape) for name, shape in SPEC["shapes"].items()}

# reduced input: one view, 2 latent frames (9 video frames), 4 x 6 latent grid (32 x 48 pixels)
B, V, TL, h, w = 1, 1, 2, 4, 6
T, H, W = 9, 32, 48


def small_lyra1(dynamic: bool = False) -> LyraDecoderConfig:
    """Lyra-1's structure at a CPU-friendly size (for the checkpoint tests)."""
    base = LyraDecoderConfig.lyra1_dynamic() if dynamic else LyraDecoderConfig.lyra1()
    return replace(
        base,
        width=64,
        num_layers=4,
        num_heads=1,
        transformer_layers=(1, 3),
        d_state=16,
        head_dim=16,
    )


def inputs(seed: int = 0, views: int = V):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, views, TL, 16, h, w, generator=gen)
    plucker = torch.randn(B, views, TL, 32, h, w, generator=gen)
    poses = torch.stack(
        [look_at((0.2 * v, 0.0, 0.05 * t), (0.0, 0.0, 3.0)) for v in range(views) for t in range(T)]
    ).reshape(B, views, T, 4, 4)
    Ks = Intrinsics.from_fov(1.0, W, H).matrix().expand(B, views, T, 3, 3)
    return latents, plucker, poses, Ks


def time_inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, TL, 16, h, w, generator=gen), torch.randn(B, 1, 16, h, w, generator=gen)


@pytest.fixture(scope="module")
def full_size():
    torch.manual_seed(0)
    return Lyra1Decoder(LyraDecoderConfig.lyra1_dynamic()).eval()


# ------------------------------------------------------------------ the network


def test_full_size_parameter_count_matches_the_released_layout(full_size):
    # 14 Mamba-2 blocks x 1,861,216 + 2 Transformer blocks x 3,152,384 + embeddings 170,048
    # + final norm 1,024 + deconv 221,196: "about 33 M" in the notes
    assert count_parameters(full_size) == SPEC["parameters"] == 32_753_996
    assert abs(count_parameters(full_size) - 33e6) < 1e6
    static = Lyra1Decoder(LyraDecoderConfig.lyra1())
    assert count_parameters(static) == count_parameters(full_size)  # same weights, both files
    kinds = ["T" if i in (7, 15) else "M" for i in range(16)]
    assert [type(b).__name__[0] for b in full_size.blocks] == kinds


def test_released_names_and_shapes_map_one_to_one():
    assert released_shapes(LyraDecoderConfig.lyra1()) == RELEASED
    ours = Lyra1Decoder(small_lyra1()).state_dict()
    assert all(to_ours(to_released(k)) == k for k in ours)
    assert to_ours("enc_blocks.3.mamba.mamba_scans.1.A_log") == "blocks.3.mixer.scans.1.A_log"
    assert to_ours("enc_blocks.7.mlp.fc2.bias") == "blocks.7.mlp.2.bias"
    assert to_ours("patch_time_embed_tgt.norm.weight") == "target_time_embed.norm.weight"
    assert to_ours("gs.something") is None and len(KEY_MAP) == 12
    assert infer_config(RELEASED) == LyraDecoderConfig.lyra1()
    assert infer_config(RELEASED, dynamic=True) == LyraDecoderConfig.lyra1_dynamic()


def test_full_size_forward_on_cpu_places_gaussians_on_block_rays(full_size):
    latents, plucker, poses, Ks = inputs()
    with torch.no_grad():
        out = full_size(latents, plucker, poses, Ks, *time_inputs())
    # one Gaussian per latent cell (8 x 8 pixels) per VIDEO frame per view
    assert out.means.shape == (B, V, T, h, w, 3) and out.rgb.shape == (B, V, T, h, w, 3)
    assert full_size.video_frames(16) == 121
    cfg = full_size.config
    assert ((out.depth >= cfg.near) & (out.depth <= cfg.far)).all()
    assert (out.scales <= cfg.max_scale + 1e-6).all()
    assert_close(out.quats.norm(dim=-1), torch.ones_like(out.depth))
    # each Gaussian projects to the centre of its 8x8 block in its own frame's camera
    worldtocams = torch.linalg.inv(poses)[..., None, None, :, :]
    points = (worldtocams[..., :3, :3] @ out.means[..., None])[..., 0] + worldtocams[..., :3, 3]
    pixels = (Ks[..., None, None, :, :] @ (points / points[..., 2:])[..., None])[..., :2, 0]
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([8 * cols + 3.5, 8 * rows + 3.5], dim=-1).float()
    assert_close(pixels, centres.expand_as(pixels), atol=2e-3, rtol=0)


def test_deconv_is_lyra1s():
    model = Lyra1Decoder(small_lyra1())
    assert model.head.kernel_size == (9, 2, 2)
    assert model.head.stride == (8, 2, 2) and model.head.padding == (4, 0, 0)
    assert model.head.out_channels == 12
    # video frames 0-3 come from latent frame 0 alone, 5-8 from latent frame 1 alone
    x = torch.zeros(1, 64, 2, 2, 3)
    x[:, :, 1] = 1.0
    with torch.no_grad():
        out = model.head(x) - model.head.bias[None, :, None, None, None]
    assert out.shape == (1, 12, 9, 4, 6)
    assert out[:, :, :4].abs().max() == 0 and out[:, :, 5:].abs().min() > 0


def test_zero_initialised_conditioning_only_moves_the_rays():
    torch.manual_seed(0)
    model = Lyra1Decoder(small_lyra1()).eval()
    latents, plucker, poses, Ks = inputs()
    moved = poses.clone()
    moved[..., :3, 3] += 0.5
    with torch.no_grad():
        a = model(latents, plucker, poses, Ks)
        b = model(latents, plucker.roll(1, dims=3), moved, Ks)
    assert_close(a.rgb, b.rgb)
    assert_close(b.means - a.means, torch.full_like(a.means, 0.5))
    with torch.no_grad():
        model.plucker_embed.proj.weight.normal_()
        c = model(latents, plucker.roll(1, dims=3), moved, Ks)
    assert not torch.allclose(c.rgb, a.rgb)


def test_dynamic_model_reads_the_target_time_and_the_static_one_does_not():
    torch.manual_seed(0)
    dynamic = Lyra1Decoder(small_lyra1(dynamic=True)).eval()
    static = Lyra1Decoder(small_lyra1()).eval()
    static.load_state_dict(dynamic.state_dict())
    for embed in (dynamic.time_embed, dynamic.target_time_embed):
        torch.nn.init.normal_(embed.proj.weight)
    times, target = time_inputs()
    with torch.no_grad():
        a = dynamic(*inputs(), times, target)
        b = dynamic(*inputs(), times, target + 1.0)
        s1 = static(*inputs())
        s2 = static(*inputs(), times, target + 1.0)
    assert not torch.allclose(a.rgb, b.rgb)
    assert_close(s1.rgb, s2.rgb)  # the static model ignores times
    with pytest.raises(ValueError, match="time_latents"):
        dynamic(*inputs())


def test_all_views_form_one_sequence():
    torch.manual_seed(0)
    model = Lyra1Decoder(small_lyra1()).eval()
    latents, plucker, poses, Ks = inputs(views=2)
    changed = latents.clone()
    changed[:, 1] += 1.0
    with torch.no_grad():
        a, b = model(latents, plucker, poses, Ks), model(changed, plucker, poses, Ks)
    assert not torch.allclose(a.rgb[:, 0], b.rgb[:, 0])


def test_bad_inputs_are_refused():
    model = Lyra1Decoder(small_lyra1())
    latents, plucker, poses, Ks = inputs()
    with pytest.raises(ValueError, match="plucker_latents"):
        model(latents, plucker[:, :, :, :6], poses, Ks)
    with pytest.raises(ValueError, match="camtoworlds"):
        model(latents, plucker, poses[:, :, :2], Ks[:, :, :2])
    with pytest.raises(ValueError, match="Lyra1Decoder"):
        LyraDecoder(LyraDecoderConfig.lyra1())
    with pytest.raises(ValueError, match="LyraDecoder"):
        Lyra1Decoder(LyraDecoderConfig.tiny())
    with pytest.raises(ValueError, match="architecture"):
        LyraDecoderConfig(architecture="lyra2")


def test_folders_load_as_their_own_class(tmp_path):
    torch.manual_seed(0)
    lyra1 = Lyra1Decoder(small_lyra1()).eval()
    folder = lyra1.save_pretrained(tmp_path / "lyra1")
    loaded = load_decoder(folder).eval()
    assert isinstance(loaded, Lyra1Decoder) and loaded.config == lyra1.config
    with torch.no_grad():
        assert_close(loaded(*inputs()).means, lyra1(*inputs()).means)
    with pytest.raises(CheckpointError, match="not a LyraDecoderConfig"):
        LyraDecoder.from_pretrained(folder)
    student = LyraDecoder(LyraDecoderConfig.tiny()).save_pretrained(tmp_path / "student")
    assert isinstance(load_decoder(student), LyraDecoder)
    assert isinstance(build_decoder(LyraDecoderConfig.lyra1()), Lyra1Decoder)


# ------------------------------------------------------------------ shared bidirectional Mamba-2


def test_shared_bidirectional_mamba2_is_two_scans_between_one_projection_pair():
    torch.manual_seed(0)
    mixer = SharedBidirectionalMamba2(16, d_state=8, head_dim=8, chunk_size=4).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    # each scan equals a complete Mamba2 that carries the shared projections
    directions = []
    for scan, seq in zip(mixer.scans, (x, x.flip(1)), strict=True):
        single = Mamba2(16, d_state=8, head_dim=8, chunk_size=4).double()
        single.load_state_dict(
            {f"in_proj.{k}": v for k, v in mixer.in_proj.state_dict().items()}
            | {f"out_proj.{k}": v for k, v in mixer.out_proj.state_dict().items()}
            | scan.state_dict()
        )
        directions.append(single(seq))
    expected = directions[0] + directions[1].flip(1)  # summed, out_proj is linear
    assert_close(mixer(x), expected)
    # non-causal: the last token moves the first output
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(mixer(y)[:, 0], mixer(x)[:, 0])
    block = Mamba2Block(16, d_state=8, head_dim=8, layout="shared")
    assert sorted(k.split(".")[1] for k in block.state_dict() if k.startswith("mixer.")) == [
        "in_proj",
        "out_proj",
        *["scans"] * 12,
    ]


# ------------------------------------------------------------------ conditioning signals


def test_time_embedding_is_min_max_normalised_t_cos_sin():
    inputs_, target = time_embedding(torch.arange(121.0), 60)
    assert inputs_.shape == (121, 3) and target.shape == (1, 3)
    t = torch.arange(121.0) / 120
    assert_close(inputs_, torch.stack([t, t.cos(), t.sin()], -1))
    assert_close(target, torch.tensor([[0.5, math.cos(0.5), math.sin(0.5)]]))


def test_plucker_rays_are_encoded_half_by_half_as_videos():
    pytest.importorskip("diffusers")
    from lyra_core.geometry.cameras import plucker_rays
    from lyra_core.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE.tiny().eval()
    _, _, poses, Ks = inputs(views=2)
    with torch.no_grad():
        encoded = encode_plucker(vae, poses, Ks, H, W)
        rays = plucker_rays(poses[0, 1], Ks[0, 1], W, H)
        moment = vae.encode_raw(rays[None, ..., :3])
        direction = vae.encode_raw(rays[None, ..., 3:])
    assert encoded.shape == (B, 2, TL, 32, h, w)
    assert_close(encoded[0, 1, :, :16], moment[0])
    assert_close(encoded[0, 1, :, 16:], direction[0])


# ------------------------------------------------------------------ checkpoint import


def released_checkpoint(config: LyraDecoderConfig, seed: int = 0, dtype=torch.float32) -> dict:
    """A state dict with the released names and shapes for ``config`` (random values)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = released_shapes(config)
    return {k: torch.randn(*s, generator=gen).to(dtype) for k, s in shapes.items()}


def test_full_size_release_round_trips_through_the_command(tmp_path, capsys):
    state = released_checkpoint(LyraDecoderConfig.lyra1(), dtype=torch.bfloat16)
    assert {k: tuple(v.shape) for k, v in state.items()} == RELEASED
    path = tmp_path / "lyra_dynamic.pt"
    torch.save({"module": state}, path)
    assert lyra_main(["import-checkpoint", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "dynamic" in capsys.readouterr().out
    folder = tmp_path / "out"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    model = load_decoder(folder)
    assert isinstance(model, Lyra1Decoder)
    assert model.config == LyraDecoderConfig.lyra1_dynamic()
    ours = model.state_dict()
    for name in (
        "enc_blocks.3.mamba.mamba_scans.1.A_log",
        "enc_blocks.15.attn.qkv.weight",
        "patch_plucker_embed.proj.weight",
        "deconv.weight",
        "enc_norm.bias",
    ):
        assert_close(ours[to_ours(name)], state[name].float(), rtol=0, atol=0)


def test_prefixed_and_reduced_checkpoints_import(tmp_path):
    config = small_lyra1()
    state = released_checkpoint(config)
    path = tmp_path / "lyra_static.pt"
    torch.save({"module": {f"module.{k}": v for k, v in state.items()}, "ds_version": "0.14"}, path)
    assert lyra_main(["import-checkpoint", str(path), "--out", str(tmp_path / "out")]) == 0
    model = load_decoder(tmp_path / "out")
    assert model.config == config
    assert_close(
        model.state_dict()["blocks.0.mixer.in_proj.weight"],
        state["enc_blocks.0.mamba.in_proj.weight"],
    )


class Unsafe:
    """Any pickled object that is not a tensor or a plain container."""


def _drop(state):
    del state["enc_blocks.2.mamba.mamba_scans.1.D"]


def _extra(state):
    state["enc_blocks.0.mamba.lambda"] = torch.zeros(3)


def _reshape(state):
    state["deconv.weight"] = torch.zeros(64, 11, 9, 2, 2)  # 11 raw channels, not 12


def _nan(state):
    state["enc_norm.weight"][0] = float("nan")


BAD_CHECKPOINTS = {
    "missing key": (_drop, "missing [enc_blocks.2.mamba.mamba_scans.1.D]"),
    "unexpected key": (_extra, "unexpected [enc_blocks.0.mamba.lambda]"),
    "mis-shaped key": (_reshape, "mis-shaped [deconv.weight (64, 11, 9, 2, 2)"),
    "non-finite value": (_nan, "non-finite values in [enc_norm.weight]"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_checkpoints_that_do_not_fit_are_refused_with_the_list(tmp_path, capsys, case):
    corrupt, needle = BAD_CHECKPOINTS[case]
    state = released_checkpoint(small_lyra1())
    corrupt(state)
    path = tmp_path / "lyra_static.pt"
    torch.save({"module": state}, path)
    assert lyra_main(["import-checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lyra import-checkpoint: error: ")
    assert needle in lines[0] and not (tmp_path / "out").exists()


def _truncated(path):
    torch.save({"module": released_checkpoint(small_lyra1())}, path)
    path.write_bytes(path.read_bytes()[:5000])


UNREADABLE = {
    "truncated": (_truncated, "not a torch checkpoint of plain tensors"),
    "pickled object": (
        lambda p: torch.save({"module": {"patch_embed.proj.weight": Unsafe()}}, p),
        "not a torch checkpoint of plain tensors",
    ),
    "non-tensor entry": (
        lambda p: torch.save({"module": {"patch_embed.proj.weight": [1.0, 2.0]}}, p),
        "not plain tensors: [patch_embed.proj.weight]",
    ),
    "not a dict": (lambda p: torch.save([torch.zeros(1)], p), "expected a dict of weights"),
    "no file": (lambda p: None, "no checkpoint file"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_corrupt_or_unsafe_files_are_refused(tmp_path, capsys, case):
    make, needle = UNREADABLE[case]
    path = tmp_path / "lyra_static.pt"
    make(path)
    assert lyra_main(["import-checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ against the released forward


def _released_scan(sd: dict, prefix: str, zxbcdt: torch.Tensor, head_dim: int) -> torch.Tensor:
    """One ``Mamba2SingleScan`` as released (mamba_split_conv1d_scan_combined semantics),
    written as the plain per-step recurrence: (B, L, 2 d_inner + 2 N + H) -> (B, L, d_inner)."""
    heads = sd[prefix + "dt_bias"].numel()
    d_inner = heads * head_dim
    conv_dim = sd[prefix + "conv1d.weight"].shape[0]
    d_state = (conv_dim - d_inner) // 2
    z, xbc, dt = zxbcdt.split([d_inner, conv_dim, heads], dim=-1)
    length = xbc.shape[1]
    conv = torch.nn.functional.conv1d(
        xbc.transpose(1, 2),
        sd[prefix + "conv1d.weight"],
        sd[prefix + "conv1d.bias"],
        padding=3,
        groups=conv_dim,
    )[..., :length]
    xbc = torch.nn.functional.silu(conv).transpose(1, 2)
    x, b, c = xbc.split([d_inner, d_state, d_state], dim=-1)
    x = x.unflatten(-1, (heads, head_dim))
    dt = torch.nn.functional.softplus(dt + sd[prefix + "dt_bias"])
    a = -torch.exp(sd[prefix + "A_log"])
    state = x.new_zeros(x.shape[0], heads, head_dim, d_state)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * a)[:, :, None, None]
        update = (dt[:, t, :, None] * x[:, t])[..., None] * b[:, t, None, None, :]
        state = decay * state + update
        ys.append((state * c[:, t, None, None, :]).sum(-1) + sd[prefix + "D"][:, None] * x[:, t])
    y = torch.stack(ys, 1).flatten(2) * torch.nn.functional.silu(z)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)
    return y * sd[prefix + "norm.weight"]


def _released_forward(sd: dict, config: LyraDecoderConfig, latents, plucker) -> torch.Tensor:
    """LatentRecon.forward_gaussians up to the raw 12 channels, from the released names."""
    fn = torch.nn.functional
    batch, views, frames, _, h, w = latents.shape
    width = config.width

    def patch(name: str, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(batch * views, *x.shape[2:]).transpose(1, 2)
        y = fn.conv3d(x, sd[name + ".proj.weight"], sd[name + ".proj.bias"], stride=(1, 2, 2))
        y = y.flatten(2).transpose(1, 2)
        return fn.layer_norm(y, (width,), sd[name + ".norm.weight"], sd[name + ".norm.bias"])

    x = patch("patch_embed", latents) + patch("patch_plucker_embed", plucker)
    x = x.reshape(batch, -1, width)
    for i in range(config.num_layers):
        p = f"enc_blocks.{i}."
        if p + "attn.qkv.weight" in sd:
            y = fn.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
            qkv = fn.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
            q, k, v = qkv.unflatten(-1, (3, config.num_heads, -1)).unbind(2)
            scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
            att = torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v).flatten(2)
            x = x + fn.linear(att, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
            y = fn.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
            y = fn.gelu(fn.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
            x = x + fn.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        else:
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * sd[p + "norm.weight"]
            zx = fn.linear(y, sd[p + "mamba.in_proj.weight"])
            scans = p + "mamba.mamba_scans."
            out = _released_scan(sd, scans + "0.", zx, config.head_dim)
            out = out + _released_scan(sd, scans + "1.", zx.flip(1), config.head_dim).flip(1)
            x = x + fn.linear(out, sd[p + "mamba.out_proj.weight"])
    x = fn.layer_norm(x, (width,), sd["enc_norm.weight"], sd["enc_norm.bias"], 1e-6)
    x = x.reshape(batch * views, frames, h // 2, w // 2, width).permute(0, 4, 1, 2, 3)
    raw = fn.conv_transpose3d(
        x, sd["deconv.weight"], sd["deconv.bias"], stride=(8, 2, 2), padding=(4, 0, 0)
    )
    return raw.permute(0, 2, 3, 4, 1)  # (B V, T, h, w, 12)


def test_imported_weights_reproduce_the_released_forward(tmp_path):
    """An independent plain re-implementation of Lyra-1's forward (released names, per-step
    Mamba-2 recurrence, explicit attention) gives the imported decoder's Gaussians."""
    config = replace(small_lyra1(), num_layers=3, transformer_layers=(1,), num_heads=2)
    gen = torch.Generator().manual_seed(3)
    state = {
        k: 0.3 * torch.randn(*shape, generator=gen, dtype=torch.float64)
        for k, shape in released_shapes(config).items()
    }
    for key in state:  # keep the scans stable and the norms near one, as trained ones are
        if key.endswith("A_log"):
            state[key] = state[key].abs().log1p()
        if key.endswith("norm.weight") or key.endswith(("norm1.weight", "norm2.weight")):
            state[key] = 1.0 + state[key]
    path = tmp_path / "lyra_static.pt"
    torch.save({"module": state}, path)
    assert lyra_main(["import-checkpoint", str(path), "--out", str(tmp_path / "out")]) == 0
    model = load_decoder(tmp_path / "out").double().eval()
    latents, plucker, poses, Ks = (t.double() for t in inputs(seed=4, views=2))
    with torch.no_grad():
        out = model(latents, plucker, poses, Ks)
        as_imported = {k: v.float().double() for k, v in state.items()}  # stored as float32
        raw = _released_forward(as_imported, model.config, latents, plucker)
    raw = raw.reshape((*out.depth.shape, 12))
    distance, rgb, scaling, rotation, opacity = raw.split([1, 3, 3, 4, 1], dim=-1)
    weight = torch.sigmoid(distance[..., 0] - 1.65)  # pre_sigmoid_distance_shift -1.65
    assert_close(out.depth, 0.1 * (1 - weight) + 500 * weight)  # dnear 0.1, dfar 500
    assert_close(out.rgb, 0.5 * torch.tanh(rgb) + 0.5)
    assert_close(out.opacities, torch.sigmoid(opacity[..., 0] - 2.0))
    scale_shift = 1 - math.log(0.3)  # gaussian_scale_cap 0.3
    assert_close(out.scales, torch.minimum(torch.exp(scaling - scale_shift), torch.tensor(0.3)))
    assert_close(out.quats, torch.nn.functional.normalize(rotation, dim=-1))


# ------------------------------------------------------------------ CUDA (skipped without a GPU)


def _needs_kernel() -> None:
    from lyra_core.models.ssd import mamba_kernel_available

    if not (torch.cuda.is_available() and mamba_kernel_available()):
        pytest.skip("needs a CUDA GPU and an importable mamba_ssm")


@pytest.mark.cuda
def test_shared_mixer_matches_the_released_fused_path_on_cuda():
    """Lyra-1 runs each scan through mamba_ssm's mamba_split_conv1d_scan_combined."""
    _needs_kernel()
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except ImportError as err:
        pytest.skip(f"mamba_split_conv1d_scan_combined not importable ({err})")
    torch.manual_seed(0)
    mixer = SharedBidirectionalMamba2(128, d_state=64, head_dim=64, chunk_size=64).cuda()
    x = torch.randn(2, 700, 128, device="cuda")
    zx = mixer.in_proj(x)
    outs = []
    for scan, seq in zip(mixer.scans, (zx, zx.flip(1)), strict=True):
        outs.append(
            mamba_split_conv1d_scan_combined(
                seq,
                scan.conv1d.weight[:, 0],
                scan.conv1d.bias,
                scan.dt_bias,
                -torch.exp(scan.A_log),
                D=scan.D,
                chunk_size=256,
                activation="swish",
                rmsnorm_weight=scan.norm.weight,
                rmsnorm_eps=scan.norm.eps,
                headdim=scan.head_dim,
                ngroups=1,
                norm_before_gate=False,
            )
        )
    released = mixer.out_proj(outs[0] + outs[1].flip(1))
    for use_kernel in (True, False):
        for scan in mixer.scans:
            scan.use_kernel = use_kernel
        assert_close(mixer(x), released, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
def test_bf16_decoder_on_cuda_matches_float32_on_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    model = Lyra1Decoder(small_lyra1()).eval()
    torch.nn.init.normal_(model.plucker_embed.proj.weight, std=0.05)
    args = inputs(views=2)
    with torch.no_grad():
        reference = model(*args)
        out = model.to("cuda", torch.bfloat16)(*(a.cuda() for a in args))
    assert out.means.dtype == torch.float32  # positions in float32 whatever the network
    assert_close(out.depth.cpu(), reference.depth, rtol=0.1, atol=0.05)
    assert_close(out.rgb.cpu(), reference.rgb, rtol=0.05, atol=0.05)
