"""Simulated cameras: render the world at a tf frame's pose at a fixed rate and publish it.

Each :class:`SimCamera` runs in its own thread (:class:`SimCameraThread`): look up
``world_frame -> frame_id`` on tf (the newest pose), render the world as it is at that pose's
stamp (a 4D world: the world time playback gives that stamp; a static-only tf path, stamp 0: the
node clock now), publish ``<topic>`` (rgb8), ``<topic dir>/camera_info`` and optionally
``<topic dir>/depth`` (32FC1, meters), all stamped with the stamp of the pose rendered. Late
frames are dropped, not queued. Rendering runs outside the executor: an executor thread busy for
~100 ms per frame would delay tf, images and services.

The rate is kept on the node's clock: wall time normally; with ``use_sim_time`` the simulation's
``/clock``, so a camera renders ``rate`` frames per simulated second, faster or slower than real
time, and none while the clock stands still (or before the first ``/clock`` message, warned).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.scene.gaussians import Gaussians
from lyra_ros.conversions import depth_to_image, intrinsics_to_camera_info, numpy_to_image
from lyra_ros.tf import TfError, TransformLookup

__all__ = ["RenderStats", "SimCamera", "SimCameraThread", "sibling_topic"]

WARN_PERIOD_S = 5.0
"""Seconds between two warnings of one camera (skipped frames repeat at the camera rate)."""

SIM_TIME_POLL_S = 0.01
"""Wall seconds between two reads of a simulated clock that has not reached the next frame."""

RenderFn = Callable[[Gaussians, np.ndarray, Intrinsics, Time], tuple[np.ndarray, np.ndarray] | None]
"""``render(world, world_from_camera, intrinsics, stamp)``: rgb (H, W, 3) uint8 and depth (H, W)
float32 meters of the world as it is at ROS time ``stamp`` (zero: now); None when there is
nothing to show at that time (a 4D world played ``once`` is over), the frame is then skipped
without a warning."""


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


def sibling_topic(topic: str, leaf: str) -> str:
    """``sim/front/image`` -> ``sim/front/<leaf>``."""
    head, _, _ = topic.rpartition("/")
    return f"{head}/{leaf}" if head else leaf


class SimCameraThread:
    """Renders one :class:`SimCamera` at its rate in its own thread and publishes the views.

    Args:
        node: Node that owns the publishers (created here) and the logger.
        camera: The camera.
        world_frame: Fixed frame the camera pose is looked up in.
        tf: Transform lookups.
        world: Returns the current world, None while there is none (nothing is rendered then).
        render: Renders a view, see :data:`RenderFn`.
    """

    def __init__(
        self,
        node: Node,
        camera: SimCamera,
        world_frame: str,
        tf: TransformLookup,
        world: Callable[[], Gaussians | None],
        render: RenderFn,
    ) -> None:
        self.camera = camera
        self._node = node
        self._world_frame = world_frame
        self._tf = tf
        self._world = world
        self._render = render
        self._image_pub = node.create_publisher(Image, camera.topic, 1)
        self._info_pub = node.create_publisher(
            CameraInfo, sibling_topic(camera.topic, "camera_info"), 1
        )
        self._depth_pub = (
            node.create_publisher(Image, sibling_topic(camera.topic, "depth"), 1)
            if camera.publish_depth
            else None
        )
        self._last_warning = -math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"lyra_camera_{camera.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait (at most ``timeout`` s); False if it still runs."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        """Render at the camera's rate on the node's clock; a late frame starts the next one at
        once."""
        period = 1.0 / self.camera.rate
        clock = self._node.get_clock()
        next_wall = time.monotonic()
        next_sim: int | None = None  # ROS time (ns) of the next frame on a simulated clock
        while not self._stop.is_set():
            if getattr(clock, "ros_time_is_active", False):  # use_sim_time: follow /clock
                now = clock.now().nanoseconds
                if now == 0:
                    self._warn("use_sim_time is true and no /clock has arrived: waiting for it")
                elif next_sim is None or now >= next_sim or now < next_sim - 2e9 * period:
                    # due, or the clock jumped back (a restarted simulation, a looped bag)
                    self._render_guarded()
                    next_sim = now + round(period * 1e9)
                    next_wall = time.monotonic()
                    continue
                self._stop.wait(SIM_TIME_POLL_S)
                continue
            next_sim = None
            self._render_guarded()
            next_wall += period
            delay = next_wall - time.monotonic()
            if delay < 0:
                next_wall, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def _render_guarded(self) -> None:
        try:
            self.render_once()
        except Exception as err:  # a camera thread must outlive any single frame
            if not self._node.context.ok():  # shutting down: the publishers are gone
                self._stop.set()
                return
            self._warn(f"{err!r}")

    def render_once(self) -> bool:
        """Render and publish one frame at the newest pose, as the world is at the pose's
        stamp; False when skipped."""
        camera = self.camera
        world = self._world()
        if world is None:
            return False
        try:
            matrix, stamp = self._tf.lookup_matrix(self._world_frame, camera.frame_id)
        except TfError as err:
            self._warn(f"skipping frame: {err}")
            return False
        if not np.isfinite(matrix).all():
            self._warn("pose has NaN/inf, skipped")
            return False
        start = time.perf_counter()
        try:
            rendered = self._render(world, matrix, camera.intrinsics, stamp)
        except ValueError as err:
            self._warn(f"render failed: {err}")
            return False
        if rendered is None:
            return False
        rgb, depth = rendered
        camera.stats.add(time.perf_counter() - start)
        if camera.stats.due():
            self._node.get_logger().info(f"camera {camera.name}: {camera.stats.report()}")
        header = Image().header
        header.stamp = stamp.to_msg()
        header.frame_id = camera.frame_id
        self._image_pub.publish(numpy_to_image(rgb, "rgb8", header))
        self._info_pub.publish(intrinsics_to_camera_info(camera.intrinsics, header))
        if self._depth_pub is not None:
            self._depth_pub.publish(depth_to_image(depth, header))
        return True

    def _warn(self, text: str) -> None:
        """Log ``camera <name>: <text>`` at most every :data:`WARN_PERIOD_S` seconds."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_PERIOD_S:
            self._last_warning = now
            self._node.get_logger().warning(f"camera {self.camera.name}: {text}")
