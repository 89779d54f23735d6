"""A procedural 4D ground truth: the procedural room with objects that move over time.

:func:`procedural_dynamic_room` builds the furnished room of
:func:`~lyra_core.scene.procedural_room.procedural_room` as the static part and a few rigid
objects (boxes and spheres of surface Gaussians, in saturated colours) that translate and turn
about the vertical axis along smooth paths over ``[0, duration]`` seconds. Each object is stored
in its own frame (centred on the origin); :meth:`DynamicRoom.object_pose` gives its
object-to-world pose at any time, so the exact 3D world at time ``t`` is known
(:meth:`DynamicRoom.gaussians_at`) and a 4D world made of time slices of it is one call
(:meth:`DynamicRoom.world`). World frame z-up, meters, seconds, as the static room.

Paths: object ``k`` eases (``s = (1 - cos(pi t / duration)) / 2``) from a start to an end point
on the open floor in front of the furniture, keeping its height, and turns about +z at a constant
rate; everything is drawn from ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_room import box, procedural_room, sphere, surface_gaussians

__all__ = ["DynamicRoom", "ObjectPath", "procedural_dynamic_room"]

OBJECT_FRACTION = 0.15
"""Share of ``num_gaussians`` given to the moving objects (split evenly among them)."""

_OBJECT_COLORS = ((0.95, 0.15, 0.1), (0.15, 0.85, 0.2), (0.95, 0.85, 0.1), (0.8, 0.2, 0.9))


@dataclass(frozen=True)
class ObjectPath:
    """A smooth rigid path: eased translation from ``start`` to ``end`` (world, meters) and a
    turn about +z of ``yaw0 + yaw_rate * t`` radians, over ``[0, duration]`` seconds."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    yaw0: float
    yaw_rate: float
    duration: float

    def pose(self, t: Tensor) -> Tensor:
        """``(T, 4, 4)`` float64 object-to-world poses at times ``t`` ``(T,)``, seconds
        (clamped into ``[0, duration]``)."""
        t = t.to(torch.float64).clamp(0.0, self.duration)
        s = 0.5 - 0.5 * torch.cos(math.pi * t / self.duration)
        start = torch.tensor(self.start, dtype=torch.float64)
        end = torch.tensor(self.end, dtype=torch.float64)
        yaw = self.yaw0 + self.yaw_rate * t
        cos, sin = torch.cos(yaw), torch.sin(yaw)
        pose = torch.zeros(len(t), 4, 4, dtype=torch.float64)
        pose[:, 0, 0], pose[:, 0, 1] = cos, -sin
        pose[:, 1, 0], pose[:, 1, 1] = sin, cos
        pose[:, 2, 2] = 1.0
        pose[:, :3, 3] = start + s[:, None] * (end - start)
        pose[:, 3, 3] = 1.0
        return pose


@dataclass
class DynamicRoom:
    """A procedural 4D scene: a static room and rigid objects on known paths.

    Attributes:
        static: the room, a 3D :class:`Gaussians` in world coordinates.
        objects: one 3D :class:`Gaussians` per moving object, in its object frame.
        paths: the path of each object (:meth:`object_pose`).
        duration: length of the motion, seconds; the objects move over ``[0, duration]`` and
            hold their end poses outside it.
    """

    static: Gaussians
    objects: list[Gaussians]
    paths: list[ObjectPath]
    duration: float

    def object_pose(self, k: int, t: float | Tensor) -> Tensor:
        """Object ``k``'s object-to-world pose at time ``t`` (seconds): float32 ``(4, 4)`` for
        a number, ``(T, 4, 4)`` for a ``(T,)`` tensor of times."""
        if not 0 <= k < len(self.objects):
            raise IndexError(f"object index {k} out of range for {len(self.objects)} objects")
        times = torch.as_tensor(t, dtype=torch.float64)
        if not bool(torch.isfinite(times).all()):
            raise ValueError(f"time must be finite, got {t!r}")
        pose = self.paths[k].pose(times.reshape(-1)).to(torch.float32)
        return pose[0] if times.dim() == 0 else pose

    def objects_at(self, t: float) -> Gaussians:
        """All objects posed at time ``t``, in world coordinates (3D)."""
        return Gaussians.cat(
            [g.transformed(self.object_pose(k, t)) for k, g in enumerate(self.objects)]
        )

    def gaussians_at(self, t: float) -> Gaussians:
        """The exact 3D world at time ``t``: the objects posed at ``t``, then the static room
        (the order of ``world(times).at_time(t)``, so both render bit for bit alike)."""
        return Gaussians.cat([self.objects_at(t), self.static])

    def world(self, times: Sequence[float]) -> Gaussians:
        """A 4D world: the objects posed at each of ``times`` (strictly increasing seconds) as
        time slices, the room static (:meth:`Gaussians.from_time_slices`)."""
        return Gaussians.from_time_slices(
            [self.objects_at(float(t)) for t in times], times, static=self.static
        )


