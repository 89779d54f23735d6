"""Rendering speed and peak memory: frames per second for 10k / 100k / 1M Gaussians at 320x240
and 640x480 on every backend available here (CPU: native and torch; CUDA: gsplat and torch),
forward only and forward + backward.

The scene is :func:`lyra_core.scene.procedural_room.procedural_room` (surface Gaussians covering a
furnished
room about twice over, like a trained 3DGS scene) seen from inside the room. Timing is
inference-mode rendering of one camera, median over repeats after a warm-up.

Baselines measured in the same run:
- ``vs_autograd``: the backend's differentiable path (autograd on, as in training) on the
  same scene; the ratio is its time over the inference path's time.
- ``speedup_vs_torch`` / ``train_speedup_vs_torch``: the torch backend's time over the native
  backend's, forward (inference) and forward + backward (a loss on rgb and depth, every
  Gaussian parameter requiring grad, as in a training step).
- ``vs_reference``: the brute-force per-pixel reference, only where it finishes within
  ``--reference-budget`` seconds (10k Gaussians at 320x240 by default).
- on CUDA: ``gsplat`` vs the torch backend running on the GPU.

Usage: python benchmarks/render.py [--sizes 10000 100000 1000000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering import available_backends, render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_room import procedural_room
from report import peak_memory_mb, time_call, write_report

RESOLUTIONS = ((320, 240), (640, 480))


def _room_camera(width: int, height: int, device: torch.device) -> Cameras:
    eye, target = torch.tensor([0.0, -2.5, 1.4]), torch.tensor([0.0, 1.0, 0.8])
    camtoworld = look_at(eye, target, up=torch.tensor([0.0, 0.0, 1.0]))[None]
    return Cameras.from_intrinsics(camtoworld, Intrinsics.from_fov(1.0, width, height)).to(device)


def _trainable(scene: Gaussians) -> Gaussians:
    """The scene with every parameter requiring grad, as in training."""
    tensors = (scene.means, scene.quats, scene.log_scales, scene.opacity_logits, scene.sh)
    return Gaussians(*(t.clone().requires_grad_(True) for t in tensors))


def _reference_seconds(scene: Gaussians, cams: Cameras, budget: float) -> float | None:
    """Time of one brute-force render, or None when its estimate exceeds the budget."""
    estimate = len(scene) * cams.width * cams.height * 1e-8  # ~10 ns per Gaussian-pixel, 2 cores
    if estimate > budget:
        return None
    start = time.perf_counter()
    with torch.inference_mode():
        render(scene, cams, backend="reference")
    return time.perf_counter() - start


def measure_case(size: int, width: int, height: int, device_name: str, backend: str, args) -> dict:
    """One row of the table. Runs in a fresh process so that peak memory is this case's own."""
    device = torch.device(device_name)
    scene = procedural_room(size, seed=0).to(device)
    cams = _room_camera(width, height, device)

    def run() -> object:
        with torch.inference_mode():
            return render(scene, cams, backend=backend)

    peak_mb = peak_memory_mb(run, device)  # first call of the process: also the warm-up
    seconds = time_call(run, device, args.repeats, args.budget)
    trainable = _trainable(scene)
    autograd = time_call(
        lambda: render(trainable, cams, backend=backend), device, args.repeats, 1.0
    )

    def train_step() -> None:
        out = render(trainable, cams, backend=backend)
        (out.rgb.sum() + out.depth.mean()).backward()

    train = time_call(train_step, device, 2, args.budget)
    row = {
        "gaussians": size,
        "width": width,
        "height": height,
        "device": device.type,
        "backend": backend,
        "ms": round(seconds * 1e3, 2),
        "fps": round(1.0 / seconds, 2),
        "peak_mem_mb": round(peak_mb, 1),
        "autograd_forward_ms": round(autograd * 1e3, 2),
        "vs_autograd": round(autograd / seconds, 2),
        "forward_backward_ms": round(train * 1e3, 2),
        "vs_reference": None,
    }
    if device.type == "cpu":
        reference = _reference_seconds(scene, cams, args.reference_budget)
        if reference is not None:
            row["reference_ms"] = round(reference * 1e3, 1)
            row["vs_reference"] = round(reference / seconds, 1)
    return row


