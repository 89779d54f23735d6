"""Image metrics for renders against targets: PSNR, SSIM and a learned perceptual distance
(ST-LPIPS or LPIPS, :mod:`lyra_core.models.perceptual`); :func:`image_metrics` (their means over
a set of views, as ``lyra eval`` and training validation report them) and :func:`coverage_psnr`
(PSNR split by the 3D cache's coverage).

Images are (..., H, W, 3) float tensors in [0, 1] (channels last, like the renderer's output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor

from lyra_core.models.perceptual import PerceptualMetric
from lyra_core.utils.checks import check_finite

__all__ = [
    "MIN_MSE",
    "SSIM_WINDOW",
    "coverage_psnr",
    "image_metrics",
    "perceptual_distance",
    "psnr",
    "ssim",
]

SSIM_WINDOW = 11
"""SSIM window (pixels) of :func:`image_metrics`; smaller images get no SSIM."""

MIN_MSE = 1e-10
"""Floor of the pooled squared error in :func:`coverage_psnr`: PSNR is capped at 100 dB."""


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.dim() < 3 or pred.shape[-1] != 3:
        raise ValueError(f"images must be (..., H, W, 3), got {tuple(pred.shape)}")
    check_finite("pred", pred)
    check_finite("target", target)


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, peak 1.

    Args:
        pred, target: (..., H, W, 3) in [0, 1].
        mask: optional (..., H, W) bool, pixels that count.

    Returns:
        (...) PSNR; inf for identical images.
    """
    _check_pair(pred, target)
    err = (pred - target).square().mean(dim=-1)  # (..., H, W)
    if mask is None:
        mse = err.flatten(-2).mean(-1)
    else:
        weights = mask.to(err.dtype)
        mse = (err * weights).flatten(-2).sum(-1) / weights.flatten(-2).sum(-1).clamp_min(1.0)
    return -10.0 * torch.log10(mse)


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Wang et al. 2004: Gaussian window 11, sigma 1.5,
    K1 0.01, K2 0.03, data range 1), averaged over channels and valid window positions.

    Returns:
        (...) SSIM in [-1, 1].
    """
    _check_pair(pred, target)
    lead = pred.shape[:-3]
    height, width = pred.shape[-3:-1]
    if min(height, width) < window:
        raise ValueError(f"images of {width}x{height} are smaller than the {window}px window")
    x = pred.reshape(-1, height, width, 3).permute(0, 3, 1, 2)
    y = target.reshape(-1, height, width, 3).permute(0, 3, 1, 2)
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(-1).reshape(lead)


def perceptual_distance(pred: Tensor, target: Tensor, metric: PerceptualMetric) -> Tensor:
    """Learned perceptual distance per image (0 for identical images, lower is better).

    The metric is passed in, built once by the caller (its weights are loaded from disk), e.g.
    ``PerceptualMetric.shift_tolerant()`` for ST-LPIPS or ``load_perceptual(name)``.

    Args:
        pred, target: (..., H, W, 3) in [0, 1], on the metric's device; H, W at least
            ``metric.min_size``.

    Returns:
        (...) distances.
    """
    _check_pair(pred, target)
    return metric(pred, target)


def image_metrics(
    rendered: Tensor, target: Tensor, perceptual: PerceptualMetric | None
) -> dict[str, float]:
    """Mean PSNR, SSIM and perceptual distance of N renders against their targets.

    Args:
        rendered, target: (N, H, W, 3) in [0, 1], on the perceptual metric's device.
        perceptual: a learned distance, or None for none.

    Returns:
        ``{"psnr": dB, "ssim": ..., <perceptual.name>: distance}``, each the mean over the N
        views; SSIM only for images at least :data:`SSIM_WINDOW` pixels, the perceptual distance
        only for images at least ``perceptual.min_size``.
    """
    scores = {"psnr": float(psnr(rendered, target).mean())}
    size = min(rendered.shape[-3:-1])
    if size >= SSIM_WINDOW:
        scores["ssim"] = float(ssim(rendered, target, window=SSIM_WINDOW).mean())
    if perceptual is not None and size >= perceptual.min_size:
        with torch.inference_mode():
            distance = perceptual_distance(rendered, target, perceptual)
        scores[perceptual.name] = float(distance.mean())
    return scores


def coverage_psnr(rendered: Tensor, target: Tensor, covered: Tensor) -> dict[str, float]:
    """PSNR (dB) over the pixels the 3D cache covers and over those it leaves empty, and the
    empty share.

    The squared error (mean over RGB) is pooled over every pixel of the region in all N views,
    floored at :data:`MIN_MSE` (so an exact region scores 100 dB, not inf); a region without
    pixels is left out of the result.

    Args:
        rendered, target: (N, H, W, 3) in [0, 1].
        covered: (N, H, W) bool, the cache's mask (alpha > 0.5) at the same views.

    Returns:
        ``{"uncovered_fraction": share of empty pixels in [0, 1], "psnr_covered": dB,
        "psnr_uncovered": dB}``.
    """
    _check_pair(rendered, target)
    if covered.shape != rendered.shape[:-1] or covered.dtype != torch.bool:
        raise ValueError(
            f"covered must be a bool mask of shape {tuple(rendered.shape[:-1])}, got "
            f"{covered.dtype} {tuple(covered.shape)}"
        )
    err = (rendered - target).square().mean(dim=-1)
    scores = {"uncovered_fraction": float((~covered).float().mean())}
    for name, region in (("psnr_covered", covered), ("psnr_uncovered", ~covered)):
        if bool(region.any()):
            scores[name] = float(-10.0 * torch.log10(err[region].mean().clamp_min(MIN_MSE)))
    return scores
