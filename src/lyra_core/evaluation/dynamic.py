"""Evaluate Lyra's dynamic student against the 4D cache at held-out (camera, time) pairs.

Every method turns a dynamic test scene's input video (RGB-D, poses, frame times;
:mod:`lyra_core.data.dynamic`) into the world at the held-out views' times, rendered at the
held-out cameras over the scene's background against the ground truth:

- ``4d_cache``: the 4D cache (:mod:`lyra_core.pipelines.cache4d`): at time ``t`` the input frame
  nearest in time, unprojected with its depth;
- ``NAME``: a dynamic student (:class:`~lyra_core.pipelines.dynamic_student.
  DynamicWorldPipeline`) decoding at each held-out time, anchored to the nearest input frame
  (its Gaussians exact, the student's only where that frame saw nothing);
- ``NAME_raw``: the same student's Gaussians alone (not anchored).

Metrics per scene: PSNR, SSIM and the perceptual distance (:func:`~lyra_core.evaluation.metrics.
image_metrics`) and the PSNR over pixels the 4D cache covers / leaves empty
(:func:`~lyra_core.evaluation.metrics.coverage_psnr`); means over scenes.

CLI: ``python -m lyra_core.evaluation.dynamic --data data/dynamic --split test --student
dynamic=FOLDER --out outputs/eval_dynamic`` (writes ``metrics.json``, ``metrics.md``,
``heldout.png``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.dynamic import DynamicSceneSample, load_dynamic_scene
from lyra_core.data.format import list_scenes
from lyra_core.evaluation.evaluate import (
    add_data_options,
    add_device_options,
    add_metric_options,
    parse_student,
)
from lyra_core.evaluation.metrics import coverage_psnr, image_metrics
from lyra_core.evaluation.report import environment, markdown_table, summarize, write_report
from lyra_core.geometry.cameras import Cameras
from lyra_core.models.decoder import count_parameters
from lyra_core.models.perceptual import PerceptualMetric, load_perceptual
from lyra_core.pipelines.cache4d import cache_world, render_world_at
from lyra_core.pipelines.dynamic_student import DynamicWorldPipeline
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.errors import CheckpointError, DataError, run_command
from lyra_core.utils.media import to_uint8

__all__ = [
    "CACHE_4D_METHOD",
    "RAW_SUFFIX",
    "cache_4d_method",
    "evaluate_dynamic",
    "evaluate_dynamic_scenes",
    "main",
    "render_heldout_4d",
    "scene_cache_4d",
    "student_4d_methods",
]

CACHE_4D_METHOD = "4d_cache"
RAW_SUFFIX = "_raw"
WorldMethod = Callable[[DynamicSceneSample], Gaussians]
"""``method(sample) -> 4D world`` (slices at least at the held-out times)."""


def scene_cache_4d(sample: DynamicSceneSample) -> Gaussians:
    """The scene's 4D cache from its input video."""
    views = sample.input
    return cache_world(
        views.rgb, views.depth, sample.intrinsics(), views.camtoworlds, sample.input_times
    )


def cache_4d_method(sample: DynamicSceneSample) -> Gaussians:
    """The baseline as a :data:`WorldMethod`."""
    return scene_cache_4d(sample)


def student_4d_methods(pipeline: DynamicWorldPipeline, name: str) -> dict[str, WorldMethod]:
    """``{name: anchored, name_raw: not anchored}`` methods of a dynamic student; each decodes
    once per distinct held-out time (the input video is prepared once per scene)."""
    prepared: dict[int, Any] = {}

    def inputs(sample: DynamicSceneSample):
        if sample.seed not in prepared:
            prepared.clear()
            views = sample.input
            prepared[sample.seed] = pipeline.prepare(
                views.rgb,
                views.depth,
                views.Ks[0],
                views.camtoworlds,
                sample.input_times,
                seed=sample.seed,
            )
        return prepared[sample.seed]

    def method(anchored: bool) -> WorldMethod:
        def world(sample: DynamicSceneSample) -> Gaussians:
            times = sorted({float(t) for t in sample.heldout_times})
            return pipeline.predict_4d(inputs(sample), times, anchored=anchored)

        return world

    return {name: method(True), name + RAW_SUFFIX: method(False)}


def render_heldout_4d(
    world: Gaussians, sample: DynamicSceneSample, device: torch.device | str = "cpu"
) -> Tensor:
    """Render a 4D world at the scene's held-out (camera, time) pairs over its background:
    (K, H, W, 3) float32 in [0, 1] on ``device``."""
    views = sample.heldout
    if views is None or sample.heldout_times is None:
        raise DataError(f"scene {sample.seed} has no held-out views")
    height, width = views.rgb.shape[1:3]
    cameras = Cameras(views.camtoworlds, views.Ks, width, height)
    return render_world_at(
        world, cameras, sample.heldout_times, sample.background, device, len(cameras), "float"
    ).rgb


