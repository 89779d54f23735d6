"""The repository builds as a ROS 2 package with colcon, and the installed node runs.

This is what a user of a real ROS 2 install does (clone into a workspace, ``colcon build``,
``ros2 run``/``ros2 launch``); here the ROS underlay is the virtualenv's wheels.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("rclpy")
if shutil.which("colcon") is None:
    pytest.skip("colcon is not installed", allow_module_level=True)


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return result.stdout.split()


@pytest.mark.slow
def test_colcon_build_installs_a_runnable_node(tmp_path):
    package = tmp_path / "src" / "lyra_ros"
    for name in tracked_files():
        target = package / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix)
    build = subprocess.run(
        [
            "colcon",
            "build",
            "--packages-select",
            "lyra_ros",
            "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    install = tmp_path / "install" / "lyra_ros"
    site = next((install / "lib").glob("python3*/site-packages"))
    installed = (
        "lib/lyra_ros/lyra-world",
        "share/lyra_ros/config/world.yaml",
        "share/lyra_ros/launch/world.launch.py",
        "share/lyra_ros/msg/WorldStatus.msg",
    )
    for path in installed:
        assert (install / path).exists(), path
    assert (site / "lyra_ros" / "world_node.py").exists()
    assert (site / "lyra_ros" / "msg" / "__init__.py").exists()  # one package with its msgs

    run_env = dict(
        env,
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]),
        AMENT_PREFIX_PATH=os.pathsep.join([str(install), sys.prefix]),
        PYTHONFAULTHANDLER="1",  # a crash at shutdown shows where it happened
    )
    node = subprocess.Popen(
        [sys.executable, str(install / "lib/lyra_ros/lyra-world")],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(6.0)
    node.send_signal(signal.SIGINT)
    output, _ = node.communicate(timeout=20)
    assert node.returncode == 0, output
    assert "lyra_world ready" in output
    assert (
        str(site)
        in subprocess.run(
            [sys.executable, "-c", "import lyra_ros.world_node as m; print(m.__file__)"],
            env=run_env,
            capture_output=True,
            text=True,
        ).stdout
    )
