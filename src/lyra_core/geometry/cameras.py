"""Pinhole cameras, poses and ray utilities.

Conventions used throughout ``lyra_core``:

* **Poses** are camera-to-world ``4x4`` rigid transforms (``camtoworld``). The camera frame
  follows the OpenCV convention: ``x`` right, ``y`` down, ``z`` forward (the optical axis).
  World-to-camera matrices are called ``viewmats`` (as in gsplat).
* **Intrinsics** follow OpenCV: the centre of pixel ``(u, v)`` lies at the integer coordinates
  ``(u, v)``, so the top-left pixel centre is ``(0, 0)`` and the image spans
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
* **Units** are meters for positions and radians for angles.
* **Quaternions** are given and returned in ROS order ``(x, y, z, w)`` (unit norm, ``w >= 0``
  on output).
* **ROS frames** follow REP 103: a body frame is ``x`` forward, ``y`` left, ``z`` up; a camera
  *optical* frame is the OpenCV camera frame above.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.transforms import check_rigid, rigid_inverse
from lyra_core.utils.checks import (
    check_finite,
    check_image_size,
    check_positive_number,
    check_shape,
    check_trailing,
)

__all__ = ["Cameras", "Intrinsics", "plucker_rays"]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _to_float(name: str, value: object) -> float:
    """Convert a real number to ``float`` or raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _to_int(name: str, value: object) -> int:
    """Convert an integral number (not bool) to ``int`` or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one image size (OpenCV pixel-centre convention).

    Attributes:
        fx: Focal length along x, in pixels (> 0).
        fy: Focal length along y, in pixels (> 0).
        cx: Principal point x, in pixels (pixel centres at integers).
        cy: Principal point y, in pixels.
        width: Image width W, in pixels.
        height: Image height H, in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, _to_float(name, getattr(self, name)))
        check_positive_number("fx", self.fx)
        check_positive_number("fy", self.fy)
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        check_image_size(self.width, self.height)

    @classmethod
    def from_fov(
        cls, fov_y: float, width: int, height: int, fov_x: float | None = None
    ) -> Intrinsics:
        """Build intrinsics from field(s) of view, principal point at the image centre.

        The field of view spans the full image extent (pixel edges), so
        ``fy = (H / 2) / tan(fov_y / 2)``. The principal point is ``((W - 1) / 2, (H - 1) / 2)``.

        Args:
            fov_y: Vertical field of view, radians, in ``(0, pi)``.
            width: Image width W, pixels.
            height: Image height H, pixels.
            fov_x: Horizontal field of view, radians; ``None`` means square pixels (``fx = fy``).
        """
        check_image_size(width, height)
        fovs = {"fov_y": fov_y} if fov_x is None else {"fov_y": fov_y, "fov_x": fov_x}
        for name, fov in fovs.items():
            value = _to_float(name, fov)
            if not 0.0 < value < math.pi:
                raise ValueError(f"{name} must be in (0, pi) radians, got {fov!r}")
        fy = 0.5 * height / math.tan(0.5 * fov_y)
        fx = fy if fov_x is None else 0.5 * width / math.tan(0.5 * fov_x)
        return cls(fx, fy, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_matrix(
        cls, K: Tensor | np.ndarray | Sequence[Sequence[float]], width: int, height: int
    ) -> Intrinsics:
        """Build intrinsics from a ``(3, 3)`` matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

        Raises:
            ValueError: If ``K`` is not 3x3, is not finite, has skew or a bad last row.
        """
        if isinstance(K, Tensor):
            K = K.detach().cpu().to(torch.float64).numpy()
        K_np = np.asarray(K, dtype=np.float64)
        check_shape("K", torch.from_numpy(K_np), (3, 3))
        check_finite("K", torch.from_numpy(K_np))
        if abs(K_np[0, 1]) > 1e-6 * max(abs(K_np[0, 0]), 1.0):
            raise ValueError(f"K must have zero skew K[0, 1], got {K_np[0, 1]!r}")
        if not np.allclose(K_np[1, 0], 0.0) or not np.allclose(K_np[2], [0.0, 0.0, 1.0]):
            raise ValueError(f"K must have the form [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K_np}")
        return cls(K_np[0, 0], K_np[1, 1], K_np[0, 2], K_np[1, 2], width, height)

    def matrix(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """Return the ``(3, 3)`` intrinsic matrix ``K`` (pixels)."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=dtype,
            device=device,
        )

    def resize(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of the same view resampled to ``width x height`` pixels.

        Scaling is about the pixel corners (the image rectangle maps onto itself), so with
        ``sx = width / W``: ``fx' = fx * sx`` and ``cx' = (cx + 0.5) * sx - 0.5`` (same for y).
        """
        check_image_size(width, height)
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
        )

    def crop(self, x0: int, y0: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of the ``width x height`` crop whose top-left pixel is ``(x0, y0)``.

        Args:
            x0: Column of the crop's first pixel (``0 <= x0``, ``x0 + width <= W``).
            y0: Row of the crop's first pixel (``0 <= y0``, ``y0 + height <= H``).
            width: Crop width, pixels.
            height: Crop height, pixels.
        """
        x0, y0 = _to_int("x0", x0), _to_int("y0", y0)
        check_image_size(width, height)
        if x0 < 0 or x0 + width > self.width:
            raise ValueError(f"x0={x0}, width={width} crop exceeds the image width {self.width}")
        if y0 < 0 or y0 + height > self.height:
            raise ValueError(
                f"y0={y0}, height={height} crop exceeds the image height {self.height}"
            )
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, width, height)

    @property
    def fov_x(self) -> float:
        """Horizontal field of view over the full image width, radians."""
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    @property
    def fov_y(self) -> float:
        """Vertical field of view over the full image height, radians."""
        return 2.0 * math.atan(0.5 * self.height / self.fy)


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


