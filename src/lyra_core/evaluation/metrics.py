"""Image metrics for renders against targets: PSNR, SSIM and a learned perceptual distance
(ST-LPIPS or LPIPS, :mod:`lyra_core.models.perceptual.metric`).

Images are (..., H, W, 3) float tensors in [0, 1] (channels last, like the renderer's output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor

from lyra_core.models.perceptual.metric import PerceptualMetric
from lyra_core.utils.checks import check_finite


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
