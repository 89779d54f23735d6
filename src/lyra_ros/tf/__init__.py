"""Transform lookups for the Lyra node: tf2_ros where installed, a small tf buffer otherwise.

- :mod:`~lyra_core.geometry.transform_tree`: :class:`TfBuffer`, the tf tree with a time cache
  (no ROS needed), and the errors both backends raise.
- :mod:`~lyra_ros.tf.listener`: :class:`TfListener` (``/tf``, ``/tf_static`` into a buffer) and
  :class:`StampConverter`.
- :mod:`~lyra_ros.tf.tf2_adapter`: :class:`Tf2RosLookup`, the same lookups through ``tf2_ros``.
- :mod:`~lyra_ros.tf.lookup`: :class:`TransformLookup`, what the node uses; picks the backend.
"""

from lyra_core.geometry.transform_tree import (
    DEFAULT_CACHE_TIME,
    TfBuffer,
    TfError,
    TfExtrapolationError,
    TfLookupError,
)
from lyra_ros.tf.listener import StampConverter, TfListener
from lyra_ros.tf.lookup import TransformLookup
from lyra_ros.tf.tf2_adapter import Tf2RosLookup

__all__ = [
    "DEFAULT_CACHE_TIME",
    "StampConverter",
    "Tf2RosLookup",
    "TfBuffer",
    "TfError",
    "TfExtrapolationError",
    "TfListener",
    "TfLookupError",
    "TransformLookup",
]
