"""4D worlds in the world node: playback on ROS time, recording the feed into a 4D world.

The first tests drive :class:`lyra_ros.playback.Playback` and :class:`lyra_ros.recorder.
FeedRecorder` directly (no DDS). The others run the real node (``python -m
lyra_ros.world_node``, ``use_sim_time: true``) as its own process: this test process owns the
clock (it publishes ``/clock``), loads a 4D procedural room whose red box crosses the view, sets
the simulated camera's tf pose at chosen stamps and checks that each rendered image is the room
at the world time its stamp says (the ground truth rendered here, and the box's projected pixel);
then it records a posed RGB-D feed of a moving square and checks the 4D world built from it.
conftest.py keeps DDS on this machine.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from plyfile import PlyData  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.time import Time  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from lyra_core.geometry.cameras import Cameras, Intrinsics  # noqa: E402
from lyra_core.geometry.transforms import look_at  # noqa: E402
from lyra_core.mapping.dynamic import DynamicMapperConfig  # noqa: E402
from lyra_core.mapping.frames import PosedFrame  # noqa: E402
from lyra_core.rendering import render  # noqa: E402
from lyra_core.scene.ply import read_ply, write_ply  # noqa: E402
from lyra_core.scene.procedural_dynamic import procedural_dynamic_room  # noqa: E402
from lyra_ros.conversions import (  # noqa: E402
    depth_to_image,
    image_to_depth_m,
    image_to_rgb,
    intrinsics_to_camera_info,
    matrix_to_pose,
    matrix_to_transform,
    numpy_to_image,
)
from lyra_ros.msg import WorldStatus  # noqa: E402
from lyra_ros.playback import BadTimeError, Playback, seconds_to_ns  # noqa: E402
from lyra_ros.qos import LATCHED_QOS  # noqa: E402
from lyra_ros.recorder import FeedRecorder  # noqa: E402
from lyra_ros.srv import RenderView, WorldFile  # noqa: E402
from node_process import start_world_node, stop_world_node  # noqa: E402

W, H = 64, 48
INTR = Intrinsics.from_fov(1.2, W, H)
SIM_FRAME = "sim_optical"
RECORD_FRAME = "rec_optical"
NODE = "/lyra_world"
SLICE_TIMES = np.linspace(0.0, 2.0, 9).tolist()  # the 4D room: a time slice every 0.25 s
SECOND = 1_000_000_000

CONFIG = f"""
lyra_world:
  ros__parameters:
    use_sim_time: true
    world_frame: map
    device: cpu  # renders as this test's ground truth does
    build_on_first_image: false
    playback: hold
    playback_start: service
    time_mode: step
    mapping_stride: 1
    max_gaussians: 5000
    record_max_frames: 16
    record_rate: 10.0
    pose_timeout: 1.0
    point_cloud_max_points: 1000000
    cameras: [cam]
    camera:
      cam:
        frame_id: {SIM_FRAME}
        width: {W}
        height: {H}
        fx: {INTR.fx}
        fy: {INTR.fy}
        cx: {INTR.cx}
        cy: {INTR.cy}
        rate: 10.0
        topic: sim/cam/image
        publish_depth: true
