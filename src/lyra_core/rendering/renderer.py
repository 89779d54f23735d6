"""Render Gaussian scenes: the one public entry point, :func:`render`.

Backends:

- ``"gsplat"``: ``gsplat.rasterization`` (CUDA). Picked by ``"auto"`` when the cameras are on a
  CUDA device and gsplat imports.
- ``"native"``: the same maths as ``"torch"`` in a C++ extension for the CPU (projection and
  tile rasterisation, forward and analytic backward; :mod:`~lyra_core.rendering.backends.native`).
  Picked by ``"auto"`` on the CPU when it is built; otherwise ``"auto"`` warns once and uses
  ``"torch"``.
- ``"torch"``: the project's tile-based, vectorised PyTorch rasteriser (any device, CPU included),
  with gsplat's maths: EWA projection, 0.3 px low-pass dilation, front-to-back compositing,
  alpha threshold 1/255 and early stop at transmittance 1e-4.
- ``"reference"``: brute force per pixel, for tests on small scenes.

All backends are differentiable. Cameras follow :mod:`lyra_core.geometry.cameras` (OpenCV axes,
pixel
centres on integer coordinates).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lyra_core.geometry.cameras import Cameras
from lyra_core.rendering.backends.gsplat import gsplat_available, render_gsplat
from lyra_core.rendering.backends.native import (
    native_extension,
    project_gaussians_native,
    rasterize_native,
)
from lyra_core.rendering.backends.reference import rasterize_reference
from lyra_core.rendering.backends.tiles import rasterize_tiles
from lyra_core.rendering.projection import corner_based_Ks, project_gaussians
from lyra_core.rendering.spherical_harmonics import sh_to_rgb
from lyra_core.scene.gaussians import Gaussians, TimeMode
from lyra_core.utils.checks import check_finite

Backend = Literal["auto", "gsplat", "native", "torch", "reference"]

GSPLAT_TILE_SIZE = 16
NATIVE_TILE_SIZE = 16
TORCH_TILE_SIZE = 8  # smaller tiles waste fewer (Gaussian, pixel) evaluations on CPU


@dataclass
class RenderOutput:
    """Rendered images of C cameras.

    Attributes:
        rgb: (C, H, W, 3) colour composited over the background.
        alpha: (C, H, W, 1) accumulated opacity in [0, 1].
        depth: (C, H, W, 1) expected camera z-depth in meters (sum of w*z / alpha), 0 where
            nothing was hit.
        backend: the backend that rendered it.
        means2d: (C, N, 2) projected Gaussian centres in pixels, part of the autograd graph
            (call ``retain_grad()`` on it before ``backward`` to read the view-space gradients
            that 3DGS densification uses); None for empty scenes.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    backend: str
    means2d: Tensor | None = None


def available_backends() -> list[str]:
    """Backends that can run on this machine."""
    backends = ["torch", "reference"]
    if native_extension() is not None:
        backends.insert(0, "native")
    if torch.cuda.is_available() and gsplat_available():
        backends.insert(0, "gsplat")
    return backends


