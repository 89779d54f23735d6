"""Tests for lyra_ros.conversions: images, depth, compressed images, CameraInfo, poses, clouds.

Expected message bytes are built here straight from numpy (explicit byte order and padding), not
with the module under test. Comparisons with cv_bridge and sensor_msgs_py run where those are
importable (a ROS install); elsewhere they are skipped.
"""

from __future__ import annotations

import math
import struct
import sys

import cv2
import numpy as np
import pytest
import torch
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import pose_from_translation_quaternion
from lyra_ros.conversions import (
    SUPPORTED_ENCODINGS,
    camera_info_to_intrinsics,
    compressed_to_rgb,
    depth_to_image,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    intrinsics_to_camera_info,
    matrix_to_pose,
    matrix_to_transform,
    numpy_to_image,
    pointcloud2_from_points,
    pointcloud2_to_numpy,
    pose_to_matrix,
    rgb_to_compressed,
    transform_to_matrix,
)
from lyra_ros.conversions import image as image_conversions
from lyra_ros.conversions import point_cloud as cloud_conversions

# Layout of each encoding, spelled out independently of the module: (dtype, channels).
LAYOUTS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "8UC4": (np.uint8, 4),
}
H, W = 5, 7


def random_pixels(encoding: str, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """Random pixels of ``encoding``: (H, W) for one channel, (H, W, C) otherwise."""
    rng = np.random.default_rng(seed)
    dtype, channels = LAYOUTS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is np.float32:
        return rng.uniform(-100.0, 100.0, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def make_image(
    pixels: np.ndarray, encoding: str, *, pad: int = 0, big_endian: bool = False
) -> Image:
    """An Image built by hand: explicit byte order, ``pad`` junk bytes after every row."""
    height, width = pixels.shape[:2]
    order = ">" if big_endian else "<"
    stored = pixels.astype(pixels.dtype.newbyteorder(order))
    rows = np.frombuffer(stored.tobytes(), np.uint8).reshape(height, -1)
    junk = np.full((height, pad), 0xEE, np.uint8)
    data = np.concatenate([rows, junk], axis=1).tobytes()
    msg = Image(encoding=encoding, height=height, width=width, step=rows.shape[1] + pad)
    msg.is_bigendian = big_endian
    msg.data = data
    return msg


def header(frame: str = "cam", sec: int = 12, nanosec: int = 345) -> Header:
    out = Header(frame_id=frame)
    out.stamp.sec, out.stamp.nanosec = sec, nanosec
    return out


# --------------------------------------------------------------------------------------------
# Raw images
# --------------------------------------------------------------------------------------------


def test_supported_encodings():
    assert set(SUPPORTED_ENCODINGS) == set(LAYOUTS)


@pytest.mark.parametrize("encoding", list(LAYOUTS))
def test_numpy_to_image_round_trip(encoding):
    pixels = random_pixels(encoding)
    dtype, channels = LAYOUTS[encoding]
    msg = numpy_to_image(pixels, encoding, header("optical", 3, 4))
    assert (msg.encoding, msg.height, msg.width) == (encoding, H, W)
    assert msg.step == W * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == H * msg.step
    assert bool(msg.is_bigendian) == (sys.byteorder == "big")
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        "optical",
        3,
        4,
    )
    out = image_to_numpy(msg)
    assert out.dtype == dtype and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("encoding", list(LAYOUTS))
@pytest.mark.parametrize("pad", [0, 1, 3, 8])
@pytest.mark.parametrize("big_endian", [False, True])
def test_image_to_numpy_hand_built(encoding, pad, big_endian):
    pixels = random_pixels(encoding, seed=pad)
    msg = make_image(pixels, encoding, pad=pad, big_endian=big_endian)
    out = image_to_numpy(msg)
    assert out.dtype == pixels.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


def test_numpy_to_image_writes_native_byte_order():
    msg = numpy_to_image(np.array([[0x0102, 0x0304]], np.uint16), "16UC1")
    expected = b"\x02\x01\x04\x03" if sys.byteorder == "little" else b"\x01\x02\x03\x04"
    assert bytes(msg.data) == expected


def test_big_endian_known_values():
    msg = Image(encoding="16UC1", height=1, width=2, step=4, is_bigendian=1)
    msg.data = b"\x01\x02\x03\x04"
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x0102, 0x0304]])
    msg = Image(encoding="32FC1", height=1, width=1, step=4, is_bigendian=1)
    msg.data = struct.pack(">f", 1.25)
    assert image_to_numpy(msg)[0, 0] == np.float32(1.25)