def run_benchmark(args: argparse.Namespace) -> dict:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases = [
        (size, width, height, device, backend)
        for size in args.sizes
        for width, height in RESOLUTIONS
        for device in devices
        for backend in (["torch", "gsplat"] if device == "cuda" else ["torch", "native"])
        if backend in available_backends()
    ]
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for case in cases:
        runs = []
        for _ in range(args.runs):  # each run in a fresh process: the spread between runs
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                runs.append(pool.submit(measure_case, *case, args).result())
        runs.sort(key=lambda r: r["ms"])
        row = dict(runs[len(runs) // 2])  # the median run
        row["runs"] = len(runs)
        row["fps_runs"] = [r["fps"] for r in runs]
        row["fps_range"] = [runs[-1]["fps"], runs[0]["fps"]]
        rows.append(row)
        print(_format_row(row), flush=True)
    for row in rows:  # gsplat / native against the torch backend on the same case and device
        if row["backend"] in ("gsplat", "native"):
            twin = next(r for r in rows if r["backend"] == "torch" and _same_case(r, row))
            row["speedup_vs_torch"] = round(twin["ms"] / row["ms"], 2)
            row["train_speedup_vs_torch"] = round(
                twin["forward_backward_ms"] / row["forward_backward_ms"], 2
            )
            print(
                f"{row['backend']} vs torch, {row['gaussians']} at {row['width']}x"
                f"{row['height']}: forward {row['speedup_vs_torch']}x, forward+backward "
                f"{row['train_speedup_vs_torch']}x",
                flush=True,
            )
    return {
        "benchmark": "render",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "scene": "lyra_core.scene.procedural_room.procedural_room(seed=0), one camera inside",
        "timing": "inference mode, median over repeats after a warm-up, one camera per call; "
        "each case measured in `runs` fresh processes, the row is the median run and "
        "fps_range the slowest and fastest run",
        "memory": "peak extra resident memory (CPU, sampled) or allocator peak (CUDA) of one "
        "render in a fresh process",
        "baselines": {
            "vs_autograd": "forward time with every parameter requiring grad / inference time",
            "vs_reference": "brute-force per-pixel reference time / inference time",
            "speedup_vs_torch": "torch backend time / this backend's time, same device, inference",
            "train_speedup_vs_torch": "the same for forward + backward",
        },
        "targets": {
            "cpu_100k_320x240_fps": 10.0,
            "native_vs_torch_100k_320x240_forward_and_backward": 5.0,
            "gsplat_h100_1M_640x480_fps": 200.0,
        },
        "load_average": os.getloadavg(),
        "rows": rows,
    }


def _same_case(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("gaussians", "width", "height", "device"))


HEADER = (
    f"{'gaussians':>9} {'size':>8} {'device':>6} {'backend':>7} {'ms':>9} {'fps':>8} "
    f"{'fwd+bwd ms':>10} {'peak MB':>8} {'vs autograd':>11} {'vs reference':>12} "
    f"{'fps range':>13}"
)


def _format_row(row: dict) -> str:
    size = f"{row['width']}x{row['height']}"
    ref = f"{row['vs_reference']}x" if row["vs_reference"] else "-"
    return (
        f"{row['gaussians']:>9} {size:>8} {row['device']:>6} {row['backend']:>7} "
        f"{row['ms']:>9.1f} {row['fps']:>8.1f} {row['forward_backward_ms']:>10.1f} "
        f"{row['peak_mem_mb']:>8.0f} "
        f"{row['vs_autograd']:>10.2f}x {ref:>12} "
        f"{row['fps_range'][0]:>6.1f}-{row['fps_range'][1]:<6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed renders")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per case")
    parser.add_argument("--reference-budget", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3, help="fresh-process runs per case")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    print(HEADER)
    report = run_benchmark(args)
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    write_report(args.out, f"render_{tag}.json", report)


if __name__ == "__main__":
    main()
