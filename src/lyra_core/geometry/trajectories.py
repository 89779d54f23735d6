"""Camera trajectories from one input camera, as ``(N, 4, 4)`` camera-to-world tensors.

Poses follow the conventions of :mod:`lyra_core.geometry.cameras` (OpenCV camera frame: x right,
y down, z forward; meters, radians).

Lyra trajectories
-----------------
Lyra (following GEN3C) renders six trajectories around the input view to supervise its 3D
Gaussian decoder. All are *center-facing*: every frame looks at the look-at point

    ``p = c0 + scene_depth * z0``

(``c0`` the input camera centre, ``z0`` its optical axis), with the input camera's up direction
``-y0`` as up. The camera centre moves by an offset expressed in the input camera frame, scaled
by ``distance = magnitude * movement_scale * scene_depth`` and eased with the smoothstep ramp
``s(t) = 3 t^2 - 2 t^3`` (``t = i / (N - 1)``), so frame 0 is the input pose exactly and the last
frame reaches the full offset (in the input camera frame ``x0, y0, z0``):

* ``left``: ``-distance * x0``; magnitude 0.2 - 0.3.
* ``right``: ``+distance * x0``; magnitude 0.2 - 0.3.
* ``up``: ``-distance * y0`` (image up); magnitude 0.1 - 0.2.
* ``zoom_out``: ``-distance * z0`` (away from ``p``); magnitude 0.3 - 0.4.
* ``zoom_in``: ``+distance * z0`` (toward ``p``); magnitude 0.3 - 0.4.
* ``clockwise``: a closed ellipse, see below; magnitude 0.4 - 0.6.

``clockwise``: the magnitude scales the ellipse radii, ``rx = 0.15 * distance`` and
``ry = 0.10 * distance`` (as in Lyra's multi-trajectory setup, where ``radius = movement *
radius_factor``). With ``theta = 2 * pi * 2 * s(t)`` (two full circles) the offset is

    ``(rx * (cos(theta) - 1), ry * sin(theta), 0)``   in the input camera frame,

an ellipse centred at ``(-rx, 0)`` that starts and ends at the input centre, and that is
traversed clockwise in image space (x right, y down): from its rightmost point the camera first
moves image-down, then left, then up. Because ``s`` is symmetric, the first circle closes
exactly at the middle frame ``(N - 1) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch import Tensor

from lyra_core.geometry.transforms import (
    check_rigid,
    look_at,
    pose_from_translation_quaternion,
    slerp,
    translation_quaternion_from_pose,
)
from lyra_core.utils.checks import check_finite, check_positive_number, check_shape

__all__ = [
    "LYRA_CIRCLE_RADII",
    "LYRA_MAGNITUDE_RANGES",
    "LYRA_NUM_CIRCLES",
    "LYRA_TRAJECTORY_NAMES",
    "lyra_trajectories",
    "lyra_trajectory",
    "sample_lyra_magnitude",
    "waypoint_trajectory",
]

#: Names of the six Lyra trajectories, in Lyra's order.
LYRA_TRAJECTORY_NAMES: tuple[str, ...] = (
    "left",
    "right",
    "up",
    "zoom_out",
    "zoom_in",
    "clockwise",
)

#: Movement magnitude range per trajectory, as a fraction of the scene depth.
LYRA_MAGNITUDE_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "left": (0.2, 0.3),
        "right": (0.2, 0.3),
        "up": (0.1, 0.2),
        "zoom_out": (0.3, 0.4),
        "zoom_in": (0.3, 0.4),
        "clockwise": (0.4, 0.6),
    }
)

#: ``(radius_x, radius_y)`` factors of the ``clockwise`` ellipse (times ``distance``).
LYRA_CIRCLE_RADII: tuple[float, float] = (0.15, 0.10)

#: Number of full circles of the ``clockwise`` trajectory.
LYRA_NUM_CIRCLES: int = 2

#: Unit direction (input camera frame) of each straight-line trajectory.
_LINEAR_DIRECTIONS: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "left": (-1.0, 0.0, 0.0),
        "right": (1.0, 0.0, 0.0),
        "up": (0.0, -1.0, 0.0),
        "zoom_out": (0.0, 0.0, -1.0),
        "zoom_in": (0.0, 0.0, 1.0),
    }
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _output_dtype(value: Tensor) -> torch.dtype:
    """The input's dtype when floating point, else float32."""
    return value.dtype if value.is_floating_point() else torch.float32


def _as_pose_tensor(name: str, value: Tensor | np.ndarray | Sequence, shape: tuple) -> Tensor:
    """Convert to a tensor, check ``shape`` and that every pose is finite and rigid."""
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    check_shape(name, tensor, shape)
    check_rigid(name, tensor)
    return tensor