def procedural_dynamic_room(
    seed: int = 0,
    *,
    num_gaussians: int = 100_000,
    num_objects: int = 2,
    duration: float = 2.0,
) -> DynamicRoom:
    """The procedural room plus ``num_objects`` moving objects (deterministic in ``seed``).

    Objects alternate between a box (0.5-0.7 m, resting on the floor) and a sphere
    (radius 0.25-0.35 m, floating 0.6-1.2 m up); each travels 1-2 m across the open floor
    (x in [-2, 2], y in [-2.2, -0.9]) and turns by up to 180 degrees over ``duration``.

    Args:
        seed: seed of the room and of the objects and paths.
        num_gaussians: total Gaussians; ``OBJECT_FRACTION`` of them go to the objects.
        num_objects: number of moving objects, ``>= 0``.
        duration: length of the motion in seconds, ``> 0``.
    """
    if num_objects < 0:
        raise ValueError(f"num_objects must be >= 0, got {num_objects}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a finite number > 0, got {duration!r}")
    per_object = int(num_gaussians * OBJECT_FRACTION) // max(num_objects, 1)
    if num_gaussians - per_object * num_objects < 1 or (num_objects and per_object < 1):
        raise ValueError(f"num_gaussians={num_gaussians} is too few for {num_objects} objects")
    static = procedural_room(num_gaussians - per_object * num_objects, seed=seed)
    rng = np.random.default_rng([seed, 1])  # the objects' own stream: the room is unchanged
    objects, paths = [], []
    for k in range(num_objects):
        color = _OBJECT_COLORS[k % len(_OBJECT_COLORS)]
        if k % 2 == 0:
            size = rng.uniform(0.5, 0.7)
            surfaces, height = box([0.0, 0.0, -size / 2], (size, size, size), color), size / 2
        else:
            radius = rng.uniform(0.25, 0.35)
            surfaces, height = [sphere([0.0, 0.0, 0.0], radius, color)], rng.uniform(0.6, 1.2)
        objects.append(surface_gaussians(surfaces, per_object, rng))
        start = np.array([rng.uniform(-2.0, 2.0), rng.uniform(-2.2, -0.9)])
        heading = rng.uniform(0.0, 2 * math.pi)
        end = start + rng.uniform(1.0, 2.0) * np.array([math.cos(heading), math.sin(heading)])
        end = np.clip(end, [-2.0, -2.2], [2.0, -0.9])
        paths.append(
            ObjectPath(
                start=(float(start[0]), float(start[1]), float(height)),
                end=(float(end[0]), float(end[1]), float(height)),
                yaw0=float(rng.uniform(0.0, 2 * math.pi)),
                yaw_rate=float(rng.uniform(-math.pi, math.pi)) / duration,
                duration=float(duration),
            )
        )
    return DynamicRoom(static=static, objects=objects, paths=paths, duration=float(duration))
