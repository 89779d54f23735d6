"""The README's main command end to end: world node + demo robot over DDS, outputs on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rclpy")

from lyra_core.scene.ply import read_ply


def test_ros_demo_writes_robot_views_and_the_world(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lyra_ros.demo",
            "--out",
            str(out),
            "--path-seconds",
            "3",
            "--timeout",
            "90",
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_received"] >= 3
    assert summary["save_world"].startswith("saved to")
    world = read_ply(out / "world.ply")
    assert len(world) > 50_000  # the 741x500 RGB-D frame at stride 2, minus invalid depth
    sheet = np.asarray(Image.open(out / "robot_views.png"))
    assert sheet.shape[1] > 3 * 320 and sheet.std() > 20
    # Pillow merges identical consecutive frames (the robot pauses at the ends of its path)
    assert 2 <= Image.open(out / "robot_views.gif").n_frames <= summary["frames_received"]
    assert "robot_views.png" in result.stdout
