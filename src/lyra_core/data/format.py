"""On-disk format of the procedural multi-trajectory data set, its splits and a torch Dataset.

Layout
------
A data root holds one folder per split, each holding one folder per scene::

    <root>/<split>/scene_XXXXXX/        # XXXXXX = the scene seed, 6 digits
        meta.json                       # see below
        input/rgb.png                   # (H, W, 3) uint8, the input view
        input/depth.npy                 # (H, W) float32 z-depth, meters; 0 = nothing hit
        input/camera.json               # {"K": 3x3 pixels, "camtoworld": 4x4 meters}
        trajectories/<name>/            # one per Lyra trajectory (left, right, up, ...)
            rgb.npy                     # (N, H, W, 3) uint8 rendered frames
            depth.npy                   # (N, H, W) float32 z-depth, meters; 0 = nothing hit
            cameras.npz                 # Ks (N, 3, 3) float32 pixels,
                                        # camtoworlds (N, 4, 4) float32 meters (OpenCV axes)
            cache_rgb.npy               # (N, H, W, 3) uint8 render of the 3D cache
            cache_mask.npy              # (N, H, W) bool, cache alpha > 0.5
        heldout/                        # K evaluation cameras near the input, same five files
                                        # (procedural scenes; teacher scenes have none)

``meta.json`` holds ``seed``, ``split``, ``width``, ``height``, ``intrinsics`` (fx, fy, cx, cy in
pixels), ``scene_depth`` (meters: median rendered depth of the input view), ``trajectory_names``,
``num_frames``, ``num_heldout``, ``generator_version`` and free-form generator details
(``layout``, ``num_gaussians``, ``background``, ...).

The **3D cache** (GEN3C's conditioning) is the input view unprojected with its rendered depth
(:func:`lyra_core.scene.rgbd.gaussians_from_rgbd`), rendered from every camera over a black
background; ``cache_mask`` marks the pixels it covers. Frame 0 of every trajectory is the input
camera, so its ``rgb`` equals the input view and its cache render reproduces it.

**Teacher scenes** (``lyra generate --teacher gen3c``, :mod:`lyra_core.data.teacher`): one scene per
input image, same layout without ``heldout/``. Each trajectory folder then holds the teacher's
decoded frames as ``rgb.npy`` (the supervision), the depth of the 3D-cache render as ``depth.npy``
(meters, 0 where the cache does not cover: the teacher's frames have no measured depth), the
cache render GEN3C conditioned on, and one more file::

            latents.npy                 # (1, C, T', h, w) float32 teacher latents, normalised
                                        # (VideoVAE.normalize: (z - mean) / std), Lyra's layout

``meta.json`` adds ``teacher`` (its settings), ``image`` (the source file name) and
``latent_scale`` (1.0: the latents are stored as normalised; Lyra-1's files hold 0.5 times
that). A teacher scene is written one trajectory at a time (each folder atomically, so several
processes can share a scene) and ``meta.json`` last: a scene folder without ``meta.json`` is
incomplete, and readers (:func:`list_scenes`) skip it.

Scene folders appear atomically: :func:`write_scene` writes into a hidden temporary folder
``.scene_XXXXXX.<hex>.lyra-tmp`` beside the target and renames it at the end
(:func:`lyra_core.utils.atomic.write_folder_atomically`), so a scene folder that exists is
complete, and a failed write leaves nothing behind. A killed process can leave the temporary
folder, which readers ignore and the generator CLI deletes
(:func:`remove_stale_temporaries`).

Splits
------
Seeds decide splits by fixed, disjoint ranges (:data:`SPLIT_SEED_RANGES`): ``train`` uses
seeds ``[0, 900000)``, ``val`` ``[900000, 950000)`` and ``test`` ``[950000, 1000000)``. Scene
``i`` of a split with offset ``o`` has seed ``range_start + o + i`` (:func:`split_seeds`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES
from lyra_core.utils.atomic import (
    sweep_stale_temp_files,
    write_folder_atomically,
    write_text_atomic,
)

__all__ = [
    "SPLITS",
    "SPLIT_SEED_RANGES",
    "ProceduralDataset",
    "SceneSample",
    "ViewSet",
    "list_scenes",
    "load_scene",
    "load_view_set",
    "remove_stale_temporaries",
    "scene_dirname",
    "scene_latents",
    "split_of_seed",
    "split_seeds",
    "write_scene",
    "write_scene_input",
    "write_scene_meta",
    "write_trajectory",
    "write_view_set",
]

#: Split names, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Half-open seed range ``[start, stop)`` of each split; the ranges are disjoint.
SPLIT_SEED_RANGES: dict[str, tuple[int, int]] = {
    "train": (0, 900_000),
    "val": (900_000, 950_000),
    "test": (950_000, 1_000_000),
}

_VIEW_FILES = ("rgb.npy", "depth.npy", "cameras.npz", "cache_rgb.npy", "cache_mask.npy")
LATENTS_FILE = "latents.npy"
"""Teacher latents of a trajectory (teacher scenes only)."""
# Temporary scene folders of the writer before lyra_core.utils.atomic (".tmp-scene_XXXXXX-*").
_LEGACY_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def split_of_seed(seed: int) -> str:
    """The split a scene seed belongs to (see :data:`SPLIT_SEED_RANGES`).

    Raises:
        ValueError: if the seed lies outside every range.
    """
    for name, (start, stop) in SPLIT_SEED_RANGES.items():
        if start <= seed < stop:
            return name
    raise ValueError(f"seed {seed!r} lies outside every split range {SPLIT_SEED_RANGES}")


def split_seeds(split: str, num_scenes: int, offset: int = 0) -> list[int]:
    """Seeds ``start + offset + i`` for ``i < num_scenes`` of ``split``.

    Raises:
        ValueError: unknown split, negative counts, or seeds running past the split's range.
    """
    if split not in SPLIT_SEED_RANGES:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if num_scenes < 0 or offset < 0:
        raise ValueError(f"num_scenes and offset must be >= 0, got {num_scenes}, {offset}")
    start, stop = SPLIT_SEED_RANGES[split]
    if start + offset + num_scenes > stop:
        raise ValueError(f"split {split!r} holds seeds [{start}, {stop}); offset + N too large")
    return list(range(start + offset, start + offset + num_scenes))


def scene_dirname(seed: int) -> str:
    """Folder name of a scene: ``scene_XXXXXX`` (seed zero-padded to 6 digits)."""
    return f"scene_{seed:06d}"


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


@dataclass
class ViewSet:
    """N rendered views of one scene with their 3D-cache renders (CPU tensors).

    Attributes:
        rgb: (N, H, W, 3) uint8 colour.
        depth: (N, H, W) float32 z-depth along the optical axis, meters; 0 where nothing was hit.
        Ks: (N, 3, 3) float32 intrinsics, pixels (OpenCV pixel-centre convention).
        camtoworlds: (N, 4, 4) float32 camera-to-world poses (OpenCV camera axes), meters.
        cache_rgb: (N, H, W, 3) uint8 render of the 3D cache (black where it is empty).
        cache_mask: (N, H, W) bool, True where the cache render's alpha > 0.5.
        latents: (1, C, T', h, w) float32 normalised teacher latents of the trajectory (teacher
            scenes), else None.
    """

    rgb: Tensor
    depth: Tensor
    Ks: Tensor
    camtoworlds: Tensor
    cache_rgb: Tensor
    cache_mask: Tensor
    latents: Tensor | None = None

    def to_dict(self) -> dict[str, Tensor]:
        """The fields by name (``latents`` only when present)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {name: value for name, value in fields.items() if value is not None}


