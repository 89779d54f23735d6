"""Self-distillation: the student's loss on a scene sample (Lyra's loss on renders at target
cameras, plus optional terms on the pixel-aligned Gaussians)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lyra_core.data.format import SceneSample, TargetViews, scene_inputs
from lyra_core.geometry.cameras import Cameras
from lyra_core.models.decoder import DecoderOutput
from lyra_core.pipelines.student import LyraStudent
from lyra_core.rendering import RenderOutput, render
from lyra_core.scene.gaussians import Gaussians
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
    output = student(*scene_inputs(sample))
    return decoded_loss(student, sample, output, targets, weights, perceptual, prune_ratio)


def decoded_loss(
    student: LyraStudent,
    sample: SceneSample,
    output: DecoderOutput,
    targets: TargetViews,
    weights: LossWeights | None = None,
    perceptual=None,
    prune_ratio: float = 0.0,
    aligned_terms: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Lyra's loss on an already decoded scene: ``output``'s Gaussians rendered at the target
    cameras (on their device) against the targets, pruned as :func:`distillation_loss` says,
    plus the pixel-aligned terms where weighted and ``aligned_terms`` is set (they need this
    package's decoder: one Gaussian per pixel of the latent frames).

    Args:
        student: the student that decoded ``output`` (its latent frames index the terms on the
            pixel-aligned Gaussians).
        sample: the scene (background; trajectory frames for the pixel-aligned terms).
        output: the decoder's output for ``sample``, leading dims (1, V, T', H, W).
        targets: the views to render and compare with.
        weights: the loss weights (default: Lyra's, without the perceptual term).
        perceptual: the perceptual metric of the ``perceptual`` term, if weighted.
        prune_ratio: share of the least opaque Gaussians left out of the renders.
        aligned_terms: add the pixel-aligned terms (:func:`pixel_aligned_terms`).

    Returns:
        The loss (a scalar with gradients) and its terms as floats.
    """
    weights = weights or LossWeights(perceptual=0.0)
    gaussians = output.to_gaussians()
    kept = gaussians.prune_by_opacity(prune_ratio) if prune_ratio > 0 else gaussians
    rendered = render_targets(kept, targets, sample.background)
    device = gaussians.means.device
    loss, terms = lyra_loss(
        rendered.rgb,
        targets.rgb.to(device),
        rendered.depth[..., 0],
        targets.depth.to(device),
        gaussians.opacities,
        weights,
        perceptual,
    )
    if aligned_terms:
        for name, value in pixel_aligned_terms(student, sample, output, weights).items():
            loss = loss + getattr(weights, name) * value
            terms[name] = float(value.detach())
    return loss, terms


def render_targets(
    gaussians: Gaussians, targets: TargetViews, background: Sequence[float]
) -> RenderOutput:
    """``gaussians`` rendered at the K target cameras (moved to the Gaussians' device), at the
    targets' image size W x H, over ``background`` (RGB in [0, 1]): (K, H, W, .) renders."""
    height, width = targets.rgb.shape[1:3]
    device = gaussians.means.device
    cameras = Cameras(targets.camtoworlds.to(device), targets.Ks.to(device), width, height)
    return render(gaussians, cameras, background=background)


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
