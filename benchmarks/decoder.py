"""Lyra decoder speed and memory: hybrid (Transformer + Mamba-2) vs all-Transformer, and the
render-time gain of 80 % opacity pruning.

Decoder forward (inference mode) of the hybrid decoder and of an all-Transformer decoder of the
same width and depth, over growing inputs: 1, 2 and 6 trajectories x growing latent frames, on
every device available (Lyra reports 6.5x at full size: 20,922 ms -> 3,213 ms). Each case runs in
a fresh process so that its peak memory is its own. Then one decoded world is rendered with and
without pruning (keep the 20 % most opaque Gaussians; Lyra: 30 ms -> 18 ms, 1.67x).

The default sizes fit a 2-core CPU (width 256, 8 blocks, 32x32 latent grid); ``--width 512
--layers 16 --grid 88 160`` is Lyra's full size for a GPU.

``--lyra1`` measures Lyra-1's released decoder instead (:meth:`LyraDecoderConfig.lyra1`, full
width and depth, random weights): parameters, forward time and memory on reduced inputs (hybrid
vs all-Transformer, each in a fresh process), and the analytic activation memory of the
full-size forward (6 views x 16 latent frames x 88 x 160, bf16) from per-token live bytes
(:func:`lyra1_activation_bytes`), shown beside the measured peak of the same reduced inputs.
Writes ``decoder_lyra1_{cpu,cuda}.json``.

Usage: python benchmarks/decoder.py [--views 1 2 6] [--frames 1 2 4] [--out benchmarks/results]
       python benchmarks/decoder.py --lyra1 [--views 1 2] [--frames 2] [--grid 16 32]
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
from lyra_core.models.decoder import (
    RAW_CHANNELS,
    LyraDecoder,
    LyraDecoderConfig,
    count_parameters,
)
from lyra_core.models.lyra1 import Lyra1Decoder
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


def environment() -> dict:
    """Date, versions and devices of this run, for the report."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def compare_hybrid_and_attention(measure, devices: list[str], args) -> list[dict]:
    """Rows of ``measure(views, frames, all_transformer, device, args)`` for the hybrid and the
    all-Transformer decoder of every case, each in a fresh process, printed as a table."""
    print(
        f"{'device':>6} {'views':>5} {'frames':>6} {'tokens':>7} {'hybrid ms':>10} "
        f"{'all-attn ms':>11} {'speedup':>7} {'hybrid MB':>9} {'all-attn MB':>11}"
    )
    rows = []
    for device in devices:
        for views in args.views:
            for frames in args.frames:
                hybrid = _in_fresh_process(measure, views, frames, False, device, args)
                attention = _in_fresh_process(measure, views, frames, True, device, args)
                speedup = round(attention["ms"] / hybrid["ms"], 2)
                rows += [hybrid | {"speedup_vs_all_transformer": speedup}, attention]
                print(
                    f"{device:>6} {views:>5} {frames:>6} {hybrid['tokens']:>7} "
                    f"{hybrid['ms']:>10.1f} {attention['ms']:>11.1f} {speedup:>6.2f}x "
                    f"{hybrid['peak_mem_mb']:>9.0f} {attention['peak_mem_mb']:>11.0f}",
                    flush=True,
                )
    return rows


# ------------------------------------------------------------------ Lyra-1's released decoder

LYRA1_FULL = {"views": 6, "latent_frames": 16, "grid": (88, 160)}


