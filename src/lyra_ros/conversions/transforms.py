"""``geometry_msgs/Transform`` and ``Pose`` <-> ``4x4`` rigid transforms.

Poses are ``4x4`` rigid transforms (float64 NumPy on output); ROS quaternions are
``(x, y, z, w)``. The maths, including when a quaternion counts as zero-norm, is
:mod:`lyra_core.geometry.transforms`; the tf buffer uses the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3

from lyra_core.geometry.transforms import (
    check_rigid,
    pose_from_translation_quaternion,
    translation_quaternion_from_pose,
)
from lyra_ros.conversions._common import ArrayLike, _to_numpy

__all__ = ["matrix_to_pose", "matrix_to_transform", "pose_to_matrix", "transform_to_matrix"]


def _finite_vector(name: str, values: Sequence[float]) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf: {tuple(out.tolist())}")
    return out


def _matrix(name: str, t: Vector3 | Point, q: Quaternion) -> np.ndarray:
    """``(4, 4)`` float64 transform from a ROS translation and ``(x, y, z, w)`` quaternion."""
    t_np = _finite_vector(f"{name} translation", (t.x, t.y, t.z))
    q_np = _finite_vector(f"{name} quaternion (x, y, z, w)", (q.x, q.y, q.z, q.w))
    try:
        return pose_from_translation_quaternion(t_np, q_np)
    except ValueError as err:  # a zero-norm quaternion
        raise ValueError(f"{name} quaternion (x, y, z, w) = {tuple(q_np.tolist())}: {err}") from err


def _translation_quaternion(T: ArrayLike) -> tuple[list[float], list[float]]:
    """Translation ``(3,)`` and quaternion ``(x, y, z, w)`` of a ``(4, 4)`` rigid transform."""
    T_t = torch.as_tensor(_to_numpy("T", T), dtype=torch.float64)
    if T_t.shape != (4, 4):
        raise ValueError(f"T must have shape (4, 4), got {tuple(T_t.shape)}")
    check_rigid("T", T_t)
    t, q = translation_quaternion_from_pose(T_t)
    return t.tolist(), q.tolist()


def transform_to_matrix(msg: Transform) -> np.ndarray:
    """``(4, 4)`` float64 matrix of a ``geometry_msgs/Transform`` (translation in meters).

    The quaternion is normalised.

    Raises:
        ValueError: NaN/inf values or a zero-norm quaternion (norm below
            :data:`lyra_core.geometry.transforms.MIN_QUATERNION_NORM`).
    """
    return _matrix("transform", msg.translation, msg.rotation)


def pose_to_matrix(msg: Pose) -> np.ndarray:
    """``(4, 4)`` float64 matrix of a ``geometry_msgs/Pose`` (position in meters).

    Raises:
        ValueError: NaN/inf values or a zero-norm quaternion.
    """
    return _matrix("pose", msg.position, msg.orientation)


def matrix_to_transform(T: ArrayLike) -> Transform:
    """``geometry_msgs/Transform`` of a ``(4, 4)`` rigid transform (numpy or torch).

    Raises:
        ValueError: Wrong shape, NaN/inf, or a rotation block that is not a proper rotation.
    """
    t, q = _translation_quaternion(T)
    return Transform(translation=Vector3(x=t[0], y=t[1], z=t[2]), rotation=_quaternion(q))


def matrix_to_pose(T: ArrayLike) -> Pose:
    """``geometry_msgs/Pose`` of a ``(4, 4)`` rigid transform (numpy or torch).

    Raises:
        ValueError: Wrong shape, NaN/inf, or a rotation block that is not a proper rotation.
    """
    t, q = _translation_quaternion(T)
    return Pose(position=Point(x=t[0], y=t[1], z=t[2]), orientation=_quaternion(q))


def _quaternion(q_xyzw: Sequence[float]) -> Quaternion:
    return Quaternion(x=q_xyzw[0], y=q_xyzw[1], z=q_xyzw[2], w=q_xyzw[3])
