"""ROS 2 bags (MCAP or sqlite3), read with ``rosbags`` (no ROS install needed).

* Images: ``sensor_msgs/msg/Image`` (``rgb8``, ``rgba8``, ``bgr8``, ``bgra8``, ``mono8``,
  ``mono16``, ``rgb16``, ``bgr16``, ``8UC1``, ``8UC3``, ``bayer_*8``) or
  ``sensor_msgs/msg/CompressedImage`` (JPEG, PNG).
* Depth (optional): ``Image`` with ``16UC1``/``mono16`` in millimetres or ``32FC1`` in meters,
  or ``CompressedImage`` from ``compressed_depth_image_transport`` (``"16UC1; compressedDepth
  png"``, ``"32FC1; compressedDepth png"``). Depth must be registered to the colour camera: same
  ``frame_id`` and size. Each image takes the depth with the nearest stamp within
  ``max_depth_offset`` seconds, else has none.
* Camera: ``sensor_msgs/msg/CameraInfo`` (the latest at or before each image, else the first);
  ``K`` and size, ``D`` for ``plumb_bob`` / ``rational_polynomial`` undistorted with OpenCV
  (``rectified=True`` for ``image_rect`` topics: ``P``'s left 3x3 and no undistortion).
* Poses: ``/tf`` and ``/tf_static`` go into a tf buffer
  (:class:`lyra_core.geometry.transform_tree.TfBuffer`) and each image's pose is
  ``T_world_camera`` at its header stamp, interpolated as tf2 does; the camera frame defaults
  to the image's ``frame_id``, which ROS takes to be an optical frame (OpenCV axes). Images with
  no pose at their stamp (before the first or after the last tf sample of a moving link) are
  skipped with one warning. ``world_frame`` defaults to the root of the camera frame's tf tree.

Frames are sorted by stamp; ``stamp`` is the header stamp in seconds, ``name`` is
``"<topic>@<sec>.<nanosec>"``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lyra_core.data.captures.common import (
    Capture,
    CaptureFrame,
    SkipLog,
    check_downscale,
    clean_depth,
    finish_frame,
    intrinsics_or_error,
    to_rgb8,
)
from lyra_core.geometry.transform_tree import TfBuffer
from lyra_core.geometry.transforms import OPTICAL_TO_BODY
from lyra_core.utils.errors import CaptureError

__all__ = ["IMAGE_TYPES", "TransformLookupFn", "find_bag", "read_rosbag"]

TransformLookupFn = Callable[[str, str, float], np.ndarray]
"""``lookup(target_frame, source_frame, stamp_seconds) -> T_target_source`` ``(4, 4)``; raises
``LookupError`` when there is no transform at that time."""

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
BAG_SUFFIXES = (".mcap", ".db3")

#: ``encoding -> (channels, dtype, BGR order)`` of the colour encodings read.
_COLOUR_ENCODINGS: dict[str, tuple[int, str, bool]] = {
    "rgb8": (3, "u1", False),
    "rgba8": (4, "u1", False),
    "bgr8": (3, "u1", True),
    "bgra8": (4, "u1", True),
    "8uc3": (3, "u1", True),
    "8uc4": (4, "u1", True),
    "rgb16": (3, "u2", False),
    "bgr16": (3, "u2", True),
    "mono8": (1, "u1", False),
    "8uc1": (1, "u1", False),
    "mono16": (1, "u2", False),
}
#: ROS Bayer patterns -> OpenCV demosaicing to BGR (cv_bridge's table).
_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2BGR,
    "bayer_bggr8": cv2.COLOR_BayerRG2BGR,
    "bayer_gbrg8": cv2.COLOR_BayerGR2BGR,
    "bayer_grbg8": cv2.COLOR_BayerGB2BGR,
}
#: Depth encodings -> (dtype, meters per unit).
_DEPTH_ENCODINGS = {"16uc1": ("u2", 1e-3), "mono16": ("u2", 1e-3), "32fc1": ("f4", 1.0)}
_COMPRESSED_DEPTH_HEADER = 12  # int32 format + float32 depthParam[2]


def find_bag(path: Path) -> Path | None:
    """The bag for ``path`` (a ``.mcap``/``.db3`` file, a folder with ``metadata.yaml``, or a
    folder holding exactly one ``.mcap``/``.db3`` file), or None."""
    if path.is_file():
        if path.suffix.lower() in BAG_SUFFIXES:
            return path
        if path.name == "metadata.yaml":
            return path.parent
        return None
    if (path / "metadata.yaml").is_file():
        return path
    files = [p for p in path.glob("*") if p.suffix.lower() in BAG_SUFFIXES] if path.is_dir() else []
    return files[0] if len(files) == 1 else None


@dataclass
class _Stamped:
    stamp_ns: int
    frame_id: str
    data: Any


def read_rosbag(
    path: str | Path,
    *,
    image_topic: str | None = None,
    depth_topic: str | None = None,
    camera_info_topic: str | None = None,
    world_frame: str | None = None,
    camera_frame: str | None = None,
    camera_frame_is_optical: bool = True,
    rectified: bool = False,
    downscale: int = 1,
    stride: int = 1,
    max_depth_offset: float = 0.02,
    tf_topic: str = "/tf",
    tf_static_topic: str = "/tf_static",
    lookup: TransformLookupFn | None = None,
) -> Capture:
    """Read posed (RGB-D) frames from a ROS 2 bag (module docstring for the conventions).

    Args:
        path: a ``.mcap``/``.db3`` file or a bag folder (``metadata.yaml``).
        image_topic: the colour images; default: the bag's only ``Image``/``CompressedImage``
            topic whose name does not contain ``depth``.
        depth_topic: registered depth images, or None for RGB only.
        camera_info_topic: default: ``camera_info`` beside ``image_topic``
            (``/cam/image_raw`` -> ``/cam/camera_info``), else the bag's only ``CameraInfo``.
        world_frame: the frame poses are given in; default: the root of the tf tree.
        camera_frame: the camera's tf frame; default: each image's ``header.frame_id``.
        camera_frame_is_optical: True if ``camera_frame`` has the OpenCV axes (ROS optical
            frames); False for a REP 103 body frame (x forward, y left, z up).
        rectified: the images are already rectified (``image_rect``): intrinsics from ``P``,
            no undistortion.
        downscale: integer factor to shrink the images by (1: full size).
        stride: keep every ``stride``-th image of the topic (in recording order).
        max_depth_offset: largest stamp difference between an image and its depth, seconds.
        tf_topic: the dynamic transforms.
        tf_static_topic: the static transforms.
        lookup: poses from this function instead of the bag's tf (``world_frame`` required).

    Returns:
        The :class:`Capture`, frames sorted by stamp, no points.

    Raises:
        CaptureError: unreadable bag, missing or ambiguous topics, unknown frames, unsupported
            encodings, images that do not fit their camera info, or no image with a pose.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    downscale = check_downscale(downscale)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise CaptureError(f"stride must be an integer >= 1, got {stride!r}")
    if not isinstance(max_depth_offset, (int, float)) or not 0 <= max_depth_offset < math.inf:
        raise CaptureError(f"max_depth_offset must be seconds >= 0, got {max_depth_offset!r}")
    path = Path(path)
    bag = find_bag(path) if path.exists() else None
    if bag is None:
        raise CaptureError(f"{path}: not a ROS 2 bag (.mcap, .db3, or a folder with metadata.yaml)")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise CaptureError(f"{bag}: cannot open the bag: {exc}") from None
    try:
        return _read(
            reader,
            bag,
            image_topic=image_topic,
            depth_topic=depth_topic,
            camera_info_topic=camera_info_topic,
            world_frame=world_frame,
            camera_frame=camera_frame,
            camera_frame_is_optical=camera_frame_is_optical,
            rectified=rectified,
            downscale=downscale,
            stride=stride,
            max_depth_offset=max_depth_offset,
            tf_topics=(tf_topic, tf_static_topic),
            lookup=lookup,
        )
    finally:
        reader.close()


