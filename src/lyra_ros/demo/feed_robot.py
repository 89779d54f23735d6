"""The feed demo robot: posed RGB-D frames in, the world node's map grows, views before and after.

Two feeds (``python -m lyra_ros.demo --feed room|stereo``; the world node runs with
``world_source: fusion``):

- ``room``: the robot drives its camera through the procedural room of
  :func:`lyra_core.scene.procedural_room.procedural_room` (panning from the left wall to the
  right one while it moves forward) and publishes what it sees: 320x240 RGB-D images rendered
  from the room, camera_info and the camera's pose on /tf, all at the same stamp. Views of the
  room from poses off the drive are compared with ground-truth renders.
- ``stereo``: the Middlebury 2014 motorcycle pair that scikit-image bundles as two posed RGB-D
  frames: the left view with depth from its ground-truth disparity (as the default demo), then
  the right view 0.193 m to its right. scikit-image ships only the left view's disparity, so the
  right view's depth is derived from it by forward warping: a left pixel ``(u, v)`` of
  disparity ``d`` is the right pixel ``(u - d, v)`` at depth ``f B / (d + doffs)`` (the nearest
  one wins); the right camera's principal point is ``cx + doffs``. Right pixels the left view
  did not see have no depth, so this feed adds little geometry; it shows two cameras' frames
  fusing into one map.

The robot publishes the first frame, waits until the map holds it and has done the refinement
steps it owes, and asks ``~/render_view`` for the view poses ("first frame"); then it publishes
the rest at ``rate`` Hz, waits until the map is idle again and asks for the same views ("after
fusion"). It writes a contact sheet of both (``fusion_<feed>.png``, with ground truth or the
input photos), the saved map (``world_<feed>.ply``) and ``summary_<feed>.json`` to its output
folder (names of their own: the default demo writes to the same folder).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
import torch
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering import render
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.utils.media import contact_sheet, write_png
from lyra_ros.conversions import (
    depth_to_image,
    image_to_depth_m,
    image_to_rgb,
    intrinsics_to_camera_info,
    matrix_to_pose,
    numpy_to_image,
)
from lyra_ros.demo.demo_robot import (
    MOTORCYCLE_BASELINE_M,
    MOTORCYCLE_DOFFS_PX,
    WORLD_FRAME,
    input_camera_pose,
    motorcycle_frame,
    robot_path,
    transform_msg,
)
from lyra_ros.msg import WorldStatus
from lyra_ros.qos import LATCHED_QOS
from lyra_ros.srv import RenderView, WorldFile

__all__ = ["FEEDS", "Feed", "FeedFrame", "room_feed", "run_feed", "stereo_feed"]

FEEDS = ("room", "stereo")
ROOM_SIZE = (320, 240)
ROOM_FOV_X_DEG = 70.0
ROOM_GAUSSIANS = 100_000


@dataclass
class FeedFrame:
    """One posed RGB-D frame of a feed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32 meters, 0 = unknown
    intrinsics: Intrinsics
    pose: np.ndarray  # (4, 4) map <- camera optical frame
    frame_id: str


@dataclass
class Feed:
    """Frames to publish and views to compare before and after fusion.

    Attributes:
        truth: ground truth at the view poses, or None (then ``inputs`` head the sheet).
        inputs: images shown in the sheet's first row when there is no ground truth.
    """

    name: str
    frames: list[FeedFrame]
    view_poses: list[np.ndarray]
    view_intrinsics: Intrinsics
    truth: list[np.ndarray] | None
    inputs: list[np.ndarray]
    rate: float


