"""The world node as a separate process, talking to this test process over DDS.

Every test uses the real node (``python -m lyra_ros.world_node``) with a small YAML config; the
test process publishes images, camera_info, depth and tf, receives rendered images and calls the
services. conftest.py keeps DDS on this machine and gives the run its own domain.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from plyfile import PlyData

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Pose, TransformStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from lyra_core.geometry.cameras import Intrinsics  # noqa: E402
from lyra_core.scene.ply import read_ply, write_ply  # noqa: E402
from lyra_core.scene.rgbd import gaussians_from_rgbd  # noqa: E402
from lyra_ros.conversions import (  # noqa: E402
    depth_to_image,
    image_to_depth_m,
    image_to_rgb,
    intrinsics_to_camera_info,
    matrix_to_pose,
    matrix_to_transform,
    numpy_to_image,
    pointcloud2_to_numpy,
    rgb_to_compressed,
)
from lyra_ros.msg import WorldStatus  # noqa: E402
from lyra_ros.qos import LATCHED_QOS  # noqa: E402
from lyra_ros.srv import BuildWorld, RenderView, WorldFile  # noqa: E402
from node_process import start_world_node, stop_world_node  # noqa: E402

W, H = 64, 48
INTR = Intrinsics(60.0, 60.0, 31.5, 23.5, W, H)
INPUT_FRAME = "input_optical"
SIM_FRAME = "sim_optical"
CONFIG = """
lyra_world:
  ros__parameters:
    world_frame: map
    depth_stride: 1
    fill_border: 0  # every test frame is flat: exactly one Gaussian per pixel
    point_cloud_max_points: 1000
    max_render_pixels: 1000000
    cameras: [cam, ghost]
    camera:
      cam:
        frame_id: sim_optical
        width: 64
        height: 48
        fx: 60.0
        fy: 60.0
        cx: 31.5
        cy: 23.5
        rate: 10.0
        topic: sim/cam/image
        publish_depth: true
      ghost:
        frame_id: frame_nobody_publishes
        width: 32
        height: 24
        rate: 10.0
        topic: sim/ghost/image
