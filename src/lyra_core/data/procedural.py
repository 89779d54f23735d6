"""Procedural multi-trajectory training data for the Lyra student (the Lyra / GEN3C setup).

A scene sample, fully determined by its seed and a :class:`GeneratorConfig`:

1. **Layout** (:func:`random_layout`): a ``room`` (textured floor, ceiling and four walls,
   2 - 6 boxes and 1 - 4 spheres) or an ``outdoor`` layout (textured ground under a sky-colour
   background, 3 - 10 "buildings", 1 - 5 trees, 0 - 3 boulders). Sizes, positions, yaw,
   colours and textures (solid, checker, stripes, waves) are random per seed. World z-up,
   meters. :func:`layout_gaussians` covers its surfaces with flat surface Gaussians like
   :func:`lyra_core.scene.procedural_room.procedural_room` (whose output is unchanged).
2. **Input camera**: a random free position looking at an object (or a random point), world
   up ``+z``; ``scene_depth`` is the median rendered depth of the input view over pixels with
   alpha > 0.5. Poses are re-drawn until the view is mostly covered and every camera of the
   trajectories and held-out set stays inside the layout and out of the objects.
3. **Six Lyra trajectories** (:func:`lyra_core.geometry.trajectories.lyra_trajectories`, seeded by the
   scene seed) from the input camera, ``num_frames`` each; frame 0 is the input camera.
4. **Renders** of every camera: RGB (uint8), depth (float32 meters, 0 where alpha <= 0.5), and
   the **3D cache** render: the input view unprojected with its depth
   (:func:`lyra_core.pipelines.cache3d.cache_gaussians`) rendered over black
   (:func:`lyra_core.pipelines.cache3d.render_cache`, shared with the inference pipeline), with the mask
   ``alpha > 0.5`` -- what GEN3C conditions on.
5. **Held-out cameras**: ``num_heldout`` random poses near the input camera (offsets up to
   ~0.3 scene depths, look-at point jittered), rendered the same way, for evaluation.

The on-disk format and the splits are documented in :mod:`lyra_core.data.format`.

CLI (one folder per scene under ``<out>/<split>/``, existing scenes are skipped)::

    python -m lyra_core.data.procedural --out data/procedural --num-scenes 100 --split train \\
        --workers 2 --frames 17 --width 64 --height 48 --seed-offset 0
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.pipelines.cache3d import Renders, cache_gaussians, render_cache, render_views
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.data.format import (
    SceneSample,
    ViewSet,
    remove_stale_temporaries,
    scene_dirname,
    split_of_seed,
    split_seeds,
    write_scene,
)
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_room import Surface, checker, plane, sphere, surface_gaussians
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories

__all__ = [
    "GENERATOR_VERSION",
    "LAYOUT_KINDS",
    "GeneratorConfig",
    "Layout",
    "generate_scene",
    "generate_split",
    "layout_gaussians",
    "main",
    "random_layout",
    "write_generated_scene",
]

#: Bumped whenever the same seed and config would produce different data.
GENERATOR_VERSION = 1

#: Layout kinds drawn by :func:`random_layout` (rooms with probability 0.6).
LAYOUT_KINDS: tuple[str, ...] = ("room", "outdoor")

MAX_CAMERA_ATTEMPTS = 40
"""Input poses tried before settling for the best one seen."""

CAMERA_CLEARANCE = 0.15
"""Minimum distance (m) of every generated camera from objects and layout bounds."""

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``texture(s, t) -> (n, 3)`` colours from surface coordinates ``s, t`` (n,), meters."""


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
        if self.num_frames < 2 or self.num_heldout < 1 or self.num_gaussians < 1:
            raise ValueError(f"need num_frames >= 2, num_heldout >= 1, num_gaussians >= 1: {self}")
        if self.layout is not None and self.layout not in LAYOUT_KINDS:
            raise ValueError(f"layout must be one of {LAYOUT_KINDS} or None, got {self.layout!r}")

    def intrinsics(self) -> Intrinsics:
        """The pinhole intrinsics shared by every camera."""
        return Intrinsics.from_fov(self.fov_y, self.width, self.height)


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """A random scene layout: surfaces to sample plus the geometry cameras must avoid.

    Attributes:
        kind: ``"room"`` or ``"outdoor"``.
        surfaces: sampled surfaces (see :class:`lyra_core.scene.procedural_room.Surface`).
        boxes: ``(cx, cy, radius, z_min, z_max)`` bounding cylinders of boxes, meters.
        spheres: ``(cx, cy, cz, radius)`` of spheres, meters.
        bounds: (2, 3) min / max corner of the space cameras may occupy, meters.
        look_bounds: (2, 3) region where input cameras are placed, meters.
        background: RGB in [0, 1] rendered where no surface is hit.
        min_valid: smallest acceptable fraction of covered pixels in the input view.
    """

    kind: str
    surfaces: list[Surface] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    spheres: list[tuple[float, float, float, float]] = field(default_factory=list)
    bounds: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    look_bounds: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    min_valid: float = 0.9

    def add_box(
        self, center: Sequence[float], size: Sequence[float], yaw: float, texture: Texture
    ) -> None:
        """Add a box standing at ``center = (x, y, z_bottom)``, ``size = (sx, sy, sz)`` m."""
        self.surfaces += _box_faces(center, size, yaw, texture)
        radius = 0.5 * math.hypot(size[0], size[1])
        self.boxes.append((center[0], center[1], radius, center[2], center[2] + size[2]))

    def add_sphere(self, center: Sequence[float], radius: float, color: np.ndarray) -> None:
        """Add a banded sphere (see :func:`lyra_core.scene.procedural_room.sphere`)."""
        self.surfaces.append(sphere(center, radius, color))
        self.spheres.append((center[0], center[1], center[2], radius))

    def is_free(self, points: np.ndarray, clearance: float = CAMERA_CLEARANCE) -> np.ndarray:
        """(n,) bool: points (n, 3) inside ``bounds`` and ``clearance`` m away from objects."""
        points = np.atleast_2d(points)
        ok = np.all((points >= self.bounds[0]) & (points <= self.bounds[1]), axis=1)
        for cx, cy, radius, z0, z1 in self.boxes:
            near = np.hypot(points[:, 0] - cx, points[:, 1] - cy) < radius + clearance
            ok &= ~(near & (points[:, 2] > z0 - clearance) & (points[:, 2] < z1 + clearance))
        for cx, cy, cz, radius in self.spheres:
            ok &= np.linalg.norm(points - [cx, cy, cz], axis=1) > radius + clearance
        return ok

    def object_points(self) -> np.ndarray:
        """(M, 3) object centres (box axis at mid height, sphere centres), meters."""
        points = [(cx, cy, 0.5 * (z0 + z1)) for cx, cy, _, z0, z1 in self.boxes]
        points += [(cx, cy, cz) for cx, cy, cz, _ in self.spheres]
        return np.asarray(points, dtype=float).reshape(-1, 3)