@dataclass
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size.

    Attributes:
        camtoworlds: ``(C, 4, 4)`` camera-to-world poses (OpenCV camera frame), meters.
        Ks: ``(C, 3, 3)`` intrinsic matrices, pixels.
        width: Image width W, pixels.
        height: Image height H, pixels.

    A single ``(4, 4)`` pose or ``(3, 3)`` matrix is rejected, not auto-batched: use
    ``pose[None]``.
    """

    camtoworlds: Tensor
    Ks: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("camtoworlds", "Ks"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point torch.Tensor, got {value!r}")
        check_shape("camtoworlds", self.camtoworlds, (None, 4, 4))
        check_shape("Ks", self.Ks, (len(self.camtoworlds), 3, 3))
        if len(self.camtoworlds) == 0:
            raise ValueError("camtoworlds must hold at least one camera, got 0")
        if (self.Ks.dtype, self.Ks.device) != (self.camtoworlds.dtype, self.camtoworlds.device):
            raise ValueError(
                f"Ks ({self.Ks.dtype}, {self.Ks.device}) must match camtoworlds "
                f"({self.camtoworlds.dtype}, {self.camtoworlds.device}) in dtype and device"
            )
        check_image_size(self.width, self.height)
        check_finite("Ks", self.Ks)
        check_rigid("camtoworlds", self.camtoworlds)

    @classmethod
    def from_intrinsics(cls, camtoworlds: Tensor, intrinsics: Intrinsics) -> Cameras:
        """Cameras with poses ``camtoworlds`` ``(C, 4, 4)`` all sharing ``intrinsics``."""
        check_shape("camtoworlds", camtoworlds, (None, 4, 4))
        K = intrinsics.matrix(dtype=camtoworlds.dtype, device=camtoworlds.device)
        Ks = K.expand(len(camtoworlds), 3, 3).clone()
        return cls(camtoworlds, Ks, intrinsics.width, intrinsics.height)

    @property
    def viewmats(self) -> Tensor:
        """``(C, 4, 4)`` world-to-camera matrices (rigid inverse of ``camtoworlds``)."""
        return rigid_inverse(self.camtoworlds)

    @property
    def centers(self) -> Tensor:
        """``(C, 3)`` camera centres in world coordinates, meters."""
        return self.camtoworlds[:, :3, 3]

    def __len__(self) -> int:
        return self.camtoworlds.shape[0]

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> Cameras:
        """Select cameras; an integer index keeps the batch dim (returns ``C = 1``)."""
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            index = [int(index)]
        return Cameras(self.camtoworlds[index], self.Ks[index], self.width, self.height)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Cameras:
        """Return a copy with tensors moved to ``device`` and/or cast to ``dtype``."""
        return Cameras(
            self.camtoworlds.to(device=device, dtype=dtype),
            self.Ks.to(device=device, dtype=dtype),
            self.width,
            self.height,
        )


# --------------------------------------------------------------------------------------------
# Rays
# --------------------------------------------------------------------------------------------


def _pixel_grid(
    width: int, height: int, grid_size: tuple[int, int] | None, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Pixel-space sample coordinates ``u`` ``(w,)`` and ``v`` ``(h,)`` of the ray grid."""
    if grid_size is None:
        h, w = height, width
    else:
        if len(grid_size) != 2:
            raise ValueError(f"grid_size must be (h, w), got {grid_size!r}")
        h, w = (_to_int("grid_size", s) for s in grid_size)
        if h <= 0 or w <= 0:
            raise ValueError(f"grid_size must be positive, got {grid_size!r}")
    j = torch.arange(w, dtype=like.dtype, device=like.device)
    i = torch.arange(h, dtype=like.dtype, device=like.device)
    u = (j + 0.5) * (width / w) - 0.5
    v = (i + 0.5) * (height / h) - 0.5
    return u, v