"""


def gradient_rgbd(width: int = W, height: int = H, depth: float = 2.0):
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [cols * 255 // width, rows * 255 // height, np.full_like(rows, 128)], axis=-1
    ).astype(np.uint8)
    return rgb, np.full((height, width), depth, np.float32)


def input_pose() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = [0.0, 0.0, 1.0]
    return pose


class Client:
    """The test side: publishers, subscriptions and service clients of one world node."""

    def __init__(self, node, world: str = "/lyra_world") -> None:
        self.node = node
        self.status: WorldStatus | None = None
        self.images: dict[str, list[Image]] = {"cam": [], "ghost": [], "depth": [], "info": []}
        self.points: PointCloud2 | None = None
        n = node
        self.image_pub = n.create_publisher(Image, "image", 10)
        self.depth_pub = n.create_publisher(Image, "depth", 10)
        self.info_pub = n.create_publisher(CameraInfo, "camera_info", 10)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", 100)
        self.subs = [
            n.create_subscription(WorldStatus, f"{world}/status", self._on_status, LATCHED_QOS),
            n.create_subscription(
                PointCloud2, f"{world}/world_points", self._on_points, LATCHED_QOS
            ),
            n.create_subscription(Image, "sim/cam/image", self.images["cam"].append, 10),
            n.create_subscription(Image, "sim/ghost/image", self.images["ghost"].append, 10),
            n.create_subscription(Image, "sim/cam/depth", self.images["depth"].append, 10),
            n.create_subscription(
                CameraInfo, "sim/cam/camera_info", self.images["info"].append, 10
            ),
        ]
        self.clients = {
            "reset": n.create_client(Trigger, f"{world}/reset_world"),
            "build": n.create_client(BuildWorld, f"{world}/build_world"),
            "render": n.create_client(RenderView, f"{world}/render_view"),
            "save": n.create_client(WorldFile, f"{world}/save_world"),
            "load": n.create_client(WorldFile, f"{world}/load_world"),
        }

    def _on_status(self, msg: WorldStatus) -> None:
        self.status = msg

    def _on_points(self, msg: PointCloud2) -> None:
        self.points = msg

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if predicate():
                return
        raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def call(self, name: str, request, timeout: float = 30.0):
        client = self.clients[name]
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f"service {name}")
        return future.result()

    def publish_tf(self, child: str, matrix: np.ndarray, stamp=None) -> None:
        msg = TransformStamped()
        msg.header.frame_id = "map"
        msg.header.stamp = stamp or self.node.get_clock().now().to_msg()
        msg.child_frame_id = child
        msg.transform = matrix_to_transform(matrix)
        self.tf_pub.publish(TFMessage(transforms=[msg]))

    def publish_frame(self, rgb, depth, encoding="rgb8", info=True, image=True) -> None:
        header = Image().header
        header.stamp = self.node.get_clock().now().to_msg()
        header.frame_id = INPUT_FRAME
        self.images_header = header
        self.publish_tf(INPUT_FRAME, input_pose(), header.stamp)
        if info:
            self.info_pub.publish(
                intrinsics_to_camera_info(
                    Intrinsics(
                        60.0,
                        60.0,
                        (rgb.shape[1] - 1) / 2,
                        (rgb.shape[0] - 1) / 2,
                        rgb.shape[1],
                        rgb.shape[0],
                    ),
                    header,
                )
            )
        if depth is not None:
            self.depth_pub.publish(depth_to_image(depth, header))
        if not image:
            return
        if encoding == "rgb8":
            self.image_pub.publish(numpy_to_image(rgb, "rgb8", header))
        else:  # a raw message with an encoding the node does not support
            msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=encoding)
            msg.step, msg.data = rgb.shape[1] * 2, bytes(rgb.shape[0] * rgb.shape[1] * 2)
            self.image_pub.publish(msg)

    def wait_state(self, state: int, timeout: float = 30.0) -> WorldStatus:
        self.spin_until(
            lambda: self.status is not None and self.status.state == state,
            timeout,
            f"world state {state} (now {self.status})",
        )
        return self.status


def start(tmp_path: Path, config: str = CONFIG, *ros_args: str) -> subprocess.Popen:
    path = tmp_path / "world.yaml"
    path.write_text(config)
    return start_world_node(path, *ros_args)


@pytest.fixture(scope="module")
def ros_node():
    rclpy.init()
    node = rclpy.create_node("world_node_test_client")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Path:
    """The ``world_dir`` of the module's world node (its save and load requests name files in
    it)."""
    return tmp_path_factory.mktemp("worlds")


@pytest.fixture(scope="module")
def world(ros_node, tmp_path_factory, worlds):
    """One world node process for the module (tests below run in file order on its state)."""
    process = start(
        tmp_path_factory.mktemp("world"), CONFIG, "--ros-args", "-p", f"world_dir:={worlds}"
    )
    client = Client(ros_node)
    yield client, process
    output = stop_world_node(process)
    assert "Traceback" not in output, output


def test_starts_waiting_then_builds_from_the_first_rgbd_frame(world):
    client, _ = world
    assert client.wait_state(WorldStatus.STATE_WAITING).world_frame == "map"
    rgb, depth = gradient_rgbd()
    client.spin_until(lambda: client.image_pub.get_subscription_count() > 0, what="node")
    client.publish_frame(rgb, depth)
    status = client.wait_state(WorldStatus.STATE_READY)
    assert status.source == "depth" and status.gaussian_count == W * H
    assert status.error == "" and status.build_seconds > 0


def test_world_points_are_latched_capped_and_in_the_world_frame(world):
    client, _ = world
    client.spin_until(lambda: client.points is not None, what="world_points")
    points, colors = pointcloud2_to_numpy(client.points)
    assert client.points.header.frame_id == "map" and len(points) == 1000
    # the input camera sits 1 m above the map origin: the plane is at z = 1 + 2
    np.testing.assert_allclose(points[:, 2], 3.0, atol=1e-4)
    assert colors[:, 2].min() >= 120  # the blue channel of the gradient is 128


def test_simulated_camera_renders_at_its_tf_pose(world):
    client, _ = world
    for key in client.images:
        client.images[key].clear()
    stamp = client.node.get_clock().now().to_msg()
    client.publish_tf(SIM_FRAME, input_pose(), stamp)
    client.spin_until(
        lambda: len(client.images["cam"]) >= 2 and client.images["depth"], what="rendered images"
    )
    image = client.images["cam"][-1]
    assert (image.width, image.height, image.encoding) == (W, H, "rgb8")
    assert image.header.frame_id == SIM_FRAME
    assert image.header.stamp == stamp  # stamped with the time of the pose it was rendered at
    rgb, _ = gradient_rgbd()
    inner = np.s_[4:-4, 4:-4]
    assert np.abs(image_to_rgb(image)[inner].astype(int) - rgb[inner]).mean() < 8
    depth = image_to_depth_m(client.images["depth"][-1])
    np.testing.assert_allclose(np.median(depth), 2.0, atol=0.02)
    info = client.images["info"][-1]
    np.testing.assert_allclose(info.k, [60, 0, 31.5, 0, 60, 23.5, 0, 0, 1])


def test_unknown_frame_and_nan_poses_are_skipped_and_the_node_keeps_running(world):
    client, process = world
    client.images["ghost"].clear()
    client.images["cam"].clear()
    client.publish_tf(SIM_FRAME, input_pose())
    client.spin_for(1.0)
    assert client.images["ghost"] == []
    assert client.images["cam"], "the other camera must keep rendering"

    nan_tf = TransformStamped()
    nan_tf.header.frame_id, nan_tf.child_frame_id = "map", SIM_FRAME
    nan_tf.header.stamp = client.node.get_clock().now().to_msg()
    nan_tf.transform.translation.x = math.nan
    nan_tf.transform.rotation.w = 1.0
    client.tf_pub.publish(TFMessage(transforms=[nan_tf]))  # rejected; the last pose stays
    client.spin_for(0.5)
    client.images["cam"].clear()
    client.spin_until(lambda: len(client.images["cam"]) >= 2, what="images after a NaN pose")
    assert np.isfinite(image_to_rgb(client.images["cam"][-1])).all()
    assert process.poll() is None


def test_render_view_service(world):
    client, _ = world
    request = RenderView.Request(
        pose=matrix_to_pose(input_pose()), camera_info=intrinsics_to_camera_info(INTR)
    )
    response = client.call("render", request)
    assert response.success, response.message
    assert (response.image.width, response.image.height) == (W, H)
    np.testing.assert_allclose(np.median(image_to_depth_m(response.depth)), 2.0, atol=0.02)

    nan_pose = Pose()
    nan_pose.position.x = math.nan
    nan_pose.orientation.w = 1.0
    bad = client.call("render", RenderView.Request(pose=nan_pose, camera_info=request.camera_info))
    assert not bad.success and "nan" in bad.message.lower()
    no_size = client.call("render", RenderView.Request(pose=request.pose))
    assert not no_size.success and "bad request" in no_size.message


def render_request(width: int, height: int) -> RenderView.Request:
    """A view from the input camera's pose, ``width`` x ``height`` with the test FOV."""
    f = 60.0 * width / W
    intrinsics = Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
    return RenderView.Request(
        pose=matrix_to_pose(input_pose()), camera_info=intrinsics_to_camera_info(intrinsics)
    )


