"""Rigid transforms, quaternions and ROS frame conventions.

Poses are ``4x4`` rigid transforms; a camera pose is camera-to-world in the OpenCV camera
convention (x right, y down, z forward; see :mod:`lyra_core.geometry.cameras`). Quaternions
given to and returned by the ROS-facing helpers are in ROS order ``(x, y, z, w)`` (unit norm,
``w >= 0`` on output); Gaussians store ``(w, x, y, z)`` as gsplat does. ROS body frames follow
REP 103 (x forward, y left, z up); a camera *optical* frame has the OpenCV axes. Used by
``lyra_ros`` (tf and message conversions) as the one implementation of each.

:func:`rigid_inverse`, :func:`normalize_quaternion`, :func:`pose_from_translation_quaternion`
and :func:`slerp` take torch tensors or NumPy arrays and answer in kind, so the tf buffer's
per-lookup maths stays in NumPy (no tensor overhead for one ``4x4`` matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from lyra_core.utils.checks import as_float_tensor, check_finite, check_trailing

__all__ = [
    "MIN_QUATERNION_NORM",
    "OPTICAL_TO_BODY",
    "body_pose_to_optical",
    "check_rigid",
    "look_at",
    "normalize_quaternion",
    "optical_pose_to_body",
    "pose_from_translation_quaternion",
    "rigid_inverse",
    "rotation_to_quaternion_wxyz",
    "slerp",
    "translation_quaternion_from_pose",
]

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)

#: Quaternions with a smaller norm are rejected as zero-norm: they hold no rotation.
MIN_QUATERNION_NORM = 1e-6

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


def _namespace(value: Tensor | np.ndarray) -> ModuleType:
    """``numpy`` for NumPy arrays, ``torch`` otherwise (both name the functions used here alike)."""
    return np if isinstance(value, np.ndarray) else torch


def _check_trailing(name: str, value: Tensor | np.ndarray, trailing: tuple[int, ...]) -> None:
    """:func:`check_trailing` for a tensor or a NumPy array (same message)."""
    if not isinstance(value, np.ndarray):
        check_trailing(name, value, trailing)
    elif value.ndim < len(trailing) or value.shape[-len(trailing) :] != trailing:
        check_trailing(name, torch.empty(value.shape, device="meta"), trailing)


def _check_array(name: str, value: ArrayT, trailing: tuple[int, ...]) -> None:
    """:func:`check_trailing` and :func:`check_finite` for a tensor or a NumPy array.

    NumPy arrays are checked with NumPy (a tensor round trip would cost more than the maths on
    one ``4x4`` matrix); the messages are the same.
    """
    _check_trailing(name, value, trailing)
    if not isinstance(value, np.ndarray):
        check_finite(name, value)
        return
    finite = np.isfinite(value)
    if not finite.all():
        bad = int(value.size - np.count_nonzero(finite))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def rigid_inverse(T: ArrayT) -> ArrayT:
    """Invert rigid transforms without a general matrix inverse.

    Args:
        T: ``(..., 4, 4)`` rigid transforms ``[R | t]``, a tensor or a NumPy array.

    Returns:
        ``(..., 4, 4)`` inverses ``[R^T | -R^T t]``, same type, dtype and device.
    """
    _check_trailing("T", T, (4, 4))
    R_t = T[..., :3, :3].swapaxes(-1, -2)
    t = T[..., :3, 3:]
    out = _namespace(T).zeros_like(T)
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


def normalize_quaternion(q: ArrayT, name: str = "q") -> ArrayT:
    """Unit quaternions (any component order), rejecting the ones that hold no rotation.

    Args:
        q: ``(..., 4)`` quaternions, a floating tensor or a NumPy array.
        name: what to call ``q`` in error messages.

    Returns:
        ``q / |q|``, same type, dtype and device.

    Raises:
        ValueError: Wrong shape, NaN/inf entries, or a norm below :data:`MIN_QUATERNION_NORM`.
    """
    _check_array(name, q, (4,))
    norm = _namespace(q).sqrt((q * q).sum(-1))[..., None]
    if bool((norm < MIN_QUATERNION_NORM).any()):
        count = int((norm < MIN_QUATERNION_NORM).sum())
        raise ValueError(
            f"{name} has zero norm (below {MIN_QUATERNION_NORM:g}) for {count} quaternion(s): "
            "it holds no rotation; the identity rotation is (0, 0, 0, 1) in ROS order"
        )
    return q / norm


def pose_from_translation_quaternion(
    t: Tensor | np.ndarray | Sequence[float], q_xyzw: Tensor | np.ndarray | Sequence[float]
) -> Tensor | np.ndarray:
    """Build rigid transforms from translations and quaternions (ROS order ``x, y, z, w``).

    Args:
        t: ``(..., 3)`` translations, meters.
        q_xyzw: ``(..., 4)`` quaternions in ROS order ``(x, y, z, w)``; normalised here.

    Returns:
        ``(..., 4, 4)`` transforms (broadcast leading dims). NumPy ``t`` (and ``q_xyzw``): a
        float64 NumPy array. Otherwise a tensor with the dtype/device of ``t`` (float32 for
        non-tensor input).

    Raises:
        ValueError: Wrong shapes, non-finite entries, or a quaternion with a norm below
            :data:`MIN_QUATERNION_NORM` (:func:`normalize_quaternion`).
    """
    if isinstance(t, np.ndarray) and not isinstance(q_xyzw, Tensor):
        t_a = np.asarray(t, dtype=np.float64)
        q = np.asarray(q_xyzw, dtype=np.float64)
    else:
        t_a = as_float_tensor(t)
        q = as_float_tensor(q_xyzw, like=t_a)
    _check_array("t", t_a, (3,))
    q = normalize_quaternion(q, "q_xyzw")
    # Every rotation entry is a fixed combination of the products q_i q_j: one matrix product.
    products = (q[..., :, None] * q[..., None, :]).reshape(*q.shape[:-1], 16)
    if isinstance(q, np.ndarray):
        R = products @ _ROTATION_FROM_PRODUCTS
        out = np.zeros((*np.broadcast_shapes(t_a.shape[:-1], q.shape[:-1]), 4, 4))
    else:
        R = products @ torch.as_tensor(_ROTATION_FROM_PRODUCTS, dtype=q.dtype, device=q.device)
        batch = torch.broadcast_shapes(t_a.shape[:-1], q.shape[:-1])
        out = torch.zeros((*batch, 4, 4), dtype=t_a.dtype, device=t_a.device)
    out[..., :3, :3] = R.reshape(*q.shape[:-1], 3, 3)
    out[..., :3, 3] = t_a
    out[..., 3, 3] = 1.0
    return out


def _rotation_from_products() -> np.ndarray:
    """``(16, 9)``: row-major rotation entries of a unit quaternion ``(x, y, z, w)`` from its
    flattened outer product ``q_i q_j`` (the standard formula, e.g. ``R_00 = w^2 + x^2 - y^2 -
    z^2``, ``R_01 = 2 (x y - w z)``)."""
    x, y, z, w = range(4)
    terms = {  # entry -> (sign, i, j) per product; 2 q_i q_j is written q_i q_j + q_j q_i
        (0, 0): [(1, w, w), (1, x, x), (-1, y, y), (-1, z, z)],
        (0, 1): [(1, x, y), (1, y, x), (-1, w, z), (-1, z, w)],
        (0, 2): [(1, x, z), (1, z, x), (1, w, y), (1, y, w)],
        (1, 0): [(1, x, y), (1, y, x), (1, w, z), (1, z, w)],
        (1, 1): [(1, w, w), (-1, x, x), (1, y, y), (-1, z, z)],
        (1, 2): [(1, y, z), (1, z, y), (-1, w, x), (-1, x, w)],
        (2, 0): [(1, x, z), (1, z, x), (-1, w, y), (-1, y, w)],
        (2, 1): [(1, y, z), (1, z, y), (1, w, x), (1, x, w)],
        (2, 2): [(1, w, w), (-1, x, x), (-1, y, y), (1, z, z)],
    }
    M = np.zeros((16, 9))
    for (row, col), entry in terms.items():
        for sign, i, j in entry:
            M[4 * i + j, 3 * row + col] += sign
    return M


_ROTATION_FROM_PRODUCTS = _rotation_from_products()


def slerp(q0: ArrayT, q1: ArrayT, alpha: float | ArrayT) -> ArrayT:
    """Spherical linear interpolation of unit quaternions, along the shorter arc.

    ``q`` and ``-q`` are the same rotation: ``q1`` is negated where ``q0 . q1 < 0``, so the
    result turns by the smaller angle (at most 180 degrees). The weights
    ``sin((1 - alpha) theta) / sin(theta)`` and ``sin(alpha theta) / sin(theta)`` are written
    with ``sinc``, which tends to the linear weights ``1 - alpha`` and ``alpha`` as ``theta``
    goes to 0 without a division by zero (``theta <= 90`` degrees after the sign flip).

    Args:
        q0: ``(..., 4)`` unit quaternions at ``alpha = 0``, any component order (the same for
            both), a tensor or a NumPy array.
        q1: ``(..., 4)`` unit quaternions at ``alpha = 1``, same type as ``q0``.
        alpha: interpolation parameter in ``[0, 1]``, a number or ``(...)`` broadcasting with
            the leading dims of ``q0``.

    Returns:
        ``(..., 4)`` unit quaternions, type, dtype and device of ``q0``: ``q0`` at
        ``alpha = 0`` and ``+-q1`` at ``alpha = 1``.
    """
    xp = _namespace(q0)
    if xp is np:
        a = np.asarray(alpha, dtype=q0.dtype)
    else:
        a = torch.as_tensor(alpha, dtype=q0.dtype, device=q0.device)
    dot = (q0 * q1).sum(-1)
    sign = xp.copysign(xp.ones_like(dot), dot)
    half_turns = xp.arccos(xp.minimum(dot * sign, xp.ones_like(dot))) / np.pi  # theta / pi
    scale = 1.0 / xp.sinc(half_turns)
    w0 = (1.0 - a) * xp.sinc((1.0 - a) * half_turns) * scale
    w1 = a * xp.sinc(a * half_turns) * scale * sign
    q = w0[..., None] * q0 + w1[..., None] * q1
    return q / xp.sqrt((q * q).sum(-1))[..., None]


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
