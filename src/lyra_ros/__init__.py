"""Lyra ROS: the ROS 2 world node (camera images in, rendered robot views out at tf poses).

The node, its message conversions and its tf fallback live here; the GPU core they use is
:mod:`lyra_core`, which imports without ROS.

``lyra_ros.msg`` and ``lyra_ros.srv`` are generated from msg/ and srv/ by CMake. In a colcon
install they sit in the same folder as this file. In a pip-only environment they are installed
into the virtualenv while this code is installed from the source tree, so the package extends
its path to span both folders (scripts/build_ros_interfaces.py installs this same file there).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
