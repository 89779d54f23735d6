"""The ROS demo: the world node and a demo robot over DDS (``python -m lyra_ros.demo``).

- :mod:`~lyra_ros.demo.demo`: the launcher (console script ``lyra-ros-demo``, scripts/demo.sh).
- :mod:`~lyra_ros.demo.demo_robot`: the robot (console script ``lyra-demo-robot``): a real
  RGB-D feed in, a drive along a path on tf, the world node's views of it recorded.
"""
