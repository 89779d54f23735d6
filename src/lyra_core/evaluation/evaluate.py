"""Evaluate Lyra students on held-out procedural scenes: ``lyra eval --student NAME=FOLDER ...``.

Every method turns a test scene into Gaussians and is rendered at the scene's held-out cameras
(views no trajectory passes through) against the ground-truth renders:

- ``3d_cache``: the raw 3D cache, i.e. the input view's own Gaussians (one per pixel, from its
  RGB-D), the baseline Lyra improves on;
- each ``--student NAME=FOLDER``: a student checkpoint reading the scene's six 3D-cache
  trajectory videos (exactly what it was trained on).

Metrics per held-out view: PSNR (dB, higher is better), SSIM (higher is better) and a learned
perceptual distance (ST-LPIPS by default, lower is better), averaged per scene, then over scenes;
and PSNR split by the 3D cache's coverage of each held-out view (``psnr_covered``: pixels the
cache renders to, ``psnr_uncovered``: pixels it leaves empty, where only a generative model can
help; ``uncovered_fraction``: their share). For students also how their Gaussians of the input
view fit it (:func:`input_view_fit`: colour PSNR and median relative depth error).
Outputs in ``--out``: ``metrics.json`` (settings, means, per-scene values), ``metrics.md`` (a
markdown table) and ``heldout.png`` (targets over every method's renders for a few scenes).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.format import SceneSample, ViewSet, list_scenes, load_scene, scene_inputs
from lyra_core.evaluation.metrics import perceptual_distance, psnr, ssim
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.models.decoder import DecoderOutput, LyraDecoder, count_parameters
from lyra_core.models.perceptual.metric import PerceptualMetric, load_perceptual
from lyra_core.pipelines.cache3d import cache_gaussians as build_cache
from lyra_core.pipelines.student import LyraStudent
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.media import contact_sheet, to_uint8, write_png, write_text

WorldMethod = Callable[[SceneSample], Gaussians]
EvalMethod = Callable[[SceneSample], tuple[Gaussians, dict[str, float]]]  # + diagnostics
CACHE_METHOD = "3d_cache"
SSIM_WINDOW = 11


def cache_gaussians(sample: SceneSample) -> Gaussians:
    """The raw 3D cache of a scene: its input view unprojected with its depth (world frame)."""
    intrinsics = Intrinsics.from_matrix(
        sample.input_K, sample.input_rgb.shape[1], sample.input_rgb.shape[0]
    )
    return build_cache(sample.input_rgb, sample.input_depth, intrinsics, sample.input_camtoworld)


def decode_scene(student: LyraStudent, sample: SceneSample) -> DecoderOutput:
    """The student's per-pixel Gaussians for a scene's 3D-cache trajectory videos (no grad)."""
    with torch.inference_mode():
        return student(*scene_inputs(sample))


def student_method(student: LyraStudent, prune_ratio: float | None = None) -> WorldMethod:
    """A method decoding a scene's 3D-cache trajectory videos with ``student``, pruned by
    ``prune_ratio`` (default: the decoder config's)."""
    ratio = _prune_ratio(student, prune_ratio)

    def world(sample: SceneSample) -> Gaussians:
        with torch.inference_mode():
            return decode_scene(student, sample).to_gaussians(prune_ratio=ratio)

    return world


def input_view_fit(output: DecoderOutput, sample: SceneSample) -> dict[str, float]:
    """How well a student's Gaussians of the input view match it.

    Every trajectory starts at the input camera, so latent frame 0 of each of the V trajectories
    puts one Gaussian on every input pixel ray. Returns ``input_rgb_psnr``: PSNR (dB) of their
    colours against the input pixels, and ``input_depth_error``: median relative error of their
    z-depths against the input depth (pixels with depth). The raw 3D cache is exact on both by
    construction; a student has to learn them.

    Args:
        output: the student's decoding of ``sample`` (:func:`decode_scene`).
    """
    first = torch.stack([v.camtoworlds[:1] for v in sample.trajectories.values()])[None]
    rgb = output.rgb[0, :, 0]  # (V, H, W, 3)
    depth = output.z_depth(first.to(output.means))[0, :, 0]  # (V, H, W)
    target_rgb = (sample.input_rgb.float() / 255.0).expand_as(rgb)
    target_depth = sample.input_depth.float()
    valid = target_depth > 0
    error = (depth[:, valid] - target_depth[valid]).abs() / target_depth[valid]
    return {
        "input_rgb_psnr": float(psnr(rgb, target_rgb).mean()),
        "input_depth_error": float(error.median()),
    }


def student_eval_method(student: LyraStudent, prune_ratio: float | None = None) -> EvalMethod:
    """:func:`student_method` plus :func:`input_view_fit` of the same decoding."""
    ratio = _prune_ratio(student, prune_ratio)

    def world_and_fit(sample: SceneSample) -> tuple[Gaussians, dict[str, float]]:
        with torch.inference_mode():
            output = decode_scene(student, sample)
            return output.to_gaussians(prune_ratio=ratio), input_view_fit(output, sample)

    return world_and_fit


def _prune_ratio(student: LyraStudent, prune_ratio: float | None) -> float:
    return student.decoder.config.prune_ratio if prune_ratio is None else prune_ratio


def cache_method(sample: SceneSample) -> tuple[Gaussians, dict[str, float]]:
    """The baseline as an :data:`EvalMethod` (no diagnostics: the cache is its own input)."""
    return cache_gaussians(sample), {}


def render_views(gaussians: Gaussians, views: ViewSet, background: tuple[float, ...]) -> Tensor:
    """Render ``gaussians`` at every camera of ``views``: (N, H, W, 3) in [0, 1]."""
    height, width = views.rgb.shape[1:3]
    cameras = Cameras(views.camtoworlds, views.Ks, width, height)
    with torch.inference_mode():
        return render(gaussians, cameras, background=background).rgb.clamp(0.0, 1.0)


def image_metrics(
    rendered: Tensor, target: Tensor, perceptual: PerceptualMetric | None
) -> dict[str, float]:
    """Mean PSNR, SSIM and perceptual distance (keyed by the metric's name) of (N, H, W, 3)
    renders against targets; SSIM and the perceptual distance only for images at least their
    window (11 px) and ``min_size``."""
    scores = {"psnr": float(psnr(rendered, target).mean())}
    size = min(rendered.shape[-3:-1])
    if size >= SSIM_WINDOW:
        scores["ssim"] = float(ssim(rendered, target, window=SSIM_WINDOW).mean())
    if perceptual is not None and size >= perceptual.min_size:
        with torch.inference_mode():
            distance = perceptual_distance(rendered, target, perceptual)
        scores[perceptual.name] = float(distance.mean())
    return scores


def coverage_psnr(rendered: Tensor, target: Tensor, covered: Tensor) -> dict[str, float]:
    """PSNR (dB) over the pixels the 3D cache covers and over those it leaves empty (pooled
    over the N views; a region without pixels is left out), and the empty share.

    Args:
        rendered, target: (N, H, W, 3) in [0, 1]; covered: (N, H, W) bool cache mask.
    """
    err = (rendered - target).square().mean(dim=-1)
    scores = {"uncovered_fraction": float((~covered).float().mean())}
    for name, region in (("psnr_covered", covered), ("psnr_uncovered", ~covered)):
        if bool(region.any()):
            scores[name] = float(-10.0 * torch.log10(err[region].mean().clamp_min(1e-10)))
    return scores


def evaluate_scenes(
    scenes: list[Path],
    methods: dict[str, EvalMethod],
    perceptual: PerceptualMetric | None,
    sheet_scenes: int = 4,
) -> tuple[dict[str, list[dict[str, float]]], list[list[np.ndarray]], list[str]]:
    """Per-scene metrics of every method (and the diagnostics it returns beside its Gaussians),
    and contact-sheet rows for the first scenes.

    Returns:
        ``{method: [scene metrics...]}``, sheet rows (uint8 images) and their labels.
    """
    per_scene: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    for index, scene in enumerate(tqdm(scenes, desc="eval", unit="scene")):
        sample = load_scene(scene)
        target = sample.heldout.rgb.float() / 255.0
        if index < sheet_scenes:
            rows.append([to_uint8(t) for t in target])
            labels.append(f"{scene.name} target")
        for name, method in methods.items():
            gaussians, diagnostics = method(sample)
            rendered = render_views(gaussians, sample.heldout, sample.background)
            scores = image_metrics(rendered, target, perceptual)
            scores |= coverage_psnr(rendered, target, sample.heldout.cache_mask)
            scores |= diagnostics
            per_scene[name].append({"scene": scene.name, **scores})
            if index < sheet_scenes:
                rows.append([to_uint8(r) for r in rendered])
                labels.append(name)
    return per_scene, rows, labels


def summarize(per_scene: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of every metric over scenes, per method."""
    summary = {}
    for name, scores in per_scene.items():
        keys = dict.fromkeys(k for s in scores for k in s if k != "scene")
        summary[name] = {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}
    return summary


def markdown_table(summary: dict[str, dict[str, float]], extra: dict[str, dict]) -> str:
    """A markdown table: a row per method, a column per metric (plus parameter counts)."""
    metrics = list(dict.fromkeys(m for scores in summary.values() for m in scores))
    arrows = {
        "psnr": "PSNR (dB) ↑",
        "ssim": "SSIM ↑",
        "psnr_covered": "PSNR cache-covered ↑",
        "psnr_uncovered": "PSNR cache-empty ↑",
        "uncovered_fraction": "empty share",
        "input_rgb_psnr": "input-view colours (dB) ↑",
        "input_depth_error": "input-view depth error ↓",
    }
    header = ["method", "parameters"] + [arrows.get(m, f"{m} ↓") for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in summary.items():
        params = extra.get(name, {}).get("parameters")
        cells = [name, f"{params:,}" if params else "-"]
        cells += [_cell(m, scores.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if "psnr" in metric else f"{value:.4f}"


def parse_student(spec: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` (or just ``FOLDER``, named after it) -> (name, folder)."""
    name, sep, folder = spec.partition("=")
    if not sep:
        return Path(spec).name, Path(spec)
    return name, Path(folder)


def with_fresh_decoder(student: LyraStudent, seed: int = 0) -> LyraStudent:
    """The same VAE with a newly initialised decoder of the same config (an untrained control)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        decoder = LyraDecoder(student.decoder.config)
    return LyraStudent(student.vae, decoder).eval()


def student_record(
    student: LyraStudent, folder: Path, prune_ratio: float | None, training: dict
) -> dict:
    """What the report says about a student: checkpoint, size, architecture, training."""
    config = student.decoder.config
    return {
        "checkpoint": str(folder),
        "parameters": count_parameters(student.decoder),
        "transformer_layers": list(config.transformer_layers),
        "num_layers": config.num_layers,
        "width": config.width,
        "prune_ratio": _prune_ratio(student, prune_ratio),
        "trained_on": training,
    }


def evaluate(
    data_dir: Path,
    split: str,
    students: dict[str, Path],
    out_dir: Path,
    max_scenes: int | None = None,
    perceptual_name: str = "stlpips-alex",
    prune_ratio: float | None = None,
    untrained_control: bool = False,
) -> dict:
    """Evaluate the 3D-cache baseline and every student; write the report files.

    With ``untrained_control``, every student is also evaluated with its decoder re-initialised
    (seed 0; same VAE): the floor that training has to rise above.

    Returns:
        The ``metrics.json`` content.
    """
    scenes = list_scenes(Path(data_dir) / split)[:max_scenes]
    if not scenes:
        raise FileNotFoundError(f"no scenes in {Path(data_dir) / split}")
    perceptual = load_perceptual(perceptual_name)
    methods: dict[str, EvalMethod] = {CACHE_METHOD: cache_method}
    extra: dict[str, dict] = {CACHE_METHOD: {}}
    for name, folder in students.items():
        student, student_config = LyraStudent.from_pretrained(folder)
        variants = {name: student}
        if untrained_control:
            variants[f"{name}_untrained"] = with_fresh_decoder(student)
        for variant, model in variants.items():
            methods[variant] = student_eval_method(model, prune_ratio)
            extra[variant] = student_record(model, folder, prune_ratio, student_config.training)
    per_scene, rows, labels = evaluate_scenes(scenes, methods, perceptual)
    summary = summarize(per_scene)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": "cpu",
        "machine": platform.machine(),
        "torch": torch.__version__,
        "data": {
            "split": split,
            "scenes": len(scenes),
            "views_per_scene": int(load_scene(scenes[0]).heldout.rgb.shape[0]),
        },
        "perceptual": perceptual.name if perceptual is not None else None,
        "prune_ratio": prune_ratio,
        "methods": extra,
        "summary": summary,
        "per_scene": per_scene,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    write_text(out_dir / "metrics.md", markdown_table(summary, extra))
    write_png(out_dir / "heldout.png", contact_sheet(rows, labels))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyra eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/procedural"), help="data root")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a student checkpoint folder (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/eval"))
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument(
        "--perceptual", default="stlpips-alex", help="stlpips-alex, stlpips-vgg, lpips-... or none"
    )
    parser.add_argument(
        "--prune-ratio",
        type=float,
        default=None,
        help="share of Gaussians pruned (default: decoder config)",
    )
    parser.add_argument(
        "--untrained-control",
        action="store_true",
        help="also each student with a re-initialised decoder",
    )
    args = parser.parse_args(argv)
    students = dict(parse_student(spec) for spec in args.student)
    report = evaluate(
        args.data,
        args.split,
        students,
        args.out,
        args.max_scenes,
        args.perceptual,
        args.prune_ratio,
        args.untrained_control,
    )
    print(markdown_table(report["summary"], report["methods"]), end="")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
