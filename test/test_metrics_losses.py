"""Metrics (PSNR, SSIM, perceptual distance) and the Lyra loss terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lyra_core.evaluation.metrics import perceptual_distance, psnr, ssim
from lyra_core.models.perceptual import PerceptualMetric
from lyra_core.training.losses import (
    LossWeights,
    depth_loss,
    log_depth_loss,
    lyra_loss,
    normalize_depth,
    pixel_aligned_loss,
)


def images(n: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 32, 40, 3, generator=gen, dtype=torch.float64)


def test_psnr_known_values():
    a = torch.zeros(1, 16, 16, 3)
    b = torch.full((1, 16, 16, 3), 0.1)
    torch.testing.assert_close(psnr(b, a), torch.tensor([20.0]))
    assert math.isinf(psnr(a, a).item())
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, :8] = True
    c = b.clone()
    c[:, 8:] = 1.0  # outside the mask: ignored
    torch.testing.assert_close(psnr(c, a, mask), torch.tensor([20.0]))


def test_ssim_properties_and_reference():
    x = images()
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim(noisy, x) < 0.99).all()
    assert (ssim((x + 0.3 * torch.randn_like(x)).clamp(0, 1), x) < ssim(noisy, x)).all()
    skimage = pytest.importorskip("skimage.metrics")
    expected = skimage.structural_similarity(
        noisy[0].numpy(),
        x[0].numpy(),
        channel_axis=-1,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    np.testing.assert_allclose(ssim(noisy[:1], x[:1]).item(), expected, atol=1e-6)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="differ"):
        psnr(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 9, 3))
    with pytest.raises(ValueError, match="pred"):
        psnr(torch.full((1, 8, 8, 3), math.nan), torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))


def test_depth_loss_is_scale_and_shift_invariant():
    gen = torch.Generator().manual_seed(1)
    target = 1.0 + torch.rand(2, 16, 16, generator=gen) * 4
    assert depth_loss(3.0 * target + 2.0, target).item() < 1e-6
    assert depth_loss(torch.rand(2, 16, 16, generator=gen), target).item() > 0.1
    unknown = target.clone()
    unknown[:, :4] = 0.0  # no target there: ignored
    pred = 2.0 * target
    pred[:, :4] = 100.0
    assert depth_loss(pred, unknown).item() < 1e-6
    normalized = normalize_depth(target, torch.ones_like(target, dtype=torch.bool))
    assert normalized.flatten(1).median(1).values.abs().max() < 0.2


def test_lyra_loss_weights_and_gradients():
    rgb = images(1).float().requires_grad_(True)
    target = images(1, seed=1).float()
    depth = (1 + torch.rand(1, 32, 40)).requires_grad_(True)
    opac = torch.rand(100, requires_grad=True)
    weights = LossWeights(perceptual=0.0, opacity=0.1)
    total, terms = lyra_loss(rgb, target, depth, depth.detach() * 2, opac, weights)
    expected = terms["mse"] + 0.05 * terms["depth"] + 0.1 * terms["opacity"]
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert rgb.grad.abs().sum() > 0 and opac.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="perceptual"):
        lyra_loss(rgb, target, depth, depth, opac, LossWeights())
    total, terms = lyra_loss(
        rgb, target, depth, depth, opac, LossWeights(), perceptual=lambda a, b: (a - b).abs().mean()
    )
    assert "perceptual" in terms


def test_pixel_aligned_loss_is_zero_only_for_matching_gaussians():
    torch.manual_seed(0)
    rgb, depth = torch.rand(3, 8, 8, 3), 1.0 + 4.0 * torch.rand(3, 8, 8)
    assert pixel_aligned_loss(rgb, depth, rgb, depth).item() == pytest.approx(0.0, abs=1e-7)
    # depth is compared up to scale and shift (the teacher's depth is), colour exactly
    assert pixel_aligned_loss(rgb, 2.0 * depth + 1.0, rgb, depth).item() < 1e-6
    moved = pixel_aligned_loss(rgb, depth.flip(-1), rgb, depth)
    recoloured = pixel_aligned_loss(rgb.flip(-2), depth, rgb, depth)
    assert moved.item() > 0.05 and recoloured.item() > 0.05


def test_log_depth_loss_sees_scale_and_skips_pixels_without_depth():
    torch.manual_seed(0)
    depth = 1.0 + 4.0 * torch.rand(2, 6, 6)
    target = depth.clone()
    target[0, 0, 0] = 0.0  # nothing hit: ignored
    assert log_depth_loss(depth, target).item() == pytest.approx(0.0, abs=1e-7)
    assert log_depth_loss(2.0 * depth, target).item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert depth_loss(2.0 * depth, target).item() < 1e-6  # the scale-invariant term cannot


def test_perceptual_distance_and_loss_term():
    metric = PerceptualMetric()  # untrained weights: the wiring, not the values
    pred, target = images(2).float(), images(2, seed=1).float()
    torch.testing.assert_close(perceptual_distance(pred, target, metric), metric(pred, target))
    assert perceptual_distance(pred, target, metric).shape == (2,)
    with pytest.raises(ValueError, match="pred"):
        perceptual_distance(torch.full_like(pred, math.nan), target, metric)
    rgb = pred.clone().requires_grad_(True)
    depth = 1 + torch.rand(2, 32, 40)
    total, terms = lyra_loss(
        rgb, target, depth, depth, torch.rand(10), LossWeights(), perceptual=metric.loss
    )
    assert terms["perceptual"] == pytest.approx(float(metric(pred, target).mean()), rel=1e-5)
    expected = terms["mse"] + 0.5 * terms["perceptual"] + 0.05 * terms["depth"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
