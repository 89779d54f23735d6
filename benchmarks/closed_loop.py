"""Closed-loop latency of the world node: a tf pose published by one process to the image rendered
at that pose received by another, p50/p95 at 320x240 and 640x480, and the sustained render rate
while input images keep arriving, each without mapping and with mapping running (same run).

For every resolution the world node runs in its own process (``python -m lyra_ros.world_node``
with a temporary config: world_source depth, depth_stride 2, one simulated camera at that size
rendering at 100 Hz, i.e. back to back, since the node drops late frames instead of queueing
them), on an isolated DDS setup (localhost discovery, a domain of its own, a temporary log
folder). This process is the robot: it publishes the Middlebury motorcycle RGB-D frame of
:func:`lyra_ros.demo.demo_robot.motorcycle_frame` (image, depth, camera_info, static tf of the input
camera) until the node's latched status says READY; then it drives the simulated camera frame
along :func:`lyra_ros.demo.demo_robot.robot_path` on /tf at ``--tf-rate`` Hz, every pose with a
stamp of its own, while it keeps publishing the input image and depth at ``--input-rate`` Hz
(the load of a live camera), and records the rendered images. A warm-up drive comes first (its
images are not counted); the measured window lasts ``--seconds``.

Every size runs twice, in this order: ``static`` (``world_source: depth``, ``refine: false``:
the input feed is received and ignored once the world is built) and ``mapping`` (``refine:
true``: the same world starts a map and every input frame with a pose is fused into it by the
node's mapping worker). The input feed is the same in both: the motorcycle's left and right
views (:func:`lyra_ros.demo.feed_robot.stereo_feed`; the right view's depth warped from the
left disparity), alternating, each with a static tf of its camera; only the left one until the
world is READY, so both worlds start from the same frame. With ``keyframe_translation`` 0.1 m
(the cameras are 0.19 m apart) every fused frame is a keyframe, so the worker refines all the
time within its default bounds (``max_frames_per_second`` 2, ``refine_steps_per_keyframe`` 10,
``max_refine_steps_per_second`` 2, ``mapping_stride`` 2): the heaviest load those defaults
allow. The occlusion fill is off in both (``fill_occlusions: false``), so the static world is
exactly the in-process baseline's. ``mapping`` rows also report the map's work in the window
(refinement steps, frames integrated, from ``~/status``) and its final counts.

The node stamps every image with the tf stamp of the pose it rendered, so the latency of an
image is its receive time minus that stamp, both on this process' clock. It is counted once per
pose (the first image of a stamp; a re-render of a pose that is still the latest is not a new
answer) for the poses published in the window. It spans the tf message over DDS, the age of the
pose when the camera thread looks it up (the newest pose, so at most one tf period; poses
superseded during a render are never rendered), the render, conversion, publishing and the
image's way back over DDS. ``fresh_view_ms`` is the controller's view of the same loop: for
every pose published in the window, the time until an image of that pose or a later one
arrives (it adds the wait for the render in progress). ``rate_hz`` is images
received per second during the window, ``input_rate_hz`` the input frames published per second
(the node subscribes to them best effort: it may get fewer, and there is no way to see how many).

Baseline measured in the same run: ``render_ms_in_process`` is the median time of
:func:`lyra_core.rendering.render` in this process, on the same device, of the same world
(built
with :func:`lyra_core.scene.rgbd.gaussians_from_rgbd` from the same frame, same stride and depth
range)
at the same camera from poses spread along the measured path (timed passes over them after
warm-up passes), while no node runs. ``latency_over_render`` = p50 latency / that time: the cost
of the ROS pipeline around one render (a pipeline that cost nothing would give 1 + half a tf
period over the render time). ``node_render_ms_logged`` is what the node logs about its own
render time (every 10 s) during the window, when it does; the node shares the CPU with this
process.

Usage: python benchmarks/closed_loop.py [--sizes 320x240 640x480] [--seconds 15] [--out DIR]
       [--keyframe-translation 0.1]
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_ros.config import use_large_data_transport
from lyra_ros.demo.demo import world_node_command
from report import sync, write_report

DEFAULT_SIZES = ("320x240", "640x480")
CAMERA = "bench"
CAMERA_TOPIC = f"sim/{CAMERA}/image"
CAMERA_RATE_HZ = 100.0
DEPTH_STRIDE = 2
MIN_DEPTH, MAX_DEPTH, OPACITY = 0.05, 20.0, 0.95
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
STATIC_TF_GRACE_S = 1.0  # the static tf reaches the node before the first image does
STAMP_MATCH_NS = 1_000  # an image stamp belongs to the published pose within 1 us
NODE_STATS = re.compile(
    rf"\[(\d+\.\d+)\] \[lyra_world\]: camera {CAMERA}: ([\d.]+) frames/s, render (\d+) ms/frame"
)
CONFIG = """\
lyra_world:
  ros__parameters:
    world_frame: {world_frame}
    world_source: depth
    fill_occlusions: false
    refine: {refine}
    keyframe_translation: {keyframe_translation!r}
    depth_stride: {stride}
    min_depth: {min_depth}
    max_depth: {max_depth}
    opacity: {opacity}
    device: {device}
    cameras: [{camera}]
    camera:
      {camera}:
        frame_id: {frame_id}
        width: {width}
        height: {height}
        fx: {fx!r}
        fy: {fy!r}
        cx: {cx!r}
        cy: {cy!r}
        rate: {rate}
        topic: {topic}
