"""Evaluate Lyra students on held-out procedural scenes: ``lyra eval --student NAME=FOLDER ...``.

Every method turns a test scene into Gaussians and is rendered at the scene's held-out cameras
(views no trajectory passes through) against the ground-truth renders:

- ``3d_cache``: the raw 3D cache, i.e. the input view's own Gaussians (one per pixel, from its
  RGB-D; :func:`lyra_core.pipelines.cache3d.cache_gaussians`), the baseline Lyra improves on;
- each ``--student NAME=FOLDER``: a student checkpoint reading the scene's six 3D-cache
  trajectory videos (exactly what it was trained on), pruned by its decoder's ``prune_ratio``
  (or ``--prune-ratio``);
- with ``--untrained-control``, each student's VAE with a freshly initialised decoder
  (``NAME_untrained``, seed ``--control-seed`` + the student's index): the floor training has
  to rise above.

Metrics per held-out view (:func:`lyra_core.evaluation.metrics.image_metrics`): PSNR (dB, higher
is better), SSIM (higher is better) and a learned perceptual distance (ST-LPIPS by default, lower
is better), averaged per scene, then over scenes; PSNR split by the 3D cache's coverage of each
held-out view (:func:`lyra_core.evaluation.metrics.coverage_psnr`: ``psnr_covered`` over pixels
the cache renders to, ``psnr_uncovered`` over those it leaves empty, where only a generative
model can help; ``uncovered_fraction``: their share); ``gaussians``: how many Gaussians were
rendered (after pruning). For students also how their Gaussians of the input view fit it
(:func:`input_view_fit`: colour PSNR and median relative depth error).

Outputs in ``--out`` (:mod:`lyra_core.evaluation.report`): ``metrics.json`` (settings, method
records, means, per-scene values), ``metrics.md`` (a markdown table) and ``heldout.png``
(targets over every method's renders for a few scenes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.format import SPLITS, SceneSample, list_scenes, load_scene, scene_inputs
from lyra_core.evaluation.metrics import coverage_psnr, image_metrics, psnr
from lyra_core.evaluation.report import environment, markdown_table, summarize, write_report
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.models.decoder import DecoderOutput, LyraDecoder, count_parameters
from lyra_core.models.perceptual import PerceptualMetric, load_perceptual
from lyra_core.pipelines import cache3d
from lyra_core.pipelines.student import LyraStudent
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.errors import CheckpointError, DataError, run_command
from lyra_core.utils.media import to_uint8

__all__ = [
    "CACHE_METHOD",
    "UNTRAINED_SUFFIX",
    "add_device_options",
    "add_metric_options",
    "build_parser",
    "cache_method",
    "check_common_args",
    "control_record",
    "decode_scene",
    "evaluate",
    "evaluate_scenes",
    "input_view_fit",
    "load_perceptual_metric",
    "main",
    "parse_student",
    "parse_students",
    "render_heldout",
    "scene_cache",
    "student_eval_method",
    "student_method",
    "student_record",
    "with_fresh_decoder",
]

WorldMethod = Callable[[SceneSample], Gaussians]
EvalMethod = Callable[[SceneSample], tuple[Gaussians, dict[str, float]]]  # + diagnostics
CACHE_METHOD = "3d_cache"
UNTRAINED_SUFFIX = "_untrained"


# --------------------------------------------------------------------------------------------
# Methods: scene -> Gaussians (+ diagnostics)
# --------------------------------------------------------------------------------------------


def scene_cache(sample: SceneSample) -> Gaussians:
    """The raw 3D cache of a scene: its input view unprojected with its depth (world frame,
    CPU), made by :func:`lyra_core.pipelines.cache3d.cache_gaussians` like the data's."""
    height, width = sample.input_rgb.shape[:2]
    intrinsics = Intrinsics.from_matrix(sample.input_K, width, height)
    return cache3d.cache_gaussians(
        sample.input_rgb, sample.input_depth, intrinsics, sample.input_camtoworld
    )


