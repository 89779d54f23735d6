"""EWA projection of 3D Gaussians to image-space 2D Gaussians, in pure PyTorch.

The maths is gsplat's (``fully_fused_projection`` of gsplat 1.5, pinhole camera): world to
camera, perspective Jacobian with the field-of-view clamp, a 0.3 px low-pass dilation of the 2D
covariance, and an opacity-aware bounding box (the ellipse where alpha >= 1/255).

Pixel coordinates here are *corner-based* like gsplat's: the image spans [0, W] x [0, H] and the
centre of pixel (row i, column j) is (j + 0.5, i + 0.5). The public intrinsics of
:mod:`lyra_core.geometry.cameras` are OpenCV's (pixel centres on integers); :func:`corner_based_Ks`
converts between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
"""Smallest alpha a Gaussian contributes to a pixel (gsplat's ``ALPHA_THRESHOLD``)."""

MAX_ALPHA = 0.999
"""Largest alpha of one Gaussian at one pixel (gsplat)."""

TRANSMITTANCE_EPS = 1e-4
"""A pixel stops (excluding the Gaussian that would cross it) once transmittance reaches this."""

MAX_EXTENT = 3.33
"""Cap of the bounding-box half-width in standard deviations (gsplat)."""


@dataclass
class ProjectedGaussians:
    """Gaussians projected into C cameras.

    Attributes:
        means2d: (C, N, 2) centres in corner-based pixel coordinates.
        conics: (C, N, 3) upper triangle (a, b, c) of the inverse 2D covariance, pixels^-2.
        depths: (C, N) camera-space z, meters.
        radii: (C, N, 2) int32 half-extent of the bounding box in pixels, 0 where culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor

    @property
    def visible(self) -> Tensor:
        """(C, N) bool: Gaussians that touch the image."""
        return (self.radii > 0).all(dim=-1)


def corner_based_Ks(Ks: Tensor) -> Tensor:
    """OpenCV intrinsics (pixel centres on integers) -> corner-based ones (gsplat), (..., 3, 3)."""
    shifted = Ks.clone()
    shifted[..., 0, 2] = Ks[..., 0, 2] + 0.5
    shifted[..., 1, 2] = Ks[..., 1, 2] + 0.5
    return shifted


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from quaternions (..., 4) in (w, x, y, z) order."""
    w, x, y, z = (quats * torch.rsqrt((quats * quats).sum(dim=-1, keepdim=True))).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariances_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances R S S R^T, (N, 3, 3), from quats (N, 4) wxyz and scales (N, 3)."""
    rs = quat_to_rotmat(quats) * scales[..., None, :]
    return rs @ rs.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> ProjectedGaussians:
    """Project N world Gaussians into C pinhole cameras.

    Args:
        means: (N, 3) world centres, meters.
        quats: (N, 4) rotations (w, x, y, z), need not be normalised.
        scales: (N, 3) standard deviations along the local axes, meters.
        opacities: (N,) opacities in [0, 1]; used for the opacity-aware bounding box.
        viewmats: (C, 4, 4) world-to-camera transforms (OpenCV camera axes).
        Ks: (C, 3, 3) corner-based intrinsics (see :func:`corner_based_Ks`).
        width, height: image size, pixels.
        eps2d: low-pass dilation added to the 2D covariance diagonal, pixels^2.
        near, far: z range kept, meters.
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]  # (C, 3, 3), (C, 3)
    means_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None]  # (C, N, 3)
    # Camera-space square root of the covariance: Sigma_c = L L^T with L = R_cam R_q S.
    sqrt_cov = torch.einsum("cij,njk->cnik", rot, quat_to_rotmat(quats) * scales[:, None, :])
    means2d, cov_xx, cov_xy, cov_yy = _perspective(means_c, sqrt_cov, Ks, width, height)

    a, b, c = cov_xx + eps2d, cov_xy, cov_yy + eps2d
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    depths = means_c[..., 2]

    with torch.no_grad():
        radii = _bounding_radii(means2d, a, c, det, depths, opacities, width, height, near, far)
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=depths, radii=radii)


def _perspective(
    means_c: Tensor, sqrt_cov: Tensor, Ks: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pinhole projection of camera-space means and covariances (gsplat's ``_persp_proj``).

    The 2D covariance J Sigma J^T is formed as (J L)(J L)^T from the square root L (C, N, 3, 3).

    Returns:
        means2d (C, N, 2) and the 2D covariance entries xx, xy, yy, each (C, N).
    """
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = means_c.unbind(-1)  # (C, N)
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z * torch.maximum(torch.minimum(x / z, lim_x_pos), -lim_x_neg)
    ty = z * torch.maximum(torch.minimum(y / z, lim_y_pos), -lim_y_neg)

    # Rows of J L with J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]].
    row_x = (fx / z)[..., None] * sqrt_cov[..., 0, :] - (fx * tx / (z * z))[..., None] * (
        sqrt_cov[..., 2, :]
    )
    row_y = (fy / z)[..., None] * sqrt_cov[..., 1, :] - (fy * ty / (z * z))[..., None] * (
        sqrt_cov[..., 2, :]
    )
    cov_xx = (row_x * row_x).sum(-1)
    cov_xy = (row_x * row_y).sum(-1)
    cov_yy = (row_y * row_y).sum(-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    return means2d, cov_xx, cov_xy, cov_yy


def _bounding_radii(
    means2d: Tensor,
    var_x: Tensor,
    var_y: Tensor,
    det: Tensor,
    depths: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
) -> Tensor:
    """Half-extents (C, N, 2) of the alpha >= 1/255 ellipse, 0 for culled Gaussians."""
    opac = opacities[None].expand_as(depths)
    extent = torch.sqrt(2.0 * torch.log((opac / ALPHA_THRESHOLD).clamp_min(1.0)))
    extent = extent.clamp_max(MAX_EXTENT)
    radius = torch.ceil(extent[..., None] * torch.stack([var_x, var_y], dim=-1).sqrt())
    mx, my = means2d.unbind(-1)
    rx, ry = radius.unbind(-1)
    keep = (
        (det > 0)
        & (depths > near)
        & (depths < far)
        & (opac >= ALPHA_THRESHOLD)
        & (mx + rx > 0)
        & (mx - rx < width)
        & (my + ry > 0)
        & (my - ry < height)
        & torch.isfinite(radius).all(dim=-1)
    )
    return torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)


def max_extent_for_opacity(opacity: float) -> float:
    """Bounding-box half-width in standard deviations for one opacity (for docs and tests)."""
    if opacity < ALPHA_THRESHOLD:
        return 0.0
    return min(MAX_EXTENT, math.sqrt(2.0 * math.log(opacity / ALPHA_THRESHOLD)))
