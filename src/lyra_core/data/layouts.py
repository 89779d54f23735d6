"""Random scene layouts for the procedural data (:mod:`lyra_core.data.generator`).

A layout (:func:`random_layout`) is a ``room`` (textured floor, ceiling and four walls, 2 - 6
boxes and 1 - 4 spheres) or an ``outdoor`` layout (textured ground under a sky-colour background,
3 - 10 "buildings", 1 - 5 trees, 0 - 3 boulders). Sizes, positions, yaw, colours and textures
(solid, checker, stripes, waves) are random per draw. World z-up, meters.
:func:`layout_gaussians` covers its surfaces with flat surface Gaussians like
:func:`lyra_core.scene.procedural_room.procedural_room` (whose output is unchanged). A
:class:`Layout` also knows the free space cameras may occupy (:meth:`Layout.is_free`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_room import Surface, checker, plane, sphere, surface_gaussians

__all__ = [
    "CAMERA_CLEARANCE",
    "LAYOUT_KINDS",
    "Layout",
    "Texture",
    "layout_gaussians",
    "random_layout",
]

#: Layout kinds drawn by :func:`random_layout` (rooms with probability 0.6).
LAYOUT_KINDS: tuple[str, ...] = ("room", "outdoor")

CAMERA_CLEARANCE = 0.15
"""Minimum distance (m) of every generated camera from objects and layout bounds."""

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``texture(s, t) -> (n, 3)`` colours from surface coordinates ``s, t`` (n,), meters."""


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
    :func:`lyra_core.scene.procedural_room.procedural_room`
    (:func:`lyra_core.scene.procedural_room.surface_gaussians`)."""
    return surface_gaussians(layout.surfaces, num_gaussians, rng)
