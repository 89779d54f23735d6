"""Feeding a :class:`~lyra_core.geometry.transform_tree.TfBuffer` from ``/tf`` and ``/tf_static``.

:class:`StampConverter` turns ROS stamps (integer nanoseconds) into the buffer's float seconds,
counted from an epoch near the first stamp so that stamps survive the round trip to the
nanosecond (absolute seconds since 1970 would resolve only ~0.2 microseconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lyra_core.geometry.transform_tree import TfBuffer

if TYPE_CHECKING:
    from geometry_msgs.msg import TransformStamped
    from rclpy.node import Node
    from tf2_msgs.msg import TFMessage

__all__ = ["StampConverter", "TfListener"]


class StampConverter:
    """ROS times (integer nanoseconds) <-> the float seconds :class:`TfBuffer` works in.

    ``epoch="first"`` measures seconds from the whole second before the first time converted:
    float64 seconds since 1970 resolve only ~0.2 us, seconds from a nearby epoch keep every
    nanosecond, so a stamp read back from the buffer equals the stamp that went in (images are
    stamped with the tf stamp they were rendered at). ``epoch=0`` gives absolute seconds.
    """

    def __init__(self, epoch: int | str = 0) -> None:
        self._epoch_ns: int | None = None if epoch == "first" else int(epoch)

    def to_seconds(self, nanoseconds: int) -> float:
        if self._epoch_ns is None:
            self._epoch_ns = nanoseconds - nanoseconds % 1_000_000_000
        return (nanoseconds - self._epoch_ns) * 1e-9

    def to_nanoseconds(self, seconds: float) -> int:
        return (self._epoch_ns or 0) + round(seconds * 1e9)


class TfListener:
    """Feeds a :class:`TfBuffer` from ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``).

    QoS as tf2_ros: ``/tf`` reliable, volatile, depth 100; ``/tf_static`` reliable, transient
    local, depth 100 (late joiners still get the static transforms). Malformed transforms (NaN,
    zero quaternion, empty frame ids, loops) are skipped with a throttled warning; the callbacks
    never raise. Callbacks run in a reentrant group, so a multi-threaded executor keeps feeding
    the buffer while another callback waits on a lookup.
    """

    def __init__(
        self,
        node: Node,
        buffer: TfBuffer,
        *,
        tf_topic: str = "/tf",
        tf_static_topic: str = "/tf_static",
        warn_period: float = 5.0,
        stamps: StampConverter | None = None,
    ) -> None:
        """Create both subscriptions on ``node``.

        Args:
            node: The rclpy node to subscribe with.
            buffer: The buffer to fill.
            tf_topic: Topic of dynamic transforms.
            tf_static_topic: Topic of static transforms.
            warn_period: Minimum time between two warnings about rejected transforms, seconds.
            stamps: How message stamps become buffer seconds; default absolute seconds.
        """
        self._stamps = stamps or StampConverter()
        from rclpy.callback_groups import ReentrantCallbackGroup
        from tf2_msgs.msg import TFMessage

        from lyra_ros.qos import TF_QOS, TF_STATIC_QOS

        self.buffer = buffer
        self.num_rejected = 0
        """Transforms skipped as malformed since creation."""
        self._node = node
        self._warn_period = warn_period
        group = ReentrantCallbackGroup()
        self._subscriptions = [
            node.create_subscription(
                TFMessage,
                tf_topic,
                self._on_tf,
                TF_QOS,
                callback_group=group,
            ),
            node.create_subscription(
                TFMessage,
                tf_static_topic,
                self._on_tf_static,
                TF_STATIC_QOS,
                callback_group=group,
            ),
        ]

    def _on_tf(self, msg: TFMessage) -> None:
        self._ingest(msg, static=False)

    def _on_tf_static(self, msg: TFMessage) -> None:
        self._ingest(msg, static=True)

    def _ingest(self, msg: TFMessage, static: bool) -> None:
        """Store every transform of ``msg``; count and warn about the ones rejected."""
        for tf in msg.transforms:
            try:
                self._store(tf, static)
            except Exception as exc:  # a bad sample must never take the node down
                self.num_rejected += 1
                self._node.get_logger().warning(
                    f"ignoring transform ({self.num_rejected} so far): {exc}",
                    throttle_duration_sec=self._warn_period,
                )

    def _store(self, tf: TransformStamped, static: bool) -> None:
        """Validate one ``TransformStamped`` and put it into the buffer."""
        tr, rot = tf.transform.translation, tf.transform.rotation
        self.buffer.set_transform(
            tf.header.frame_id,
            tf.child_frame_id,
            self._stamps.to_seconds(tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec),
            (tr.x, tr.y, tr.z),
            (rot.x, rot.y, rot.z, rot.w),
            static=static,
        )

    def unregister(self) -> None:
        """Destroy both subscriptions (the buffer keeps its data)."""
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []
