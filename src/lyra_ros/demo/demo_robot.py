"""The demo robot: a real RGB-D camera feed in, a drive along a path on tf, its simulated view out.

It publishes the Middlebury 2014 "motorcycle" stereo frame that scikit-image bundles (left image,
depth from the ground-truth disparity and the published calibration) as a camera feed with
camera_info, waits until the world node reports a world, then drives its camera frame along a
smooth path on /tf while recording the images the world node renders for that frame. At the end
it asks the world node to save the world and writes a contact sheet, a GIF (and MP4) and a JSON
summary to its output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
import torch
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import waypoint_trajectory
from lyra_core.geometry.transforms import body_pose_to_optical, look_at
from lyra_core.utils.media import contact_sheet, write_gif, write_mp4, write_png
from lyra_ros.conversions import (
    depth_to_image,
    image_to_rgb,
    intrinsics_to_camera_info,
    matrix_to_transform,
    numpy_to_image,
)
from lyra_ros.msg import WorldStatus
from lyra_ros.qos import LATCHED_QOS, TF_STATIC_QOS
from lyra_ros.srv import WorldFile

# Calibration of skimage.data.stereo_motorcycle() (4x down-sampled Middlebury 2014 frame).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_PRINCIPAL_POINT = (311.193, 254.877)
MOTORCYCLE_DOFFS_PX = 31.086
MOTORCYCLE_BASELINE_M = 0.193001

INPUT_FRAME = "camera_optical_frame"
ROBOT_FRAME = "robot/camera_optical_frame"
WORLD_FRAME = "map"
CAMERA_HEIGHT_M = 1.0


@dataclass
class RgbdFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32, 0 = invalid
    intrinsics: Intrinsics


def motorcycle_frame() -> RgbdFrame:
    """The left Middlebury motorcycle image with metric depth from its true disparity."""
    from skimage import data

    left, _, disparity = data.stereo_motorcycle()
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_M / (disparity + MOTORCYCLE_DOFFS_PX)
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    height, width = depth.shape
    cx, cy = MOTORCYCLE_PRINCIPAL_POINT
    f = MOTORCYCLE_FOCAL_PX
    return RgbdFrame(left, depth, Intrinsics(f, f, cx, cy, width, height))


def input_camera_pose() -> np.ndarray:
    """map <- camera_optical_frame: the camera 1 m above the origin looking along map +x."""
    body = torch.eye(4, dtype=torch.float64)
    body[2, 3] = CAMERA_HEIGHT_M
    return body_pose_to_optical(body).numpy()


def robot_path(input_pose: np.ndarray, scene_depth: float, num_frames: int) -> np.ndarray:
    """(N, 4, 4) poses of the robot camera in map: a sweep left, forward-right, and back.

    Center-facing: every waypoint looks at the point ``scene_depth`` ahead of the input camera.
    """
    pose = torch.as_tensor(input_pose, dtype=torch.float64)
    right, down, forward = pose[:3, 0], pose[:3, 1], pose[:3, 2]
    centre, target = pose[:3, 3], pose[:3, 3] + scene_depth * forward
    offsets = [(-0.35, -0.05, 0.25), (0.0, -0.1, 0.6), (0.35, 0.0, 0.3)]  # right, down, forward
    waypoints = [pose]
    for r, d, f in offsets:
        eye = centre + r * right + d * down + f * forward
        waypoints.append(look_at(eye, target, up=-down))
    waypoints.append(pose)
    return waypoint_trajectory(torch.stack(waypoints), num_frames).numpy()


def transform_msg(parent: str, child: str, matrix: np.ndarray, stamp) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id = parent
    msg.header.stamp = stamp
    msg.child_frame_id = child
    msg.transform = matrix_to_transform(matrix)
    return msg


class DemoRobot(Node):
    """Publishes the RGB-D feed and tf, drives the path, records the simulated view."""

    def __init__(self, out_dir: Path, path_seconds: float = 8.0, tf_rate: float = 20.0) -> None:
        super().__init__("demo_robot")
        self.out_dir = out_dir
        self.frame = motorcycle_frame()
        self.input_pose = input_camera_pose()
        valid = self.frame.depth_m[self.frame.depth_m > 0]
        self.path = robot_path(
            self.input_pose, float(np.median(valid)), int(path_seconds * tf_rate)
        )
        self.tf_rate = tf_rate
        self.recorded: list[tuple[float, np.ndarray]] = []
        self.world_ready = False
        self.step = -1

        self.image_pub = self.create_publisher(Image, "camera/image", 1)
        self.depth_pub = self.create_publisher(Image, "camera/depth", 1)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", 1)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.create_subscription(WorldStatus, "/lyra_world/status", self._on_status, LATCHED_QOS)
        self.create_subscription(Image, "sim/robot/image", self._on_view, 10)
        self.save_client = self.create_client(WorldFile, "/lyra_world/save_world")

        stamp = self.get_clock().now().to_msg()
        self.tf_static_pub.publish(
            TFMessage(transforms=[transform_msg(WORLD_FRAME, INPUT_FRAME, self.input_pose, stamp)])
        )
        self.create_timer(0.5, self._publish_feed)
        self.create_timer(1.0 / tf_rate, self._drive)

    def _publish_feed(self) -> None:
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = INPUT_FRAME
        self.image_pub.publish(numpy_to_image(self.frame.rgb, "rgb8", header))
        self.depth_pub.publish(depth_to_image(self.frame.depth_m, header))
        self.info_pub.publish(intrinsics_to_camera_info(self.frame.intrinsics, header))

    def _on_status(self, msg: WorldStatus) -> None:
        if msg.state == WorldStatus.STATE_READY and not self.world_ready:
            self.world_ready = True
            self.get_logger().info(f"world ready ({msg.gaussian_count} Gaussians): driving")

    def _drive(self) -> None:
        """Publish the robot camera pose: the input pose until the world is ready, then the path."""
        if self.world_ready and self.step < len(self.path) - 1:
            self.step += 1
        pose = self.path[max(self.step, 0)]
        stamp = self.get_clock().now().to_msg()
        self.tf_pub.publish(
            TFMessage(transforms=[transform_msg(WORLD_FRAME, ROBOT_FRAME, pose, stamp)])
        )

    def _on_view(self, msg: Image) -> None:
        if self.world_ready and self.step >= 0:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            self.recorded.append((stamp, image_to_rgb(msg)))

    @property
    def finished(self) -> bool:
        return self.step >= len(self.path) - 1

    def save_world(self, name: str, timeout: float = 30.0) -> str:
        """Ask the world node to save its world as ``name`` inside its ``world_dir``."""
        if not self.save_client.wait_for_service(timeout_sec=timeout):
            return "save_world service not available"
        future = self.save_client.call_async(WorldFile.Request(path=name))
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
        result = future.result()
        return result.message if result is not None else "save_world timed out"

    def write_outputs(self, world_message: str, started: float) -> dict:
        frames = [rgb for _, rgb in sorted(self.recorded, key=lambda item: item[0])]
        if not frames:
            raise RuntimeError("no rendered frames were received from the world node")
        height, width = frames[0].shape[:2]
        columns = np.linspace(0, len(frames) - 1, num=min(10, len(frames))).round().astype(int)
        views = [frames[i] for i in columns]
        half = (len(views) + 1) // 2
        rows = [[cv2.resize(self.frame.rgb, (width, height)), *views[:half]], views[half:]]
        sheet = contact_sheet(rows, ["input photo", ""])
        outputs = {
            "world_ply": str(self.out_dir / "world.ply"),
            "contact_sheet": str(write_png(self.out_dir / "robot_views.png", sheet)),
            "gif": str(write_gif(self.out_dir / "robot_views.gif", frames, fps=10)),
        }
        try:
            outputs["mp4"] = str(write_mp4(self.out_dir / "robot_views.mp4", frames, fps=10))
        except RuntimeError as err:
            self.get_logger().warning(f"no MP4: {err}")
        summary = {
            "frames_received": len(frames),
            "path_poses": len(self.path),
            "save_world": world_message,
            "seconds": round(time.monotonic() - started, 1),
            "outputs": outputs,
        }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def run(out_dir: Path, timeout: float = 150.0, path_seconds: float = 8.0) -> dict:
    """Run the robot until its path is done (rclpy must be initialised)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    robot = DemoRobot(out_dir, path_seconds=path_seconds)
    try:
        deadline = started + timeout
        while rclpy.ok() and not robot.finished and time.monotonic() < deadline:
            rclpy.spin_once(robot, timeout_sec=0.05)
        if not robot.finished:
            state = "never became ready" if not robot.world_ready else "did not finish"
            raise RuntimeError(f"the demo {state} within {timeout:.0f} s")
        end = time.monotonic() + 1.0  # frames still in flight
        while time.monotonic() < end:
            rclpy.spin_once(robot, timeout_sec=0.05)
        message = robot.save_world("world.ply")  # inside the node's world_dir
        return robot.write_outputs(message, started)
    finally:
        robot.destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``lyra-demo-robot [--out DIR]`` (the world node must be running)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ros_demo"))
    parser.add_argument("--timeout", type=float, default=150.0)
    parser.add_argument("--path-seconds", type=float, default=8.0)
    known, ros_args = parser.parse_known_args(args)
    rclpy.init(args=ros_args)
    try:
        print(json.dumps(run(known.out, known.timeout, known.path_seconds), indent=2))
    except KeyboardInterrupt:
        return 130
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0