def test_render_view_refuses_images_over_max_render_pixels(world):
    client, process = world
    over = client.call("render", render_request(1001, 1000))  # the config allows 1,000,000
    assert not over.success
    assert "max_render_pixels" in over.message and "1000000" in over.message, over.message
    huge = client.call("render", render_request(100_000, 100_000))
    assert not huge.success and "max_render_pixels" in huge.message
    assert process.poll() is None
    assert client.call("render", render_request(W, H)).success


def test_a_large_render_blocks_no_other_service(world):
    client, _ = world
    request = render_request(1000, 1000)  # at the config's max_render_pixels
    start = time.monotonic()
    alone = client.call("render", request)
    seconds = time.monotonic() - start
    assert alone.success and (alone.image.width, alone.image.height) == (1000, 1000)
    np.testing.assert_allclose(np.median(image_to_depth_m(alone.depth)), 2.0, atol=0.02)
    if seconds < 0.2:
        pytest.skip(f"a 1000x1000 render takes {seconds:.2f} s here: too fast to overlap a call")
    large = client.clients["render"].call_async(request)
    client.spin_for(0.05)  # the request reaches the node, the render starts
    # A call that the node answers at once (loading a missing file fails without any work).
    missing = client.call("load", WorldFile.Request(path="missing.ply"))
    rendering = not large.done()
    client.spin_until(large.done, 120, "large render")
    assert not missing.success and large.result().success
    assert rendering, "load_world was answered only after the render finished: it was blocked"