def _check_num_frames(num_frames: int) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"num_frames must be an integer >= 2, got {num_frames!r}")


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_name(name: str) -> None:
    if name not in LYRA_TRAJECTORY_NAMES:
        valid = ", ".join(LYRA_TRAJECTORY_NAMES)
        raise ValueError(f"unknown trajectory name {name!r}; valid names: {valid}")


def _ease(num_frames: int) -> Tensor:
    """Smoothstep ramp ``s(t) = 3 t^2 - 2 t^3`` at ``t = i / (N - 1)``; ``(N,)`` float64."""
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    return t * t * (3.0 - 2.0 * t)


def _lyra_offsets(name: str, distance: float, num_frames: int) -> Tensor:
    """Camera-centre offsets ``(N, 3)`` in the input camera frame, meters, float64."""
    s = _ease(num_frames)
    if name == "clockwise":
        rx, ry = (factor * distance for factor in LYRA_CIRCLE_RADII)
        theta = 2.0 * math.pi * LYRA_NUM_CIRCLES * s
        x = rx * (torch.cos(theta) - 1.0)
        y = ry * torch.sin(theta)
        return torch.stack([x, y, torch.zeros_like(x)], dim=-1)
    direction = torch.tensor(_LINEAR_DIRECTIONS[name], dtype=torch.float64)
    return distance * s[:, None] * direction


def _center_facing(camtoworld: Tensor, offsets: Tensor, scene_depth: float) -> Tensor:
    """Poses at ``c0 + R0 @ offset`` looking at ``c0 + scene_depth * z0`` with up ``-y0``.

    Args:
        camtoworld: ``(4, 4)`` float64 input pose.
        offsets: ``(N, 3)`` float64 offsets in the input camera frame, meters.
        scene_depth: Distance of the look-at point along the input optical axis, meters.

    Returns:
        ``(N, 4, 4)`` float64 camera-to-world poses.
    """
    R0, c0 = camtoworld[:3, :3], camtoworld[:3, 3]
    eyes = c0 + offsets @ R0.T
    target = c0 + scene_depth * R0[:, 2]
    return look_at(eyes, target.expand_as(eyes), (-R0[:, 1]).expand_as(eyes))


# --------------------------------------------------------------------------------------------
# Lyra trajectories
# --------------------------------------------------------------------------------------------


def sample_lyra_magnitude(name: str, generator: torch.Generator | None = None) -> float:
    """Draw a magnitude uniformly from ``LYRA_MAGNITUDE_RANGES[name]``.

    Args:
        name: One of :data:`LYRA_TRAJECTORY_NAMES`.
        generator: Optional torch generator for reproducible draws (uses its device).

    Returns:
        The magnitude, a fraction of the scene depth (before ``movement_scale``).
    """
    _check_name(name)
    low, high = LYRA_MAGNITUDE_RANGES[name]
    device = generator.device if generator is not None else None
    u = torch.rand((), generator=generator, dtype=torch.float64, device=device)
    return low + (high - low) * float(u)


def lyra_trajectory(
    name: str,
    camtoworld: Tensor,
    scene_depth: float,
    num_frames: int = 121,
    movement_scale: float = 1.0,
    generator: torch.Generator | None = None,
    magnitude: float | None = None,
) -> Tensor:
    """One of the six center-facing Lyra trajectories starting at ``camtoworld``.

    See the module docstring for the geometry of each trajectory.

    Args:
        name: One of :data:`LYRA_TRAJECTORY_NAMES`.
        camtoworld: ``(4, 4)`` input camera-to-world pose (OpenCV camera frame), meters.
        scene_depth: Scene scale, the distance of the look-at point along the input optical
            axis, meters (> 0).
        num_frames: Number of frames N (>= 2). Frame 0 equals ``camtoworld``.
        movement_scale: Global movement factor multiplying the magnitude (>= 0).
        generator: Generator used to draw the magnitude when ``magnitude`` is ``None``.
        magnitude: Movement as a fraction of ``scene_depth``; drawn uniformly from
            ``LYRA_MAGNITUDE_RANGES[name]`` when ``None``.

    Returns:
        ``(N, 4, 4)`` camera-to-world poses on ``camtoworld``'s device, with its dtype when
        floating point (else float32).

    Raises:
        ValueError: For an unknown name, a non-finite or non-rigid pose, ``scene_depth <= 0``,
            ``num_frames < 2``, or a ``zoom_in`` that would reach the look-at point.
    """
    _check_name(name)
    camtoworld = _as_pose_tensor("camtoworld", camtoworld, (4, 4))
    check_positive_number("scene_depth", scene_depth)
    _check_num_frames(num_frames)
    _check_non_negative("movement_scale", movement_scale)
    if magnitude is None:
        magnitude = sample_lyra_magnitude(name, generator)
    _check_non_negative("magnitude", magnitude)

    distance = magnitude * movement_scale * scene_depth
    if name == "zoom_in" and distance >= scene_depth:
        raise ValueError(
            f"zoom_in distance {distance:.4g} m (magnitude * movement_scale * scene_depth) must "
            f"be smaller than scene_depth {scene_depth:.4g} m"
        )
    pose64 = camtoworld.detach().to(dtype=torch.float64, device="cpu")
    offsets = _lyra_offsets(name, distance, num_frames)
    poses = _center_facing(pose64, offsets, float(scene_depth))
    out = poses.to(dtype=_output_dtype(camtoworld), device=camtoworld.device)
    out[0] = camtoworld.to(out.dtype)
    return out