def _room_render(scene, pose: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    cameras = Cameras.from_intrinsics(torch.as_tensor(pose, dtype=torch.float32)[None], intrinsics)
    with torch.inference_mode():
        out = render(scene, cameras)
    rgb = (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return rgb, out.depth[0, ..., 0].float().numpy()


def room_drive(num_frames: int) -> list[np.ndarray]:
    """Camera poses of the room drive: forward from the open side while panning left to right."""
    poses = []
    for t in np.linspace(0.0, 1.0, num_frames):
        eye = (-0.6 + 1.2 * t, -2.4 + 0.8 * t, 1.3)
        target = (-2.6 + 5.2 * t, 1.8, 0.8)
        poses.append(look_at(eye, target, up=(0, 0, 1)).double().numpy())
    return poses


def room_views() -> list[np.ndarray]:
    """Poses off the drive: 0.3 m right of it, 0.2 m lower, looking a little further on."""
    views = []
    for t in (0.2, 0.45, 0.7, 0.95):
        eye = (-0.6 + 1.2 * t + 0.3, -2.4 + 0.8 * t, 1.1)
        target = (-2.6 + 5.2 * min(t + 0.1, 1.0), 1.8, 0.8)
        views.append(look_at(eye, target, up=(0, 0, 1)).double().numpy())
    return views


def room_feed(num_frames: int = 24, rate: float = 2.0) -> Feed:
    """The procedural room feed (see the module docstring)."""
    width, height = ROOM_SIZE
    fx = 0.5 * width / math.tan(0.5 * math.radians(ROOM_FOV_X_DEG))
    intrinsics = Intrinsics(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)
    scene = procedural_room(ROOM_GAUSSIANS, seed=0)
    frames = []
    for pose in room_drive(num_frames):
        rgb, depth = _room_render(scene, pose, intrinsics)
        frames.append(FeedFrame(rgb, depth, intrinsics, pose, "camera_optical_frame"))
    views = room_views()
    truth = [_room_render(scene, pose, intrinsics)[0] for pose in views]
    return Feed("room", frames, views, intrinsics, truth, [], rate)


def right_view_depth(disparity: np.ndarray, focal: float, baseline: float, doffs: float):
    """The right view's depth (meters, 0 = unknown) from the left view's disparity (pixels).

    Each valid left pixel ``(u, v)`` lands on the right pixel ``(round(u - d), v)`` at depth
    ``focal * baseline / (d + doffs)``; where several land on one pixel the nearest wins.
    """
    height, width = disparity.shape
    rows, cols = np.nonzero(np.isfinite(disparity) & (disparity > 0))
    d = disparity[rows, cols]
    depth = focal * baseline / (d + doffs)
    target = np.round(cols - d).astype(int)
    inside = (target >= 0) & (target < width)
    rows, target, depth = rows[inside], target[inside], depth[inside]
    out = np.full((height, width), np.inf, np.float32)
    np.minimum.at(out, (rows, target), depth.astype(np.float32))
    out[~np.isfinite(out)] = 0.0
    return out


def stereo_feed(rate: float = 1.0, num_views: int = 5) -> Feed:
    """The Middlebury motorcycle pair as two posed RGB-D frames (see the module docstring)."""
    from skimage import data

    left = motorcycle_frame()
    _, right_rgb, disparity = data.stereo_motorcycle()
    k = left.intrinsics
    right_depth = right_view_depth(disparity, k.fx, MOTORCYCLE_BASELINE_M, MOTORCYCLE_DOFFS_PX)
    right_k = Intrinsics(k.fx, k.fy, k.cx + MOTORCYCLE_DOFFS_PX, k.cy, k.width, k.height)
    left_pose = input_camera_pose()
    right_pose = left_pose.copy()
    right_pose[:3, 3] += MOTORCYCLE_BASELINE_M * left_pose[:3, 0]  # along the camera's x
    frames = [
        FeedFrame(left.rgb, left.depth_m, k, left_pose, "camera_optical_frame"),
        FeedFrame(right_rgb, right_depth, right_k, right_pose, "camera_right_optical_frame"),
    ]
    valid = left.depth_m[left.depth_m > 0]
    path = robot_path(left_pose, float(np.median(valid)), 40)
    picks = np.linspace(0, len(path) - 1, num_views + 2).round().astype(int)[1:-1]
    width, height = 320, 216
    fx = k.fx * width / k.width
    view_k = Intrinsics(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height)
    inputs = [cv2.resize(image, (width, height)) for image in (left.rgb, right_rgb)]
    return Feed("stereo", frames, [path[i] for i in picks], view_k, None, inputs, rate)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


class FeedRobot(Node):
    """Publishes a feed's posed frames and asks the world node for views of its map."""

    def __init__(self, feed: Feed) -> None:
        super().__init__("demo_feed_robot")
        self.feed = feed
        self.status: WorldStatus | None = None
        self.image_pub = self.create_publisher(Image, "camera/image", 10)
        self.depth_pub = self.create_publisher(Image, "camera/depth", 10)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", 10)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.create_subscription(WorldStatus, "/lyra_world/status", self._on_status, LATCHED_QOS)
        self.render_client = self.create_client(RenderView, "/lyra_world/render_view")
        self.save_client = self.create_client(WorldFile, "/lyra_world/save_world")

    def _on_status(self, msg: WorldStatus) -> None:
        self.status = msg

    def spin_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.05)
            if predicate():
                return
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def publish(self, frame: FeedFrame) -> None:
        """The frame's pose on /tf, then camera_info, depth and image, all at one stamp."""
        stamp = self.get_clock().now().to_msg()
        self.tf_pub.publish(
            TFMessage(transforms=[transform_msg(WORLD_FRAME, frame.frame_id, frame.pose, stamp)])
        )
        header = Image().header
        header.stamp, header.frame_id = stamp, frame.frame_id
        self.info_pub.publish(intrinsics_to_camera_info(frame.intrinsics, header))
        self.depth_pub.publish(depth_to_image(frame.depth_m, header))
        self.image_pub.publish(numpy_to_image(frame.rgb, "rgb8", header))

    def wait_idle(self, frames: int, timeout: float) -> WorldStatus:
        """Until ``frames`` frames were handled (integrated, skipped or dropped) and the map owes
        no refinement steps."""

        def settled() -> bool:
            s = self.status
            handled = s is not None and (
                s.frames_integrated + s.frames_skipped + s.frames_dropped >= frames
            )
            return handled and s.refine_steps_owed == 0

        self.spin_until(settled, timeout, f"the map to take {frames} frame(s) and settle")
        return self.status

    def views(self, timeout: float = 60.0) -> list[tuple[np.ndarray, float]]:
        """The served world at the feed's view poses: (rgb, share of pixels covered) each."""
        if not self.render_client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("render_view service not available")
        out = []
        info = intrinsics_to_camera_info(self.feed.view_intrinsics)
        for pose in self.feed.view_poses:
            request = RenderView.Request(pose=matrix_to_pose(pose), camera_info=info)
            future = self.render_client.call_async(request)
            self.spin_until(future.done, timeout, "render_view")
            response = future.result()
            if not response.success:
                raise RuntimeError(f"render_view failed: {response.message}")
            coverage = float((image_to_depth_m(response.depth) > 0).mean())
            out.append((image_to_rgb(response.image), coverage))
        return out

    def save_world(self, name: str, timeout: float = 60.0) -> str:
        """Ask the world node to save its map as ``name`` inside its ``world_dir``."""
        if not self.save_client.wait_for_service(timeout_sec=timeout):
            return "save_world service not available"
        future = self.save_client.call_async(WorldFile.Request(path=name))
        self.spin_until(future.done, timeout, "save_world")
        return future.result().message


def status_summary(status: WorldStatus) -> dict:
    """The mapping fields of a ``WorldStatus`` as a JSON-ready dict (NaN loss -> None)."""
    loss = float(status.last_loss)
    return {
        "gaussians": status.gaussian_count,
        "keyframes": status.keyframes,
        "refine_steps": status.refine_steps,
        "last_loss": round(loss, 4) if math.isfinite(loss) else None,
        "frames_integrated": status.frames_integrated,
        "frames_skipped": status.frames_skipped,
        "frames_dropped": status.frames_dropped,
    }


def _view_summary(views, truth) -> list[dict]:
    rows = []
    for i, (rgb, coverage) in enumerate(views):
        row = {"coverage": round(coverage, 3)}
        if truth is not None:
            row["psnr_db"] = round(_psnr(rgb, truth[i]), 2)
        rows.append(row)
    return rows


def run_feed(out_dir: Path, feed: Feed, timeout: float = 300.0) -> dict:
    """Drive the feed against a running world node (``world_source: fusion``; rclpy must be
    initialised) and write the outputs (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    robot = FeedRobot(feed)
    try:
        robot.spin_until(
            lambda: robot.status is not None and robot.depth_pub.get_subscription_count() > 0,
            timeout,
            "the world node",
        )
        if not robot.status.mapping:
            raise RuntimeError("the world node does not map its feed (world_source fusion?)")
        robot.publish(feed.frames[0])
        first_status = robot.wait_idle(1, timeout)
        robot.get_logger().info(
            f"first frame: {first_status.gaussian_count} Gaussians; driving the feed"
        )
        before = robot.views()
        for frame in feed.frames[1:]:
            end = time.monotonic() + 1.0 / feed.rate
            while time.monotonic() < end:
                rclpy.spin_once(robot, timeout_sec=0.02)
            robot.publish(frame)
        final_status = robot.wait_idle(len(feed.frames), timeout)
        after = robot.views()
        ply = out_dir / f"world_{feed.name}.ply"
        message = robot.save_world(ply.name)  # inside the node's world_dir: out_dir
    finally:
        robot.destroy_node()
    first = feed.truth if feed.truth is not None else feed.inputs
    labels = ["ground truth" if feed.truth is not None else "input frames"]
    sheet = contact_sheet(
        [first, [rgb for rgb, _ in before], [rgb for rgb, _ in after]],
        [*labels, "served: first frame", f"served: after {len(feed.frames)} frames"],
    )
    sheet_path = write_png(out_dir / f"fusion_{feed.name}.png", sheet)
    summary = {
        "feed": feed.name,
        "frames_published": len(feed.frames),
        "first_frame": {
            "status": status_summary(first_status),
            "views": _view_summary(before, feed.truth),
        },
        "after_fusion": {
            "status": status_summary(final_status),
            "views": _view_summary(after, feed.truth),
        },
        "save_world": message,
        "seconds": round(time.monotonic() - started, 1),
        "outputs": {"contact_sheet": str(sheet_path), "world_ply": str(ply)},
    }
    (out_dir / f"summary_{feed.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