def test_save_and_load_world(world, worlds):
    client, process = world
    path = worlds / "saved.ply"
    saved = client.call("save", WorldFile.Request(path="saved.ply"))
    assert saved.success and saved.gaussian_count == W * H
    assert saved.message == f"saved to {path}"
    assert len(read_ply(path)) == W * H
    unwritable = client.call("save", WorldFile.Request(path="no/dir.ply"))  # no such folder
    assert not unwritable.success and "save failed" in unwritable.message

    corrupt = worlds / "corrupt.ply"
    corrupt.write_bytes(path.read_bytes()[:500])
    failed = client.call("load", WorldFile.Request(path="corrupt.ply"))
    assert not failed.success and "corrupt.ply" in failed.message
    assert process.poll() is None and client.status.state == WorldStatus.STATE_READY

    loaded = client.call("load", WorldFile.Request(path="saved.ply"))
    assert loaded.success and loaded.gaussian_count == W * H
    client.spin_until(lambda: client.status.source == "ply", what="source ply")


def test_load_world_refuses_a_zero_quaternion_and_keeps_the_world(world, worlds):
    client, process = world
    good = worlds / "good.ply"
    assert client.call("save", WorldFile.Request(path=good.name)).success
    ply = PlyData.read(str(good))
    vertices = ply["vertex"].data
    for name in ("rot_0", "rot_1", "rot_2", "rot_3"):
        vertices[name][1234] = 0.0  # no rotation: every render of it would fail
    bad = worlds / "zero_quaternion.ply"
    ply.write(str(bad))
    before = client.status
    failed = client.call("load", WorldFile.Request(path=bad.name))
    assert not failed.success
    assert "zero_quaternion.ply" in failed.message and "vertex 1234" in failed.message
    client.spin_for(0.5)
    assert client.status.state == WorldStatus.STATE_READY
    assert (client.status.source, client.status.gaussian_count) == (
        before.source,
        before.gaussian_count,
    )
    view = client.call("render", render_request(W, H))  # the old world still renders
    assert view.success, view.message
    np.testing.assert_allclose(np.median(image_to_depth_m(view.depth)), 2.0, atol=0.02)
    assert process.poll() is None


def test_save_world_sweeps_stale_temporary_files(world, worlds):
    client, _ = world
    stale = worlds / ".world.ply.0123456789ab.lyra-tmp"  # left by a save killed with -9
    stale.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    live = worlds / ".other.ply.abcdefabcdef.lyra-tmp"  # another writer, still at work
    live.write_bytes(b"in progress")
    unrelated = worlds / ".notes.txt"
    unrelated.write_text("not ours")
    saved = client.call("save", WorldFile.Request(path="world.ply"))
    assert saved.success, saved.message
    assert not stale.exists()
    assert live.exists() and unrelated.exists()
    assert len(read_ply(worlds / "world.ply")) == saved.gaussian_count


def test_bad_inputs_set_an_error_and_keep_the_node_alive(world):
    client, process = world
    assert client.call("reset", Trigger.Request()).success
    client.wait_state(WorldStatus.STATE_WAITING)
    rgb, depth = gradient_rgbd()
    client.publish_frame(rgb, depth, encoding="yuv422")
    status = client.wait_state(WorldStatus.STATE_ERROR)
    assert "yuv422" in status.error

    assert client.call("reset", Trigger.Request()).success
    client.wait_state(WorldStatus.STATE_WAITING)
    client.publish_frame(rgb, depth[:20])  # depth does not match the colour image
    status = client.wait_state(WorldStatus.STATE_ERROR)
    assert "registered" in status.error
    assert process.poll() is None


