#!/usr/bin/env bash
# One GPU check, prepared for a machine with one H100/H200: finishes within 10 minutes, downloads
# nothing (torch, gsplat and mamba-ssm must already be installed), writes ONE JSON report:
#   benchmarks/results/gpu_check_cuda.json
# with: gsplat render of 1M Gaussians at 640x480 (fps), Lyra-1's decoder (random weights, bf16)
# forward time and peak memory at 6 views x 16 latent frames x 88 x 160 latents (hybrid with
# mamba_ssm's kernel, hybrid with our PyTorch scan, all-Transformer), one Mamba-2 block kernel
# vs our scan, one denoising step of the GEN3C teacher's full-size transformer (random weights,
# bf16, 121x704x1280, resident and offloaded: seconds and peak memory; the report's "teacher"
# section, measured first), and the result of `pytest -m cuda`.
#
# Usage: benchmarks/gpu_check.sh [--cpu-smoke] [--out FILE]
#   --cpu-smoke  every part at toy sizes on the CPU (checks the script without a GPU; writes
#                benchmarks/results/gpu_check_cpu_smoke.json and runs only test/test_mamba2.py)
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) smoke=1 ;;
        --out) shift; out="${1:?--out needs a file}" ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

python="${PYTHON:-python}"
[ -x .venv/bin/python ] && python=.venv/bin/python
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
total_s=570                      # everything, leaving 30 s of the 10 minutes
measure_s=450                    # the measured cases; pytest gets what is left
flags=()
tests=(test)
if [ "$smoke" = 1 ]; then
    flags=(--cpu-smoke)
    tests=(test/test_mamba2.py)
    measure_s=120
    : "${out:=benchmarks/results/gpu_check_cpu_smoke.json}"
fi
: "${out:=benchmarks/results/gpu_check_cuda.json}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
SECONDS=0

echo "== measurements (limit ${measure_s} s)"
timeout "$((measure_s + 30))" "$python" benchmarks/gpu_check.py "${flags[@]}" \
    --json "$tmp/measure.json" --deadline-s "$measure_s" \
    || echo "measurements ended with status $?"

left=$((total_s - SECONDS))
[ "$left" -lt 30 ] && left=30
echo "== pytest -m cuda (limit ${left} s)"
timeout "$left" "$python" -m pytest -m cuda -q -p no:cacheprovider \
    --junitxml "$tmp/cuda.xml" "${tests[@]}"
rc=$?

"$python" benchmarks/gpu_check.py "${flags[@]}" --merge "$tmp/measure.json" \
    --junit "$tmp/cuda.xml" --pytest-rc "$rc" --out "$out"
echo "== done in ${SECONDS} s"