"""


# ---------------------------------------------------------------------------- playback alone


class FakeClock:
    def __init__(self, ns: int = 0) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def test_playback_maps_ros_time_to_world_time_per_mode():
    clock = FakeClock(100 * SECOND)
    playback = Playback((1.0, 3.0), 2.0, clock)  # span 2 s, twice as fast as ROS time
    assert playback.at(None, "loop").state == "waiting"
    assert playback.at(None, "loop").time == 1.0  # waiting: the first state
    assert "at ROS time 100.000 s" in playback.start()
    at = 100 * SECOND + SECOND // 4  # 0.25 s later: 0.5 world seconds
    for mode in ("loop", "hold", "once"):
        shown = playback.at(at, mode)
        assert (shown.time, shown.state, shown.early) == (1.5, "playing", False)
    late = 102 * SECOND + SECOND // 4  # 4.5 world seconds elapsed
    assert playback.at(late, "loop").time == pytest.approx(1.5)  # 1 + (4.5 mod 2)
    assert (playback.at(late, "hold").time, playback.at(late, "hold").state) == (3.0, "finished")
    assert (playback.at(late, "once").time, playback.at(late, "once").state) == (None, "finished")
    early = playback.at(99 * SECOND, "once")  # before the start: the first state, flagged
    assert (early.time, early.early) == (1.0, True)
    with pytest.raises(BadTimeError):
        playback.at(-5, "loop")
    with pytest.raises(ValueError, match="playback"):
        playback.at(at, "sideways")


def test_playback_pause_resume_and_a_start_before_the_clock_runs():
    clock = FakeClock(0)
    playback = Playback((0.0, 10.0), 1.0, clock)
    assert "no /clock" in playback.start()
    assert playback.at(None, "hold").state == "waiting"
    clock.ns = 50 * SECOND  # the first /clock: playback starts now
    assert playback.start_time_ns() == 50 * SECOND
    clock.ns = 53 * SECOND
    assert playback.pause("hold") == (True, "paused at elapsed world time 3.000 s")
    assert playback.at(90 * SECOND, "hold").time == 3.0  # frozen whatever the time asked
    assert playback.at(None, "hold").state == "paused"
    assert not playback.pause("hold")[0]
    clock.ns = 60 * SECOND
    assert "resumed" in playback.start()
    assert playback.at(61 * SECOND, "hold").time == pytest.approx(4.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, 1e300])
def test_bad_request_times_are_refused(bad):
    with pytest.raises(BadTimeError):
        seconds_to_ns(bad)


def test_seconds_to_ns():
    assert seconds_to_ns(0.0) == 0 and seconds_to_ns(12.5) == 12_500_000_000


# ---------------------------------------------------------------------------- recorder alone


def square_frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64x48 RGB-D frame: a gradient wall 3 m away and a red 10x10 square 2 m away whose left
    column is ``8 + 8 i``."""
    rows, cols = np.mgrid[0:H, 0:W]
    rgb = np.stack([cols * 100 // W + 60, rows * 100 // H + 60, np.full_like(rows, 160)], -1)
    depth = np.full((H, W), 3.0, np.float32)
    left = 8 + 8 * i
    rgb[19:29, left : left + 10] = (230, 20, 20)
    depth[19:29, left : left + 10] = 2.0
    return rgb.astype(np.uint8), depth


def test_recorder_skips_bad_frames_and_keeps_the_newest():
    skipped: list[str] = []

    def prepare(item):
        i, stamp = item
        if i == 2:
            raise ValueError("no pose")
        rgb, depth = square_frame(i % 6)
        return PosedFrame(rgb.astype(np.float32) / 255, INTR, np.eye(4), depth, stamp=stamp)

    config = DynamicMapperConfig(max_frames=3, show_progress=False)
    recorder = FeedRecorder(config, prepare, lambda reason, count: skipped.append(reason))
    recorder.submit((0, 0.0))  # not recording: ignored
    assert recorder.start() and not recorder.start()
    for i, stamp in enumerate([1.0, 1.1, 1.2, 1.3, 1.3, 1.5]):  # 2: no pose; 4: same stamp
        recorder.submit((i, stamp))
    recording = recorder.stop()
    assert recording is not None and not recorder.active
    mapper = recording.finish(10.0)
    assert [frame.stamp for frame in mapper.frames] == [1.1, 1.3, 1.5]  # the newest three
    stats = recording.stats()
    assert (stats.frames, stats.skipped, stats.dropped) == (3, 2, 1)
    assert len(skipped) == 2 and "no pose" in skipped[0]


def test_recorder_rate_limit_thins_a_fast_feed_by_stamp():
    def prepare(item):
        i, stamp = item
        rgb, depth = square_frame(i % 6)
        return PosedFrame(rgb.astype(np.float32) / 255, INTR, np.eye(4), depth, stamp=stamp)

    config = DynamicMapperConfig(max_frames=64, show_progress=False)
    with pytest.raises(ValueError, match="min_interval"):
        FeedRecorder(config, prepare, min_interval=float("nan"))
    recorder = FeedRecorder(config, prepare, min_interval=0.1)  # record_rate 10 Hz
    assert recorder.start()
    # a 30 Hz camera with +-3 ms of stamp jitter, 0.5 s long, then the clock set back
    jitter = [0.0, 0.003, -0.002, -0.003, 0.002, 0.001, -0.001, 0.003, -0.003, 0.0, 0.002]
    stamps = [10.0 + i / 30 + jitter[i % len(jitter)] for i in range(16)] + [9.0]
    for i, stamp in enumerate(stamps):
        recorder.submit((i, stamp), stamp)
    recording = recorder.stop()
    assert recording is not None
    mapper = recording.finish(10.0)
    taken = [frame.stamp for frame in mapper.frames]
    assert taken == [stamps[i] for i in (0, 3, 6, 9, 12, 15)]  # every third frame
    stats = recording.stats()
    # the set-back frame passes the limit; the mapper skips it (not after the last stamp)
    assert (stats.frames, stats.thinned) == (6, 10)
    assert stats.skipped == 1


# ---------------------------------------------------------------------------- the node


def stamp_msg(ns: int):
    return Time(nanoseconds=ns).to_msg()


class Client:
    """The test side: the clock, tf, feed publishers, the simulated camera and the services."""

    def __init__(self, node) -> None:
        self.node = node
        self.status: WorldStatus | None = None
        self.images: list[Image] = []
        self.depths: list[Image] = []
        self.points: list[PointCloud2] = []
        n = node
        self.clock_pub = n.create_publisher(Clock, "/clock", 10)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", 100)
        self.image_pub = n.create_publisher(Image, "image", 10)
        self.depth_pub = n.create_publisher(Image, "depth", 10)
        self.info_pub = n.create_publisher(CameraInfo, "camera_info", 10)
        self.subs = [
            n.create_subscription(WorldStatus, f"{NODE}/status", self._on_status, LATCHED_QOS),
            n.create_subscription(Image, "sim/cam/image", self.images.append, 10),
            n.create_subscription(Image, "sim/cam/depth", self.depths.append, 10),
            n.create_subscription(
                PointCloud2, f"{NODE}/world_points", self.points.append, LATCHED_QOS
            ),
        ]
        services = {
            "load": (WorldFile, "load_world"),
            "save": (WorldFile, "save_world"),
            "render": (RenderView, "render_view"),
            "start": (Trigger, "start_playback"),
            "pause": (Trigger, "pause_playback"),
            "record": (Trigger, "start_recording"),
            "stop": (Trigger, "stop_recording"),
            "params": (SetParameters, "set_parameters"),
        }
        self.clients = {
            key: n.create_client(kind, f"{NODE}/{name}") for key, (kind, name) in services.items()
        }
        self.clock_ns = 0

    def _on_status(self, msg: WorldStatus) -> None:
        self.status = msg

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)
            if predicate():
                return
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def call(self, name: str, request, timeout: float = 30.0):
        client = self.clients[name]
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f"service {name}")
        return future.result()

    def set_clock(self, ns: int) -> None:
        self.clock_ns = ns
        self.clock_pub.publish(Clock(clock=stamp_msg(ns)))

    def set_parameter(self, name: str, value: str):
        parameter = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[parameter])
        return self.call("params", request).results[0]

    def publish_tf(self, child: str, matrix: np.ndarray, ns: int) -> None:
        msg = TransformStamped()
        msg.header.frame_id = "map"
        msg.header.stamp = stamp_msg(ns)
        msg.child_frame_id = child
        msg.transform = matrix_to_transform(matrix)
        self.tf_pub.publish(TFMessage(transforms=[msg]))

    def start_playback_at(self, ns: int) -> str:
        """``~/start_playback`` once the node's clock reads ``ns`` (the start is exact)."""
        for _ in range(20):
            self.set_clock(ns)
            self.spin_for(0.2)
            answer = self.call("start", Trigger.Request())
            assert answer.success, answer.message
            if f"at ROS time {ns / SECOND:.3f} s" in answer.message:
                return answer.message
        raise AssertionError(f"the node's clock never read {ns / SECOND} s: {answer.message}")

    def camera_view(self, pose: np.ndarray, ns: int, timeout: float = 20.0):
        """The simulated camera's rgb and depth rendered at the pose stamped ``ns``: the clock
        steps on from ``ns`` + 0.35 s (the camera's rate runs on it; the world time must follow
        the pose stamp, not the clock) until that frame arrives."""
        self.publish_tf(SIM_FRAME, pose, ns)
        self.spin_for(0.1)
        deadline = time.monotonic() + timeout
        step = 0
        while time.monotonic() < deadline:
            self.set_clock(ns + 35 * SECOND // 100 + step * SECOND // 10)
            step += 1
            self.spin_for(0.15)
            frames = [m for m in self.images if Time.from_msg(m.header.stamp).nanoseconds == ns]
            depths = [m for m in self.depths if Time.from_msg(m.header.stamp).nanoseconds == ns]
            if frames and depths:
                return image_to_rgb(frames[-1]), image_to_depth_m(depths[-1])
        raise AssertionError(f"no simulated camera image stamped {ns / SECOND} s")

    def wait_status(self, predicate: Callable[[WorldStatus], bool], what: str, timeout=20.0):
        self.spin_until(
            lambda: self.status is not None and predicate(self.status),
            timeout,
            f"{what} (status now {self.status})",
        )
        return self.status


@pytest.fixture(scope="module")
def room():
    return procedural_dynamic_room(7, num_gaussians=3000, num_objects=1, duration=2.0)


@pytest.fixture(scope="module")
def sim_pose() -> np.ndarray:
    """The simulated camera: outside the open side of the room, the box crossing its view."""
    return look_at((-0.6, -5.0, 1.8), (-0.6, -1.9, 0.3), (0.0, 0.0, 1.0)).double().numpy()


def ground_truth(
    world, pose: np.ndarray, world_time: float, mode: str = "step"
) -> tuple[np.ndarray, np.ndarray]:
    cameras = Cameras.from_intrinsics(torch.as_tensor(pose, dtype=torch.float32)[None], INTR)
    out = render(world, cameras, time=world_time, time_mode=mode)
    rgb = (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return rgb, out.depth[0, ..., 0].numpy()


def box_pixel(room, pose: np.ndarray, world_time: float) -> tuple[int, int]:
    """(row, column) of the box centre's projection at ``world_time``."""
    centre = room.object_pose(0, world_time)[:3, 3].double().numpy()
    point = np.linalg.inv(pose) @ np.append(centre, 1.0)
    u = INTR.fx * point[0] / point[2] + INTR.cx
    v = INTR.fy * point[1] / point[2] + INTR.cy
    return round(v), round(u)


def is_red(pixel: np.ndarray) -> bool:
    return pixel[0] > 180 and pixel[1] < 90 and pixel[2] < 90


def assert_shows(room, world, pose, rgb, depth, world_time: float) -> None:
    """``rgb``/``depth`` are the 4D room at ``world_time``: equal to the ground truth there,
    the red box at its projected pixel, and unlike the ground truth of the slices 1 s away."""
    truth_rgb, truth_depth = ground_truth(world, pose, world_time)
    diff = np.abs(rgb.astype(int) - truth_rgb).mean()
    assert diff < 0.5, f"the view differs from the room at {world_time} s by {diff:.2f}"
    np.testing.assert_allclose(np.median(depth), np.median(truth_depth), atol=0.02)
    row, col = box_pixel(room, pose, world_time)
    assert is_red(rgb[row, col]), f"no red box at {(row, col)} at {world_time} s: {rgb[row, col]}"
    assert abs(depth[row, col] - truth_depth[row, col]) < 0.05
    for other in (world_time - 1.0, world_time + 1.0):
        if 0.0 <= other <= 2.0:
            far = np.abs(rgb.astype(int) - ground_truth(world, pose, other)[0]).mean()
            assert far > 4 * max(diff, 0.25), f"{world_time} s and {other} s look alike"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worlds")


@pytest.fixture(scope="module")
def node(tmp_path_factory, worlds):
    """The node process and the test client; tests below run in file order on its state."""
    rclpy.init()
    client_node = rclpy.create_node("four_d_node_test_client")
    config = tmp_path_factory.mktemp("config") / "world.yaml"
    config.write_text(CONFIG)
    process = start_world_node(config, "--ros-args", "-p", f"world_dir:={worlds}")
    try:
        yield Client(client_node), process
    finally:
        if process.poll() is None:  # the last test stops it and reads its output
            stop_world_node(process)
        client_node.destroy_node()
        rclpy.shutdown()


@pytest.fixture(scope="module")
def four_d_world(room, worlds):
    world = room.world(SLICE_TIMES)
    write_ply(worlds / "room4d.ply", world)
    return read_ply(worlds / "room4d.ply")


def test_a_loaded_4d_world_waits_for_start_playback(node, four_d_world, room, sim_pose):
    client, _ = node
    client.spin_until(lambda: client.clock_pub.get_subscription_count() > 0, what="the node")
    client.set_clock(100 * SECOND)
    client.spin_for(0.3)
    answer = client.call("start", Trigger.Request())
    assert not answer.success and "no world" in answer.message
    loaded = client.call("load", WorldFile.Request(path="room4d.ply"))
    assert loaded.success and loaded.gaussian_count == len(four_d_world)
    status = client.wait_status(lambda s: s.source == "ply", "the 4D world")
    assert (status.playback, status.world_time) == ("waiting", 0.0)
    assert (status.world_time_start, status.world_time_end) == (0.0, 2.0)
    rgb, depth = client.camera_view(sim_pose, 100 * SECOND + SECOND // 2)
    assert_shows(room, four_d_world, sim_pose, rgb, depth, 0.0)  # not started: the first state
    # ~/world_points: the first state, not every time slice superposed
    first_state = len(four_d_world.at_time(0.0))
    assert first_state < len(four_d_world)
    client.spin_until(lambda: client.points, what="~/world_points")
    assert client.points[-1].width == first_state


def test_the_camera_shows_the_box_where_its_pose_stamp_says(node, four_d_world, room, sim_pose):
    client, _ = node
    start = 110 * SECOND
    client.start_playback_at(start)
    for world_time in (0.5, 1.5):
        ns = start + round(world_time * SECOND)
        rgb, depth = client.camera_view(sim_pose, ns)
        assert_shows(room, four_d_world, sim_pose, rgb, depth, world_time)
    client.set_clock(start + 3 * SECOND // 2)
    status = client.wait_status(
        lambda s: s.header.stamp == stamp_msg(start + 3 * SECOND // 2), "status at 111.5 s"
    )
    assert status.playback == "playing" and status.world_time == pytest.approx(1.5, abs=1e-6)


def test_hold_keeps_the_last_state_after_the_end(node, four_d_world, room, sim_pose):
    client, _ = node
    rgb, depth = client.camera_view(sim_pose, 115 * SECOND)  # 5 s after the start
    assert_shows(room, four_d_world, sim_pose, rgb, depth, 2.0)
    status = client.wait_status(lambda s: s.playback == "finished", "playback finished")
    assert status.world_time == 2.0


def test_loop_wraps_around(node, four_d_world, room, sim_pose):
    client, _ = node
    refused = client.set_parameter("playback", "sideways")
    assert not refused.successful and "loop, once, hold" in refused.reason
    assert client.set_parameter("playback", "loop").successful
    rgb, depth = client.camera_view(sim_pose, 117 * SECOND + SECOND // 2)  # 7.5 s: 1.5 s
    assert_shows(room, four_d_world, sim_pose, rgb, depth, 1.5)
    client.wait_status(lambda s: s.playback == "playing", "looping")


def test_render_view_at_a_ros_time_and_bad_times(node, four_d_world, room, sim_pose):
    client, process = node
    info = intrinsics_to_camera_info(INTR)
    pose = matrix_to_pose(sim_pose)
    view = client.call("render", RenderView.Request(pose=pose, camera_info=info, time=110.5))
    assert view.success and "world time 0.500 s" in view.message, view.message
    assert view.image.header.stamp == stamp_msg(110 * SECOND + SECOND // 2)
    rgb, depth = image_to_rgb(view.image), image_to_depth_m(view.depth)
    assert_shows(room, four_d_world, sim_pose, rgb, depth, 0.5)
    for bad in (math.nan, math.inf, -1.0):
        refused = client.call("render", RenderView.Request(pose=pose, camera_info=info, time=bad))
        assert not refused.success and "bad request: time" in refused.message, refused.message
    early = client.call("render", RenderView.Request(pose=pose, camera_info=info, time=105.0))
    assert early.success and "world time 0.000 s" in early.message  # before the start: t0
    assert process.poll() is None


def test_blend_cross_fades_between_slices(node, four_d_world, sim_pose):
    client, process = node
    assert not client.set_parameter("time_mode", "smooth").successful
    assert client.set_parameter("time_mode", "blend").successful
    info, pose = intrinsics_to_camera_info(INTR), matrix_to_pose(sim_pose)
    try:
        # 0.625 s: half-way between the slices of 0.5 s and 0.75 s (step shows the later one)
        view = client.call("render", RenderView.Request(pose=pose, camera_info=info, time=110.625))
    finally:
        assert client.set_parameter("time_mode", "step").successful
    assert view.success and "world time 0.625 s" in view.message, view.message
    rgb = image_to_rgb(view.image).astype(int)
    blended = np.abs(rgb - ground_truth(four_d_world, sim_pose, 0.625, "blend")[0]).mean()
    stepped = np.abs(rgb - ground_truth(four_d_world, sim_pose, 0.625, "step")[0]).mean()
    assert blended < 0.5, f"the blended view differs from the cross-fade by {blended:.2f}"
    assert stepped > 4 * max(blended, 0.1), f"blend looks like step ({stepped:.2f})"
    assert process.poll() is None


def test_once_ends_and_start_playback_plays_it_again(node, four_d_world, room, sim_pose):
    client, process = node
    assert client.set_parameter("playback", "once").successful
    status = client.wait_status(lambda s: s.playback == "finished", "once finished")
    assert status.world_time == 2.0
    info, pose = intrinsics_to_camera_info(INTR), matrix_to_pose(sim_pose)
    over = client.call("render", RenderView.Request(pose=pose, camera_info=info))
    assert not over.success and "once is over" in over.message
    client.images.clear()
    client.publish_tf(SIM_FRAME, sim_pose, 120 * SECOND)
    for step in range(6):
        client.set_clock(120 * SECOND + step * SECOND // 10)
        client.spin_for(0.15)
    assert client.images == [], "a finished once-playback still publishes frames"
    client.start_playback_at(121 * SECOND)
    rgb, depth = client.camera_view(sim_pose, 121 * SECOND + SECOND // 2)
    assert_shows(room, four_d_world, sim_pose, rgb, depth, 0.5)
    # A time before the start (negative elapsed world time) with once: the first state.
    early = client.call("render", RenderView.Request(pose=pose, camera_info=info, time=120.0))
    assert early.success and "world time 0.000 s" in early.message, early.message
    assert process.poll() is None


def test_pause_freezes_the_world(node):
    client, _ = node
    client.set_clock(122 * SECOND + SECOND // 2)
    client.spin_for(0.3)
    paused = client.call("pause", Trigger.Request())
    assert paused.success, paused.message
    frozen = client.wait_status(lambda s: s.playback == "paused", "paused").world_time
    assert 0.5 <= frozen <= 2.0
    client.set_clock(124 * SECOND)
    client.spin_for(0.8)
    assert client.status.world_time == frozen and client.status.playback == "paused"
    assert not client.call("pause", Trigger.Request()).success
    resumed = client.call("start", Trigger.Request())
    assert resumed.success and "resumed" in resumed.message


def test_save_world_writes_the_time_columns(node, worlds, four_d_world):
    client, _ = node
    saved = client.call("save", WorldFile.Request(path="saved4d.ply"))
    assert saved.success and saved.gaussian_count == len(four_d_world)
    names = [p.name for p in PlyData.read(str(worlds / "saved4d.ply"))["vertex"].properties]
    assert names[-2:] == ["time", "duration"]
    again = read_ply(worlds / "saved4d.ply")
    assert torch.equal(again.times, four_d_world.times)
    assert torch.equal(again.durations, four_d_world.durations)


def publish_feed_frame(client: Client, i: int, ns: int) -> None:
    header = Image().header
    header.stamp, header.frame_id = stamp_msg(ns), RECORD_FRAME
    client.publish_tf(RECORD_FRAME, np.eye(4), ns)
    client.spin_for(0.05)
    client.info_pub.publish(intrinsics_to_camera_info(INTR, header))
    rgb, depth = square_frame(i)
    client.depth_pub.publish(depth_to_image(depth, header))
    client.image_pub.publish(numpy_to_image(rgb, "rgb8", header))


def test_recording_the_feed_builds_a_4d_world(node):
    client, process = node
    assert not client.call("stop", Trigger.Request()).success  # not recording
    client.spin_until(lambda: client.image_pub.get_subscription_count() > 0, what="the node")
    started = client.call("record", Trigger.Request())
    assert started.success and "at most 10 per second" in started.message, started.message
    assert not client.call("record", Trigger.Request()).success  # already recording
    first = 130 * SECOND
    for i in range(6):
        ns = first + i * SECOND // 10
        client.set_clock(ns)
        publish_feed_frame(client, i, ns)
        client.spin_for(0.25)
        # 40 ms later, the square elsewhere: record_rate 10 Hz passes it over
        publish_feed_frame(client, 5 - i, ns + 4 * SECOND // 100)
        client.spin_for(0.25)
    client.wait_status(lambda s: s.recording and s.frames_recorded == 6, "6 recorded frames")
    client.spin_for(1.0)
    assert client.status.frames_recorded == 6  # the in-between frames were not recorded
    stopped = client.call("stop", Trigger.Request())
    assert stopped.success, stopped.message
    status = client.wait_status(
        lambda s: s.source == "recording" and s.state == WorldStatus.STATE_READY,
        "the recorded world",
        timeout=60.0,
    )
    assert not status.recording and status.playback == "waiting"
    assert status.world_time_start == 0.0
    assert status.world_time_end == pytest.approx(0.5, abs=1e-6)
    start = 140 * SECOND
    client.start_playback_at(start)
    info, pose = intrinsics_to_camera_info(INTR), matrix_to_pose(np.eye(4))
    views = {}
    for i in (1, 4):
        request = RenderView.Request(pose=pose, camera_info=info, time=140.0 + 0.1 * i)
        view = client.call("render", request)
        assert view.success, view.message
        views[i] = (image_to_rgb(view.image), image_to_depth_m(view.depth))
    for i, other in ((1, 4), (4, 1)):
        rgb, depth = views[i]
        centre = 8 + 8 * i + 5
        assert is_red(rgb[24, centre]), f"frame {i}: no square at column {centre}"
        assert abs(depth[24, centre] - 2.0) < 0.05
        elsewhere = 8 + 8 * other + 5  # where the square is at the other time: the wall
        assert not is_red(rgb[24, elsewhere]), f"frame {i}: a square at column {elsewhere}"
        assert abs(depth[24, elsewhere] - 3.0) < 0.1
    assert process.poll() is None


def test_the_node_warned_about_early_and_bad_times(node):
    _, process = node
    output = stop_world_node(process)
    assert re.search(r"before the playback start \(110\.000 s\)", output), output
    assert "render_view refused: time must be a finite number" in output
    assert "playback finished (hold)" in output and "Traceback" not in output
