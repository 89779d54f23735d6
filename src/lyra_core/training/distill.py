"""Self-distillation: the student's loss on a scene sample (Lyra's loss on renders at target
cameras, plus optional terms on the pixel-aligned Gaussians)."""

from __future__ import annotations

import torch
from torch import Tensor

from lyra_core.data.format import SceneSample, TargetViews, scene_inputs
from lyra_core.geometry.cameras import Cameras
from lyra_core.models.decoder import DecoderOutput
from lyra_core.pipelines.student import LyraStudent
from lyra_core.rendering import render
from lyra_core.training.losses import LossWeights, log_depth_loss, lyra_loss, pixel_aligned_loss


def distillation_loss(
    student: LyraStudent,
    sample: SceneSample,
    targets: TargetViews,
    weights: LossWeights | None = None,
    perceptual=None,
    prune_ratio: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Decode the scene, render the Gaussians at the target cameras, compare (Lyra's loss).

    ``prune_ratio`` > 0 renders only the most opaque ``1 - prune_ratio`` of the Gaussians, as
    inference does (Lyra's pruning stage; gradients reach the kept ones); the opacity term still
    covers all of them, so it keeps pushing the unused ones towards transparent. Terms on the
    pixel-aligned Gaussians are added where weighted (:func:`pixel_aligned_terms`).
    """
    weights = weights or LossWeights(perceptual=0.0)
    output = student(*scene_inputs(sample))
    gaussians = output.to_gaussians()
    kept = gaussians.prune_by_opacity(prune_ratio) if prune_ratio > 0 else gaussians
    height, width = targets.rgb.shape[1:3]
    cameras = Cameras(targets.camtoworlds, targets.Ks, width, height)
    rendered = render(kept, cameras, background=sample.background)
    loss, terms = lyra_loss(
        rendered.rgb,
        targets.rgb,
        rendered.depth[..., 0],
        targets.depth,
        gaussians.opacities,
        weights,
        perceptual,
    )
    for name, value in pixel_aligned_terms(student, sample, output, weights).items():
        loss = loss + getattr(weights, name) * value
        terms[name] = float(value.detach())
    return loss, terms


def pixel_aligned_terms(
    student: LyraStudent, sample: SceneSample, output: DecoderOutput, weights: LossWeights
) -> dict[str, Tensor]:
    """The loss terms on the pixel-aligned Gaussians whose weights are non-zero (beyond Lyra's
    loss): ``aligned`` (:func:`lyra_core.training.losses.pixel_aligned_loss`) and
    ``aligned_log_depth``
    (:func:`lyra_core.training.losses.log_depth_loss`), each against the trajectory frame at the
    latent
    frame's camera."""
    if not (weights.aligned or weights.aligned_log_depth):
        return {}
    views = list(sample.trajectories.values())
    frames = student.latent_frame_indices(views[0].rgb.shape[0])
    poses = torch.stack([v.camtoworlds[frames] for v in views])[None]  # (1, V, T', 4, 4)
    z_depth = output.z_depth(poses.to(output.means)).flatten(0, 2)  # (V T', H, W)
    frame_depth = torch.stack([v.depth[frames] for v in views]).flatten(0, 1).to(z_depth)
    terms = {}
    if weights.aligned:
        frame_rgb = torch.stack([v.rgb[frames] for v in views]).flatten(0, 1).to(z_depth) / 255.0
        terms["aligned"] = pixel_aligned_loss(
            output.rgb.flatten(0, 2), z_depth, frame_rgb, frame_depth
        )
    if weights.aligned_log_depth:
        terms["aligned_log_depth"] = log_depth_loss(z_depth, frame_depth)
    return terms
