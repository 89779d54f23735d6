"""What the node uses for tf: ``tf2_ros`` where installed, the built-in buffer otherwise.

:class:`TransformLookup` answers one question, "where is frame ``source`` in frame ``target``
at time ``t``?", as a ``4x4`` NumPy matrix and the ``rclpy.time.Time`` it holds for, whichever
backend answers: ``"tf2_ros"`` (:class:`~lyra_ros.tf.tf2_adapter.Tf2RosLookup`) when
``import tf2_ros`` works, ``"lyra"`` (:class:`~lyra_core.geometry.transform_tree.TfBuffer` fed by a
:class:`~lyra_ros.tf.listener.TfListener`) otherwise.
"""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING

import numpy as np

from lyra_core.geometry.transform_tree import DEFAULT_CACHE_TIME, TfBuffer, TfError
from lyra_ros.tf.listener import StampConverter, TfListener
from lyra_ros.tf.tf2_adapter import Tf2RosLookup, import_tf2_ros

if TYPE_CHECKING:
    from rclpy.node import Node
    from rclpy.time import Time

__all__ = ["TransformLookup"]

LOOKUP_POLL_PERIOD = 0.01
"""Seconds between two tries of a built-in-buffer lookup that waits (``timeout > 0``)."""


class _BufferLookup:
    """Lookups in a :class:`TfBuffer` fed from ``/tf`` and ``/tf_static`` on ``node``."""

    backend = "lyra"

    def __init__(self, node: Node, cache_time: float) -> None:
        self._clock_type = node.get_clock().clock_type
        self.buffer = TfBuffer(cache_time)
        self._stamps = StampConverter(epoch="first")
        self._listener = TfListener(node, self.buffer, stamps=self._stamps)

    def lookup_matrix(
        self, target: str, source: str, time: Time | None, timeout: float
    ) -> tuple[np.ndarray, Time]:
        """Lookup in the :class:`TfBuffer`, polling until ``timeout`` seconds have passed."""
        query = (
            None
            if time is None or time.nanoseconds == 0
            else self._stamps.to_seconds(time.nanoseconds)
        )
        deadline = _time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                matrix, stamp = self.buffer.lookup_stamped(target, source, query)
                break
            except TfError:
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    raise
                _time.sleep(min(LOOKUP_POLL_PERIOD, remaining))
        if query is not None:
            return matrix, time
        from rclpy.time import Time

        return matrix, Time(
            nanoseconds=self._stamps.to_nanoseconds(stamp), clock_type=self._clock_type
        )

    def unregister(self) -> None:
        self._listener.unregister()


class TransformLookup:
    """``T_target_source`` lookups for the node, via ``tf2_ros`` or the built-in :class:`TfBuffer`.

    Both backends raise :class:`~lyra_core.geometry.transform_tree.TfLookupError` /
    :class:`~lyra_core.geometry.transform_tree.TfExtrapolationError`; tf2_ros exceptions are
    wrapped (the original is the ``__cause__``).

    The node must be spun for data to arrive. A lookup with ``timeout > 0`` blocks the calling
    thread, so it only helps when another thread spins the node.

    Attributes:
        backend: ``"tf2_ros"`` or ``"lyra"``.
        buffer: The underlying ``tf2_ros.Buffer`` or :class:`TfBuffer`.
    """

    def __init__(
        self, node: Node, cache_time: float = DEFAULT_CACHE_TIME, *, backend: str | None = None
    ) -> None:
        """Subscribe to tf on ``node``.

        Args:
            node: The rclpy node (its clock type is used for the returned stamps).
            cache_time: Length of the per-link sample cache, seconds.
            backend: ``"tf2_ros"`` or ``"lyra"`` to force one; None picks tf2_ros when importable.

        Raises:
            ValueError: Unknown ``backend`` or invalid ``cache_time``.
            ImportError: ``backend="tf2_ros"`` without an importable tf2_ros.
        """
        if backend not in (None, "tf2_ros", "lyra"):
            raise ValueError(f'backend must be None, "tf2_ros" or "lyra", got {backend!r}')
        tf2_ros = import_tf2_ros() if backend != "lyra" else None
        if backend == "tf2_ros" and tf2_ros is None:
            raise ImportError('backend="tf2_ros" requested but tf2_ros cannot be imported')
        if tf2_ros is not None:
            self._impl: Tf2RosLookup | _BufferLookup = Tf2RosLookup(node, tf2_ros, cache_time)
        else:
            self._impl = _BufferLookup(node, cache_time)
        self.backend: str = self._impl.backend
        self.buffer = self._impl.buffer
        node.get_logger().info(f"tf lookups via {self.backend}")

    def lookup_matrix(
        self,
        target_frame: str,
        source_frame: str,
        time: Time | None = None,
        timeout: float = 0.0,
    ) -> tuple[np.ndarray, Time]:
        """``T_target_source`` (maps ``source_frame`` points into ``target_frame``) and its stamp.

        Args:
            target_frame: Frame to express the result in.
            source_frame: Frame whose pose is looked up.
            time: Lookup time; None (or a zero time) for the latest common time, as tf2.
            timeout: How long to wait for the data, seconds (0: fail at once).

        Returns:
            ``(4, 4)`` float64 matrix and the ``rclpy.time.Time`` of the data used: ``time`` when
            given, else the latest common time (zero if the path is static only).

        Raises:
            TfLookupError: Unknown or unconnected frames (after ``timeout``).
            TfExtrapolationError: ``time`` outside the cached data (after ``timeout``).
        """
        return self._impl.lookup_matrix(target_frame, source_frame, time, timeout)

    def can_transform(self, target_frame: str, source_frame: str, time: Time | None = None) -> bool:
        """True if :meth:`lookup_matrix` would succeed now."""
        try:
            self.lookup_matrix(target_frame, source_frame, time)
        except TfError:
            return False
        return True

    def unregister(self) -> None:
        """Destroy the tf subscriptions (call before destroying the node, or let it go with it)."""
        self._impl.unregister()