def test_image_to_numpy_returns_an_owned_copy():
    pixels = random_pixels("rgb8")
    msg = numpy_to_image(pixels, "rgb8")
    out = image_to_numpy(msg)
    assert out.flags.writeable and out.flags.c_contiguous and out.base is None
    out[...] = 0
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    msg.data[0] ^= 0xFF  # the array does not see later changes of the message either
    assert image_to_numpy(msg)[0, 0, 0] != pixels[0, 0, 0]


def test_numpy_to_image_accepts_views_tensors_and_single_channel_axis():
    pixels = random_pixels("rgb8", width=2 * W)[:, ::2]  # non-contiguous
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(pixels, "rgb8")), pixels)
    mono = random_pixels("mono16")
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(mono[..., None], "mono16")), mono)
    swapped = mono.astype(">u2")  # non-native input is stored natively
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(swapped, "mono16")), mono)
    tensor = torch.from_numpy(random_pixels("32FC1"))
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(tensor, "32FC1")), tensor.numpy())


def test_header_is_copied_not_shared():
    h = header()
    msg = numpy_to_image(random_pixels("mono8"), "mono8", h)
    h.frame_id = "changed"
    assert msg.header.frame_id == "cam"
    assert numpy_to_image(random_pixels("mono8"), "mono8").header.frame_id == ""


# ---------------------------------------------------------------------- rgb


def one_pixel(encoding: str, values: list[int]) -> Image:
    dtype, channels = LAYOUTS[encoding]
    shape = (1, 1) if channels == 1 else (1, 1, channels)
    return make_image(np.array(values, dtype).reshape(shape), encoding)


@pytest.mark.parametrize(
    ("encoding", "values", "rgb"),
    [
        ("rgb8", [10, 20, 30], [10, 20, 30]),
        ("bgr8", [10, 20, 30], [30, 20, 10]),
        ("rgba8", [10, 20, 30, 40], [10, 20, 30]),
        ("bgra8", [10, 20, 30, 40], [30, 20, 10]),
        ("mono8", [77], [77, 77, 77]),
        ("mono16", [0xABCD], [0xAB, 0xAB, 0xAB]),
        ("8UC1", [5], [5, 5, 5]),
        ("8UC3", [10, 20, 30], [10, 20, 30]),
        ("8UC4", [10, 20, 30, 40], [10, 20, 30]),
    ],
)
def test_image_to_rgb_known_pixels(encoding, values, rgb):
    out = image_to_rgb(one_pixel(encoding, values))
    assert out.dtype == np.uint8 and out.shape == (1, 1, 3)
    np.testing.assert_array_equal(out[0, 0], rgb)


def test_image_to_rgb_whole_images():
    rgb = random_pixels("rgb8")
    bgra = np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(make_image(bgra, "bgra8", pad=2)), rgb)
    out = image_to_rgb(make_image(rgb, "rgb8"))
    out[...] = 0  # owned, not a view of the message
    np.testing.assert_array_equal(image_to_rgb(make_image(rgb, "rgb8")), rgb)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_image_to_rgb_rejects_depth(encoding):
    with pytest.raises(ValueError, match="depth encoding"):
        image_to_rgb(make_image(random_pixels(encoding), encoding))


# ---------------------------------------------------------------------- depth


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_depth_millimeters(encoding):
    mm = np.array([[0, 1, 1000], [1500, 65535, 250]], np.uint16)
    depth = image_to_depth_m(make_image(mm, encoding, pad=2, big_endian=True))
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    np.testing.assert_allclose(depth, [[0.0, 0.001, 1.0], [1.5, 65.535, 0.25]], rtol=1e-7)


def test_depth_meters_and_invalid_values():
    m = np.array([[np.nan, np.inf, -np.inf], [-1.0, 0.0, 2.5]], np.float32)
    depth = image_to_depth_m(make_image(m, "32FC1"))
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(depth, [[0, 0, 0], [0, 0, 2.5]])


