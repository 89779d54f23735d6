"""The ``depth`` world source: one Gaussian per pixel of an RGB-D frame.

Every valid pixel becomes a flat disc at its unprojected centre, facing the camera, sized to the
pixel's footprint on the surface (so neighbouring discs overlap like a closed surface), with the
pixel's colour and a high opacity. Cheap, exact at the input view, and honest about what one
frame shows: surfaces hidden from the input camera stay empty (the ``lyra`` source fills them).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import rotation_to_quaternion_wxyz
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.checks import check_finite

FOOTPRINT_SIGMA = 0.6
"""Disc standard deviation in units of the (strided) pixel footprint: discs overlap neighbours."""

DISC_THICKNESS = 0.1
"""Disc thickness along the viewing axis relative to its radius."""


def gaussians_from_rgbd(
    rgb: Tensor | np.ndarray,
    depth: Tensor | np.ndarray,
    intrinsics: Intrinsics,
    camtoworld: Tensor | np.ndarray | None = None,
    *,
    stride: int = 1,
    opacity: float = 0.95,
    min_depth: float = 1e-3,
    max_depth: float = math.inf,
    mask: Tensor | np.ndarray | None = None,
) -> Gaussians:
    """Gaussians from a colour image and a registered depth map.

    Args:
        rgb: (H, W, 3) colour, uint8 or float in [0, 1].
        depth: (H, W) depth along the optical axis in meters; 0, NaN, inf or values outside
            [min_depth, max_depth] mark pixels without a measurement (skipped).
        intrinsics: pinhole intrinsics of the image (width W, height H).
        camtoworld: (4, 4) pose of the camera in the world (OpenCV axes); identity if None.
        stride: keep every stride-th pixel in both directions (discs grow to match).
        opacity: opacity of every disc, in (0, 1).
        mask: optional (H, W) bool: only these pixels become Gaussians.

    Returns:
        Gaussians in world coordinates (float32, SH degree 0), one per valid kept pixel.

    Raises:
        ValueError: mismatched sizes, a non-finite pose, or bad stride/opacity/depth range.
    """
    rgb_t = _as_tensor(rgb)
    depth_t = _as_tensor(depth).to(torch.float32)
    size = (intrinsics.height, intrinsics.width)
    if rgb_t.dim() != 3 or rgb_t.shape[-1] != 3 or tuple(rgb_t.shape[:2]) != size:
        raise ValueError(f"rgb must have shape {(*size, 3)} (intrinsics), got {tuple(rgb_t.shape)}")
    if tuple(depth_t.shape) != size:
        raise ValueError(f"depth must have shape {size} like the image, got {tuple(depth_t.shape)}")
    _check_options(stride, opacity, min_depth, max_depth)
    pose = torch.eye(4) if camtoworld is None else _as_tensor(camtoworld).to(torch.float32)
    if pose.shape != (4, 4):
        raise ValueError(f"camtoworld must have shape (4, 4), got {tuple(pose.shape)}")
    check_finite("camtoworld", pose)

    colors = rgb_t.to(torch.float32) / 255.0 if rgb_t.dtype == torch.uint8 else rgb_t.float()
    rows = torch.arange(0, size[0], stride)
    cols = torch.arange(0, size[1], stride)
    z = depth_t[rows][:, cols]
    valid = torch.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    if mask is not None:
        keep = _as_tensor(mask).to(torch.bool)
        if tuple(keep.shape) != size:
            raise ValueError(f"mask must have shape {size} like the image, got {tuple(keep.shape)}")
        valid &= keep[rows][:, cols]
    v, u = torch.meshgrid(rows.float(), cols.float(), indexing="ij")
    z, u, v = z[valid], u[valid], v[valid]
    points_cam = torch.stack(
        [(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], -1
    )
    rotation = pose[:3, :3]
    means = points_cam @ rotation.T + pose[:3, 3]

    radius = FOOTPRINT_SIGMA * stride * z / math.sqrt(intrinsics.fx * intrinsics.fy)
    scales = torch.stack([radius, radius, DISC_THICKNESS * radius], dim=-1)
    quats = rotation_to_quaternion_wxyz(rotation)[None].expand(len(z), 4)
    return Gaussians.from_activated(
        means=means,
        quats=quats.contiguous(),
        scales=scales,
        opacities=torch.full((len(z),), float(opacity)),
        colors=colors[rows][:, cols][valid].clamp(0.0, 1.0),
    )


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    return (
        value.detach().cpu() if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value))
    )


def _check_options(stride: int, opacity: float, min_depth: float, max_depth: float) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must be in (0, 1), got {opacity!r}")
    if not (0.0 <= min_depth < max_depth):
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth!r}, {max_depth!r}")