@dataclass
class SceneSample:
    """One generated scene: the input view, the six Lyra trajectories and held-out views.

    Attributes:
        meta: the ``meta.json`` content (seed, split, sizes, intrinsics, scene_depth, ...).
        input_rgb: (H, W, 3) uint8 input view.
        input_depth: (H, W) float32 input z-depth, meters (0 = nothing hit).
        input_K: (3, 3) float32 input intrinsics, pixels.
        input_camtoworld: (4, 4) float32 input pose, meters.
        trajectories: ``{name: ViewSet}`` in :data:`LYRA_TRAJECTORY_NAMES` order, N frames each.
        heldout: ViewSet of K held-out cameras near the input.
    """

    meta: dict[str, Any]
    input_rgb: Tensor
    input_depth: Tensor
    input_K: Tensor  # noqa: N815 - K as in the rest of lyra_core
    input_camtoworld: Tensor
    trajectories: dict[str, ViewSet] = field(default_factory=dict)
    heldout: ViewSet | None = None

    @property
    def seed(self) -> int:
        """The scene seed."""
        return int(self.meta["seed"])

    @property
    def background(self) -> tuple[float, float, float]:
        """RGB in [0, 1] behind the scene's Gaussians (black when the metadata has none)."""
        red, green, blue = (float(c) for c in self.meta.get("background", (0.0, 0.0, 0.0)))
        return red, green, blue

    def to_dict(self) -> dict[str, Any]:
        """Nested dict of tensors (collatable by torch's default ``collate_fn``)."""
        out: dict[str, Any] = {
            "seed": torch.tensor(self.seed),
            "scene_depth": torch.tensor(float(self.meta["scene_depth"])),
            "input": {
                "rgb": self.input_rgb,
                "depth": self.input_depth,
                "K": self.input_K,
                "camtoworld": self.input_camtoworld,
            },
            "trajectories": {name: v.to_dict() for name, v in self.trajectories.items()},
        }
        if self.heldout is not None:
            out["heldout"] = self.heldout.to_dict()
        return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_view_set(folder: Path, views: ViewSet) -> None:
    """Write the five files of a :class:`ViewSet` (and ``latents.npy`` when it has latents) into
    ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "rgb.npy", views.rgb.numpy().astype(np.uint8))
    np.save(folder / "depth.npy", views.depth.numpy().astype(np.float32))
    np.savez(
        folder / "cameras.npz",
        Ks=views.Ks.numpy().astype(np.float32),
        camtoworlds=views.camtoworlds.numpy().astype(np.float32),
    )
    np.save(folder / "cache_rgb.npy", views.cache_rgb.numpy().astype(np.uint8))
    np.save(folder / "cache_mask.npy", views.cache_mask.numpy().astype(bool))
    if views.latents is not None:
        np.save(folder / LATENTS_FILE, views.latents.detach().cpu().numpy().astype(np.float32))


def _write_input(folder: Path, rgb: Tensor, depth: Tensor, K: Tensor, camtoworld: Tensor) -> None:
    """Write the ``input/`` files into ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.numpy().astype(np.uint8)).save(folder / "rgb.png")
    np.save(folder / "depth.npy", depth.numpy().astype(np.float32))
    camera = {
        "K": K.to(torch.float32).tolist(),
        "camtoworld": camtoworld.to(torch.float32).tolist(),
    }
    (folder / "camera.json").write_text(json.dumps(camera, indent=2))


