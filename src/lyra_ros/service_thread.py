"""Serving one service from its own thread, so that a long call never blocks the node.

The world node spins one executor thread for its subscriptions and quick services. A service
whose calls take long (``~/build_world`` waits for its build, ``~/render_view`` renders up to
``max_render_pixels``) is served by :class:`ServiceThread`: a helper node of its own (named
``<node>_<suffix>``, same namespace, no global ROS arguments so that ``__node`` remaps do not
rename it) spun by its own executor in its own thread. The service keeps the node's fully
qualified name (``/lyra_world/build_world``). The helper has no parameters, so it serves no
parameter services (less for a DDS peer to call; see docs/security.md).

Not rclpy's MultiThreadedExecutor on the main node or a coroutine callback instead: a pending
coroutine is re-run on every spin of a single-threaded executor (a busy loop), and the main
node's executor stays single-threaded and simple. The helper's executor is multi-threaded only
when calls must overlap (``threads > 1``, reentrant group): then a second call is answered while
the first one still runs (``~/build_world`` answers it ``busy``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
)
from rclpy.node import Node

__all__ = ["ServiceThread"]


class ServiceThread:
    """``srv_type`` served as ``<node's name>/<name>`` from a helper node in its own thread.

    Args:
        node: The node whose name the service carries.
        suffix: The helper node is ``<node>_<suffix>``.
        srv_type: The service type.
        name: The service name under the node's name.
        callback: ``callback(request, response) -> response``; runs in the helper's thread(s).
        threads: Calls served at the same time (> 1: a multi-threaded executor and a reentrant
            callback group).
    """

    def __init__(
        self,
        node: Node,
        suffix: str,
        srv_type: Any,
        name: str,
        callback: Callable[[Any, Any], Any],
        threads: int = 1,
    ) -> None:
        self.node = rclpy.create_node(
            f"{node.get_name()}_{suffix}",
            namespace=node.get_namespace(),
            context=node.context,
            use_global_arguments=False,
            start_parameter_services=False,
        )
        group = ReentrantCallbackGroup() if threads > 1 else None
        self.node.create_service(
            srv_type, f"{node.get_fully_qualified_name()}/{name}", callback, callback_group=group
        )
        if threads > 1:
            self._executor = MultiThreadedExecutor(threads, context=node.context)
        else:
            self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"lyra_{suffix}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            with contextlib.suppress(ExternalShutdownException, ShutdownException):
                self._executor.spin()
        except Exception:
            # SIGINT shuts the context down under a spinning executor: rcl then fails to make
            # its wait set (RCLError "context is not valid"). That is the end, not an error.
            if self.node.context.ok():
                raise

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop the executor, wait for its thread (at most ``timeout`` s), destroy the node.

        Returns:
            False when the thread was still running after ``timeout``: the helper node is then
            left alone (destroying a node that another thread is waiting on can crash rcl); the
            thread is a daemon and ends with the process.
        """
        self._executor.shutdown(timeout_sec=timeout)
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            return False
        self.node.destroy_node()
        return True
