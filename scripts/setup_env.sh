#!/usr/bin/env bash
# Create (or reuse) the project virtualenv and install the pinned dependencies into it.
#
#   scripts/setup_env.sh            # core + test tools
#   LYRA_CUDA=1 scripts/setup_env.sh  # also the CUDA extras (requirements/cuda.txt: mamba-ssm,
#                                     # built for this torch; needs nvcc)
#
# Environment:
#   LYRA_VENV             virtualenv folder (default: .venv in the repository)
#   PYTHON                interpreter that creates it (default: python3, must be 3.11+)
#   LYRA_TORCH_INDEX_URL  extra pip index for torch, e.g. PyTorch's CPU wheel index, to avoid
#                         the multi-GB CUDA build on machines without a GPU
# Re-running is cheap: it installs again only when a requirements file, pyproject.toml or
# setup.py changed, and rebuilds the ROS interfaces (msg/, srv/ and tf2_msgs, with CMake) only
# when they changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LYRA_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
torch_spec="torch==2.13.0"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

stamp="$venv/.lyra-setup"
want="$(cat "$root"/requirements/*.txt "$root/pyproject.toml" "$root/setup.py" | sha256sum)"
want="${want%% *}-cuda${LYRA_CUDA:-0}"
build_native() {
  # The native CPU rasteriser (C++ torch extension): compiled once per source / torch / CPU,
  # ~30-60 s; later runs only check. Without a compiler rendering falls back to the torch backend.
  python -c 'import sys; from lyra_core.rendering.backends.native import main; sys.exit(main())' \
    || echo "[setup] warning: the native CPU rasteriser did not build; the torch backend is used"
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  # Packages are current; the interfaces rebuild only when msg/ or srv/ changed.
  python "$root/scripts/build_ros_interfaces.py"
  build_native
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] installing $torch_spec (first, so nothing pulls another build)"
if [ -n "${LYRA_TORCH_INDEX_URL:-}" ]; then
  pip install --quiet --extra-index-url "$LYRA_TORCH_INDEX_URL" "$torch_spec"
else
  pip install --quiet "$torch_spec"
fi
echo "[setup] installing requirements/core.txt, dev.txt and ros.txt (ROS 2 from wheels)"
pip install --quiet "$torch_spec" -r "$root/requirements/core.txt" -r "$root/requirements/dev.txt" \
  -r "$root/requirements/ros.txt"
if [ "${LYRA_CUDA:-0}" = "1" ]; then
  echo "[setup] installing requirements/cuda.txt (built against this torch: no build isolation)"
  pip install --quiet --no-build-isolation "$torch_spec" -r "$root/requirements/cuda.txt"
fi
echo "[setup] installing lyra-world (editable: lyra_core, lyra_ros)"
pip install --quiet --no-deps --no-build-isolation -e "$root"
python "$root/scripts/build_ros_interfaces.py"
echo "[setup] building the native CPU rasteriser"
build_native
echo "$want" > "$stamp"
