"""Lyra ROS, pip side: installs the Python packages of the ROS 2 package ``lyra_ros``:

- ``lyra_core``: cameras, Gaussian scenes, rendering and the Lyra models, importable without ROS;
- ``lyra_ros``: the ROS 2 world node.

In a colcon workspace the package builds with CMake (package.xml, CMakeLists.txt) and this file
is not used. In a pip-only environment scripts/setup_env.sh installs this (editable) and builds
the interfaces with scripts/build_ros_interfaces.py. Pinned dependencies: requirements/*.txt.
"""

from setuptools import find_packages, setup

setup(
    # Not "lyra_ros": the CMake interface build registers a distribution of that name.
    name="lyra-world",
    version="0.1.0",
    description="ROS 2 simulation node serving camera views of Gaussian-splat worlds (Lyra)",
    license="Apache-2.0",
    python_requires=">=3.11",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # The shipped tiny student (lyra_core.weights.shipped_student_path), once it is trained.
    package_data={
        "lyra_core.weights": [
            "student_tiny/*.json",
            "student_tiny/*/*.json",
            "student_tiny/*/*.safetensors",
        ]
    },
    install_requires=["numpy", "scipy", "plyfile", "torch"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "lyra = lyra_core.cli:main",
            "lyra-demo = lyra_core.cli.demo:main",
            "lyra-train = lyra_core.training.train_student:main",
            "lyra-world = lyra_ros.world_node:main",
            "lyra-demo-robot = lyra_ros.demo_robot:main",
            "lyra-ros-demo = lyra_ros.demo:main",
        ],
    },
)
