"""``lyra fit``: a Gaussian-splat world from a posed capture on disk, fitted as 3DGS does.

    lyra fit DATA --out RUN [--downscale 4] [--max-seconds 600] [--max-steps 30000]

``DATA`` is anything :func:`lyra_core.data.captures.load_capture` reads: a ``transforms.json``
folder (nerfstudio, instant-ngp, Blender), a COLMAP model or project, or a ROS 2 bag (with
``--image-topic`` etc.).

**Split**: the standard one (``--holdout-every 8``: images 0, 8, 16, ... of the sorted
capture are held out, never trained on, and scored at the end).

**Initialisation**, the first that applies (``--init`` forces one):

1. ``points``: the capture's sparse points (COLMAP ``points3D``, nerfstudio ``ply_file_path``)
   as isotropic Gaussians (3DGS: scale = mean distance to the 3 nearest points, opacity 0.1).
2. ``depth``: the training frames' depth, one disc per 2nd pixel where the map is still empty
   (:meth:`GaussianMap.add_depth <lyra_core.mapping.GaussianMap.add_depth>`).
3. ``triangulated``: SIFT features matched between neighbouring training views and
   triangulated with the known poses (:mod:`lyra_core.mapping.triangulation`).
4. ``plane``: when fewer than 16 points triangulate (textureless images), each training view's
   pixels on the fronto-parallel plane at the median scene depth (the distance from the cameras
   to the point their optical axes pass closest to).

**Optimisation** (:class:`~lyra_core.mapping.GaussianMap` in its offline mode): one training
view per step, every view once per epoch in a seeded random order; loss
``0.8 L1 + 0.2 (1 - SSIM)`` plus ``0.5 * depth L1`` (per meter) where the view has depth; Adam
with 3DGS's per-parameter learning rates, the position rate scaled by the scene extent (1.1 times
the largest distance of a camera from the cameras' mean, as 3DGS) and decayed exponentially to
1 % over the run (``--position-lr-final``; 3DGS decays over 30k steps, so a short CPU run decays
far faster per step than 3DGS does: on the procedural room no decay scored 2 dB more after 600
steps); densification (clone / split by view-space gradients, every 100 steps) during the first
half of the run, pruning of transparent and oversized Gaussians every 50 steps.

**Schedule**: the run ends at ``--max-steps`` or ``--max-seconds`` of training time, whichever
comes first, and its progress (which drives the learning-rate decay and the end of
densification) is the larger of ``steps / max_steps`` and ``seconds / max_seconds``: with
``--max-seconds`` the schedule follows elapsed training time (not an estimate of the number of
steps), so a time-limited run decays fully by its deadline on any machine, and is not bit-for-bit
repeatable (the step at which it stops depends on the machine's speed).
Training time counts the initialisation and the optimisation steps, not loading the capture,
evaluation or checkpoints, and adds up across resumes.

**Resume**: ``RUN/checkpoint/`` (written atomically every ``--checkpoint-every`` seconds, on
Ctrl-C and at the end) holds the Gaussians, Adam's state, the step, the training time, the random
generators and the history; running the same command again continues from it (a run without a
time or step limit left continues to the new limits). Ctrl-C finishes the current step, saves
and exits with status 130. A checkpoint made with other data options (capture, downscale, split,
seed, SH degree) is refused.

**Outputs** in ``RUN``:

- ``world.ply``: the fitted Gaussians (standard 3DGS PLY);
- ``metrics.json``: held-out PSNR / SSIM / perceptual distance (``"lpips"``: ST-LPIPS with
  AlexNet and the weights of the ``stlpips-pytorch`` package, or the original LPIPS v0.1 with
  ``--lpips-weights FOLDER``; which one is named in ``"lpips_metric"``), training seconds,
  steps, seconds per step, Gaussians, the initialisation, the capture, the device and the
  held-out PSNR history;
- ``heldout.png``: every held-out view, ground truth (top row) above the render (bottom row).

**Dynamic scenes** (``--dynamic``): the training frames, in time order (their stamps:
``transforms.json``'s per-frame ``time``, a bag's header stamps), go through
:class:`~lyra_core.mapping.dynamic.DynamicMapper`: the static background is fused from depth and
refined for ``--max-steps`` / ``--max-seconds``, what moves becomes one time slice per frame.
``world.ply`` is then a 4D world (``time`` and ``duration`` columns; world time 0 is the first
training frame's stamp, ``metrics.json``'s ``time_origin``), each held-out view is scored at
its own time, and there is no checkpoint (the run is one pass). Every training frame needs
depth; a capture without depth ends with one line and exit status 2.

Bad input (missing or unreadable files, an unknown format, no usable frame, NaN poses, a bag
without the topics) ends with one line and exit status 2 (the ``lyra`` dispatcher).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lyra_core.data.captures import Capture, CaptureFrame, load_capture
from lyra_core.data.captures.common import GL_TO_CV
from lyra_core.evaluation.metrics import image_metrics, psnr
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.mapping import GaussianMap, MapConfig, PosedFrame
from lyra_core.mapping.dynamic import DynamicMapper, DynamicMapperConfig, static_map_config
from lyra_core.mapping.triangulation import (
    TriangulationConfig,
    points_at_scene_depth,
    triangulate_frames,
)
from lyra_core.models.perceptual import PerceptualMetric, load_perceptual
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import write_ply
from lyra_core.scene.procedural_dynamic import procedural_dynamic_room
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.utils.atomic import atomic_write, write_folder_atomically
from lyra_core.utils.errors import CaptureError, CheckpointError
from lyra_core.utils.media import contact_sheet, to_uint8, write_png, write_text

__all__ = [
    "INIT_METHODS",
    "FitInterrupted",
    "build_parser",
    "camera_extent",
    "dynamic_poses",
    "main",
    "procedural_poses",
    "run_fit",
    "write_procedural_capture",
]

INIT_METHODS = ("auto", "points", "depth", "triangulated", "plane")
MIN_TRIANGULATED = 16
"""Fewer triangulated points than this fall back to the plane initialisation."""

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
BACKGROUND = (0.0, 0.0, 0.0)
"""Colour behind the Gaussians when fitting and rendering (3DGS's default: black)."""

BAG_OPTIONS = ("image_topic", "depth_topic", "camera_info_topic", "world_frame", "camera_frame")
RESUME_KEYS = ("data", "downscale", "holdout_every", "seed", "sh_degree", "no_depth", *BAG_OPTIONS)
"""Settings a checkpoint must share with the command that continues it."""


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``lyra fit``: the checkpoint was saved."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _holdout(text: str) -> int:
    value = int(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no held-out views) or >= 2, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra fit``."""
    parser = argparse.ArgumentParser(
        prog="lyra fit",
        description="Fit a Gaussian-splat world to a posed capture (transforms.json folder, "
        "COLMAP model or ROS 2 bag) as 3DGS does; resumable.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "data", type=Path, help="the capture: transforms.json folder/file, COLMAP model, ROS 2 bag"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder (outputs and the checkpoint)"
    )
    parser.add_argument(
        "--downscale", type=_positive_int, default=1, help="shrink images by this integer factor"
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=None,
        help="stop after this much training time, seconds, total across resumes (default: none)",
    )
    parser.add_argument(
        "--max-steps",
        type=_non_negative_int,
        default=30_000,
        help="stop after this many optimisation steps (3DGS: 30000; 0: initialisation only)",
    )
    parser.add_argument(
        "--holdout-every",
        type=_holdout,
        default=8,
        help="hold out every n-th image (0, 8, 16, ...) for evaluation; 0: none held out",
    )
    parser.add_argument(
        "--max-gaussians", type=_positive_int, default=1_000_000, help="budget of the world"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the view order and splits")
    parser.add_argument(
        "--init",
        choices=INIT_METHODS,
        default="auto",
        help="initialisation: auto (the capture's points, else depth, else triangulated "
        "features, else a plane), or force one",
    )
    parser.add_argument(
        "--sh-degree",
        type=int,
        choices=(0, 1, 2, 3),
        default=3,
        help="spherical-harmonic degree of the colours (3DGS: 3; 0: view-independent)",
    )
    parser.add_argument(
        "--position-lr-final",
        type=_unit_float,
        default=0.01,
        help="position learning rate at the end of the run relative to its start, reached by "
        "exponential decay (3DGS: 0.01; 1: no decay)",
    )
    parser.add_argument("--no-depth", action="store_true", help="ignore the capture's depth maps")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="a scene that moves: static background plus one time slice per frame, a 4D "
        "world.ply (needs depth and frame times)",
    )
    parser.add_argument(
        "--opacity-reset-every",
        type=_non_negative_int,
        default=0,
        help="reset opacities to 0.01 every n steps during densification (3DGS: 3000; "
        "default 0: never, as CPU runs are short)",
    )
    parser.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=500,
        help="held-out PSNR every n steps, shown and kept in the history (0: only at the end)",
    )
    parser.add_argument(
        "--eval-seconds",
        type=_positive_float,
        nargs="*",
        default=[],
        help="also held-out PSNR when the training time passes these seconds (PSNR-vs-time curves)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_float,
        default=120.0,
        help="seconds (wall clock) between checkpoints; one is also written at the end and on "
        "Ctrl-C",
    )
    parser.add_argument(
        "--lpips-weights",
        type=Path,
        default=None,
        help="folder with the original LPIPS v0.1 files (alex.pth and torchvision's "
        "alexnet-owt-7be5be79.pth) to score with LPIPS instead of ST-LPIPS",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu; densification by "
        "view-space gradients needs the torch renderer, i.e. the CPU)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's, one per core); on a CPU shared with other "
        "jobs use 1, or set OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads slow down a lot",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bag = parser.add_argument_group("ROS 2 bag options (passed to the bag reader)")
    bag.add_argument("--image-topic", default=None, help="colour image topic")
    bag.add_argument("--depth-topic", default=None, help="registered depth image topic")
    bag.add_argument("--camera-info-topic", default=None, help="camera_info topic")
    bag.add_argument("--world-frame", default=None, help="tf frame the poses are in")
    bag.add_argument("--camera-frame", default=None, help="tf frame of the camera (optical)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = run_fit(args)
    except FitInterrupted as stop:
        print(f"lyra fit: interrupted: {stop}", file=sys.stderr)
        return 130
    heldout = metrics["heldout"]
    score = (
        f"held-out PSNR {heldout['psnr']:.2f} dB over {heldout['views']} views"
        if heldout
        else "no held-out views"
    )
    kind = ""
    if args.dynamic:
        span = metrics["time_range"]
        kind = " 4D" + (f" ({span[0]:g}-{span[1]:g} s)" if span else "")
    print(
        f"fitted {metrics['gaussians']:,}{kind} Gaussians in {metrics['steps']} steps, "
        f"{metrics['train_seconds']:.1f} s: {score}; wrote {args.out}/world.ply, metrics.json"
        + (", heldout.png" if heldout else "")
    )
    return 0


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Capture:
    options: dict[str, Any] = {"downscale": args.downscale}
    options.update({k: getattr(args, k) for k in BAG_OPTIONS if getattr(args, k) is not None})
    capture = load_capture(args.data, **options)
    if args.no_depth:
        for frame in capture.frames:
            frame.depth = None
    return capture


def _split(capture: Capture, every: int) -> tuple[list[CaptureFrame], list[CaptureFrame]]:
    train, heldout = capture.split(every) if every else (list(capture.frames), [])
    if not train:
        raise CaptureError(
            f"{capture.path}: {len(capture.frames)} usable frame(s) leave none to train on with "
            f"--holdout-every {every} (frame 0 is held out); pass --holdout-every 0"
        )
    sizes = {(f.width, f.height) for f in heldout}
    if len(sizes) > 1:
        raise CaptureError(
            f"{capture.path}: held-out images differ in size ({sorted(sizes)}); "
            "the held-out metrics need one size"
        )
    return train, heldout


def _posed(frame: CaptureFrame) -> PosedFrame:
    return PosedFrame(**vars(frame))


def camera_extent(frames: Sequence[PosedFrame]) -> float | None:
    """3DGS's scene extent: 1.1 times the largest distance of a camera centre from the
    cameras' mean, meters; None when the cameras (nearly) coincide."""
    centers = torch.stack([f.camtoworld[:3, 3] for f in frames]).double()
    radius = float((centers - centers.mean(0)).norm(dim=1).max())
    return 1.1 * radius if radius > 1e-3 else None


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """The run's bookkeeping, saved in the checkpoint next to the map's state."""

    settings: dict[str, Any]
    train_seconds: float = 0.0
    init: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    resumes: int = 0
    evaluated_at: list[float] = field(default_factory=list)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out = {
        "data": str(Path(args.data).resolve()),
        "downscale": args.downscale,
        "holdout_every": args.holdout_every,
        "seed": args.seed,
        "sh_degree": args.sh_degree,
        "no_depth": bool(args.no_depth),
        "init": args.init,
        "max_gaussians": args.max_gaussians,
        "max_steps": args.max_steps,
        "max_seconds": args.max_seconds,
        "opacity_reset_every": args.opacity_reset_every,
        "position_lr_final": args.position_lr_final,
    }
    out.update({k: getattr(args, k) for k in BAG_OPTIONS})
    return out


def _map_config(args: argparse.Namespace, train: Sequence[PosedFrame]) -> MapConfig:
    return MapConfig(
        max_gaussians=args.max_gaussians,
        refine_downscale=1,
        steps_per_keyframe=0,
        max_keyframes=len(train),
        sampling="epoch",
        densify="always",
        densify_until=0.5,
        position_lr_final=args.position_lr_final,
        scene_scale=camera_extent(train),
        background=BACKGROUND,
        seed=args.seed,
        sh_degree=args.sh_degree,
    )


def _perceptual(args: argparse.Namespace, device: torch.device) -> PerceptualMetric | None:
    if args.lpips_weights is not None:
        if not args.lpips_weights.is_dir():
            raise FileNotFoundError(2, "No such folder (--lpips-weights)", str(args.lpips_weights))
        try:
            metric = load_perceptual(f"lpips-alex:{args.lpips_weights}")
        except (ValueError, OSError) as err:
            raise CheckpointError(f"--lpips-weights {args.lpips_weights}: {err}") from err
    else:
        try:
            metric = load_perceptual("stlpips-alex")
        except (ImportError, OSError, ValueError) as err:
            print(f"lyra fit: note: no perceptual metric (ST-LPIPS unavailable: {err})")
            return None
    return None if metric is None else metric.to(device)


def _perceptual_description(metric: PerceptualMetric | None, args: argparse.Namespace) -> str:
    if metric is None:
        return "none (ST-LPIPS weights unavailable)"
    if metric.variant == "lpips":
        return f"LPIPS v0.1 AlexNet (original), weights from {args.lpips_weights}"
    return "ST-LPIPS AlexNet (shift-tolerant LPIPS), weights of the stlpips-pytorch package"


def _initialise(
    world: GaussianMap,
    capture: Capture,
    train: Sequence[PosedFrame],
    method: str,
    show: bool,
) -> dict[str, Any]:
    """Fill the empty map; returns what was done (``method``, counts)."""
    has_points = capture.points is not None and len(capture.points) > 0
    has_depth = any(f.depth is not None and bool((f.depth > 0).any()) for f in train)
    if method == "points" and not has_points:
        raise CaptureError(f"{capture.path}: --init points, but the capture has no sparse points")
    if method == "depth" and not has_depth:
        raise CaptureError(f"{capture.path}: --init depth, but no training frame has depth")
    if method == "auto":
        method = "points" if has_points else "depth" if has_depth else "triangulated"
    info: dict[str, Any] = {}
    if method == "points":
        assert capture.points is not None
        colors = (
            np.full_like(capture.points, 0.5)
            if capture.colors is None
            else capture.colors.astype(np.float32) / 255.0
        )
        world.add_points(torch.from_numpy(capture.points), torch.from_numpy(colors))
    elif method == "depth":
        added = [world.add_depth(f) for f in tqdm(train, desc="depth", disable=not show)]
        info["frames_with_depth"] = sum(1 for f in train if f.depth is not None)
        info["added_per_frame_median"] = float(np.median(added))
    elif method == "triangulated":
        found = triangulate_frames(train, TriangulationConfig())
        info.update(found.stats())
        if len(found) >= MIN_TRIANGULATED:
            world.add_points(
                torch.from_numpy(found.points), torch.from_numpy(found.colors / 255.0).float()
            )
        else:
            info["fallback"] = f"only {len(found)} points triangulated"
            method = "plane"
    if method == "plane":
        points, colors = points_at_scene_depth(train)
        world.add_points(torch.from_numpy(points), torch.from_numpy(colors / 255.0).float())
    if len(world) == 0:
        raise CaptureError(f"{capture.path}: the initialisation ({method}) gave no Gaussians")
    return {"method": method, "gaussians": len(world), **info}


def _render_views(
    gaussians: Gaussians,
    frames: Sequence[PosedFrame],
    device: torch.device,
    times: Sequence[float] | None = None,
):
    """(V, H, W, 3) renders of ``frames`` (all one size) on ``device``; a 4D world at
    ``times`` (seconds, one per frame)."""
    out = []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            cams = frame.camera(device)
            at = None if times is None else times[i]
            out.append(render(gaussians, cams, background=BACKGROUND, time=at).rgb[0])
    return torch.stack(out)


def _heldout_psnr(world: GaussianMap, heldout: Sequence[PosedFrame], device: torch.device):
    if not heldout:
        return None
    rendered = _render_views(world.gaussians(), heldout, device).clamp(0, 1)
    target = torch.stack([f.rgb for f in heldout]).to(device)
    return float(psnr(rendered, target).mean())


def _save_checkpoint(run: Path, world: GaussianMap, progress: _Progress) -> None:
    def write(folder: Path) -> None:
        with atomic_write(folder / STATE_FILE) as f:
            torch.save({"map": world.state_dict(), "train_seconds": progress.train_seconds}, f)
        summary = {
            "step": world.steps,
            "train_seconds": progress.train_seconds,
            "gaussians": len(world),
            "settings": progress.settings,
            "init": progress.init,
            "history": progress.history,
            "resumes": progress.resumes,
            "evaluated_at": progress.evaluated_at,
        }
        (folder / PROGRESS_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    write_folder_atomically(run / CHECKPOINT, write)
    write_ply(run / "world.ply", world.gaussians())


def _load_checkpoint(run: Path, world: GaussianMap, settings: dict[str, Any]) -> _Progress | None:
    folder = run / CHECKPOINT
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        saved = json.loads((folder / PROGRESS_FILE).read_text())
        changed = [k for k in RESUME_KEYS if saved["settings"].get(k) != settings.get(k)]
        if not changed:
            state = torch.load(folder / STATE_FILE, weights_only=True)
            world.load_state_dict(state["map"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"{folder}: unreadable checkpoint ({err}); remove it to start over"
        ) from err
    if changed:
        was = ", ".join(f"{k}={saved['settings'].get(k)!r}" for k in changed)
        raise CheckpointError(
            f"{folder}: made with other settings ({was}); rerun with those or use another --out"
        )
    return _Progress(
        settings=settings,
        train_seconds=float(state["train_seconds"]),
        init=saved["init"],
        history=saved["history"],
        resumes=int(saved["resumes"]) + 1,
        evaluated_at=[float(s) for s in saved.get("evaluated_at", [])],
    )


class _StopRequest:
    """Ctrl-C finishes the step in progress (a second Ctrl-C stops at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _fraction(steps: int, seconds: float, args: argparse.Namespace) -> float:
    """Share of the run done: the larger of the step and time shares (module docstring)."""
    shares = [0.0]
    if args.max_steps:
        shares.append(steps / args.max_steps)
    if args.max_seconds:
        shares.append(seconds / args.max_seconds)
    return min(1.0, max(shares))


def _done(steps: int, seconds: float, args: argparse.Namespace) -> bool:
    return steps >= args.max_steps or (args.max_seconds is not None and seconds >= args.max_seconds)


def run_fit(
    args: argparse.Namespace, on_step: Callable[[GaussianMap], None] | None = None
) -> dict[str, Any]:
    """Run ``lyra fit`` with parsed options (module docstring); returns ``metrics.json``'s
    contents.

    Args:
        args: :func:`build_parser`'s namespace.
        on_step: called after every optimisation step with the map (tests interrupt with it:
            a ``KeyboardInterrupt`` it raises saves the checkpoint like Ctrl-C).

    Raises:
        LyraError: bad input (:class:`CaptureError`, :class:`CheckpointError`).
        FitInterrupted: Ctrl-C (or ``on_step``) stopped the run; the checkpoint was saved.
    """
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    show = not args.no_progress
    perceptual = _perceptual(args, device)  # before training: a bad --lpips-weights fails fast
    load_start = time.perf_counter()
    capture = _load(args)
    train_frames, heldout_frames = _split(capture, args.holdout_every)
    train = [_posed(f) for f in train_frames]
    heldout = [_posed(f) for f in heldout_frames]
    load_seconds = time.perf_counter() - load_start
    if args.dynamic:
        metrics = _run_dynamic(args, capture, train, heldout, perceptual, device, show)
        metrics["load_seconds"] = round(load_seconds, 3)
        write_text(args.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return metrics

    run: Path = args.out
    run.mkdir(parents=True, exist_ok=True)
    settings = _settings(args)
    world = GaussianMap(_map_config(args, train), device=device)
    for frame in train:
        world.add_keyframe(frame)
    progress = _load_checkpoint(run, world, settings)
    if progress is None:
        progress = _Progress(settings=settings)
        start = time.perf_counter()
        progress.init = _initialise(world, capture, train, args.init, show)
        progress.init["seconds"] = round(time.perf_counter() - start, 3)
        progress.train_seconds = time.perf_counter() - start
        progress.init["heldout_psnr"] = _heldout_psnr(world, heldout, device)
        progress.history.append(_history_entry(world, progress, progress.init["heldout_psnr"]))
    _train(args, world, train, heldout, progress, device, show, on_step)

    metrics = _finish(args, world, capture, train, heldout, progress, perceptual, device)
    metrics["load_seconds"] = round(load_seconds, 3)
    write_text(run / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _history_entry(world: GaussianMap, progress: _Progress, value: float | None) -> dict:
    return {
        "step": world.steps,
        "train_seconds": round(progress.train_seconds, 3),
        "psnr": None if value is None else round(value, 4),
        "gaussians": len(world),
    }


def _train(
    args: argparse.Namespace,
    world: GaussianMap,
    train: Sequence[PosedFrame],
    heldout: Sequence[PosedFrame],
    progress: _Progress,
    device: torch.device,
    show: bool,
    on_step: Callable[[GaussianMap], None] | None,
) -> None:
    run: Path = args.out
    pending = sorted(s for s in args.eval_seconds if s not in progress.evaluated_at)
    last_psnr = progress.history[-1]["psnr"] if progress.history else None
    last_save = time.monotonic()
    bar = tqdm(
        total=args.max_steps,
        initial=min(world.steps, args.max_steps),
        desc="fit",
        disable=not show,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    try:
        with _StopRequest() as stop:
            while not _done(world.steps, progress.train_seconds, args):
                world.set_progress(_fraction(world.steps, progress.train_seconds, args))
                start = time.perf_counter()
                world.refine(1)
                reset = args.opacity_reset_every
                if reset and world.steps % reset == 0 and world.progress < 0.5:
                    world.reset_opacity()
                progress.train_seconds += time.perf_counter() - start
                bar.update(1)
                due = pending and progress.train_seconds >= pending[0]
                if due or (args.eval_every and world.steps % args.eval_every == 0):
                    last_psnr = _heldout_psnr(world, heldout, device)
                    progress.history.append(_history_entry(world, progress, last_psnr))
                    while pending and progress.train_seconds >= pending[0]:
                        progress.evaluated_at.append(pending.pop(0))
                postfix = {"loss": f"{world.last_loss or 0:.4f}", "gaussians": len(world)}
                if last_psnr is not None:
                    postfix["heldout_psnr"] = f"{last_psnr:.2f}"
                bar.set_postfix(postfix, refresh=False)
                if on_step is not None:
                    on_step(world)
                if stop.requested:
                    raise FitInterrupted
                if time.monotonic() - last_save >= args.checkpoint_every:
                    _save_checkpoint(run, world, progress)
                    last_save = time.monotonic()
    except KeyboardInterrupt:
        bar.close()
        _save_checkpoint(run, world, progress)
        raise FitInterrupted(
            f"stopped at step {world.steps}; checkpoint saved in {run / CHECKPOINT}"
        ) from None
    bar.close()
    world.set_progress(_fraction(world.steps, progress.train_seconds, args))
    _save_checkpoint(run, world, progress)


def _finish(
    args: argparse.Namespace,
    world: GaussianMap,
    capture: Capture,
    train: Sequence[PosedFrame],
    heldout: Sequence[PosedFrame],
    progress: _Progress,
    perceptual: PerceptualMetric | None,
    device: torch.device,
) -> dict[str, Any]:
    """Score the held-out views, write ``heldout.png``; the metrics (not yet written)."""
    scores = _score_heldout(args, world.gaussians(), heldout, perceptual, device)
    if scores and progress.history and progress.history[-1]["step"] != world.steps:
        progress.history.append(_history_entry(world, progress, scores["psnr"]))
    optimisation_seconds = progress.train_seconds - progress.init.get("seconds", 0.0)
    return {
        "heldout": scores,
        "lpips_metric": _perceptual_description(perceptual, args),
        "train_seconds": round(progress.train_seconds, 3),
        "steps": world.steps,
        "seconds_per_step": round(optimisation_seconds / world.steps, 5) if world.steps else None,
        "gaussians": len(world),
        "init": progress.init,
        "capture": _capture_summary(capture, train, heldout),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "resumes": progress.resumes,
        "schedule": f"position lr decays exponentially to {args.position_lr_final:g} of its "
        "start and densification stops at half of the run; run progress = "
        "max(steps / max_steps, train_seconds / max_seconds)",
        "settings": progress.settings,
        "history": progress.history,
    }


def _score_heldout(
    args: argparse.Namespace,
    gaussians: Gaussians,
    heldout: Sequence[PosedFrame],
    perceptual: PerceptualMetric | None,
    device: torch.device,
    times: Sequence[float] | None = None,
) -> dict[str, Any] | None:
    """Held-out PSNR / SSIM / perceptual distance (None without held-out views) and
    ``heldout.png``; a 4D world is rendered at ``times`` (one per view)."""
    if not heldout:
        return None
    rendered = _render_views(gaussians, heldout, device, times).clamp(0, 1)
    target = torch.stack([f.rgb for f in heldout]).to(device)
    values = image_metrics(rendered, target, perceptual)
    scores = {
        "psnr": round(values["psnr"], 4),
        "ssim": None if "ssim" not in values else round(values["ssim"], 4),
        "lpips": None if perceptual is None else round(values.get(perceptual.name, math.nan), 4),
        "views": len(heldout),
    }
    if scores["lpips"] is not None and math.isnan(scores["lpips"]):
        scores["lpips"] = None  # images smaller than the network's minimum size
    write_png(
        args.out / "heldout.png",
        contact_sheet(
            [[to_uint8(t) for t in target], [to_uint8(r) for r in rendered]],
            ["ground truth", "render"],
        ),
    )
    return scores


def _capture_summary(
    capture: Capture, train: Sequence[PosedFrame], heldout: Sequence[PosedFrame]
) -> dict[str, Any]:
    first = train[0]
    return {
        "path": str(capture.path),
        "format": capture.source_format,
        "frames": len(capture.frames),
        "train_views": len(train),
        "heldout_views": len(heldout),
        "skipped_images": capture.skipped,
        "width": first.width,
        "height": first.height,
        "depth": any(f.depth is not None for f in train),
        "sparse_points": None if capture.points is None else len(capture.points),
    }


# --------------------------------------------------------------------------------------------
# Dynamic scenes (--dynamic)
# --------------------------------------------------------------------------------------------


def _run_dynamic(
    args: argparse.Namespace,
    capture: Capture,
    train: Sequence[PosedFrame],
    heldout: Sequence[PosedFrame],
    perceptual: PerceptualMetric | None,
    device: torch.device,
    show: bool,
) -> dict[str, Any]:
    """``lyra fit --dynamic`` (module docstring): writes ``world.ply`` and ``heldout.png``;
    returns the metrics."""
    without = [f.name for f in train if f.depth is None or not bool((f.depth > 0).any())]
    if without:
        raise CaptureError(
            f"{capture.path}: --dynamic needs depth, but {len(without)} of {len(train)} training "
            f"frame(s) have none (first: {without[0]})"
        )
    ordered = sorted(train, key=lambda f: f.stamp)
    config = DynamicMapperConfig(
        max_frames=len(ordered),
        map=static_map_config(
            max_gaussians=args.max_gaussians,
            max_keyframes=len(ordered),
            position_lr_final=args.position_lr_final,
            scene_scale=camera_extent(ordered),
            background=BACKGROUND,
            seed=args.seed,
            sh_degree=args.sh_degree,
        ),
        refine_steps=args.max_steps,
        refine_seconds=args.max_seconds,
        max_dynamic_gaussians=args.max_gaussians,
        seed=args.seed,
        show_progress=show,
    )
    mapper = DynamicMapper(config, device=device)
    try:
        mapper.extend(ordered)
    except ValueError as err:
        raise CaptureError(f"{capture.path}: {err}") from None
    start = time.perf_counter()
    world = mapper.build()
    train_seconds = time.perf_counter() - start
    origin = mapper.time_origin
    assert origin is not None
    args.out.mkdir(parents=True, exist_ok=True)
    write_ply(args.out / "world.ply", world)
    times = [f.stamp - origin for f in heldout]
    scores = _score_heldout(args, world, heldout, perceptual, device, times)
    stats = mapper.stats
    return {
        "heldout": scores,
        "lpips_metric": _perceptual_description(perceptual, args),
        "train_seconds": round(train_seconds, 3),
        "steps": stats["refine_steps"],
        "gaussians": len(world),
        "static_gaussians": stats["static_gaussians"],
        "dynamic_gaussians": stats["dynamic_gaussians"],
        "time_range": stats["time_range"],
        "time_origin": origin,
        "heldout_times": [round(t, 6) for t in times],
        "dynamic_fraction": stats["dynamic_fraction"],
        "capture": _capture_summary(capture, train, heldout),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "settings": {**_settings(args), "dynamic": True},
    }


# --------------------------------------------------------------------------------------------
# A procedural capture (tests, benchmarks, trying the command without data)
# --------------------------------------------------------------------------------------------


def procedural_poses(views: int) -> torch.Tensor:
    """(V, 4, 4) camera-to-world poses (OpenCV) on an arc in the open side of
    :func:`~lyra_core.scene.procedural_room.procedural_room`, at heights 0.7-1.7 m, looking
    into the room at points that sweep from side to side."""
    poses = []
    for i in range(views):
        s = i / max(views - 1, 1)
        angle = math.radians(-150.0 + 120.0 * s)
        eye = (3.2 * math.cos(angle), 0.4 + 3.2 * math.sin(angle), 1.2 + 0.5 * math.sin(7 * s))
        target = (0.8 * math.sin(5.0 * math.pi * s), 0.8, 0.7)
        poses.append(look_at(eye, target, up=(0.0, 0.0, 1.0)))
    return torch.stack(poses)


def dynamic_poses(views: int) -> torch.Tensor:
    """(V, 4, 4) camera-to-world poses (OpenCV) of a slow dolly across the open side of the
    procedural room (x from -0.8 to 0.8 m, 2.9 m in front of its centre, 1.4 m up), looking at
    the middle of the room over the floor where
    :func:`~lyra_core.scene.procedural_dynamic.procedural_dynamic_room`'s objects move."""
    poses = []
    for i in range(views):
        s = i / max(views - 1, 1)
        poses.append(look_at((-0.8 + 1.6 * s, -2.9, 1.4), (0.0, 0.3, 0.5), up=(0.0, 0.0, 1.0)))
    return torch.stack(poses)


def write_procedural_capture(
    folder: str | Path,
    views: int = 16,
    width: int = 64,
    height: int = 48,
    *,
    depth: bool = False,
    gaussians: int = 20_000,
    seed: int = 0,
    fov_y: float = 1.0,
    moving_objects: int = 0,
    duration: float = 2.0,
) -> Path:
    """Render :func:`~lyra_core.scene.procedural_room.procedural_room` from
    :func:`procedural_poses` into a nerfstudio ``transforms.json`` folder.

    PNG images in ``images/``, OpenGL camera axes in ``transform_matrix``, ``fl_x``/``fl_y``/
    ``cx``/``cy`` with nerfstudio's pixel centres at +0.5, and with ``depth`` the rendered depth
    (meters, 0 where nothing was hit) as ``.npy`` files in ``depth/``.

    With ``moving_objects`` the scene is
    :func:`~lyra_core.scene.procedural_dynamic.procedural_dynamic_room` (that many objects
    moving over ``duration`` seconds) seen from :func:`dynamic_poses`, frame ``k`` at time
    ``duration * k / (views - 1)``, written as the frame's ``time``: a video for
    ``lyra fit --dynamic``.

    Returns:
        The path of ``transforms.json``.
    """
    folder = Path(folder)
    if moving_objects:
        dynamic = procedural_dynamic_room(
            seed, num_gaussians=gaussians, num_objects=moving_objects, duration=duration
        )
        poses = dynamic_poses(views)
        times = [duration * i / max(views - 1, 1) for i in range(views)]
        scenes = [dynamic.gaussians_at(t) for t in times]
    else:
        room = procedural_room(gaussians, seed=seed)
        poses = procedural_poses(views)
        times, scenes = None, [room] * views
    intrinsics = Intrinsics.from_fov(fov_y, width, height)
    meta: dict[str, Any] = {
        "camera_model": "OPENCV",
        "fl_x": intrinsics.fx,
        "fl_y": intrinsics.fy,
        "cx": intrinsics.cx + 0.5,
        "cy": intrinsics.cy + 0.5,
        "w": width,
        "h": height,
        "frames": [],
    }
    for index, (pose, scene) in enumerate(zip(poses, scenes, strict=True)):
        with torch.no_grad():
            out = render(scene, Cameras.from_intrinsics(pose[None], intrinsics))
        name = f"frame_{index:05d}"
        write_png(folder / "images" / f"{name}.png", to_uint8(out.rgb[0]))
        entry: dict[str, Any] = {
            "file_path": f"images/{name}.png",
            "transform_matrix": (pose.double().numpy() @ GL_TO_CV).tolist(),
        }
        if times is not None:
            entry["time"] = times[index]
        if depth:
            z = torch.where(out.alpha[0, ..., 0] > 0.5, out.depth[0, ..., 0], 0.0)
            (folder / "depth").mkdir(parents=True, exist_ok=True)
            np.save(folder / "depth" / f"{name}.npy", z.numpy().astype(np.float32))
            entry["depth_file_path"] = f"depth/{name}.npy"
        meta["frames"].append(entry)
    return write_text(folder / "transforms.json", json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