def test_depth_to_image_round_trip_and_rep117_invalid():
    depth = np.random.default_rng(1).uniform(0.1, 20.0, (H, W)).astype(np.float32)
    depth[0, 0] = 0.0
    msg = depth_to_image(depth, header())
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("32FC1", 4 * W, "cam")
    raw = image_to_numpy(msg)
    assert np.isnan(raw[0, 0]), "no surface is written as NaN (REP 117 invalid)"
    np.testing.assert_array_equal(image_to_depth_m(msg), depth)
    # (H, W, 1), float64 and torch input; +-inf pass through.
    special = np.array([[np.inf, -np.inf, 1.0]])
    np.testing.assert_array_equal(image_to_numpy(depth_to_image(special[..., None])), special)
    np.testing.assert_array_equal(image_to_depth_m(depth_to_image(torch.from_numpy(depth))), depth)


def test_depth_to_image_does_not_modify_input():
    depth = np.zeros((2, 2), np.float32)
    depth_to_image(depth)
    assert not np.isnan(depth).any()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "8UC1"])
def test_image_to_depth_rejects_colour(encoding):
    with pytest.raises(ValueError, match=r"not a depth encoding.*16UC1"):
        image_to_depth_m(make_image(random_pixels(encoding), encoding))


def test_depth_to_image_rejects_bad_input():
    with pytest.raises(ValueError, match="floating-point meters"):
        depth_to_image(np.ones((2, 2), np.uint16))
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        depth_to_image(np.ones((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="zero size"):
        depth_to_image(np.ones((0, 2), np.float32))


# ---------------------------------------------------------------------- bad images


def test_unsupported_encoding_lists_supported():
    msg = make_image(random_pixels("rgb8"), "rgb8")
    msg.encoding = "yuv422"
    for convert in (image_to_numpy, image_to_rgb, image_to_depth_m):
        with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'") as info:
            convert(msg)
        assert all(name in str(info.value) for name in ("rgb8", "mono16", "32FC1"))
    with pytest.raises(ValueError, match="unsupported image encoding 'bayer_rggb8'"):
        numpy_to_image(random_pixels("mono8"), "bayer_rggb8")


def test_data_length_must_match_height_times_step():
    msg = make_image(random_pixels("rgb8"), "rgb8", pad=2)
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ValueError, match=rf"{len(msg.data)} bytes, expected height \* step"):
        image_to_numpy(msg)
    msg.data = bytes(H * msg.step + 5)
    with pytest.raises(ValueError, match="expected height"):
        image_to_numpy(msg)


def test_step_smaller_than_row():
    msg = make_image(random_pixels("16UC1"), "16UC1")
    msg.step = 2 * W - 1
    msg.data = bytes(H * msg.step)
    with pytest.raises(ValueError, match=rf"step {2 * W - 1} is smaller than width"):
        image_to_numpy(msg)


@pytest.mark.parametrize(("height", "width"), [(0, 4), (4, 0), (0, 0)])
def test_zero_size_image(height, width):
    msg = Image(encoding="rgb8", height=height, width=width, step=3 * width)
    with pytest.raises(ValueError, match="zero size"):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_bad_arrays():
    with pytest.raises(ValueError, match="dtype uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ValueError, match="dtype float32"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        numpy_to_image(np.zeros((2, 2, 4), np.uint8), "bgr8")
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint16), "16UC1")
    with pytest.raises(ValueError, match="zero size"):
        numpy_to_image(np.zeros((0, 3, 3), np.uint8), "rgb8")


# --------------------------------------------------------------------------------------------
# Compressed images
# --------------------------------------------------------------------------------------------


def smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth colour ramp (compresses well as JPEG)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([255 * x / width, 255 * y / height, 128 + 0 * x], -1).astype(np.uint8)


def test_png_round_trip_exact():
    rgb = random_pixels("rgb8", 9, 11)
    msg = rgb_to_compressed(rgb, "png", header())
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


