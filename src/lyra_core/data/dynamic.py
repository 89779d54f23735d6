"""Procedural dynamic (4D) training data for Lyra's dynamic student.

A scene, fully determined by its seed and a :class:`DynamicGeneratorConfig`:

1. **World**: :func:`lyra_core.scene.procedural_dynamic.procedural_dynamic_room`, a furnished
   room with ``num_objects`` rigid objects that translate and turn over ``[0, duration]``
   seconds; its exact 3D world at any time is known.
2. **Input video**: ``num_frames`` RGB-D frames at the frame times ``t_i = duration * i / (T -
   1)`` from a camera that moves: it slides sideways (and a little forward) by up to
   ``input_motion`` meters in its own frame while panning, world up +z. ``scene_depth`` is the
   median depth of frame 0.
3. **Six time-synchronised trajectories** (:func:`lyra_core.geometry.trajectories.
   lyra_trajectories` from input frame 0, seeded by the scene seed): trajectory ``k`` at step
   ``i`` is rendered from the world at time ``t_i``.
4. **Flipped supervision** (Lyra's, targets only): Lyra also generates along the six trajectory
   types from the time-reversed input video and flips the result back, so at time ``t_i`` the
   flipped view ``k + 6`` stands where trajectory ``k`` is at step ``T - 1 - i``: camera
   ``flipped[k][i] = trajectories[k][T - 1 - i]``, rendered from the world at time ``t_i``.
5. **4D cache** (:mod:`lyra_core.pipelines.cache4d`): every view is also rendered from the cache
   of the input frame at its time (black where empty) -- the student's input along the
   trajectories, the baseline elsewhere.
6. **Held-out (camera, time) pairs**: ``num_heldout`` poses near the input camera at a random
   input frame, each at that frame's time.

Cameras are drawn until no trajectory, flipped or held-out camera comes within
:data:`OBJECT_CLEARANCE` of a moving object's centre at its time.

On-disk format (extends :mod:`lyra_core.data.format`: same ``<root>/<split>/scene_XXXXXX``
folders, seeds and splits; every view folder has the static format's five files plus
``times.npy``)::

    scene_XXXXXX/
        meta.json              # the static keys + "dynamic": true, "frame_times" (T,) seconds,
                               # "duration", "num_objects", "dynamic_version", ...
        input/                 # the T input frames (cache_rgb: each frame's own cache)
        trajectories/<name>/   # the six time-synchronised trajectories, step i at t_i
        flipped/<name>/        # flipped supervision, step i at t_i (camera at step T-1-i)
        heldout/               # K held-out (camera, time) pairs
    each: rgb.npy, depth.npy, cameras.npz, cache_rgb.npy, cache_mask.npy, times.npy (N,) float64

Folders are written atomically (temporary sibling, then rename) and existing scenes are
skipped, so generation resumes where it stopped. CLI::

    python -m lyra_core.data.dynamic --out data/dynamic --split train --num-scenes 60

(or ``lyra generate --dynamic ...``). :class:`DynamicDataset` yields the student's inputs,
one target time and the 12 target renders at that time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from lyra_core.data.format import (
    SPLITS,
    TargetViews,
    ViewSet,
    list_scenes,
    load_view_set,
    remove_stale_temporaries,
    scene_dirname,
    split_of_seed,
    split_seeds,
    write_view_set,
)
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories
from lyra_core.geometry.transforms import look_at
from lyra_core.pipelines.cache3d import render_views
from lyra_core.pipelines.cache4d import cache_world, render_cache_4d
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_dynamic import DynamicRoom, procedural_dynamic_room
from lyra_core.utils.atomic import write_folder_atomically
from lyra_core.utils.errors import DataError, run_command

__all__ = [
    "DYNAMIC_VERSION",
    "DynamicDataset",
    "DynamicGeneratorConfig",
    "DynamicSceneSample",
    "dynamic_inputs",
    "dynamic_targets",
    "generate_dynamic_scene",
    "generate_dynamic_split",
    "load_dynamic_scene",
    "main",
    "write_dynamic_scene",
]

DYNAMIC_VERSION = 1
"""Bumped whenever the same seed and config would produce different data."""

OBJECT_CLEARANCE = 0.6
"""Meters every camera keeps from a moving object's centre at its time."""

