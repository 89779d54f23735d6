#!/usr/bin/env bash
# The test command: set up the virtualenv if needed, lint, run the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k rendering -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
# shellcheck disable=SC1091
. "${LYRA_VENV:-$root/.venv}/bin/activate"
cd "$root"
ruff check src test benchmarks scripts
ruff format --check src test benchmarks scripts
python -m pytest "$@"