@pytest.mark.parametrize("name", ["jpeg", "jpg", "JPEG"])
def test_jpeg_round_trip_close(name):
    rgb = smooth_rgb()
    msg = rgb_to_compressed(rgb, name, quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = compressed_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 2.0
    small = rgb_to_compressed(rgb, quality=10)
    assert len(small.data) < len(msg.data)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8", ""])
def test_compressed_from_image_transport_is_bgr(fmt):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 250  # red in OpenCV's BGR order
    ext = ".png" if "png" in fmt else ".jpg"
    msg = CompressedImage(format=fmt)
    msg.data = cv2.imencode(ext, bgr)[1].tobytes()
    rgb = compressed_to_rgb(msg)
    assert np.abs(rgb[4, 4].astype(int) - [250, 0, 0]).max() <= 3


def test_compressed_mono_png_becomes_rgb():
    msg = CompressedImage(format="mono8; png compressed mono8")
    msg.data = cv2.imencode(".png", np.full((3, 4), 40, np.uint8))[1].tobytes()
    np.testing.assert_array_equal(compressed_to_rgb(msg), np.full((3, 4, 3), 40))


def test_compressed_bad_input():
    with pytest.raises(ValueError, match="has no data"):
        compressed_to_rgb(CompressedImage(format="jpeg"))
    junk = CompressedImage(format="jpeg")
    junk.data = b"this is not an image" * 10
    with pytest.raises(ValueError, match="could not decode CompressedImage data"):
        compressed_to_rgb(junk)
    depth = CompressedImage(format="16UC1; compressedDepth png")
    depth.data = cv2.imencode(".png", np.zeros((2, 2), np.uint16))[1].tobytes()
    with pytest.raises(ValueError, match="compressedDepth"):
        compressed_to_rgb(depth)
    rgb = smooth_rgb()
    with pytest.raises(ValueError, match=r"unsupported compressed format 'webp'.*jpeg.*png"):
        rgb_to_compressed(rgb, "webp")
    for quality in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match=r"quality must be an integer in \[1, 100\]"):
            rgb_to_compressed(rgb, quality=quality)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        rgb_to_compressed(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="zero size"):
        rgb_to_compressed(np.zeros((0, 4, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------


def test_camera_info_round_trip():
    intrinsics = Intrinsics(fx=510.5, fy=498.25, cx=319.75, cy=241.5, width=640, height=480)
    msg = intrinsics_to_camera_info(intrinsics, header("cam_optical"))
    assert (msg.width, msg.height, msg.header.frame_id) == (640, 480, "cam_optical")
    np.testing.assert_array_equal(
        np.reshape(msg.k, (3, 3)), [[510.5, 0, 319.75], [0, 498.25, 241.5], [0, 0, 1]]
    )
    np.testing.assert_array_equal(
        np.reshape(msg.p, (3, 4)), [[510.5, 0, 319.75, 0], [0, 498.25, 241.5, 0], [0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(np.reshape(msg.r, (3, 3)), np.eye(3))
    assert msg.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(msg.d, np.zeros(5))
    assert camera_info_to_intrinsics(msg) == intrinsics


def calibrated_info(**changes) -> CameraInfo:
    msg = intrinsics_to_camera_info(Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48))
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 0}, "zero size"),
        ({"height": 0}, "zero size"),
        ({"k": np.zeros(9)}, "all zeros"),
        ({"k": np.array([100, 5, 31.5, 0, 100, 23.5, 0, 0, 1.0])}, "skew"),
        ({"k": np.array([-100, 0, 31.5, 0, 100, 23.5, 0, 0, 1.0])}, "fx must be"),
        ({"k": np.array([100, 0, 31.5, 0, 100, 23.5, 0, 0, 2.0])}, "not a valid pinhole"),
        ({"k": np.array([np.nan, 0, 31.5, 0, 100, 23.5, 0, 0, 1.0])}, "non-finite"),
    ],
)
def test_camera_info_bad_input(changes, message):
    with pytest.raises(ValueError, match=message):
        camera_info_to_intrinsics(calibrated_info(**changes))


# --------------------------------------------------------------------------------------------
# Transforms and poses
# --------------------------------------------------------------------------------------------


def random_matrices(n: int = 8, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    t = 5.0 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return pose_from_translation_quaternion(t, q).numpy()


def test_transform_and_pose_round_trip():
    for T in random_matrices():
        transform = matrix_to_transform(T)
        q = transform.rotation
        assert math.isclose(math.hypot(q.x, q.y, q.z, q.w), 1.0) and q.w >= 0
        np.testing.assert_allclose(transform_to_matrix(transform), T, atol=1e-12)
        pose = matrix_to_pose(T)
        assert (pose.position.x, pose.position.y, pose.position.z) == tuple(T[:3, 3])
        np.testing.assert_allclose(pose_to_matrix(pose), T, atol=1e-12)
    T = random_matrices(1)[0]
    np.testing.assert_allclose(
        transform_to_matrix(matrix_to_transform(torch.from_numpy(T).float())), T, atol=1e-6
    )


def test_known_90_degree_yaw():
    half = math.sqrt(0.5)
    transform = Transform(
        translation=Vector3(x=1.0, y=2.0, z=3.0), rotation=Quaternion(x=0.0, y=0.0, z=half, w=half)
    )
    T = transform_to_matrix(transform)
    assert T.dtype == np.float64 and T.shape == (4, 4)
    expected = [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]
    np.testing.assert_allclose(T, expected, atol=1e-15)
    np.testing.assert_allclose(T @ [1, 0, 0, 1], [1, 3, 3, 1], atol=1e-15)  # x -> +y
    q = matrix_to_transform(np.array(expected, float)).rotation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, half, half], atol=1e-15)
    pose = Pose(position=Point(x=1.0, y=2.0, z=3.0), orientation=transform.rotation)
    np.testing.assert_allclose(pose_to_matrix(pose), expected, atol=1e-15)