def _random_color(rng: np.random.Generator, low: float = 0.1, high: float = 0.95) -> np.ndarray:
    """(3,) RGB uniform in [low, high]."""
    return rng.uniform(low, high, size=3)


def _waves(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, two_d: bool) -> Texture:
    """Sinusoidal stripes along s (or a 2D wave pattern) between colours a and b."""
    period_s, period_t = rng.uniform(0.2, 1.2, size=2)
    phase_s, phase_t = rng.uniform(0, 2 * math.pi, size=2)

    def texture(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        mix = np.sin(2 * math.pi * s / period_s + phase_s)
        if two_d:
            mix = 0.5 * (mix + np.sin(2 * math.pi * t / period_t + phase_t))
        mix = (0.5 + 0.5 * mix)[:, None]
        return a * (1 - mix) + b * mix

    return texture


def _random_texture(rng: np.random.Generator) -> Texture:
    """A solid, checker, striped or wavy texture with random colours and scale."""
    a, b = _random_color(rng), _random_color(rng)
    kind = int(rng.integers(4))
    if kind == 0:
        return lambda s, t: np.broadcast_to(a, (len(s), 3)).copy()
    if kind == 1:
        return checker(a, b, rng.uniform(0.2, 0.8))
    return _waves(a, b, rng, two_d=kind == 3)


def _box_faces(
    center: Sequence[float], size: Sequence[float], yaw: float, texture: Texture
) -> list[Surface]:
    """Top and four side faces of a box rotated by ``yaw`` (rad) about z; bottom at center[2]."""
    sx, sy, sz = size
    c, s = math.cos(yaw), math.sin(yaw)
    ex, ey = sx * np.array([c, s, 0.0]), sy * np.array([-s, c, 0.0])
    ez = np.array([0.0, 0.0, sz])
    lo = np.asarray(center, dtype=float) - (ex + ey) / 2
    return [
        plane(lo + ez, ex, ey, texture),
        plane(lo, ez, ex, texture),
        plane(lo + ey, ex, ez, texture),
        plane(lo, ey, ez, texture),
        plane(lo + ex, ez, ey, texture),
    ]


def _room_layout(rng: np.random.Generator) -> Layout:
    """A closed room 5 - 9 m wide, 2.4 - 3.2 m high, with random boxes and spheres."""
    hx, hy = rng.uniform(2.5, 4.5, size=2)
    hz = rng.uniform(2.4, 3.2)
    layout = Layout(kind="room", background=(0.0, 0.0, 0.0), min_valid=0.95)
    floor = checker(_random_color(rng), _random_color(rng), rng.uniform(0.3, 0.8))
    layout.surfaces += [
        plane([-hx, -hy, 0], [2 * hx, 0, 0], [0, 2 * hy, 0], floor),
        plane([-hx, -hy, hz], [0, 2 * hy, 0], [2 * hx, 0, 0], _random_texture(rng)),
        plane([-hx, hy, 0], [2 * hx, 0, 0], [0, 0, hz], _random_texture(rng)),
        plane([-hx, -hy, 0], [2 * hx, 0, 0], [0, 0, hz], _random_texture(rng)),
        plane([-hx, -hy, 0], [0, 2 * hy, 0], [0, 0, hz], _random_texture(rng)),
        plane([hx, -hy, 0], [0, 0, hz], [0, 2 * hy, 0], _random_texture(rng)),
    ]
    for _ in range(int(rng.integers(2, 7))):
        size = (*rng.uniform(0.4, 1.6, size=2), rng.uniform(0.3, 1.8))
        xy = rng.uniform([-hx + 0.8, -hy + 0.8], [hx - 0.8, hy - 0.8])
        layout.add_box((*xy, 0.0), size, rng.uniform(0, math.pi / 2), _random_texture(rng))
    for _ in range(int(rng.integers(1, 5))):
        radius = rng.uniform(0.15, 0.5)
        xy = rng.uniform([-hx + 0.6, -hy + 0.6], [hx - 0.6, hy - 0.6])
        z = rng.uniform(radius, min(2.0, hz - radius))
        layout.add_sphere((*xy, z), radius, _random_color(rng))
    margin = CAMERA_CLEARANCE
    layout.bounds = np.array([[-hx + margin, -hy + margin, 0.2], [hx - margin, hy - margin, hz]])
    layout.bounds[1, 2] -= 0.2
    layout.look_bounds = np.array([[-hx + 0.5, -hy + 0.5, 0.9], [hx - 0.5, hy - 0.5, 1.8]])
    return layout


def _outdoor_layout(rng: np.random.Generator) -> Layout:
    """A 16 x 16 m textured ground under the sky with buildings, trees and boulders."""
    half = 8.0
    sky = (rng.uniform(0.45, 0.7), rng.uniform(0.65, 0.85), rng.uniform(0.85, 1.0))
    layout = Layout(kind="outdoor", background=sky, min_valid=0.5)
    ground = _random_color(rng, 0.2, 0.6) * np.array([0.8, 1.0, 0.7])
    texture = _waves(ground, ground * rng.uniform(0.5, 0.8), rng, two_d=True)
    layout.surfaces.append(plane([-half, -half, 0], [2 * half, 0, 0], [0, 2 * half, 0], texture))
    for _ in range(int(rng.integers(3, 11))):
        size = (*rng.uniform(0.6, 2.5, size=2), rng.uniform(0.8, 3.5))
        xy = rng.uniform(-half + 1.5, half - 1.5, size=2)
        layout.add_box((*xy, 0.0), size, rng.uniform(0, math.pi / 2), _random_texture(rng))
    bark = np.array([0.35, 0.25, 0.15]) * rng.uniform(0.7, 1.3)
    for _ in range(int(rng.integers(1, 6))):
        xy, trunk = rng.uniform(-half + 1.5, half - 1.5, size=2), rng.uniform(0.6, 1.5)
        layout.add_box((*xy, 0.0), (0.2, 0.2, trunk), 0.0, lambda s, t: np.tile(bark, (len(s), 1)))
        crown = rng.uniform(0.4, 1.0)
        leaves = _random_color(rng, 0.1, 0.5) * np.array([0.6, 1.2, 0.6])
        layout.add_sphere((*xy, trunk + 0.8 * crown), crown, np.clip(leaves, 0, 1))
    for _ in range(int(rng.integers(0, 4))):
        radius = rng.uniform(0.2, 0.6)
        xy = rng.uniform(-half + 1, half - 1, size=2)
        layout.add_sphere((*xy, radius), radius, _random_color(rng, 0.3, 0.7))
    layout.bounds = np.array([[-half + 1.0, -half + 1.0, 0.2], [half - 1.0, half - 1.0, 5.0]])
    layout.look_bounds = np.array([[-half + 2.5, -half + 2.5, 1.0], [half - 2.5, half - 2.5, 2.0]])
    return layout


def random_layout(rng: np.random.Generator, kind: str | None = None) -> Layout:
    """A random room or outdoor layout drawn from ``rng`` (``kind=None``: room w.p. 0.6)."""
    if kind is None:
        kind = "room" if rng.random() < 0.6 else "outdoor"
    if kind == "room":
        return _room_layout(rng)
    if kind == "outdoor":
        return _outdoor_layout(rng)
    raise ValueError(f"unknown layout kind {kind!r}; use one of {LAYOUT_KINDS}")


def layout_gaussians(layout: Layout, num_gaussians: int, rng: np.random.Generator) -> Gaussians:
    """Cover the layout's surfaces with ``num_gaussians`` flat discs, as in
    :func:`lyra_core.scene.procedural_room.procedural_room` (:func:`lyra_core.scene.procedural_room.surface_gaussians`)."""
    return surface_gaussians(layout.surfaces, num_gaussians, rng)


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
    scene = render_views(gaussians, camtoworlds, intrinsics, background, config.device,
                         config.batch_size)
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
    view = render_views(gaussians, pose32[None], config.intrinsics(), layout.background,
                        config.device, config.batch_size)
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
    """
    config = config or GeneratorConfig()
    split_dir = Path(out) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(split_dir)
    seeds = split_seeds(split, num_scenes, seed_offset)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the generator (``--help`` lists them)."""
    defaults = GeneratorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m lyra_core.data.procedural",
        description="Generate procedural Lyra multi-trajectory scenes.",
        allow_abbrev=False,
    )
    parser.add_argument("--out", type=Path, default=Path("data/procedural"), help="data root")
    parser.add_argument("--num-scenes", type=int, required=True)
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--workers", type=int, default=2, help="processes (<= 1: in process)")
    parser.add_argument("--frames", type=int, default=defaults.num_frames)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=defaults.num_heldout)
    parser.add_argument("--gaussians", type=int, default=defaults.num_gaussians)
    parser.add_argument("--fov", type=float, default=defaults.fov_y, help="vertical, radians")
    parser.add_argument("--layout", choices=LAYOUT_KINDS, default=None, help="default: random")
    parser.add_argument("--movement-scale", type=float, default=defaults.movement_scale)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0, or 1 when a scene failed."""
    args = parse_args(argv)
    config = GeneratorConfig(
        width=args.width,
        height=args.height,
        num_frames=args.frames,
        num_heldout=args.heldout,
        num_gaussians=args.gaussians,
        fov_y=args.fov,
        movement_scale=args.movement_scale,
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
    for seed, error in summary["failed"].items():
        print(f"  seed {seed}: {error}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    # Re-import under the package name so worker tasks pickle as lyra_core.data.procedural.*.
    from lyra_core.data.procedural import main as _main

    raise SystemExit(_main())
