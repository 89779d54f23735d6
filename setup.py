"""Lyra ROS, pip side: everything is declared in pyproject.toml (the distribution "lyra-world",
packages lyra_core and lyra_ros from src/, dependencies, extras, console scripts, shipped
weights). This file stays for tools that look for it; a colcon workspace builds the ROS 2
package with CMake (package.xml, CMakeLists.txt) and does not use it.
"""

from setuptools import setup

setup()
