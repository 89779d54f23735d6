"""The single-view protocol of the benchmarks: ``lyra eval-views --format re10k|dl3dv|transforms
DATA --student FOLDER``.

One frame of a posed sequence is the input; every student builds a world from it with
:class:`lyra_core.pipelines.world.LyraWorldPipeline` (its depth when the data has it, else the
pipeline's fallback), the world is rendered at the cameras of the target frames and scored
against them with PSNR, SSIM and the learned perceptual distance
(:func:`lyra_core.evaluation.metrics.image_metrics`).

Protocol
--------
What the reference does (github nv-tlabs/lyra, ``Lyra-1/src/eval/compute_metrics_datasets.py``
and ``Lyra-1/src/eval/metrics.py``): the world's renders along the ground-truth camera path are
compared with the ground-truth clip frame by frame over its first 121 frames, the ground truth
resized (scale to cover) and centre-cropped to the renders' resolution; PSNR, SSIM (Gaussian
window 11) and LPIPS (VGG) are averaged per frame index over scenes, then over the frames. The
reference ships no RealEstate10K / DL3DV / Tanks-and-Temples loader, so which frame is the
input is not in its code; it is read as frame 0 of the clip, where the camera path (and
GEN3C's generation) starts. This module therefore uses, by default:

- input: frame ``--input-frame`` (default 0) of every sequence;
- targets: frames ``input + offset`` for the offsets :data:`LYRA_OFFSETS` = 0, 1, ..., 120 (121
  frames; offset 0 is the input view itself, which the reference's average includes;
  ``--offsets 1:121`` leaves it out, ``--offsets 5,10,20`` picks fixed offsets as the
  pixelSplat-style single-view protocols do);
- resolution: the student's input size (``--size WxH`` to change it). Every target is centre
  cropped to that aspect ratio and area-resized (:func:`lyra_core.pipelines.world.fit_view`,
  the crop the pipeline applies to its input; the reference resizes bilinearly), its intrinsics
  cropped and scaled to match, and the world is rendered with those intrinsics over
  ``--background`` (black by default);
- metrics per target view, then the mean over the targets of a sequence, then over sequences
  (equal to the reference's mean of per-frame means: every sequence has every offset); the
  mean per offset over sequences is reported too. The perceptual distance is the project's
  ST-LPIPS (AlexNet) by default; ``--perceptual lpips-vgg:FOLDER`` is the reference's LPIPS.

Sequences too short for the input frame plus the largest offset, with a malformed camera file,
NaN or non-rigid poses, missing images, or whose input the pipeline refuses, are skipped with a
warning and listed under ``skipped`` in the report; when no sequence is usable the command
fails (exit 2, one line naming the first problem).

Data layouts
------------
- ``re10k``: RealEstate10K camera files, ``DATA/<sequence>.txt`` (or one ``.txt`` file as
  DATA), with the frames as images named by their timestamp next to them:
  ``DATA/<sequence>/<timestamp>.png`` (``.jpg``/``.jpeg`` also; ``--frames ROOT`` reads
  ``ROOT/<sequence>/<timestamp>.*`` instead), as frame-extraction scripts of the dataset write
  them. Each camera file: first line the video URL, then one line per frame of 19 numbers:
  timestamp (microseconds), fx fy cx cy normalised by the image width / height (the image
  spans [0, 1], so the centre is 0.5), two zeros, and the 3 x 4 world-to-camera matrix
  row-major (OpenCV axes). Pixels at the image size used: ``fx * W``, ``fy * H``,
  ``cx * W - 0.5``, ``cy * H - 0.5`` (OpenCV pixel centres). RealEstate10K has no depth.
- ``dl3dv``: a folder of DL3DV scenes, each ``DATA/<scene>/transforms.json`` or
  ``DATA/<scene>/nerfstudio/transforms.json`` (DATA itself may be one scene), read by
  :func:`lyra_core.data.captures.read_transforms_json` (nerfstudio conventions, pre-shrunk
  ``images_N`` folders with ``--downscale N``). Frames are in ``file_path`` order.
- ``transforms``: one nerfstudio / instant-ngp capture (a ``transforms.json`` file or a folder
  holding one), same reader; ``depth_file_path`` maps are used when present.

Frame indices count the frames that were read (a frame whose image is missing is dropped by the
transforms reader with a warning). ``--downscale N`` shrinks the images by N when read (the
intrinsics follow); it saves time and memory on full-size captures, the metric resolution is
``--size`` either way.

The 3D-cache baseline (``3d_cache``: the input view unprojected with its depth, the raw cache
Lyra starts from) is evaluated on the sequences whose input frame has depth; data without
depth (RealEstate10K, DL3DV as released) has no baseline row, and the report says so. Without
depth the students see the pipeline's fronto-parallel plane at ``--assumed-depth``, in the
poses' units: RealEstate10K and DL3DV poses are only known up to scale, so the world's scale
and the targets' translations may disagree (Lyra itself estimates metric depth; this package
cannot ship a depth network).

Outputs in ``--out`` (each written atomically): ``metrics.json`` (settings, protocol, method
records, ``summary``: means per method, ``per_offset``: means per method and offset,
``per_sequence``: every sequence's means, ``skipped``), ``metrics.md`` (the tables) and
``views.png`` (for the first sequences: the target row, then a row per method).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.captures import CaptureFrame, read_transforms_json
from lyra_core.data.captures.common import check_downscale, check_pose, finish_frame, read_rgb_file
from lyra_core.evaluation.evaluate import (
    CACHE_METHOD,
    add_device_options,
    add_metric_options,
    check_common_args,
    load_perceptual_metric,
    parse_students,
)
from lyra_core.evaluation.metrics import image_metrics
from lyra_core.evaluation.report import environment, markdown_table, summarize
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import rigid_inverse
from lyra_core.models.decoder import count_parameters
from lyra_core.models.perceptual import PerceptualMetric
from lyra_core.pipelines.cache3d import cache_gaussians, render_views
from lyra_core.pipelines.world import DEFAULT_ASSUMED_DEPTH, LyraWorldPipeline, fit_view
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.errors import CaptureError, DataError, run_command
from lyra_core.utils.media import contact_sheet, to_uint8, write_png, write_text

__all__ = [
    "FORMATS",
    "LYRA_OFFSETS",
    "CaptureSequence",
    "EvalSequence",
    "Re10kCameras",
    "Re10kSequence",
    "ViewMethod",
    "ViewProtocol",
    "build_parser",
    "cache_view_method",
    "evaluate_views",
    "find_sequences",
    "main",
    "parse_offsets",
    "re10k_intrinsics",
    "read_re10k_cameras",
    "student_view_method",
]

FORMATS = ("re10k", "dl3dv", "transforms")
"""Data formats of ``--format``."""

LYRA_OFFSETS: tuple[int, ...] = tuple(range(121))
"""Target offsets of the reference evaluation: the first 121 frames of the clip, the input
(offset 0) included (module docstring)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files of RealEstate10K frames, tried in this order."""

RE10K_FIELDS = 19
"""Numbers per RealEstate10K frame line: timestamp, fx fy cx cy, 0 0, 3 x 4 matrix."""

VIEWS_PNG = "views.png"


# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


class EvalSequence(Protocol):
    """A posed sequence whose frames are read on demand."""

    name: str

    def __len__(self) -> int: ...

    def frame(self, index: int) -> CaptureFrame:
        """Frame ``index`` (0-based): image, pixel intrinsics, camera-to-world pose (OpenCV
        axes), depth or None."""
        ...


@dataclass(eq=False)
class Re10kCameras:
    """The cameras of one RealEstate10K camera file.

    Attributes:
        url: the video's URL (the file's first line).
        timestamps: (N,) int64 microseconds.
        intrinsics: (N, 4) float64 fx, fy, cx, cy normalised by the image width / height.
        worldtocams: (N, 4, 4) float64 world-to-camera, OpenCV axes, as in the file.
        camtoworlds: (N, 4, 4) float64 their rigid inverses (the rotation snapped to the
            nearest rotation, :func:`lyra_core.data.captures.common.check_pose`).
    """

    url: str
    timestamps: np.ndarray
    intrinsics: np.ndarray
    worldtocams: np.ndarray
    camtoworlds: np.ndarray


def read_re10k_cameras(path: str | Path) -> Re10kCameras:
    """Read a RealEstate10K camera file (module docstring for the layout).

    Blank lines are ignored; frames stay in file order.

    Raises:
        CaptureError: naming the file and line: unreadable file, no frame line, a line without
            19 numbers, a non-numeric or non-finite value, non-positive focal lengths, or a
            pose that is not rigid.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read the camera file: {exc}") from None
    rows = [(number, line.split()) for number, line in enumerate(lines, 1) if line.strip()]
    if len(rows) < 2:
        raise CaptureError(f"{path}: expected the video URL and at least one frame line")
    url = " ".join(rows[0][1])
    stamps, intrinsics, worldtocams, camtoworlds = [], [], [], []
    for number, fields in rows[1:]:
        label = f"{path}:{number}"
        if len(fields) != RE10K_FIELDS:
            raise CaptureError(f"{label}: expected {RE10K_FIELDS} numbers, got {len(fields)}")
        try:
            stamp = int(fields[0])
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError as exc:
            raise CaptureError(f"{label}: not a number ({exc})") from None
        if not np.isfinite(values).all():
            raise CaptureError(f"{label}: NaN or inf in the camera line")
        if not (values[0] > 0 and values[1] > 0):
            raise CaptureError(f"{label}: focal lengths must be > 0, got {values[:2].tolist()}")
        worldtocam = check_pose(label, values[6:].reshape(3, 4))
        stamps.append(stamp)
        intrinsics.append(values[:4])
        worldtocams.append(worldtocam)
        camtoworlds.append(rigid_inverse(worldtocam))
    return Re10kCameras(
        url,
        np.array(stamps, dtype=np.int64),
        np.stack(intrinsics),
        np.stack(worldtocams),
        np.stack(camtoworlds),
    )


