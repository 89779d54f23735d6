"""Conversions between ROS 2 messages and numpy arrays / :mod:`lyra_core` types.

Every function here is pure (no node, no DDS) and raises ``ValueError`` with a message naming the
problem for bad input, so the node can log a warning and keep running.

Conventions:

* Images are numpy arrays ``(H, W, C)`` for colour and ``(H, W)`` for mono and depth, in native
  byte order. RGB images are ``uint8``.
* Depth images follow REP 118: ``32FC1`` is meters, ``16UC1`` (and ``mono16``) millimeters with
  ``0`` meaning invalid. Inside the project invalid depth is ``0.0`` meters.
* Poses are ``4x4`` rigid transforms (float64 numpy on output); ROS quaternions are
  ``(x, y, z, w)``. The quaternion maths lives in :mod:`lyra_core.geometry.cameras`.
* Intrinsics follow OpenCV (pixel centres at integers), which is also the convention of the
  ``K`` matrix of ``sensor_msgs/CameraInfo``.

``cv_bridge`` and ``sensor_msgs_py.point_cloud2`` are used when they are importable (a ROS
install) for the plain cases every version of them handles: native byte order and no row
padding. Input is checked here first, and if the library fails on input that passed the
checks (e.g. an old ``cv_bridge`` on NumPy 2) the numpy code below does the conversion.
"""

from __future__ import annotations

import array
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import (
    check_rigid,
    pose_from_translation_quaternion,
    translation_quaternion_from_pose,
)

try:
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None

try:
    from sensor_msgs_py import point_cloud2
except ImportError:
    point_cloud2 = None