def test_quaternion_is_normalised():
    transform = Transform(rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=2.0))
    np.testing.assert_array_equal(transform_to_matrix(transform), np.eye(4))


@pytest.mark.parametrize(
    ("translation", "rotation", "message"),
    [
        ((math.nan, 0, 0), (0, 0, 0, 1), "transform translation contains NaN or inf"),
        ((0, math.inf, 0), (0, 0, 0, 1), "transform translation contains NaN or inf"),
        ((0, 0, 0), (0, math.nan, 0, 1), r"quaternion \(x, y, z, w\) contains NaN"),
        ((0, 0, 0), (0, 0, 0, 0), "zero norm"),
    ],
)
def test_bad_transforms(translation, rotation, message):
    t = Vector3(x=float(translation[0]), y=float(translation[1]), z=float(translation[2]))
    q = Quaternion(**{k: float(v) for k, v in zip("xyzw", rotation, strict=True)})
    with pytest.raises(ValueError, match=message):
        transform_to_matrix(Transform(translation=t, rotation=q))
    pose_message = message.replace("transform", "pose")
    with pytest.raises(ValueError, match=pose_message):
        pose_to_matrix(Pose(position=Point(x=t.x, y=t.y, z=t.z), orientation=q))


def test_bad_matrices():
    T = np.eye(4)
    T[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        matrix_to_transform(T)
    with pytest.raises(ValueError, match="not a proper rotation"):
        matrix_to_pose(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not a proper rotation"):
        matrix_to_transform(np.diag([-1.0, 1.0, 1.0, 1.0]))  # reflection
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        matrix_to_transform(np.eye(3))


# --------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------


def packed_rgb(colors: np.ndarray, alpha: int = 0) -> np.ndarray:
    """``(N, 3)`` uint8 -> ``(N,)`` uint32 ``0xAARRGGBB``, written out independently."""
    r, g, b = (colors[:, i].astype(np.uint32) for i in range(3))
    return (np.uint32(alpha) << 24) | (r << 16) | (g << 8) | b


def random_cloud(n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = rng.normal(0.0, 3.0, (n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return points, colors


def test_pointcloud2_layout_and_round_trip():
    points, colors = random_cloud()
    msg = pointcloud2_from_points(points, colors, header("world"))
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert fields == [
        (name, 4 * i, PointField.FLOAT32, 1) for i, name in enumerate(["x", "y", "z", "rgb"])
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 16, 800)
    assert not msg.is_bigendian and msg.is_dense and len(msg.data) == 800
    assert msg.header.frame_id == "world"
    out_points, out_colors = pointcloud2_to_numpy(msg)
    assert out_points.dtype == np.float32 and out_colors.dtype == np.uint8
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)


def test_pointcloud2_packed_rgb_bits():
    msg = pointcloud2_from_points(np.array([[1.0, -2.0, 0.5]]), np.array([[255, 128, 1]], np.uint8))
    data = bytes(msg.data)
    assert struct.unpack("<3f", data[:12]) == (1.0, -2.0, 0.5)
    assert data[12:16] == b"\x01\x80\xff\x00"  # 0x00FF8001, little-endian
    (rgb_float,) = struct.unpack("<f", data[12:16])
    assert struct.unpack("<I", struct.pack("<f", rgb_float)) == (0x00FF8001,)


def test_pointcloud2_float_colors_and_tensors():
    colors = np.array([[0.0, 0.5, 1.0], [1.2, -0.1, 0.25]])
    msg = pointcloud2_from_points(torch.zeros(2, 3), torch.from_numpy(colors))
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg)[1], [[0, 128, 255], [255, 0, 64]])


def structured_cloud(records: np.ndarray, fields: list[PointField], **kwargs) -> PointCloud2:
    """A cloud whose bytes are the given structured records (height 1 unless overridden)."""
    msg = PointCloud2(height=1, width=len(records), fields=fields, is_dense=True)
    msg.point_step = records.dtype.itemsize
    msg.row_step = msg.point_step * len(records)
    msg.data = records.tobytes()
    for name, value in kwargs.items():
        setattr(msg, name, value)
    return msg


def test_pointcloud2_other_layout():
    """Fields in another order and type, a wider point_step with junk bytes in between."""
    points, colors = random_cloud(7, seed=3)
    layout = np.dtype(
        {
            "names": ["rgb", "intensity", "x", "y", "z"],
            "formats": ["<u4", "<f4", "<f8", "<f8", "<f4"],
            "offsets": [0, 4, 8, 16, 28],
            "itemsize": 40,
        }
    )
    raw = np.frombuffer(np.full(7 * 40, 0xAB, np.uint8).tobytes(), layout).copy()
    raw["x"], raw["y"], raw["z"] = points.T
    raw["rgb"] = packed_rgb(colors, alpha=0xFF)
    fields = [
        PointField(name="rgb", offset=0, datatype=PointField.UINT32, count=1),
        PointField(name="intensity", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="x", offset=8, datatype=PointField.FLOAT64, count=1),
        PointField(name="y", offset=16, datatype=PointField.FLOAT64, count=1),
        PointField(name="z", offset=28, datatype=PointField.FLOAT32, count=1),
    ]
    out_points, out_colors = pointcloud2_to_numpy(structured_cloud(raw, fields))
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)


def test_pointcloud2_rgba_float_nan_pattern_bits():
    """Alpha 0xFF makes the rgba float a NaN bit pattern: the bits must survive."""
    layout = np.dtype({"names": ["x", "y", "z", "rgba"], "formats": ["<f4"] * 3 + ["<u4"]})
    raw = np.zeros(2, layout)
    raw["rgba"] = [0xFF102030, 0x80A0B0C0]
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(["x", "y", "z", "rgba"])
    ]
    _, colors = pointcloud2_to_numpy(structured_cloud(raw, fields))
    np.testing.assert_array_equal(colors, [[0x10, 0x20, 0x30], [0xA0, 0xB0, 0xC0]])


