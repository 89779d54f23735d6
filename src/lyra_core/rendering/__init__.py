"""Rendering of Gaussian scenes: one entry point, :func:`render`, over several backends.

:mod:`.projection` (EWA projection) and :mod:`.spherical_harmonics` are shared by the backends in
:mod:`.backends`: ``tiles`` (our vectorised CPU/GPU rasteriser), ``reference`` (brute force, for
tests) and ``gsplat`` (CUDA).
"""

from lyra_core.rendering.renderer import RenderOutput, available_backends, render

__all__ = ["RenderOutput", "available_backends", "render"]