def lyra_trajectories(
    camtoworld: Tensor,
    scene_depth: float,
    num_frames: int = 121,
    movement_scale: float = 1.0,
    seed: int = 0,
) -> dict[str, Tensor]:
    """All six Lyra trajectories, magnitudes drawn deterministically from ``seed``.

    Magnitudes are drawn in the order of :data:`LYRA_TRAJECTORY_NAMES` from one CPU generator
    seeded with ``seed``; the same seed always gives the same trajectories.

    Returns:
        ``{name: (N, 4, 4) camera-to-world poses}`` in :data:`LYRA_TRAJECTORY_NAMES` order.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return {
        name: lyra_trajectory(
            name,
            camtoworld,
            scene_depth,
            num_frames=num_frames,
            movement_scale=movement_scale,
            generator=generator,
        )
        for name in LYRA_TRAJECTORY_NAMES
    }


# --------------------------------------------------------------------------------------------
# Waypoints
# --------------------------------------------------------------------------------------------


def _check_times(times: Sequence[float] | None, num_waypoints: int) -> np.ndarray:
    """Waypoint times as float64 ``(K,)``, default ``0, 1, ..., K - 1``; strictly increasing."""
    if times is None:
        return np.arange(num_waypoints, dtype=np.float64)
    times_np = np.asarray(times, dtype=np.float64)
    if times_np.shape != (num_waypoints,):
        raise ValueError(
            f"times must have one entry per waypoint ({num_waypoints}), got shape {times_np.shape}"
        )
    if not np.all(np.isfinite(times_np)):
        raise ValueError("times contains non-finite value(s) (NaN or inf)")
    if not np.all(np.diff(times_np) > 0):
        raise ValueError(f"times must be strictly increasing, got {times_np.tolist()}")
    return times_np


def waypoint_trajectory(
    waypoints: Tensor,
    num_frames: int,
    times: Sequence[float] | None = None,
) -> Tensor:
    """Smooth trajectory through camera-to-world waypoints.

    Positions follow a natural cubic spline (linear for two waypoints) and rotations are
    slerped between consecutive waypoints. Frames are evenly spaced in time from the first to
    the last waypoint time, so a waypoint is reproduced exactly (to float precision) whenever
    its time falls on a frame, and always for the first and last frame.

    Args:
        waypoints: ``(K, 4, 4)`` camera-to-world poses, ``K >= 2``.
        num_frames: Number of output frames N (>= 2).
        times: ``(K,)`` strictly increasing waypoint times (any unit); default ``0..K-1``.

    Returns:
        ``(N, 4, 4)`` camera-to-world poses on ``waypoints``' device, with its dtype when
        floating point (else float32).
    """
    waypoints = _as_pose_tensor("waypoints", waypoints, (None, 4, 4))
    num_waypoints = waypoints.shape[0]
    if num_waypoints < 2:
        raise ValueError(f"waypoints must hold at least 2 poses, got {num_waypoints}")
    _check_num_frames(num_frames)
    times_np = _check_times(times, num_waypoints)

    poses = waypoints.detach().to(dtype=torch.float64, device="cpu")
    frame_times = np.linspace(times_np[0], times_np[-1], num_frames)
    frame_times[-1] = times_np[-1]  # guard against round-off past the last knot

    positions, quats = translation_quaternion_from_pose(poses)
    if num_waypoints == 2:
        alpha = ((frame_times - times_np[0]) / (times_np[1] - times_np[0]))[:, None]
        centers = (1.0 - alpha) * positions[0].numpy() + alpha * positions[1].numpy()
    else:
        spline = CubicSpline(times_np, positions.numpy(), axis=0, bc_type="natural")
        centers = spline(frame_times)
    # Rotations: slerp between the two waypoints around each frame time.
    segment = np.searchsorted(times_np, frame_times, side="right") - 1
    segment = np.clip(segment, 0, num_waypoints - 2)
    span = times_np[segment + 1] - times_np[segment]
    alpha = torch.from_numpy(np.clip((frame_times - times_np[segment]) / span, 0.0, 1.0))
    index = torch.from_numpy(segment)
    rotations = slerp(quats[index], quats[index + 1], alpha)

    out = pose_from_translation_quaternion(torch.from_numpy(centers), rotations)
    result = out.to(dtype=_output_dtype(waypoints), device=waypoints.device)
    check_finite("waypoint_trajectory output", result)
    return result
