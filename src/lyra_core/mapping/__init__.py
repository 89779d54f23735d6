"""Mapping: worlds that grow with a camera feed.

:class:`GaussianMap` integrates posed frames (adds Gaussians where the map is unobserved, keeps
keyframes, refines over a window, prunes, densifies, stays within a budget and keeps generated
content only where nothing was observed); :mod:`.occlusion` fills the background behind one
RGB-D frame's depth edges; :class:`PosedFrame` is the input.
"""

from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.gaussian_map import GaussianMap, IntegrationResult, MapConfig
from lyra_core.mapping.occlusion import BackgroundLayer, OcclusionFillConfig, background_layer

__all__ = [
    "BackgroundLayer",
    "GaussianMap",
    "IntegrationResult",
    "MapConfig",
    "OcclusionFillConfig",
    "PosedFrame",
    "background_layer",
]
