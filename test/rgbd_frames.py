"""Small RGB-D frames shared by the mapping and world-builder tests."""

from __future__ import annotations

import numpy as np


def box_on_wall() -> tuple[np.ndarray, np.ndarray]:
    """A 64x48 frame: a blue box 1 m away in front of a red wall 3 m away.

    Returns:
        (48, 64, 3) uint8 RGB and (48, 64) float32 depth in meters, with depth edges all around
        the box (rows 14-33, columns 20-43).
    """
    depth = np.full((48, 64), 3.0, np.float32)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 200
    depth[14:34, 20:44] = 1.0
    rgb[14:34, 20:44] = (0, 0, 220)
    return rgb, depth
