"""Lyra core: cameras, Gaussian scenes, rendering and the Lyra models, importable without ROS.

Conventions, stated once for the whole package: meters and radians; camera poses are
camera-to-world 4x4 matrices in the OpenCV camera convention (x right, y down, z forward) and
intrinsics follow OpenCV (the centre of pixel (u, v) is at integer coordinates (u, v)).
"""

from .cameras import Cameras, Intrinsics, look_at, plucker_rays
from .gaussians import Gaussians
from .ply import PlyFormatError, read_ply, write_ply
from .rendering import RenderOutput, available_backends, render
from .trajectories import (
    LYRA_TRAJECTORY_NAMES,
    lyra_trajectories,
    lyra_trajectory,
    waypoint_trajectory,
)

__version__ = "0.1.0"

__all__ = [
    "LYRA_TRAJECTORY_NAMES",
    "Cameras",
    "Gaussians",
    "Intrinsics",
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
