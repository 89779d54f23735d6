"""The 3D cache (GEN3C / Lyra): the input view unprojected with its depth, rendered along the
camera trajectories over black. It is what the student reads, so the training data
(:mod:`lyra_core.data.procedural`) and inference (:mod:`lyra_core.pipelines.world`) both make it
here.

Renders are batched over cameras and returned on the CPU: colour as uint8 (the training data
stores uint8, so inference quantises the same way), depth in meters and the coverage mask
``alpha > 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_core.utils.media import to_uint8

CACHE_BACKGROUND: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Colour behind the 3D cache: black, where the cache does not cover the view."""

DEFAULT_BATCH_SIZE = 17
"""Cameras per render call (the generator's default, :class:`GeneratorConfig`)."""

__all__ = [
    "CACHE_BACKGROUND",
    "DEFAULT_BATCH_SIZE",
    "Renders",
    "cache_gaussians",
    "render_cache",
    "render_views",
]


@dataclass
class Renders:
    """Renders of N cameras on the CPU.

    Attributes:
        rgb: (N, H, W, 3) uint8.
        depth: (N, H, W) float32 meters, 0 where alpha <= 0.5.
        mask: (N, H, W) bool, alpha > 0.5.
    """

    rgb: Tensor
    depth: Tensor
    mask: Tensor


def render_views(
    gaussians: Gaussians,
    camtoworlds: Tensor,
    intrinsics: Intrinsics,
    background: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Renders:
    """Render (N, 4, 4) float32 camera-to-world poses on ``device``, ``batch_size`` at a time.

    Args:
        gaussians: the scene, world frame.
        camtoworlds: (N, 4, 4) poses, OpenCV camera axes.
        intrinsics: shared by every camera (H x W of the renders).
        background: RGB in [0, 1] where nothing is hit.
        device: torch device to render on.
        batch_size: cameras per render call.
    """
    gaussians = gaussians.to(device=device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(camtoworlds), batch_size):
            poses = camtoworlds[start : start + batch_size].to(device)
            cams = Cameras.from_intrinsics(poses, intrinsics)
            out = render(gaussians, cams, background=background)
            parts.append((out.rgb.cpu(), out.alpha[..., 0].cpu(), out.depth[..., 0].cpu()))
    rgb, alpha, depth = (torch.cat([p[i] for p in parts]) for i in range(3))
    mask = alpha > 0.5
    depth = torch.where(mask, depth, torch.zeros_like(depth)).to(torch.float32)
    return Renders(torch.from_numpy(to_uint8(rgb)), depth, mask)


def cache_gaussians(
    rgb: Tensor | np.ndarray,
    depth: Tensor | np.ndarray,
    intrinsics: Intrinsics,
    camtoworld: Tensor,
) -> Gaussians:
    """The 3D cache of an input view: one Gaussian per pixel with valid depth.

    Args:
        rgb: (H, W, 3) uint8 input colour.
        depth: (H, W) float32 meters along the optical axis; 0, NaN or inf where unknown.
        intrinsics: of the input view (W x H).
        camtoworld: (4, 4) float32 input camera pose, OpenCV axes.

    Returns:
        Gaussians in the world frame (:func:`lyra_core.scene.rgbd.gaussians_from_rgbd`, defaults).
    """
    return gaussians_from_rgbd(rgb, depth, intrinsics, camtoworld)


def render_cache(
    cache: Gaussians,
    camtoworlds: Tensor,
    intrinsics: Intrinsics,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Renders:
    """Render the 3D cache at (N, 4, 4) float32 poses over :data:`CACHE_BACKGROUND`."""
    return render_views(cache, camtoworlds, intrinsics, CACHE_BACKGROUND, device, batch_size)
