"""Gaussian scenes: the 3DGS parameterisation, PLY files, RGB-D unprojection, procedural rooms
(static, and with moving objects: :func:`procedural_dynamic_room`)."""

from lyra_core.scene.procedural_dynamic import DynamicRoom, procedural_dynamic_room

__all__ = ["DynamicRoom", "procedural_dynamic_room"]
