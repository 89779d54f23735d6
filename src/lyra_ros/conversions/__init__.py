"""Conversions between ROS 2 messages and NumPy arrays / :mod:`lyra_core` types.

Every function here is pure (no node, no DDS) and raises ``ValueError`` with a message naming the
problem for bad input, so the node can log a warning and keep running.

- :mod:`~lyra_ros.conversions.image`: ``Image`` / ``CompressedImage`` <-> NumPy, REP 118 depth.
- :mod:`~lyra_ros.conversions.camera_info`: ``CameraInfo`` <-> pinhole intrinsics.
- :mod:`~lyra_ros.conversions.transforms`: ``Transform`` / ``Pose`` <-> ``4x4`` matrices.
- :mod:`~lyra_ros.conversions.point_cloud`: coloured ``PointCloud2`` <-> NumPy.

``cv_bridge`` and ``sensor_msgs_py.point_cloud2`` are used when they are importable (a ROS
install), with the NumPy code as the fallback.
"""

from lyra_core.geometry.transforms import MIN_QUATERNION_NORM
from lyra_ros.conversions.camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info
from lyra_ros.conversions.image import (
    COMPRESSED_FORMATS,
    DEPTH_ENCODINGS,
    SUPPORTED_ENCODINGS,
    compressed_image_size,
    compressed_to_rgb,
    depth_to_image,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)
from lyra_ros.conversions.point_cloud import pointcloud2_from_points, pointcloud2_to_numpy
from lyra_ros.conversions.transforms import (
    matrix_to_pose,
    matrix_to_transform,
    pose_to_matrix,
    transform_to_matrix,
)

__all__ = [
    "COMPRESSED_FORMATS",
    "DEPTH_ENCODINGS",
    "MIN_QUATERNION_NORM",
    "SUPPORTED_ENCODINGS",
    "camera_info_to_intrinsics",
    "compressed_image_size",
    "compressed_to_rgb",
    "depth_to_image",
    "image_to_depth_m",
    "image_to_numpy",
    "image_to_rgb",
    "intrinsics_to_camera_info",
    "matrix_to_pose",
    "matrix_to_transform",
    "numpy_to_image",
    "pointcloud2_from_points",
    "pointcloud2_to_numpy",
    "pose_to_matrix",
    "rgb_to_compressed",
    "transform_to_matrix",
]
