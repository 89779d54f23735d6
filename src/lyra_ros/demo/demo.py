"""The ROS demo (the README's main command): a world node and a demo robot over DDS.

Starts ``lyra_world`` (config/demo.yaml) as its own process, runs the demo robot here, and stops
the world node at the end. The robot publishes a real RGB-D photo, drives its camera along a
path on tf and records what the world node renders for it; outputs go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lyra_ros.config import config_path, use_large_data_transport


def isolated_ros_environment() -> dict[str, str]:
    """Environment that keeps the demo's DDS traffic on this machine, in its own domain."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    env.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lyra-demo-log-"))
    use_large_data_transport(env)  # the robot publishes 741x500 images
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyra-ros-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ros_demo"), help="output folder")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds before giving up")
    parser.add_argument("--path-seconds", type=float, default=8.0, help="duration of the drive")
    parser.add_argument(
        "--world-source",
        choices=("auto", "depth", "lyra"),
        default="auto",
        help="world source of the node (lyra: the Lyra student)",
    )
    parser.add_argument(
        "--lyra-checkpoint",
        default="",
        help="student folder for lyra ('shipped': the packaged one)",
    )
    args = parser.parse_args(argv)
    overrides = ["-p", f"world_source:={args.world_source}"]
    if args.lyra_checkpoint:
        overrides += ["-p", f"lyra_checkpoint:={args.lyra_checkpoint}"]

    env = isolated_ros_environment()
    os.environ.update(env)
    world = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lyra_ros.world_node",
            "--config",
            str(config_path("demo.yaml")),
            "--ros-args",
            "-r",
            "image:=camera/image",
            "-r",
            "depth:=camera/depth",
            "-r",
            "camera_info:=camera/camera_info",
            *overrides,
        ],
        env=env,
    )
    try:
        import rclpy

        from lyra_ros.demo.demo_robot import run

        rclpy.init()
        try:
            summary = run(args.out, timeout=args.timeout, path_seconds=args.path_seconds)
        finally:
            rclpy.shutdown()
    finally:
        world.send_signal(signal.SIGINT)
        try:
            world.wait(timeout=15)
        except subprocess.TimeoutExpired:
            world.kill()
    print(json.dumps(summary, indent=2))
    print(f"\nrendered {summary['frames_received']} robot views; outputs in {args.out}/")
    for name, path in summary["outputs"].items():
        print(f"  {name:>13}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