__all__ = [
    "COMPRESSED_FORMATS",
    "DEPTH_ENCODINGS",
    "MIN_QUATERNION_NORM",
    "SUPPORTED_ENCODINGS",
    "camera_info_to_intrinsics",
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

ArrayLike = np.ndarray | Tensor

# --------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PixelFormat:
    """Memory layout of one ``sensor_msgs/Image`` encoding.

    Attributes:
        dtype: Native-order numpy dtype of one channel.
        channels: Channels per pixel.
        rgb: Channel indices giving R, G, B (mono: ``(0, 0, 0)``); ``None`` for depth.
    """

    dtype: np.dtype
    channels: int
    rgb: tuple[int, int, int] | None

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
_RGB, _BGR, _MONO = (0, 1, 2), (2, 1, 0), (0, 0, 0)

_FORMATS: dict[str, _PixelFormat] = {
    "rgb8": _PixelFormat(_U8, 3, _RGB),
    "bgr8": _PixelFormat(_U8, 3, _BGR),
    "rgba8": _PixelFormat(_U8, 4, _RGB),
    "bgra8": _PixelFormat(_U8, 4, _BGR),
    "mono8": _PixelFormat(_U8, 1, _MONO),
    "mono16": _PixelFormat(_U16, 1, _MONO),
    "16UC1": _PixelFormat(_U16, 1, None),
    "32FC1": _PixelFormat(_F32, 1, None),
    # Generic OpenCV types: like cv_bridge, their channels are taken as they are (RGB order).
    "8UC1": _PixelFormat(_U8, 1, _MONO),
    "8UC3": _PixelFormat(_U8, 3, _RGB),
    "8UC4": _PixelFormat(_U8, 4, _RGB),
}

#: Image encodings :func:`image_to_numpy` and :func:`numpy_to_image` handle.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_FORMATS)

#: Depth encodings and their pixel values per meter (REP 118: 16-bit millimeters, float meters).
DEPTH_ENCODINGS: dict[str, float] = {"16UC1": 1000.0, "mono16": 1000.0, "32FC1": 1.0}

#: ``CompressedImage`` formats :func:`rgb_to_compressed` writes, with their OpenCV extension.
COMPRESSED_FORMATS: dict[str, str] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def _pixel_format(encoding: str) -> _PixelFormat:
    """Layout of ``encoding`` or ``ValueError`` listing the supported encodings."""
    fmt = _FORMATS.get(encoding)
    if fmt is None:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return fmt


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(name: str, value: ArrayLike | Sequence) -> np.ndarray:
    """Numpy view/copy of an array, a (CPU or GPU) tensor or a nested sequence."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be array-like, got {type(value).__name__}") from err


def _bytes_of(data: Any) -> np.ndarray:
    """``(N,)`` uint8 view of a message's ``data`` field (array.array, bytes or list)."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _byte_array(values: np.ndarray) -> array.array:
    """The bytes of a C-contiguous array as the ``array('B')`` rclpy stores for ``uint8[]``.

    Assigning an ``array.array`` skips rclpy's per-element check of lists and bytes.
    """
    return array.array("B", np.ascontiguousarray(values).tobytes())


def _copy_header(header: Header | None) -> Header:
    """A new ``Header`` equal to ``header`` (default: empty), so messages never share one."""
    if header is None:
        return Header()
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return out


def _rows(data: Any, height: int, step: int, row_bytes: int) -> np.ndarray:
    """``(height, row_bytes)`` contiguous uint8 rows of a buffer with ``step`` bytes per row."""
    raw = _bytes_of(data)
    return np.ascontiguousarray(raw.reshape(height, step)[:, :row_bytes])


# --------------------------------------------------------------------------------------------
# cv_bridge (optional)
# --------------------------------------------------------------------------------------------


@functools.cache
def _bridge_instance(cls: type) -> Any | None:
    try:
        return cls()
    except Exception:  # its constructor imports cv2 and the boost module
        return None


def _bridge() -> Any | None:
    """A shared ``CvBridge``, or ``None`` when cv_bridge is not importable or unusable."""
    return None if CvBridge is None else _bridge_instance(CvBridge)


def _bridge_to_numpy(msg: Image, fmt: _PixelFormat, shape: tuple[int, ...]) -> np.ndarray | None:
    """Decode a native-order, unpadded image with cv_bridge; ``None`` if it is unavailable."""
    bridge = _bridge()
    if bridge is None:
        return None
    try:
        out = bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
        return np.array(out, dtype=fmt.dtype).reshape(shape)
    except Exception:  # known cv_bridge breakages (NumPy 2, boost): use the numpy code
        return None


def _bridge_to_image(pixels: np.ndarray, encoding: str) -> Image | None:
    """Encode with cv_bridge; ``None`` if it is unavailable or fails."""
    bridge = _bridge()
    if bridge is None:
        return None
    try:
        return bridge.cv2_to_imgmsg(pixels, encoding=encoding)
    except Exception:  # known cv_bridge breakages (NumPy 2, boost): use the numpy code
        return None


# --------------------------------------------------------------------------------------------
# Raw images
# --------------------------------------------------------------------------------------------


def _check_image(msg: Image) -> _PixelFormat:
    """Validate encoding, sizes, ``step`` and data length of ``msg``; return its layout."""
    fmt = _pixel_format(msg.encoding)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width == 0 or height == 0:
        raise ValueError(f"image has zero size: width={width}, height={height}")
    row_bytes = width * fmt.pixel_bytes
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is smaller than width * bytes per pixel = {width} * "
            f"{fmt.pixel_bytes} = {row_bytes} for encoding {msg.encoding!r}"
        )
    size = len(msg.data)
    if size != height * step:
        raise ValueError(
            f"image data has {size} bytes, expected height * step = {height} * {step} = "
            f"{height * step}"
        )
    return fmt


