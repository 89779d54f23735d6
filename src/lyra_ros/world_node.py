"""The Lyra world node: camera images in, a Gaussian world built, rendered robot views out.

Subscribes (sensor-data QoS, keep-last 1):
  ``image`` (sensor_msgs/Image, or CompressedImage on ``image/compressed`` when
  ``image_transport`` is ``compressed``), ``camera_info``, ``depth`` (registered to colour).
Publishes:
  ``~/status`` (lyra_ros/WorldStatus, latched), ``~/world_points`` (PointCloud2, latched) and,
  for every simulated camera, ``<topic>`` (Image rgb8), ``<topic>/../camera_info`` and optionally
  ``<topic>/../depth`` (32FC1) at the camera's rate and tf pose.
Services:
  ``~/reset_world`` (std_srvs/Trigger), ``~/build_world`` (lyra_ros/BuildWorld),
  ``~/render_view`` (lyra_ros/RenderView), ``~/save_world`` and ``~/load_world``
  (lyra_ros/WorldFile).

Parameters are declared in :meth:`WorldNode._declare_parameters` with their descriptions and are
documented in the README and config/world.yaml.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.utils.errors import WorldBuildError
from lyra_ros.config import ros_args_with_config, use_large_data_transport
from lyra_ros.conversions import (
    camera_info_to_intrinsics,
    compressed_to_rgb,
    depth_to_image,
    image_to_depth_m,
    image_to_rgb,
    intrinsics_to_camera_info,
    numpy_to_image,
    pointcloud2_from_points,
    pose_to_matrix,
)
from lyra_ros.msg import WorldStatus
from lyra_ros.qos import LATCHED_QOS, SENSOR_QOS
from lyra_ros.srv import BuildWorld, RenderView, WorldFile
from lyra_ros.tf_buffer import TfError, TfExtrapolationError, TransformLookup
from lyra_ros.world_builder import BuildOptions, WorldBuilder

WARN_PERIOD_S = 5.0


@dataclass
class RenderStats:
    """Frames rendered and render time since the last report (logged every ``period`` s)."""

    period: float = 10.0
    frames: int = 0
    seconds: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def add(self, seconds: float) -> None:
        self.frames += 1
        self.seconds += seconds

    def due(self) -> bool:
        return time.monotonic() - self.since >= self.period

    def report(self) -> str:
        elapsed = time.monotonic() - self.since
        text = (
            f"{self.frames / elapsed:.1f} frames/s, render "
            f"{1e3 * self.seconds / max(self.frames, 1):.0f} ms/frame"
        )
        self.frames, self.seconds, self.since = 0, 0.0, time.monotonic()
        return text


@dataclass
class SimCamera:
    """A simulated camera rendered at ``rate`` Hz from the tf pose of ``frame_id``."""

    name: str
    frame_id: str
    intrinsics: Intrinsics
    rate: float
    topic: str
    publish_depth: bool
    stats: RenderStats = field(default_factory=RenderStats)


@dataclass
class InputFrame:
    """The latest camera input, as converted arrays."""

    rgb: np.ndarray
    depth_m: np.ndarray | None
    intrinsics: Intrinsics
    frame_id: str
    stamp: rclpy.time.Time


def _describe(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


def _sibling_topic(topic: str, leaf: str) -> str:
    """``sim/front/image`` -> ``sim/front/<leaf>``."""
    head, _, _ = topic.rpartition("/")
    return f"{head}/{leaf}" if head else leaf


class WorldNode(Node):
    """Builds a Gaussian world from camera input and serves rendered views of it."""

    def __init__(self, **kwargs) -> None:
        super().__init__("lyra_world", **kwargs)
        self._declare_parameters()
        p = self.get_parameter
        self.world_frame: str = p("world_frame").value
        self.options = BuildOptions(
            source=p("world_source").value,
            depth_stride=p("depth_stride").value,
            min_depth=p("min_depth").value,
            max_depth=p("max_depth").value,
            opacity=p("opacity").value,
            lyra_checkpoint=p("lyra_checkpoint").value,
            lyra_assumed_depth=p("lyra_assumed_depth").value,
        )
        self.device = self._resolve_device(p("device").value)
        self.world_builder = WorldBuilder(self.device)  # keeps the Lyra model between builds
        self.background = tuple(float(v) for v in p("background").value)
        self.cameras = self._read_cameras()

        self._lock = threading.Lock()
        self._world: Gaussians | None = None
        self._status = WorldStatus(state=WorldStatus.STATE_WAITING, world_frame=self.world_frame)
        self._latest_image: Image | CompressedImage | None = None
        self._latest_depth: Image | None = None
        self._latest_info: CameraInfo | None = None
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lyra_build")
        self._last_warning: dict[str, float] = {}
        self._warned_no_info = False

        self.tf = TransformLookup(self, cache_time=p("tf_cache_time").value)
        self._stop = threading.Event()
        self._camera_threads: list[threading.Thread] = []
        self._create_interfaces()
        self._publish_status()
        for thread in self._camera_threads:
            thread.start()
        self.get_logger().info(
            f"lyra_world ready: world_frame={self.world_frame}, source={self.options.source}, "
            f"{len(self.cameras)} simulated camera(s), tf via {self.tf.backend}, "
            f"render device {self.device}"
        )

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> None:
        declare = self.declare_parameter
        declare("world_frame", "map", _describe("Fixed frame the world is anchored in."))
        declare("world_source", "auto", _describe("auto, depth or lyra: how worlds are built."))
        declare("build_on_first_image", True, _describe("Build as soon as input arrives."))
        declare("image_transport", "raw", _describe("raw (Image) or compressed (CompressedImage)."))
        declare("use_depth", True, _describe("Subscribe to the depth image."))
        declare("depth_stride", 2, _describe("Keep every n-th depth pixel per axis."))
        declare("min_depth", 0.05, _describe("Depth below this (m) is invalid."))
        declare("max_depth", 20.0, _describe("Depth above this (m) is invalid; 0 = no limit."))
        declare("opacity", 0.95, _describe("Opacity of Gaussians built from depth."))
        declare(
            "lyra_checkpoint",
            "",
            _describe("Lyra student checkpoint folder, 'shipped' (packaged student) or '' (none)."),
        )
        declare(
            "lyra_assumed_depth",
            3.0,
            _describe("lyra without depth: distance (m) of the assumed fronto-parallel plane."),
        )
        declare("default_fov_deg", 60.0, _describe("Horizontal FOV used without camera_info."))
        declare("tf_cache_time", 10.0, _describe("Seconds of tf history kept."))
        declare("device", "auto", _describe("Render and Lyra device: auto, cpu or cuda."))
        declare("background", [0.0, 0.0, 0.0], _describe("RGB in [0, 1] behind the world."))
        declare("point_cloud_max_points", 50000, _describe("Cap of ~/world_points (0: off)."))
        declare(
            "cameras",
            Parameter.Type.STRING_ARRAY,
            _describe("Names of simulated cameras, each configured by camera.<name>.*."),
        )

    def _read_cameras(self) -> list[SimCamera]:
        cameras = []
        for name in self.get_parameter("cameras").value or []:
            prefix = f"camera.{name}."
            declare = self.declare_parameter
            declare(prefix + "frame_id", f"{name}_optical_frame", _describe("tf frame to render."))
            declare(prefix + "width", 320, _describe("Image width, pixels."))
            declare(prefix + "height", 240, _describe("Image height, pixels."))
            for key in ("fx", "fy", "cx", "cy"):
                declare(prefix + key, 0.0, _describe(f"{key} in pixels; 0: from fov_deg."))
            declare(prefix + "fov_deg", 60.0, _describe("Horizontal FOV when fx is 0."))
            declare(prefix + "rate", 10.0, _describe("Render rate, Hz."))
            declare(prefix + "topic", f"{name}/image", _describe("Image topic."))
            declare(prefix + "publish_depth", False, _describe("Also publish 32FC1 depth."))
            value = {
                k: self.get_parameter(prefix + k).value
                for k in (
                    "frame_id",
                    "width",
                    "height",
                    "fx",
                    "fy",
                    "cx",
                    "cy",
                    "fov_deg",
                    "rate",
                    "topic",
                    "publish_depth",
                )
            }
            intrinsics = _camera_intrinsics(value)
            cameras.append(
                SimCamera(
                    name,
                    value["frame_id"],
                    intrinsics,
                    float(value["rate"]),
                    value["topic"],
                    bool(value["publish_depth"]),
                )
            )
        return cameras

    @staticmethod
    def _resolve_device(device: str) -> torch.device:
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(device)

    # ------------------------------------------------------------------ interfaces

    def _create_interfaces(self) -> None:
        if self.get_parameter("image_transport").value == "compressed":
            self.create_subscription(
                CompressedImage,
                "image/compressed",
                self._on_image,
                SENSOR_QOS,
            )
        else:
            self.create_subscription(Image, "image", self._on_image, SENSOR_QOS)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, SENSOR_QOS)
        if self.get_parameter("use_depth").value:
            self.create_subscription(Image, "depth", self._on_depth, SENSOR_QOS)
        self._status_pub = self.create_publisher(WorldStatus, "~/status", LATCHED_QOS)
        self._points_pub = self.create_publisher(PointCloud2, "~/world_points", LATCHED_QOS)
        for kind, name, callback in (
            (Trigger, "~/reset_world", self._on_reset),
            (RenderView, "~/render_view", self._on_render),
            (WorldFile, "~/save_world", self._on_save),
            (WorldFile, "~/load_world", self._on_load),
        ):
            self.create_service(kind, name, callback)
        self._create_build_service()
        for camera in self.cameras:
            self._create_camera_output(camera)

    def _create_camera_output(self, camera: SimCamera) -> None:
        image_pub = self.create_publisher(Image, camera.topic, 1)
        info_pub = self.create_publisher(CameraInfo, _sibling_topic(camera.topic, "camera_info"), 1)
        depth_pub = (
            self.create_publisher(Image, _sibling_topic(camera.topic, "depth"), 1)
            if camera.publish_depth
            else None
        )

        thread = threading.Thread(
            target=self._camera_loop,
            args=(camera, image_pub, info_pub, depth_pub),
            name=f"lyra_camera_{camera.name}",
            daemon=True,
        )
        self._camera_threads.append(thread)

    def _camera_loop(self, camera: SimCamera, image_pub, info_pub, depth_pub) -> None:
        """Render one camera at its rate in its own thread (late frames are dropped, not queued).

        Rendering runs outside the executor: an executor thread busy for ~100 ms per frame
        would delay tf, images and services, and rclpy's MultiThreadedExecutor spins a core
        while a long callback runs.
        """
        period = 1.0 / camera.rate
        next_time = time.monotonic()
        while not self._stop.is_set():
            try:
                self._render_camera(camera, image_pub, info_pub, depth_pub)
            except Exception as err:  # a camera thread must outlive any single frame
                if not self.context.ok():  # shutting down: the publishers are gone
                    return
                self._warn_throttled(camera.name, f"camera {camera.name}: {err!r}")
            next_time += period
            delay = next_time - time.monotonic()
            if delay < 0:
                next_time, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    # ------------------------------------------------------------------ inputs

    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self._lock:
            self._latest_image = msg
        self._maybe_auto_build()

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._latest_depth = msg
        self._maybe_auto_build()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._latest_info = msg

    def _maybe_auto_build(self) -> None:
        if not self.get_parameter("build_on_first_image").value:
            return
        with self._lock:
            waiting = self._world is None and self._status.state == WorldStatus.STATE_WAITING
            have_depth = self._latest_depth is not None or not self.get_parameter("use_depth").value
            ready = self._latest_image is not None and have_depth
        if waiting and ready:
            self._start_build(self._latest_inputs)

    def _latest_inputs(self) -> InputFrame:
        """Convert the latest image, depth and camera_info (called in the build worker)."""
        with self._lock:
            image, depth, info = self._latest_image, self._latest_depth, self._latest_info
        if image is None:
            raise WorldBuildError("no image received yet on 'image'")
        return self._to_input_frame(image, depth, info)

    def _to_input_frame(
        self, image: Image | CompressedImage, depth: Image | None, info: CameraInfo | None
    ) -> InputFrame:
        try:
            rgb = (
                compressed_to_rgb(image)
                if isinstance(image, CompressedImage)
                else (image_to_rgb(image))
            )
            depth_m = image_to_depth_m(depth) if depth is not None else None
        except ValueError as err:
            raise WorldBuildError(f"bad input image: {err}") from err
        intrinsics = self._input_intrinsics(info, rgb.shape[1], rgb.shape[0])
        return InputFrame(
            rgb,
            depth_m,
            intrinsics,
            image.header.frame_id,
            rclpy.time.Time.from_msg(image.header.stamp),
        )

    def _input_intrinsics(self, info: CameraInfo | None, width: int, height: int) -> Intrinsics:
        if info is not None and info.width > 0:
            try:
                intrinsics = camera_info_to_intrinsics(info)
            except ValueError as err:
                raise WorldBuildError(f"bad camera_info: {err}") from err
            if (intrinsics.width, intrinsics.height) != (width, height):
                intrinsics = intrinsics.resize(width, height)
            return intrinsics
        if not self._warned_no_info:
            self._warned_no_info = True
            self.get_logger().warning(
                "no camera_info received: using default intrinsics "
                f"(default_fov_deg={self.get_parameter('default_fov_deg').value})"
            )
        fov = math.radians(self.get_parameter("default_fov_deg").value)
        fx = 0.5 * width / math.tan(0.5 * fov)
        return Intrinsics(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)

    # ------------------------------------------------------------------ building

    def _create_build_service(self) -> None:
        """``~/build_world`` answers when its build is done, so it waits; it is served by a
        helper node (``<name>_build``) spun by its own executor thread so that the wait never
        blocks this node's executor (rclpy's MultiThreadedExecutor spins a core, and a
        coroutine callback starves a SingleThreadedExecutor)."""
        self._build_node = rclpy.create_node(f"{self.get_name()}_build", context=self.context)
        self._build_node.create_service(
            BuildWorld, f"{self.get_fully_qualified_name()}/build_world", self._on_build
        )
        self._build_executor = SingleThreadedExecutor(context=self.context)
        self._build_executor.add_node(self._build_node)
        self._build_thread = threading.Thread(
            target=self._spin_build_service, name="lyra_build_service", daemon=True
        )
        self._build_thread.start()

    def _spin_build_service(self) -> None:
        with contextlib.suppress(ExternalShutdownException, rclpy.executors.ShutdownException):
            self._build_executor.spin()

    def _busy(self) -> bool:
        with self._lock:
            return self._status.state == WorldStatus.STATE_BUILDING

    def _start_build(self, make_inputs, options: BuildOptions | None = None) -> Future | None:
        """Start a build in the worker thread (``make_inputs()`` runs there too).

        Returns None, starting nothing, when a build is already running. The state goes to
        BUILDING here and leaves it only when the build has finished, so "busy" answers are
        exact.
        """
        with self._lock:
            if self._status.state == WorldStatus.STATE_BUILDING:
                return None
            self._status.state = WorldStatus.STATE_BUILDING
            future = self._builder.submit(self._build, make_inputs, options or self.options)
        self._publish_status()
        return future

    def _build(self, make_inputs, options: BuildOptions) -> tuple[bool, str]:
        try:
            frame = make_inputs()
            world_from_camera = self._anchor(frame)
            built = self.world_builder.build(
                frame.rgb, frame.depth_m, frame.intrinsics, world_from_camera, options
            )
        except WorldBuildError as err:
            self._fail(str(err))
            return False, str(err)
        except Exception as err:  # never let a build kill the node
            self._fail(f"build failed: {err!r}")
            return False, f"build failed: {err!r}"
        if built.stages:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in built.stages.items())
            self.get_logger().info(f"{built.source} build stages: {stages}")
        self._set_world(built.gaussians.to(self.device), built.source, built.seconds)
        return True, f"built {len(built.gaussians)} Gaussians from {built.source}"

    def _anchor(self, frame: InputFrame) -> np.ndarray:
        """Pose of the input camera in the world frame at the image stamp.

        Falls back to the latest transform when tf has nothing at the stamp, and to the
        identity (with a warning) when the frame is not on tf at all.
        """
        if not frame.frame_id or frame.frame_id == self.world_frame:
            return np.eye(4)
        try:
            return self.tf.lookup_matrix(self.world_frame, frame.frame_id, frame.stamp, 0.5)[0]
        except TfExtrapolationError as err:
            self.get_logger().warning(f"{err}; anchoring the world with the latest transform")
        except TfError:
            pass
        try:
            return self.tf.lookup_matrix(self.world_frame, frame.frame_id)[0]
        except TfError as err:
            self.get_logger().warning(
                f"no tf {self.world_frame} <- {frame.frame_id} ({err}); "
                "anchoring the world at the identity"
            )
            return np.eye(4)

    def _set_world(self, gaussians: Gaussians, source: str, seconds: float) -> None:
        with self._lock:
            self._world = gaussians
            self._status.source = source
            self._status.gaussian_count = len(gaussians)
            self._status.build_seconds = float(seconds)
            self._status.error = ""
        self._set_state(WorldStatus.STATE_READY)
        self._publish_points(gaussians)
        self.get_logger().info(
            f"world ready: {len(gaussians)} Gaussians ({source}, {seconds:.2f} s)"
        )

    def _fail(self, text: str) -> None:
        with self._lock:
            self._status.error = text
            state = WorldStatus.STATE_READY if self._world is not None else WorldStatus.STATE_ERROR
        self._set_state(state)
        self.get_logger().error(text)

    def _set_state(self, state: int) -> None:
        with self._lock:
            self._status.state = state
        self._publish_status()

    def _publish_status(self) -> None:
        with self._lock:
            self._status.header.stamp = self.get_clock().now().to_msg()
            self._status.header.frame_id = self.world_frame
            msg = WorldStatus()
            for field in msg.get_fields_and_field_types():
                setattr(msg, field, getattr(self._status, field))
        self._status_pub.publish(msg)

    def _publish_points(self, gaussians: Gaussians) -> None:
        cap = self.get_parameter("point_cloud_max_points").value
        if cap <= 0:
            return
        keep = torch.randperm(len(gaussians), generator=torch.Generator().manual_seed(0))[:cap]
        means = gaussians.means.detach().cpu()[keep].numpy().astype(np.float32)
        colors = gaussians.colors.detach().cpu()[keep].clamp(0, 1).numpy()
        msg = pointcloud2_from_points(means, colors)
        msg.header.frame_id = self.world_frame
        msg.header.stamp = self.get_clock().now().to_msg()
        self._points_pub.publish(msg)

    # ------------------------------------------------------------------ rendering

    def _render_matrix(self, world_from_camera: np.ndarray, intrinsics: Intrinsics, world):
        """Render one view: rgb (H, W, 3) uint8 and depth (H, W) float32 meters."""
        pose = torch.as_tensor(world_from_camera, dtype=torch.float32)[None]
        cameras = Cameras.from_intrinsics(pose, intrinsics).to(self.device)
        with torch.inference_mode():
            out = render(world, cameras, background=self.background)
        rgb = (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return rgb, out.depth[0, ..., 0].float().cpu().numpy()

    def _render_camera(self, camera: SimCamera, image_pub, info_pub, depth_pub) -> None:
        world = self._world
        if world is None:
            return
        try:
            matrix, stamp = self.tf.lookup_matrix(self.world_frame, camera.frame_id)
        except TfError as err:
            self._warn_throttled(camera.name, f"camera {camera.name}: skipping frame: {err}")
            return
        if not np.isfinite(matrix).all():
            self._warn_throttled(camera.name, f"camera {camera.name}: pose has NaN/inf, skipped")
            return
        start = time.perf_counter()
        try:
            rgb, depth = self._render_matrix(matrix, camera.intrinsics, world)
        except ValueError as err:
            self._warn_throttled(camera.name, f"camera {camera.name}: render failed: {err}")
            return
        camera.stats.add(time.perf_counter() - start)
        if camera.stats.due():
            self.get_logger().info(f"camera {camera.name}: {camera.stats.report()}")
        header = Image().header
        header.stamp = stamp.to_msg()
        header.frame_id = camera.frame_id
        image_pub.publish(numpy_to_image(rgb, "rgb8", header))
        info_pub.publish(intrinsics_to_camera_info(camera.intrinsics, header))
        if depth_pub is not None:
            depth_pub.publish(depth_to_image(depth, header))

    def _warn_throttled(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -math.inf) >= WARN_PERIOD_S:
            self._last_warning[key] = now
            self.get_logger().warning(text)

    # ------------------------------------------------------------------ services

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            if self._status.state == WorldStatus.STATE_BUILDING:
                response.success, response.message = False, "busy: a build is running"
                return response
            self._world = None
            self._status = WorldStatus(
                state=WorldStatus.STATE_WAITING, world_frame=self.world_frame
            )
            self._latest_image = self._latest_depth = None
        self._publish_status()
        response.success, response.message = True, "world dropped; waiting for the next image"
        return response

    def _on_build(self, request: BuildWorld.Request, response: BuildWorld.Response):
        if request.use_latest:
            make_inputs = self._latest_inputs
        else:
            depth = request.depth if request.depth.width > 0 else None
            info = request.camera_info if request.camera_info.width > 0 else None

            def make_inputs() -> InputFrame:
                return self._to_input_frame(request.image, depth, info)

        options = replace(self.options, source=request.source or self.options.source)
        # Runs in the build-service thread (see _create_build_service): waiting here does not
        # stop the node's executor from serving everything else.
        build = self._start_build(make_inputs, options)
        if build is None:
            response.success, response.message = False, "busy: a build is running"
            return response
        success, message = build.result()
        response.success, response.message = success, message
        with self._lock:
            response.gaussian_count = self._status.gaussian_count if success else 0
            response.build_seconds = self._status.build_seconds if success else 0.0
        return response

    def _on_render(self, request: RenderView.Request, response: RenderView.Response):
        world = self._world
        if world is None:
            response.success, response.message = False, "no world yet"
            return response
        try:
            matrix = pose_to_matrix(request.pose)
            intrinsics = camera_info_to_intrinsics(request.camera_info)
            rgb, depth = self._render_matrix(matrix, intrinsics, world)
        except ValueError as err:
            response.success, response.message = False, f"bad request: {err}"
            return response
        header = response.image.header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self.world_frame
        response.image = numpy_to_image(rgb, "rgb8", header)
        response.depth = depth_to_image(depth, header)
        response.success, response.message = True, f"rendered {rgb.shape[1]}x{rgb.shape[0]}"
        return response

    def _on_save(self, request: WorldFile.Request, response: WorldFile.Response):
        world = self._world
        if world is None:
            response.success, response.message = False, "no world to save"
            return response
        try:
            write_ply(request.path, world)
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"save failed: {err}"
            return response
        response.success, response.message = True, f"saved to {request.path}"
        response.gaussian_count = len(world)
        return response

    def _on_load(self, request: WorldFile.Request, response: WorldFile.Response):
        if self._busy():
            response.success, response.message = False, "busy: a build is running"
            return response
        start = time.perf_counter()
        try:
            gaussians = read_ply(request.path)
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"load failed: {err}"
            return response
        self._set_world(gaussians.to(self.device), "ply", time.perf_counter() - start)
        response.success, response.message = True, f"loaded {request.path}"
        response.gaussian_count = len(gaussians)
        return response

    def destroy_node(self) -> None:
        self._build_executor.shutdown(timeout_sec=1.0)
        self._build_thread.join(timeout=5.0)
        self._build_node.destroy_node()
        self._stop.set()
        for thread in self._camera_threads:
            thread.join(timeout=5.0)
        self._builder.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()


def _camera_intrinsics(value: dict) -> Intrinsics:
    width, height = int(value["width"]), int(value["height"])
    fx = float(value["fx"]) or 0.5 * width / math.tan(0.5 * math.radians(value["fov_deg"]))
    fy = float(value["fy"]) or fx
    cx = float(value["cx"]) or (width - 1) / 2
    cy = float(value["cy"]) or (height - 1) / 2
    return Intrinsics(fx, fy, cx, cy, width, height)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown (console script ``lyra-world``).

    ``lyra-world [--config FILE] [--ros-args ...]``: FILE (default: the package's
    config/world.yaml) is passed to ROS as ``--params-file``; ROS arguments follow as usual.
    """
    use_large_data_transport()  # images over 512 KB would leave Fast DDS shared memory
    rclpy.init(args=ros_args_with_config(sys.argv if args is None else args))
    node = None
    try:
        node = WorldNode()
        # One executor thread: long work (rendering, building) runs in the node's own threads.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
