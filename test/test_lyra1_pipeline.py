"""Lyra-1's released student as a pipeline, at a reduced size on the CPU: videos or generator
latents in, the same Gaussians as composing the tokenizer and the decoder by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

pytest.importorskip("diffusers")

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.lyra1 import Lyra1Decoder, encode_plucker
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.lyra1 import Lyra1Student
from lyra_core.utils.errors import CheckpointError

B, V, T, H, W = 1, 2, 9, 32, 48


def small(dynamic: bool = False) -> Lyra1Decoder:
    base = LyraDecoderConfig.lyra1_dynamic() if dynamic else LyraDecoderConfig.lyra1()
    config = replace(
        base, width=64, num_layers=2, num_heads=1, transformer_layers=(1,), d_state=16, head_dim=16
    )
    torch.manual_seed(0)
    decoder = Lyra1Decoder(config).eval()
    for embed in (decoder.plucker_embed, decoder.time_embed, decoder.target_time_embed):
        torch.nn.init.normal_(embed.proj.weight, std=0.1)  # make the conditioning matter
    return decoder


def cameras():
    poses = torch.stack(
        [look_at((0.3 * v, 0.0, 0.05 * t), (0.0, 0.0, 3.0)) for v in range(V) for t in range(T)]
    ).reshape(B, V, T, 4, 4)
    return poses, Intrinsics.from_fov(1.0, W, H).matrix().expand(B, V, T, 3, 3)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VideoVAE.tiny().eval()


def test_videos_in_gaussians_out_as_composed_by_hand(vae):
    decoder = small()
    student = Lyra1Student(vae, decoder, device="cpu")
    videos = torch.rand(B, V, T, H, W, 3, generator=torch.Generator().manual_seed(0))
    poses, Ks = cameras()
    out = student(poses, Ks, videos=videos)
    assert out.means.shape == (B, V, T, H // 8, W // 8, 3)
    with torch.no_grad():
        raw = vae.encode_raw(videos.reshape(B * V, T, H, W, 3) * 2 - 1)
        plucker = encode_plucker(vae, poses, Ks, H, W)
        expected = decoder(raw.reshape(B, V, *raw.shape[1:]), plucker, poses, Ks)
    assert_close(out.means, expected.means)
    assert_close(out.rgb, expected.rgb)
    # the generator's stored latents (0.5 x normalised) give the same Gaussians
    stored = 0.5 * vae.normalize(raw).reshape(B, V, *raw.shape[1:])
    assert_close(student(poses, Ks, latents=stored, latent_scale=0.5).rgb, expected.rgb)


def test_dynamic_student_needs_and_reads_the_target_time(vae):
    student = Lyra1Student(vae, small(dynamic=True), device="cpu", offload=True)
    videos = torch.rand(B, V, T, H, W, 3, generator=torch.Generator().manual_seed(1))
    poses, Ks = cameras()
    with pytest.raises(ValueError, match="target_time"):
        student(poses, Ks, videos=videos)
    early = student(poses, Ks, videos=videos, target_time=0)
    late = student(poses, Ks, videos=videos, target_time=8)
    assert not torch.allclose(early.rgb, late.rgb)
    assert next(student.decoder.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="exactly one"):
        student(poses, Ks)


def test_folders_load_and_a_student_decoder_is_refused(vae, tmp_path):
    decoder_folder = small().save_pretrained(tmp_path / "decoder")
    vae.save_pretrained(tmp_path / "vae")
    student = Lyra1Student.from_pretrained(decoder_folder, tmp_path / "vae", device="cpu")
    assert isinstance(student.decoder, Lyra1Decoder)
    other = LyraDecoder(LyraDecoderConfig.tiny()).save_pretrained(tmp_path / "student")
    with pytest.raises(CheckpointError, match="not a Lyra-1 decoder"):
        Lyra1Student.from_pretrained(other, tmp_path / "vae")
