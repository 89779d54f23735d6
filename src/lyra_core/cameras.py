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

from lyra_core._validation import (
    check_finite,
    check_image_size,
    check_positive_number,
    check_shape,
)

__all__ = [
    "OPTICAL_TO_BODY",
    "Cameras",
    "Intrinsics",
    "body_pose_to_optical",
    "look_at",
    "optical_pose_to_body",
    "plucker_rays",
    "pose_from_translation_quaternion",
    "rigid_inverse",
    "translation_quaternion_from_pose",
]

#: Largest tolerated deviation of ``R^T R`` from identity for a pose's rotation block.
ROTATION_TOLERANCE = 1e-3

#: Rotation (as a ``4x4`` transform) taking camera optical-frame coordinates (x right, y down,
#: z forward) to REP 103 body-frame coordinates (x forward, y left, z up), i.e. ``T_body_optical``.
#: Its columns are the optical axes expressed in the body frame.
OPTICAL_TO_BODY = torch.tensor(
    [
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _as_float_tensor(value: Tensor | np.ndarray | Sequence, like: Tensor | None = None) -> Tensor:
    """Convert ``value`` to a floating tensor (dtype/device of ``like`` if given, else float32)."""
    if isinstance(value, Tensor):
        if like is not None:
            return value.to(dtype=like.dtype, device=like.device)
        return value if value.is_floating_point() else value.float()
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)


def _check_trailing(name: str, value: Tensor, trailing: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` has shape ``(..., *trailing)``."""
    n = len(trailing)
    if value.dim() < n or tuple(value.shape[-n:]) != trailing:
        want = "(..., " + ", ".join(str(s) for s in trailing) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")


def check_rigid(name: str, T: Tensor) -> None:
    """Raise ``ValueError`` unless every ``T[..., :4, :4]`` is a finite rigid transform.

    Checks: finite entries, bottom row ``[0, 0, 0, 1]``, rotation block orthonormal within
    :data:`ROTATION_TOLERANCE` and with positive determinant (no reflections).
    """
    check_finite(name, T)
    T64 = T.detach().to(torch.float64)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=T64.device)
    if T64.numel() and float((T64[..., 3, :] - bottom).abs().max()) > ROTATION_TOLERANCE:
        raise ValueError(f"{name} must have bottom row [0, 0, 0, 1]")
    R = T64[..., :3, :3]
    eye = torch.eye(3, dtype=torch.float64, device=T64.device)
    ortho_err = (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(R) if R.numel() else torch.ones(R.shape[:-2], dtype=torch.float64)
    bad = (ortho_err > ROTATION_TOLERANCE) | (det <= 0)
    if bool(bad.any()):
        raise ValueError(
            f"{name} rotation block is not a proper rotation for {int(bad.sum())} pose(s) "
            f"(max |R^T R - I| = {float(ortho_err.max()):.3g}, min det = {float(det.min()):.3g}); "
            "expected orthonormal with det = +1"
        )


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
# Rigid transforms
# --------------------------------------------------------------------------------------------


def rigid_inverse(T: Tensor) -> Tensor:
    """Invert rigid transforms without a general matrix inverse.

    Args:
        T: ``(..., 4, 4)`` rigid transforms ``[R | t]``.

    Returns:
        ``(..., 4, 4)`` inverses ``[R^T | -R^T t]``, same dtype/device.
    """
    _check_trailing("T", T, (4, 4))
    R_t = T[..., :3, :3].transpose(-1, -2)
    t = T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R_t
    out[..., :3, 3:] = -R_t @ t
    out[..., 3, 3] = 1.0
    return out


def look_at(
    eye: Tensor | Sequence[float],
    target: Tensor | Sequence[float],
    up: Tensor | Sequence[float] = (0.0, -1.0, 0.0),
) -> Tensor:
    """Camera-to-world poses (OpenCV camera frame) looking from ``eye`` at ``target``.

    The camera ``z`` axis points from ``eye`` to ``target``; the camera ``y`` axis (image down)
    is ``-up`` made orthogonal to ``z``, so ``up`` maps to image-up; ``x = y x z``.

    Args:
        eye: ``(..., 3)`` camera centres, meters.
        target: ``(..., 3)`` points to look at, meters (broadcast with ``eye``).
        up: ``(..., 3)`` world up direction (need not be unit or orthogonal to the view).
            The default ``(0, -1, 0)`` is "up" for a world with OpenCV-like ``y`` down.

    Returns:
        ``(..., 4, 4)`` camera-to-world matrices, dtype/device of ``eye`` (float32 for
        non-tensor input).

    Raises:
        ValueError: If ``eye == target``, ``up`` is zero or parallel to the view direction,
            or an input is non-finite.
    """
    eye_t = _as_float_tensor(eye)
    target_t = _as_float_tensor(target, like=eye_t)
    up_t = _as_float_tensor(up, like=eye_t)
    for name, value in (("eye", eye_t), ("target", target_t), ("up", up_t)):
        _check_trailing(name, value, (3,))
        check_finite(name, value)
    eye_t, target_t, up_t = torch.broadcast_tensors(eye_t, target_t, up_t)

    eps = torch.finfo(eye_t.dtype).eps
    forward = target_t - eye_t
    dist = forward.norm(dim=-1, keepdim=True)
    scale = torch.maximum(eye_t.norm(dim=-1, keepdim=True), target_t.norm(dim=-1, keepdim=True))
    if bool((dist <= 100 * eps * scale.clamp_min(1.0)).any()):
        raise ValueError("look_at: eye and target coincide; the view direction is undefined")
    z = forward / dist
    up_norm = up_t.norm(dim=-1, keepdim=True)
    if bool((up_norm <= 0).any()):
        raise ValueError("look_at: up must be a non-zero vector")
    x = torch.linalg.cross(z, up_t / up_norm)
    x_norm = x.norm(dim=-1, keepdim=True)
    if bool((x_norm <= max(1e-6, 100 * eps)).any()):
        raise ValueError("look_at: up is parallel to the view direction (eye -> target)")
    x = x / x_norm
    y = torch.linalg.cross(z, x)

    out = torch.zeros((*eye_t.shape[:-1], 4, 4), dtype=eye_t.dtype, device=eye_t.device)
    out[..., :3, 0] = x
    out[..., :3, 1] = y
    out[..., :3, 2] = z
    out[..., :3, 3] = eye_t
    out[..., 3, 3] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# ROS frames and quaternions
# --------------------------------------------------------------------------------------------


def body_pose_to_optical(T_world_body: Tensor) -> Tensor:
    """Convert REP 103 body-frame poses to camera optical-frame poses.

    Args:
        T_world_body: ``(..., 4, 4)`` body-to-world poses (x forward, y left, z up).

    Returns:
        ``(..., 4, 4)`` optical-to-world poses ``T_world_body @ OPTICAL_TO_BODY`` (OpenCV
        camera frame at the same position; optical ``z`` equals body ``x``).
    """
    _check_trailing("T_world_body", T_world_body, (4, 4))
    return T_world_body @ OPTICAL_TO_BODY.to(T_world_body.dtype).to(T_world_body.device)


def optical_pose_to_body(T_world_optical: Tensor) -> Tensor:
    """Inverse of :func:`body_pose_to_optical`.

    Args:
        T_world_optical: ``(..., 4, 4)`` optical-to-world (OpenCV camera-to-world) poses.

    Returns:
        ``(..., 4, 4)`` body-to-world poses (REP 103 x forward, y left, z up).
    """
    _check_trailing("T_world_optical", T_world_optical, (4, 4))
    body_to_optical = OPTICAL_TO_BODY.transpose(0, 1)
    return T_world_optical @ body_to_optical.to(T_world_optical.dtype).to(T_world_optical.device)


def pose_from_translation_quaternion(
    t: Tensor | Sequence[float], q_xyzw: Tensor | Sequence[float]
) -> Tensor:
    """Build rigid transforms from translations and quaternions (ROS order ``x, y, z, w``).

    Args:
        t: ``(..., 3)`` translations, meters.
        q_xyzw: ``(..., 4)`` quaternions in ROS order ``(x, y, z, w)``; normalised here.

    Returns:
        ``(..., 4, 4)`` transforms (broadcast leading dims), dtype/device of ``t``.

    Raises:
        ValueError: If ``q_xyzw`` has (near) zero norm or non-finite entries.
    """
    t_t = _as_float_tensor(t)
    q = _as_float_tensor(q_xyzw, like=t_t)
    _check_trailing("t", t_t, (3,))
    _check_trailing("q_xyzw", q, (4,))
    check_finite("t", t_t)
    check_finite("q_xyzw", q)
    norm = q.norm(dim=-1, keepdim=True)
    if bool((norm <= torch.finfo(q.dtype).eps).any()):
        raise ValueError("q_xyzw must have non-zero norm")
    x, y, z, w = (q / norm).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)
    batch = torch.broadcast_shapes(t_t.shape[:-1], R.shape[:-2])
    out = torch.zeros((*batch, 4, 4), dtype=t_t.dtype, device=t_t.device)
    out[..., :3, :3] = R
    out[..., :3, 3] = t_t
    out[..., 3, 3] = 1.0
    return out


def rotation_to_quaternion_wxyz(R: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` as ``(w, x, y, z)``.

    Vectorised Shepperd method: build the four candidate quaternions, keep the numerically
    best-conditioned one (largest of ``|w|, |x|, |y|, |z|``), and fix the sign to ``w >= 0``.
    """
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    q_abs = (
        torch.stack(
            [
                1 + m00 + m11 + m22,
                1 + m00 - m11 - m22,
                1 - m00 + m11 - m22,
                1 - m00 - m11 + m22,
            ],
            dim=-1,
        )
        .clamp_min(0.0)
        .sqrt()
    )  # 2 * (|w|, |x|, |y|, |z|)
    candidates = (
        torch.stack(
            [
                torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
                torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
                torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
                torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
            ],
            dim=-2,
        )
        / (2.0 * q_abs.clamp_min(0.1))[..., None]
    )
    best = q_abs.argmax(dim=-1)
    index = best[..., None, None].expand(*best.shape, 1, 4)
    q = candidates.gather(-2, index).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def translation_quaternion_from_pose(T: Tensor) -> tuple[Tensor, Tensor]:
    """Split rigid transforms into translations and quaternions (ROS order ``x, y, z, w``).

    Args:
        T: ``(..., 4, 4)`` rigid transforms.

    Returns:
        ``t``: ``(..., 3)`` translations, meters. ``q_xyzw``: ``(..., 4)`` unit quaternions in
        ROS order with ``w >= 0``.
    """
    _check_trailing("T", T, (4, 4))
    check_finite("T", T)
    q_wxyz = rotation_to_quaternion_wxyz(T[..., :3, :3])
    return T[..., :3, 3].clone(), torch.cat([q_wxyz[..., 1:], q_wxyz[..., :1]], dim=-1)


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
    _check_trailing("camtoworlds", camtoworlds, (4, 4))
    _check_trailing("Ks", Ks, (3, 3))
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