"""


class NodeError(RuntimeError):
    """The world node did not get to a usable world (the node's output is appended)."""


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def _sim_intrinsics(width: int, height: int, fov_x: float) -> Intrinsics:
    """The simulated camera: the input camera's horizontal field of view, square pixels."""
    fx = 0.5 * width / math.tan(0.5 * fov_x)
    return Intrinsics(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)


def _isolate_ros(log_dir: Path, domain_id: int) -> None:
    """DDS traffic on this machine only, in a domain of its own; inherited by the node."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    use_large_data_transport()  # 741x500 input images: see config/fastdds_large_data.xml


# ---------------------------------------------------------------------------- in-process baseline


def build_world(frame, input_pose: np.ndarray, device: torch.device) -> Gaussians:
    """The world the node builds from the same frame (lyra_ros.world_builder's depth source)."""
    return gaussians_from_rgbd(
        frame.rgb,
        frame.depth_m,
        frame.intrinsics,
        torch.as_tensor(input_pose, dtype=torch.float32),
        stride=DEPTH_STRIDE,
        opacity=OPACITY,
        min_depth=MIN_DEPTH,
        max_depth=MAX_DEPTH,
    ).to(device)


def render_ms_in_process(
    world: Gaussians,
    poses: np.ndarray,
    intrinsics: Intrinsics,
    device: torch.device,
    warmup: int,
    passes: int,
    rasteriser: str = "auto",
) -> float:
    """Median ms of one render over ``passes`` passes over ``poses``, after ``warmup`` passes
    (the first renders of a process are slower), with the ``rasteriser`` backend."""
    cameras = [
        Cameras.from_intrinsics(torch.as_tensor(p, dtype=torch.float32)[None], intrinsics).to(
            device
        )
        for p in poses
    ]
    times = []
    for timed in [False] * warmup + [True] * passes:
        for cams in cameras:
            sync(device)
            start = time.perf_counter()
            with torch.inference_mode():
                render(world, cams, background=(0.0, 0.0, 0.0), backend=rasteriser)
            sync(device)
            if timed:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# ---------------------------------------------------------------------------- the robot process


def _robot_node(feed_frames, path: np.ndarray, args):
    """The benchmark's ROS side (rclpy imported here, after the environment is isolated)."""
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from lyra_ros.conversions import depth_to_image, intrinsics_to_camera_info, numpy_to_image
    from lyra_ros.demo.demo_robot import ROBOT_FRAME, WORLD_FRAME, transform_msg
    from lyra_ros.msg import WorldStatus
    from lyra_ros.qos import LATCHED_QOS, TF_STATIC_QOS

    class Robot(Node):
        """Publishes the RGB-D feed and the camera pose on tf; records the rendered images."""

        READY = WorldStatus.STATE_READY
        ERROR = WorldStatus.STATE_ERROR

        def __init__(self) -> None:
            super().__init__("closed_loop_robot")
            self.status: WorldStatus | None = None
            self.driving = False
            self.step = 0
            self.tf_stamps: list[int] = []  # ns, in publishing order (increasing)
            self.feed_times: list[int] = []  # ns of every input frame published
            self.received: list[tuple[int, int]] = []  # (image stamp ns, receive ns)
            self.last_image: Image | None = None
            self._feed_from: int | None = None
            self.alternate = False  # left only until the world is ready, then left and right
            self._feed_index = 0
            # Built once: the feed only restamps them.
            self.feed_msgs = []
            for frame in feed_frames:
                msgs = (
                    numpy_to_image(frame.rgb, "rgb8"),
                    depth_to_image(frame.depth_m),
                    intrinsics_to_camera_info(frame.intrinsics),
                )
                for msg in msgs:
                    msg.header.frame_id = frame.frame_id
                self.feed_msgs.append(msgs)

            self.image_pub = self.create_publisher(Image, "camera/image", 1)
            self.depth_pub = self.create_publisher(Image, "camera/depth", 1)
            self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", 1)
            self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
            self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
            self.create_subscription(
                WorldStatus, "/lyra_world/status", self._on_status, LATCHED_QOS
            )
            self.create_subscription(Image, CAMERA_TOPIC, self._on_image, 10)
            stamp = self._now().to_msg()
            static = [transform_msg(WORLD_FRAME, f.frame_id, f.pose, stamp) for f in feed_frames]
            self.tf_static_pub.publish(TFMessage(transforms=static))
            self.create_timer(1.0 / args.input_rate, self._publish_feed)
            self.create_timer(1.0 / args.tf_rate, self._drive)

        def _now(self):
            return self.get_clock().now()

        def _on_status(self, msg: WorldStatus) -> None:
            self.status = msg

        def _on_image(self, msg: Image) -> None:
            received = self._now().nanoseconds
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            self.received.append((stamp, received))
            self.last_image = msg

        def _publish_feed(self) -> None:
            """The input camera; its first frame waits until the node has the static tf."""
            now = self._now()
            if self._feed_from is None:
                if self.tf_static_pub.get_subscription_count() == 0:
                    return
                self._feed_from = now.nanoseconds + int(STATIC_TF_GRACE_S * 1e9)
            if now.nanoseconds < self._feed_from:
                return
            stamp = now.to_msg()
            image, depth, info = self.feed_msgs[self._feed_index]
            if self.alternate:
                self._feed_index = (self._feed_index + 1) % len(self.feed_msgs)
            for msg in (image, depth, info):
                msg.header.stamp = stamp
            self.info_pub.publish(info)
            self.depth_pub.publish(depth)
            self.image_pub.publish(image)
            self.feed_times.append(now.nanoseconds)

        def _drive(self) -> None:
            if not self.driving:
                return
            now = self._now()
            pose = path[self.step % len(path)]
            self.step += 1
            tf = transform_msg(WORLD_FRAME, ROBOT_FRAME, pose, now.to_msg())
            self.tf_pub.publish(TFMessage(transforms=[tf]))
            self.tf_stamps.append(now.nanoseconds)

    return Robot()


def _start_node(
    work: Path,
    width: int,
    height: int,
    intrinsics: Intrinsics,
    device: str,
    mapping: bool,
    keyframe_translation: float,
    rasteriser: str,
):
    from lyra_ros.demo.demo_robot import ROBOT_FRAME, WORLD_FRAME

    config = work / "world.yaml"
    config.write_text(
        CONFIG.format(
            world_frame=WORLD_FRAME,
            refine="true" if mapping else "false",
            keyframe_translation=float(keyframe_translation),
            stride=DEPTH_STRIDE,
            min_depth=MIN_DEPTH,
            max_depth=MAX_DEPTH,
            opacity=OPACITY,
            device=device,
            camera=CAMERA,
            frame_id=ROBOT_FRAME,
            width=width,
            height=height,
            fx=intrinsics.fx,
            fy=intrinsics.fy,
            cx=intrinsics.cx,
            cy=intrinsics.cy,
            rate=CAMERA_RATE_HZ,
            topic=CAMERA_TOPIC,
        )
    )
    log = (work / "node.log").open("w")  # a file, not a pipe: a full pipe would stall the node
    process = subprocess.Popen(
        world_node_command(config),
        stdout=log,
        stderr=subprocess.STDOUT,
        # The torch rows: the node renders with the pure-PyTorch rasteriser.
        env=dict(os.environ) | ({"LYRA_NATIVE": "0"} if rasteriser == "torch" else {}),
    )
    log.close()
    return process


def _stop_node(process: subprocess.Popen, work: Path) -> tuple[int | None, str]:
    """SIGINT, then kill after STOP_TIMEOUT_S; the exit code (None: killed) and the output."""
    code: int | None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    return code, (work / "node.log").read_text(errors="replace")


def _spin(executor, seconds: float, until=None) -> bool:
    """Spin for ``seconds`` or until ``until()`` is true (returns whether it became true)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.005)
        if until is not None and until():
            return True
    return False


def _wait_ready(robot, executor, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _spin(executor, 0.1)
        status = robot.status
        if status is not None and status.state == robot.READY and status.gaussian_count > 0:
            return
        if status is not None and status.state == robot.ERROR:
            raise NodeError(f"the world node failed to build a world: {status.error}")
        if process.poll() is not None:
            raise NodeError(f"the world node exited with code {process.returncode}")
    state = "no status" if robot.status is None else f"state {robot.status.state}"
    raise NodeError(f"the world node was not READY within {READY_TIMEOUT_S:.0f} s ({state})")


def _latencies(robot, t0: int, t1: int) -> tuple[list[float], int, int]:
    """Latency (ms) of the first image of every pose published in [t0, t1]; also the number of
    images whose stamp is no published pose, and the largest stamp error (ns) of the others."""
    stamps = robot.tf_stamps
    first: dict[int, float] = {}
    unmatched, stamp_error = 0, 0
    for stamp, received in robot.received:
        i = bisect.bisect_left(stamps, stamp)
        nearest = min(stamps[max(i - 1, 0) : i + 1], key=lambda s: abs(s - stamp), default=None)
        if nearest is None or abs(nearest - stamp) > STAMP_MATCH_NS:
            unmatched += 1
            continue
        stamp_error = max(stamp_error, abs(nearest - stamp))
        if t0 <= nearest <= t1 and nearest not in first:
            first[nearest] = (received - nearest) / 1e6
    return list(first.values()), unmatched, stamp_error


def _fresh_view_ms(robot, t0: int, t1: int) -> list[float]:
    """For every pose published in [t0, t1]: ms until an image of it or a later pose arrived."""
    arrivals = sorted((received, stamp) for stamp, received in robot.received)
    waits = []
    for pose in (s for s in robot.tf_stamps if t0 <= s <= t1):
        received = next((r for r, s in arrivals if s >= pose - STAMP_MATCH_NS), None)
        if received is not None:
            waits.append((received - pose) / 1e6)
    return waits


def _percentiles(values: list[float]) -> dict:
    return {
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "max": round(max(values), 1),
    }


def measure_size(
    width: int, height: int, mapping: bool, rasteriser: str, context: dict, args
) -> dict:
    """One row: a fresh world node at this size (mapping or not, rendering with ``rasteriser``:
    ``native`` or ``torch`` on the CPU, ``auto`` on CUDA), driven and timed from here."""
    from rclpy.executors import SingleThreadedExecutor

    from lyra_ros.demo.feed_robot import status_summary

    intrinsics = _sim_intrinsics(width, height, context["fov_x"])
    render_ms = render_ms_in_process(
        context["world"],
        context["sample_poses"],
        intrinsics,
        context["device"],
        args.render_warmup,
        args.render_passes,
        rasteriser,
    )
    work = context["work"] / f"{width}x{height}_{'mapping' if mapping else 'static'}_{rasteriser}"
    work.mkdir()
    process = _start_node(
        work,
        width,
        height,
        intrinsics,
        context["device"].type,
        mapping,
        args.keyframe_translation,
        rasteriser,
    )
    robot = _robot_node(context["feed_frames"], context["path"], args)
    executor = SingleThreadedExecutor()
    executor.add_node(robot)
    failure: NodeError | None = None
    try:
        _wait_ready(robot, executor, process)
        status = robot.status
        robot.alternate = True
        # Warm-up: drive along the path (the first renders of a process are slow), not counted.
        robot.driving = True
        _spin(executor, args.warmup)
        _spin(executor, 60.0, until=lambda: len(robot.received) >= 3)
        robot.received.clear()
        robot.step = 0
        t0 = robot.get_clock().now().nanoseconds
        status_t0 = robot.status
        _spin(executor, args.seconds)
        t1 = robot.get_clock().now().nanoseconds
        status_t1 = robot.status
        robot.driving = False
        last = robot.tf_stamps[-1]
        # Drain: once the last pose is rendered every earlier image has arrived.
        _spin(
            executor,
            30.0,
            until=lambda: any(s >= last - STAMP_MATCH_NS for s, _ in robot.received[-3:]),
        )
        if process.poll() is not None:
            raise NodeError(f"the world node exited with code {process.returncode}")
    except NodeError as err:
        failure = err
    finally:
        executor.remove_node(robot)
        robot.destroy_node()
        executor.shutdown()
        code, output = _stop_node(process, work)
    if failure is not None:
        raise NodeError(f"{failure}\n--- world node output ---\n{output}") from None
    if "anchoring the world" in output:
        raise NodeError(f"the world was not anchored at the input pose:\n{output}")
    if not mapping and status.gaussian_count != len(context["world"]):
        raise NodeError(
            f"the node built {status.gaussian_count} Gaussians, the in-process baseline "
            f"{len(context['world'])}: not the same world"
        )

    latencies, unmatched, stamp_error = _latencies(robot, t0, t1)
    if not latencies:
        raise NodeError(f"no rendered image in the window\n--- world node output ---\n{output}")
    fresh = _fresh_view_ms(robot, t0, t1)
    window_s = (t1 - t0) / 1e9
    images = sum(t0 <= r <= t1 for _, r in robot.received)
    inputs = sum(t0 <= t <= t1 for t in robot.feed_times)
    p50 = float(np.percentile(latencies, 50))
    logged = [
        float(ms) for when, _, ms in NODE_STATS.findall(output) if t0 <= float(when) * 1e9 <= t1
    ]
    last_rgb = np.frombuffer(bytes(robot.last_image.data), np.uint8)
    map_work = None
    if mapping:
        map_work = {
            "refine_steps_in_window": status_t1.refine_steps - status_t0.refine_steps,
            "frames_integrated_in_window": (
                status_t1.frames_integrated - status_t0.frames_integrated
            ),
            "at_window_end": status_summary(status_t1),
        }
    return {
        "width": width,
        "height": height,
        "mapping": mapping,
        "rasteriser": rasteriser,
        "map_work": map_work,
        "frames": len(latencies),
        "images": images,
        "poses_published": sum(t0 <= s <= t1 for s in robot.tf_stamps),
        "window_s": round(window_s, 2),
        "rate_hz": round(images / window_s, 2),
        "latency_ms": {**_percentiles(latencies), "min": round(min(latencies), 1)},
        "fresh_view_ms": _percentiles(fresh) if fresh else None,
        "render_ms_in_process": round(render_ms, 1),
        "latency_over_render": round(p50 / render_ms, 2),
        "input_rate_hz": round(inputs / window_s, 2),
        "node_gaussians": status.gaussian_count,
        "node_build_s": round(status.build_seconds, 3),
        "node_render_ms_logged": logged,
        "stamp_error_ns_max": stamp_error,
        "images_with_unknown_stamp": unmatched,
        "view_coverage": round(float((last_rgb > 0).mean()), 3),
        "node_exit_code": code,
        "node_traceback": "Traceback" in output,
    }


def _pairs(rows: list[dict], field: str, base, other):
    """(base row, other row) pairs of rows equal in everything measured-over but ``field``,
    where ``field`` is ``base`` in the first and ``other`` in the second."""
    case_fields = [k for k in ("width", "height", "rasteriser", "mapping") if k != field]
    for first in (r for r in rows if r[field] == base):
        case = [first[k] for k in case_fields]
        twin = next(
            (r for r in rows if r[field] == other and [r[k] for k in case_fields] == case), None
        )
        if twin is not None:
            yield dict(zip(case_fields, case, strict=True)), first, twin


def _comparison(rows: list[dict]) -> list[dict]:
    """Per size and rasteriser: mapping row over static row (rate, p50 and p95 latency)."""

    def ratio(mapped: dict, static: dict, quantile: str) -> float:
        return round(mapped["latency_ms"][quantile] / static["latency_ms"][quantile], 2)

    return [
        case
        | {
            "rate_ratio": round(mapped["rate_hz"] / static["rate_hz"], 2),
            "latency_p50_ratio": ratio(mapped, static, "p50"),
            "latency_p95_ratio": ratio(mapped, static, "p95"),
        }
        for case, static, mapped in _pairs(rows, "mapping", False, True)
    ]


def _rasteriser_comparison(rows: list[dict]) -> list[dict]:
    """Per size and mapping mode: the torch rasteriser's row over the native one's."""
    return [
        case
        | {
            "rate_native_over_torch": round(native["rate_hz"] / twin["rate_hz"], 2),
            "latency_p50_torch_over_native": round(
                twin["latency_ms"]["p50"] / native["latency_ms"]["p50"], 2
            ),
            "render_torch_over_native": round(
                twin["render_ms_in_process"] / native["render_ms_in_process"], 2
            ),
        }
        for case, native, twin in _pairs(rows, "rasteriser", "native", "torch")
    ]


def run_benchmark(args: argparse.Namespace) -> dict:
    from lyra_ros.demo.demo_robot import input_camera_pose, motorcycle_frame, robot_path
    from lyra_ros.demo.feed_robot import stereo_feed

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    frame = motorcycle_frame()
    input_pose = input_camera_pose()
    valid = frame.depth_m[frame.depth_m > 0]
    path = robot_path(input_pose, float(np.median(valid)), round(args.seconds * args.tf_rate))
    world = build_world(frame, input_pose, device)
    picks = np.linspace(0, len(path) - 1, args.render_poses).round().astype(int)
    context = {
        "feed_frames": stereo_feed().frames,
        "frame": frame,
        "input_pose": input_pose,
        "path": path,
        "world": world,
        "device": device,
        "sample_poses": path[picks],
        "fov_x": 2 * math.atan(0.5 * frame.intrinsics.width / frame.intrinsics.fx),
    }
    rows = []
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="lyra-closed-loop-") as tmp:
        context["work"] = Path(tmp)
        (Path(tmp) / "ros_log").mkdir()
        _isolate_ros(Path(tmp) / "ros_log", args.domain_id)
        import rclpy

        rclpy.init()
        try:
            rasterisers = args.rasterisers if device.type == "cpu" else ["auto"]
            for rasteriser in rasterisers:
                for width, height in args.sizes:
                    for mapping in (False, True):
                        row = measure_size(width, height, mapping, rasteriser, context, args)
                        rows.append(row)
                        print(_format_row(row), flush=True)
        finally:
            rclpy.try_shutdown()
    return {
        "benchmark": "closed_loop",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": device.type,
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "default"),
        "fastdds_profile": Path(os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")).name,
        "world": {
            "frame": "lyra_ros.demo.demo_robot.motorcycle_frame() (Middlebury 2014 motorcycle, "
            f"{frame.intrinsics.width}x{frame.intrinsics.height})",
            "source": "depth",
            "depth_stride": DEPTH_STRIDE,
            "gaussians": len(world),
        },
        "setup": {
            "node": "python -m lyra_ros.world_node in its own process, one simulated camera at "
            f"{CAMERA_RATE_HZ:.0f} Hz (renders back to back), localhost DDS, own domain",
            "tf_rate_hz": args.tf_rate,
            "input_rate_hz_requested": args.input_rate,
            "input_feed": "lyra_ros.demo.feed_robot.stereo_feed(): the motorcycle's left and right "
            "views alternating (left only until READY), static tf of both cameras",
            "mapping": "refine: true on the same depth world; keyframe_translation "
            f"{args.keyframe_translation} m, the other mapping parameters at their defaults "
            "(lyra_ros.parameters); fill_occlusions false in both",
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "path": "lyra_ros.demo.demo_robot.robot_path over the window",
        },
        "timing": "latency = receive time - image stamp (= stamp of the tf pose rendered), same "
        "clock, first image per pose published in the window; rate_hz = images received per "
        "second in the window; input_rate_hz = input frames published per second (the node's "
        "best-effort subscriptions may receive fewer)",
        "baselines": {
            "render_ms_in_process": "median lyra_core.rendering.render time of the same world "
            f"and camera in this process, {args.render_passes} passes over {args.render_poses} "
            f"path poses after {args.render_warmup} warm-up passes, with no node running",
            "latency_over_render": "p50 latency / render_ms_in_process (1 + half a tf period "
            "over the render time with a pipeline that costs nothing)",
        },
        "load_average_1_5_15min": {
            "before": load_before,
            "after": [round(v, 2) for v in os.getloadavg()],
            "note": "the machine's load (other processes share its CPUs); above the CPU count, "
            "the numbers are slower than on an idle machine",
        },
        "rows": rows,
        "mapping_over_static": _comparison(rows),
        "native_over_torch": _rasteriser_comparison(rows),
    }


HEADER = (
    f"{'size':>8} {'raster':>6} {'mapping':>7} {'frames':>6} {'rate Hz':>7} {'p50 ms':>7} "
    f"{'p95 ms':>7} {'max ms':>7} {'fresh p50':>9} {'render ms':>9} {'p50/render':>10} "
    f"{'input Hz':>8}"
)


def _format_row(row: dict) -> str:
    size = f"{row['width']}x{row['height']}"
    lat = row["latency_ms"]
    fresh = f"{row['fresh_view_ms']['p50']:.1f}" if row["fresh_view_ms"] else "-"
    mapping = "on" if row["mapping"] else "off"
    return (
        f"{size:>8} {row['rasteriser']:>6} {mapping:>7} {row['frames']:>6} "
        f"{row['rate_hz']:>7.1f} {lat['p50']:>7.1f} {lat['p95']:>7.1f} {lat['max']:>7.1f} "
        f"{fresh:>9} {row['render_ms_in_process']:>9.1f} "
        f"{row['latency_over_render']:>9.2f}x {row['input_rate_hz']:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=_parse_size,
        nargs="+",
        default=[_parse_size(s) for s in DEFAULT_SIZES],
        help="simulated camera sizes, WIDTHxHEIGHT",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per size")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds driven before it")
    parser.add_argument("--tf-rate", type=float, default=30.0, help="camera poses per second")
    parser.add_argument("--input-rate", type=float, default=5.0, help="input RGB-D frames/s")
    parser.add_argument("--render-poses", type=int, default=8, help="poses of the baseline")
    parser.add_argument("--render-warmup", type=int, default=2, help="baseline warm-up passes")
    parser.add_argument("--render-passes", type=int, default=2, help="baseline timed passes")
    parser.add_argument("--device", default="auto", help="render device: auto, cpu or cuda")
    parser.add_argument(
        "--rasterisers",
        nargs="+",
        default=["native", "torch"],
        choices=["native", "torch"],
        help="CPU rasterisers to measure, each a full set of rows (the torch rows: LYRA_NATIVE=0)",
    )
    parser.add_argument(
        "--keyframe-translation",
        type=float,
        default=0.1,
        help="mapping rows: meters of camera motion that make a keyframe",
    )
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    print(HEADER, flush=True)
    try:
        report = run_benchmark(args)
    except NodeError as err:
        raise SystemExit(f"closed_loop: {err}") from None
    write_report(args.out, f"closed_loop_{report['device']}.json", report)


if __name__ == "__main__":
    main()
