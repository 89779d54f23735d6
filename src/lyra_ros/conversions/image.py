"""Images: ``sensor_msgs/Image`` and ``CompressedImage`` <-> NumPy, and REP 118 depth.

Images are NumPy arrays ``(H, W, C)`` for colour and ``(H, W)`` for mono and depth, in native
byte order; RGB images are ``uint8``. Depth follows REP 118: ``32FC1`` is meters, ``16UC1`` (and
``mono16``) millimeters with ``0`` meaning invalid; inside the project invalid depth is ``0.0``
meters.

``cv_bridge`` is used when it is importable (a ROS install) for the plain cases every version
of it handles: native byte order and no row padding. Input is checked here first, and if the
library fails on input that passed the checks (e.g. an old ``cv_bridge`` on NumPy 2) the NumPy
code below does the conversion.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lyra_ros.conversions._common import (
    ArrayLike,
    _byte_array,
    _bytes_of,
    _copy_header,
    _rows,
    _to_numpy,
)

try:
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None

__all__ = [
    "COMPRESSED_FORMATS",
    "DEPTH_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "compressed_image_size",
    "compressed_to_rgb",
    "depth_to_image",
    "image_to_depth_m",
    "image_to_numpy",
    "image_to_rgb",
    "numpy_to_image",
    "rgb_to_compressed",
]

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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
# 0xC0-0xCF except DHT (0xC4), JPG (0xC8) and DAC (0xCC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# JPEG markers without a length field: TEM, RST0-7, SOI (EOI ends the scan).
_JPEG_BARE = frozenset((0x01, *range(0xD0, 0xD9)))


def _png_size(raw: bytes) -> tuple[int, int] | None:
    # The IHDR chunk comes first: length (4), "IHDR", width (4, big-endian), height (4).
    if len(raw) < 24 or raw[12:16] != b"IHDR":
        return None
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    pos = 2  # after SOI
    while pos + 4 <= len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_BARE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or start of scan before any frame header
            return None
        length = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF:
            # length (2), sample precision (1), height (2), width (2)
            if pos + 9 > len(raw) or length < 7:
                return None
            height = int.from_bytes(raw[pos + 5 : pos + 7], "big")
            width = int.from_bytes(raw[pos + 7 : pos + 9], "big")
            return (width, height) if height > 0 else None  # 0: the height comes later (DNL)
        if length < 2:
            return None
        pos += 2 + length
    return None


def compressed_image_size(data: Any) -> tuple[int, int] | None:
    """``(width, height)`` a PNG or JPEG declares in its header, read without decoding.

    Reads the PNG ``IHDR`` chunk, or walks the JPEG markers to the first start-of-frame
    header (only the headers' bytes are looked at).

    Args:
        data: The bytes of a ``CompressedImage`` (bytes, array.array, list or uint8 array).

    Returns:
        The declared size, or ``None`` for another format or a header too broken to read.
    """
    raw = _bytes_of(data)[: 1 << 20].tobytes()  # the headers come first; 1 MiB is plenty
    if raw.startswith(_PNG_SIGNATURE):
        return _png_size(raw)
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_size(raw)
    return None


def compressed_to_rgb(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage``.

    The format string (``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``, ...) is not
    needed to decode: OpenCV reads the file signature. Image-transport payloads are BGR.

    Args:
        msg: The message.
        max_pixels: When given, the size the PNG or JPEG header declares
            (:func:`compressed_image_size`) must be at most this many pixels, checked before
            decoding (so a small file that would decode to gigabytes is refused); data whose
            size cannot be read from its header (other formats) is then refused too.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: Empty or undecodable data, a ``compressedDepth`` payload, or a declared
            size over ``max_pixels``.
    """
    if "compresseddepth" in msg.format.lower():
        raise ValueError(
            f"CompressedImage format {msg.format!r} (compressedDepth) is not supported; "
            "expected a JPEG or PNG colour image"
        )
    raw = _bytes_of(msg.data)
    if raw.size == 0:
        raise ValueError(f"CompressedImage (format {msg.format!r}) has no data")
    if max_pixels is not None:
        size = compressed_image_size(raw)
        if size is None:
            raise ValueError(
                f"CompressedImage (format {msg.format!r}, {raw.size} bytes): no PNG or JPEG "
                "header with the image size, so its decoded size cannot be checked"
            )
        if size[0] * size[1] > max_pixels:
            raise ValueError(
                f"CompressedImage declares {size[0]}x{size[1]} = {size[0] * size[1]} pixels, "
                f"more than max_input_pixels ({max_pixels})"
            )
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