def re10k_intrinsics(normalised: Sequence[float], width: int, height: int) -> Intrinsics:
    """Pixel intrinsics (OpenCV pixel centres) of a ``width x height`` image from
    RealEstate10K's normalised ``fx, fy, cx, cy`` (the image spans [0, 1] in both axes):
    ``fx * W``, ``fy * H``, ``cx * W - 0.5``, ``cy * H - 0.5``."""
    fx, fy, cx, cy = (float(v) for v in normalised)
    return Intrinsics(fx * width, fy * height, cx * width - 0.5, cy * height - 0.5, width, height)


class Re10kSequence:
    """A RealEstate10K sequence: its camera file, images read when a frame is asked for.

    Args:
        camera_file: ``<sequence>.txt``.
        frames_root: the folder holding ``<sequence>/<timestamp>.png``; default the camera
            file's folder.
        downscale: integer factor the images are shrunk by (area), intrinsics following.
    """

    def __init__(
        self, camera_file: str | Path, frames_root: str | Path | None = None, downscale: int = 1
    ) -> None:
        self.camera_file = Path(camera_file)
        self.name = self.camera_file.stem
        root = self.camera_file.parent if frames_root is None else Path(frames_root)
        self.frames_dir = root / self.name
        self.downscale = check_downscale(downscale)
        self.cameras = read_re10k_cameras(self.camera_file)

    def __len__(self) -> int:
        return len(self.cameras.timestamps)

    def image_path(self, index: int) -> Path:
        """The image of frame ``index``.

        Raises:
            CaptureError: no ``<timestamp>.png/.jpg/.jpeg`` in the sequence's folder.
        """
        stamp = int(self.cameras.timestamps[index])
        for suffix in IMAGE_SUFFIXES:
            candidate = self.frames_dir / f"{stamp}{suffix}"
            if candidate.is_file():
                return candidate
        raise CaptureError(
            f"{self.camera_file}: no image for frame {index} (timestamp {stamp}) in "
            f"{self.frames_dir} (expected {stamp}.png or .jpg)"
        )

    def frame(self, index: int) -> CaptureFrame:
        path = self.image_path(index)
        rgb = read_rgb_file(path)
        height, width = rgb.shape[:2]
        intrinsics = re10k_intrinsics(self.cameras.intrinsics[index], width, height)
        rgb, _, intrinsics = finish_frame(rgb, None, intrinsics, (), self.downscale, str(path))
        stamp = float(self.cameras.timestamps[index]) * 1e-6
        pose = self.cameras.camtoworlds[index]
        return CaptureFrame(rgb, intrinsics, pose, None, stamp, path.name)


