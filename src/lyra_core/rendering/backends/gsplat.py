"""The CUDA backend: gsplat.rasterization, called with the project's conventions."""

from __future__ import annotations

import functools

from torch import Tensor

from lyra_core.geometry.cameras import Cameras
from lyra_core.rendering.projection import corner_based_Ks
from lyra_core.scene.gaussians import Gaussians


@functools.cache
def gsplat_available() -> bool:
    """True when gsplat imports (it needs CUDA tensors to run)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA toolchain at import time
        return False
    return True


def render_gsplat(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Tensor,
    *,
    near: float,
    far: float,
    eps2d: float,
    tile_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render with gsplat. Returns rgb (C,H,W,3), alpha (C,H,W,1), expected depth (C,H,W,1)
    and the projected means (C,N,2), pixels, whose gradient (``retain_grad``) drives 3DGS
    densification as on the other backends (gsplat's ``meta["means2d"]``, unpacked)."""
    from gsplat import rasterization

    num_cams = len(cameras)
    colors, alphas, meta = rasterization(
        means=gaussians.means,
        quats=gaussians.quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=gaussians.sh,
        viewmats=cameras.viewmats,
        Ks=corner_based_Ks(cameras.Ks),
        width=cameras.width,
        height=cameras.height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=gaussians.sh_degree,
        backgrounds=background.expand(num_cams, 3),
        render_mode="RGB+ED",
        tile_size=tile_size,
        rasterize_mode="classic",
        packed=False,
    )
    return colors[..., :3], alphas, colors[..., 3:], meta["means2d"]
