"""Real spherical harmonics up to degree 3, in the 3DGS / gsplat convention."""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis functions at unit directions.

    Args:
        degree: 0..3.
        dirs: (..., 3) unit vectors.

    Returns:
        (..., (degree + 1) ** 2) basis values.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be in 0..3, got {degree}")
    terms = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        terms += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        terms += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        terms += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(terms, dim=-1)


def sh_to_rgb(sh: Tensor, means: Tensor, camera_centers: Tensor) -> Tensor:
    """View-dependent colours of N Gaussians seen from C cameras.

    Args:
        sh: (N, K, 3) coefficients, K = (degree + 1) ** 2.
        means: (N, 3) Gaussian centres, meters.
        camera_centers: (C, 3) camera centres, meters.

    Returns:
        (C, N, 3) colours, clamped at 0 from below like gsplat (no upper clamp).
    """
    degree = round(sh.shape[1] ** 0.5) - 1
    if degree == 0:
        rgb = (SH_C0 * sh[:, 0] + 0.5).clamp_min(0.0)
        return rgb[None].expand(camera_centers.shape[0], -1, -1)
    dirs = torch.nn.functional.normalize(means[None] - camera_centers[:, None], dim=-1)
    basis = sh_basis(degree, dirs)  # (C, N, K)
    return (torch.einsum("cnk,nkd->cnd", basis, sh) + 0.5).clamp_min(0.0)
