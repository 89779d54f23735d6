#!/usr/bin/env bash
# The main job: set up the virtualenv if needed, then run the ROS 2 closed-loop demo: the world
# node builds a Gaussian world from a real RGB-D photo, a demo robot drives its camera on tf and
# records the views the world node renders for it (outputs/ros_demo/).
# Extra arguments go to the demo, e.g. scripts/demo.sh --out outputs/mine --path-seconds 12
# Feed mode: scripts/demo.sh --feed room (or --world-source fusion): the robot drives through a
# procedural room publishing posed RGB-D frames and the world node fuses them into a growing map;
# --feed stereo: the motorcycle's left and right views as two posed RGB-D frames. Contact sheet
# of the served views after the first frame and after the feed: outputs/ros_demo/fusion_*.png.
# The core-only demo (no ROS): python -m lyra_core.demo (see README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${LYRA_VENV:-$root/.venv}/bin/activate"
cd "$root"
python -m lyra_ros.demo "$@"