def test_pointcloud2_big_endian_organized_with_row_padding():
    points, colors = random_cloud(6, seed=5)
    layout = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": [">f4"] * 3 + [">u4"]})
    raw = np.zeros(6, layout)
    raw["x"], raw["y"], raw["z"] = points.T
    raw["rgb"] = packed_rgb(colors)
    rows = np.frombuffer(raw.tobytes(), np.uint8).reshape(2, 48)
    padded = np.concatenate([rows, np.full((2, 5), 0x7F, np.uint8)], axis=1)
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(["x", "y", "z", "rgb"])
    ]
    msg = PointCloud2(height=2, width=3, fields=fields, is_bigendian=True, point_step=16)
    msg.row_step = 53
    msg.data = padded.tobytes()
    out_points, out_colors = pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)


def test_pointcloud2_without_colour_and_empty():
    raw = np.zeros(3, np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3}))
    raw["z"] = [1, 2, 3]
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate("xyz")
    ]
    points, colors = pointcloud2_to_numpy(structured_cloud(raw, fields))
    np.testing.assert_array_equal(points[:, 2], [1, 2, 3])
    np.testing.assert_array_equal(colors, np.zeros((3, 3)))
    empty = pointcloud2_from_points(np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert empty.width == 0 and len(empty.data) == 0
    points, colors = pointcloud2_to_numpy(empty)
    assert points.shape == (0, 3) and colors.shape == (0, 3)


def test_pointcloud2_not_dense_with_nan():
    points = np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    msg = pointcloud2_from_points(points, np.zeros((2, 3), np.uint8))
    assert not msg.is_dense
    assert np.isnan(pointcloud2_to_numpy(msg)[0][1, 0])


def test_pointcloud2_from_points_bad_input():
    points, colors = random_cloud(4)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        pointcloud2_from_points(points[:, :2], colors)
    with pytest.raises(ValueError, match=r"colors must have shape \(4, 3\)"):
        pointcloud2_from_points(points, colors[:3])
    with pytest.raises(ValueError, match="NaN or inf"):
        pointcloud2_from_points(points, np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        pointcloud2_from_points(points, np.full((4, 3), 300))
    with pytest.raises(ValueError, match="uint8 or float"):
        pointcloud2_from_points(points, np.ones((4, 3), bool))


def test_pointcloud2_to_numpy_bad_input():
    def cloud() -> PointCloud2:
        return pointcloud2_from_points(*random_cloud(4))

    msg = cloud()
    msg.fields = [f for f in msg.fields if f.name != "z"]
    with pytest.raises(ValueError, match=r"no field 'z' \(fields: 'x', 'y', 'rgb'\)"):
        pointcloud2_to_numpy(msg)
    msg = cloud()
    msg.fields[1].datatype = 42
    with pytest.raises(ValueError, match="field 'y' has unknown datatype 42"):
        pointcloud2_to_numpy(msg)
    msg = cloud()
    msg.fields[2].offset = 14
    with pytest.raises(ValueError, match=r"field 'z' .* does not fit in point_step 16"):
        pointcloud2_to_numpy(msg)
    msg = cloud()
    msg.fields[3].datatype = PointField.UINT16
    with pytest.raises(ValueError, match="must be 4 bytes"):
        pointcloud2_to_numpy(msg)
    msg = cloud()
    msg.data = bytes(msg.data)[:-3]
    with pytest.raises(ValueError, match=r"61 bytes, expected height \* row_step = 1 \* 64"):
        pointcloud2_to_numpy(msg)
    msg = cloud()
    msg.row_step = 60
    with pytest.raises(ValueError, match="row_step 60 is smaller than width"):
        pointcloud2_to_numpy(msg)


# --------------------------------------------------------------------------------------------
# Optional ROS libraries: the glue (with stand-ins), then the real ones where installed
# --------------------------------------------------------------------------------------------


class RecordingBridge:
    """Stand-in for cv_bridge.CvBridge: returns read-only views, records its calls."""

    calls: list[str] = []  # noqa: RUF012 (shared on purpose: instances are made by the module)

    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str = "passthrough") -> np.ndarray:
        type(self).calls.append("imgmsg_to_cv2")
        dtype, channels = LAYOUTS[msg.encoding]
        shape = (msg.height, msg.width) + ((channels,) if channels > 1 else ())
        return np.frombuffer(bytes(msg.data), dtype).reshape(shape)

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = "passthrough") -> Image:
        type(self).calls.append("cv2_to_imgmsg")
        msg = Image(encoding=encoding, height=cvim.shape[0], width=cvim.shape[1])
        msg.step = cvim.strides[0]
        msg.data = cvim.tobytes()
        return msg


