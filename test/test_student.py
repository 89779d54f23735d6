"""The student pipeline, real self-distillation training steps on a procedural scene, and
student folders that do not fit their config."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from lyra_core.data.format import scene_inputs, scene_targets
from lyra_core.data.generator import GeneratorConfig, generate_scene
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.student import LyraStudent
from lyra_core.training.distill import distillation_loss
from lyra_core.training.losses import LossWeights
from lyra_core.utils.errors import CheckpointError

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


def test_pruned_training_renders_the_most_opaque_and_regularises_all(sample):
    """prune_ratio renders only the kept Gaussians (a different image, gradients to them only)
    while the opacity term still averages over every Gaussian."""
    student = make_student()
    targets = scene_targets(sample)
    weights = LossWeights(mse=1.0, perceptual=0.0, depth=0.0, opacity=1.0)
    _, full = distillation_loss(student, sample, targets, weights)
    pruned_loss, pruned = distillation_loss(student, sample, targets, weights, prune_ratio=0.8)
    assert pruned["opacity"] == pytest.approx(full["opacity"])
    assert pruned["mse"] != pytest.approx(full["mse"])
    pruned_loss.backward()
    head = student.decoder.head.bias.grad
    assert head is not None and torch.isfinite(head).all() and head.abs().sum() > 0


def test_pixel_aligned_term_trains_the_gaussians_towards_their_pixels(sample):
    student = make_student()
    targets = scene_targets(sample)
    weights = LossWeights(
        mse=0.0, perceptual=0.0, depth=0.0, opacity=0.0, aligned=1.0, aligned_log_depth=0.5
    )
    optimizer = torch.optim.Adam(student.decoder.parameters(), lr=3e-3)
    aligned = []
    for _ in range(10):
        loss, terms = distillation_loss(student, sample, targets, weights, prune_ratio=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        aligned.append(terms["aligned"])
    assert loss.item() == pytest.approx(terms["aligned"] + 0.5 * terms["aligned_log_depth"])
    assert min(aligned[-3:]) < 0.8 * aligned[0], aligned


def test_mismatched_vae_and_decoder_are_refused():
    config = LyraDecoderConfig.tiny()
    config.latent_channels = 8
    with pytest.raises(ValueError, match="channels"):
        LyraStudent(VideoVAE.tiny(), LyraDecoder(config))


def _edit_json(path, **changes):
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


STUDENT_MISFITS = {
    "VAE weights of another shape": (
        lambda f: _edit_json(f / "vae" / "config.json", decode_block_out_channels=[16, 32, 32, 32]),
        "video VAE",
    ),
    "decoder config not JSON": (
        lambda f: (f / "decoder" / "config.json").write_text("{oops"),
        "not a LyraDecoderConfig",
    ),
    "decoder of another width": (
        lambda f: _edit_json(f / "decoder" / "config.json", width=32),
        "does not match its config",
    ),
    "student.json not an object": (
        lambda f: (f / "student.json").write_text("[]"),
        "not a valid student config",
    ),
}


@pytest.mark.parametrize("misfit", STUDENT_MISFITS)
def test_a_student_folder_that_does_not_fit_its_config_raises_checkpoint_error(
    misfit, tiny_student_checkpoint, tmp_path
):
    corrupt, message = STUDENT_MISFITS[misfit]
    folder = tmp_path / "student"
    shutil.copytree(tiny_student_checkpoint, folder)
    corrupt(folder)
    with pytest.raises(CheckpointError, match=message) as info:
        LyraStudent.from_pretrained(folder)
    assert str(folder) in str(info.value)
