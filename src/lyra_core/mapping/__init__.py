"""Mapping: worlds that grow with a camera feed.

:class:`GaussianMap` integrates posed frames (adds Gaussians where the map is unobserved, keeps
keyframes, refines over a window, prunes, densifies, stays within a budget and keeps generated
content only where nothing was observed); :mod:`.occlusion` fills the background behind one
RGB-D frame's depth edges; :class:`PosedFrame` is the input. :class:`DynamicMapper`
(:func:`fit_dynamic`) maps an RGB-D video of a scene with moving objects into a 4D world.
"""

from lyra_core.mapping.dynamic import DynamicMapper, DynamicMapperConfig, fit_dynamic
from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.gaussian_map import GaussianMap, IntegrationResult, MapConfig
from lyra_core.mapping.occlusion import BackgroundLayer, OcclusionFillConfig, background_layer

__all__ = [
    "BackgroundLayer",
    "DynamicMapper",
    "DynamicMapperConfig",
    "GaussianMap",
    "IntegrationResult",
    "MapConfig",
    "OcclusionFillConfig",
    "PosedFrame",
    "background_layer",
    "fit_dynamic",
]
