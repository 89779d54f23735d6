"""Brute-force per-pixel rasteriser: the readable reference the fast backends are tested against.

Every pixel looks at every visible Gaussian, front to back, in a Python loop over Gaussians
(vectorised over pixels only), exactly like gsplat's CUDA kernel walks its list. Use it on small
scenes only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lyra_core.rendering.projection import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_EPS,
    ProjectedGaussians,
)


def rasterize_reference(
    projected: ProjectedGaussians,
    features: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:
    """Same contract as :func:`lyra_core.rendering.backends.tiles.rasterize_tiles`."""
    images, transmittances = [], []
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=features.dtype, device=features.device),
        torch.arange(width, dtype=features.dtype, device=features.device),
        indexing="ij",
    )
    pixels = torch.stack([cols + 0.5, rows + 0.5], dim=-1)  # (H, W, 2) pixel centres
    for cam in range(features.shape[0]):
        image, trans = _composite_one_camera(projected, features, opacities, pixels, cam)
        images.append(image)
        transmittances.append(trans)
    return torch.stack(images), torch.stack(transmittances)


def _composite_one_camera(
    projected: ProjectedGaussians, features: Tensor, opacities: Tensor, pixels: Tensor, cam: int
) -> tuple[Tensor, Tensor]:
    visible = torch.nonzero(projected.visible[cam]).squeeze(1)
    order = visible[torch.argsort(projected.depths[cam, visible].detach(), stable=True)]
    height, width = pixels.shape[:2]
    image = features.new_zeros(height, width, features.shape[-1])
    trans = features.new_ones(height, width)
    done = torch.zeros(height, width, dtype=torch.bool, device=features.device)
    for g in order.tolist():
        delta = projected.means2d[cam, g] - pixels
        a, b, c = projected.conics[cam, g]
        sigma = (
            0.5 * (a * delta[..., 0] ** 2 + c * delta[..., 1] ** 2)
            + b * delta[..., 0] * (delta[..., 1])
        )
        alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), MAX_ALPHA)
        contributes = (alpha >= ALPHA_THRESHOLD) & ~done
        next_trans = trans * (1.0 - alpha)
        stops = contributes & (next_trans <= TRANSMITTANCE_EPS)
        done = done | stops
        contributes = contributes & ~stops
        weight = torch.where(contributes, alpha * trans, torch.zeros_like(alpha))
        image = image + weight[..., None] * features[cam, g]
        trans = torch.where(contributes, next_trans, trans)
    return image, trans
