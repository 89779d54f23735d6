"""The 3D cache (GEN3C / Lyra): the input view unprojected with its depth, rendered along the
camera trajectories over black. It is what the student reads, so the training data
(:mod:`lyra_core.data.generator`) and inference (:mod:`lyra_core.pipelines.world`) both make it
here.

:func:`render_views` is the one batched renderer of the data, the cache and the evaluation: as
uint8 colour on the CPU (``output_type="uint8"``; the training data stores uint8, so inference
quantises the same way) or as float colour in [0, 1] on the render device
(``output_type="float"``, for metrics), with depth in meters and the coverage mask
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
    "OUTPUT_TYPES",
    "Renders",
    "cache_gaussians",
    "render_cache",
    "render_views",
]


@dataclass
class Renders:
    """Renders of N cameras (see :func:`render_views` for where they live).

    Attributes:
        rgb: (N, H, W, 3) uint8, or float32 in [0, 1] (``output_type="float"``).
        depth: (N, H, W) float32 meters, 0 where alpha <= 0.5.
        mask: (N, H, W) bool, alpha > 0.5.
    """

    rgb: Tensor
    depth: Tensor
    mask: Tensor


OUTPUT_TYPES: tuple[str, ...] = ("uint8", "float")
"""What :func:`render_views` returns: uint8 colour on the CPU, or float colour on the device."""


def render_views(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Sequence[float],
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_type: str = "uint8",
) -> Renders:
    """Render ``gaussians`` at every camera, ``batch_size`` cameras per render call (no grad).

    Args:
        gaussians: the scene, world frame.
        cameras: N cameras (OpenCV axes); their image size is the renders'.
        background: RGB in [0, 1] where nothing is hit.
        device: torch device to render on; default the Gaussians' device.
        batch_size: cameras per render call.
        output_type: ``"uint8"``: colour quantised to uint8 (what the data stores), all three
            tensors on the CPU; ``"float"``: colour as float32 in [0, 1] (clamped, not
            quantised), all three on ``device``.

    Returns:
        :class:`Renders` of the N cameras, in camera order.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = gaussians.means.device if device is None else torch.device(device)
    gaussians = gaussians.to(device=device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(cameras), batch_size):
            batch = cameras[start : start + batch_size].to(device)
            out = render(gaussians, batch, background=background)
            parts.append((out.rgb.clamp(0.0, 1.0), out.alpha[..., 0], out.depth[..., 0]))
    rgb, alpha, depth = (torch.cat([p[i] for p in parts]) for i in range(3))
    mask = alpha > 0.5
    depth = torch.where(mask, depth, torch.zeros_like(depth)).to(torch.float32)
    if output_type == "float":
        return Renders(rgb.to(torch.float32), depth, mask)
    return Renders(torch.from_numpy(to_uint8(rgb)), depth.cpu(), mask.cpu())


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
    """Render the 3D cache at (N, 4, 4) float32 poses sharing ``intrinsics`` over
    :data:`CACHE_BACKGROUND`: uint8 colour, depth and mask on the CPU (:func:`render_views`)."""
    cameras = Cameras.from_intrinsics(camtoworlds, intrinsics)
    return render_views(cache, cameras, CACHE_BACKGROUND, device, batch_size)
