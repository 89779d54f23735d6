"""Which Gaussians a depth camera saw: the test that anchors generated content to observations.

A Gaussian is *seen* by an RGB-D frame when its centre projects inside the image onto a pixel
with a depth measurement and lies in front of, or on, the measured surface (within a relative
``tolerance``). Generated Gaussians that a frame saw are contradicted or confirmed by the
measurement, and either way replaced by it; those behind the surface or outside the frustum are
unobserved and stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import rigid_inverse

__all__ = ["DepthLookup", "lookup_depth", "seen_by_depth"]


@dataclass
class DepthLookup:
    """Points projected into a depth frame.

    Attributes:
        z: (N,) the points' camera z, meters.
        measured: (N,) the frame's depth at their pixel, meters (0: none, or outside).
        u, v: (N,) int64 pixel column and row (meaningful where ``inside``).
        inside: (N,) bool: in front of the camera, inside the image.
    """

    z: Tensor
    measured: Tensor
    u: Tensor
    v: Tensor
    inside: Tensor


def lookup_depth(
    means: Tensor, depth: Tensor, intrinsics: Intrinsics, camtoworld: Tensor
) -> DepthLookup:
    """Project ``means`` (N, 3) into the frame and read its depth (H, W) at their pixels."""
    world_to_camera = rigid_inverse(camtoworld.to(means))
    points = means @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    z = points[:, 2]
    in_front = z > 1e-6
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    u = torch.round(intrinsics.fx * points[:, 0] / safe_z + intrinsics.cx).long()
    v = torch.round(intrinsics.fy * points[:, 1] / safe_z + intrinsics.cy).long()
    inside = in_front & (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
    measured = torch.zeros_like(z)
    measured[inside] = depth.to(means)[v[inside], u[inside]]
    return DepthLookup(z, measured, u, v, inside)


def seen_by_depth(
    means: Tensor,
    depth: Tensor,
    intrinsics: Intrinsics,
    camtoworld: Tensor,
    tolerance: float = 0.05,
) -> Tensor:
    """(N,) bool: the points ``means`` (N, 3) the frame saw (see the module docstring).

    Args:
        means: (N, 3) world points, meters.
        depth: (H, W) z-depth of the frame, meters; 0 where unknown.
        intrinsics: the frame's intrinsics (W x H, OpenCV pixel centres).
        camtoworld: (4, 4) the frame's camera-to-world pose.
        tolerance: a point up to ``tolerance * depth`` behind the surface still counts as on it.
    """
    if len(means) == 0:
        return torch.zeros(0, dtype=torch.bool, device=means.device)
    hit = lookup_depth(means, depth, intrinsics, camtoworld)
    return hit.inside & (hit.measured > 0) & (hit.z <= hit.measured * (1.0 + tolerance))
