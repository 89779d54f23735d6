"""Teacher-made training data: GEN3C along Lyra's six trajectories from real images.

Lyra trains its decoder by self-distillation: a camera-controlled video diffusion model (GEN3C,
:class:`lyra_core.pipelines.gen3c.Gen3CPipeline`) generates a video along each of the six Lyra
trajectories from one image and its depth, and the decoder learns from the teacher's latents
with the decoded frames as targets. This module makes those scenes, one per input image, in the
format of the procedural data (:mod:`lyra_core.data.format`, "Teacher scenes"): the input view,
and per trajectory the teacher's decoded frames (``rgb.npy``), normalised latents
(``latents.npy``), cameras, intrinsics, the 3D-cache render GEN3C conditioned on
(``cache_rgb.npy``, ``cache_mask.npy``) and that render's depth (``depth.npy``).

Inputs
------
``images``: a folder of images (``.png``, ``.jpg``, ...); scene ``i`` of the sorted file names
gets the seed ``i`` of the split (:func:`~lyra_core.data.format.split_seeds`, plus
``seed_offset``), which draws its trajectory magnitudes and the teacher's noise. Each image is
centre-cropped to the aspect ratio of ``width x height`` and resized to it; the camera has the
vertical field of view ``fov_y`` (square pixels, centred principal point) and sits at the world
origin (identity camera-to-world, OpenCV axes), as Lyra puts its cameras relative to the input.

Depth, one of:

- a folder with one depth map per image under the same name: ``NAME.npy`` (float meters) or
  ``NAME.png`` (16-bit, millimetres), the image's size; 0, NaN or inf mark unknown pixels;
- a depth estimator, any Python callable ``estimator(rgb) -> depth`` with ``rgb`` the
  (H, W, 3) uint8 image at the output size and ``depth`` an (H, W) array of z-depth in meters
  (e.g. a wrapper around MoGe, which Lyra uses); on the command line
  ``--depth-estimator package.module:function``. It is used for the images the folder has no
  depth for.

Scale-out
---------
The work is one unit per (image, trajectory). Under ``accelerate launch`` every process takes
the units ``index, index + P, index + 2P, ...`` of the list of units still to do
(``accelerate.PartialState``: ``process_index``, ``num_processes``); the lists are made by every
process from the same files between two barriers, so no unit is done twice. Each trajectory
folder is written atomically, and the process that writes the last part of a scene writes its
``meta.json``, which makes it complete. A rerun skips the trajectories that exist, removes the
temporaries of killed writers first and completes scenes whose parts all exist::

    accelerate launch --num_processes 8 -m lyra_core.cli generate --teacher gen3c \\
        --images photos/ --depth depths/ --teacher-path models/gen3c --out data/teacher

Several processes on the CPU (gloo; the tests do this): ``ACCELERATE_USE_CPU=1 accelerate launch
--multi_gpu --num_processes 2 -m lyra_core.cli generate ...`` (accelerate 1.x's ``--cpu`` flag
alone starts one process unless an MPI host file is given).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.captures.common import read_depth_file, read_rgb_file
from lyra_core.data.format import (
    ViewSet,
    remove_stale_temporaries,
    scene_dirname,
    split_seeds,
    write_scene_input,
    write_scene_meta,
    write_trajectory,
)
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories
from lyra_core.utils.errors import DataError
from lyra_core.utils.media import to_uint8

__all__ = [
    "DEPTH_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TEACHER_DATA_VERSION",
    "DepthEstimator",
    "PreparedInput",
    "SourceImage",
    "TeacherDataConfig",
    "find_sources",
    "generate_teacher_split",
    "generate_trajectory",
    "load_depth_estimator",
    "prepare_input",
]

#: Bumped whenever the same image, seed and config would produce different data.
TEACHER_DATA_VERSION = 1

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File endings read as input images (any case)."""

DEPTH_SUFFIXES = (".npy", ".png")
"""Depth files tried for ``NAME.ext``, in order: ``NAME.npy`` (meters), ``NAME.png`` (mm)."""

DepthEstimator = Callable[[np.ndarray], np.ndarray]
"""``estimator(rgb)``: (H, W, 3) uint8 RGB -> (H, W) z-depth in meters (0/NaN/inf: unknown)."""