def test_auto_build_retries_after_a_bad_first_frame(world):
    client, process = world
    assert client.call("reset", Trigger.Request()).success
    client.wait_state(WorldStatus.STATE_WAITING)
    rgb, depth = gradient_rgbd()
    client.publish_frame(rgb, depth, encoding="32FC3")  # not an image encoding the node reads
    assert "32FC3" in client.wait_state(WorldStatus.STATE_ERROR).error
    client.publish_frame(rgb, depth)  # the next good frame builds, no reset needed
    status = client.wait_state(WorldStatus.STATE_READY)
    assert status.gaussian_count == W * H and status.error == ""
    assert process.poll() is None


def test_build_world_from_a_request_image_and_busy_answers(world):
    client, _ = world
    rgb, depth = gradient_rgbd(1600, 1200, depth=3.0)  # ~1.9M Gaussians: a build that takes time
    request = BuildWorld.Request(
        use_latest=False, image=numpy_to_image(rgb, "rgb8"), depth=depth_to_image(depth)
    )
    client.clients["build"].wait_for_service(timeout_sec=10)
    future = client.clients["build"].call_async(request)
    client.wait_state(WorldStatus.STATE_BUILDING)
    busy = client.call("reset", Trigger.Request())
    assert not busy.success and "busy" in busy.message
    client.spin_until(future.done, 60, "build_world")
    response = future.result()
    assert response.success, response.message
    assert response.gaussian_count == 1600 * 1200 and response.build_seconds > 0
    assert client.wait_state(WorldStatus.STATE_READY).gaussian_count == 1600 * 1200


def test_a_second_build_during_a_build_is_answered_busy(world):
    client, _ = world
    rgb, depth = gradient_rgbd(1600, 1200, depth=3.0)  # a build that takes time
    first = BuildWorld.Request(
        use_latest=False, image=numpy_to_image(rgb, "rgb8"), depth=depth_to_image(depth)
    )
    small_rgb, small_depth = gradient_rgbd()
    second = BuildWorld.Request(
        use_latest=False,
        image=numpy_to_image(small_rgb, "rgb8"),
        depth=depth_to_image(small_depth),
    )
    assert client.clients["build"].wait_for_service(timeout_sec=10)
    future = client.clients["build"].call_async(first)
    client.wait_state(WorldStatus.STATE_BUILDING)
    busy = client.call("build", second)
    assert not busy.success and "busy" in busy.message, busy.message
    assert not future.done(), "the second call was answered only after the first build"
    client.spin_until(future.done, 60, "first build_world")
    assert future.result().success and future.result().gaussian_count == 1600 * 1200
    client.spin_for(1.0)  # nothing queued may replace the first caller's world
    assert client.wait_state(WorldStatus.STATE_READY).gaussian_count == 1600 * 1200


def test_lyra_without_a_checkpoint_fails_and_the_node_keeps_running(world):
    client, process = world
    rgb, _ = gradient_rgbd()
    request = BuildWorld.Request(use_latest=False, image=numpy_to_image(rgb, "rgb8"), source="lyra")
    response = client.call("build", request)
    assert not response.success and "lyra_checkpoint" in response.message
    status = client.wait_state(WorldStatus.STATE_READY)  # the previous world stays
    assert "lyra_checkpoint" in status.error and process.poll() is None