class BrokenBridge:
    def imgmsg_to_cv2(self, *args, **kwargs):
        raise AttributeError("`newbyteorder` was removed from the ndarray class in NumPy 2.0")

    def cv2_to_imgmsg(self, *args, **kwargs):
        raise TypeError("boost.python argument types did not match")


def test_cv_bridge_glue(monkeypatch):
    RecordingBridge.calls = []
    monkeypatch.setattr(image_conversions, "CvBridge", RecordingBridge)
    pixels = random_pixels("bgr8")
    msg = numpy_to_image(pixels, "bgr8", header())
    assert msg.header.frame_id == "cam"
    out = image_to_numpy(msg)
    assert out.flags.writeable and not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(out, pixels)
    assert RecordingBridge.calls == ["cv2_to_imgmsg", "imgmsg_to_cv2"]
    # Padded rows and foreign byte order are decoded here, not by the bridge.
    image_to_numpy(make_image(pixels, "bgr8", pad=3))
    image_to_numpy(
        make_image(random_pixels("16UC1"), "16UC1", big_endian=sys.byteorder == "little")
    )
    assert RecordingBridge.calls == ["cv2_to_imgmsg", "imgmsg_to_cv2"]


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "32FC1"])
def test_broken_cv_bridge_falls_back(monkeypatch, encoding):
    monkeypatch.setattr(image_conversions, "CvBridge", BrokenBridge)
    pixels = random_pixels(encoding)
    msg = numpy_to_image(pixels, encoding)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


