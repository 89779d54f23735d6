"""Perceptual image distances (ST-LPIPS, LPIPS) with networks defined in the project."""

from lyra_core.models.perceptual.metric import PerceptualMetric, load_perceptual

__all__ = ["PerceptualMetric", "load_perceptual"]
