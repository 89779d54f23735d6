"""The prepared GPU check (benchmarks/gpu_check.sh and .py) at toy sizes on the CPU: every
measured part runs, the report merges the pytest result, and the script is sound."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def test_each_part_runs_at_toy_size_on_the_cpu():
    hybrid = gpu_check.run_case("decoder", "hybrid-torch", smoke=True)
    attention = gpu_check.run_case("decoder", "all-transformer", smoke=True)
    assert hybrid["gaussians"] == 2 * 9 * 4 * 6 and hybrid["ms"] > 0
    assert attention["parameters"] > hybrid["parameters"]  # 4 Transformer blocks vs 2
    assert "skipped" in gpu_check.run_case("decoder", "hybrid-kernel", smoke=True)
    mamba = gpu_check.run_case("mamba", "kernel-vs-torch", smoke=True)
    assert mamba["torch_ms"] > 0 and mamba["tokens"] == 24
    render = gpu_check.run_case("render", "gsplat", smoke=True)
    assert render["fps"] > 0 and render["gaussians"] == 2000


def test_report_merges_rows_ratios_and_pytest_counts(tmp_path):
    rows = [
        {"case": "decoder", "variant": "hybrid-kernel", "ms": 100.0},
        {"case": "decoder", "variant": "hybrid-torch", "ms": 400.0},
        {"case": "decoder", "variant": "all-transformer", "ms": 650.0},
    ]
    (tmp_path / "m.json").write_text(json.dumps({"rows": rows, "measure_s": 1.0}))
    (tmp_path / "cuda.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
        '<testcase classname="test.test_x" name="test_a"><failure message="x"/></testcase>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "r" / "gpu.json"
    gpu_check.merge(tmp_path / "m.json", tmp_path / "cuda.xml", 1, out, smoke=True)
    report = json.loads(out.read_text())
    assert report["summary"] == {
        "all_transformer_over_hybrid_kernel": 6.5,
        "all_transformer_over_hybrid_torch": 1.62,
        "torch_scan_over_kernel": 4.0,
    }
    assert report["pytest_cuda"]["passed"] == 3
    assert report["pytest_cuda"]["failed_tests"] == ["test.test_x::test_a"]
    missing = gpu_check.pytest_result(tmp_path / "none.xml", 124)
    assert missing["exit_code"] == 124 and "did not finish" in missing["error"]


def test_shell_script_is_sound():
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_shell_script_smoke_run_writes_one_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["case"] for r in report["rows"]] == ["decoder"] * 3 + ["mamba", "render"]
    assert report["pytest_cuda"]["exit_code"] in (0, 5) and "tests" in report["pytest_cuda"]
