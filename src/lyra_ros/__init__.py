"""Lyra ROS: the ROS 2 world node (camera images in, rendered robot views out at tf poses).

The node (:mod:`~lyra_ros.world_node`, its parameters, simulated cameras and service threads),
its message conversions (:mod:`~lyra_ros.conversions`), its tf lookups with a fallback buffer
(:mod:`~lyra_ros.tf`) and the demo (:mod:`~lyra_ros.demo`) live here. The core they use,
:mod:`lyra_core`, runs on the CPU or a CUDA GPU and imports without ROS.

``lyra_ros.msg`` and ``lyra_ros.srv`` are generated from msg/ and srv/ by CMake. In a colcon
install they sit in the same folder as this file. In a pip-only environment they are installed
into the virtualenv while this code is installed from the source tree, so the package extends
its path to span both folders (scripts/build_ros_interfaces.py installs this same file there).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
