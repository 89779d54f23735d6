"""The ``depth`` world source: one Gaussian per pixel of an RGB-D frame.

Every valid pixel becomes a flat disc at its unprojected centre, sized to the pixel's footprint
on the surface (so neighbouring discs overlap like a closed surface), with the pixel's colour and
a high opacity. Cheap, exact at the input view, and honest about what one frame shows: surfaces
hidden from the input camera stay empty (the ``lyra`` source fills them).

Two orientations of the discs (``orient``):

- ``"camera"``: every disc faces the camera (thin axis along the optical axis), sized to the
  pixel's footprint on a plane at the pixel's depth parallel to the image.
- ``"normal"``: every disc lies in the surface: its thin axis is the depth map's normal
  (:func:`normals_from_depth`) and its two in-plane axes are the pixel's footprint on that
  surface, stretched by the obliquity (at most ``max_stretch`` times), so the input view is
  covered as before while views off the input pose see the surface at its true slant. Pixels
  without a normal (depth edges, invalid neighbours) fall back to camera-facing discs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import rotation_to_quaternion_wxyz
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.checks import check_finite

__all__ = [
    "DISC_THICKNESS",
    "FOOTPRINT_SIGMA",
    "MAX_STRETCH",
    "ORIENTATIONS",
    "gaussians_from_rgbd",
    "normals_from_depth",
]

FOOTPRINT_SIGMA = 0.6
"""Disc standard deviation in units of the (strided) pixel footprint: discs overlap neighbours."""

DISC_THICKNESS = 0.1
"""Disc thickness along its thin axis relative to the footprint radius."""

ORIENTATIONS = ("camera", "normal")
"""Values of ``orient``: discs facing the camera, or lying in the surface (depth normals)."""

MAX_STRETCH = 4.0
"""Default bound of the obliquity stretch of normal-oriented discs (a surface at ~76 degrees)."""

MAX_SLOPE = 5.0
"""Steepest depth slope, as tan of the angle between surface and image plane (~79 degrees), that
still counts as one surface between neighbouring pixels; a larger jump is a depth edge."""


def gaussians_from_rgbd(
    rgb: Tensor | np.ndarray,
    depth: Tensor | np.ndarray,
    intrinsics: Intrinsics,
    camtoworld: Tensor | np.ndarray | None = None,
    *,
    stride: int = 1,
    opacity: float = 0.95,
    min_depth: float = 1e-3,
    max_depth: float = math.inf,
    mask: Tensor | np.ndarray | None = None,
    orient: str = "camera",
    max_stretch: float = MAX_STRETCH,
) -> Gaussians:
    """Gaussians from a colour image and a registered depth map.

    Args:
        rgb: (H, W, 3) colour, uint8 or float in [0, 1].
        depth: (H, W) depth along the optical axis in meters; 0, NaN, inf or values outside
            [min_depth, max_depth] mark pixels without a measurement (skipped).
        intrinsics: pinhole intrinsics of the image (width W, height H).
        camtoworld: (4, 4) pose of the camera in the world (OpenCV axes); identity if None.
        stride: keep every stride-th pixel in both directions (discs grow to match).
        opacity: opacity of every disc, in (0, 1).
        mask: optional (H, W) bool: only these pixels become Gaussians (the depth of pixels
            outside it still gives the normals of ``orient="normal"``).
        orient: ``"camera"`` (discs facing the camera) or ``"normal"`` (discs in the surface,
            thin axis along the depth map's normal; see the module docstring).
        max_stretch: ``orient="normal"``: bound (>= 1) of each in-plane axis relative to the
            camera-facing disc's radius, and of its inverse.

    Returns:
        Gaussians in world coordinates (float32, SH degree 0), one per valid kept pixel.

    Raises:
        ValueError: mismatched sizes, a non-finite pose, or bad stride/opacity/depth
            range/orient/max_stretch.
    """
    rgb_t = _as_tensor(rgb)
    depth_t = _as_tensor(depth).to(torch.float32)
    size = (intrinsics.height, intrinsics.width)
    if rgb_t.dim() != 3 or rgb_t.shape[-1] != 3 or tuple(rgb_t.shape[:2]) != size:
        raise ValueError(f"rgb must have shape {(*size, 3)} (intrinsics), got {tuple(rgb_t.shape)}")
    if tuple(depth_t.shape) != size:
        raise ValueError(f"depth must have shape {size} like the image, got {tuple(depth_t.shape)}")
    _check_options(stride, opacity, min_depth, max_depth)
    if orient not in ORIENTATIONS:
        raise ValueError(f"orient must be one of {', '.join(ORIENTATIONS)}, got {orient!r}")
    if not max_stretch >= 1.0:
        raise ValueError(f"max_stretch must be >= 1, got {max_stretch!r}")
    pose = torch.eye(4) if camtoworld is None else _as_tensor(camtoworld).to(torch.float32)
    if pose.shape != (4, 4):
        raise ValueError(f"camtoworld must have shape (4, 4), got {tuple(pose.shape)}")
    check_finite("camtoworld", pose)

    colors = rgb_t.to(torch.float32) / 255.0 if rgb_t.dtype == torch.uint8 else rgb_t.float()
    rows = torch.arange(0, size[0], stride)
    cols = torch.arange(0, size[1], stride)
    in_range = torch.isfinite(depth_t) & (depth_t >= min_depth) & (depth_t <= max_depth)
    valid = in_range[rows][:, cols]
    if mask is not None:
        keep = _as_tensor(mask).to(torch.bool)
        if tuple(keep.shape) != size:
            raise ValueError(f"mask must have shape {size} like the image, got {tuple(keep.shape)}")
        valid &= keep[rows][:, cols]
    z = depth_t[rows][:, cols]
    v, u = torch.meshgrid(rows.float(), cols.float(), indexing="ij")
    z, u, v = z[valid], u[valid], v[valid]
    points_cam = torch.stack(
        [(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], -1
    )
    rotation = pose[:3, :3]
    means = points_cam @ rotation.T + pose[:3, 3]

    radius = FOOTPRINT_SIGMA * stride * z / math.sqrt(intrinsics.fx * intrinsics.fy)
    scales = torch.stack([radius, radius, DISC_THICKNESS * radius], dim=-1)
    axes = torch.eye(3).expand(len(z), 3, 3)  # columns: the disc's axes in the camera frame
    if orient == "normal" and len(z):
        normals, has_normal = normals_from_depth(
            torch.where(in_range, depth_t, 0.0), intrinsics, stride
        )
        normals, has_normal = normals[valid], has_normal[valid]
        surface_axes, stretch = _footprint_axes(points_cam, normals, max_stretch)
        axes = torch.where(has_normal[:, None, None], surface_axes, axes)
        stretch = torch.where(has_normal[:, None], stretch, torch.ones_like(stretch))
        scales = torch.cat([scales[:, :2] * stretch, scales[:, 2:]], dim=-1)
    quats = rotation_to_quaternion_wxyz(rotation @ axes)
    return Gaussians.from_activated(
        means=means,
        quats=quats.contiguous(),
        scales=scales,
        opacities=torch.full((len(z),), float(opacity)),
        colors=colors[rows][:, cols][valid].clamp(0.0, 1.0),
    )


def normals_from_depth(
    depth: Tensor | np.ndarray, intrinsics: Intrinsics, stride: int = 1
) -> tuple[Tensor, Tensor]:
    """Unit surface normals of a depth map at every ``stride``-th pixel, in the camera frame,
    facing the camera.

    Central differences of the unprojected points of neighbouring grid pixels (``stride`` pixels
    apart) along u and v, one-sided where only one neighbour lies on the same surface; the normal
    is their cross product. A neighbour lies on the same surface when it has depth and its depth
    differs from the pixel's by less than a surface at slope :data:`MAX_SLOPE` would give.

    Args:
        depth: (H, W) meters along the optical axis; 0 or non-finite where unknown.
        intrinsics: pinhole intrinsics of the depth map.
        stride: the grid: rows ``0, stride, 2 stride, ...`` and the same columns.

    Returns:
        ``(normals, ok)``: (h, w, 3) float32 unit normals (h = ceil(H / stride), w likewise)
        with ``n . p < 0`` for the pixel's point ``p`` (zero where not ``ok``), and (h, w) bool:
        pixels with a normal (valid depth and a neighbour on the same surface along u and v).
    """
    z = _as_tensor(depth).to(torch.float32)
    if z.dim() != 2:
        raise ValueError(f"depth must have shape (H, W), got {tuple(z.shape)}")
    rows = torch.arange(0, z.shape[0], stride)
    cols = torch.arange(0, z.shape[1], stride)
    z = z[rows][:, cols]
    z = torch.where(torch.isfinite(z) & (z > 0), z, torch.zeros(()))
    v, u = torch.meshgrid(rows.float(), cols.float(), indexing="ij")
    points = torch.stack(
        [(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], -1
    )
    valid = z > 0
    tangents = []
    for dim, focal in ((1, intrinsics.fx), (0, intrinsics.fy)):
        limit = MAX_SLOPE * stride * z / focal
        ahead_p, ahead_ok = _shifted(points, valid, -1, dim)
        behind_p, behind_ok = _shifted(points, valid, 1, dim)
        ahead_ok &= valid & ((ahead_p[..., 2] - z).abs() <= limit)
        behind_ok &= valid & ((behind_p[..., 2] - z).abs() <= limit)
        front = torch.where(ahead_ok[..., None], ahead_p, points)
        back = torch.where(behind_ok[..., None], behind_p, points)
        tangents.append((front - back, ahead_ok | behind_ok))
    (du, du_ok), (dv, dv_ok) = tangents
    normals = torch.linalg.cross(du, dv, dim=-1)
    length = normals.norm(dim=-1)
    ok = du_ok & dv_ok & (length > 0)
    normals = normals / length.clamp_min(1e-30)[..., None]
    facing = (normals * points).sum(-1) > 0
    normals = torch.where(facing[..., None], -normals, normals)
    return torch.where(ok[..., None], normals, torch.zeros(())), ok


def _shifted(points: Tensor, valid: Tensor, shift: int, dim: int) -> tuple[Tensor, Tensor]:
    """``points`` and ``valid`` moved by ``shift`` along ``dim`` (out of the image: invalid), so
    that entry i holds the value at i - shift."""
    moved = torch.roll(points, shift, dims=dim)
    moved_ok = torch.roll(valid, shift, dims=dim).clone()
    index = [slice(None), slice(None)]
    index[dim] = slice(0, shift) if shift > 0 else slice(shift, None)
    moved_ok[tuple(index)] = False
    return moved, moved_ok


def _footprint_axes(points: Tensor, normals: Tensor, max_stretch: float) -> tuple[Tensor, Tensor]:
    """In-surface disc axes and their stretch for pixels at ``points`` (N, 3) with ``normals``.

    A pixel's footprint on the image-parallel plane (the camera-facing disc, axes e_x, e_y) maps
    onto the surface along the viewing ray d: ``a = e - d (n . e) / (n . d)``. The footprint's
    covariance ``a_x a_x^T + a_y a_y^T`` (in units of the camera-facing radius) has its
    principal axes in the surface; their lengths are the stretch, clamped to
    ``[1 / max_stretch, max_stretch]``.

    Returns:
        ``(axes, stretch)``: (N, 3, 3) rotations with columns (major, minor, normal) in the
        camera frame, and (N, 2) stretch of the major and minor axes.
    """
    rays = points / points.norm(dim=-1, keepdim=True)
    n_dot_d = (normals * rays).sum(-1, keepdim=True)
    # Normals face the camera (n . d < 0); bound the obliquity so that a_x, a_y stay finite.
    n_dot_d = n_dot_d.clamp(max=-1.0 / max_stretch)
    a_x = -rays * (normals[:, :1] / n_dot_d)
    a_x[:, 0] += 1.0
    a_y = -rays * (normals[:, 1:2] / n_dot_d)
    a_y[:, 1] += 1.0
    t1 = a_x / a_x.norm(dim=-1, keepdim=True)
    t2 = torch.linalg.cross(normals, t1, dim=-1)
    # The 2x2 covariance in the (t1, t2) basis: B B^T with B = [[t1.a_x, t1.a_y], [0, t2.a_y]].
    b11 = a_x.norm(dim=-1)
    b12 = (t1 * a_y).sum(-1)
    b22 = (t2 * a_y).sum(-1)
    p, q, s = b11 * b11 + b12 * b12, b12 * b22, b22 * b22
    mean = 0.5 * (p + s)
    spread = torch.sqrt((0.5 * (p - s)) ** 2 + q * q)
    angle = 0.5 * torch.atan2(2.0 * q, p - s)
    major = torch.cos(angle)[:, None] * t1 + torch.sin(angle)[:, None] * t2
    minor = torch.linalg.cross(normals, major, dim=-1)
    lengths = torch.stack([mean + spread, (mean - spread).clamp_min(0.0)], dim=-1).sqrt()
    stretch = lengths.clamp(1.0 / max_stretch, max_stretch)
    return torch.stack([major, minor, normals], dim=-1), stretch


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    return (
        value.detach().cpu() if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value))
    )


def _check_options(stride: int, opacity: float, min_depth: float, max_depth: float) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must be in (0, 1), got {opacity!r}")
    if not (0.0 <= min_depth < max_depth):
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth!r}, {max_depth!r}")
