"""Running the world node as its own process in tests: start with a config, stop with SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def start_world_node(config_path: Path, *ros_args: str) -> subprocess.Popen:
    """``python -m lyra_ros.world_node --config CONFIG [ROS args]``, output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "lyra_ros.world_node", "--config", str(config_path), *ros_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_world_node(process: subprocess.Popen, timeout: float = 20.0) -> str:
    """SIGINT the node; it must exit 0, without a traceback, within ``timeout`` s. Its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"world node did not stop on SIGINT:\n{output}") from None
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    return output
