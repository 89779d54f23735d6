"""Lyra ROS: one ROS 2 package (ament_python) that installs two Python packages:

- ``lyra_core``: cameras, Gaussian scenes, rendering and the Lyra models, importable without ROS;
- ``lyra_ros``: the ROS 2 world node.

Pinned dependencies live in requirements/*.txt and are installed by scripts/setup_env.sh.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lyra_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 simulation node serving camera views of Gaussian-splat worlds (Lyra)",
    license="Apache-2.0",
    python_requires=">=3.11",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["setuptools", "numpy", "scipy", "plyfile", "torch"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "lyra-demo = lyra_core.demo:main",
        ],
    },
)
