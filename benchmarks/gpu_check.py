"""The measurements of ``benchmarks/gpu_check.sh`` (one GPU, under 10 minutes, nothing
downloaded): each case runs in its own subprocess with a time limit, so an out-of-memory or a
slow kernel compilation costs one row, not the run.

Cases (full sizes on CUDA; ``--cpu-smoke`` runs every case at toy sizes on the CPU):

- ``decoder``: Lyra-1's decoder (:meth:`LyraDecoderConfig.lyra1`, random weights, bf16 on CUDA)
  forward time and peak memory on 6 views x 16 latent frames x 88 x 160 latents (10.2 M
  Gaussians out): hybrid with mamba_ssm's kernel, hybrid with our PyTorch SSD scan, and the
  all-Transformer decoder of the same width and depth (Lyra reports 6.5x);
- ``mamba``: one shared bidirectional Mamba-2 block over the same 337,920 tokens, kernel vs our
  scan: time and the largest difference between the two outputs;
- ``render``: gsplat render of 1 M Gaussians at 640 x 480 (fps; goal at least 200);
- ``teacher`` (the report's ``teacher`` section): one denoising step of GEN3C's full-size
  transformer (:meth:`Gen3CTransformerConfig.full`, random weights, bf16) at 121 x 704 x 1280
  (latents 16 x 88 x 160, 56,320 tokens) through :meth:`Gen3CPipeline.sample` with guidance 1
  (two transformer calls): seconds and peak memory, with the transformer resident on the GPU
  and with it offloaded to the CPU between steps (``offload=True``: the step includes the
  14 GB move there and back). The 24 GB goal of docs/teacher.md.

A case whose dependency is missing (mamba_ssm, gsplat, CUDA) is recorded as skipped with the
reason. ``--merge`` adds the result of ``pytest -m cuda`` (a JUnit XML file) and writes the one
JSON report.

Usage:
    python benchmarks/gpu_check.py --json measure.json [--cpu-smoke] [--deadline-s 420]
    python benchmarks/gpu_check.py --merge measure.json --junit cuda.xml --pytest-rc N --out F
    python benchmarks/gpu_check.py --case decoder --variant hybrid-kernel [--cpu-smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import torch

FULL = {
    "views": 6,
    "latent_frames": 16,
    "grid": (88, 160),
    "gaussians": 1_000_000,
    "image": (640, 480),
}
SMOKE = {"views": 2, "latent_frames": 2, "grid": (4, 6), "gaussians": 2_000, "image": (64, 48)}
DECODER_VARIANTS = ("hybrid-kernel", "hybrid-torch", "all-transformer")
CASES = [("decoder", v) for v in DECODER_VARIANTS] + [
    ("mamba", "kernel-vs-torch"),
    ("render", "gsplat"),
]
CASE_LIMIT_S = {"decoder": 120, "mamba": 90, "render": 240, "teacher": 120}
# (gsplat may compile its kernels)
TEACHER_CASES = [("teacher", "resident"), ("teacher", "offload")]
TEACHER_FULL = {"frames": 121, "image": (1280, 704)}
TEACHER_SMOKE = {"frames": 9, "image": (48, 32)}


def _device(smoke: bool) -> torch.device:
    return torch.device("cpu" if smoke else "cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds after one warm-up, peak allocated MB on CUDA or NaN on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
    return sorted(times)[len(times) // 2], peak


def _kernel_available() -> bool:
    from lyra_core.models.ssd import mamba_kernel_available

    return mamba_kernel_available()


def decoder_case(variant: str, smoke: bool) -> dict:
    """Lyra-1 decoder forward, random weights."""
    from dataclasses import replace

    from lyra_core.geometry.cameras import Intrinsics
    from lyra_core.geometry.transforms import look_at
    from lyra_core.models.decoder import LyraDecoderConfig, count_parameters
    from lyra_core.models.lyra1 import Lyra1Decoder

    sizes = SMOKE if smoke else FULL
    device = _device(smoke)
    if variant == "hybrid-kernel" and (smoke or not _kernel_available()):
        return {"skipped": "mamba_ssm's kernel needs CUDA and an importable mamba_ssm"}
    config = LyraDecoderConfig.lyra1()
    if smoke:
        config = replace(
            config,
            width=64,
            num_heads=1,
            num_layers=4,
            transformer_layers=(1, 3),
            d_state=16,
            head_dim=16,
        )
    if variant == "all-transformer":
        config = replace(config, transformer_layers=tuple(range(config.num_layers)))
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    model = Lyra1Decoder(config).to(device, dtype).eval()
    use_kernel = variant == "hybrid-kernel"
    for module in model.modules():
        if hasattr(module, "use_kernel"):
            module.use_kernel = use_kernel
    views, frames, (h, w) = sizes["views"], sizes["latent_frames"], sizes["grid"]
    video_frames = model.video_frames(frames)
    latents = torch.randn(1, views, frames, 16, h, w, device=device, dtype=dtype)
    plucker = torch.randn(1, views, frames, 32, h, w, device=device, dtype=dtype)
    poses = (
        torch.stack(
            [
                look_at((0.3 * v, 0.0, 0.01 * t), (0.0, 0.0, 5.0))
                for v in range(views)
                for t in range(video_frames)
            ]
        )
        .reshape(1, views, video_frames, 4, 4)
        .to(device)
    )
    Ks = (
        Intrinsics.from_fov(1.0, w * 8, h * 8)
        .matrix(device=device)
        .expand(1, views, video_frames, 3, 3)
    )

    def run() -> None:
        with torch.inference_mode():
            model(latents, plucker, poses, Ks)

    seconds, peak = _timed(run, device, repeats=1 if smoke else 2)
    return {
        "variant": variant,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": count_parameters(model),
        "tokens": views * frames * (h // 2) * (w // 2),
        "gaussians": views * video_frames * h * w,
        "ms": round(seconds * 1e3, 1),
        "peak_mem_mb": None if math.isnan(peak) else round(peak, 1),
    }


def mamba_case(smoke: bool) -> dict:
    """One shared bidirectional Mamba-2 block: mamba_ssm's kernel vs our PyTorch scan."""
    from lyra_core.models.mamba2 import Mamba2Block

    if not smoke and not _kernel_available():
        return {"skipped": "mamba_ssm not importable"}
    sizes = SMOKE if smoke else FULL
    device = _device(smoke)
    h, w = sizes["grid"]
    length = sizes["views"] * sizes["latent_frames"] * (h // 2) * (w // 2)
    width, d_state, dtype = (64, 16, torch.float32) if smoke else (512, 256, torch.bfloat16)
    torch.manual_seed(0)
    block = Mamba2Block(width, d_state=d_state, head_dim=16 if smoke else 64, layout="shared")
    block = block.to(device, dtype).eval()
    x = torch.randn(1, length, width, device=device, dtype=dtype)
    results, outputs = {}, {}
    for name, use_kernel in (("kernel", True), ("torch", False)):
        if use_kernel and smoke:
            continue
        for module in block.modules():
            if hasattr(module, "use_kernel"):
                module.use_kernel = use_kernel

        def run(name: str = name) -> None:
            with torch.inference_mode():
                outputs[name] = block(x)

        seconds, peak = _timed(run, device, repeats=1 if smoke else 3)
        results[f"{name}_ms"] = round(seconds * 1e3, 2)
        results[f"{name}_peak_mem_mb"] = None if math.isnan(peak) else round(peak, 1)
    if "kernel" in outputs:
        diff = (outputs["kernel"].float() - outputs["torch"].float()).abs().max().item()
        results["max_abs_diff"] = diff
        results["speedup_kernel"] = round(results["torch_ms"] / results["kernel_ms"], 2)
    return {"tokens": length, "width": width, "d_state": d_state, "dtype": str(dtype)[6:]} | results


def render_case(smoke: bool) -> dict:
    """Render a procedural room of 1 M Gaussians (smoke: 2k on the CPU, torch backend)."""
    from lyra_core.geometry.cameras import Cameras, Intrinsics
    from lyra_core.geometry.transforms import look_at
    from lyra_core.rendering import available_backends, render
    from lyra_core.scene.procedural_room import procedural_room

    backend = "torch" if smoke else "gsplat"
    if backend not in available_backends():
        return {"skipped": f"the {backend} backend is not available"}
    sizes = SMOKE if smoke else FULL
    device = _device(smoke)
    width, height = sizes["image"]
    scene = procedural_room(sizes["gaussians"], seed=0).to(device)
    eye, target = torch.tensor([0.0, -2.5, 1.4]), torch.tensor([0.0, 1.0, 0.8])
    pose = look_at(eye, target, up=torch.tensor([0.0, 0.0, 1.0]))[None]
    cams = Cameras.from_intrinsics(pose, Intrinsics.from_fov(1.0, width, height)).to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        render(scene, cams, backend=backend)  # first call: gsplat compiles or loads its kernels
    _sync(device)
    first_s = time.perf_counter() - start

    def run() -> None:
        with torch.inference_mode():
            render(scene, cams, backend=backend)

    seconds, peak = _timed(run, device, repeats=3 if smoke else 20)
    return {
        "backend": backend,
        "gaussians": sizes["gaussians"],
        "image": [width, height],
        "first_call_s": round(first_s, 2),
        "ms": round(seconds * 1e3, 2),
        "fps": round(1.0 / seconds, 1),
        "goal_fps": 200,
        "peak_mem_mb": None if math.isnan(peak) else round(peak, 1),
    }


def teacher_case(variant: str, smoke: bool) -> dict:
    """One denoising step (guidance 1: two transformer calls) of GEN3C's transformer, random
    weights; smoke: the tiny config on the CPU."""
    from lyra_core.models.gen3c import Gen3CTransformerConfig, build_transformer
    from lyra_core.models.vae import VideoVAE
    from lyra_core.pipelines.gen3c import Gen3CPipeline

    device = _device(smoke)
    config = Gen3CTransformerConfig.tiny() if smoke else Gen3CTransformerConfig.full()
    dtype = torch.float32 if smoke else torch.bfloat16
    sizes = TEACHER_SMOKE if smoke else TEACHER_FULL
    torch.manual_seed(0)
    # Built without memory, then materialised in bf16 and filled on the device (fast).
    transformer = build_transformer(config, device="meta")
    torch.nn.Module.to(transformer, dtype)  # (diffusers' ``to`` warns about float32 modules)
    transformer.to_empty(device=device)
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0.0, 0.02)
    transformer.learnable_pos_embed.float()  # float32, as from_pretrained keeps it
    offload = variant == "offload"
    if offload:
        transformer.to("cpu")
    text = torch.randn(2, 1, 512 if not smoke else 8, config.text_embed_dim)
    pipe = Gen3CPipeline(
        transformer,
        VideoVAE.tiny(),
        text[0],
        text[1],
        device=device,
        dtype=dtype,
        offload=offload,
        progress=False,
    )
    width, height = sizes["image"]
    frames = 1 + (sizes["frames"] - 1) // 8
    image_latent = torch.randn(1, 16, 1, height // 8, width // 8)
    pose = torch.randn(1, config.pose_channels, frames, height // 8, width // 8)
    generator = torch.Generator().manual_seed(0)

    def run() -> None:
        pipe.sample(image_latent, pose, generator, num_inference_steps=1, guidance_scale=1.0)

    seconds, peak = _timed(run, device, repeats=1)
    parameters = sum(p.numel() for p in transformer.parameters())
    return {
        "variant": variant,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": parameters,
        "video": [sizes["frames"], height, width],
        "tokens": frames * (height // 16) * (width // 16),
        "transformer_calls": 2,
        "step_s": round(seconds, 3),
        "peak_mem_mb": None if math.isnan(peak) else round(peak, 1),
        "goal_peak_mem_mb": 24 * 1024,
    }


def run_case(case: str, variant: str, smoke: bool) -> dict:
    if not smoke and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    if case == "decoder":
        return decoder_case(variant, smoke)
    if case == "mamba":
        return mamba_case(smoke)
    if case == "teacher":
        return teacher_case(variant, smoke)
    return render_case(smoke)


def measure(smoke: bool, deadline_s: float) -> dict:
    """Every case in its own subprocess, each within its limit and the overall deadline: the
    teacher's first (the report's ``teacher`` section), then the rows."""
    start = time.monotonic()
    teacher = _run_cases(TEACHER_CASES, smoke, deadline_s, start)
    rows = _run_cases(CASES, smoke, deadline_s, start)
    return {"rows": rows, "teacher": teacher, "measure_s": round(time.monotonic() - start, 1)}


def _run_cases(
    cases: list[tuple[str, str]], smoke: bool, deadline_s: float, start: float
) -> list[dict]:
    rows = []
    for case, variant in cases:
        left = deadline_s - (time.monotonic() - start)
        limit = min(CASE_LIMIT_S[case], left)
        row = {"case": case, "variant": variant}
        if limit < 5:
            rows.append(row | {"skipped": "no time left"})
            continue
        command = [sys.executable, __file__, "--case", case, "--variant", variant]
        command += ["--cpu-smoke"] if smoke else []
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=limit, check=False
            )
        except subprocess.TimeoutExpired:
            rows.append(row | {"error": f"timed out after {limit:.0f} s"})
            print(f"{case} {variant}: timed out", flush=True)
            continue
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            row |= json.loads(lines[-1])
        else:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])[-400:]
            row |= {"error": f"exit {done.returncode}: {tail}"}
        row["wall_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Ratios: all-Transformer over hybrid (Lyra: 6.5x), our scan over the kernel."""
    ms = {r["variant"]: r.get("ms") for r in rows if r["case"] == "decoder"}
    summary = {}
    for hybrid in ("hybrid-kernel", "hybrid-torch"):
        if ms.get(hybrid) and ms.get("all-transformer"):
            summary[f"all_transformer_over_{hybrid.replace('-', '_')}"] = round(
                ms["all-transformer"] / ms[hybrid], 2
            )
    if ms.get("hybrid-kernel") and ms.get("hybrid-torch"):
        summary["torch_scan_over_kernel"] = round(ms["hybrid-torch"] / ms["hybrid-kernel"], 2)
    return summary


def pytest_result(junit: Path | None, rc: int | None) -> dict:
    """Counts from a JUnit XML file written by ``pytest --junitxml``."""
    result: dict = {"exit_code": rc}
    if junit is None or not junit.is_file():
        return result | {"error": "no JUnit report (pytest did not finish)"}
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError as err:
        return result | {"error": f"unreadable JUnit report ({err})"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for key in ("tests", "failures", "errors", "skipped"):
        result[key] = sum(int(s.get(key, 0)) for s in suites)
    result["passed"] = result["tests"] - result["failures"] - result["errors"] - result["skipped"]
    result["failed_tests"] = [
        f"{c.get('classname')}::{c.get('name')}"
        for c in root.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ][:20]
    return result


def merge(measured: Path, junit: Path | None, rc: int | None, out: Path, smoke: bool) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from report import write_report

    data = json.loads(measured.read_text()) if measured.is_file() else {"rows": []}
    report = {
        "benchmark": "gpu_check" + ("_cpu_smoke" if smoke else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "sizes": SMOKE if smoke else FULL,
        "timing": "median after one warm-up, inference mode, one subprocess per case; "
        "peak memory: CUDA allocator peak",
        "lyra_reference": {"all_transformer_over_hybrid": 6.5, "render_goal_fps": 200},
        "rows": data.get("rows", []),
        "teacher": data.get("teacher", []),
        "summary": summarise(data.get("rows", [])),
        "measure_s": data.get("measure_s"),
        "pytest_cuda": pytest_result(junit, rc),
    }
    return write_report(out.parent, out.name, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument(
        "--case", choices=("decoder", "mamba", "render", "teacher"), help="run one case"
    )
    parser.add_argument(
        "--variant", default="", help="variant of --case decoder or teacher (resident/offload)"
    )
    parser.add_argument("--json", type=Path, help="write the measured rows here")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="for all cases")
    parser.add_argument("--merge", type=Path, help="measured rows to merge into the report")
    parser.add_argument("--junit", type=Path, help="pytest -m cuda JUnit XML")
    parser.add_argument("--pytest-rc", type=int, help="pytest's exit status")
    parser.add_argument("--out", type=Path, help="the report JSON to write")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.variant, args.cpu_smoke)))
        return 0
    if args.merge:
        merge(args.merge, args.junit, args.pytest_rc, args.out, args.cpu_smoke)
        return 0
    if args.json is None:
        parser.error("give --case, --json or --merge")
    data = measure(args.cpu_smoke, args.deadline_s)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
