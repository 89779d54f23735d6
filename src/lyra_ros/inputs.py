"""The node's camera input (image, depth, camera_info messages) as one converted frame.

ROS-free apart from the message types: :func:`input_frame` converts, the build worker calls it,
and every problem is a :class:`~lyra_core.utils.errors.WorldBuildError` saying which input was
wrong. :func:`size_problem` checks the size a message declares against ``max_input_pixels``
before anything of its size is allocated (the node drops such messages on arrival).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.utils.errors import WorldBuildError
from lyra_ros.conversions import (
    camera_info_to_intrinsics,
    compressed_image_size,
    compressed_to_rgb,
    image_to_depth_m,
    image_to_rgb,
)

__all__ = ["InputFrame", "input_frame", "size_problem"]


@dataclass
class InputFrame:
    """One camera input, as converted arrays.

    Attributes:
        rgb: (H, W, 3) uint8 colour image.
        depth_m: (H, W) float32 depth in meters registered to ``rgb`` (0: invalid), or None.
        intrinsics: Intrinsics of ``rgb``.
        frame_id: tf frame of the camera (optical axes).
        stamp: Time of the image.
        default_intrinsics: True when no usable camera_info came and ``intrinsics`` were made
            from the default field of view.
    """

    rgb: np.ndarray
    depth_m: np.ndarray | None
    intrinsics: Intrinsics
    frame_id: str
    stamp: Time
    default_intrinsics: bool = False


def size_problem(msg: Image | CompressedImage | CameraInfo, max_pixels: int) -> str | None:
    """Why ``msg`` is too large to take, or None; reads only its declared size.

    An ``Image`` or ``CameraInfo`` declares ``width x height``; a ``CompressedImage`` the size
    in its PNG or JPEG header (:func:`~lyra_ros.conversions.compressed_image_size`), and one
    whose size cannot be read that way is refused as well (it could decode to any size).

    Args:
        msg: The message.
        max_pixels: The most pixels (width x height) accepted (``max_input_pixels``).
    """
    if isinstance(msg, CompressedImage):
        size = compressed_image_size(msg.data)
        if size is None:
            return (
                f"CompressedImage (format {msg.format!r}) has no PNG or JPEG header with its "
                "size, so its decoded size cannot be checked"
            )
        width, height = size
        kind = "CompressedImage decoding to"
    else:
        width, height = int(msg.width), int(msg.height)
        kind = type(msg).__name__
    if width * height > max_pixels:
        return (
            f"{kind} {width}x{height} = {width * height} pixels is more than max_input_pixels "
            f"({max_pixels})"
        )
    return None


def input_frame(
    image: Image | CompressedImage,
    depth: Image | None,
    info: CameraInfo | None,
    default_fov_deg: float,
    max_pixels: int | None = None,
) -> InputFrame:
    """Convert one camera input.

    Args:
        image: Colour image (raw or compressed).
        depth: Depth image registered to ``image``, or None.
        info: Camera info of ``image`` (resized to the image when its size differs), or None
            (or zero size): a pinhole camera with a horizontal FOV of ``default_fov_deg``.
        default_fov_deg: Horizontal field of view used without camera info, degrees.
        max_pixels: When given, inputs declaring more pixels are refused before conversion
            (:func:`size_problem`).

    Raises:
        WorldBuildError: An unsupported, malformed or too large image, depth image or camera
            info.
    """
    if max_pixels is not None:
        for name, msg in (("image", image), ("depth image", depth), ("camera_info", info)):
            problem = None if msg is None else size_problem(msg, max_pixels)
            if problem is not None:
                raise WorldBuildError(f"refused {name}: {problem}")
    try:
        if isinstance(image, CompressedImage):
            rgb = compressed_to_rgb(image)
        else:
            rgb = image_to_rgb(image)
        depth_m = image_to_depth_m(depth) if depth is not None else None
    except ValueError as err:
        raise WorldBuildError(f"bad input image: {err}") from err
    height, width = rgb.shape[:2]
    if info is not None and info.width > 0:
        try:
            intrinsics = camera_info_to_intrinsics(info)
        except ValueError as err:
            raise WorldBuildError(f"bad camera_info: {err}") from err
        if (intrinsics.width, intrinsics.height) != (width, height):
            intrinsics = intrinsics.resize(width, height)
        default = False
    else:
        fx = 0.5 * width / math.tan(0.5 * math.radians(default_fov_deg))
        intrinsics = Intrinsics(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)
        default = True
    try:
        stamp = Time.from_msg(image.header.stamp)
    except ValueError as err:  # a negative stamp
        raise WorldBuildError(f"bad image stamp: {err}") from err
    return InputFrame(rgb, depth_m, intrinsics, image.header.frame_id, stamp, default)