def evaluate_dynamic_scenes(
    scenes: Sequence[Path],
    methods: dict[str, WorldMethod],
    perceptual: PerceptualMetric | None,
    sheet_scenes: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, list[dict[str, Any]]], list[list[np.ndarray]], list[str]]:
    """Per-scene metrics of every method and contact-sheet rows (targets, then each method)
    for the first ``sheet_scenes`` scenes."""
    per_scene: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    for index, scene in enumerate(tqdm(scenes, desc="eval 4D", unit="scene", disable=not progress)):
        sample = load_dynamic_scene(scene)
        if sample.heldout is None:
            raise DataError(f"scene {scene} has no held-out views")
        target = (sample.heldout.rgb.float() / 255.0).to(device)
        covered = sample.heldout.cache_mask.to(device)
        if index < sheet_scenes:
            rows.append([to_uint8(t) for t in target])
            labels.append(f"{scene.name} target")
        for name, method in methods.items():
            world = method(sample)
            rendered = render_heldout_4d(world, sample, device)
            scores = image_metrics(rendered, target, perceptual)
            scores |= coverage_psnr(rendered, target, covered)
            per_scene[name].append({"scene": scene.name, **scores})
            if index < sheet_scenes:
                rows.append([to_uint8(r) for r in rendered])
                labels.append(name)
    return per_scene, rows, labels


def evaluate_dynamic(
    data_dir: Path,
    split: str,
    students: dict[str, Path],
    out_dir: Path | None,
    max_scenes: int | None = None,
    perceptual_name: str = "stlpips-alex",
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the 4D cache and every dynamic student; write the report files into ``out_dir``
    (None: none). Returns the report (``summary``: the means per method).

    Raises:
        DataError: no scenes; CheckpointError: a student or the perceptual metric does not load.
    """
    scenes = list_scenes(Path(data_dir) / split)[:max_scenes]
    if not scenes:
        raise DataError(f"no dynamic scenes in {Path(data_dir) / split}")
    device = torch.device(device)
    methods: dict[str, WorldMethod] = {CACHE_4D_METHOD: cache_4d_method}
    records: dict[str, dict[str, Any]] = {CACHE_4D_METHOD: {}}
    for name, folder in students.items():
        pipeline = DynamicWorldPipeline.from_pretrained(folder, device=device)
        methods |= student_4d_methods(pipeline, name)
        record = {
            "checkpoint": str(folder),
            "parameters": count_parameters(pipeline.student.decoder),
            "trained_on": pipeline.config.training,
        }
        records[name] = record
        records[name + RAW_SUFFIX] = {**record, "anchored": False}
    try:
        perceptual = load_perceptual(perceptual_name)
    except (ValueError, ImportError, OSError) as err:
        raise CheckpointError(f"perceptual metric {perceptual_name!r}: {err}") from err
    if perceptual is not None:
        perceptual = perceptual.to(device)
    per_scene, rows, labels = evaluate_dynamic_scenes(
        scenes, methods, perceptual, device=device, progress=progress
    )
    report = {
        **environment(device),
        "data": {"split": split, "scenes": len(scenes)},
        "perceptual": None if perceptual is None else perceptual.name,
        "methods": records,
        "summary": summarize(per_scene),
        "per_scene": per_scene,
    }
    if out_dir is not None:
        write_report(Path(out_dir), report, rows, labels)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lyra eval --dynamic",
        description="Evaluate dynamic students and the 4D cache at the held-out (camera, time) "
        "pairs of dynamic scenes; writes metrics.json, metrics.md and heldout.png.",
        allow_abbrev=False,
    )
    add_data_options(parser, Path("data/dynamic"), Path("outputs/eval_dynamic"))
    add_metric_options(parser, prune=False)
    add_device_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0, or 2 with one line on stderr for bad options, data or checkpoints."""
    args = build_parser().parse_args(None if argv is None else list(argv))

    def command() -> int:
        try:
            students = dict(parse_student(spec) for spec in args.student)
        except ValueError as err:
            raise DataError(str(err)) from err
        report = evaluate_dynamic(
            args.data,
            args.split,
            students,
            args.out,
            args.max_scenes,
            args.perceptual,
            args.device,
            not args.no_progress,
        )
        print(markdown_table(report["summary"], report["methods"]), end="")
        print(f"written to {args.out}")
        return 0

    return run_command("lyra eval --dynamic", command)


if __name__ == "__main__":
    raise SystemExit(main())