class CaptureSequence:
    """A ``transforms.json`` capture (DL3DV, nerfstudio) as a sequence: read at once with
    :func:`lyra_core.data.captures.read_transforms_json`, frames in ``file_path`` order."""

    def __init__(self, path: str | Path, downscale: int = 1, name: str | None = None) -> None:
        self.capture = read_transforms_json(path, downscale=downscale)
        json_path = self.capture.path or Path(path)
        self.name = name or json_path.parent.name

    def __len__(self) -> int:
        return len(self.capture.frames)

    def frame(self, index: int) -> CaptureFrame:
        return self.capture.frames[index]


SequenceLoader = Callable[[], EvalSequence]


def find_sequences(
    data: str | Path, format: str, downscale: int = 1, frames_root: str | Path | None = None
) -> list[tuple[str, SequenceLoader]]:
    """The sequences of ``data`` in ``format`` (module docstring), sorted by name, each as
    ``(name, loader)``: the loader reads it (and raises CaptureError for a bad one).

    Raises:
        DataError: ``data`` does not exist, an unknown format, or no sequence in it.
    """
    data = Path(data)
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    check_downscale(downscale)
    if format == "re10k":
        files = [data] if data.is_file() else sorted(data.glob("*.txt"))
        found = [
            (f.stem, _loader(Re10kSequence, f, frames_root=frames_root, downscale=downscale))
            for f in files
        ]
        hint = "no RealEstate10K camera files (*.txt)"
    else:
        if format == "transforms":
            scenes = [(data.parent.name if data.is_file() else data.name, data)]
        else:
            scenes = _dl3dv_scenes(data)
        found = [
            (name, _loader(CaptureSequence, path, downscale=downscale, name=name))
            for name, path in scenes
        ]
        hint = "no DL3DV scene (<scene>/transforms.json or <scene>/nerfstudio/transforms.json)"
    if not found:
        raise DataError(f"{data}: {hint}")
    return found


