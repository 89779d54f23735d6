"""Lyra decoder speed and memory: hybrid (Transformer + Mamba-2) vs all-Transformer, and the
render-time gain of 80 % opacity pruning.

Decoder forward (inference mode) of the hybrid decoder and of an all-Transformer decoder of the
same width and depth, over growing inputs: 1, 2 and 6 trajectories x growing latent frames, on
every device available (Lyra reports 6.5x at full size: 20,922 ms -> 3,213 ms). Each case runs in
a fresh process so that its peak memory is its own. Then one decoded world is rendered with and
without pruning (keep the 20 % most opaque Gaussians; Lyra: 30 ms -> 18 ms, 1.67x).

The default sizes fit a 2-core CPU (width 256, 8 blocks, 32x32 latent grid); ``--width 512
--layers 16 --grid 88 160`` is Lyra's full size for a GPU.

Usage: python benchmarks/decoder.py [--views 1 2 6] [--frames 1 2 4] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig, count_parameters
from lyra_core.rendering import render
from report import peak_memory_mb, time_call, write_report


def make_config(args: argparse.Namespace, all_transformer: bool) -> LyraDecoderConfig:
    layers = args.layers
    hybrid = (layers // 2 - 1, layers - 1)  # Lyra: blocks 8 and 16 of 16
    return LyraDecoderConfig(
        width=args.width,
        num_layers=layers,
        num_heads=args.width // 64,
        transformer_layers=tuple(range(layers)) if all_transformer else hybrid,
        d_state=args.d_state,
        head_dim=64,
    )


def make_inputs(views: int, frames: int, grid: tuple[int, int], device: torch.device):
    h, w = grid
    latents = torch.randn(1, views, frames, 16, h, w, device=device)
    poses = torch.stack(
        [
            look_at((0.2 * v - 0.5, 0.0, 0.1 * t), (0.0, 0.0, 3.0))
            for v in range(views)
            for t in range(frames)
        ]
    )
    poses = poses.reshape(1, views, frames, 4, 4).to(device)
    Ks = Intrinsics.from_fov(1.0, w * 8, h * 8).matrix(device=device)
    return latents, poses, Ks.expand(1, views, frames, 3, 3)


def measure_case(views: int, frames: int, all_transformer: bool, device_name: str, args) -> dict:
    """One row, in a fresh process."""
    torch.manual_seed(0)
    device = torch.device(device_name)
    model = LyraDecoder(make_config(args, all_transformer)).to(device).eval()
    inputs = make_inputs(views, frames, tuple(args.grid), device)

    def run() -> object:
        with torch.inference_mode():
            return model(*inputs)

    peak = peak_memory_mb(run, device)
    seconds = time_call(run, device, args.repeats, args.budget)
    h, w = args.grid
    return {
        "decoder": "all-transformer" if all_transformer else "hybrid",
        "device": device.type,
        "views": views,
        "latent_frames": frames,
        "tokens": views * frames * (h // 2) * (w // 2),
        "gaussians": views * frames * h * 8 * w * 8,
        "parameters": count_parameters(model),
        "ms": round(seconds * 1e3, 1),
        "peak_mem_mb": round(peak, 1),
    }


def pruning_case(device_name: str, args) -> dict:
    """Render one decoded world with and without 80 % opacity pruning."""
    torch.manual_seed(0)
    device = torch.device(device_name)
    model = LyraDecoder(make_config(args, False)).to(device).eval()
    with torch.inference_mode():
        out = model(*make_inputs(2, 1, tuple(args.grid), device))
    full = out.to_gaussians()
    pruned = out.to_gaussians(prune_ratio=model.config.prune_ratio)
    h, w = args.grid
    cams = Cameras.from_intrinsics(
        look_at((0.0, 0.0, 0.0), (0.0, 0.0, 3.0))[None], Intrinsics.from_fov(1.0, w * 8, h * 8)
    ).to(device)

    def timed(scene) -> float:
        with torch.inference_mode():
            return time_call(lambda: render(scene, cams), device, args.repeats, args.budget)

    full_s, pruned_s = timed(full), timed(pruned)
    return {
        "device": device.type,
        "gaussians_full": len(full),
        "gaussians_pruned": len(pruned),
        "render_ms_full": round(full_s * 1e3, 1),
        "render_ms_pruned": round(pruned_s * 1e3, 1),
        "speedup": round(full_s / pruned_s, 2),
        "image": [w * 8, h * 8],
    }


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 6])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--grid", type=int, nargs=2, default=[32, 32], help="latent h w")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"{'device':>6} {'views':>5} {'frames':>6} {'tokens':>7} {'hybrid ms':>10} "
        f"{'all-attn ms':>11} {'speedup':>7} {'hybrid MB':>9} {'all-attn MB':>11}"
    )
    rows = []
    for device in devices:
        for views in args.views:
            for frames in args.frames:
                hybrid = _in_fresh_process(measure_case, views, frames, False, device, args)
                attention = _in_fresh_process(measure_case, views, frames, True, device, args)
                speedup = round(attention["ms"] / hybrid["ms"], 2)
                rows += [hybrid | {"speedup_vs_all_transformer": speedup}, attention]
                print(
                    f"{device:>6} {views:>5} {frames:>6} {hybrid['tokens']:>7} "
                    f"{hybrid['ms']:>10.1f} {attention['ms']:>11.1f} {speedup:>6.2f}x "
                    f"{hybrid['peak_mem_mb']:>9.0f} {attention['peak_mem_mb']:>11.0f}",
                    flush=True,
                )
    pruning = [_in_fresh_process(pruning_case, device, args) for device in devices]
    for row in pruning:
        print(
            f"pruning on {row['device']}: {row['gaussians_full']} -> "
            f"{row['gaussians_pruned']} Gaussians, render {row['render_ms_full']} -> "
            f"{row['render_ms_pruned']} ms ({row['speedup']}x; Lyra 1.67x)"
        )
    report = {
        "benchmark": "decoder",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "config": {
            "width": args.width,
            "layers": args.layers,
            "d_state": args.d_state,
            "latent_grid": args.grid,
            "hybrid_transformer_layers": "L/2 and L (1-based)",
        },
        "timing": "inference-mode forward, median after a warm-up, one fresh process per case",
        "baseline": "all-transformer decoder of the same width and depth, same run",
        "lyra_reference": {"speedup_full_size": 6.5, "pruning_render_speedup": 1.67},
        "rows": rows,
        "pruning": pruning,
    }
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    write_report(args.out, f"decoder_{tag}.json", report)


if __name__ == "__main__":
    main()