def _read(
    reader: Any,
    bag: Path,
    *,
    image_topic: str | None,
    depth_topic: str | None,
    camera_info_topic: str | None,
    world_frame: str | None,
    camera_frame: str | None,
    camera_frame_is_optical: bool,
    rectified: bool,
    downscale: int,
    stride: int,
    max_depth_offset: float,
    tf_topics: tuple[str, str],
    lookup: TransformLookupFn | None,
) -> Capture:
    topics: dict[str, str] = {c.topic: c.msgtype for c in reader.connections}
    image_topic = _image_topic(bag, topics, image_topic)
    if depth_topic is not None:
        _check_topic(bag, topics, depth_topic, IMAGE_TYPES, "depth")
    info_topic = _camera_info_topic(bag, topics, image_topic, camera_info_topic)
    wanted = {image_topic, info_topic, *([depth_topic] if depth_topic else [])}
    if lookup is None:
        wanted |= {t for t in tf_topics if t in topics}
        if not any(t in topics for t in tf_topics):
            raise CaptureError(
                f"{bag}: no {' or '.join(tf_topics)} topic to take camera poses from "
                f"(topics: {_listing(topics)})"
            )
    elif world_frame is None:
        raise CaptureError("world_frame is required when poses come from a lookup function")

    images: list[_Stamped] = []
    depths: list[_Stamped] = []
    infos: list[_Stamped] = []
    tf_samples: list[tuple[int, str, str, np.ndarray, np.ndarray, bool]] = []
    seen_images = 0
    connections = [c for c in reader.connections if c.topic in wanted]
    for connection, _, raw in reader.messages(connections=connections):
        topic = connection.topic
        try:
            msg = reader.deserialize(raw, connection.msgtype)
        except Exception as exc:  # rosbags raises several types for corrupt data
            raise CaptureError(f"{bag}: cannot decode a message on {topic}: {exc}") from None
        if topic in tf_topics and lookup is None:
            static = topic == tf_topics[1]
            for tf in msg.transforms:
                tr, rot = tf.transform.translation, tf.transform.rotation
                tf_samples.append(
                    (
                        _stamp_ns(tf.header),
                        _frame(tf.header.frame_id),
                        _frame(tf.child_frame_id),
                        np.array([tr.x, tr.y, tr.z]),
                        np.array([rot.x, rot.y, rot.z, rot.w]),
                        static,
                    )
                )
        elif topic == info_topic:
            infos.append(_Stamped(_stamp_ns(msg.header), _frame(msg.header.frame_id), msg))
        elif topic == image_topic:
            seen_images += 1
            if (seen_images - 1) % stride == 0:
                rgb = _decode_colour(msg, connection.msgtype, image_topic)
                images.append(_Stamped(_stamp_ns(msg.header), _frame(msg.header.frame_id), rgb))
        elif topic == depth_topic:
            depth = _decode_depth(msg, connection.msgtype, depth_topic)
            depths.append(_Stamped(_stamp_ns(msg.header), _frame(msg.header.frame_id), depth))
    if not images:
        raise CaptureError(f"{bag}: no message on {image_topic}")
    if not infos:
        raise CaptureError(f"{bag}: no message on {info_topic}")
    images.sort(key=lambda s: s.stamp_ns)
    infos.sort(key=lambda s: s.stamp_ns)
    depths.sort(key=lambda s: s.stamp_ns)

    pose_at: Callable[[str, str, int], np.ndarray]
    if lookup is None:
        pose_at, parents = _tf_lookup(bag, tf_samples, images)
        frame0 = camera_frame or images[0].frame_id
        for frame in (frame0, world_frame):
            if frame is not None and frame not in parents and frame not in parents.values():
                raise CaptureError(
                    f"{bag}: frame {frame!r} is not on {' or '.join(tf_topics)} "
                    f"(frames: {', '.join(sorted({*parents, *parents.values()}))})"
                )
        if world_frame is None:
            world_frame = frame0
            while world_frame in parents:
                world_frame = parents[world_frame]
    else:
        user_lookup = lookup

        def pose_at(target: str, source: str, stamp_ns: int) -> np.ndarray:
            return user_lookup(target, source, stamp_ns * 1e-9)

    assert world_frame is not None

    depth_stamps = [d.stamp_ns for d in depths]
    info_stamps = [i.stamp_ns for i in infos]
    max_offset_ns = round(max_depth_offset * 1e9)
    skips = SkipLog(f"{bag}: {image_topic}")
    no_depth = SkipLog(f"{bag}: {depth_topic}", "kept without depth")
    frames: list[CaptureFrame] = []
    for image in images:
        name = f"{image_topic}@{image.stamp_ns // 10**9}.{image.stamp_ns % 10**9:09d}"
        stamp = image.stamp_ns * 1e-9
        source = camera_frame or image.frame_id
        try:
            camtoworld = np.asarray(pose_at(world_frame, source, image.stamp_ns), np.float64)
        except LookupError as exc:
            skips.add(
                f"no pose of {source!r} in {world_frame!r} at the image stamp", name, str(exc)
            )
            continue
        if not camera_frame_is_optical:
            camtoworld = camtoworld @ OPTICAL_TO_BODY.double().numpy()
        info = infos[max(0, bisect.bisect_right(info_stamps, image.stamp_ns) - 1)].data
        intrinsics, distortion = _camera(info, info_topic, rectified, bag)
        depth = None
        if depth_topic is not None:
            match = _nearest(depths, depth_stamps, image.stamp_ns, max_offset_ns)
            if match is None:
                no_depth.add(f"no depth within {max_depth_offset} s", name)
            elif match.frame_id != image.frame_id:
                raise CaptureError(
                    f"{bag}: depth on {depth_topic} is in frame {match.frame_id!r}, the images "
                    f"on {image_topic} in {image.frame_id!r}: depth must be registered to the "
                    "colour camera (e.g. aligned_depth_to_color)"
                )
            else:
                depth = match.data
        rgb, depth, intrinsics = finish_frame(
            image.data, depth, intrinsics, distortion, downscale, f"{bag}: {name} ({info_topic})"
        )
        frames.append(CaptureFrame(rgb, intrinsics, camtoworld, depth, stamp, name))
    skips.warn(len(images))
    no_depth.warn(len(images))
    if not frames:
        raise CaptureError(
            f"{bag}: no usable frame: none of the {len(images)} image(s) on {image_topic} has a "
            f"pose in {world_frame!r} at its stamp"
        )
    return Capture(frames, None, None, "rosbag", skips.count, bag)


