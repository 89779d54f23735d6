"""Procedural multi-trajectory training data for the Lyra student (the Lyra / GEN3C setup).

A scene sample, fully determined by its seed and a :class:`GeneratorConfig`:

1. **Layout** (:func:`lyra_core.data.layouts.random_layout`): a random room or outdoor layout,
   covered with flat surface Gaussians (:func:`lyra_core.data.layouts.layout_gaussians`).
2. **Input camera**: a random free position looking at an object (or a random point), world
   up ``+z``; ``scene_depth`` is the median rendered depth of the input view over pixels with
   alpha > 0.5. Poses are re-drawn until the view is mostly covered and every camera of the
   trajectories and held-out set stays inside the layout and out of the objects.
3. **Six Lyra trajectories** (:func:`lyra_core.geometry.trajectories.lyra_trajectories`, seeded
   by the scene seed) from the input camera, ``num_frames`` each; frame 0 is the input camera.
4. **Renders** of every camera (:func:`lyra_core.pipelines.cache3d.render_views`): RGB (uint8),
   depth (float32 meters, 0 where alpha <= 0.5), and the **3D cache** render: the input view
   unprojected with its depth (:func:`lyra_core.pipelines.cache3d.cache_gaussians`) rendered
   over black (:func:`lyra_core.pipelines.cache3d.render_cache`, shared with the inference
   pipeline), with the mask ``alpha > 0.5`` -- what GEN3C conditions on.
5. **Held-out cameras**: ``num_heldout`` random poses near the input camera (offsets up to
   ~0.3 scene depths, look-at point jittered), rendered the same way, for evaluation.

The on-disk format and the splits are documented in :mod:`lyra_core.data.format`.

CLI (``lyra generate``; one folder per scene under ``<out>/<split>/``, existing scenes are
skipped)::

    lyra generate --out data/procedural --num-scenes 100 --split train \\
        --workers 2 --frames 17 --width 64 --height 48 --seed-offset 0

or ``python -m lyra_core.data.generator`` with the same options.

With ``--teacher gen3c`` it makes teacher scenes instead, one per image of ``--images``
(:mod:`lyra_core.data.teacher`; ``--width``, ``--height`` and ``--frames`` default to GEN3C's
1280 x 704 x 121), sharded over the processes of ``accelerate launch``::

    lyra generate --teacher gen3c --images photos/ --depth depths/ --teacher-path models/gen3c \
        --out data/teacher --split train
    accelerate launch --num_processes 8 -m lyra_core.cli generate --teacher gen3c ...
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.format import (
    SPLITS,
    SceneSample,
    ViewSet,
    remove_stale_temporaries,
    scene_dirname,
    split_of_seed,
    split_seeds,
    write_scene,
)
from lyra_core.data.layouts import LAYOUT_KINDS, Layout, layout_gaussians, random_layout
from lyra_core.data.teacher import TeacherDataConfig
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories
from lyra_core.geometry.transforms import look_at
from lyra_core.pipelines.cache3d import Renders, cache_gaussians, render_cache, render_views
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.errors import DataError, run_command

__all__ = [
    "GENERATOR_VERSION",
    "GeneratorConfig",
    "generate_scene",
    "generate_split",
    "main",
    "write_generated_scene",
]

TEACHER_NAMES = ("gen3c",)
"""Teachers ``lyra generate --teacher`` knows."""

#: Bumped whenever the same seed and config would produce different data.
GENERATOR_VERSION = 1

MAX_CAMERA_ATTEMPTS = 40
"""Input poses tried before settling for the best one seen."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """Generation settings shared by every scene of a data set.

    Attributes:
        width: image width W, pixels.
        height: image height H, pixels.
        num_frames: frames N per trajectory (>= 2), frame 0 being the input view.
        num_heldout: held-out cameras K per scene (>= 1).
        num_gaussians: surface Gaussians per scene.
        fov_y: vertical field of view, radians (square pixels, centred principal point).
        movement_scale: Lyra trajectory scale (1.0 = Lyra's magnitudes).
        layout: ``"room"``, ``"outdoor"`` or ``None`` (drawn per seed).
        device: torch device to render on (data are bitwise reproducible per device).
        batch_size: cameras per render call.
    """

    width: int = 64
    height: int = 48
    num_frames: int = 17
    num_heldout: int = 4
    num_gaussians: int = 30_000
    fov_y: float = math.radians(60.0)
    movement_scale: float = 1.0
    layout: str | None = None
    device: str = "cpu"
    batch_size: int = 17

    def __post_init__(self) -> None:
        """Raises :class:`~lyra_core.utils.errors.DataError` (a ``ValueError``) for settings
        that cannot make a scene."""
        if self.num_frames < 2 or self.num_heldout < 1 or self.num_gaussians < 1:
            raise DataError(
                f"need frames >= 2, held-out views >= 1 and Gaussians >= 1, got "
                f"{self.num_frames}, {self.num_heldout} and {self.num_gaussians}"
            )
        if self.width < 1 or self.height < 1 or self.batch_size < 1:
            raise DataError(
                f"need width, height and batch size >= 1, got {self.width}, {self.height} "
                f"and {self.batch_size}"
            )
        if not 0.0 < self.fov_y < math.pi:
            raise DataError(f"fov_y must lie in (0, pi) radians, got {self.fov_y}")
        if not (math.isfinite(self.movement_scale) and self.movement_scale > 0.0):
            raise DataError(f"movement_scale must be positive, got {self.movement_scale}")
        if self.layout is not None and self.layout not in LAYOUT_KINDS:
            raise DataError(f"layout must be one of {LAYOUT_KINDS} or None, got {self.layout!r}")

    def intrinsics(self) -> Intrinsics:
        """The pinhole intrinsics shared by every camera."""
        return Intrinsics.from_fov(self.fov_y, self.width, self.height)


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


def _look_pose(eye: np.ndarray, target: np.ndarray) -> Tensor:
    """(4, 4) float64 camera-to-world pose from ``eye`` to ``target`` with world up +z."""
    eye_t = torch.as_tensor(eye, dtype=torch.float64)
    target_t = torch.as_tensor(target, dtype=torch.float64)
    return look_at(eye_t, target_t, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def _sample_input_pose(layout: Layout, rng: np.random.Generator) -> Tensor | None:
    """A free eye in ``look_bounds`` looking at an object (p = 0.75) or a random point.

    Returns:
        (4, 4) float64 camera-to-world pose, or None when 100 draws found no valid pose.
    """
    objects = layout.object_points()
    lo, hi = layout.look_bounds
    for _ in range(100):
        eye = rng.uniform(lo, hi)
        if not layout.is_free(eye, clearance=0.4)[0]:
            continue
        if len(objects) and rng.random() < 0.75:
            target = objects[rng.integers(len(objects))] + rng.normal(0.0, 0.2, size=3)
        else:
            target = rng.uniform([lo[0], lo[1], 0.3], [hi[0], hi[1], 1.5])
        if 1.2 <= np.hypot(*(target - eye)[:2]) <= 8.0:
            return _look_pose(eye, target)
    return None


def _heldout_poses(
    layout: Layout, camtoworld: Tensor, scene_depth: float, count: int, rng: np.random.Generator
) -> Tensor:
    """``count`` poses near the input camera, (count, 4, 4) float64.

    Each eye is the input centre plus an offset in the input camera frame, uniform in
    ``+-(0.3, 0.15, 0.3) * scene_depth`` (halved until the eye is free), looking at the
    input look-at point jittered by 0.1 scene depths, world up +z.
    """
    R0, c0 = camtoworld[:3, :3].numpy(), camtoworld[:3, 3].numpy()
    look_point = c0 + scene_depth * R0[:, 2]
    poses = []
    for _ in range(count):
        offset = rng.uniform(-1.0, 1.0, size=3) * np.array([0.3, 0.15, 0.3]) * scene_depth
        target = look_point + rng.normal(0.0, 0.1 * scene_depth, size=3)
        for _ in range(6):
            if layout.is_free(c0 + R0 @ offset)[0]:
                break
            offset = 0.5 * offset
        poses.append(_look_pose(c0 + R0 @ offset, target))
    return torch.stack(poses)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _view_set(
    gaussians: Gaussians,
    cache: Gaussians,
    camtoworlds: Tensor,
    intrinsics: Intrinsics,
    background: Sequence[float],
    config: GeneratorConfig,
) -> ViewSet:
    """Scene and 3D-cache renders of (N, 4, 4) float32 poses as a :class:`ViewSet`."""
    cameras = Cameras.from_intrinsics(camtoworlds, intrinsics)
    scene = render_views(gaussians, cameras, background, config.device, config.batch_size)
    cached = render_cache(cache, camtoworlds, intrinsics, config.device, config.batch_size)
    Ks = intrinsics.matrix(torch.float32).expand(len(camtoworlds), 3, 3).clone()
    return ViewSet(
        rgb=scene.rgb,
        depth=scene.depth,
        Ks=Ks,
        camtoworlds=camtoworlds.clone(),
        cache_rgb=cached.rgb,
        cache_mask=cached.mask,
    )


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass
class _InputView:
    """The chosen input camera and what depends on it."""

    camtoworld: Tensor  # (4, 4) float32
    view: Renders  # N = 1
    scene_depth: float
    trajectories: dict[str, Tensor]  # name -> (N, 4, 4) float32
    heldout: Tensor  # (K, 4, 4) float32
    valid_fraction: float
    attempts: int
    accepted: bool


def _try_input_view(
    layout: Layout,
    gaussians: Gaussians,
    pose: Tensor,
    seed: int,
    config: GeneratorConfig,
    rng: np.random.Generator,
) -> _InputView | None:
    """Render one candidate input pose and derive its trajectories; None if nearly empty."""
    pose32 = pose.to(torch.float32)
    camera = Cameras.from_intrinsics(pose32[None], config.intrinsics())
    view = render_views(gaussians, camera, layout.background, config.device, config.batch_size)
    valid = view.mask[0]
    fraction = float(valid.float().mean())
    if fraction < 0.05:
        return None
    scene_depth = float(view.depth[0][valid].median())
    trajectories = lyra_trajectories(
        pose, scene_depth, config.num_frames, config.movement_scale, seed=seed
    )
    heldout = _heldout_poses(layout, pose, scene_depth, config.num_heldout, rng)
    centers = torch.cat([t[:, :3, 3] for t in trajectories.values()] + [heldout[:, :3, 3]])
    accepted = fraction >= layout.min_valid and bool(layout.is_free(centers.numpy()).all())
    return _InputView(
        camtoworld=pose32,
        view=view,
        scene_depth=scene_depth,
        trajectories={name: t.to(torch.float32) for name, t in trajectories.items()},
        heldout=heldout.to(torch.float32),
        valid_fraction=fraction,
        attempts=0,
        accepted=accepted,
    )


def _choose_input_view(
    layout: Layout,
    gaussians: Gaussians,
    seed: int,
    config: GeneratorConfig,
    rng: np.random.Generator,
) -> _InputView:
    """First acceptable input view in :data:`MAX_CAMERA_ATTEMPTS` draws, else the best seen.

    Raises:
        RuntimeError: if no candidate pose saw anything.
    """
    best: _InputView | None = None
    for attempt in range(1, MAX_CAMERA_ATTEMPTS + 1):
        pose = _sample_input_pose(layout, rng)
        if pose is None:
            continue
        candidate = _try_input_view(layout, gaussians, pose, seed, config, rng)
        if candidate is None:
            continue
        candidate.attempts = attempt
        if candidate.accepted:
            return candidate
        if best is None or candidate.valid_fraction > best.valid_fraction:
            best = candidate
    if best is None:
        raise RuntimeError(f"seed {seed}: no input camera of {MAX_CAMERA_ATTEMPTS} saw the scene")
    return best


def _scene_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (layout, camera) generators derived from the scene seed."""
    layout_seq, camera_seq = np.random.SeedSequence([GENERATOR_VERSION, seed]).spawn(2)
    return np.random.default_rng(layout_seq), np.random.default_rng(camera_seq)


def _meta(
    seed: int, split: str, config: GeneratorConfig, layout: Layout, chosen: _InputView
) -> dict[str, Any]:
    """The ``meta.json`` content of a scene."""
    intr = config.intrinsics()
    return {
        "seed": seed,
        "split": split,
        "width": config.width,
        "height": config.height,
        "intrinsics": {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy},
        "fov_y": config.fov_y,
        "scene_depth": chosen.scene_depth,
        "trajectory_names": list(LYRA_TRAJECTORY_NAMES),
        "num_frames": config.num_frames,
        "num_heldout": config.num_heldout,
        "generator_version": GENERATOR_VERSION,
        "movement_scale": config.movement_scale,
        "num_gaussians": config.num_gaussians,
        "layout": layout.kind,
        "num_boxes": len(layout.boxes),
        "num_spheres": len(layout.spheres),
        "background": list(layout.background),
        "input_valid_fraction": chosen.valid_fraction,
        "camera_attempts": chosen.attempts,
        "camera_accepted": chosen.accepted,
    }


def generate_scene(
    seed: int, config: GeneratorConfig | None = None, split: str | None = None
) -> SceneSample:
    """Generate the scene sample of ``seed`` (see the module docstring).

    Args:
        seed: scene seed; decides the layout, cameras and trajectory magnitudes.
        config: generation settings (default :class:`GeneratorConfig`).
        split: split name stored in the metadata; default :func:`split_of_seed`.

    Returns:
        A :class:`SceneSample` with N = ``config.num_frames`` frames per trajectory and
        K = ``config.num_heldout`` held-out views, all H x W = ``config.height x width``.
    """
    config = config or GeneratorConfig()
    split = split_of_seed(seed) if split is None else split
    layout_rng, camera_rng = _scene_rngs(seed)
    layout = random_layout(layout_rng, config.layout)
    gaussians = layout_gaussians(layout, config.num_gaussians, layout_rng)
    chosen = _choose_input_view(layout, gaussians, seed, config, camera_rng)
    intrinsics = config.intrinsics()
    rgb, depth = chosen.view.rgb[0], chosen.view.depth[0]
    cache = cache_gaussians(rgb, depth, intrinsics, chosen.camtoworld)

    def views(poses: Tensor) -> ViewSet:
        return _view_set(gaussians, cache, poses, intrinsics, layout.background, config)

    return SceneSample(
        meta=_meta(seed, split, config, layout, chosen),
        input_rgb=rgb,
        input_depth=depth,
        input_K=intrinsics.matrix(torch.float32),
        input_camtoworld=chosen.camtoworld,
        trajectories={name: views(poses) for name, poses in chosen.trajectories.items()},
        heldout=views(chosen.heldout),
    )


def write_generated_scene(
    root: str | Path, seed: int, config: GeneratorConfig | None = None, split: str | None = None
) -> Path | None:
    """Generate scene ``seed`` into ``root/scene_XXXXXX`` atomically; None if it exists."""
    path = Path(root) / scene_dirname(seed)
    if path.exists():
        return None
    return write_scene(path, generate_scene(seed, config, split))


# --------------------------------------------------------------------------------------------
# Many scenes
# --------------------------------------------------------------------------------------------


def _init_worker() -> None:
    """Pool initializer: one torch thread per worker process."""
    torch.set_num_threads(1)


def _generate_task(task: tuple[str, int, dict[str, Any], str]) -> tuple[int, float, str | None]:
    """Worker body: ``(root, seed, config fields, split) -> (seed, seconds, error or None)``."""
    root, seed, config_fields, split = task
    start = time.perf_counter()
    try:
        write_generated_scene(root, seed, GeneratorConfig(**config_fields), split)
    except Exception as error:  # reported, the other scenes go on
        return seed, time.perf_counter() - start, f"{type(error).__name__}: {error}"
    return seed, time.perf_counter() - start, None


def generate_split(
    out: str | Path,
    split: str,
    num_scenes: int,
    config: GeneratorConfig | None = None,
    workers: int = 1,
    seed_offset: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``num_scenes`` scenes of ``split`` into ``out/<split>/``, skipping existing ones.

    Args:
        out: data root.
        split: ``train``, ``val`` or ``test``; seeds from :func:`split_seeds`.
        num_scenes: scenes to have (existing scene folders count and are skipped).
        config: generation settings.
        workers: processes (spawned, one torch thread each); <= 1 generates in this process.
        seed_offset: first seed's offset inside the split's seed range.
        progress: show a tqdm bar.

    Returns:
        ``{"generated", "skipped", "failed": {seed: error}, "seconds_per_scene"}``.

    Raises:
        DataError: an unknown split, seeds beyond the split's range, or an output folder that
            cannot be created.
    """
    config = config or GeneratorConfig()
    try:
        seeds = split_seeds(split, num_scenes, seed_offset)
    except ValueError as error:
        raise DataError(str(error)) from error
    split_dir = Path(out) / split
    try:
        split_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the output folder {split_dir}: {error}") from error
    remove_stale_temporaries(split_dir)
    todo = [s for s in seeds if not (split_dir / scene_dirname(s)).exists()]
    tasks = [(str(split_dir), seed, asdict(config), split) for seed in todo]
    results = []
    bar = tqdm(total=len(tasks), desc=f"scenes {split}", unit="scene", disable=not progress)
    if workers <= 1:
        _collect(results, bar, map(_generate_task, tasks))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(processes=workers, initializer=_init_worker) as pool:
            _collect(results, bar, pool.imap_unordered(_generate_task, tasks))
    bar.close()
    failed = {seed: error for seed, _, error in results if error is not None}
    times = [seconds for _, seconds, error in results if error is None]
    return {
        "generated": len(times),
        "skipped": len(seeds) - len(todo),
        "failed": failed,
        "seconds_per_scene": float(np.mean(times)) if times else None,
    }


def _collect(results: list, bar: tqdm, iterator) -> None:
    """Drain ``iterator`` of task results into ``results``, advancing the progress bar."""
    for result in iterator:
        results.append(result)
        bar.update(1)


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    kind: Callable[[str], Any],
    default: Any,
    text: str,
) -> None:
    """Add ``flag`` of type ``kind`` with ``default``; its help is ``text`` and the default."""
    parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The ``lyra generate`` options (``--help`` lists them)."""
    defaults = GeneratorConfig()
    parser = argparse.ArgumentParser(
        prog="lyra generate",
        description="Generate procedural Lyra multi-trajectory scenes into OUT/SPLIT/scene_XXXXXX "
        "(existing scenes are skipped).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="procedural DYNAMIC scenes (moving objects, time-synchronised trajectories, "
        "flipped supervision) instead: the options of 'lyra generate --dynamic --help' follow",
    )
    _option(parser, "--out", Path, Path("data/procedural"), "data root")
    parser.add_argument(
        "--num-scenes",
        type=_count(1),
        help="scenes the split should hold (procedural data: required)",
    )
    parser.add_argument(
        "--split",
        default="train",
        choices=SPLITS,
        help="split, decides the seeds (default: %(default)s)",
    )
    _option(parser, "--workers", _count(0), 2, "worker processes; 0 or 1 generates in this process")
    teacher = TeacherDataConfig()
    parser.add_argument(
        "--frames",
        type=_count(2),
        help="frames per trajectory, frame 0 being the input view (default: "
        f"{defaults.num_frames}; teacher: {teacher.num_frames})",
    )
    parser.add_argument(
        "--width",
        type=_count(1),
        help=f"image width, pixels (default: {defaults.width}; teacher: {teacher.width})",
    )
    parser.add_argument(
        "--height",
        type=_count(1),
        help=f"image height, pixels (default: {defaults.height}; teacher: {teacher.height})",
    )
    _option(
        parser,
        "--seed-offset",
        _count(0),
        0,
        "offset of the first seed inside the split's seed range",
    )
    _option(
        parser,
        "--heldout",
        _count(1),
        defaults.num_heldout,
        "held-out evaluation cameras per scene",
    )
    _option(parser, "--gaussians", _count(1), defaults.num_gaussians, "surface Gaussians per scene")
    parser.add_argument(
        "--fov",
        type=float,
        default=defaults.fov_y,
        help="vertical field of view, radians (default: %(default).4f)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUT_KINDS,
        default=None,
        help="layout kind (default: random per seed)",
    )
    _option(
        parser,
        "--movement-scale",
        float,
        defaults.movement_scale,
        "scale of the Lyra trajectories, 1 = Lyra's magnitudes",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = parser.add_argument_group(
        "teacher data",
        "one scene per image made by a video diffusion teacher (lyra_core.data.teacher); "
        "shard over processes with: accelerate launch -m lyra_core.cli generate ...",
    )
    group.add_argument(
        "--teacher", choices=TEACHER_NAMES, help="make teacher scenes with this teacher"
    )
    group.add_argument("--images", type=Path, help="folder of input images, one scene each")
    group.add_argument(
        "--depth",
        type=Path,
        help="folder of depth maps named like the images: NAME.npy (meters) or NAME.png "
        "(16-bit millimetres)",
    )
    group.add_argument(
        "--depth-estimator",
        metavar="MODULE:FUNCTION",
        help="Python callable rgb (H, W, 3) uint8 -> depth (H, W) meters, for images without "
        "a depth file",
    )
    group.add_argument(
        "--teacher-path", type=Path, help="the teacher's pipeline folder (Gen3CPipeline)"
    )
    group.add_argument(
        "--offload",
        action="store_true",
        help="keep each teacher model on the CPU except while it runs (less GPU memory)",
    )
    _option(
        group, "--steps", _count(1), teacher.num_inference_steps, "the teacher's sampling steps"
    )
    _option(group, "--guidance", float, teacher.guidance_scale, "the teacher's guidance scale")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra generate``: returns 0, 1 when a scene failed (each is listed), or 2 for invalid
    settings (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dynamic" in argv:
        from lyra_core.data.dynamic import main as generate_dynamic

        return generate_dynamic([arg for arg in argv if arg != "--dynamic"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.teacher is None:
        teacher_only = [
            f"--{name.replace('_', '-')}"
            for name in ("images", "depth", "depth_estimator", "teacher_path")
            if getattr(args, name) is not None
        ]
        if teacher_only:
            parser.error(f"{', '.join(teacher_only)} need --teacher")
        if args.num_scenes is None:
            parser.error("the procedural generator needs --num-scenes")
        return run_command("lyra generate", lambda: _run(args))
    if args.images is None or args.teacher_path is None:
        parser.error("--teacher needs --images and --teacher-path")
    return run_command("lyra generate", lambda: _run_teacher(args))


def _view_settings(
    args: argparse.Namespace, defaults: GeneratorConfig | TeacherDataConfig
) -> dict[str, Any]:
    """The settings both generators share: image size and frames (``defaults``' where not
    given), field of view and trajectory scale."""
    return {
        "width": args.width or defaults.width,
        "height": args.height or defaults.height,
        "num_frames": args.frames or defaults.num_frames,
        "fov_y": args.fov,
        "movement_scale": args.movement_scale,
    }


def _report_failures(failed: dict[Any, str], label: str = "") -> int:
    """Print one line per failed unit (``label`` before its key); the exit status: 1 when any
    failed, else 0."""
    for unit, error in failed.items():
        print(f"  {label}{unit}: {error}")
    return 1 if failed else 0


def _run_teacher(args: argparse.Namespace) -> int:
    """``lyra generate --teacher gen3c``: this process's share of the teacher scenes."""
    from lyra_core.data.teacher import generate_teacher_split, load_depth_estimator

    config = TeacherDataConfig(
        **_view_settings(args, TeacherDataConfig()),
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
    )
    if not args.teacher_path.is_dir():
        raise DataError(f"--teacher-path {args.teacher_path}: no such folder")
    estimator = None if args.depth_estimator is None else load_depth_estimator(args.depth_estimator)
    summary = generate_teacher_split(
        args.out,
        args.images,
        str(args.teacher_path),
        config,
        depth_dir=args.depth,
        depth_estimator=estimator,
        split=args.split,
        seed_offset=args.seed_offset,
        progress=not args.no_progress,
        offload=args.offload,
    )
    per_unit = summary["seconds_per_trajectory"]
    timing = "" if per_unit is None else f", {per_unit:.2f} s/trajectory"
    process = (
        f"process {summary['process']}/{summary['num_processes']}: "
        if summary["num_processes"] > 1
        else ""
    )
    print(
        f"{args.split}: {process}generated {summary['generated']} trajectories, skipped "
        f"{summary['skipped']}, failed {len(summary['failed'])}{timing}; "
        f"{summary['complete']}/{summary['scenes']} scenes complete"
    )
    return _report_failures(summary["failed"])


def _run(args: argparse.Namespace) -> int:
    config = GeneratorConfig(
        **_view_settings(args, GeneratorConfig()),
        num_heldout=args.heldout,
        num_gaussians=args.gaussians,
        layout=args.layout,
    )
    summary = generate_split(
        args.out,
        args.split,
        args.num_scenes,
        config,
        workers=args.workers,
        seed_offset=args.seed_offset,
        progress=not args.no_progress,
    )
    per_scene = summary["seconds_per_scene"]
    timing = "" if per_scene is None else f", {per_scene:.2f} s/scene per worker"
    print(
        f"{args.split}: generated {summary['generated']}, skipped {summary['skipped']}, "
        f"failed {len(summary['failed'])}{timing}"
    )
    return _report_failures(summary["failed"], "seed ")


if __name__ == "__main__":
    # Re-import under the package name so worker tasks pickle as lyra_core.data.generator.*.
    from lyra_core.data.generator import main as _main

    raise SystemExit(_main())
