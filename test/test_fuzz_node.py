"""Fuzzing the running world node over DDS: hundreds of random and mutated messages of every
type it subscribes to and random service requests (:mod:`lyra_ros.fuzz`); it must stay alive,
keep serving, write nothing outside its world folder and keep its memory bounded.

The node runs as its own process with small limits (``max_input_pixels`` 19200,
``max_render_pixels`` 16384) and mapping on (``refine: true``), so that random frames and tf
reach the map and the simulated camera too; count and time are bounded (~30-60 s on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from lyra_core.geometry.cameras import Intrinsics  # noqa: E402
from lyra_ros.conversions import (  # noqa: E402
    depth_to_image,
    image_to_depth_m,
    intrinsics_to_camera_info,
    matrix_to_pose,
    numpy_to_image,
)
from lyra_ros.fuzz import fuzz_world_node  # noqa: E402
from lyra_ros.msg import WorldStatus  # noqa: E402
from lyra_ros.qos import LATCHED_QOS  # noqa: E402
from lyra_ros.srv import BuildWorld, RenderView  # noqa: E402
from node_process import (  # noqa: E402
    call_service,
    rss_bytes,
    spin_until,
    start_world_node,
    stop_world_node,
)

NAME = "lyra_world_fuzz"
CONFIG = f"""
{NAME}:
  ros__parameters:
    world_frame: map
    depth_stride: 1
    refine: true
    max_input_pixels: 19200
    max_render_pixels: 16384
    max_gaussians: 20000
    cameras: [fuzzcam]
    camera:
      fuzzcam:
        frame_id: camera_optical
        width: 32
        height: 24
        rate: 10.0
        topic: fuzz/cam/image
"""
OUTSIDE = (Path(tempfile.gettempdir()) / "lyra_fuzz_outside.ply", Path.home() / "lyra_fuzz.ply")
"""Paths the fuzzer's save requests name outside the world folder: never written."""

RSS_GROWTH_LIMIT = 300 * 2**20
"""The node's resident memory may grow at most this much over the fuzzing (bytes)."""


def start(tmp_path: Path, transport: str = "raw"):
    path = tmp_path / "fuzz.yaml"
    path.write_text(CONFIG + f"    image_transport: {transport}\n")
    return start_world_node(path, "--ros-args", "-r", f"__node:={NAME}", cwd=tmp_path)


def build_and_render(node) -> tuple[BuildWorld.Response, RenderView.Response]:
    """Build a 64x48 plane 2 m away with ``~/build_world``, then render it back."""
    rgb = np.full((48, 64, 3), 200, np.uint8)
    depth = np.full((48, 64), 2.0, np.float32)
    build = node.create_client(BuildWorld, f"/{NAME}/build_world")
    render = node.create_client(RenderView, f"/{NAME}/render_view")
    request = BuildWorld.Request(
        use_latest=False,
        image=numpy_to_image(rgb, "rgb8"),
        depth=depth_to_image(depth),
        source="depth",
    )
    try:
        deadline = time.monotonic() + 60
        built = call_service(node, build, request, timeout=60)
        while "busy" in built.message and time.monotonic() < deadline:  # a fuzzed build runs
            time.sleep(0.5)
            built = call_service(node, build, request, timeout=60)
        intrinsics = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
        view = call_service(
            node,
            render,
            RenderView.Request(
                pose=matrix_to_pose(np.eye(4)), camera_info=intrinsics_to_camera_info(intrinsics)
            ),
        )
    finally:
        node.destroy_client(build)
        node.destroy_client(render)
    return built, view


@pytest.fixture(scope="module")
def ros_node():
    rclpy.init()
    node = rclpy.create_node("fuzz_test_client")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def wait_for_node(node, process) -> None:
    statuses = []
    sub = node.create_subscription(WorldStatus, f"/{NAME}/status", statuses.append, LATCHED_QOS)
    try:
        spin_until(node, lambda: statuses or process.poll() is not None, 60, "the node's status")
    finally:
        node.destroy_subscription(sub)
    assert statuses, "the node exited before publishing its status"


@pytest.mark.parametrize(
    ("transport", "topics", "messages", "requests"),
    [
        ("raw", None, 1000, 100),
        (
            "compressed",
            {"compressed": "image/compressed", "depth": "depth", "tf": "/tf"},
            450,
            30,
        ),
    ],
)
def test_the_node_survives_fuzzed_messages_and_requests(
    ros_node, tmp_path, transport, topics, messages, requests
):
    for path in OUTSIDE:
        path.unlink(missing_ok=True)
    process = start(tmp_path, transport)
    try:
        wait_for_node(ros_node, process)
        built, view = build_and_render(ros_node)  # warm up: memory of a world and a render
        assert built.success and view.success, (built.message, view.message)
        rss_start = rss_bytes(process.pid)
        report = fuzz_world_node(
            ros_node,
            f"/{NAME}",
            topics=topics,
            messages=messages,
            requests=requests,
            seconds=45.0,
            seed=1 if transport == "raw" else 2,
            alive=lambda: process.poll() is None,
        )
        assert process.poll() is None, "the node died while fuzzed"
        assert report.total_messages == messages, report  # not cut short by the time limit
        assert report.requests_unanswered == 0, report
        assert report.requests_answered == report.total_requests >= requests // 2, report
        built, view = build_and_render(ros_node)  # still serving
        assert built.success, built.message
        assert view.success, view.message
        np.testing.assert_allclose(np.median(image_to_depth_m(view.depth)), 2.0, atol=0.05)
        rss_end = rss_bytes(process.pid)
        assert rss_end - rss_start < RSS_GROWTH_LIMIT, (rss_start, rss_end)
    finally:
        output = stop_world_node(process)
    for path in OUTSIDE:
        assert not path.exists(), f"a fuzzed save wrote {path}"
    assert "save refused" not in output  # refusals go back to the caller, not to the log
    # Saves went into the world folder (plain names such as 'fuzz.ply' or 'nan'), nowhere else.
    assert {p.name for p in tmp_path.iterdir()} <= {"fuzz.yaml", "worlds"}
    assert all(p.is_file() for p in (tmp_path / "worlds").glob("*"))