def cache_method(sample: SceneSample) -> tuple[Gaussians, dict[str, float]]:
    """The baseline as an :data:`EvalMethod` (no diagnostics: the cache is its own input)."""
    return scene_cache(sample), {}


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def decode_scene(student: LyraStudent, sample: SceneSample) -> DecoderOutput:
    """The student's per-pixel Gaussians for a scene's 3D-cache trajectory videos (no grad),
    on the student's device."""
    device = _device_of(student.decoder)
    with torch.inference_mode():
        return student(*(t.to(device) for t in scene_inputs(sample)))


def _prune_ratio(student: LyraStudent, prune_ratio: float | None) -> float:
    """The ratio a method applies: ``prune_ratio``, else the decoder config's."""
    return student.decoder.config.prune_ratio if prune_ratio is None else prune_ratio


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
    puts one Gaussian on every input pixel ray. The raw 3D cache is exact on both scores by
    construction; a student has to learn them.

    Args:
        output: the decoding of ``sample``'s V trajectories (:func:`decode_scene`): leading dims
            (1, V, T', H, W), H x W the input view's size.
        sample: the scene (its input RGB-D and the trajectories' first cameras).

    Returns:
        ``input_rgb_psnr``: PSNR (dB) of the V x H x W Gaussian colours against the input
        pixels, averaged over the V trajectories (inf if exact); ``input_depth_error``: median
        over pixels with depth of ``|z - depth| / depth``, the Gaussians' z-depth in the input
        camera against the input depth (0 if exact).
    """
    first = torch.stack([v.camtoworlds[:1] for v in sample.trajectories.values()])[None]
    rgb = output.rgb[0, :, 0]  # (V, H, W, 3)
    depth = output.z_depth(first.to(output.means))[0, :, 0]  # (V, H, W)
    target_rgb = (sample.input_rgb.float() / 255.0).to(rgb.device).expand_as(rgb)
    target_depth = sample.input_depth.float().to(depth.device)
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


def with_fresh_decoder(student: LyraStudent, seed: int) -> LyraStudent:
    """The same VAE with a newly initialised decoder of the same config (an untrained control),
    initialised on the CPU from ``seed`` (the same weights on every device), on the student's
    device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = LyraDecoder(student.decoder.config)
    return LyraStudent(student.vae, decoder.to(_device_of(student.decoder))).eval()


# --------------------------------------------------------------------------------------------
# Rendering and scoring
# --------------------------------------------------------------------------------------------


def render_heldout(
    gaussians: Gaussians, sample: SceneSample, device: torch.device | str | None = None
) -> Tensor:
    """Render ``gaussians`` at the scene's held-out cameras over its background.

    Args:
        gaussians: world frame.
        sample: a scene with held-out views (their poses, intrinsics and image size are used).
        device: where to render; default the Gaussians' device.

    Returns:
        (K, H, W, 3) float32 in [0, 1] on the render device (not quantised;
        :func:`lyra_core.pipelines.cache3d.render_views` with ``output_type="float"``).
    """
    views = sample.heldout
    if views is None:
        raise DataError(f"scene {sample.seed} has no held-out views")
    height, width = views.rgb.shape[1:3]
    cameras = Cameras(views.camtoworlds, views.Ks, width, height)
    return cache3d.render_views(
        gaussians, cameras, sample.background, device, len(cameras), output_type="float"
    ).rgb


def _load_eval_scene(path: Path) -> SceneSample:
    """A scene with held-out views, or a one-line :class:`DataError`."""
    try:
        sample = load_scene(path)
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"cannot read scene {path}: {error}") from error
    if sample.heldout is None:
        raise DataError(f"scene {path} has no held-out views (heldout/ is missing)")
    return sample


def evaluate_scenes(
    scenes: list[Path],
    methods: dict[str, EvalMethod],
    perceptual: PerceptualMetric | None,
    sheet_scenes: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[dict[str, list[dict[str, Any]]], list[list[np.ndarray]], list[str]]:
    """Per-scene metrics of every method (and the diagnostics it returns beside its Gaussians),
    and contact-sheet rows for the first scenes.

    Args:
        scenes: scene folders with held-out views.
        methods: name -> method.
        perceptual: the perceptual metric (on ``device``), or None.
        sheet_scenes: scenes shown in the contact sheet.
        device: where renders and metrics are computed.
        progress: show a progress bar.

    Returns:
        ``{method: [{"scene": name, metric: value, ...}, ...]}``, sheet rows (uint8 images) and
        their labels.
    """
    per_scene: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    for index, scene in enumerate(tqdm(scenes, desc="eval", unit="scene", disable=not progress)):
        sample = _load_eval_scene(scene)
        target = (sample.heldout.rgb.float() / 255.0).to(device)
        covered = sample.heldout.cache_mask.to(device)
        if index < sheet_scenes:
            rows.append([to_uint8(t) for t in target])
            labels.append(f"{scene.name} target")
        for name, method in methods.items():
            gaussians, diagnostics = method(sample)
            rendered = render_heldout(gaussians, sample, device)
            scores = image_metrics(rendered, target, perceptual)
            scores |= coverage_psnr(rendered, target, covered)
            scores["gaussians"] = len(gaussians)
            scores |= diagnostics
            per_scene[name].append({"scene": scene.name, **scores})
            if index < sheet_scenes:
                rows.append([to_uint8(r) for r in rendered])
                labels.append(name)
    return per_scene, rows, labels


# --------------------------------------------------------------------------------------------
# Records and the run
# --------------------------------------------------------------------------------------------


def _architecture(student: LyraStudent, prune_ratio: float | None) -> dict[str, Any]:
    config = student.decoder.config
    return {
        "parameters": count_parameters(student.decoder),
        "transformer_layers": list(config.transformer_layers),
        "num_layers": config.num_layers,
        "width": config.width,
        "prune_ratio": _prune_ratio(student, prune_ratio),
        "prune_ratio_source": "decoder config" if prune_ratio is None else "--prune-ratio",
    }


def student_record(
    student: LyraStudent, folder: Path, prune_ratio: float | None, training: dict
) -> dict[str, Any]:
    """What the report says about a trained student: checkpoint, size, architecture, the prune
    ratio applied (and where it came from) and its training record."""
    return {
        "checkpoint": str(folder),
        **_architecture(student, prune_ratio),
        "trained_on": training,
    }


def control_record(
    control: LyraStudent, of: str, folder: Path, seed: int, prune_ratio: float | None
) -> dict[str, Any]:
    """What the report says about an untrained control (:func:`with_fresh_decoder`): whose VAE
    it shares, the decoder's initialisation seed, its size and the prune ratio applied. Nothing
    of the trained decoder's training record applies to it."""
    return {
        "control_of": of,
        "vae_checkpoint": str(folder),
        "decoder": "untrained (freshly initialised)",
        "init_seed": seed,
        **_architecture(control, prune_ratio),
    }


def _load_students(
    students: dict[str, Path],
    device: torch.device,
    prune_ratio: float | None,
    untrained_control: bool,
    control_seed: int,
) -> tuple[dict[str, EvalMethod], dict[str, dict]]:
    """Methods and records of every student (and its control); CheckpointError if one does not
    load."""
    methods: dict[str, EvalMethod] = {}
    records: dict[str, dict] = {}
    for index, (name, folder) in enumerate(students.items()):
        student, student_config = LyraStudent.from_pretrained(folder, device=device)
        methods[name] = student_eval_method(student, prune_ratio)
        records[name] = student_record(student, folder, prune_ratio, student_config.training)
        if untrained_control:
            seed = control_seed + index
            control = with_fresh_decoder(student, seed)
            methods[name + UNTRAINED_SUFFIX] = student_eval_method(control, prune_ratio)
            records[name + UNTRAINED_SUFFIX] = control_record(
                control, name, folder, seed, prune_ratio
            )
    return methods, records


def load_perceptual_metric(name: str, device: torch.device) -> PerceptualMetric | None:
    """The perceptual metric ``name`` (:func:`lyra_core.models.perceptual.load_perceptual`) on
    ``device``, or ``None`` for ``"none"``; an unavailable one is a :class:`CheckpointError`."""
    try:
        perceptual = load_perceptual(name)
    except (ValueError, ImportError, OSError) as error:
        raise CheckpointError(f"perceptual metric {name!r} is unavailable: {error}") from error
    return None if perceptual is None else perceptual.to(device)


def evaluate(
    data_dir: Path,
    split: str,
    students: dict[str, Path],
    out_dir: Path,
    max_scenes: int | None = None,
    perceptual_name: str = "stlpips-alex",
    prune_ratio: float | None = None,
    untrained_control: bool = False,
    control_seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the 3D-cache baseline and every student; write the report files.

    Args:
        data_dir: data root holding ``<split>/scene_*``.
        split: the split to evaluate.
        students: method name -> student checkpoint folder.
        out_dir: where the report files go (:func:`lyra_core.evaluation.report.write_report`).
        max_scenes: evaluate only the first scenes (sorted by seed).
        perceptual_name: :func:`lyra_core.models.perceptual.load_perceptual` name or ``"none"``.
        prune_ratio: overrides every decoder's configured prune ratio.
        untrained_control: also evaluate every student's VAE with a fresh decoder, the i-th
            student's initialised from seed ``control_seed + i``.
        device: where students decode and everything renders (``"cpu"``, ``"cuda"``).
        progress: show a progress bar.

    Returns:
        The ``metrics.json`` content (:mod:`lyra_core.evaluation.report`).

    Raises:
        DataError: no data folder, no scenes in it, or an unreadable scene.
        CheckpointError: a student checkpoint or the perceptual metric does not load.
    """
    split_dir = Path(data_dir) / split
    if not split_dir.is_dir():
        raise DataError(f"no data folder {split_dir} (generate it with `lyra generate`)")
    scenes = list_scenes(split_dir)[:max_scenes]
    if not scenes:
        raise DataError(f"no scenes in {split_dir}")
    device = torch.device(device)
    methods: dict[str, EvalMethod] = {CACHE_METHOD: cache_method}
    records: dict[str, dict] = {CACHE_METHOD: {}}
    student_methods, student_records = _load_students(
        students, device, prune_ratio, untrained_control, control_seed
    )
    methods |= student_methods
    records |= student_records
    perceptual = load_perceptual_metric(perceptual_name, device)
    per_scene, rows, labels = evaluate_scenes(
        scenes, methods, perceptual, device=device, progress=progress
    )
    report = {
        **environment(device),
        "data": {
            "split": split,
            "scenes": len(scenes),
            "views_per_scene": int(_load_eval_scene(scenes[0]).heldout.rgb.shape[0]),
        },
        "perceptual": perceptual.name if perceptual is not None else None,
        "prune_ratio_override": prune_ratio,
        "control_seed": control_seed if untrained_control else None,
        "methods": records,
        "summary": summarize(per_scene),
        "per_scene": per_scene,
    }
    write_report(Path(out_dir), report, rows, labels)
    return report


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def parse_student(spec: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` (or just ``FOLDER``, named after it) -> (name, folder).

    Raises:
        ValueError: an empty name or folder.
    """
    name, sep, folder = spec.partition("=")
    if not sep:
        name, folder = Path(spec).name, spec
    if not name or not folder:
        raise ValueError(f"--student {spec!r}: expected NAME=FOLDER or FOLDER")
    return name, Path(folder)


def parse_students(specs: Iterable[str], untrained_control: bool = False) -> dict[str, Path]:
    """``--student`` options -> {name: folder}.

    Raises:
        ValueError: a bad spec, or a name used twice (also by the baseline or a control).
    """
    students: dict[str, Path] = {}
    taken = {CACHE_METHOD}
    for spec in specs:
        name, folder = parse_student(spec)
        names = {name, name + UNTRAINED_SUFFIX} if untrained_control else {name}
        if names & taken:
            raise ValueError(f"--student {spec!r}: the method name {name!r} is already taken")
        taken |= names
        students[name] = folder
    return students


def build_parser() -> argparse.ArgumentParser:
    """The ``lyra eval`` options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="lyra eval",
        description="Evaluate Lyra students and the raw 3D-cache baseline at the held-out views "
        "of procedural scenes; writes metrics.json, metrics.md and heldout.png.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic students against the 4D cache at held-out (camera, time) pairs of "
        "dynamic scenes instead: the options of 'lyra eval --dynamic --help' follow",
    )
    add_data_options(parser, Path("data/procedural"), Path("outputs/eval"))
    add_metric_options(parser)
    parser.add_argument(
        "--untrained-control",
        action="store_true",
        help="also evaluate each student's VAE with a freshly initialised decoder (NAME_untrained)",
    )
    parser.add_argument(
        "--control-seed",
        type=int,
        default=0,
        help="initialisation seed of the first control; the i-th student's is this + i "
        "(default: %(default)s)",
    )
    add_device_options(parser)
    return parser


def add_data_options(parser: argparse.ArgumentParser, data: Path, out: Path) -> None:
    """``--data`` (default ``data``), ``--split``, ``--student``, ``--out`` (default ``out``)
    and ``--max-scenes``, the first options of ``lyra eval`` and ``lyra eval --dynamic``."""
    parser.add_argument(
        "--data",
        type=Path,
        default=data,
        help="data root holding SPLIT/scene_* (default: %(default)s)",
    )
    parser.add_argument(
        "--split", default="test", choices=SPLITS, help="split to evaluate (default: %(default)s)"
    )
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a student checkpoint folder, named NAME in the report (repeatable; FOLDER alone "
        "is named after the folder)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out,
        help="folder for metrics.json, metrics.md and heldout.png (default: %(default)s)",
    )
    parser.add_argument(
        "--max-scenes",
        type=int,
        default=None,
        help="evaluate only the first N scenes (default: all)",
    )


def add_metric_options(parser: argparse.ArgumentParser, prune: bool = True) -> None:
    """``--perceptual`` (the metric's name) and, with ``prune``, ``--prune-ratio`` (None: each
    student's decoder config), the options of ``lyra eval`` and ``lyra eval-views`` on how
    students are scored (:func:`check_common_args` checks them)."""
    parser.add_argument(
        "--perceptual",
        default="stlpips-alex",
        help="perceptual metric: stlpips-alex, stlpips-vgg, lpips-<net>:<folder> or none "
        "(default: %(default)s)",
    )
    if not prune:
        return
    parser.add_argument(
        "--prune-ratio",
        type=float,
        default=None,
        help="share of each student's Gaussians pruned by opacity (default: its decoder config)",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default the CPU) and ``--no-progress``, the last options of ``lyra eval``
    and ``lyra eval-views``."""
    parser.add_argument(
        "--device", default="cpu", help="torch device to evaluate on (default: %(default)s)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_common_args(args: argparse.Namespace) -> torch.device:
    """The device of ``--device`` after checking it and ``--prune-ratio``.

    Raises:
        ValueError: a prune ratio outside [0, 1), an unknown device, or CUDA without a GPU.
    """
    if args.prune_ratio is not None and not 0.0 <= args.prune_ratio < 1.0:
        raise ValueError(f"--prune-ratio must lie in [0, 1), got {args.prune_ratio}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    return device


def main(argv: list[str] | None = None) -> int:
    """``lyra eval``: returns 0, or 2 with one line on stderr for an expected failure (bad
    ``--student``, no data, no scenes, a checkpoint that does not load). ``--dynamic``: the
    dynamic students on dynamic scenes (:mod:`lyra_core.evaluation.dynamic`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dynamic" in argv:
        from lyra_core.evaluation.dynamic import main as evaluate_dynamic

        return evaluate_dynamic([arg for arg in argv if arg != "--dynamic"])
    args = build_parser().parse_args(argv)
    return run_command("lyra eval", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        students = parse_students(args.student, args.untrained_control)
        if args.max_scenes is not None and args.max_scenes < 1:
            raise ValueError(f"--max-scenes must be >= 1, got {args.max_scenes}")
        device = check_common_args(args)
    except (ValueError, RuntimeError) as error:
        raise DataError(str(error)) from error
    report = evaluate(
        args.data,
        args.split,
        students,
        args.out,
        args.max_scenes,
        args.perceptual,
        args.prune_ratio,
        args.untrained_control,
        args.control_seed,
        device,
        progress=not args.no_progress,
    )
    print(markdown_table(report["summary"], report["methods"]), end="")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
