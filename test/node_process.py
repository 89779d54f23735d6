"""Running the world node as its own process in tests: start with a config, stop with SIGINT;
and the test side's waiting: spin a node until something holds, call a service."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def start_world_node(
    config_path: Path | str, *ros_args: str, cwd: Path | None = None
) -> subprocess.Popen:
    """``python -m lyra_ros.world_node --config CONFIG [ROS args]``, output captured as text;
    run in ``cwd`` (default: this process' directory), where its default ``world_dir`` is."""
    return subprocess.Popen(
        [sys.executable, "-m", "lyra_ros.world_node", "--config", str(config_path), *ros_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux ``/proc``), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


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


def spin_until(node, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Spin ``node`` until ``predicate()`` holds; AssertionError after ``timeout`` s."""
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def call_service(node, client, request, timeout: float = 30.0):
    """Call ``client`` (a client of ``node``) and spin until the answer; AssertionError when the
    service is missing or silent for ``timeout`` s."""
    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
    future = client.call_async(request)
    spin_until(node, future.done, timeout, f"an answer of {client.srv_name}")
    return future.result()