# --------------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------------


def _listing(topics: dict[str, str]) -> str:
    return ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"


def _check_topic(
    bag: Path, topics: dict[str, str], topic: str, types: Sequence[str], role: str
) -> None:
    if topic not in topics:
        raise CaptureError(f"{bag}: no {role} topic {topic!r} (topics: {_listing(topics)})")
    if topics[topic] not in types:
        raise CaptureError(
            f"{bag}: {role} topic {topic!r} has type {topics[topic]}, expected {' or '.join(types)}"
        )


def _image_topic(bag: Path, topics: dict[str, str], topic: str | None) -> str:
    if topic is not None:
        _check_topic(bag, topics, topic, IMAGE_TYPES, "image")
        return topic
    found = [t for t, m in topics.items() if m in IMAGE_TYPES and "depth" not in t.lower()]
    if len(found) != 1:
        raise CaptureError(
            f"{bag}: {'several' if found else 'no'} colour image topics: pass image_topic "
            f"(topics: {_listing(topics)})"
        )
    return found[0]


def _camera_info_topic(
    bag: Path, topics: dict[str, str], image_topic: str, topic: str | None
) -> str:
    if topic is not None:
        _check_topic(bag, topics, topic, (CAMERA_INFO_TYPE,), "camera_info")
        return topic
    base = image_topic.removesuffix("/compressed")
    sibling = base.rsplit("/", 1)[0] + "/camera_info"
    if topics.get(sibling) == CAMERA_INFO_TYPE:
        return sibling
    found = [t for t, m in topics.items() if m == CAMERA_INFO_TYPE]
    if len(found) != 1:
        raise CaptureError(
            f"{bag}: no {sibling} and {'several' if found else 'no'} CameraInfo topics: pass "
            f"camera_info_topic (topics: {_listing(topics)})"
        )
    return found[0]


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _frame(frame_id: str) -> str:
    return frame_id.lstrip("/")