MAX_CAMERA_ATTEMPTS = 20
"""Input camera paths tried before settling for the one that came closest to valid."""

BACKGROUND: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Colour behind the room (as the static generator's rooms)."""

TIMES_FILE = "times.npy"


@dataclass(frozen=True)
class DynamicGeneratorConfig:
    """Generation settings shared by every scene of a dynamic data set.

    Attributes:
        width, height: image size, pixels (the tiny student's 64 x 48).
        num_frames: T frames of the input video and of every trajectory (T - 1 a multiple of
            the VAE's time factor 8 for the student: 9 or 17).
        duration: seconds from the first to the last frame (= the objects' motion).
        num_objects: moving objects.
        num_heldout: held-out (camera, time) pairs K.
        num_gaussians: Gaussians of the room and its objects.
        input_motion: largest sideways travel of the input camera over the video, meters.
        fov_y: vertical field of view, radians.
        movement_scale: Lyra trajectory scale (1.0 = Lyra's magnitudes).
        device: torch device to render on.
        batch_size: cameras per render call.
    """

    width: int = 64
    height: int = 48
    num_frames: int = 9
    duration: float = 2.0
    num_objects: int = 2
    num_heldout: int = 4
    num_gaussians: int = 20_000
    input_motion: float = 0.4
    fov_y: float = math.radians(60.0)
    movement_scale: float = 1.0
    device: str = "cpu"
    batch_size: int = 24

    def __post_init__(self) -> None:
        """Raises :class:`~lyra_core.utils.errors.DataError` for settings that make no scene."""
        if self.num_frames < 2 or self.num_heldout < 1 or self.num_gaussians < 100:
            raise DataError(
                f"need frames >= 2, held-out views >= 1 and Gaussians >= 100, got "
                f"{self.num_frames}, {self.num_heldout} and {self.num_gaussians}"
            )
        if self.width < 1 or self.height < 1 or self.batch_size < 1 or self.num_objects < 0:
            raise DataError("width, height and batch_size must be >= 1, num_objects >= 0")
        for name in ("duration", "movement_scale", "fov_y"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise DataError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.input_motion) and self.input_motion >= 0):
            raise DataError(f"input_motion must be >= 0 meters, got {self.input_motion!r}")

    def intrinsics(self) -> Intrinsics:
        """The pinhole intrinsics shared by every camera."""
        return Intrinsics.from_fov(self.fov_y, self.width, self.height)

    def frame_times(self) -> Tensor:
        """(T,) float64 frame times, seconds: ``duration * i / (T - 1)``."""
        return torch.linspace(0.0, self.duration, self.num_frames, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


@dataclass
class DynamicSceneSample:
    """One dynamic scene (CPU tensors; module docstring for the meaning of each part).

    Attributes:
        meta: the ``meta.json`` content.
        input: the T input frames (:class:`ViewSet`; ``cache_rgb`` each frame's own cache).
        input_times: (T,) float64 frame times, seconds.
        trajectories: ``{name: ViewSet}``, step ``i`` at ``input_times[i]``.
        flipped: ``{name: ViewSet}``, step ``i`` at ``input_times[i]``, camera of trajectory
            ``name`` at step ``T - 1 - i``.
        heldout: K held-out views; heldout_times: (K,) their times.
    """

    meta: dict[str, Any]
    input: ViewSet
    input_times: Tensor
    trajectories: dict[str, ViewSet] = field(default_factory=dict)
    flipped: dict[str, ViewSet] = field(default_factory=dict)
    heldout: ViewSet | None = None
    heldout_times: Tensor | None = None

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def background(self) -> tuple[float, float, float]:
        red, green, blue = (float(c) for c in self.meta.get("background", BACKGROUND))
        return red, green, blue

    @property
    def num_frames(self) -> int:
        return int(self.input_times.shape[0])

    def intrinsics(self) -> Intrinsics:
        """The input frames' intrinsics."""
        return Intrinsics.from_matrix(
            self.input.Ks[0], int(self.meta["width"]), int(self.meta["height"])
        )


def dynamic_inputs(sample: DynamicSceneSample) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The dynamic student's inputs: the 4D-cache videos along the six trajectories
    (V, T, H, W, 3) float in [0, 1], their cameras (V, T, 4, 4) and Ks (V, T, 3, 3), and the
    (T,) frame times in seconds."""
    views = list(sample.trajectories.values())
    videos = torch.stack([v.cache_rgb for v in views]).float() / 255.0
    poses = torch.stack([v.camtoworlds for v in views])
    Ks = torch.stack([v.Ks for v in views])
    return videos, poses, Ks, sample.input_times.clone()


def dynamic_targets(sample: DynamicSceneSample, index: int) -> tuple[TargetViews, Tensor]:
    """Lyra's 12 targets at the frame time ``t_index``: trajectory ``k`` at step ``index`` (views
    0-5) and flipped view ``k`` at step ``index`` (6-11), with their (12,) times (all
    ``t_index``)."""
    if not 0 <= index < sample.num_frames:
        raise IndexError(f"target index {index} out of range for {sample.num_frames} frames")
    sets = [*sample.trajectories.values(), *sample.flipped.values()]
    targets = TargetViews(
        torch.stack([v.rgb[index] for v in sets]).float() / 255.0,
        torch.stack([v.depth[index] for v in sets]),
        torch.stack([v.camtoworlds[index] for v in sets]),
        torch.stack([v.Ks[index] for v in sets]),
    )
    return targets, sample.input_times[index].expand(len(sets)).clone()


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass
class _Cameras:
    """A drawn input camera path and everything placed from it (float64 poses)."""

    input: Tensor  # (T, 4, 4)
    scene_depth: float
    trajectories: dict[str, Tensor]  # name -> (T, 4, 4)
    heldout: Tensor  # (K, 4, 4)
    heldout_index: Tensor  # (K,) input frame whose time each held-out view has
    clearance: float  # smallest camera-object distance, meters
    attempts: int = 0


def _input_path(rng: np.random.Generator, config: DynamicGeneratorConfig) -> Tensor:
    """(T, 4, 4) float64 poses of the moving input camera (module docstring)."""
    eye = np.array([rng.uniform(-1.2, 1.2), rng.uniform(-2.95, -2.6), rng.uniform(1.3, 1.8)])
    target = np.array([rng.uniform(-1.0, 1.0), rng.uniform(0.0, 1.5), rng.uniform(0.5, 1.0)])
    travel = config.input_motion * rng.uniform(0.5, 1.0) * rng.choice([-1.0, 1.0])
    forward = rng.uniform(0.0, 0.3) * config.input_motion
    s = np.linspace(0.0, 1.0, config.num_frames)[:, None]
    eyes = eye + s * np.array([travel, forward, 0.0])
    targets = target + s * np.array([0.5 * travel, 0.0, 0.0])
    return look_at(
        torch.as_tensor(eyes), torch.as_tensor(targets), torch.tensor([0.0, 0.0, 1.0]).double()
    )


def _heldout(
    rng: np.random.Generator, inputs: Tensor, scene_depth: float, count: int
) -> tuple[Tensor, Tensor]:
    """``count`` poses near random input frames ((count, 4, 4) float64) and those frames'
    indices: offsets uniform in ``+-(0.3, 0.15, 0.3) * scene_depth`` in the frame's camera
    axes, looking at its look-at point jittered by 0.1 scene depths, world up +z."""
    index = torch.as_tensor(rng.integers(0, len(inputs), size=count))
    poses = []
    for i in index.tolist():
        R, c = inputs[i, :3, :3].numpy(), inputs[i, :3, 3].numpy()
        offset = rng.uniform(-1.0, 1.0, size=3) * np.array([0.3, 0.15, 0.3]) * scene_depth
        target = c + scene_depth * R[:, 2] + rng.normal(0.0, 0.1 * scene_depth, size=3)
        poses.append(
            look_at(
                torch.as_tensor(c + R @ offset),
                torch.as_tensor(target),
                torch.tensor([0.0, 0.0, 1.0]).double(),
            )
        )
    return torch.stack(poses), index


def _clearance(room: DynamicRoom, centres: Tensor, times: Tensor) -> float:
    """Smallest distance (meters) of camera centres (N, 3) to any object centre at their times."""
    if not room.objects:
        return math.inf
    objects = torch.stack([room.object_pose(k, times)[:, :3, 3] for k in range(len(room.objects))])
    return float((objects.double() - centres.double()[None]).norm(dim=-1).min())


def _draw_cameras(
    room: DynamicRoom, seed: int, config: DynamicGeneratorConfig, rng: np.random.Generator
) -> _Cameras:
    """The first camera set in :data:`MAX_CAMERA_ATTEMPTS` draws that keeps
    :data:`OBJECT_CLEARANCE` and sees mostly surfaces, else the one with the largest
    clearance."""
    intrinsics, times = config.intrinsics(), config.frame_times()
    best: _Cameras | None = None
    for attempt in range(1, MAX_CAMERA_ATTEMPTS + 1):
        # float32 poses as stored (the inference pipeline derives the same trajectories)
        inputs = _input_path(rng, config).float().double()
        camera = Cameras.from_intrinsics(inputs[:1].float(), intrinsics)
        first = render_views(room.gaussians_at(0.0), camera, BACKGROUND, config.device)
        valid = first.mask[0]
        if float(valid.float().mean()) < 0.5:
            continue
        scene_depth = float(first.depth[0][valid].median())
        trajectories = lyra_trajectories(
            inputs[0], scene_depth, config.num_frames, config.movement_scale, seed=seed
        )
        heldout, index = _heldout(rng, inputs, scene_depth, config.num_heldout)
        stacked = torch.stack(list(trajectories.values()))  # (6, T, 4, 4)
        centres = torch.cat(
            [inputs[:, :3, 3], stacked[..., :3, 3].flatten(0, 1), heldout[:, :3, 3]]
        )
        flipped_centres = stacked.flip(1)[..., :3, 3].flatten(0, 1)
        step_times = times.repeat(len(stacked))
        clear = min(
            _clearance(room, centres, torch.cat([times, step_times, times[index]])),
            _clearance(room, flipped_centres, step_times),
        )
        candidate = _Cameras(inputs, scene_depth, trajectories, heldout, index, clear, attempt)
        if clear >= OBJECT_CLEARANCE:
            return candidate
        if best is None or clear > best.clearance:
            best = candidate
    if best is None:
        raise RuntimeError(f"seed {seed}: no input camera of {MAX_CAMERA_ATTEMPTS} saw the room")
    return best


def _render_truth(
    room: DynamicRoom, poses: Tensor, times: Tensor, config: DynamicGeneratorConfig
) -> tuple[Tensor, Tensor]:
    """Ground-truth colour (N, H, W, 3) uint8 and depth (N, H, W) of (N, 4, 4) poses, pose ``i``
    seeing the world at ``times[i]``."""
    cameras = Cameras.from_intrinsics(poses.to(torch.float32), config.intrinsics())
    rgb = torch.zeros(len(poses), config.height, config.width, 3, dtype=torch.uint8)
    depth = torch.zeros(len(poses), config.height, config.width)
    for stamp in torch.unique(times):
        members = (times == stamp).nonzero().flatten()
        out = render_views(
            room.gaussians_at(float(stamp)),
            cameras[members],
            BACKGROUND,
            config.device,
            config.batch_size,
        )
        rgb[members], depth[members] = out.rgb, out.depth
    return rgb, depth


def _render_set(
    room: DynamicRoom,
    cache: Gaussians,
    poses: Tensor,
    times: Tensor,
    config: DynamicGeneratorConfig,
    truth: tuple[Tensor, Tensor] | None = None,
) -> ViewSet:
    """Ground truth (the world at each view's time; ``truth`` if already rendered) and
    4D-cache renders of (N, 4, 4) poses at (N,) times."""
    intrinsics = config.intrinsics()
    poses32 = poses.to(torch.float32)
    rgb, depth = _render_truth(room, poses, times, config) if truth is None else truth
    cached = render_cache_4d(cache, poses32, times, intrinsics, config.device, config.batch_size)
    return ViewSet(
        rgb=rgb,
        depth=depth,
        Ks=intrinsics.matrix(torch.float32).expand(len(poses), 3, 3).clone(),
        camtoworlds=poses32.clone(),
        cache_rgb=cached.rgb,
        cache_mask=cached.mask,
    )


def _scene_rngs(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([DYNAMIC_VERSION, 4, seed]))


def generate_dynamic_scene(
    seed: int, config: DynamicGeneratorConfig | None = None, split: str | None = None
) -> DynamicSceneSample:
    """Generate the dynamic scene of ``seed`` (module docstring)."""
    config = config or DynamicGeneratorConfig()
    split = split_of_seed(seed) if split is None else split
    rng = _scene_rngs(seed)
    room = procedural_dynamic_room(
        seed,
        num_gaussians=config.num_gaussians,
        num_objects=config.num_objects,
        duration=config.duration,
    )
    chosen = _draw_cameras(room, seed, config, rng)
    times, intrinsics = config.frame_times(), config.intrinsics()
    steps = len(times)
    # The input frames: ground truth at their times, then their caches as the 4D cache.
    truth = _render_truth(room, chosen.input, times, config)
    cache = cache_world(*truth, intrinsics, chosen.input.to(torch.float32), times)
    input_set = _render_set(room, cache, chosen.input, times, config, truth)
    trajectories = {
        name: _render_set(room, cache, poses, times, config)
        for name, poses in chosen.trajectories.items()
    }
    flipped = {
        name: _render_set(room, cache, poses.flip(0), times, config)
        for name, poses in chosen.trajectories.items()
    }
    heldout_times = times[chosen.heldout_index]
    heldout = _render_set(room, cache, chosen.heldout, heldout_times, config)
    meta = {
        "seed": seed,
        "split": split,
        "dynamic": True,
        "dynamic_version": DYNAMIC_VERSION,
        "width": config.width,
        "height": config.height,
        "intrinsics": {
            "fx": intrinsics.fx,
            "fy": intrinsics.fy,
            "cx": intrinsics.cx,
            "cy": intrinsics.cy,
        },
        "fov_y": config.fov_y,
        "scene_depth": chosen.scene_depth,
        "trajectory_names": list(LYRA_TRAJECTORY_NAMES),
        "num_frames": steps,
        "frame_times": times.tolist(),
        "duration": config.duration,
        "num_objects": config.num_objects,
        "num_heldout": config.num_heldout,
        "num_gaussians": config.num_gaussians,
        "input_motion": config.input_motion,
        "movement_scale": config.movement_scale,
        "background": list(BACKGROUND),
        "object_clearance": chosen.clearance,
        "camera_attempts": chosen.attempts,
        "heldout_frames": chosen.heldout_index.tolist(),
    }
    return DynamicSceneSample(
        meta=meta,
        input=input_set,
        input_times=times.clone(),
        trajectories=trajectories,
        flipped=flipped,
        heldout=heldout,
        heldout_times=heldout_times.clone(),
    )


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def _write_views(folder: Path, views: ViewSet, times: Tensor) -> None:
    write_view_set(folder, views)
    np.save(folder / TIMES_FILE, times.numpy().astype(np.float64))


def _load_views(folder: Path) -> tuple[ViewSet, Tensor]:
    return load_view_set(folder), torch.from_numpy(np.load(folder / TIMES_FILE))


def write_dynamic_scene(path: str | os.PathLike[str], sample: DynamicSceneSample) -> Path:
    """Write ``sample`` as the scene folder ``path`` atomically (FileExistsError if it exists)."""

    def write(tmp: Path) -> None:
        (tmp / "meta.json").write_text(json.dumps(sample.meta, indent=2, sort_keys=True))
        _write_views(tmp / "input", sample.input, sample.input_times)
        for name, views in sample.trajectories.items():
            _write_views(tmp / "trajectories" / name, views, sample.input_times)
        for name, views in sample.flipped.items():
            _write_views(tmp / "flipped" / name, views, sample.input_times)
        if sample.heldout is not None:
            _write_views(tmp / "heldout", sample.heldout, sample.heldout_times)

    return write_folder_atomically(path, write, overwrite=False)


def load_dynamic_scene(path: str | os.PathLike[str]) -> DynamicSceneSample:
    """Read a scene folder written by :func:`write_dynamic_scene`.

    Raises:
        DataError: not a dynamic scene folder.
    """
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        if not meta.get("dynamic"):
            raise DataError(f"{path} is not a dynamic scene (meta.json has no 'dynamic': true)")
        names = meta["trajectory_names"]
        input_set, times = _load_views(path / "input")
        heldout, heldout_times = (
            _load_views(path / "heldout") if (path / "heldout").is_dir() else (None, None)
        )
        return DynamicSceneSample(
            meta=meta,
            input=input_set,
            input_times=times,
            trajectories={n: load_view_set(path / "trajectories" / n) for n in names},
            flipped={n: load_view_set(path / "flipped" / n) for n in names},
            heldout=heldout,
            heldout_times=heldout_times,
        )
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read dynamic scene {path}: {err}") from err


def write_generated_dynamic_scene(
    root: str | Path,
    seed: int,
    config: DynamicGeneratorConfig | None = None,
    split: str | None = None,
) -> Path | None:
    """Generate scene ``seed`` into ``root/scene_XXXXXX`` atomically; None if it exists."""
    path = Path(root) / scene_dirname(seed)
    if path.exists():
        return None
    return write_dynamic_scene(path, generate_dynamic_scene(seed, config, split))


def generate_dynamic_split(
    out: str | Path,
    split: str,
    num_scenes: int,
    config: DynamicGeneratorConfig | None = None,
    seed_offset: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``num_scenes`` scenes of ``split`` into ``out/<split>/`` (existing ones skipped,
    so an interrupted run resumes); returns ``{"generated", "skipped", "failed",
    "seconds_per_scene"}``.

    Raises:
        DataError: an unknown split, seeds beyond its range, an uncreatable folder.
    """
    config = config or DynamicGeneratorConfig()
    try:
        seeds = split_seeds(split, num_scenes, seed_offset)
    except ValueError as err:
        raise DataError(str(err)) from err
    split_dir = Path(out) / split
    try:
        split_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the output folder {split_dir}: {err}") from err
    remove_stale_temporaries(split_dir)
    todo = [s for s in seeds if not (split_dir / scene_dirname(s)).exists()]
    failed: dict[int, str] = {}
    seconds = []
    for seed in tqdm(todo, desc=f"dynamic scenes {split}", unit="scene", disable=not progress):
        began = time.perf_counter()
        try:
            write_generated_dynamic_scene(split_dir, seed, config, split)
        except Exception as err:  # reported; the other scenes go on
            failed[seed] = f"{type(err).__name__}: {err}"
            continue
        seconds.append(time.perf_counter() - began)
    return {
        "generated": len(seconds),
        "skipped": len(seeds) - len(todo),
        "failed": failed,
        "seconds_per_scene": float(np.mean(seconds)) if seconds else None,
    }


class DynamicDataset(Dataset):
    """Dynamic scenes of one split folder as dicts of tensors, one target time per item.

    Each item: ``seed`` (), ``scene_depth`` (), ``videos`` (V, T, H, W, 3) float in [0, 1] (the
    4D-cache videos along the six trajectories, the student's input), ``camtoworlds``
    (V, T, 4, 4), ``Ks`` (V, T, 3, 3), ``frame_times`` (T,) seconds, ``input`` {rgb (T, H, W,
    3) uint8, depth (T, H, W), camtoworlds (T, 4, 4), Ks (T, 3, 3)} (the input video),
    ``target_index`` () and ``target_time`` () seconds, and ``targets`` {rgb (12, H, W, 3)
    float, depth (12, H, W), camtoworlds (12, 4, 4), Ks (12, 3, 3), times (12,)}: the six
    trajectories then the six flipped views at the target time (:func:`dynamic_targets`).

    Args:
        split_dir: e.g. ``data/dynamic/train``.
        target_index: a fixed target frame, or None to draw one per item (uniform over the
            frames, from ``seed + index``: the same item is the same every epoch).
        seed: seed of the drawn target frames.
    """

    def __init__(
        self, split_dir: str | os.PathLike[str], target_index: int | None = None, seed: int = 0
    ) -> None:
        self.scenes = list_scenes(split_dir)
        self.target_index = target_index
        self.seed = seed

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = load_dynamic_scene(self.scenes[index])
        target = self.target_index
        if target is None:
            generator = torch.Generator().manual_seed(self.seed + index)
            target = int(torch.randint(sample.num_frames, (1,), generator=generator))
        videos, poses, Ks, frame_times = dynamic_inputs(sample)
        targets, times = dynamic_targets(sample, target)
        return {
            "seed": torch.tensor(sample.seed),
            "scene_depth": torch.tensor(float(sample.meta["scene_depth"])),
            "videos": videos,
            "camtoworlds": poses,
            "Ks": Ks,
            "frame_times": frame_times,
            "input": {
                "rgb": sample.input.rgb,
                "depth": sample.input.depth,
                "camtoworlds": sample.input.camtoworlds,
                "Ks": sample.input.Ks,
            },
            "target_index": torch.tensor(target),
            "target_time": frame_times[target].clone(),
            "targets": {**asdict_views(targets), "times": times},
        }


def asdict_views(views: TargetViews) -> dict[str, Tensor]:
    """The fields of :class:`TargetViews` by name."""
    return {name: getattr(views, name) for name in ("rgb", "depth", "camtoworlds", "Ks")}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m lyra_core.data.dynamic`` (``lyra generate --dynamic``)."""
    d = DynamicGeneratorConfig()
    parser = argparse.ArgumentParser(
        prog="lyra generate --dynamic",
        description="Generate procedural dynamic scenes (moving objects, a moving input camera, "
        "six time-synchronised trajectories, flipped supervision, the 4D cache) into "
        "OUT/SPLIT/scene_XXXXXX (existing scenes are skipped).",
        allow_abbrev=False,
    )
    options: tuple[tuple[str, type, Any, str], ...] = (
        ("--out", Path, Path("data/dynamic"), "data root; scenes go to OUT/SPLIT/scene_XXXXXX"),
        ("--seed-offset", int, 0, "offset of the first seed inside the split's seed range"),
        ("--frames", int, d.num_frames, "frames T of the input video and of every trajectory"),
        ("--width", int, d.width, "image width, pixels"),
        ("--height", int, d.height, "image height, pixels"),
        ("--duration", float, d.duration, "seconds from the first to the last frame"),
        ("--objects", int, d.num_objects, "moving objects per scene"),
        ("--heldout", int, d.num_heldout, "held-out (camera, time) pairs per scene"),
        ("--gaussians", int, d.num_gaussians, "Gaussians of the room and its objects"),
        ("--input-motion", float, d.input_motion, "sideways travel of the input camera, meters"),
    )
    parser.add_argument(
        "--num-scenes", type=int, required=True, help="scenes the split should hold"
    )
    parser.add_argument(
        "--split",
        default="train",
        choices=SPLITS,
        help="split, decides the seeds (default: %(default)s)",
    )
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate a split: 0, 1 when a scene failed (listed), 2 for invalid settings."""
    args = build_parser().parse_args(None if argv is None else list(argv))

    def command() -> int:
        if args.num_scenes < 1 or args.seed_offset < 0:
            raise DataError("--num-scenes must be >= 1 and --seed-offset >= 0")
        config = DynamicGeneratorConfig(
            width=args.width,
            height=args.height,
            num_frames=args.frames,
            duration=args.duration,
            num_objects=args.objects,
            num_heldout=args.heldout,
            num_gaussians=args.gaussians,
            input_motion=args.input_motion,
        )
        summary = generate_dynamic_split(
            args.out, args.split, args.num_scenes, config, args.seed_offset, not args.no_progress
        )
        per = summary["seconds_per_scene"]
        timing = "" if per is None else f", {per:.2f} s/scene"
        print(
            f"{args.split}: generated {summary['generated']}, skipped {summary['skipped']}, "
            f"failed {len(summary['failed'])}{timing}"
        )
        for seed, error in summary["failed"].items():
            print(f"  seed {seed}: {error}")
        return 1 if summary["failed"] else 0

    return run_command("lyra generate --dynamic", command)


if __name__ == "__main__":
    raise SystemExit(main())