def _write_contents(folder: Path, sample: SceneSample) -> None:
    """Write every file of ``sample`` into the (existing, empty) ``folder``."""
    (folder / "meta.json").write_text(json.dumps(sample.meta, indent=2, sort_keys=True))
    _write_input(
        folder / "input",
        sample.input_rgb,
        sample.input_depth,
        sample.input_K,
        sample.input_camtoworld,
    )
    for name, views in sample.trajectories.items():
        write_view_set(folder / "trajectories" / name, views)
    if sample.heldout is not None:
        write_view_set(folder / "heldout", sample.heldout)


def write_scene(path: str | os.PathLike[str], sample: SceneSample) -> Path:
    """Write ``sample`` as the scene folder ``path`` atomically (temp folder, then rename).

    Raises:
        FileExistsError: if ``path`` already exists (nothing is written), or appeared while
            the scene was being written (the new copy is discarded).
        Exception: whatever the writing raised; the temporary folder is removed first.
    """
    return write_folder_atomically(path, lambda tmp: _write_contents(tmp, sample), overwrite=False)


def write_scene_input(
    scene_dir: str | os.PathLike[str], rgb: Tensor, depth: Tensor, K: Tensor, camtoworld: Tensor
) -> Path:
    """Write ``scene_dir/input/`` atomically (a teacher scene's first part): ``rgb.png`` from
    (H, W, 3) uint8, ``depth.npy`` from (H, W) meters, ``camera.json`` from the (3, 3) pixel
    intrinsics and the (4, 4) camera-to-world pose.

    Raises:
        FileExistsError: the folder exists (written by another process): nothing is changed.
    """
    return write_folder_atomically(
        Path(scene_dir) / "input",
        lambda tmp: _write_input(tmp, rgb, depth, K, camtoworld),
        overwrite=False,
    )


