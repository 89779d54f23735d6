"""Lyra core: cameras, Gaussian scenes, rendering and the Lyra models, importable without ROS.

Conventions, stated once for the whole package: meters and radians; camera poses are
camera-to-world 4x4 matrices in the OpenCV camera convention (x right, y down, z forward) and
intrinsics follow OpenCV (the centre of pixel (u, v) is at integer coordinates (u, v)).
"""

from lyra_core.geometry.cameras import Cameras, Intrinsics, plucker_rays
from lyra_core.geometry.trajectories import (
    LYRA_TRAJECTORY_NAMES,
    lyra_trajectories,
    lyra_trajectory,
    waypoint_trajectory,
)
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering import RenderOutput, available_backends, render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.utils.errors import LyraError, PlyFormatError

# The one place the version is written: pyproject.toml reads it (statically, without importing
# torch); package.xml repeats it for ROS 2 (test/test_packaging.py checks they agree).
__version__ = "0.1.0"

__all__ = [
    "LYRA_TRAJECTORY_NAMES",
    "Cameras",
    "Gaussians",
    "Intrinsics",
    "LyraError",
    "PlyFormatError",
    "RenderOutput",
    "available_backends",
    "look_at",
    "lyra_trajectories",
    "lyra_trajectory",
    "plucker_rays",
    "read_ply",
    "render",
    "waypoint_trajectory",
    "write_ply",
]
