"""Procedural Gaussian scenes for demos, tests and benchmarks (no data download needed).

:func:`procedural_room` builds a furnished room as surface Gaussians: flat discs lying on a
textured floor, walls, boxes and spheres, spaced so that surfaces are covered about twice over,
like a trained 3DGS scene. The world frame is z-up (REP 103 style), meters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from lyra_core.scene.gaussians import Gaussians

ROOM_HALF_SIZE = 3.0
ROOM_HEIGHT = 2.5


def procedural_room(num_gaussians: int = 100_000, seed: int = 0) -> Gaussians:
    """A textured room with furniture as ``num_gaussians`` surface Gaussians (SH degree 0).

    The room spans x, y in [-3, 3] m and z in [0, 2.5] m; it is open towards -y (no wall
    there) so it can be viewed from outside as well. Colours come from procedural textures
    (checker floor, striped and gradient walls, solid furniture with noise).
    """
    if num_gaussians < 1:
        raise ValueError(f"num_gaussians must be >= 1, got {num_gaussians}")
    rng = np.random.default_rng(seed)
    return surface_gaussians(_room_surfaces(rng), num_gaussians, rng)


def surface_gaussians(
    surfaces: list[Surface], num_gaussians: int, rng: np.random.Generator
) -> Gaussians:
    """Cover ``surfaces`` with ``num_gaussians`` flat discs (SH degree 0, float32).

    Gaussians are spread in proportion to area, sized to cover the surfaces about twice over,
    with colour noise (std 0.03) and opacities in [0.7, 0.99].
    """
    areas = np.array([s.area for s in surfaces])
    counts = rng.multinomial(num_gaussians, areas / areas.sum())
    parts = [s.sample(n, rng) for s, n in zip(surfaces, counts, strict=True) if n > 0]
    means = np.concatenate([p[0] for p in parts])
    normals = np.concatenate([p[1] for p in parts])
    colors = np.concatenate([p[2] for p in parts])

    spacing = math.sqrt(areas.sum() / num_gaussians)
    scales = np.empty((num_gaussians, 3))
    scales[:, :2] = spacing * rng.uniform(0.6, 1.0, size=(num_gaussians, 2))
    scales[:, 2] = spacing * 0.05
    quats_xyzw = disc_orientations(normals, rng).as_quat()
    colors = np.clip(colors + rng.normal(0.0, 0.03, size=colors.shape), 0.0, 1.0)
    return Gaussians.from_activated(
        means=torch.as_tensor(means, dtype=torch.float32),
        quats=torch.as_tensor(quats_xyzw[:, [3, 0, 1, 2]], dtype=torch.float32),
        scales=torch.as_tensor(scales, dtype=torch.float32),
        opacities=torch.as_tensor(rng.uniform(0.7, 0.99, size=num_gaussians), dtype=torch.float32),
        colors=torch.as_tensor(colors, dtype=torch.float32),
    )


class Surface:
    """A sampled surface: ``sample(n, rng) -> (points, normals, colours)``, all (n, 3)."""

    def __init__(self, area: float, sample):
        self.area = area
        self.sample = sample


def plane(origin, u_axis, v_axis, texture) -> Surface:
    """Rectangle origin + s*u + t*v, s, t in [0, 1]; texture(s, t, u_len, v_len) -> (n, 3)."""
    origin, u_axis, v_axis = (np.asarray(a, dtype=float) for a in (origin, u_axis, v_axis))
    normal = np.cross(u_axis, v_axis)
    normal /= np.linalg.norm(normal)
    u_len, v_len = np.linalg.norm(u_axis), np.linalg.norm(v_axis)

    def sample(n, rng):
        st = rng.random((n, 2))
        points = origin + st[:, :1] * u_axis + st[:, 1:] * v_axis
        return points, np.broadcast_to(normal, (n, 3)), texture(st[:, 0] * u_len, st[:, 1] * v_len)

    return Surface(u_len * v_len, sample)


def sphere(center, radius, color) -> Surface:
    center = np.asarray(center, dtype=float)

    def sample(n, rng):
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        bands = 0.75 + 0.25 * np.sign(np.sin(8.0 * normals[:, 2:]))
        return center + radius * normals, normals, np.asarray(color) * bands

    return Surface(4 * math.pi * radius**2, sample)


def box(center, size, color) -> list[Surface]:
    """Five faces (no bottom) of an axis-aligned box."""
    sx, sy, sz = size
    ex, ey, ez = np.array([sx, 0.0, 0.0]), np.array([0.0, sy, 0.0]), np.array([0.0, 0.0, sz])
    lo = np.asarray(center, dtype=float) - (ex + ey) / 2
    texture = solid(color)
    return [
        plane(lo + ez, ex, ey, texture),  # top
        plane(lo, ez, ex, texture),  # front (-y)
        plane(lo + ey, ex, ez, texture),  # back (+y)
        plane(lo, ey, ez, texture),  # left (-x)
        plane(lo + ex, ez, ey, texture),  # right (+x)
    ]


def solid(color):
    return lambda s, t: np.broadcast_to(np.asarray(color, dtype=float), (len(s), 3)).copy()


def checker(a, b, cell):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def texture(s, t):
        odd = ((np.floor(s / cell) + np.floor(t / cell)) % 2)[:, None]
        return a * (1 - odd) + b * odd

    return texture


def stripes(a, b, period):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def texture(s, t):
        mix = (0.5 + 0.5 * np.sin(2 * math.pi * s / period))[:, None]
        shade = (0.8 + 0.2 * t / ROOM_HEIGHT)[:, None]
        return (a * (1 - mix) + b * mix) * shade

    return texture


def _room_surfaces(rng: np.random.Generator) -> list[Surface]:
    h, z = ROOM_HALF_SIZE, ROOM_HEIGHT
    floor = checker([0.85, 0.8, 0.7], [0.3, 0.25, 0.2], 0.5)
    back_wall = stripes([0.2, 0.4, 0.7], [0.9, 0.9, 0.85], 0.8)
    left_wall = stripes([0.7, 0.3, 0.2], [0.95, 0.85, 0.6], 1.2)
    right_wall = checker([0.3, 0.6, 0.35], [0.8, 0.9, 0.7], 0.6)
    surfaces = [
        plane([-h, -h, 0], [2 * h, 0, 0], [0, 2 * h, 0], floor),
        plane([-h, h, 0], [2 * h, 0, 0], [0, 0, z], back_wall),
        plane([-h, -h, 0], [0, 2 * h, 0], [0, 0, z], left_wall),
        plane([h, -h, 0], [0, 0, z], [0, 2 * h, 0], right_wall),
    ]
    surfaces += box([-1.2, 1.0, 0.0], (1.0, 0.8, 0.9), [0.8, 0.5, 0.1])
    surfaces += box([1.4, -0.5, 0.0], (0.6, 0.6, 1.4), [0.2, 0.3, 0.8])
    surfaces += box([0.3, 2.0, 0.0], (1.6, 0.6, 0.5), [0.6, 0.2, 0.5])
    for _ in range(3):
        center = [rng.uniform(-2, 2), rng.uniform(-1.5, 2), rng.uniform(0.3, 1.6)]
        surfaces.append(sphere(center, rng.uniform(0.2, 0.4), rng.uniform(0.2, 1.0, size=3)))
    return surfaces


def disc_orientations(normals: np.ndarray, rng: np.random.Generator) -> Rotation:
    """Rotations whose local z axis is the surface normal, random spin about it."""
    spin = np.zeros((len(normals), 3))
    spin[:, 2] = rng.uniform(0, 2 * math.pi, len(normals))
    return align_z(normals) * Rotation.from_rotvec(spin)


def align_z(normals: np.ndarray) -> Rotation:
    """Shortest rotations taking +z to each unit normal (N, 3)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, normals)
    sin = np.linalg.norm(axis, axis=1)
    cos = normals @ z
    angle = np.arctan2(sin, cos)
    fallback = np.tile([1.0, 0.0, 0.0], (len(normals), 1))
    axis = np.where(sin[:, None] > 1e-9, axis / np.maximum(sin, 1e-12)[:, None], fallback)
    return Rotation.from_rotvec(axis * angle[:, None])
