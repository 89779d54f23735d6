"""Transform lookups through the real ``tf2_ros`` (a full ROS 2 install).

:class:`Tf2RosLookup` wraps ``tf2_ros.Buffer`` + ``tf2_ros.TransformListener`` behind the same
interface as the built-in buffer (:class:`lyra_ros.tf.lookup.TransformLookup` picks one):
``4x4`` NumPy matrices out, :class:`~lyra_core.geometry.transform_tree.TfLookupError` /
:class:`~lyra_core.geometry.transform_tree.TfExtrapolationError` raised with the tf2 exception as
the cause.
The message is turned into a matrix by :func:`lyra_ros.conversions.transform_to_matrix`, the
project's one conversion of transform messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lyra_core.geometry.transform_tree import TfExtrapolationError, TfLookupError

if TYPE_CHECKING:
    from rclpy.node import Node
    from rclpy.time import Time

__all__ = ["Tf2RosLookup", "import_tf2_ros"]


def import_tf2_ros() -> Any | None:
    """The ``tf2_ros`` module, or None when it cannot be imported."""
    try:
        import tf2_ros
    except Exception:  # not installed, or a broken install: fall back to TfBuffer
        return None
    return tf2_ros


def _tf2_exceptions(tf2_ros: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes that ``tf2_ros`` exports (missing names are skipped)."""
    found = (getattr(tf2_ros, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException))


class Tf2RosLookup:
    """Lookups in a ``tf2_ros.Buffer`` fed by a ``tf2_ros.TransformListener`` on ``node``.

    Attributes:
        buffer: The ``tf2_ros.Buffer``.
    """

    backend = "tf2_ros"

    def __init__(self, node: Node, tf2_ros: Any, cache_time: float) -> None:
        """Create the buffer (``cache_time`` seconds of history) and its listener on ``node``."""
        from rclpy.duration import Duration

        self._tf2_ros = tf2_ros
        self._clock_type = node.get_clock().clock_type
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time), node=node)
        self._listener = tf2_ros.TransformListener(self.buffer, node)

    def lookup_matrix(
        self, target: str, source: str, time: Time | None, timeout: float
    ) -> tuple[np.ndarray, Time]:
        """``T_target_source`` and its stamp (see ``TransformLookup.lookup_matrix``)."""
        from rclpy.duration import Duration
        from rclpy.time import Time

        from lyra_ros.conversions.transforms import transform_to_matrix

        tf2_ros = self._tf2_ros
        query = Time(clock_type=self._clock_type) if time is None else time
        extrapolation = _tf2_exceptions(tf2_ros, "ExtrapolationException")
        other = _tf2_exceptions(
            tf2_ros, "LookupException", "ConnectivityException", "TransformException"
        )
        try:
            msg = self.buffer.lookup_transform(
                target, source, query, timeout=Duration(seconds=max(timeout, 0.0))
            )
        except extrapolation as exc:
            raise TfExtrapolationError(str(exc)) from exc
        except other as exc:
            raise TfLookupError(str(exc)) from exc
        try:
            matrix = transform_to_matrix(msg.transform)
        except ValueError as exc:
            raise TfLookupError(f'invalid transform "{target}" <- "{source}": {exc}') from exc
        return matrix, Time.from_msg(msg.header.stamp, clock_type=self._clock_type)

    def unregister(self) -> None:
        """Stop listening (the buffer keeps its data)."""
        self._listener.unregister()
