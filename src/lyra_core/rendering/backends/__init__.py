"""Rasteriser backends behind :func:`lyra_core.rendering.render`."""