def write_trajectory(scene_dir: str | os.PathLike[str], name: str, views: ViewSet) -> Path:
    """Write ``scene_dir/trajectories/<name>/`` atomically (one part of a teacher scene).

    Raises:
        FileExistsError: the folder exists: nothing is changed.
    """
    target = Path(scene_dir) / "trajectories" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_folder_atomically(target, lambda tmp: write_view_set(tmp, views), overwrite=False)


def write_scene_meta(scene_dir: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``scene_dir/meta.json`` atomically: the last part of a teacher scene, which makes it
    complete (:func:`list_scenes`). Writing the same content twice is harmless."""
    return write_text_atomic(
        Path(scene_dir) / "meta.json", json.dumps(meta, indent=2, sort_keys=True)
    )


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary scene folders killed writers left in ``folder``; returns how many.

    Removes :mod:`lyra_core.utils.atomic`'s temporaries
    (:func:`~lyra_core.utils.atomic.sweep_stale_temp_files`) and the ``.tmp-*`` folders of
    the writer before it, also inside incomplete teacher scenes (a ``scene_*`` folder without
    ``meta.json``, and its ``trajectories/``). Only call this when no writer is running on
    ``folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    legacy = [p for p in folder.iterdir() if p.name.startswith(_LEGACY_TMP_PREFIX) and p.is_dir()]
    for p in legacy:
        shutil.rmtree(p, ignore_errors=True)
    removed = len(legacy) + len(sweep_stale_temp_files(folder))
    for scene in folder.glob("scene_*"):
        if scene.is_dir() and not (scene / "meta.json").is_file():
            removed += len(sweep_stale_temp_files(scene))
            removed += len(sweep_stale_temp_files(scene / "trajectories"))
    return removed


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def load_view_set(folder: Path) -> ViewSet:
    """Read the five files of a :class:`ViewSet` (and ``latents.npy`` if any) from ``folder``."""
    cameras = np.load(folder / "cameras.npz")
    latents = folder / LATENTS_FILE
    return ViewSet(
        rgb=torch.from_numpy(np.load(folder / "rgb.npy")),
        depth=torch.from_numpy(np.load(folder / "depth.npy")),
        Ks=torch.from_numpy(cameras["Ks"]),
        camtoworlds=torch.from_numpy(cameras["camtoworlds"]),
        cache_rgb=torch.from_numpy(np.load(folder / "cache_rgb.npy")),
        cache_mask=torch.from_numpy(np.load(folder / "cache_mask.npy")),
        latents=torch.from_numpy(np.load(latents)) if latents.is_file() else None,
    )


def load_scene(
    path: str | os.PathLike[str], trajectory_names: Sequence[str] | None = None
) -> SceneSample:
    """Read a scene folder written by :func:`write_scene`.

    Args:
        path: the ``scene_XXXXXX`` folder.
        trajectory_names: trajectories to load; default all listed in ``meta.json``.
    """
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    camera = json.loads((path / "input" / "camera.json").read_text())
    names = meta["trajectory_names"] if trajectory_names is None else list(trajectory_names)
    heldout = path / "heldout"
    return SceneSample(
        meta=meta,
        input_rgb=torch.from_numpy(np.asarray(Image.open(path / "input" / "rgb.png")).copy()),
        input_depth=torch.from_numpy(np.load(path / "input" / "depth.npy")),
        input_K=torch.tensor(camera["K"], dtype=torch.float32),
        input_camtoworld=torch.tensor(camera["camtoworld"], dtype=torch.float32),
        trajectories={n: load_view_set(path / "trajectories" / n) for n in names},
        heldout=load_view_set(heldout) if heldout.is_dir() else None,
    )


def list_scenes(split_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete scene folders (``scene_*`` with a ``meta.json``) in ``split_dir``, sorted."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        return []
    return sorted(
        p for p in split_dir.glob("scene_*") if p.is_dir() and (p / "meta.json").is_file()
    )


class ProceduralDataset(Dataset):
    """Scenes of one split folder (``<root>/<split>``) as nested dicts of tensors.

    Each item is :meth:`SceneSample.to_dict`: ``seed`` (), ``scene_depth`` () meters,
    ``input`` {rgb (H, W, 3) uint8, depth (H, W), K (3, 3), camtoworld (4, 4)},
    ``trajectories`` {name: {rgb (N, H, W, 3) uint8, depth (N, H, W), Ks (N, 3, 3),
    camtoworlds (N, 4, 4), cache_rgb (N, H, W, 3) uint8, cache_mask (N, H, W) bool}} and
    ``heldout`` (the same six fields, K views). Images stay uint8; scale them in the model.
    """

    def __init__(
        self,
        split_dir: str | os.PathLike[str],
        trajectory_names: Sequence[str] | None = None,
    ) -> None:
        """Index the complete scene folders of ``split_dir``.

        Args:
            split_dir: a split folder, e.g. ``data/procedural/train``.
            trajectory_names: trajectories to load; default all six.
        """
        self.scenes = list_scenes(split_dir)
        names = LYRA_TRAJECTORY_NAMES if trajectory_names is None else trajectory_names
        self.trajectory_names = tuple(names)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return load_scene(self.scenes[index], self.trajectory_names).to_dict()


@dataclass
class TargetViews:
    """Supervision: N views with colour and depth.

    Attributes:
        rgb: (N, H, W, 3) float in [0, 1].
        depth: (N, H, W) meters, 0 where unknown.
        camtoworlds: (N, 4, 4); Ks: (N, 3, 3).
    """

    rgb: Tensor
    depth: Tensor
    camtoworlds: Tensor
    Ks: Tensor


def scene_inputs(sample: SceneSample) -> tuple[Tensor, Tensor, Tensor]:
    """The student's inputs from a scene: the 3D-cache videos of the six trajectories."""
    views = list(sample.trajectories.values())
    videos = torch.stack([v.cache_rgb for v in views]).float() / 255.0
    return videos, torch.stack([v.camtoworlds for v in views]), torch.stack([v.Ks for v in views])


def scene_latents(sample: SceneSample) -> tuple[Tensor, Tensor, Tensor] | None:
    """A teacher scene's decoder inputs: its latents read as stored (no re-encoding), as Lyra
    trains on the teacher's latents.

    Returns:
        ``(latents (V, T', C, h, w) normalised, camtoworlds (V, N, 4, 4), Ks (V, N, 3, 3))`` in
        trajectory order, or None when a trajectory has no latents (a procedural scene).
    """
    views = list(sample.trajectories.values())
    if not views or any(v.latents is None for v in views):
        return None
    latents = torch.stack([v.latents[0].transpose(0, 1) for v in views]).float()
    scale = float(sample.meta.get("latent_scale", 1.0))
    return (
        latents / scale,
        torch.stack([v.camtoworlds for v in views]),
        torch.stack([v.Ks for v in views]),
    )


def scene_targets(sample: SceneSample, frames_per_trajectory: int = 1) -> TargetViews:
    """Supervision from a scene: the last ``frames_per_trajectory`` frames of every trajectory
    (what the cache cannot show; the teacher's decoded frames in a teacher scene) and all
    held-out views (when the scene has them)."""
    sets = list(sample.trajectories.values())
    pick = slice(-frames_per_trajectory, None)
    views = [(v.rgb[pick], v.depth[pick], v.camtoworlds[pick], v.Ks[pick]) for v in sets]
    if sample.heldout is not None:
        held = sample.heldout
        views.append((held.rgb, held.depth, held.camtoworlds, held.Ks))
    rgb, depth, poses, Ks = (torch.cat(parts) for parts in zip(*views, strict=True))
    return TargetViews(rgb.float() / 255.0, depth, poses, Ks)