def _loader(cls: Callable[..., EvalSequence], *args: Any, **kwargs: Any) -> SequenceLoader:
    return lambda: cls(*args, **kwargs)


def _dl3dv_scenes(data: Path) -> list[tuple[str, Path]]:
    """(name, folder with transforms.json) of DATA when it is one scene, else of each scene
    folder in it (``<scene>/`` or ``<scene>/nerfstudio/``)."""
    if data.is_file():
        return [(data.parent.name, data)]

    def scene_folder(folder: Path) -> Path | None:
        for candidate in (folder, folder / "nerfstudio"):
            if (candidate / "transforms.json").is_file():
                return candidate
        return None

    if (own := scene_folder(data)) is not None:
        return [(data.name, own)]
    scenes = [(p.name, scene_folder(p)) for p in sorted(data.iterdir()) if p.is_dir()]
    return [(name, folder) for name, folder in scenes if folder is not None]


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewProtocol:
    """Which frame is the input and which are the targets.

    Attributes:
        input_frame: index of the input frame in every sequence (>= 0).
        offsets: target frames relative to the input, distinct, in report order.
    """

    input_frame: int = 0
    offsets: tuple[int, ...] = LYRA_OFFSETS

    def __post_init__(self) -> None:
        if self.input_frame < 0:
            raise ValueError(f"the input frame must be >= 0, got {self.input_frame}")
        if not self.offsets or len(set(self.offsets)) != len(self.offsets):
            raise ValueError(f"offsets must be distinct and not empty, got {self.offsets}")

    def targets(self, length: int) -> list[int]:
        """Frame indices of the targets in a sequence of ``length`` frames.

        Raises:
            CaptureError: the sequence is too short (or an offset reaches before frame 0).
        """
        indices = [self.input_frame + offset for offset in self.offsets]
        needed = max(max(indices), self.input_frame) + 1
        if min(indices) < 0 or needed > length:
            raise CaptureError(
                f"{length} frame(s), the protocol needs frames {min(indices)}..{needed - 1} "
                f"(input {self.input_frame}, offsets {min(self.offsets)}..{max(self.offsets)})"
            )
        return indices