def test_compressed_images_without_camera_info(ros_node, tmp_path):
    config = CONFIG.replace("cameras: [cam, ghost]", "cameras: [cam]").replace(
        "depth_stride: 1", "depth_stride: 1\n    image_transport: compressed"
    )
    process = start(tmp_path, config)
    try:
        client = Client(ros_node)
        compressed_pub = ros_node.create_publisher(CompressedImage, "image/compressed", 10)
        client.wait_state(WorldStatus.STATE_WAITING)
        client.spin_until(lambda: compressed_pub.get_subscription_count() > 0, what="node")
        rgb, depth = gradient_rgbd()
        client.publish_frame(rgb, depth, info=False, image=False)
        header = client.images_header
        compressed_pub.publish(rgb_to_compressed(rgb, format="png", header=header))
        assert client.wait_state(WorldStatus.STATE_READY).gaussian_count == W * H
        client.publish_tf(SIM_FRAME, input_pose())
        client.spin_until(lambda: client.images["cam"], what="rendered image")
        # Default intrinsics (60 deg) differ from the camera's: the view is zoomed, but the
        # lossless PNG colours arrive: blue stays 128 and red still grows left to right.
        view = image_to_rgb(client.images["cam"][-1])[8:-8, 8:-8].astype(float)
        assert abs(view[..., 2].mean() - 128) < 4
        assert np.corrcoef(view[..., 0].mean(axis=0), np.arange(view.shape[1]))[0, 1] > 0.95
    finally:
        output = stop_world_node(process)
    assert "no camera_info received" in output


def test_build_service_builds_with_the_lyra_source(ros_node, tmp_path, tiny_student_checkpoint):
    # Its own node name: the module's world node is still running and serves /lyra_world/*.
    config = (
        CONFIG.replace("lyra_world:", "lyra_world_lyra:")
        .replace("cameras: [cam, ghost]", "cameras: [cam]")
        .replace(
            "depth_stride: 1",
            f"depth_stride: 1\n    world_source: lyra\n"
            f"    lyra_checkpoint: {tiny_student_checkpoint}\n"
            f"    checkpoint_dirs: [{tiny_student_checkpoint.parent}]"
            "\n    lyra_assumed_depth: 2.0",
        )
    )
    process = start(tmp_path, config, "--ros-args", "-r", "__node:=lyra_world_lyra")
    try:
        client = Client(ros_node, "/lyra_world_lyra")
        client.wait_state(WorldStatus.STATE_WAITING)
        rgb, _ = gradient_rgbd(96, 48)  # wider than the student's 64x48: centre-cropped
        request = BuildWorld.Request(  # no depth: the image on a plane 2 m away
            use_latest=False,
            image=numpy_to_image(rgb, "rgb8"),
            camera_info=intrinsics_to_camera_info(Intrinsics(60.0, 60.0, 47.5, 23.5, 96, 48)),
        )
        response = client.call("build", request, timeout=120.0)
        assert response.success, response.message
        assert response.gaussian_count > 0 and "from lyra" in response.message
        status = client.wait_state(WorldStatus.STATE_READY)
        assert status.source == "lyra" and status.gaussian_count == response.gaussian_count
    finally:
        output = stop_world_node(process)
    assert "lyra build stages: cache" in output


def test_command_line_parameters_override_the_config_file(tmp_path):
    from lyra_ros.config import ros_args_with_config

    config = tmp_path / "world.yaml"
    config.write_text("lyra_world:\n  ros__parameters:\n    world_source: auto\n")
    args = ros_args_with_config(
        ["lyra-world", "--config", str(config), "--ros-args", "-p", "world_source:=depth"]
    )
    assert args[0] == "lyra-world"
    assert args.index("--params-file") < args.index("world_source:=depth")
    # rclpy parses them as ROS arguments: the later -p wins over the file.
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=args, context=context)
    try:
        node = rclpy.create_node("lyra_world", context=context)
        node.declare_parameter("world_source", "auto")
        assert node.get_parameter("world_source").value == "depth"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


BARE_NODE = "lyra_world_bare"


def bare_config(settings: dict[str, object], cameras: tuple[str, ...] = ("front",)) -> str:
    """Parameter YAML of ``lyra_world_bare``: one 64x48 camera ``front`` plus ``settings``."""
    camera = {"frame_id": "front_optical", "width": 64, "height": 48, "rate": 10.0}
    parameters: dict[str, object] = {"cameras": list(cameras), "camera": {"front": camera}}
    for name, value in settings.items():
        if name.startswith("camera.front."):
            camera[name.removeprefix("camera.front.")] = value
        else:
            parameters[name] = value
    return yaml.safe_dump({BARE_NODE: {"ros__parameters": parameters}})


