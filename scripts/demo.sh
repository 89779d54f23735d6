#!/usr/bin/env bash
# The main job: set up the virtualenv if needed, then run the demo.
# Extra arguments go to the demo, e.g. scripts/demo.sh --out outputs/mine --frames 49
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${LYRA_VENV:-$root/.venv}/bin/activate"
cd "$root"
python -m lyra_core.demo "$@"
