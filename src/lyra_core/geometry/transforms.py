"""Rigid transforms, quaternions and ROS frame conventions.

Poses are ``4x4`` rigid transforms; a camera pose is camera-to-world in the OpenCV camera
convention (x right, y down, z forward; see :mod:`lyra_core.geometry.cameras`). Quaternions
given to and returned by the ROS-facing helpers are in ROS order ``(x, y, z, w)`` (unit norm,
``w >= 0`` on output); Gaussians store ``(w, x, y, z)`` as gsplat does. ROS body frames follow
REP 103 (x forward, y left, z up); a camera *optical* frame has the OpenCV axes. Used by
``lyra_ros`` (tf and message conversions) as the one implementation of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lyra_core.utils.checks import as_float_tensor, check_finite, check_trailing

__all__ = [
    "OPTICAL_TO_BODY",
    "body_pose_to_optical",
    "check_rigid",
    "look_at",
    "optical_pose_to_body",
    "pose_from_translation_quaternion",
    "rigid_inverse",
    "rotation_to_quaternion_wxyz",
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
    check_trailing("T", T, (4, 4))
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
    eye_t = as_float_tensor(eye)
    target_t = as_float_tensor(target, like=eye_t)
    up_t = as_float_tensor(up, like=eye_t)
    for name, value in (("eye", eye_t), ("target", target_t), ("up", up_t)):
        check_trailing(name, value, (3,))
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
    check_trailing("T_world_body", T_world_body, (4, 4))
    return T_world_body @ OPTICAL_TO_BODY.to(T_world_body.dtype).to(T_world_body.device)


def optical_pose_to_body(T_world_optical: Tensor) -> Tensor:
    """Inverse of :func:`body_pose_to_optical`.

    Args:
        T_world_optical: ``(..., 4, 4)`` optical-to-world (OpenCV camera-to-world) poses.

    Returns:
        ``(..., 4, 4)`` body-to-world poses (REP 103 x forward, y left, z up).
    """
    check_trailing("T_world_optical", T_world_optical, (4, 4))
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
    t_t = as_float_tensor(t)
    q = as_float_tensor(q_xyzw, like=t_t)
    check_trailing("t", t_t, (3,))
    check_trailing("q_xyzw", q, (4,))
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
    check_trailing("T", T, (4, 4))
    check_finite("T", T)
    q_wxyz = rotation_to_quaternion_wxyz(T[..., :3, :3])
    return T[..., :3, 3].clone(), torch.cat([q_wxyz[..., 1:], q_wxyz[..., :1]], dim=-1)