def lyra1_activation_bytes(
    config: LyraDecoderConfig, dtype_bytes: int = 2, scan: str = "torch", chunk: int = 64
) -> dict[str, float]:
    """Live activation bytes PER TOKEN at the widest point of each stage of an inference-mode
    forward of :class:`Lyra1Decoder` (no autograd; flash/SDPA attention, linear in tokens).

    An estimate that counts the tensors alive together, in ``dtype_bytes`` (bf16: 2), with the
    SSD's chunk states in float32:

    - Mamba-2 block (shared layout): residual + normed input (2 D), ``in_proj`` output and its
      reversed copy (2 x (2 d_inner + 2 d_state + heads)), one scan's conv and SiLU outputs
      (2 x conv_dim), its gated norm and the other scan's output (2 d_inner); plus the scan's
      float32 working set: our :func:`ssd_chunked` holds x, x dt, the intra-chunk output and
      its sum (4+ d_inner), B and C (2 d_state), the chunk scores (heads x chunk) and the
      chunk-end and entering states (2 x heads x head_dim x d_state / chunk, chunk 64);
      mamba_ssm's kernel its states (chunk 256) and one d_inner output;
    - Transformer block: residual, normed input, qkv (3 D), attention output, projection; MLP:
      hidden and its GELU (2 x mlp_ratio D);
    - head: the deconv's raw output (12 channels x pixels per token) and, in float32, the
      Gaussians made from it (raw copy 12, means 3, quats 4, scales 3, opacity 1, rgb 3,
      depth 1, rays 6: 33 floats each).
    """
    c = config
    d, d_inner = c.width, c.expand * c.width
    heads = d_inner // c.head_dim
    in_proj = 2 * d_inner + 2 * c.d_state + heads
    conv_dim = d_inner + 2 * c.d_state
    if scan == "kernel":
        scan_floats = 2 * heads * c.head_dim * c.d_state / 256 + d_inner
    else:
        states = heads * c.head_dim * c.d_state / chunk
        scan_floats = 6 * d_inner + 2 * c.d_state + heads * chunk + 2 * states
    mamba = dtype_bytes * (2 * d + 2 * in_proj + 2 * conv_dim + 2 * d_inner) + 4 * scan_floats
    attention = dtype_bytes * (2 * d + 3 * d + d + d)
    mlp = dtype_bytes * (2 * d + 2 * int(c.mlp_ratio * d))
    gaussians_per_token = (
        (c.temporal_factor * (LYRA1_FULL["latent_frames"] - 1) + 1)
        / (LYRA1_FULL["latent_frames"])
        * c.patch_size**2
    )
    head = gaussians_per_token * (dtype_bytes * RAW_CHANNELS + 4 * 33)
    return {"mamba_block": mamba, "attention": attention, "mlp": mlp, "head": head}


