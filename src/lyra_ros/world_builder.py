"""World sources: from one camera frame (colour, optional depth, intrinsics) to a Gaussian world.

ROS-free on purpose: the node converts messages, this module builds, so builds are testable
without DDS.

Sources:

- ``depth``: every pixel of an RGB-D frame becomes a Gaussian
  (:func:`lyra_core.rgbd.gaussians_from_rgbd`).
- ``lyra``: the learned Lyra decoder (image -> 3D cache -> six trajectory latents -> Gaussians).
  It needs a trained student checkpoint, which the project does not ship yet; choosing it
  raises a clear error until it does.
- ``auto``: ``lyra`` when its checkpoint is available, otherwise ``depth`` when a depth image is
  given.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from lyra_core.cameras import Intrinsics
from lyra_core.gaussians import Gaussians
from lyra_core.rgbd import gaussians_from_rgbd

WORLD_SOURCES = ("auto", "depth", "lyra")


class WorldBuildError(ValueError):
    """A world could not be built from the given inputs (the message says why)."""


@dataclass
class BuildOptions:
    """Parameters of a build (node parameters of the same names)."""

    source: str = "auto"
    depth_stride: int = 2
    min_depth: float = 0.05
    max_depth: float = 20.0
    opacity: float = 0.95
    lyra_checkpoint: str = ""


@dataclass
class BuiltWorld:
    """A world and how it was made."""

    gaussians: Gaussians
    source: str
    seconds: float


def resolve_source(options: BuildOptions, has_depth: bool) -> str:
    """The concrete source ``auto`` stands for, or the requested one if it can run."""
    if options.source not in WORLD_SOURCES:
        raise WorldBuildError(
            f"unknown world source {options.source!r}; use one of {', '.join(WORLD_SOURCES)}"
        )
    lyra_ready = bool(options.lyra_checkpoint)
    if options.source == "lyra" or (options.source == "auto" and lyra_ready):
        raise WorldBuildError(
            "the 'lyra' world source needs a trained Lyra student checkpoint, which is not "
            "available yet; use world_source 'depth' with an RGB-D camera"
        )
    if not has_depth:
        raise WorldBuildError(
            f"world source {options.source!r} needs a depth image registered to the colour image "
            "(no depth received) until a Lyra checkpoint is available"
        )
    return "depth"


def build_world(
    rgb: np.ndarray,
    depth_m: np.ndarray | None,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> BuiltWorld:
    """Build a world in the world frame.

    Args:
        rgb: (H, W, 3) uint8 colour image.
        depth_m: (H, W) float32 depth in meters registered to ``rgb``, or None.
        intrinsics: intrinsics of ``rgb`` (and ``depth_m``).
        world_from_camera: (4, 4) pose of the camera optical frame in the world frame.
        options: source and its parameters.

    Raises:
        WorldBuildError: the source cannot run on these inputs (sizes, missing depth, ...).
    """
    start = time.perf_counter()
    source = resolve_source(options, depth_m is not None)
    if depth_m is not None and depth_m.shape != rgb.shape[:2]:
        raise WorldBuildError(
            f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]} but the colour image is "
            f"{rgb.shape[1]}x{rgb.shape[0]}: depth must be registered to colour"
        )
    if not np.isfinite(world_from_camera).all():
        raise WorldBuildError("the camera pose in the world frame contains NaN or inf")
    try:
        gaussians = gaussians_from_rgbd(
            rgb,
            depth_m,
            intrinsics,
            torch.as_tensor(world_from_camera, dtype=torch.float32),
            stride=options.depth_stride,
            opacity=options.opacity,
            min_depth=options.min_depth,
            max_depth=options.max_depth if options.max_depth > 0 else math.inf,
        )
    except ValueError as err:
        raise WorldBuildError(str(err)) from err
    if len(gaussians) == 0:
        raise WorldBuildError("the depth image has no valid pixels in [min_depth, max_depth]")
    return BuiltWorld(gaussians, source, time.perf_counter() - start)
