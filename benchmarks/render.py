"""Rendering speed and peak memory: frames per second for 10k / 100k / 1M Gaussians at 320x240
and 640x480 on every backend available here.

The scene is :func:`lyra_core.scenes.procedural_room` (surface Gaussians covering a furnished
room about twice over, like a trained 3DGS scene) seen from inside the room. Timing is
inference-mode rendering of one camera, median over repeats after a warm-up.

Baselines measured in the same run:
- ``vs_autograd``: the torch backend's differentiable path (autograd on, as in training) on the
  same scene; the ratio is its time over the inference path's time.
- ``vs_reference``: the brute-force per-pixel reference, only where it finishes within
  ``--reference-budget`` seconds (10k Gaussians at 320x240 by default).
- on CUDA: ``gsplat`` vs the torch backend running on the GPU.

Usage: python benchmarks/render.py [--sizes 10000 100000 1000000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from lyra_core.cameras import Cameras, Intrinsics, look_at
from lyra_core.gaussians import Gaussians
from lyra_core.rendering import available_backends, render
from lyra_core.scenes import procedural_room

RESOLUTIONS = ((320, 240), (640, 480))


def _room_camera(width: int, height: int, device: torch.device) -> Cameras:
    eye, target = torch.tensor([0.0, -2.5, 1.4]), torch.tensor([0.0, 1.0, 0.8])
    camtoworld = look_at(eye, target, up=torch.tensor([0.0, 0.0, 1.0]))[None]
    return Cameras.from_intrinsics(camtoworld, Intrinsics.from_fov(1.0, width, height)).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, min_repeats: int, budget_s: float):
    """Median seconds per call after one warm-up; at least ``min_repeats`` calls."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_now_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak(device: torch.device) -> int:
    """Reset the peak-memory counter; returns the current usage it is measured against."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with contextlib.suppress(OSError):  # Linux: writing 5 resets VmHWM of this process
        Path("/proc/self/clear_refs").write_text("5")
    return _rss_now_bytes()


def _peak_since(device: torch.device, baseline: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - baseline
    return max(_rss_peak_bytes() - baseline, 0)


def _measure(
    scene: Gaussians, cams: Cameras, backend: str, args: argparse.Namespace
) -> dict[str, float]:
    device = cams.Ks.device

    def run() -> object:
        with torch.inference_mode():
            return render(scene, cams, backend=backend)

    baseline = _reset_peak(device)
    seconds = _time(run, device, args.repeats, args.budget)
    peak = _peak_since(device, baseline)
    return {"ms": seconds * 1e3, "fps": 1.0 / seconds, "peak_mem_mb": peak / 2**20}


def _autograd_seconds(scene: Gaussians, cams: Cameras, args: argparse.Namespace) -> float:
    params = scene.means.clone().requires_grad_(True)
    trainable = Gaussians(
        means=params,
        quats=scene.quats,
        log_scales=scene.log_scales,
        opacity_logits=scene.opacity_logits,
        sh=scene.sh,
    )
    return _time(
        lambda: render(trainable, cams, backend="torch"), cams.Ks.device, 2, args.budget / 2
    )


def _reference_seconds(scene: Gaussians, cams: Cameras, budget: float) -> float | None:
    """Time of one brute-force render, or None when its estimate exceeds the budget."""
    pixels = cams.width * cams.height
    estimate = len(scene) * pixels * 2e-8  # ~20 ns per Gaussian-pixel on 2 CPU cores
    if estimate > budget:
        return None
    start = time.perf_counter()
    with torch.inference_mode():
        render(scene, cams, backend="reference")
    return time.perf_counter() - start


def run_benchmark(args: argparse.Namespace) -> dict:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows = []
    for size in args.sizes:
        scene_cpu = procedural_room(size, seed=0)
        for width, height in RESOLUTIONS:
            for device in devices:
                scene, cams = scene_cpu.to(device), _room_camera(width, height, device)
                backends = ["torch"] + (["gsplat"] if device.type == "cuda" else [])
                backends = [b for b in backends if b in available_backends()]
                results = {b: _measure(scene, cams, b, args) for b in backends}
                autograd = _autograd_seconds(scene, cams, args)
                reference = None
                if device.type == "cpu":
                    reference = _reference_seconds(scene, cams, args.reference_budget)
                for backend, res in results.items():
                    row = {
                        "gaussians": size,
                        "width": width,
                        "height": height,
                        "device": device.type,
                        "backend": backend,
                        **{k: round(v, 2) for k, v in res.items()},
                        "vs_autograd": round(autograd * 1e3 / res["ms"], 2),
                        "vs_reference": (
                            round(reference * 1e3 / res["ms"], 1) if reference else None
                        ),
                    }
                    if "gsplat" in results and backend == "torch":
                        row["gsplat_speedup"] = round(res["ms"] / results["gsplat"]["ms"], 2)
                    rows.append(row)
                    print(_format_row(row), flush=True)
    return {
        "benchmark": "render",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "scene": "lyra_core.scenes.procedural_room(seed=0), camera inside the room",
        "targets": {
            "cpu_100k_320x240_fps": 10.0,
            "gsplat_h100_1M_640x480_fps": 200.0,
        },
        "rows": rows,
    }


HEADER = (
    f"{'gaussians':>9} {'size':>8} {'device':>6} {'backend':>7} {'ms':>9} {'fps':>8} "
    f"{'peak MB':>8} {'vs autograd':>11} {'vs reference':>12}"
)


def _format_row(row: dict) -> str:
    size = f"{row['width']}x{row['height']}"
    ref = f"{row['vs_reference']}x" if row["vs_reference"] else "-"
    return (
        f"{row['gaussians']:>9} {size:>8} {row['device']:>6} {row['backend']:>7} "
        f"{row['ms']:>9.1f} {row['fps']:>8.1f} {row['peak_mem_mb']:>8.0f} "
        f"{row['vs_autograd']:>10.2f}x {ref:>12}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed renders")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per case")
    parser.add_argument("--reference-budget", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    print(HEADER)
    report = run_benchmark(args)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    path = args.out / f"render_{tag}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
