"""Posed frames: what a camera saw, where it was, when.

Conventions as in the rest of the package: the pose is camera-to-world in the OpenCV camera
convention (x right, y down, z forward), meters; depth is z along the optical axis in meters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import check_rigid

__all__ = ["PosedFrame"]


@dataclass(eq=False)
class PosedFrame:
    """One posed image, optionally with registered depth.

    Attributes:
        rgb: (H, W, 3) float32 colour in [0, 1].
        intrinsics: pinhole intrinsics of the image (W x H).
        camtoworld: (4, 4) float32 camera-to-world pose.
        depth: (H, W) float32 z-depth in meters, 0 where unknown; None for RGB-only frames.
        stamp: capture time in seconds (ROS time, or the frame's index for files).
        name: an identifier for messages (file name, topic + stamp).
    """

    rgb: Tensor
    intrinsics: Intrinsics
    camtoworld: Tensor
    depth: Tensor | None = None
    stamp: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        self.rgb = _as_rgb(self.rgb)
        size = (self.intrinsics.height, self.intrinsics.width)
        if tuple(self.rgb.shape[:2]) != size:
            raise ValueError(
                f"{self.label}: image is {self.rgb.shape[1]}x{self.rgb.shape[0]} but the "
                f"intrinsics say {size[1]}x{size[0]}"
            )
        pose = torch.as_tensor(np.asarray(self.camtoworld, dtype=np.float64)).float()
        if pose.shape != (4, 4):
            raise ValueError(f"{self.label}: camtoworld must be 4x4, got {tuple(pose.shape)}")
        check_rigid(f"{self.label}: camtoworld", pose)
        self.camtoworld = pose
        if self.depth is not None:
            depth = torch.as_tensor(np.asarray(self.depth, dtype=np.float32))
            if tuple(depth.shape) != size:
                raise ValueError(
                    f"{self.label}: depth is {tuple(depth.shape)}, expected {size} like the image"
                )
            self.depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, 0.0)

    @property
    def label(self) -> str:
        return self.name or f"frame at {self.stamp:.3f} s"

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    def camera(self, device: torch.device | str | None = None) -> Cameras:
        """This frame's camera as a batch of one."""
        K = torch.as_tensor(self.intrinsics.matrix(), dtype=torch.float32)
        return Cameras(self.camtoworld[None], K[None], self.width, self.height).to(device)

    def downscaled(self, factor: int) -> PosedFrame:
        """The frame at 1/``factor`` resolution (area-averaged colour, nearest depth)."""
        if factor == 1:
            return self
        width, height = max(1, self.width // factor), max(1, self.height // factor)
        rgb = cv2.resize(self.rgb.numpy(), (width, height), interpolation=cv2.INTER_AREA)
        depth = None
        if self.depth is not None:
            depth = cv2.resize(self.depth.numpy(), (width, height), interpolation=cv2.INTER_NEAREST)
        return replace(self, rgb=rgb, depth=depth, intrinsics=self.intrinsics.resize(width, height))


def _as_rgb(rgb: Tensor | np.ndarray) -> Tensor:
    array = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    out = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(out).all()):
        raise ValueError("rgb contains NaN or inf")
    return out.clamp(0.0, 1.0)
