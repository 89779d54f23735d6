"""Perceptual image distances (ST-LPIPS, LPIPS v0.1) with networks defined in the project.

:mod:`.networks` defines the backbones and heads, :mod:`.weights` reads their local weight files,
:mod:`.metric` is the distance (:class:`PerceptualMetric`, :func:`load_perceptual`).
"""

from lyra_core.models.perceptual.metric import PerceptualMetric, load_perceptual
from lyra_core.models.perceptual.networks import (
    LPIPS_LINEAR_FILES,
    PERCEPTUAL_NAMES,
    TORCHVISION_FILES,
)
from lyra_core.models.perceptual.weights import (
    STLPIPS_FILES,
    lpips_state_dict,
    stlpips_weights_path,
)

__all__ = [
    "LPIPS_LINEAR_FILES",
    "PERCEPTUAL_NAMES",
    "STLPIPS_FILES",
    "TORCHVISION_FILES",
    "PerceptualMetric",
    "load_perceptual",
    "lpips_state_dict",
    "stlpips_weights_path",
]
