"""Publish a small tf tree over DDS for the real-middleware test in test_tf_buffer.py.

Run as a separate process (``python test/tf_publisher.py``); it stops on SIGINT/SIGTERM or after
``MAX_LIFETIME`` seconds, whichever comes first. It publishes:

* ``/tf_static`` once (transient local, like tf2_ros' static broadcaster): ``map -> base_link``,
  :data:`MAP_BASE_TRANSLATION` and a 90 degree yaw;
* ``/tf`` every :data:`PUBLISH_PERIOD` seconds: ``base_link -> camera`` with synthetic stamps
  ``START + k * STAMP_STEP`` and the camera moving along base_link x at :data:`SPEED`, with the
  optical rotation :data:`CAMERA_QUAT`.

The test computes the expected ``T_map_camera`` with :func:`expected_map_camera`. Importing this
module does not import rclpy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

START = 1000.0
"""Stamp of the first camera sample, seconds."""

STAMP_STEP = 0.1
"""Stamp increment between camera samples, seconds."""

PUBLISH_PERIOD = 0.05
"""Wall time between two /tf messages, seconds."""

SPEED = 0.5
"""Camera speed along base_link x, meters per second of stamp time."""

MAX_LIFETIME = 30.0
"""The publisher exits by itself after this many wall seconds."""

MAP_BASE_TRANSLATION = (1.0, 2.0, 0.0)
"""base_link origin in map, meters."""

MAP_BASE_QUAT = (0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))
"""base_link orientation in map: 90 degrees about z, (x, y, z, w)."""

CAMERA_HEIGHT = 0.5
"""camera origin height above base_link, meters."""

CAMERA_QUAT = (-0.5, 0.5, -0.5, 0.5)
"""camera (optical frame: x right, y down, z forward) orientation in base_link, (x, y, z, w)."""


def camera_x(stamp: float) -> float:
    """Camera x in base_link at ``stamp`` seconds, meters."""
    return SPEED * (stamp - START)


def _pose(translation: tuple[float, ...], quat: tuple[float, ...]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat).as_matrix()
    T[:3, 3] = translation
    return T


def expected_map_camera(stamp: float) -> np.ndarray:
    """``T_map_camera`` at ``stamp`` seconds (the motion is linear, so interpolation is exact)."""
    T_map_base = _pose(MAP_BASE_TRANSLATION, MAP_BASE_QUAT)
    T_base_camera = _pose((camera_x(stamp), 0.0, CAMERA_HEIGHT), CAMERA_QUAT)
    return T_map_base @ T_base_camera


def main() -> None:
    """Publish until interrupted or :data:`MAX_LIFETIME` runs out."""
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    def transform(
        parent: str, child: str, stamp: float, t: tuple[float, ...], q: tuple[float, ...]
    ) -> TransformStamped:
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = parent, child
        sec = math.floor(stamp)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, round((stamp - sec) * 1e9)
        tr, rot = msg.transform.translation, msg.transform.rotation
        tr.x, tr.y, tr.z = t
        rot.x, rot.y, rot.z, rot.w = q
        return msg

    rclpy.init()
    node = rclpy.create_node("lyra_test_tf_publisher")
    static_qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    static_pub = node.create_publisher(TFMessage, "/tf_static", static_qos)
    tf_pub = node.create_publisher(TFMessage, "/tf", 100)
    static_pub.publish(
        TFMessage(
            transforms=[transform("map", "base_link", 0.0, MAP_BASE_TRANSLATION, MAP_BASE_QUAT)]
        )
    )
    count = [0]

    def publish_camera() -> None:
        stamp = START + count[0] * STAMP_STEP
        count[0] += 1
        pose = transform(
            "base_link", "camera", stamp, (camera_x(stamp), 0.0, CAMERA_HEIGHT), CAMERA_QUAT
        )
        tf_pub.publish(TFMessage(transforms=[pose]))

    node.create_timer(PUBLISH_PERIOD, publish_camera)
    node.create_timer(MAX_LIFETIME, lambda: rclpy.try_shutdown())
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