class StandInPointCloud2:
    """Stand-in for sensor_msgs_py.point_cloud2 with the documented contract (float32 fields)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_cloud(self, header, fields, points):
        self.calls.append("create_cloud")
        assert points.dtype == np.float32 and points.shape[1] == len(fields)
        msg = PointCloud2(header=header, height=1, width=len(points), fields=fields)
        msg.point_step, msg.row_step = 16, 16 * len(points)
        msg.data = points.tobytes()
        return msg

    def read_points(self, cloud, field_names):
        self.calls.append("read_points")
        dtype = np.dtype(
            {
                "names": [f.name for f in cloud.fields],
                "formats": ["<f4"] * len(cloud.fields),
                "offsets": [f.offset for f in cloud.fields],
                "itemsize": cloud.point_step,
            }
        )
        return np.frombuffer(bytes(cloud.data), dtype)[list(field_names)]


class BrokenPointCloud2:
    def create_cloud(self, *args, **kwargs):
        raise AssertionError("All fields need to have the same datatype.")

    def read_points(self, *args, **kwargs):
        raise AssertionError("Duplicate field names are not allowed!")


@pytest.mark.skipif(sys.byteorder != "little", reason="the stand-in writes little-endian")
def test_point_cloud2_glue(monkeypatch):
    stand_in = StandInPointCloud2()
    monkeypatch.setattr(cloud_conversions, "point_cloud2", stand_in)
    points, colors = random_cloud(9)
    msg = pointcloud2_from_points(points, colors, header("world"))
    assert msg.is_dense and msg.header.frame_id == "world"
    out_points, out_colors = pointcloud2_to_numpy(msg)
    assert stand_in.calls == ["create_cloud", "read_points"]
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)


def test_broken_point_cloud2_falls_back(monkeypatch):
    monkeypatch.setattr(cloud_conversions, "point_cloud2", BrokenPointCloud2())
    points, colors = random_cloud(5)
    out_points, out_colors = pointcloud2_to_numpy(pointcloud2_from_points(points, colors))
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16", "16UC1", "32FC1"])
def test_matches_cv_bridge(encoding):
    cv_bridge = pytest.importorskip("cv_bridge")
    bridge = cv_bridge.CvBridge()
    pixels = random_pixels(encoding)
    theirs = bridge.cv2_to_imgmsg(pixels, encoding=encoding)
    ours = numpy_to_image(pixels, encoding)
    assert (ours.step, bytes(ours.data)) == (theirs.step, bytes(theirs.data))
    np.testing.assert_array_equal(image_to_numpy(theirs), pixels)
    padded = make_image(pixels, encoding, pad=4)
    np.testing.assert_array_equal(
        image_to_numpy(padded), bridge.imgmsg_to_cv2(padded, desired_encoding="passthrough")
    )
    if encoding in ("rgb8", "bgr8", "mono8"):
        np.testing.assert_array_equal(
            image_to_rgb(padded), bridge.imgmsg_to_cv2(padded, desired_encoding="rgb8")
        )


def test_matches_sensor_msgs_py():
    point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    points, colors = random_cloud(11)
    ours = pointcloud2_from_points(points, colors)
    theirs = point_cloud2.read_points(ours, field_names=["x", "y", "z", "rgb"])
    np.testing.assert_array_equal(np.stack([theirs[a] for a in "xyz"], -1), points)
    packed = np.ascontiguousarray(theirs["rgb"]).view(np.uint32)
    np.testing.assert_array_equal(packed, packed_rgb(colors))
    # A cloud made by create_cloud, with an extra field moving rgb to another offset.
    fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=16, datatype=PointField.FLOAT32, count=1),
    ]
    rgb_bits = packed_rgb(colors)
    block = np.concatenate(
        [points, np.ones((11, 1), np.float32), rgb_bits.view(np.float32)[:, None]], axis=1
    )
    cloud = point_cloud2.create_cloud(Header(frame_id="map"), fields, block)
    out_points, out_colors = pointcloud2_to_numpy(cloud)
    np.testing.assert_array_equal(out_points, points)
    np.testing.assert_array_equal(out_colors, colors)
    xyz_only = point_cloud2.create_cloud_xyz32(Header(), points)
    np.testing.assert_array_equal(pointcloud2_to_numpy(xyz_only)[0], points)