def plucker_rays(
    camtoworlds: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    grid_size: tuple[int, int] | None = None,
) -> Tensor:
    """Per-pixel Plucker ray embeddings ``(o x d, d)`` in world coordinates.

    ``d`` is the unit world-space direction of the ray through a pixel centre and ``o`` the
    camera centre, so the moment ``o x d`` equals ``p x d`` for every point ``p`` on the ray.

    Args:
        camtoworlds: ``(..., 4, 4)`` camera-to-world poses (OpenCV camera frame), meters.
        Ks: ``(..., 3, 3)`` intrinsics in pixels of the ``width x height`` image (leading dims
            broadcast with ``camtoworlds``).
        width: Image width W, pixels.
        height: Image height H, pixels.
        grid_size: Optional ``(h, w)`` sampling grid (e.g. ``(H // 8, W // 8)`` for a latent
            grid). Rays then go through cell centres: cell ``(i, j)`` sits at image pixel
            coordinates ``((j + 0.5) * W / w - 0.5, (i + 0.5) * H / h - 0.5)``.
            ``None`` uses every pixel centre (``h = H``, ``w = W``).

    Returns:
        ``(..., h, w, 6)`` tensor ``concat(o x d, d)`` (moment in meters), dtype of
        ``camtoworlds``.
    """
    check_trailing("camtoworlds", camtoworlds, (4, 4))
    check_trailing("Ks", Ks, (3, 3))
    check_image_size(width, height)
    check_finite("camtoworlds", camtoworlds)
    check_finite("Ks", Ks)
    Ks = Ks.to(camtoworlds.dtype)
    u, v = _pixel_grid(width, height, grid_size, camtoworlds)

    # Back-project pixel centres through K^-1 (upper triangular, skew allowed).
    fx, fy = Ks[..., 0, 0, None, None], Ks[..., 1, 1, None, None]
    cx, cy, skew = Ks[..., 0, 2, None, None], Ks[..., 1, 2, None, None], Ks[..., 0, 1, None, None]
    y_cam = (v[:, None] - cy) / fy  # (..., h, 1)
    x_cam = (u[None, :] - cx - skew * y_cam) / fx  # (..., h, w)
    y_cam, x_cam = torch.broadcast_tensors(y_cam, x_cam)
    dirs_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # (..., h, w, 3)

    R = camtoworlds[..., None, None, :3, :3]  # (..., 1, 1, 3, 3)
    dirs = (R @ dirs_cam[..., None]).squeeze(-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = camtoworlds[..., None, None, :3, 3].expand_as(dirs)
    moments = torch.linalg.cross(origins, dirs)
    return torch.cat([moments, dirs], dim=-1)