def run_until_exit(config: str | None, tmp_path: Path) -> subprocess.Popen:
    """Start the node as ``lyra_world_bare`` (config text, or None for ``--config none``) in
    ``tmp_path`` (so its default ``world_dir`` is ``tmp_path/worlds``)."""
    path = "none"
    if config is not None:
        path = tmp_path / "bare.yaml"
        path.write_text(config)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lyra_ros.world_node",
            "--config",
            str(path),
            "--ros-args",
            "-r",
            f"__node:={BARE_NODE}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


BAD_PARAMETERS = [
    ({"camera.front.width": 0}, "camera.front.width"),
    ({"camera.front.rate": -5.0}, "camera.front.rate"),
    ({"camera.front.rate": 0.0}, "camera.front.rate"),
    ({"camera.front.rate": 10}, "camera.front.rate"),  # an integer where a float is needed
    ({"camera.front.width": 4096, "camera.front.height": 4096}, "camera.front.width"),
    ({"world_source": "sideways"}, "world_source"),
    ({"depth_stride": 0}, "depth_stride"),
    ({"image_transport": "theora"}, "image_transport"),
    ({"background": [0.0, 0.0]}, "background"),
    ({"max_depth": 0.01}, "max_depth"),  # below min_depth
    ({"opacity": 0.0}, "opacity"),
    ({"device": "tpu"}, "device"),
    ({"mapping_stride": 0}, "mapping_stride"),
    ({"max_refine_steps_per_second": 0.0}, "max_refine_steps_per_second"),
    ({"world_source": "fusion", "use_depth": False}, "use_depth"),
    ({"lyra_checkpoint": "/etc"}, "lyra_checkpoint"),  # outside checkpoint_dirs
    ({"max_input_pixels": 0}, "max_input_pixels"),
    ({"record_rate": -1.0}, "record_rate"),
]
if not torch.cuda.is_available():
    BAD_PARAMETERS.append(({"device": "cuda"}, "device"))


@pytest.mark.parametrize(("settings", "parameter"), BAD_PARAMETERS)
def test_a_bad_parameter_stops_start_up_with_one_line_naming_it(tmp_path, settings, parameter):
    process = run_until_exit(bare_config(settings), tmp_path)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the node started with {settings}:\n{stdout}{stderr}") from None
    assert process.returncode == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"lyra-world: parameter {parameter}:"), lines[0]
    assert "Traceback" not in stdout + stderr and "ready" not in stdout + stderr


@pytest.mark.parametrize("config", [None, bare_config({}, cameras=())])
def test_a_node_without_simulated_cameras_starts_and_serves(ros_node, tmp_path, config):
    rgb, depth = gradient_rgbd()
    path = tmp_path / "worlds" / "plane.ply"  # the default world_dir in the node's directory
    path.parent.mkdir()
    write_ply(path, gaussians_from_rgbd(rgb, depth, INTR, torch.from_numpy(input_pose())))
    process = run_until_exit(config, tmp_path)
    try:
        client = Client(ros_node, f"/{BARE_NODE}")
        client.wait_state(WorldStatus.STATE_WAITING)
        outside = client.call("load", WorldFile.Request(path=str(path)))  # an absolute path
        assert not outside.success and "absolute path" in outside.message, outside.message
        loaded = client.call("load", WorldFile.Request(path="plane.ply"))
        assert loaded.success and loaded.gaussian_count == W * H
        view = client.call("render", render_request(W, H))
        assert view.success, view.message
        np.testing.assert_allclose(np.median(image_to_depth_m(view.depth)), 2.0, atol=0.02)
        huge = client.call("render", render_request(100_000, 100_000))
        assert not huge.success and "max_render_pixels (4194304)" in huge.message, huge.message
    finally:
        process.send_signal(subprocess.signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stdout + stderr
    assert "0 simulated camera(s)" in stdout + stderr and "Traceback" not in stdout + stderr
