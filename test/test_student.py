"""The student pipeline and real self-distillation training steps on a procedural scene."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from lyra_core.data.procedural import GeneratorConfig, generate_scene
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.vae import VideoVAE
from lyra_core.student import LyraStudent, distillation_loss, scene_inputs, scene_targets

CONFIG = GeneratorConfig(width=32, height=32, num_frames=9, num_heldout=2, num_gaussians=4000)


@pytest.fixture(scope="module")
def sample():
    return generate_scene(7, CONFIG)


def make_student() -> LyraStudent:
    torch.manual_seed(0)
    return LyraStudent(VideoVAE.tiny(), LyraDecoder(LyraDecoderConfig.tiny()))


def test_student_decodes_six_trajectories_into_one_world(sample):
    student = make_student()
    videos, poses, Ks = scene_inputs(sample)
    assert videos.shape == (6, 9, 32, 32, 3)
    out = student(videos, poses, Ks)
    assert out.means.shape == (1, 6, 2, 32, 32, 3)  # 9 frames -> 2 latent frames
    assert student.latent_frame_indices(9).tolist() == [0, 8]
    assert not any(p.requires_grad for p in student.vae.parameters())


def test_training_steps_reduce_the_distillation_loss(sample):
    student = make_student()
    targets = scene_targets(sample)
    assert targets.rgb.shape == (6 + 2, 32, 32, 3)
    optimizer = torch.optim.Adam(student.decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, terms = distillation_loss(student, sample, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert set(terms) == {"mse", "depth", "opacity"}
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_mismatched_vae_and_decoder_are_refused():
    config = LyraDecoderConfig.tiny()
    config.latent_channels = 8
    with pytest.raises(ValueError, match="channels"):
        LyraStudent(VideoVAE.tiny(), LyraDecoder(config))
