"""Lyra's training loss: MSE + perceptual + scale-invariant depth + opacity L1.

    L = w_mse MSE(rgb) + w_perceptual P(rgb) + w_depth D(depth) + w_opacity mean(opacity)

with Lyra's weights 1, 0.5, 0.05 and 0 (0.1 in the pruning stage). The depth term is a
smooth-L1 between depths normalised per image by their median and mean absolute deviation from
it, so the teacher's depth only has to be right up to scale and shift. The perceptual term is a
callable, e.g. ``PerceptualMetric.shift_tolerant().loss`` (ST-LPIPS, see
:mod:`lyra_core.models.perceptual.metric`); without one its weight must be 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor


@dataclass
class LossWeights:
    """Weights of the loss terms (Lyra's defaults)."""

    mse: float = 1.0
    perceptual: float = 0.5
    depth: float = 0.05
    opacity: float = 0.0
    aligned: float = 0.0  # beyond Lyra's loss: see pixel_aligned_loss
    aligned_log_depth: float = 0.0  # beyond Lyra's loss: see log_depth_loss


def normalize_depth(depth: Tensor, mask: Tensor) -> Tensor:
    """(depth - median) / mean |depth - median| per image over ``mask``; 0 outside it.

    Args:
        depth: (N, H, W) depths.
        mask: (N, H, W) bool, valid pixels.
    """
    flat, valid = depth.flatten(1), mask.flatten(1)
    filled = torch.where(valid, flat, torch.nan)
    median = filled.nanmedian(dim=1, keepdim=True).values.nan_to_num(0.0)
    deviation = (flat - median).abs()
    mad = (deviation * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
    normalized = (flat - median) / mad.clamp_min(1e-6)
    return torch.where(valid, normalized, 0.0).reshape(depth.shape)


def depth_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Smooth-L1 between median/MAD-normalised depths (scale and shift invariant), (N, H, W)."""
    if mask is None:
        mask = target > 0
    mask = mask & torch.isfinite(target) & torch.isfinite(pred)
    diff = F.smooth_l1_loss(
        normalize_depth(pred, mask), normalize_depth(target, mask), reduction="none"
    )
    return (diff * mask).sum() / mask.sum().clamp_min(1)


def lyra_loss(
    rgb: Tensor,
    target_rgb: Tensor,
    depth: Tensor,
    target_depth: Tensor,
    opacities: Tensor,
    weights: LossWeights | None = None,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The total loss and its terms (as floats, for logging).

    Args:
        rgb, target_rgb: (N, H, W, 3) in [0, 1].
        depth, target_depth: (N, H, W), target 0 where unknown.
        opacities: any shape, the Gaussians' opacities.
        perceptual: (pred, target) -> scalar, on (N, H, W, 3) images.
    """
    weights = weights or LossWeights()
    if weights.perceptual and perceptual is None:
        raise ValueError("a perceptual weight needs a perceptual loss callable (or weight 0)")
    terms = {
        "mse": F.mse_loss(rgb, target_rgb),
        "depth": depth_loss(depth, target_depth),
        "opacity": opacities.mean(),
    }
    if weights.perceptual:
        terms["perceptual"] = perceptual(rgb, target_rgb)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def pixel_aligned_loss(
    rgb: Tensor, depth: Tensor, target_rgb: Tensor, target_depth: Tensor
) -> Tensor:
    """A direct loss on pixel-aligned Gaussians (not part of Lyra's loss; weight ``aligned``).

    The decoder puts one Gaussian on every pixel ray of every latent frame's camera, so the
    teacher's frame at that camera says what the Gaussian should be: MSE between each Gaussian's
    colour and its pixel, plus :func:`depth_loss` between its depth in that camera and the
    pixel's depth. It supervises colour and geometry where they are predicted instead of only
    through the composited render, where Gaussians of other frames overlap them.

    Args:
        rgb, target_rgb: (N, H, W, 3) in [0, 1]; Gaussian colours and the frames' pixels.
        depth, target_depth: (N, H, W) z-depths; the Gaussians' and the frames'.
    """
    return F.mse_loss(rgb, target_rgb) + depth_loss(depth, target_depth)


def log_depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean |log pred - log target| over pixels with a target depth, (N, H, W) -> scalar.

    Unlike :func:`depth_loss` it sees scale: use it only where the target depths share the
    cameras' metric scale (procedural data, a 3D cache's depth), as the weight
    ``aligned_log_depth`` on the pixel-aligned Gaussians' z-depths.
    """
    mask = (target > 0) & torch.isfinite(target) & torch.isfinite(pred)
    diff = (pred.clamp_min(1e-6).log() - target.clamp_min(1e-6).log()).abs()
    return (diff * mask).sum() / mask.sum().clamp_min(1)
