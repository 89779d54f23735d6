"""``sensor_msgs/CameraInfo`` <-> pinhole :class:`~lyra_core.geometry.cameras.Intrinsics`.

Intrinsics follow OpenCV (pixel centres at integers), which is also the convention of the ``K``
matrix of ``sensor_msgs/CameraInfo``.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from lyra_core.geometry.cameras import Intrinsics
from lyra_ros.conversions._common import _copy_header

__all__ = ["camera_info_to_intrinsics", "intrinsics_to_camera_info"]


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """Pinhole intrinsics from ``CameraInfo.k``, ``width`` and ``height``.

    Distortion (``d``), rectification (``r``), ``p``, binning and ROI are ignored: the image is
    taken to be an undistorted pinhole image of ``width x height`` pixels.

    Raises:
        ValueError: Zero width/height (an uncalibrated camera) or ``K`` not of the form
            ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with finite ``fx, fy > 0``.
    """
    width, height = int(msg.width), int(msg.height)
    if width == 0 or height == 0:
        raise ValueError(
            f"CameraInfo has zero size width={width}, height={height} (uncalibrated camera?)"
        )
    K = np.asarray(msg.k, dtype=np.float64)
    if K.size != 9:
        raise ValueError(f"CameraInfo.k must hold 9 values, got {K.size}")
    K = K.reshape(3, 3)
    if not np.any(K):
        raise ValueError("CameraInfo.k is all zeros (uncalibrated camera?)")
    try:
        return Intrinsics.from_matrix(K, width, height)
    except ValueError as err:
        raise ValueError(f"CameraInfo.k is not a valid pinhole matrix: {err}") from err


def intrinsics_to_camera_info(intrinsics: Intrinsics, header: Header | None = None) -> CameraInfo:
    """``CameraInfo`` of an undistorted pinhole camera.

    ``K`` from ``intrinsics``, ``P = [K | 0]``, ``R = I``, ``distortion_model = "plumb_bob"``
    with ``D`` five zeros.
    """
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    msg = CameraInfo(width=intrinsics.width, height=intrinsics.height)
    msg.header = _copy_header(header)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