def _raw_pixels(msg: Any, channels: int, dtype: str, topic: str) -> np.ndarray:
    """``(H, W, C)`` array of a ``sensor_msgs/Image`` (row padding and byte order handled)."""
    item = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * item.itemsize
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if msg.step < row or data.size < msg.height * msg.step:
        raise CaptureError(
            f"{topic}: {msg.encoding} image {msg.width}x{msg.height} with step {msg.step} "
            f"holds {data.size} bytes"
        )
    rows = data[: msg.height * msg.step].reshape(msg.height, msg.step)[:, :row]
    pixels = np.ascontiguousarray(rows).view(item).reshape(msg.height, msg.width, channels)
    return pixels.astype(item.newbyteorder("="), copy=False)


def _decode_colour(msg: Any, msgtype: str, topic: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an ``Image`` or ``CompressedImage`` message."""
    if msgtype.endswith("CompressedImage"):
        image = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise CaptureError(f"{topic}: cannot decode a {msg.format!r} compressed image")
        return to_rgb8(image, topic, bgr=True)
    encoding = msg.encoding.lower()
    if encoding in _BAYER:
        mosaic = _raw_pixels(msg, 1, "u1", topic)[..., 0]
        return to_rgb8(cv2.cvtColor(mosaic, _BAYER[encoding]), topic, bgr=True)
    if encoding not in _COLOUR_ENCODINGS:
        raise CaptureError(
            f"{topic}: unsupported image encoding {msg.encoding!r} "
            f"(supported: {', '.join([*_COLOUR_ENCODINGS, *_BAYER])})"
        )
    channels, dtype, bgr = _COLOUR_ENCODINGS[encoding]
    return to_rgb8(_raw_pixels(msg, channels, dtype, topic), topic, bgr=bgr)


def _decode_depth(msg: Any, msgtype: str, topic: str) -> np.ndarray:
    """(H, W) float32 meters (0 = unknown) of a depth ``Image`` or ``CompressedImage``."""
    if msgtype.endswith("CompressedImage"):
        return _decode_compressed_depth(msg, topic)
    encoding = msg.encoding.lower()
    if encoding not in _DEPTH_ENCODINGS:
        raise CaptureError(
            f"{topic}: unsupported depth encoding {msg.encoding!r} (16UC1 mm or 32FC1 m)"
        )
    dtype, scale = _DEPTH_ENCODINGS[encoding]
    values = _raw_pixels(msg, 1, dtype, topic)[..., 0].astype(np.float32)
    return clean_depth(values * np.float32(scale))


def _decode_compressed_depth(msg: Any, topic: str) -> np.ndarray:
    fmt = msg.format.lower()
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if "compresseddepth" in fmt:
        if "rvl" in fmt:
            raise CaptureError(f"{topic}: RVL compressed depth is not supported (use png)")
        params = data[4:_COMPRESSED_DEPTH_HEADER].view("<f4")
        image = cv2.imdecode(data[_COMPRESSED_DEPTH_HEADER:], cv2.IMREAD_UNCHANGED)
        if image is None:
            raise CaptureError(f"{topic}: cannot decode a {msg.format!r} depth image")
        if fmt.startswith("32fc1"):  # quantised inverse depth: d = a / (v - b), 0 = unknown
            values = image.astype(np.float32)
            with np.errstate(divide="ignore"):
                depth = np.where(values > 0, params[0] / (values - params[1]), 0.0)
            return clean_depth(depth)
        return clean_depth(image.astype(np.float32) * np.float32(1e-3))
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2 or image.dtype != np.uint16:
        raise CaptureError(
            f"{topic}: a {msg.format!r} compressed depth image must decode to 16-bit millimetres"
        )
    return clean_depth(image.astype(np.float32) * np.float32(1e-3))


def _camera(info: Any, topic: str, rectified: bool, bag: Path) -> tuple[Any, tuple[float, ...]]:
    """Intrinsics and OpenCV distortion of a ``CameraInfo`` message."""
    label = f"{bag}: {topic}"
    if rectified:
        K = np.asarray(info.p, dtype=np.float64).reshape(3, 4)[:, :3]
        coeffs: tuple[float, ...] = ()
    else:
        K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        coeffs = tuple(float(c) for c in info.d)
        model = info.distortion_model
        if any(coeffs) and model not in ("plumb_bob", "rational_polynomial"):
            raise CaptureError(
                f"{label}: distortion model {model!r} is not supported "
                "(plumb_bob or rational_polynomial)"
            )
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CaptureError(f"{label}: the camera is not calibrated (K = {K.tolist()})")
    intrinsics = intrinsics_or_error(
        label, K[0, 0], K[1, 1], K[0, 2], K[1, 2], int(info.width), int(info.height)
    )
    return intrinsics, coeffs


def _nearest(
    items: list[_Stamped], stamps: list[int], stamp: int, max_offset: int
) -> _Stamped | None:
    i = bisect.bisect_left(stamps, stamp)
    best = min(
        (j for j in (i - 1, i) if 0 <= j < len(stamps)),
        key=lambda j: abs(stamps[j] - stamp),
        default=None,
    )
    if best is None or abs(stamps[best] - stamp) > max_offset:
        return None
    return items[best]


# --------------------------------------------------------------------------------------------
# tf
# --------------------------------------------------------------------------------------------


def _tf_lookup(
    bag: Path,
    samples: Iterable[tuple[int, str, str, np.ndarray, np.ndarray, bool]],
    images: Sequence[_Stamped],
) -> tuple[Callable[[str, str, int], np.ndarray], dict[str, str]]:
    """A lookup ``(target, source, stamp_ns) -> T_target_source`` over a buffer holding every tf
    sample of the bag, and the child -> parent map of the tf tree.

    Stamps inside the buffer count from a whole second near the first sample (float seconds
    since 1970 would resolve only ~0.2 microseconds).
    """
    samples = list(samples)
    stamps = [s[0] for s in samples if not s[5]] + [i.stamp_ns for i in images]
    epoch = (min(stamps) // 10**9) * 10**9
    span = (max(stamps) - epoch) * 1e-9
    buffer = TfBuffer(cache_time=span + 1.0)
    parents: dict[str, str] = {}
    for stamp_ns, parent, child, translation, rotation, static in samples:
        try:
            buffer.set_transform(
                parent, child, (stamp_ns - epoch) * 1e-9, translation, rotation, static=static
            )
        except ValueError as exc:
            raise CaptureError(f"{bag}: bad transform {parent} -> {child}: {exc}") from None
        parents[child] = parent

    def lookup(target: str, source: str, stamp_ns: int) -> np.ndarray:
        return buffer.lookup(target, source, (stamp_ns - epoch) * 1e-9)

    return lookup, parents