def render(
    gaussians: Gaussians,
    cameras: Cameras,
    *,
    background: Sequence[float] | Tensor | None = None,
    near: float = 0.01,
    far: float = 1e10,
    backend: Backend = "auto",
    eps2d: float = 0.3,
    tile_size: int | None = None,
    chunk_size: int = 32,
    time: float | None = None,
    time_mode: TimeMode = "step",
) -> RenderOutput:
    """Render a scene from a batch of cameras to RGB, alpha and expected depth.

    Args:
        gaussians: the scene (N Gaussians, any SH degree up to 3).
        cameras: C cameras sharing one image size.
        background: RGB in [0, 1] behind the scene, default black.
        near, far: camera z range rendered, meters (0 < near < far), converted with float().
        backend: ``"auto"``, ``"gsplat"``, ``"native"``, ``"torch"`` or ``"reference"``.
            ``"auto"`` is gsplat for CUDA cameras, native for float32 CPU cameras when it is
            built, and torch otherwise (also float64, and cameras that require grad: only torch
            differentiates camera poses).
        eps2d: low-pass dilation of the 2D covariances, pixels^2.
        tile_size: tile edge in pixels; default 16 for gsplat and native, 8 for torch (each the
            fastest on its device).
        chunk_size: Gaussians per tile per step of the torch backend.
        time: world time, seconds, at which a 4D world (``gaussians.times`` set) is rendered
            (:meth:`Gaussians.at_time`: clamped into the world's time range); required for
            a 4D world, ignored for a 3D one.
        time_mode: ``"step"`` or ``"blend"`` (:meth:`Gaussians.at_time`).

    Raises:
        ValueError: non-finite or malformed scene, cameras, background or planes (the message
            names the field), or a backend that cannot run here.
    """
    gaussians.validate()
    if gaussians.times is not None:
        if time is None:
            raise ValueError("a 4D world (Gaussians with times) needs time= (seconds) to render")
        gaussians = gaussians.at_time(time, time_mode)
    elif time is not None:
        gaussians.at_time(time, time_mode)  # the same checks of time and mode as a 4D world
    _check_planes(near, far)
    _check_tiling(tile_size, chunk_size)
    bg = _background_tensor(background, cameras.Ks)
    chosen = _choose_backend(backend, cameras)
    if len(gaussians) == 0:
        return _empty_render(cameras, bg, chosen)
    gaussians = gaussians.to(device=cameras.Ks.device, dtype=cameras.Ks.dtype)
    if chosen == "gsplat":
        rgb, alpha, depth, means2d = render_gsplat(
            gaussians,
            cameras,
            bg,
            near=float(near),
            far=float(far),
            eps2d=eps2d,
            tile_size=tile_size or GSPLAT_TILE_SIZE,
        )
        return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, backend=chosen, means2d=means2d)

    opacities = gaussians.opacities
    project = project_gaussians_native if chosen == "native" else project_gaussians
    projected = project(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        opacities,
        cameras.viewmats,
        corner_based_Ks(cameras.Ks),
        cameras.width,
        cameras.height,
        eps2d=eps2d,
        near=float(near),
        far=float(far),
    )
    colors = sh_to_rgb(gaussians.sh, gaussians.means, cameras.centers)  # (C, N, 3)
    features = torch.cat([colors, projected.depths[..., None]], dim=-1)
    if chosen == "native":
        accumulated, trans = rasterize_native(
            projected,
            features,
            opacities,
            cameras.width,
            cameras.height,
            tile_size=tile_size or NATIVE_TILE_SIZE,
        )
    elif chosen == "torch":
        accumulated, trans = rasterize_tiles(
            projected,
            features,
            opacities,
            cameras.width,
            cameras.height,
            tile_size=tile_size or TORCH_TILE_SIZE,
            chunk_size=chunk_size,
        )
    else:
        accumulated, trans = rasterize_reference(
            projected, features, opacities, cameras.width, cameras.height
        )
    alpha = (1.0 - trans)[..., None]
    rgb = accumulated[..., :3] + trans[..., None] * bg
    depth = accumulated[..., 3:] / alpha.clamp_min(1e-10)
    return RenderOutput(
        rgb=rgb, alpha=alpha, depth=depth, backend=chosen, means2d=projected.means2d
    )


def _choose_backend(backend: str, cameras: Cameras) -> str:
    device = cameras.Ks.device
    if backend == "auto":
        if device.type == "cuda":
            return "gsplat" if gsplat_available() else "torch"
        if _native_fits(cameras) and native_extension() is not None:
            return "native"
        return "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError("backend 'gsplat' needs cameras and Gaussians on a CUDA device")
        if not gsplat_available():
            raise ValueError("backend 'gsplat' requested but gsplat is not importable")
        return backend
    if backend == "native":
        if device.type != "cpu" or cameras.Ks.dtype != torch.float32:
            raise ValueError(
                "backend 'native' renders float32 on the CPU, got cameras of dtype "
                f"{cameras.Ks.dtype} on {device}"
            )
        if native_extension() is None:
            raise ValueError(
                "backend 'native' requested but the native CPU rasteriser is not available "
                "(python -m lyra_core.rendering.backends.native shows why)"
            )
        return backend
    if backend in ("torch", "reference"):
        return backend
    raise ValueError(f"unknown backend {backend!r}; use auto, gsplat, native, torch or reference")


def _native_fits(cameras: Cameras) -> bool:
    """float32 CPU cameras that need no gradient: what the native backend renders."""
    needs_grad = cameras.camtoworlds.requires_grad or cameras.Ks.requires_grad
    return cameras.Ks.device.type == "cpu" and cameras.Ks.dtype == torch.float32 and not needs_grad


def _check_planes(near: float, far: float) -> None:
    for name, value in (("near", near), ("far", far)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        number = float(value) if isinstance(value, numbers.Real) else math.nan
        if isinstance(value, bool) or math.isnan(number) or number <= 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not float(near) < float(far):
        raise ValueError(f"near ({near}) must be smaller than far ({far})")


def _check_tiling(tile_size: int | None, chunk_size: int) -> None:
    for name, value in (("tile_size", tile_size), ("chunk_size", chunk_size)):
        if value is None and name == "tile_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _background_tensor(background: Sequence[float] | Tensor | None, like: Tensor) -> Tensor:
    if background is None:
        return like.new_zeros(3)
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device).reshape(-1)
    if bg.shape != (3,):
        raise ValueError(f"background must hold 3 values (RGB), got shape {tuple(bg.shape)}")
    check_finite("background", bg)
    return bg


def _empty_render(cameras: Cameras, background: Tensor, backend: str) -> RenderOutput:
    shape = (len(cameras), cameras.height, cameras.width)
    zeros = background.new_zeros(*shape, 1)
    return RenderOutput(
        rgb=background.expand(*shape, 3).clone(), alpha=zeros, depth=zeros.clone(), backend=backend
    )