def lyra1_full_size_memory(config: LyraDecoderConfig, scan: str, all_transformer: bool) -> dict:
    """Analytic peak activation memory of the full-size forward (bf16) plus the weights."""
    views, frames, (h, w) = LYRA1_FULL["views"], LYRA1_FULL["latent_frames"], LYRA1_FULL["grid"]
    tokens = views * frames * (h // config.patch_size) * (w // config.patch_size)
    per_token = lyra1_activation_bytes(config, 2, scan)
    stages = ["attention", "mlp", "head"] + ([] if all_transformer else ["mamba_block"])
    peak = max(per_token[s] for s in stages)
    weights = 2 * count_parameters(Lyra1Decoder(config))
    return {
        "tokens": tokens,
        "bytes_per_token": {s: round(per_token[s]) for s in stages},
        "peak_stage": max(stages, key=lambda s: per_token[s]),
        "activation_gib": round(peak * tokens / 2**30, 2),
        "weights_gib": round(weights / 2**30, 3),
    }


def lyra1_inputs(views: int, frames: int, grid: tuple[int, int], video_frames: int, device):
    h, w = grid
    latents = torch.randn(1, views, frames, 16, h, w, device=device)
    plucker = torch.randn(1, views, frames, 32, h, w, device=device)
    poses = torch.stack(
        [
            look_at((0.2 * v - 0.5, 0.0, 0.01 * t), (0.0, 0.0, 3.0))
            for v in range(views)
            for t in range(video_frames)
        ]
    ).reshape(1, views, video_frames, 4, 4)
    Ks = Intrinsics.from_fov(1.0, w * 8, h * 8).matrix(device=device)
    return latents, plucker, poses.to(device), Ks.expand(1, views, video_frames, 3, 3)


def measure_lyra1_case(views: int, frames: int, all_transformer: bool, device_name: str, args):
    """One Lyra-1 row, in a fresh process."""
    torch.manual_seed(0)
    device = torch.device(device_name)
    config = LyraDecoderConfig.lyra1()
    if all_transformer:
        config.transformer_layers = tuple(range(config.num_layers))
    model = Lyra1Decoder(config).to(device).eval()
    grid = tuple(args.grid)
    inputs = lyra1_inputs(views, frames, grid, model.video_frames(frames), device)

    def run() -> object:
        with torch.inference_mode():
            return model(*inputs)

    peak = peak_memory_mb(run, device)
    seconds = time_call(run, device, args.repeats, args.budget)
    h, w = grid
    tokens = views * frames * (h // 2) * (w // 2)
    per_token = lyra1_activation_bytes(config, 4, "torch")  # float32 on the CPU
    stages = ["attention", "mlp", "head"] + ([] if all_transformer else ["mamba_block"])
    return {
        "decoder": "lyra1-all-transformer" if all_transformer else "lyra1-hybrid",
        "device": device.type,
        "views": views,
        "latent_frames": frames,
        "latent_grid": list(grid),
        "tokens": tokens,
        "gaussians": views * model.video_frames(frames) * h * w,
        "parameters": count_parameters(model),
        "ms": round(seconds * 1e3, 1),
        "peak_mem_mb": round(peak, 1),
        "analytic_activation_mb": round(max(per_token[s] for s in stages) * tokens / 2**20, 1),
    }


def run_lyra1(args: argparse.Namespace, devices: list[str]) -> None:
    rows = compare_hybrid_and_attention(measure_lyra1_case, devices, args)
    static, dynamic = LyraDecoderConfig.lyra1(), LyraDecoderConfig.lyra1_dynamic()
    all_attention = LyraDecoderConfig.lyra1()
    all_attention.transformer_layers = tuple(range(all_attention.num_layers))
    full = {
        "inputs": LYRA1_FULL | {"gaussians": 6 * 121 * 88 * 160, "dtype": "bfloat16"},
        "hybrid_torch_scan": lyra1_full_size_memory(static, "torch", False),
        "hybrid_kernel": lyra1_full_size_memory(static, "kernel", False),
        "all_transformer": lyra1_full_size_memory(all_attention, "torch", True),
        "measured": "benchmarks/results/gpu_check_cuda.json once a GPU has run it",
    }
    print(
        "full size, analytic activations (bf16): hybrid "
        f"{full['hybrid_torch_scan']['activation_gib']} GiB with our scan, "
        f"{full['hybrid_kernel']['activation_gib']} GiB with the kernel"
    )
    report = {
        "benchmark": "decoder_lyra1",
        **environment(),
        "config": "LyraDecoderConfig.lyra1(): width 512, 16 blocks (Transformer 7 and 15), "
        "shared bidirectional Mamba-2, d_state 256, random weights, float32 on the CPU",
        "parameters": {
            "static": count_parameters(Lyra1Decoder(static)),
            "dynamic": count_parameters(Lyra1Decoder(dynamic)),
            "all_transformer": count_parameters(Lyra1Decoder(all_attention)),
        },
        "timing": "inference-mode forward, median after a warm-up, one fresh process per case",
        "memory": "peak_mem_mb: measured extra RSS (CPU) or allocator peak (CUDA); "
        "analytic_activation_mb: lyra1_activation_bytes x tokens (widest stage, float32)",
        "lyra_reference": {"speedup_full_size": 6.5, "parameters": "about 33M"},
        "rows": rows,
        "full_size_analytic": full,
    }
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    write_report(args.out, f"decoder_lyra1_{tag}.json", report)


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
    parser.add_argument("--lyra1", action="store_true", help="Lyra-1's released decoder instead")
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.lyra1:
        run_lyra1(args, devices)
        return
    rows = compare_hybrid_and_attention(measure_case, devices, args)
    pruning = [_in_fresh_process(pruning_case, device, args) for device in devices]
    for row in pruning:
        print(
            f"pruning on {row['device']}: {row['gaussians_full']} -> "
            f"{row['gaussians_pruned']} Gaussians, render {row['render_ms_full']} -> "
            f"{row['render_ms_pruned']} ms ({row['speedup']}x; Lyra 1.67x)"
        )
    report = {
        "benchmark": "decoder",
        **environment(),
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