def parse_offsets(spec: str) -> tuple[int, ...]:
    """``--offsets``: ``START:STOP[:STEP]`` (Python range) or a comma list of integers.

    Raises:
        ValueError: anything else, or an empty result.
    """
    try:
        if ":" in spec:
            parts = [int(p) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            offsets = tuple(range(*parts))
        else:
            offsets = tuple(int(p) for p in spec.split(","))
    except ValueError:
        raise ValueError(
            f"--offsets {spec!r}: expected START:STOP[:STEP] or a comma list of integers"
        ) from None
    if not offsets:
        raise ValueError(f"--offsets {spec!r} selects no frame")
    return offsets


# --------------------------------------------------------------------------------------------
# Methods: input frame -> Gaussians
# --------------------------------------------------------------------------------------------

ViewMethod = Callable[[CaptureFrame], Gaussians | None]
"""Input frame -> a world in the frame's world frame; None: the method does not apply (the
report leaves the sequence out of its rows)."""


def student_view_method(
    pipeline: LyraWorldPipeline,
    assumed_depth: float = DEFAULT_ASSUMED_DEPTH,
    prune_ratio: float | None = None,
) -> ViewMethod:
    """A student through :class:`LyraWorldPipeline`: the frame's image, depth (or the plane at
    ``assumed_depth``), intrinsics and pose in, the pruned world out."""

    def world(frame: CaptureFrame) -> Gaussians:
        output = pipeline(
            frame.rgb,
            frame.depth,
            frame.intrinsics.matrix(torch.float64),
            frame.camtoworld,
            assumed_depth=assumed_depth,
            prune_ratio=prune_ratio,
        )
        return output.gaussians

    return world


def cache_view_method(width: int, height: int) -> ViewMethod:
    """The 3D-cache baseline: the input view, fitted to ``width x height`` like the pipeline's
    input, unprojected with its depth (None for a frame without depth)."""

    def world(frame: CaptureFrame) -> Gaussians | None:
        if frame.depth is None or not bool((frame.depth > 0).any()):
            return None
        rgb, depth, intrinsics = fit_view(
            torch.from_numpy(frame.rgb),
            torch.from_numpy(frame.depth),
            frame.intrinsics,
            width,
            height,
        )
        pose = torch.from_numpy(frame.camtoworld).to(torch.float32)
        return cache_gaussians(rgb, depth, intrinsics, pose)

    return world


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class _Targets:
    """The targets of one sequence at the metric size."""

    rgb: Tensor  # (K, H, W, 3) float32 in [0, 1]
    cameras: Cameras


def _targets(sequence: EvalSequence, indices: list[int], width: int, height: int) -> _Targets:
    images, poses, Ks = [], [], []
    for index in indices:
        frame = sequence.frame(index)
        rgb, _, intrinsics = fit_view(
            torch.from_numpy(frame.rgb), None, frame.intrinsics, width, height
        )
        images.append(rgb)
        poses.append(torch.from_numpy(frame.camtoworld))
        Ks.append(intrinsics.matrix(torch.float64))
    cameras = Cameras(torch.stack(poses).float(), torch.stack(Ks).float(), width, height)
    return _Targets(torch.stack(images).float() / 255.0, cameras)


def _sheet_columns(count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` target positions spread evenly over ``count``."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def _iterate(
    loaders: list[tuple[str, SequenceLoader]], protocol: ViewProtocol
) -> Iterator[tuple[str, EvalSequence | None, list[int] | None, str | None]]:
    """(name, sequence, target indices, None) or (name, None, None, why it is skipped)."""
    for name, load in loaders:
        try:
            sequence = load()
            yield name, sequence, protocol.targets(len(sequence)), None
        except CaptureError as error:
            yield name, None, None, str(error)


def evaluate_views(
    loaders: list[tuple[str, SequenceLoader]],
    methods: dict[str, ViewMethod],
    protocol: ViewProtocol,
    size: tuple[int, int],
    perceptual: PerceptualMetric | None,
    device: torch.device | str = "cpu",
    background: Sequence[float] = (0.0, 0.0, 0.0),
    sheet_sequences: int = 4,
    sheet_views: int = 6,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every method on every usable sequence.

    Args:
        loaders: ``(name, loader)`` per sequence (:func:`find_sequences`).
        methods: name -> :data:`ViewMethod`.
        protocol: the input frame and target offsets.
        size: ``(width, height)`` of the metric (targets fitted to it, renders at it).
        perceptual: the perceptual metric on ``device``, or None.
        device: where worlds are rendered and metrics computed.
        background: RGB in [0, 1] behind the renders.
        sheet_sequences, sheet_views: sequences and targets per sequence in the image grid.
        progress: show a progress bar.

    Returns:
        ``per_sequence`` ({method: [{"sequence": name, metric: mean, ...}]}), ``per_view``
        ({method: {offset: [per-view metrics over sequences]}}), ``skipped`` ([{"sequence",
        "reason"}]), and ``rows`` and ``labels`` of the image grid.

    Raises:
        DataError: no sequence could be evaluated (the message names the first problem).
    """
    width, height = size
    per_sequence: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    per_view: dict[str, dict[int, list[dict[str, float]]]] = {name: {} for name in methods}
    skipped: list[dict[str, str]] = []
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    shown = 0
    bar = tqdm(
        _iterate(loaders, protocol),
        total=len(loaders),
        desc="eval-views",
        unit="sequence",
        disable=not progress,
    )
    for name, sequence, indices, problem in bar:
        if sequence is None or indices is None:
            _skip(skipped, name, problem or "unreadable")
            continue
        try:
            source = sequence.frame(protocol.input_frame)
            targets = _targets(sequence, indices, width, height)
            worlds = {method: run(source) for method, run in methods.items()}
        except (CaptureError, ValueError) as error:
            _skip(skipped, name, str(error))
            continue
        show = _sheet_columns(len(indices), sheet_views)
        in_sheet = shown < sheet_sequences
        shown += in_sheet
        if in_sheet:
            rows.append([to_uint8(targets.rgb[i]) for i in show])
            labels.append(f"{name} target")
        for method, gaussians in worlds.items():
            if gaussians is None:
                continue
            rendered = render_views(
                gaussians, targets.cameras, background, device, output_type="float"
            ).rgb
            target = targets.rgb.to(rendered.device)
            views = [
                image_metrics(rendered[k : k + 1], target[k : k + 1], perceptual)
                for k in range(len(indices))
            ]
            for offset, scores in zip(protocol.offsets, views, strict=True):
                per_view[method].setdefault(offset, []).append(scores)
            means = summarize({method: views})[method]
            per_sequence[method].append({"sequence": name, **means, "gaussians": len(gaussians)})
            if in_sheet:
                rows.append([to_uint8(rendered[i]) for i in show])
                labels.append(method)
    if not any(per_sequence.values()):
        first = skipped[0]["reason"] if skipped else "no method produced a world"
        raise DataError(f"no sequence could be evaluated ({len(skipped)} skipped); first: {first}")
    for entry in skipped:  # only when the run goes on: a failing run says one line
        warnings.warn(
            f"eval-views: skipped sequence {entry['sequence']}: {entry['reason']}", stacklevel=2
        )
    return {
        "per_sequence": {k: v for k, v in per_sequence.items() if v},
        "per_view": {k: v for k, v in per_view.items() if v},
        "skipped": skipped,
        "rows": rows,
        "labels": labels,
    }


def _skip(skipped: list[dict[str, str]], name: str, reason: str) -> None:
    skipped.append({"sequence": name, "reason": reason})


def _summary(per_sequence: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean of every metric over sequences, per method (:func:`summarize` without the names)."""
    return summarize(
        {
            m: [{k: v for k, v in r.items() if k != "sequence"} for r in rows]
            for m, rows in per_sequence.items()
        }
    )


def _per_offset(per_view: dict[str, dict[int, list[dict[str, float]]]]) -> dict[str, dict]:
    """Mean of every metric per offset over sequences, per method (JSON keys are strings)."""
    return {
        method: {str(offset): summarize({"m": views})["m"] for offset, views in offsets.items()}
        for method, offsets in per_view.items()
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _markdown(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    lines = [
        f"# eval-views: {report['data']['format']} {report['data']['path']}",
        "",
        f"Input frame {protocol['input_frame']}; {len(protocol['offsets'])} target offsets "
        f"({_offsets_text(protocol['offsets'])}); metrics at "
        f"{protocol['width']}x{protocol['height']}; {report['data']['sequences']} sequence(s) "
        f"evaluated, {len(report['skipped'])} skipped.",
        "",
        markdown_table(report["summary"], report["methods"]),
    ]
    if report["methods"].get(CACHE_METHOD, {}).get("skipped"):
        lines += [f"3d_cache: {report['methods'][CACHE_METHOD]['skipped']}", ""]
    methods = list(report["per_offset"])
    metric_names = list(dict.fromkeys(m for s in report["summary"].values() for m in s))
    metric_names = [m for m in metric_names if m != "gaussians"]
    for metric in metric_names:
        lines += ["", f"## {metric} per offset", "", "| offset | " + " | ".join(methods) + " |"]
        lines.append("|" + "---|" * (len(methods) + 1))
        for offset in protocol["offsets"]:
            cells = []
            for method in methods:
                value = report["per_offset"][method].get(str(offset), {}).get(metric)
                cells.append("-" if value is None else f"{value:.4f}")
            lines.append(f"| {offset} | " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['sequence']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def _offsets_text(offsets: list[int]) -> str:
    steps = {b - a for a, b in itertools.pairwise(offsets)}
    if len(offsets) > 2 and len(steps) == 1:
        return f"{offsets[0]}..{offsets[-1]} step {steps.pop()}"
    return ", ".join(str(o) for o in offsets)


def _write_outputs(out: Path, report: dict[str, Any], rows: list, labels: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "metrics.md", _markdown(report))
    if rows:
        write_png(out / VIEWS_PNG, contact_sheet(rows, labels))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _size(spec: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {spec!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {spec!r}")
    return width, height


def _colour(spec: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in spec.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B in [0, 1], got {spec!r}")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The ``lyra eval-views`` options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="lyra eval-views",
        description="Single-view protocol of the benchmarks: one input frame per sequence, "
        "the world each student builds from it rendered at the target frames' cameras, "
        "PSNR / SSIM / perceptual distance against them (and the 3D-cache baseline when the "
        "data has depth); writes metrics.json, metrics.md and views.png.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "data",
        type=Path,
        metavar="DATA",
        help="re10k: a folder of <sequence>.txt camera files with <sequence>/<timestamp>.png "
        "frames beside them (or one .txt file); dl3dv: a folder of scenes with "
        "[nerfstudio/]transforms.json; transforms: one transforms.json (or its folder)",
    )
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help="layout of DATA (see DATA)"
    )
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        required=True,
        metavar="NAME=FOLDER",
        help="a student checkpoint folder (this package's or an imported Lyra-1 one), named "
        "NAME in the report (repeatable; FOLDER alone is named after the folder)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/eval_views"),
        help="folder for metrics.json, metrics.md and views.png (default: %(default)s)",
    )
    parser.add_argument(
        "--frames",
        type=Path,
        default=None,
        help="re10k: folder holding <sequence>/<timestamp>.png (default: beside the .txt files)",
    )
    parser.add_argument(
        "--input-frame",
        type=int,
        default=0,
        help="index of the input frame in every sequence (default: %(default)s)",
    )
    parser.add_argument(
        "--offsets",
        type=parse_offsets,
        default=LYRA_OFFSETS,
        help="target frames relative to the input: START:STOP[:STEP] or a comma list "
        "(default: 0:121, the reference's first 121 frames, the input included)",
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="WxH",
        help="resolution of the metrics; targets are centre-cropped to its aspect ratio and "
        "resized (default: the first student's input size)",
    )
    parser.add_argument(
        "--downscale",
        type=int,
        default=1,
        help="shrink the images by this integer factor when reading them (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sequences",
        type=int,
        default=None,
        help="evaluate only the first N sequences by name (default: all)",
    )
    add_metric_options(parser)
    parser.add_argument(
        "--assumed-depth",
        type=float,
        default=DEFAULT_ASSUMED_DEPTH,
        help="distance of the plane the students assume for an input without depth, in the "
        "poses' units (default: %(default)s)",
    )
    parser.add_argument(
        "--background",
        type=_colour,
        default=(0.0, 0.0, 0.0),
        metavar="R,G,B",
        help="colour behind the renders, in [0, 1] (default: black)",
    )
    parser.add_argument(
        "--sheet-sequences",
        type=int,
        default=4,
        help="sequences shown in views.png (default: %(default)s)",
    )
    parser.add_argument(
        "--sheet-views",
        type=int,
        default=6,
        help="targets per sequence shown in views.png, spread over the offsets "
        "(default: %(default)s)",
    )
    add_device_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra eval-views``: returns 0, or 2 with one line on stderr for an expected failure
    (missing DATA, no usable sequence, a bad option, a checkpoint that does not load)."""
    args = build_parser().parse_args(argv)
    return run_command("lyra eval-views", lambda: _run(args))


def _check_args(args: argparse.Namespace) -> torch.device:
    try:
        if args.max_sequences is not None and args.max_sequences < 1:
            raise ValueError(f"--max-sequences must be >= 1, got {args.max_sequences}")
        device = check_common_args(args)
        if not (math.isfinite(args.assumed_depth) and args.assumed_depth > 0):
            raise ValueError(f"--assumed-depth must be > 0, got {args.assumed_depth}")
        if args.downscale < 1:
            raise ValueError(f"--downscale must be >= 1, got {args.downscale}")
        if args.sheet_sequences < 0 or args.sheet_views < 2:
            raise ValueError("--sheet-sequences must be >= 0 and --sheet-views >= 2")
        ViewProtocol(args.input_frame, tuple(args.offsets))
    except (ValueError, RuntimeError) as error:
        raise DataError(str(error)) from error
    return device


def _run(args: argparse.Namespace) -> int:
    device = _check_args(args)
    try:
        students = parse_students(args.student)
    except ValueError as error:
        raise DataError(str(error)) from error
    protocol = ViewProtocol(args.input_frame, tuple(args.offsets))
    loaders = find_sequences(args.data, args.format, args.downscale, args.frames)
    loaders = loaders[: args.max_sequences]
    pipelines = {
        name: LyraWorldPipeline.from_pretrained(folder, device=device)
        for name, folder in students.items()
    }
    size = args.size or next(iter(pipelines.values())).size
    methods: dict[str, ViewMethod] = {
        name: student_view_method(pipeline, args.assumed_depth, args.prune_ratio)
        for name, pipeline in pipelines.items()
    }
    methods[CACHE_METHOD] = cache_view_method(*size)
    perceptual = load_perceptual_metric(args.perceptual, device)
    result = evaluate_views(
        loaders,
        methods,
        protocol,
        size,
        perceptual,
        device,
        args.background,
        args.sheet_sequences,
        args.sheet_views,
        progress=not args.no_progress,
    )
    records: dict[str, dict[str, Any]] = {
        name: _student_record(pipeline, students[name], args.prune_ratio)
        for name, pipeline in pipelines.items()
    }
    cache_rows = result["per_sequence"].get(CACHE_METHOD, [])
    records[CACHE_METHOD] = (
        {"sequences": len(cache_rows)}
        if cache_rows
        else {"skipped": "no input frame has depth (the baseline needs it)"}
    )
    per_sequence = result["per_sequence"]
    report = {
        **environment(device),
        "data": {
            "format": args.format,
            "path": str(args.data),
            "sequences": max(len(v) for v in per_sequence.values()),
            "downscale": args.downscale,
        },
        "protocol": {
            "input_frame": protocol.input_frame,
            "offsets": list(protocol.offsets),
            "width": size[0],
            "height": size[1],
            "background": list(args.background),
            "assumed_depth": args.assumed_depth,
        },
        "perceptual": perceptual.name if perceptual is not None else None,
        "prune_ratio_override": args.prune_ratio,
        "methods": records,
        "summary": _summary(per_sequence),
        "per_offset": _per_offset(result["per_view"]),
        "per_sequence": per_sequence,
        "skipped": result["skipped"],
    }
    _write_outputs(Path(args.out), report, result["rows"], result["labels"])
    print(markdown_table(report["summary"], report["methods"]), end="")
    print(f"written to {args.out}")
    return 0


def _student_record(
    pipeline: LyraWorldPipeline, folder: Path, prune_ratio: float | None
) -> dict[str, Any]:
    """What the report says about a student: checkpoint, kind, size and the prune ratio."""
    decoder = pipeline.student.decoder
    configured = decoder.config.prune_ratio
    return {
        "checkpoint": str(folder),
        "model": "lyra1" if pipeline.is_lyra1 else "lyra",
        "parameters": count_parameters(decoder),
        "input_size": list(pipeline.size),
        "num_frames": pipeline.config.num_frames,
        "prune_ratio": configured if prune_ratio is None else prune_ratio,
    }


if __name__ == "__main__":
    raise SystemExit(main())
