"""Tests of lyra_ros.tf: the pure tf buffer, the tf2_ros adapter and a DDS round trip."""

from __future__ import annotations

import itertools
import math
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lyra_ros.tf import (
    TfBuffer,
    TfError,
    TfExtrapolationError,
    TfLookupError,
    TransformLookup,
)

IDENTITY_Q = (0.0, 0.0, 0.0, 1.0)


def pose(translation=(0.0, 0.0, 0.0), quat=IDENTITY_Q) -> np.ndarray:
    """``4x4`` transform from a translation (meters) and a quaternion ``(x, y, z, w)``."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat).as_matrix()
    T[:3, 3] = translation
    return T


def yaw(degrees: float) -> tuple[float, float, float, float]:
    """Quaternion ``(x, y, z, w)`` of a rotation about z."""
    return tuple(Rotation.from_euler("z", degrees, degrees=True).as_quat())


# A static tree used by several tests:
#   map -> odom -> base_link -> camera
#                  base_link -> lidar
MAP_ODOM = pose((1.0, 0.0, 0.0), yaw(90))
ODOM_BASE = pose((0.0, 2.0, 0.5), yaw(-30))
BASE_CAMERA = pose((0.2, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5))
BASE_LIDAR = pose((-0.1, 0.1, 0.3), yaw(180))


def set_pose(buf: TfBuffer, parent: str, child: str, T: np.ndarray, stamp=0.0, static=True):
    quat = Rotation.from_matrix(T[:3, :3]).as_quat()
    buf.set_transform(parent, child, stamp, T[:3, 3], quat, static=static)


@pytest.fixture
def tree() -> TfBuffer:
    buf = TfBuffer()
    set_pose(buf, "map", "odom", MAP_ODOM)
    set_pose(buf, "odom", "base_link", ODOM_BASE)
    set_pose(buf, "base_link", "camera", BASE_CAMERA)
    set_pose(buf, "base_link", "lidar", BASE_LIDAR)
    return buf


# --------------------------------------------------------------------------------------------
# TfBuffer: tree structure
# --------------------------------------------------------------------------------------------


def test_identity_lookup(tree):
    np.testing.assert_allclose(tree.lookup("camera", "camera"), np.eye(4))
    np.testing.assert_allclose(tree.lookup("map", "map", 12.0), np.eye(4))


def test_single_link(tree):
    np.testing.assert_allclose(tree.lookup("map", "odom"), MAP_ODOM, atol=1e-12)
    # The point at odom's origin lies at odom's translation in map.
    p = tree.lookup("map", "odom") @ np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(p[:3], [1.0, 0.0, 0.0], atol=1e-12)


def test_chain_of_three_known_result():
    buf = TfBuffer()
    buf.set_transform("a", "b", 0.0, (1.0, 0.0, 0.0), yaw(90), static=True)
    buf.set_transform("b", "c", 0.0, (1.0, 0.0, 0.0), yaw(90), static=True)
    buf.set_transform("c", "d", 0.0, (1.0, 0.0, 0.0), IDENTITY_Q, static=True)
    # b at (1,0) facing +y; c one step along b's x -> (1,1) facing -x; d one step along c's x.
    expected = pose((0.0, 1.0, 0.0), yaw(180))
    np.testing.assert_allclose(buf.lookup("a", "d"), expected, atol=1e-12)


def test_chain_matches_matrix_product(tree):
    expected = MAP_ODOM @ ODOM_BASE @ BASE_CAMERA
    np.testing.assert_allclose(tree.lookup("map", "camera"), expected, atol=1e-12)


def test_inverse_direction(tree):
    T = tree.lookup("map", "camera")
    np.testing.assert_allclose(tree.lookup("camera", "map"), np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("camera", "map") @ T, np.eye(4), atol=1e-12)


def test_across_branches_through_common_ancestor(tree):
    expected = np.linalg.inv(BASE_LIDAR) @ BASE_CAMERA
    np.testing.assert_allclose(tree.lookup("lidar", "camera"), expected, atol=1e-12)
    # Deeper branch: map -> other, lookup other <- camera goes up to map and down.
    other = pose((5.0, -1.0, 0.0), yaw(45))
    set_pose(tree, "map", "other", other)
    expected = np.linalg.inv(other) @ MAP_ODOM @ ODOM_BASE @ BASE_CAMERA
    np.testing.assert_allclose(tree.lookup("other", "camera"), expected, atol=1e-12)


def test_all_frames_and_can_transform(tree):
    assert tree.all_frames() == ["base_link", "camera", "lidar", "map", "odom"]
    assert tree.can_transform("map", "camera")
    assert not tree.can_transform("map", "nowhere")


def test_new_parent_replaces_link(tree):
    set_pose(tree, "map", "camera", pose((0.0, 0.0, 3.0)))
    np.testing.assert_allclose(tree.lookup("map", "camera"), pose((0.0, 0.0, 3.0)), atol=1e-12)


def test_unknown_frame_names_frame_and_lists_known(tree):
    with pytest.raises(TfLookupError, match="nowhere") as info:
        tree.lookup("map", "nowhere")
    assert "base_link" in str(info.value)
    assert "odom" in str(info.value)
    with pytest.raises(TfLookupError, match="nowhere"):
        tree.lookup("nowhere", "map")
    assert isinstance(info.value, TfError)
    assert isinstance(info.value, LookupError)


def test_disconnected_trees(tree):
    tree.set_transform("world", "robot2", 0.0, (0, 0, 0), IDENTITY_Q, static=True)
    with pytest.raises(TfLookupError, match="not connected"):
        tree.lookup("map", "robot2")


# --------------------------------------------------------------------------------------------
# TfBuffer: time
# --------------------------------------------------------------------------------------------


@pytest.fixture
def moving() -> TfBuffer:
    """Static map -> odom, dynamic odom -> base_link at t = 10 s (origin) and 12 s (turned)."""
    buf = TfBuffer()
    set_pose(buf, "map", "odom", MAP_ODOM)
    buf.set_transform("odom", "base_link", 10.0, (0.0, 0.0, 0.0), IDENTITY_Q)
    buf.set_transform("odom", "base_link", 12.0, (2.0, 4.0, -1.0), yaw(90))
    return buf


def test_interpolation_halfway(moving):
    T = moving.lookup("odom", "base_link", 11.0)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], pose(quat=yaw(45))[:3, :3], atol=1e-12)
    quarter = moving.lookup("odom", "base_link", 10.5)
    np.testing.assert_allclose(quarter[:3, 3], [0.5, 1.0, -0.25], atol=1e-12)
    angle = math.degrees(math.atan2(quarter[1, 0], quarter[0, 0]))
    assert angle == pytest.approx(22.5)


def test_slerp_takes_short_arc():
    buf = TfBuffer()
    buf.set_transform("a", "b", 0.0, (0, 0, 0), yaw(170))
    # -q is the same rotation; interpolation must still go the short way (170 -> 190 via 180).
    buf.set_transform("a", "b", 1.0, (0, 0, 0), tuple(-np.array(yaw(-170))))
    T = buf.lookup("a", "b", 0.5)
    np.testing.assert_allclose(T[:3, :3], pose(quat=yaw(180))[:3, :3], atol=1e-12)


def test_exact_at_samples(moving):
    np.testing.assert_allclose(moving.lookup("odom", "base_link", 10.0), np.eye(4), atol=1e-15)
    expected = pose((2.0, 4.0, -1.0), yaw(90))
    np.testing.assert_allclose(moving.lookup("odom", "base_link", 12.0), expected, atol=1e-15)


def test_static_and_dynamic_mixed(moving):
    T = moving.lookup("map", "base_link", 11.0)
    expected = MAP_ODOM @ pose((1.0, 2.0, -0.5), yaw(45))
    np.testing.assert_allclose(T, expected, atol=1e-12)
    # Static links hold at any time, a static-only path even far outside the dynamic range.
    np.testing.assert_allclose(moving.lookup("map", "odom", -1e6), MAP_ODOM, atol=1e-12)


def test_latest_time_lookup(moving):
    T, stamp = moving.lookup_stamped("map", "base_link")
    assert stamp == 12.0
    np.testing.assert_allclose(T, moving.lookup("map", "base_link", 12.0), atol=1e-15)
    np.testing.assert_allclose(moving.lookup("map", "base_link"), T, atol=1e-15)
    # Static-only path: time 0, as tf2.
    assert moving.lookup_stamped("map", "odom")[1] == 0.0


def test_latest_common_time_is_oldest_newest():
    buf = TfBuffer()
    for t in (1.0, 2.0, 3.0):
        buf.set_transform("a", "b", t, (t, 0, 0), IDENTITY_Q)
    for t in (1.5, 2.5):
        buf.set_transform("b", "c", t, (0, t, 0), IDENTITY_Q)
    T, stamp = buf.lookup_stamped("a", "c")
    assert stamp == 2.5
    np.testing.assert_allclose(T[:3, 3], [2.5, 2.5, 0.0], atol=1e-12)


def test_samples_out_of_order_are_sorted():
    buf = TfBuffer()
    for t in (3.0, 1.0, 2.0):
        buf.set_transform("a", "b", t, (t, 0, 0), IDENTITY_Q)
    assert buf.lookup("a", "b", 1.5)[0, 3] == pytest.approx(1.5)
    assert buf.lookup("a", "b", 2.5)[0, 3] == pytest.approx(2.5)
    buf.set_transform("a", "b", 2.0, (7.0, 0, 0), IDENTITY_Q)  # same stamp: overwrite
    assert buf.lookup("a", "b", 2.0)[0, 3] == 7.0


def test_cache_expiry_drops_old_samples():
    buf = TfBuffer(cache_time=2.0)
    for t in (0.0, 1.0, 2.0):
        buf.set_transform("a", "b", t, (t, 0, 0), IDENTITY_Q)
    assert buf.can_transform("a", "b", 0.0)
    buf.set_transform("a", "b", 3.5, (3.5, 0, 0), IDENTITY_Q)  # window now [1.5, 3.5]
    assert not buf.can_transform("a", "b", 1.0)
    with pytest.raises(TfExtrapolationError, match="past"):
        buf.lookup("a", "b", 1.0)
    assert buf.lookup("a", "b", 2.0)[0, 3] == 2.0
    # Older than the window: dropped, not stored.
    assert buf.set_transform("a", "b", 0.5, (0.5, 0, 0), IDENTITY_Q) is False
    assert not buf.can_transform("a", "b", 0.5)


def test_extrapolation_past_and_future(moving):
    with pytest.raises(TfExtrapolationError, match="past") as info:
        moving.lookup("map", "base_link", 9.5)
    message = str(info.value)
    assert "9.500000000" in message
    assert "10.000000000" in message and "12.000000000" in message
    with pytest.raises(TfExtrapolationError, match="future") as info:
        moving.lookup("base_link", "map", 12.25)
    assert "12.250000000" in str(info.value) and "10.000000000" in str(info.value)
    assert isinstance(info.value, TfError)


def test_single_sample_only_exact_time():
    buf = TfBuffer()
    buf.set_transform("a", "b", 5.0, (1, 0, 0), IDENTITY_Q)
    assert buf.lookup("a", "b", 5.0)[0, 3] == 1.0
    assert buf.lookup_stamped("a", "b")[1] == 5.0
    with pytest.raises(TfExtrapolationError):
        buf.lookup("a", "b", 5.1)


@pytest.mark.parametrize(
    ("translation", "quat"),
    [
        ((math.nan, 0.0, 0.0), IDENTITY_Q),
        ((0.0, math.inf, 0.0), IDENTITY_Q),
        ((0.0, 0.0, 0.0), (0.0, math.nan, 0.0, 1.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)),
        ((0.0, 0.0), IDENTITY_Q),
    ],
)
def test_invalid_transform_rejected(moving, translation, quat):
    before = moving.lookup("map", "base_link", 11.0)
    with pytest.raises(ValueError):
        moving.set_transform("odom", "base_link", 11.0, translation, quat)
    with pytest.raises(ValueError):
        moving.set_transform("odom", "new_frame", 11.0, translation, quat)
    np.testing.assert_array_equal(moving.lookup("map", "base_link", 11.0), before)
    assert "new_frame" not in moving.all_frames()


def test_invalid_arguments(moving):
    with pytest.raises(ValueError, match="own parent"):
        moving.set_transform("a", "a", 0.0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="loop"):
        moving.set_transform("base_link", "map", 0.0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="stamp"):
        moving.set_transform("odom", "base_link", math.nan, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="cache_time"):
        TfBuffer(cache_time=0.0)
    # Non-unit quaternions are normalised.
    moving.set_transform("map", "x", 0.0, (0, 0, 0), (0.0, 0.0, 0.0, 3.0), static=True)
    np.testing.assert_allclose(moving.lookup("map", "x"), np.eye(4), atol=1e-15)


def test_the_tree_is_bounded_in_frames():
    """A peer publishing ever new frame names cannot grow the tree past max_frames; the
    frames already known keep working and a refused sample stores nothing."""
    buffer = TfBuffer(max_frames=4)
    buffer.set_transform("map", "odom", 0.0, (1, 0, 0), IDENTITY_Q, static=True)
    buffer.set_transform("odom", "base", 0.0, (0, 1, 0), IDENTITY_Q)
    buffer.set_transform("base", "cam", 0.0, (0, 0, 1), IDENTITY_Q, static=True)
    with pytest.raises(ValueError, match=r"holds 4 frames \(max_frames 4\).*\['spam_0'\]"):
        buffer.set_transform("map", "spam_0", 0.0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match=r"\['spam_1', 'spam_2'\]"):
        buffer.set_transform("spam_1", "spam_2", 0.0, (0, 0, 0), IDENTITY_Q)
    assert sorted(buffer.all_frames()) == ["base", "cam", "map", "odom"]
    buffer.set_transform("odom", "base", 1.0, (0, 3, 0), IDENTITY_Q)  # known frames: stored
    np.testing.assert_allclose(buffer.lookup("map", "cam", 1.0)[:3, 3], (1, 3, 1))
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="max_frames"):
            TfBuffer(max_frames=bad)


@pytest.mark.parametrize("w", [5e-7, 2e-6])
def test_zero_norm_rule_is_the_one_of_the_message_conversions(w):
    pytest.importorskip("geometry_msgs.msg")
    from geometry_msgs.msg import Quaternion, Transform

    from lyra_ros.conversions import MIN_QUATERNION_NORM, transform_to_matrix

    quat = (0.0, 0.0, 0.0, w)
    message = Transform(rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=w))
    buf = TfBuffer()
    if w < MIN_QUATERNION_NORM:  # one rule: both refuse it
        with pytest.raises(ValueError, match="zero norm"):
            buf.set_transform("a", "b", 0.0, (0.0, 0.0, 0.0), quat)
        with pytest.raises(ValueError, match="zero norm"):
            transform_to_matrix(message)
    else:  # both normalise it to the identity
        buf.set_transform("a", "b", 0.0, (0.0, 0.0, 0.0), quat)
        np.testing.assert_allclose(buf.lookup("a", "b"), np.eye(4), atol=1e-12)
        np.testing.assert_allclose(transform_to_matrix(message), np.eye(4), atol=1e-12)


def test_five_link_chain_is_the_product_of_its_interpolated_links():
    # Speed of this lookup: benchmarks/tf_lookup.py (wall-clock numbers do not belong in tests).
    buf = TfBuffer()
    frames = ["f0", "f1", "f2", "f3", "f4", "f5"]
    for i, (parent, child) in enumerate(itertools.pairwise(frames)):
        for t in np.arange(0.0, 10.0, 0.01):
            buf.set_transform(parent, child, float(t), (t, i, 0.0), yaw(10 * t + i))
    stamp = 5.0055  # between two samples of every link
    expected = np.eye(4)
    for i in range(5):
        # each link halfway between its samples at 5.00 and 5.01: translation and yaw halfway
        expected = expected @ pose((stamp, i, 0.0), yaw(10 * stamp + i))
    np.testing.assert_allclose(buf.lookup("f0", "f5", stamp), expected, atol=1e-9)
    np.testing.assert_allclose(buf.lookup("f5", "f0", stamp), np.linalg.inv(expected), atol=1e-9)


# --------------------------------------------------------------------------------------------
# TransformLookup
# --------------------------------------------------------------------------------------------


def _tf2_ros_importable() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except Exception:
        return False
    return True


def _fake_tf2_ros(result: object) -> types.ModuleType:
    """A stand-in ``tf2_ros`` module whose buffer returns ``mod.result`` (or raises it)."""
    mod = types.ModuleType("tf2_ros")
    mod.result = result

    class TransformException(Exception):  # noqa: N818 (tf2's names)
        pass

    class LookupException(TransformException):
        pass

    class ConnectivityException(TransformException):
        pass

    class ExtrapolationException(TransformException):
        pass

    class Buffer:
        def __init__(self, cache_time=None, node=None):
            self.cache_time = cache_time

        def lookup_transform(self, target, source, time, timeout=None):
            self.last_query = (target, source, time, timeout)
            if isinstance(mod.result, BaseException):
                raise mod.result
            return mod.result

    class TransformListener:
        def __init__(self, buffer, node):
            self.buffer = buffer

        def unregister(self):
            pass

    for cls in (
        TransformException,
        LookupException,
        ConnectivityException,
        ExtrapolationException,
        Buffer,
        TransformListener,
    ):
        setattr(mod, cls.__name__, cls)
    return mod


def _stub_node() -> types.SimpleNamespace:
    from rclpy.clock import Clock, ClockType
    from rclpy.logging import get_logger

    clock = Clock(clock_type=ClockType.ROS_TIME)
    return types.SimpleNamespace(get_clock=lambda: clock, get_logger=lambda: get_logger("test"))


def test_tf2_ros_backend_wrapped(monkeypatch):
    pytest.importorskip("rclpy")
    from geometry_msgs.msg import TransformStamped
    from rclpy.duration import Duration

    msg = TransformStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 42, 500_000_000
    msg.transform.translation.x = 1.5
    msg.transform.rotation.z, msg.transform.rotation.w = math.sqrt(0.5), math.sqrt(0.5)
    fake = _fake_tf2_ros(msg)
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)
    lookup = TransformLookup(_stub_node(), cache_time=5.0)
    assert lookup.backend == "tf2_ros"
    assert lookup.buffer.cache_time == Duration(seconds=5.0)
    T, stamp = lookup.lookup_matrix("map", "camera", timeout=0.25)
    np.testing.assert_allclose(T, pose((1.5, 0.0, 0.0), yaw(90)), atol=1e-12)
    assert stamp.nanoseconds == 42_500_000_000
    target, source, query, timeout = lookup.buffer.last_query
    assert (target, source, query.nanoseconds) == ("map", "camera", 0)
    assert timeout == Duration(seconds=0.25)

    for raised, expected in [
        (fake.LookupException("frame x does not exist"), TfLookupError),
        (fake.ConnectivityException("not connected"), TfLookupError),
        (fake.ExtrapolationException("into the future"), TfExtrapolationError),
        (fake.TransformException("other"), TfLookupError),
    ]:
        fake.result = raised
        with pytest.raises(expected, match=str(raised)) as info:
            lookup.lookup_matrix("map", "camera")
        assert info.value.__cause__ is raised
        assert not lookup.can_transform("map", "camera")


def test_backend_argument(monkeypatch):
    pytest.importorskip("rclpy")
    with pytest.raises(ValueError, match="backend"):
        TransformLookup(_stub_node(), backend="tf3")
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # makes `import tf2_ros` fail
    with pytest.raises(ImportError):
        TransformLookup(_stub_node(), backend="tf2_ros")


# --------------------------------------------------------------------------------------------
# Real DDS round trip: a publisher process, TransformLookup in this one
# --------------------------------------------------------------------------------------------

DDS_TIMEOUT = 15.0
"""Seconds to wait for the transforms to arrive over DDS."""


@pytest.fixture
def ros_context():
    """A private rclpy context, shut down after the test."""
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("tf2_msgs.msg")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def tf_publisher(tmp_path):
    """The tf publisher script running in its own process; stopped with SIGINT afterwards."""
    log = tmp_path / "tf_publisher.log"
    script = Path(__file__).with_name("tf_publisher.py")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT)
    yield proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


BACKENDS = ["lyra"] + (["tf2_ros"] if _tf2_ros_importable() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_lookup_over_dds(ros_context, tf_publisher, backend):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.time import Time

    import tf_publisher as pub

    proc, log = tf_publisher
    node = rclpy.create_node("lyra_tf_buffer_test", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        lookup = TransformLookup(node, backend=backend)
        assert lookup.backend == backend
        deadline = time.monotonic() + DDS_TIMEOUT
        result = None
        while result is None:
            executor.spin_once(timeout_sec=0.05)
            assert proc.poll() is None, f"publisher exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, (
                f"no map -> camera transform within {DDS_TIMEOUT} s;"
                f" publisher log:\n{log.read_text()}"
            )
            try:
                latest, stamp = lookup.lookup_matrix("map", "camera")
                # Halfway to the previous sample: needs two samples, exercises interpolation.
                query = Time(nanoseconds=stamp.nanoseconds - 50_000_000)
                between, between_stamp = lookup.lookup_matrix("map", "camera", query)
                result = (latest, stamp, between, between_stamp, query)
            except TfError:
                continue
        latest, stamp, between, between_stamp, query = result
        seconds = stamp.nanoseconds * 1e-9
        k = (seconds - pub.START) / pub.STAMP_STEP
        assert k == pytest.approx(round(k), abs=1e-6), "stamp is not one of the published ones"
        np.testing.assert_allclose(latest, pub.expected_map_camera(seconds), atol=1e-6)
        np.testing.assert_allclose(between, pub.expected_map_camera(seconds - 0.05), atol=1e-6)
        assert between_stamp == query
        lookup.unregister()
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_node()


def test_stamp_converter_keeps_nanoseconds():
    from lyra_ros.tf import StampConverter

    stamps = [1_795_490_040_516_844_968, 1_795_490_040_516_844_969, 1_795_490_999_000_000_001]
    relative = StampConverter(epoch="first")
    assert [relative.to_nanoseconds(relative.to_seconds(n)) for n in stamps] == stamps
    absolute = StampConverter()
    assert absolute.to_seconds(2_500_000_000) == 2.5
    # absolute float seconds lose the last digits at this magnitude: the reason for the epoch
    assert absolute.to_nanoseconds(absolute.to_seconds(stamps[0])) != stamps[0]