def image_to_numpy(msg: Image) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` as a numpy array the caller owns.

    Row padding (``step`` larger than ``width * pixel bytes``) is dropped and big-endian data
    is swapped to native byte order.

    Args:
        msg: Image with one of :data:`SUPPORTED_ENCODINGS`.

    Returns:
        ``(H, W, C)`` for colour encodings, ``(H, W)`` for mono and depth; ``uint8`` for 8-bit
        encodings, ``uint16`` for ``mono16``/``16UC1``, ``float32`` for ``32FC1``.

    Raises:
        ValueError: Unsupported encoding, zero size, ``step`` too small or data length not
            ``height * step``.
    """
    fmt = _check_image(msg)
    height, width = int(msg.height), int(msg.width)
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    row_bytes = width * fmt.pixel_bytes
    swapped = fmt.dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == "big")
    if not swapped and msg.step == row_bytes:
        pixels = _bridge_to_numpy(msg, fmt, shape)
        if pixels is not None:
            return pixels
    stored = fmt.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = _rows(msg.data, height, int(msg.step), row_bytes)
    return rows.view(stored).reshape(shape).astype(fmt.dtype)


def numpy_to_image(array: ArrayLike, encoding: str, header: Header | None = None) -> Image:
    """Pack pixels into a ``sensor_msgs/Image`` (no row padding, native byte order).

    Args:
        array: ``(H, W, C)`` or, for one channel, ``(H, W)`` / ``(H, W, 1)`` pixels whose dtype
            matches ``encoding`` (``uint8``, ``uint16`` for ``mono16``/``16UC1``, ``float32``
            for ``32FC1``). A torch tensor is moved to the CPU.
        encoding: One of :data:`SUPPORTED_ENCODINGS`.
        header: Copied into the message (default: empty header).

    Returns:
        Image with ``step = width * pixel bytes`` and ``is_bigendian = sys.byteorder == "big"``.

    Raises:
        ValueError: Unsupported encoding, wrong shape or dtype, or zero size.
    """
    fmt = _pixel_format(encoding)
    pixels = _to_numpy("array", array)
    if fmt.channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    ndim = 2 if fmt.channels == 1 else 3
    if pixels.ndim != ndim or pixels.shape[2:] != (() if ndim == 2 else (fmt.channels,)):
        want = "(H, W)" if ndim == 2 else f"(H, W, {fmt.channels})"
        raise ValueError(f"{encoding} image must have shape {want}, got {pixels.shape}")
    if pixels.dtype.newbyteorder("=") != fmt.dtype:
        raise ValueError(f"{encoding} image must have dtype {fmt.dtype}, got {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"image has zero size: shape {pixels.shape}")
    pixels = np.ascontiguousarray(pixels, dtype=fmt.dtype)
    msg = _bridge_to_image(pixels, encoding)
    if msg is None:
        msg = Image(encoding=encoding, height=pixels.shape[0], width=pixels.shape[1])
        msg.step = pixels.shape[1] * fmt.pixel_bytes
        msg.is_bigendian = sys.byteorder == "big"
        msg.data = _byte_array(pixels)
    msg.header = _copy_header(header)
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """RGB pixels of a colour or mono image.

    BGR(A) is reordered, alpha dropped, mono replicated to three channels and ``mono16``
    reduced to 8 bits (``>> 8``).

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: A depth encoding (``16UC1``, ``32FC1``), or any error of
            :func:`image_to_numpy`.
    """
    fmt = _pixel_format(msg.encoding)
    if fmt.rgb is None:
        raise ValueError(
            f"image encoding {msg.encoding!r} is a depth encoding, not colour; use image_to_depth_m"
        )
    pixels = image_to_numpy(msg)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., list(fmt.rgb)])


def image_to_depth_m(msg: Image) -> np.ndarray:
    """Depth in meters of a REP 118 depth image.

    ``16UC1`` and ``mono16`` hold millimeters, ``32FC1`` meters. Invalid pixels (0, NaN, inf
    and negative values) become ``0.0``.

    Returns:
        ``(H, W)`` float32 depth, meters, ``0`` where invalid.

    Raises:
        ValueError: A colour encoding, or any error of :func:`image_to_numpy`.
    """
    _pixel_format(msg.encoding)
    per_meter = DEPTH_ENCODINGS.get(msg.encoding)
    if per_meter is None:
        raise ValueError(
            f"image encoding {msg.encoding!r} is not a depth encoding; expected 16UC1 or "
            "mono16 (millimeters) or 32FC1 (meters)"
        )
    depth = image_to_numpy(msg).astype(np.float32)
    if per_meter != 1.0:
        depth /= np.float32(per_meter)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def depth_to_image(depth_m: ArrayLike, header: Header | None = None) -> Image:
    """Encode depth in meters as a REP 118 ``32FC1`` image.

    Args:
        depth_m: ``(H, W)`` or ``(H, W, 1)`` floating depth, meters. Finite values ``<= 0``
            (no surface) are written as NaN, REP 117's "invalid"; NaN and +-inf pass through.
        header: Copied into the message.

    Raises:
        ValueError: Wrong shape, non-floating dtype or zero size.
    """
    depth = _to_numpy("depth_m", depth_m)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"depth_m must be floating-point meters, got dtype {depth.dtype}; "
            "use numpy_to_image(array, '16UC1') for millimeters"
        )
    depth = np.array(depth, dtype=np.float32)
    depth[np.isfinite(depth) & (depth <= 0)] = np.nan
    return numpy_to_image(depth, "32FC1", header)


# --------------------------------------------------------------------------------------------
# Compressed images
# --------------------------------------------------------------------------------------------


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage``.

    The format string (``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``, ...) is not
    needed to decode: OpenCV reads the file signature. Image-transport payloads are BGR.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: Empty or undecodable data, or a ``compressedDepth`` payload.
    """
    if "compresseddepth" in msg.format.lower():
        raise ValueError(
            f"CompressedImage format {msg.format!r} (compressedDepth) is not supported; "
            "expected a JPEG or PNG colour image"
        )
    raw = _bytes_of(msg.data)
    if raw.size == 0:
        raise ValueError(f"CompressedImage (format {msg.format!r}) has no data")
    problem = f"could not decode CompressedImage data ({raw.size} bytes, format {msg.format!r})"
    try:
        bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ValueError(f"{problem}: {err}") from err
    if bgr is None:
        raise ValueError(f"{problem}; expected JPEG or PNG data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(
    rgb: ArrayLike, format: str = "jpeg", header: Header | None = None, quality: int = 90
) -> CompressedImage:
    """Encode RGB pixels as a ``sensor_msgs/CompressedImage``.

    The message format is image_transport's ``"rgb8; <format> compressed bgr8"``.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.
        format: ``"jpeg"`` (or ``"jpg"``) or ``"png"``.
        header: Copied into the message.
        quality: JPEG quality in ``[1, 100]``; PNG is lossless and ignores it.

    Raises:
        ValueError: Unknown format, quality out of range, wrong shape/dtype or zero size.
    """
    ext = COMPRESSED_FORMATS.get(format.lower())
    if ext is None:
        raise ValueError(
            f"unsupported compressed format {format!r}; supported: {', '.join(COMPRESSED_FORMATS)}"
        )
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}")
    pixels = _to_numpy("rgb", rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"image has zero size: shape {pixels.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {format!r}")
    name = "jpeg" if ext == ".jpg" else "png"
    msg = CompressedImage(format=f"rgb8; {name} compressed bgr8")
    msg.header = _copy_header(header)
    msg.data = _byte_array(buffer)
    return msg


# --------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Transforms and poses
# --------------------------------------------------------------------------------------------

#: Quaternions with a smaller norm are rejected as "zero" (they carry no rotation).
MIN_QUATERNION_NORM = 1e-6


def _finite_vector(name: str, values: Sequence[float]) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf: {tuple(out.tolist())}")
    return out


def _matrix(name: str, t: Vector3 | Point, q: Quaternion) -> np.ndarray:
    """``(4, 4)`` float64 transform from a ROS translation and ``(x, y, z, w)`` quaternion."""
    t_np = _finite_vector(f"{name} translation", (t.x, t.y, t.z))
    q_np = _finite_vector(f"{name} quaternion (x, y, z, w)", (q.x, q.y, q.z, q.w))
    if np.linalg.norm(q_np) < MIN_QUATERNION_NORM:
        raise ValueError(
            f"{name} quaternion (x, y, z, w) = {tuple(q_np.tolist())} has zero norm; "
            "the identity rotation is (0, 0, 0, 1)"
        )
    T = pose_from_translation_quaternion(torch.from_numpy(t_np), torch.from_numpy(q_np))
    return T.numpy()


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
        ValueError: NaN/inf values or a zero-norm quaternion.
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


# --------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------

_CLOUD_POINT_STEP = 16

_FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}


def _colors_uint8(colors: ArrayLike, n: int) -> np.ndarray:
    """``(N, 3)`` uint8 colours from uint8, integer ``[0, 255]`` or float ``[0, 1]`` input."""
    values = _to_numpy("colors", colors)
    if values.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3) like points, got {values.shape}")
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ValueError("colors contain NaN or inf")
        return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError("integer colors must lie in [0, 255]")
        return values.astype(np.uint8)
    raise ValueError(f"colors must be uint8 or float in [0, 1], got dtype {values.dtype}")


def _cloud_fields() -> list[PointField]:
    """Fields of :func:`pointcloud2_from_points`: x, y, z and packed rgb, all FLOAT32.

    The colour ``0x00RRGGBB`` is stored in the bits of a float32, as RViz and PCL expect.
    """
    names = ("x", "y", "z", "rgb")
    return [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(names)
    ]


def _pack_rgb(colors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 -> ``(N,)`` uint32 ``0x00RRGGBB``."""
    c = colors.astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """``(N,)`` uint32 ``0x??RRGGBB`` -> ``(N, 3)`` uint8."""
    shifts = np.array([16, 8, 0], dtype=np.uint32)
    return ((packed[:, None] >> shifts) & 0xFF).astype(np.uint8)


def pointcloud2_from_points(
    points: ArrayLike, colors: ArrayLike, header: Header | None = None
) -> PointCloud2:
    """Coloured ``sensor_msgs/PointCloud2``: height 1, little-endian, FLOAT32 x, y, z, rgb.

    Args:
        points: ``(N, 3)`` positions, meters (cast to float32).
        colors: ``(N, 3)`` uint8, or float in ``[0, 1]`` (clipped, rounded to 8 bits).
        header: Copied into the message.

    Returns:
        Cloud with ``point_step`` 16; ``is_dense`` is True unless a point is NaN/inf.

    Raises:
        ValueError: Wrong shapes or dtypes, or NaN/inf colours.
    """
    xyz = _to_numpy("points", points)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {xyz.shape}")
    if not (np.issubdtype(xyz.dtype, np.floating) or np.issubdtype(xyz.dtype, np.integer)):
        raise ValueError(f"points must be numeric, got dtype {xyz.dtype}")
    rgb = _pack_rgb(_colors_uint8(colors, len(xyz)))
    # One (N, 4) little-endian float32 block: xyz, then the packed colour bits (integer writes
    # only, so no float operation can touch them).
    block = np.empty((len(xyz), 4), dtype="<f4")
    block[:, :3] = xyz
    block.view("<u4")[:, 3] = rgb
    msg = _create_cloud_ros(block) if sys.byteorder == "little" else None
    if msg is None:
        msg = PointCloud2(height=1, width=len(block), fields=_cloud_fields())
        msg.is_bigendian = False
        msg.point_step = _CLOUD_POINT_STEP
        msg.row_step = _CLOUD_POINT_STEP * len(block)
        msg.data = _byte_array(block)
    msg.header = _copy_header(header)
    msg.is_dense = bool(np.isfinite(block[:, :3]).all())
    return msg


def _create_cloud_ros(block: np.ndarray) -> PointCloud2 | None:
    """``sensor_msgs_py.point_cloud2.create_cloud`` of an ``(N, 4)`` float32 block, if usable."""
    if point_cloud2 is None:
        return None
    try:
        return point_cloud2.create_cloud(Header(), _cloud_fields(), block)
    except Exception:  # an older or broken sensor_msgs_py: use the numpy code
        return None


def _field(msg: PointCloud2, names: Sequence[str], required: bool) -> PointField | None:
    """First field of ``msg`` named one of ``names``; ``ValueError`` if required and absent."""
    by_name = {f.name: f for f in msg.fields}
    for name in names:
        if name in by_name:
            return by_name[name]
    if required:
        present = ", ".join(repr(n) for n in by_name) or "none"
        raise ValueError(f"PointCloud2 has no field {names[0]!r} (fields: {present})")
    return None


def _field_dtype(field: PointField, point_step: int) -> np.dtype:
    """Dtype of ``field``, checked to lie inside one point of ``point_step`` bytes."""
    dtype = _FIELD_DTYPES.get(field.datatype)
    if dtype is None:
        raise ValueError(
            f"PointCloud2 field {field.name!r} has unknown datatype {field.datatype}; "
            "expected a sensor_msgs/PointField constant in 1..8"
        )
    if field.offset + dtype.itemsize > point_step:
        raise ValueError(
            f"PointCloud2 field {field.name!r} (offset {field.offset}, {dtype.itemsize} bytes) "
            f"does not fit in point_step {point_step}"
        )
    return dtype


def _cloud_layout(msg: PointCloud2) -> tuple[list[PointField], np.dtype]:
    """Validate ``msg``; return the fields to read (x, y, z, colour?) and their record dtype.

    The colour field is read as an unsigned integer of its byte order, whatever its datatype.
    """
    fields = [_field(msg, (axis,), required=True) for axis in ("x", "y", "z")]
    colour = _field(msg, ("rgb", "rgba"), required=False)
    if colour is not None:
        fields.append(colour)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    width, height = int(msg.width), int(msg.height)
    dtypes = [_field_dtype(f, point_step) for f in fields]
    if colour is not None and dtypes[-1].itemsize != 4:
        raise ValueError(
            f"PointCloud2 colour field {colour.name!r} must be 4 bytes (FLOAT32, UINT32 or "
            f"INT32), got datatype {colour.datatype}"
        )
    if row_step < width * point_step:
        raise ValueError(
            f"PointCloud2 row_step {row_step} is smaller than width * point_step = "
            f"{width} * {point_step} = {width * point_step}"
        )
    if len(msg.data) != height * row_step:
        raise ValueError(
            f"PointCloud2 data has {len(msg.data)} bytes, expected height * row_step = "
            f"{height} * {row_step} = {height * row_step}"
        )
    if colour is not None:
        dtypes[-1] = np.dtype(np.uint32)
    order = ">" if msg.is_bigendian else "<"
    record = np.dtype(
        {
            "names": [f"f{i}" for i in range(len(fields))],
            "formats": [d.newbyteorder(order) for d in dtypes],
            "offsets": [f.offset for f in fields],
            "itemsize": point_step,
        }
    )
    return fields, record


def _read_points_ros(msg: PointCloud2, fields: list[PointField]) -> list[np.ndarray] | None:
    """Columns of ``fields`` read by ``sensor_msgs_py.point_cloud2.read_points``, if usable."""
    native = bool(msg.is_bigendian) == (sys.byteorder == "big")
    if point_cloud2 is None or not native or msg.row_step != msg.width * msg.point_step:
        return None
    try:
        records = point_cloud2.read_points(msg, field_names=[f.name for f in fields])
        return [np.asarray(records[f.name]).reshape(-1) for f in fields]
    except Exception:  # an older or broken sensor_msgs_py: use the numpy code
        return None


def pointcloud2_to_numpy(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Positions and colours of a ``sensor_msgs/PointCloud2``.

    Reads any field offsets, ``point_step``, ``row_step`` padding and byte order, so clouds
    from :func:`pointcloud2_from_points`, ``sensor_msgs_py.point_cloud2.create_cloud`` or
    drivers all work. x, y and z may have any numeric datatype; the colour is the packed
    ``0x??RRGGBB`` field ``rgb`` (or ``rgba``), FLOAT32, UINT32 or INT32.

    Returns:
        ``points``: ``(N, 3)`` float32 meters (``N = width * height``, row-major).
        ``colors``: ``(N, 3)`` uint8 RGB, zeros when the cloud has no colour field.

    Raises:
        ValueError: Missing x/y/z, unknown datatypes, fields outside ``point_step``, a
            ``row_step`` smaller than ``width * point_step`` or a wrong data length.
    """
    fields, record = _cloud_layout(msg)
    width, height = int(msg.width), int(msg.height)
    columns = _read_points_ros(msg, fields) if width * height else None
    if columns is None:
        rows = _rows(msg.data, height, int(msg.row_step), width * int(msg.point_step))
        records = rows.view(record).reshape(-1) if width * height else np.empty(0, record)
        columns = [records[f"f{i}"] for i in range(len(fields))]
    points = np.stack(columns[:3], axis=-1).astype(np.float32)
    if len(columns) == 3:
        return points, np.zeros((len(points), 3), dtype=np.uint8)
    return points, _unpack_rgb(_bits_uint32(columns[3]))


def _bits_uint32(column: np.ndarray) -> np.ndarray:
    """``(N,)`` native uint32 holding the bits of a 4-byte column of any type and byte order."""
    values = np.ascontiguousarray(column)
    bits = values.view(np.dtype(np.uint32).newbyteorder(values.dtype.byteorder))
    return bits.astype(np.uint32)