@dataclass(frozen=True)
class TeacherDataConfig:
    """Settings shared by every teacher scene of a data set.

    Attributes:
        width: image width W, pixels (GEN3C: 1280).
        height: image height H, pixels (GEN3C: 704).
        num_frames: frames T per trajectory, frame 0 the input view (GEN3C: 121; T - 1 a
            multiple of the teacher VAE's time factor).
        fov_y: vertical field of view of the input camera, radians.
        movement_scale: Lyra trajectory scale (1.0 = Lyra's magnitudes; below 2.5).
        num_inference_steps: the teacher's sampling steps (GEN3C: 35).
        guidance_scale: classifier-free guidance ``cond + g (cond - uncond)`` (GEN3C: 1).
        trajectory_names: trajectories per scene, names of :data:`LYRA_TRAJECTORY_NAMES`.
    """

    width: int = 1280
    height: int = 704
    num_frames: int = 121
    fov_y: float = math.radians(60.0)
    movement_scale: float = 1.0
    num_inference_steps: int = 35
    guidance_scale: float = 1.0
    trajectory_names: tuple[str, ...] = LYRA_TRAJECTORY_NAMES

    def __post_init__(self) -> None:
        """Raises :class:`DataError` for settings that cannot make a scene."""
        if self.width < 1 or self.height < 1 or self.num_frames < 2:
            raise DataError(
                f"need width, height >= 1 and frames >= 2, got {self.width}, {self.height} "
                f"and {self.num_frames}"
            )
        if self.num_inference_steps < 1:
            raise DataError(f"need at least one sampling step, got {self.num_inference_steps}")
        if not 0.0 < self.fov_y < math.pi:
            raise DataError(f"fov_y must lie in (0, pi) radians, got {self.fov_y}")
        # zoom_in moves at most 0.4 * movement_scale scene depths and must stop before the
        # look-at point (lyra_core.geometry.trajectories)
        if not (math.isfinite(self.movement_scale) and 0.0 < self.movement_scale < 2.5):
            raise DataError(f"movement_scale must lie in (0, 2.5), got {self.movement_scale}")
        names = tuple(self.trajectory_names)
        unknown = [n for n in names if n not in LYRA_TRAJECTORY_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise DataError(
                f"trajectory_names must be distinct names of {LYRA_TRAJECTORY_NAMES}, got {names}"
            )
        object.__setattr__(self, "trajectory_names", names)

    def intrinsics(self) -> Intrinsics:
        """The input camera's pinhole intrinsics at W x H."""
        return Intrinsics.from_fov(self.fov_y, self.width, self.height)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceImage:
    """One input image and what its scene is called.

    Attributes:
        seed: the scene seed (folder ``scene_XXXXXX``; draws trajectories and noise).
        image: the image file.
        depth: its depth file, or None (the depth estimator makes it).
    """

    seed: int
    image: Path
    depth: Path | None


def _depth_file(depth_dir: Path | None, image: Path) -> Path | None:
    if depth_dir is None:
        return None
    for suffix in DEPTH_SUFFIXES:
        candidate = depth_dir / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def find_sources(
    images: str | Path,
    depth_dir: str | Path | None = None,
    split: str = "train",
    seed_offset: int = 0,
    has_estimator: bool = False,
) -> list[SourceImage]:
    """The input images of ``images`` (sorted by name) with their depth files and seeds.

    Every image's header is read, so unreadable files are refused before any work starts.

    Raises:
        DataError: a missing folder, no image in it, an unreadable image, an image without a
            depth file when there is no depth estimator, or seeds beyond the split's range.
    """
    images, depth_dir = Path(images), None if depth_dir is None else Path(depth_dir)
    if not images.is_dir():
        raise DataError(f"--images {images}: no such folder")
    if depth_dir is not None and not depth_dir.is_dir():
        raise DataError(f"--depth {depth_dir}: no such folder")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"--images {images}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    try:
        seeds = split_seeds(split, len(files), seed_offset)
    except ValueError as error:
        raise DataError(str(error)) from error
    sources = []
    for seed, path in zip(seeds, files, strict=True):
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise DataError(f"{path}: not a readable image ({error})") from error
        depth = _depth_file(depth_dir, path)
        if depth is None and not has_estimator:
            where = f"in {depth_dir}" if depth_dir is not None else "(no --depth folder given)"
            raise DataError(
                f"{path.name}: no depth {where}: give {path.stem}.npy (meters) or "
                f"{path.stem}.png (16-bit millimetres), or a --depth-estimator"
            )
        sources.append(SourceImage(seed, path, depth))
    return sources


def load_depth_estimator(spec: str) -> DepthEstimator:
    """The callable named ``package.module:function`` (see :data:`DepthEstimator`).

    Raises:
        DataError: a malformed name, a module that does not import or no such callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise DataError(f"--depth-estimator {spec!r}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        message = f"--depth-estimator {spec!r}: cannot import {module_name} ({error})"
        raise DataError(message) from error
    estimator = getattr(module, attribute, None)
    if not callable(estimator):
        raise DataError(f"--depth-estimator {spec!r}: {module_name} has no callable {attribute}")
    return estimator


@dataclass
class PreparedInput:
    """An input view at the teacher's size.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 z-depth, meters; 0 where unknown.
        intrinsics: the camera at W x H.
        camtoworld: (4, 4) float32 identity (the input camera is the world frame).
        scene_depth: median valid depth, meters (Lyra's trajectory scale).
    """

    rgb: Tensor
    depth: Tensor
    intrinsics: Intrinsics
    camtoworld: Tensor
    scene_depth: float


def _crop_to_aspect(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop of (H0, W0, ...) ``array`` to the aspect ratio ``width / height``."""
    rows, cols = array.shape[:2]
    if cols * height > rows * width:  # too wide
        keep = max(1, round(rows * width / height))
        start = (cols - keep) // 2
        return array[:, start : start + keep]
    keep = max(1, round(cols * height / width))
    start = (rows - keep) // 2
    return array[start : start + keep]


def prepare_input(
    source: SourceImage, config: TeacherDataConfig, estimator: DepthEstimator | None = None
) -> PreparedInput:
    """Read, crop and resize an image and its depth (or estimate it) to W x H.

    Colour is resized with area averaging, depth with nearest neighbours (no mixed depths at
    edges).

    Raises:
        DataError: unreadable files, a depth map of another size than its image, an estimator
            result of the wrong shape, or no valid depth at all.
    """
    width, height = config.width, config.height
    original = read_rgb_file(source.image)
    rgb = cv2.resize(
        _crop_to_aspect(original, width, height), (width, height), interpolation=cv2.INTER_AREA
    )
    if source.depth is not None:
        depth = read_depth_file(source.depth, png_scale=1e-3)
        if depth.shape != original.shape[:2]:
            raise DataError(
                f"{source.depth}: depth of {depth.shape[1]}x{depth.shape[0]} pixels, the image "
                f"{source.image.name} of {original.shape[1]}x{original.shape[0]}"
            )
        depth = cv2.resize(
            _crop_to_aspect(depth, width, height), (width, height), cv2.INTER_NEAREST
        )
    elif estimator is not None:
        depth = np.asarray(estimator(rgb.copy()), dtype=np.float32)
        if depth.shape != (height, width):
            raise DataError(
                f"the depth estimator returned {depth.shape} for {source.image.name}, expected "
                f"({height}, {width})"
            )
    else:
        raise DataError(f"{source.image.name}: no depth file and no depth estimator")
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    valid = depth[depth > 0]
    if valid.size == 0:
        raise DataError(f"{source.image.name}: the depth has no valid pixel")
    return PreparedInput(
        rgb=torch.from_numpy(np.ascontiguousarray(rgb)),
        depth=torch.from_numpy(depth),
        intrinsics=config.intrinsics(),
        camtoworld=torch.eye(4),
        scene_depth=float(np.median(valid)),
    )


# --------------------------------------------------------------------------------------------
# One trajectory
# --------------------------------------------------------------------------------------------


def _unit_seed(seed: int, trajectory_index: int) -> int:
    """The teacher's noise seed of one trajectory of a scene (independent of the sharding)."""
    sequence = np.random.SeedSequence([TEACHER_DATA_VERSION, seed, trajectory_index])
    return int(sequence.generate_state(1)[0])


def _trajectory_poses(prepared: PreparedInput, seed: int, config: TeacherDataConfig) -> dict:
    """``{name: (T, 4, 4) float32}`` Lyra trajectories of the scene (magnitudes from ``seed``)."""
    poses = lyra_trajectories(
        prepared.camtoworld.double(),
        prepared.scene_depth,
        config.num_frames,
        config.movement_scale,
        seed=seed,
    )
    return {name: poses[name].float() for name in config.trajectory_names}


def _frames_uint8(frames: Tensor) -> Tensor:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8 on the CPU."""
    return torch.from_numpy(to_uint8(frames.permute(0, 2, 3, 1)))


def generate_trajectory(
    pipe,
    prepared: PreparedInput,
    camtoworlds: Tensor,
    config: TeacherDataConfig,
    seed: int,
) -> ViewSet:
    """Run the teacher along one trajectory.

    Args:
        pipe: a :class:`~lyra_core.pipelines.gen3c.Gen3CPipeline` (or anything called alike
            that returns a :class:`~lyra_core.pipelines.gen3c.Gen3COutput`).
        prepared: the input view.
        camtoworlds: (T, 4, 4) float32 trajectory, camera 0 the input.
        config: the sampling settings.
        seed: seeds the teacher's noise (a CPU generator: the same on every device).

    Returns:
        The trajectory as stored: teacher frames, cache depth, cameras, cache render, latents.
    """
    intrinsics = prepared.intrinsics
    cameras = Cameras.from_intrinsics(camtoworlds, intrinsics)
    out = pipe(
        prepared.rgb.permute(2, 0, 1).float() / 255.0,
        prepared.depth,
        intrinsics.matrix(torch.float32),
        cameras,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
    )
    return ViewSet(
        rgb=_frames_uint8(out.frames),
        depth=out.cache_depth.detach().float().cpu(),
        Ks=intrinsics.matrix(torch.float32).expand(len(camtoworlds), 3, 3).clone(),
        camtoworlds=camtoworlds.clone(),
        cache_rgb=_frames_uint8(out.cache_rgb),
        cache_mask=out.cache_mask.detach().cpu().bool(),
        latents=out.latents.detach().float().cpu(),
    )


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def _scene_meta(
    source: SourceImage,
    config: TeacherDataConfig,
    split: str,
    scene_depth: float,
    teacher: str,
) -> dict[str, Any]:
    """The ``meta.json`` content of a teacher scene."""
    intr = config.intrinsics()
    return {
        "seed": source.seed,
        "split": split,
        "width": config.width,
        "height": config.height,
        "intrinsics": {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy},
        "fov_y": config.fov_y,
        "scene_depth": scene_depth,
        "trajectory_names": list(config.trajectory_names),
        "num_frames": config.num_frames,
        "num_heldout": 0,
        "generator_version": TEACHER_DATA_VERSION,
        "movement_scale": config.movement_scale,
        "background": [0.0, 0.0, 0.0],
        "image": source.image.name,
        "depth_source": source.depth.name if source.depth is not None else "estimator",
        "latent_scale": 1.0,
        "teacher": {
            "name": "gen3c",
            "path": teacher,
            "num_inference_steps": config.num_inference_steps,
            "guidance_scale": config.guidance_scale,
        },
    }


def _trajectory_done(scene_dir: Path, name: str) -> bool:
    return (scene_dir / "trajectories" / name).is_dir()


def _finish_scene(
    scene_dir: Path, source: SourceImage, config: TeacherDataConfig, split: str, teacher: str
) -> bool:
    """Write ``meta.json`` when the input and every trajectory exist; whether it is complete."""
    if (scene_dir / "meta.json").is_file():
        return True
    depth_file = scene_dir / "input" / "depth.npy"
    if not depth_file.is_file() or not all(
        _trajectory_done(scene_dir, n) for n in config.trajectory_names
    ):
        return False
    try:
        depth = np.load(depth_file)
        scene_depth = float(np.median(depth[depth > 0]))
    except (OSError, ValueError):
        return False  # a damaged part: left for the user to see (no meta, never read)
    write_scene_meta(scene_dir, _scene_meta(source, config, split, scene_depth, teacher))
    return True


def _check_existing(scene_dir: Path, source: SourceImage) -> None:
    """Refuse to resume a complete scene made from another image (the image list changed)."""
    meta = scene_dir / "meta.json"
    if meta.is_file():
        try:
            image = json.loads(meta.read_text()).get("image")
        except (OSError, ValueError) as error:
            raise DataError(f"{meta}: unreadable ({error})") from error
        if image != source.image.name:
            raise DataError(
                f"{scene_dir} was made from {image!r}, not {source.image.name!r}: the image "
                "folder changed since; write to another --out or use --seed-offset"
            )


def _load_teacher(teacher, device: torch.device, offload: bool):
    """A pipeline object as is, or ``Gen3CPipeline.from_pretrained(folder)`` on ``device``."""
    if not isinstance(teacher, str | Path):
        return teacher
    from lyra_core.pipelines.gen3c import Gen3CPipeline

    return Gen3CPipeline.from_pretrained(teacher, device=device, offload=offload, progress=False)


def _process_state():
    """accelerate's ``PartialState``: this process's index, the process count and its device
    (one process without a launcher). Without CUDA, or with ``ACCELERATE_USE_CPU=1``, the
    processes run on the CPU and talk over gloo."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(
        cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    )


def generate_teacher_split(
    out: str | Path,
    images: str | Path,
    teacher,
    config: TeacherDataConfig | None = None,
    depth_dir: str | Path | None = None,
    depth_estimator: DepthEstimator | None = None,
    split: str = "train",
    seed_offset: int = 0,
    progress: bool = True,
    offload: bool = False,
) -> dict[str, Any]:
    """Make one teacher scene per image of ``images`` into ``out/<split>/`` (resumable; this
    process's share under ``accelerate launch``, see the module docstring).

    Args:
        out: data root.
        images: folder of input images.
        teacher: a Gen3C pipeline folder (loaded on this process's device, only when it has
            work) or a pipeline object.
        config: the settings.
        depth_dir: folder of depth maps named like the images.
        depth_estimator: makes the depth of images without a depth file.
        split: the split folder and seed range.
        seed_offset: offset of the first image's seed in the split's range.
        progress: show a tqdm bar (main process).
        offload: load the teacher with each model on the CPU except while it runs.

    Returns:
        ``{"scenes", "complete", "generated", "skipped", "failed": {"scene/trajectory":
        error}, "seconds_per_trajectory", "process", "num_processes"}``; ``generated`` and
        ``failed`` count this process's trajectories, ``complete`` the complete scenes seen
        at its end.

    Raises:
        DataError: bad inputs (:func:`find_sources`), settings, or an output folder that cannot
            be created or holds scenes of other images.
    """
    config = config or TeacherDataConfig()
    sources = find_sources(images, depth_dir, split, seed_offset, depth_estimator is not None)
    split_dir = Path(out) / split
    teacher_name = str(teacher) if isinstance(teacher, str | Path) else type(teacher).__name__
    # checks every process makes alike (an error on one only would leave the others waiting)
    try:
        split_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the output folder {split_dir}: {error}") from error
    for source in sources:
        _check_existing(split_dir / scene_dirname(source.seed), source)
    state = _process_state()
    if state.is_main_process:
        remove_stale_temporaries(split_dir)
        for source in sources:
            scene_dir = split_dir / scene_dirname(source.seed)
            _finish_scene(scene_dir, source, config, split, teacher_name)
    state.wait_for_everyone()  # the folder is clean: every process lists the same work
    units = [
        (source, index, name)
        for source in sources
        for index, name in enumerate(config.trajectory_names)
        if not _trajectory_done(split_dir / scene_dirname(source.seed), name)
    ]
    state.wait_for_everyone()  # every list is made before any process writes
    mine = units[state.process_index :: state.num_processes]
    total_units = len(sources) * len(config.trajectory_names)
    pipe = _load_teacher(teacher, state.device, offload) if mine else None
    failed: dict[str, str] = {}
    times: list[float] = []
    inputs: dict[int, tuple[PreparedInput, dict[str, Tensor]]] = {}  # the current scene's
    suffix = f" [{state.num_processes} processes]" if state.num_processes > 1 else ""
    bar = tqdm(
        mine,
        desc=f"teacher {split}{suffix}",
        unit="trajectory",
        disable=not (progress and state.is_main_process),
    )
    for source, index, name in bar:
        scene_dir = split_dir / scene_dirname(source.seed)
        began = time.perf_counter()
        try:
            if source.seed not in inputs:
                prepared = prepare_input(source, config, depth_estimator)
                inputs = {source.seed: (prepared, _trajectory_poses(prepared, source.seed, config))}
            prepared, poses = inputs[source.seed]
            if not (scene_dir / "input").is_dir():
                with contextlib.suppress(FileExistsError):  # another process was first
                    write_scene_input(
                        scene_dir,
                        prepared.rgb,
                        prepared.depth,
                        prepared.intrinsics.matrix(torch.float32),
                        prepared.camtoworld,
                    )
            seed = _unit_seed(source.seed, index)
            views = generate_trajectory(pipe, prepared, poses[name], config, seed)
            write_trajectory(scene_dir, name, views)
            _finish_scene(scene_dir, source, config, split, teacher_name)
        except Exception as error:  # reported; the other trajectories go on
            failed[f"{scene_dirname(source.seed)}/{name}"] = f"{type(error).__name__}: {error}"
            continue
        times.append(time.perf_counter() - began)
    bar.close()
    complete = sum((split_dir / scene_dirname(s.seed) / "meta.json").is_file() for s in sources)
    return {
        "scenes": len(sources),
        "complete": complete,
        "generated": len(times),
        "skipped": total_units - len(units),
        "failed": failed,
        "seconds_per_trajectory": float(np.mean(times)) if times else None,
        "process": state.process_index,
        "num_processes": state.num_processes,
    }
