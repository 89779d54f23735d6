"""The ROS demo (the README's main command): a world node and a demo robot over DDS.

Starts ``lyra_world`` (config/demo.yaml) as its own process, runs the demo robot here, and stops
the world node at the end. The robot publishes a real RGB-D photo, drives its camera along a
path on tf and records what the world node renders for it; outputs go to ``--out``.

Feed mode (``--feed room|stereo``, or ``--world-source fusion``, which uses the room feed): the
world node maps its camera feed (``world_source: fusion``) and the feed robot
(:mod:`lyra_ros.demo.feed_robot`) publishes posed RGB-D frames, so the world grows as it
drives; a contact sheet of the served views after the first frame and after the feed goes to
``--out``.
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

FUSION = "fusion"
FEEDS = ("room", "stereo")  # lyra_ros.demo.feed_robot (imported once the environment is set)


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
        choices=("auto", "depth", "lyra", FUSION),
        default="auto",
        help="world source of the node (lyra: the Lyra student; fusion: the room feed)",
    )
    parser.add_argument(
        "--feed",
        choices=FEEDS,
        default=None,
        help="feed mode: the robot publishes posed RGB-D frames (room: a drive through the "
        "procedural room; stereo: the motorcycle's left and right views) and the world grows",
    )
    parser.add_argument(
        "--lyra-checkpoint",
        default="",
        help="student folder for lyra ('shipped': the packaged one)",
    )
    args = parser.parse_args(argv)
    if args.world_source == FUSION and args.feed is None:
        args.feed = "room"
    if args.feed is not None:
        args.world_source = FUSION
    # The node saves world files into the output folder: its world_dir (service requests name
    # files inside it, docs/security.md).
    overrides = ["-p", f"world_source:={args.world_source}"]
    overrides += ["-p", f"world_dir:={args.out.resolve()}"]
    if args.feed == "stereo":  # the right camera is 0.19 m from the left one: a keyframe too
        overrides += ["-p", "keyframe_translation:=0.1"]
    if args.lyra_checkpoint:
        overrides += ["-p", f"lyra_checkpoint:={args.lyra_checkpoint}"]
        if args.lyra_checkpoint != "shipped":  # the folder the user named is allowed
            folder = Path(args.lyra_checkpoint).expanduser().resolve()
            overrides += ["-p", f"checkpoint_dirs:=[{json.dumps(str(folder))}]"]

    env = isolated_ros_environment()
    os.environ.update(env)
    world = subprocess.Popen(world_node_command(config_path("demo.yaml"), overrides), env=env)
    try:
        import rclpy

        from lyra_ros.demo.demo_robot import run
        from lyra_ros.demo.feed_robot import room_feed, run_feed, stereo_feed

        rclpy.init()
        try:
            if args.feed is not None:
                feed = room_feed() if args.feed == "room" else stereo_feed()
                summary = run_feed(args.out, feed, timeout=args.timeout)
            else:
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
    if args.feed is not None:
        first, after = summary["first_frame"]["status"], summary["after_fusion"]["status"]
        print(
            f"\n{args.feed} feed: {first['gaussians']} -> {after['gaussians']} Gaussians, "
            f"{after['keyframes']} keyframes, {after['refine_steps']} refinement steps; "
            f"outputs in {args.out}/"
        )
        for name, path in summary["outputs"].items():
            print(f"  {name:>13}: {path}")
        return 0
    print(f"\nrendered {summary['frames_received']} robot views; outputs in {args.out}/")
    for name, path in summary["outputs"].items():
        print(f"  {name:>13}: {path}")
    return 0


def world_node_command(config: Path, ros_args: list[str] | None = None) -> list[str]:
    """The command line of a world node with ``config`` whose inputs are the demo robot's
    ``camera/image``, ``camera/depth`` and ``camera/camera_info``; ``ros_args`` follow."""
    remaps = ["image:=camera/image", "depth:=camera/depth", "camera_info:=camera/camera_info"]
    command = [sys.executable, "-m", "lyra_ros.world_node", "--config", str(config)]
    command.append("--ros-args")
    for remap in remaps:
        command += ["-r", remap]
    return command + list(ros_args or [])


if __name__ == "__main__":
    raise SystemExit(main())
