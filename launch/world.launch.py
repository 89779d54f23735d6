"""Launch the Lyra world node with config/world.yaml (or ``config:=<file>``).

    ros2 launch lyra_ros world.launch.py [config:=/path/to/world.yaml]

Without ``ros2 launch`` (pip-only installs) the console script does the same:
``lyra-world [--config FILE]``.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_config = Path(get_package_share_directory("lyra_ros")) / "config" / "world.yaml"
    config = LaunchConfiguration("config")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config", default_value=str(default_config), description="Parameter YAML file"
            ),
            Node(
                package="lyra_ros",
                executable="lyra-world",
                name="lyra_world",
                parameters=[config],
                output="screen",
                emulate_tty=True,
            ),
        ]
    )
