"""Build the project's ROS 2 interfaces (msg/, srv/) with CMake into a pip-installed ROS prefix.

On a machine where ROS 2 comes from the ros-* wheels (see README, "ROS 2 from wheels"), the
virtualenv is the ROS prefix: message packages live in ``<venv>/share/<pkg>`` and
``<venv>/lib``. This script

1. rewrites the wheel builder's interpreter paths that some exported CMake files hard-code
   (``/opt/python/cp3XX-cp3XX/...``) to this interpreter's include and numpy include dirs;
2. builds ``tf2_msgs`` (only its TFMessage) from the standard one-line definition when the real
   package is not installed, so the node speaks the real ``/tf`` type (same type hash);
3. builds this repository's package with ``-DLYRA_INTERFACES_ONLY=ON`` (the Python code itself
   comes from ``pip install -e .``), installing ``lyra_ros.msg`` and ``lyra_ros.srv``.

Each step is skipped when its output is already importable and up to date.
Run: ``python scripts/build_ros_interfaces.py`` inside the virtualenv (scripts/setup_env.sh does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)
BUILD = ROOT / "build" / "ros"

TF2_MSGS_PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>TFMessage only, from the standard definition (pip-only installs)</description>
  <maintainer email="maintainers@lyra-ros.invalid">Lyra ROS maintainers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""

TF2_MSGS_CMAKE = """cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""

TF2_MSGS_TFMESSAGE = "geometry_msgs/TransformStamped[] transforms\n"


def log(text: str) -> None:
    print(f"[ros-interfaces] {text}", flush=True)


def patch_wheel_cmake_paths() -> None:
    """Point CMake files at this interpreter's include dirs instead of the wheel builder's."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    builder = re.compile(
        r"/opt/python/cp3\d+-cp3\d+/(include/python3\.\d+|lib/python3\.\d+/"
        r"site-packages/numpy/(?:_core|core)/include)"
    )

    def replacement(match: re.Match[str]) -> str:
        return python_include if match.group(1).startswith("include") else numpy_include

    for path in (PREFIX / "share").glob("*/cmake/*.cmake"):
        text = path.read_text()
        patched = builder.sub(replacement, text)
        if patched != text:
            path.write_text(patched)
            log(f"patched interpreter paths in {path.relative_to(PREFIX)}")


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def cmake_build(source: Path, name: str, *extra: str) -> None:
    build = BUILD / name
    env = dict(os.environ, AMENT_PREFIX_PATH=str(PREFIX))
    configure = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build),
        f"-DCMAKE_PREFIX_PATH={PREFIX}",
        f"-DCMAKE_INSTALL_PREFIX={PREFIX}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DBUILD_TESTING=OFF",
        "-DCMAKE_BUILD_TYPE=Release",
        *extra,
    ]
    jobs = str(os.cpu_count() or 2)
    for command in (
        configure,
        ["cmake", "--build", str(build), "-j", jobs],
        ["cmake", "--install", str(build)],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(f"[ros-interfaces] {name}: '{' '.join(command[:2])}' failed")


def build_tf2_msgs() -> None:
    if importable("tf2_msgs"):
        return
    source = BUILD / "tf2_msgs_src"
    (source / "msg").mkdir(parents=True, exist_ok=True)
    (source / "package.xml").write_text(TF2_MSGS_PACKAGE_XML)
    (source / "CMakeLists.txt").write_text(TF2_MSGS_CMAKE)
    (source / "msg" / "TFMessage.msg").write_text(TF2_MSGS_TFMESSAGE)
    log("building tf2_msgs (TFMessage) from its standard definition")
    cmake_build(source, "tf2_msgs")


def interface_digest() -> str:
    files = sorted(
        [
            *ROOT.glob("msg/*.msg"),
            *ROOT.glob("srv/*.srv"),
            ROOT / "CMakeLists.txt",
            ROOT / "src" / "lyra_ros" / "__init__.py",
        ]
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def build_project_interfaces() -> None:
    stamp = PREFIX / "share" / "lyra_ros" / "interfaces.sha256"
    if stamp.exists() and stamp.read_text() == interface_digest() and importable("lyra_ros.msg"):
        return
    log("building lyra_ros interfaces (msg/, srv/)")
    cmake_build(ROOT, "lyra_ros", "-DLYRA_INTERFACES_ONLY=ON")
    # The generated package and the source package must be one: install our __init__.py,
    # which extends __path__ over both folders, in place of the generated (empty) one.
    generated = Path(sysconfig.get_paths()["purelib"]) / "lyra_ros" / "__init__.py"
    shutil.copyfile(ROOT / "src" / "lyra_ros" / "__init__.py", generated)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(interface_digest())


def main() -> None:
    patch_wheel_cmake_paths()
    build_tf2_msgs()
    build_project_interfaces()
    log("interfaces ready")


if __name__ == "__main__":
    main()
