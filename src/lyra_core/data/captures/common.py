"""What every capture reader shares: the frame and capture records, image and depth decoding,
undistortion, pose checks, skip accounting and the held-out split.

Conventions as in the rest of the package: ``camtoworld`` is a ``4x4`` camera-to-world pose in
the OpenCV camera convention (x right, y down, z forward), meters; intrinsics are OpenCV ones
with pixel centres at integer coordinates (:class:`~lyra_core.geometry.cameras.Intrinsics`);
depth is z along the optical axis in meters, ``0`` where unknown.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import check_rigid
from lyra_core.utils.errors import CaptureError

__all__ = [
    "HOLDOUT_EVERY",
    "Capture",
    "CaptureFrame",
    "SkipLog",
    "Undistorter",
    "check_pose",
    "finish_frame",
    "read_depth_file",
    "read_rgb_file",
    "split_holdout",
]

logger = logging.getLogger(__name__)

HOLDOUT_EVERY = 8
"""The standard split (LLFF, mip-NeRF 360, nerfstudio's ``eval_mode="interval"``): images
``0, 8, 16, ...`` of the sorted capture are held out for evaluation."""

BACKGROUND = (255, 255, 255)
"""Colour (RGB, 0-255) that images with an alpha channel are composited onto (nerfstudio's
Blender default: white)."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class CaptureFrame:
    """One posed image read from a capture (undistorted, at the requested resolution).

    The fields match :class:`lyra_core.mapping.PosedFrame`, which accepts them as they are:
    ``PosedFrame(**vars(frame))``.

    Attributes:
        rgb: (H, W, 3) uint8 colour.
        intrinsics: pinhole intrinsics of the ``W x H`` image (no distortion left).
        camtoworld: (4, 4) float64 camera-to-world pose, OpenCV camera convention, meters.
        depth: (H, W) float32 z-depth in meters, 0 where unknown; None when the capture has no
            depth for this frame.
        stamp: capture time in seconds: the header stamp for bags, the frame's ``time`` in a
            ``transforms.json`` that gives one, else the frame's index in the sorted capture.
        name: what to call the frame in messages: the image path relative to the capture
            folder for files, ``"<topic>@<stamp>"`` for bags.
    """

    rgb: np.ndarray
    intrinsics: Intrinsics
    camtoworld: np.ndarray
    depth: np.ndarray | None = None
    stamp: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        size = (self.intrinsics.height, self.intrinsics.width)
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise CaptureError(
                f"{self.name}: rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}"
            )
        if self.rgb.shape[:2] != size:
            raise CaptureError(
                f"{self.name}: image is {self.rgb.shape[1]}x{self.rgb.shape[0]} but its "
                f"intrinsics say {size[1]}x{size[0]}"
            )
        self.camtoworld = check_pose(self.name, self.camtoworld)
        if self.depth is not None and self.depth.shape != size:
            raise CaptureError(
                f"{self.name}: depth is {self.depth.shape[1]}x{self.depth.shape[0]} but the "
                f"image is {size[1]}x{size[0]}"
            )

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height


@dataclass(eq=False)
class Capture:
    """Everything read from one capture.

    Attributes:
        frames: the posed frames, sorted by image name (files) or by stamp (bags).
        points: (N, 3) float32 initial points in the world frame, meters (COLMAP's
            ``points3D``, nerfstudio's ``ply_file_path``), or None.
        colors: (N, 3) uint8 colours of ``points``, or None.
        source_format: ``"transforms_json"``, ``"colmap"`` or ``"rosbag"``.
        skipped: how many images were dropped with a warning (file missing, no pose).
        path: the file or folder that was read.
    """

    frames: list[CaptureFrame]
    points: np.ndarray | None = None
    colors: np.ndarray | None = None
    source_format: str = ""
    skipped: int = 0
    path: Path | None = None

    def split(self, every: int = HOLDOUT_EVERY) -> tuple[list[CaptureFrame], list[CaptureFrame]]:
        """``(train, heldout)`` by :func:`split_holdout` in the capture's order."""
        return split_holdout(self.frames, every)


FrameT = TypeVar("FrameT")


def split_holdout(
    frames: Sequence[FrameT], every: int = HOLDOUT_EVERY, sort_by: str | None = None
) -> tuple[list[FrameT], list[FrameT]]:
    """The standard split: every ``every``-th frame (indices ``0, every, 2 * every, ...``) held
    out, the rest for training.

    Args:
        frames: frames (anything; :class:`CaptureFrame` or ``PosedFrame`` need ``sort_by``'s
            attribute only when it is given).
        every: hold out one frame in ``every`` (``>= 2``).
        sort_by: ``"name"`` or ``"stamp"`` to sort first (files by name, bags by stamp, as the
            readers already return them); None keeps the given order.

    Returns:
        ``(train, heldout)``, each in the (sorted) order.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise ValueError(f"every must be an integer >= 2, got {every!r}")
    ordered = list(frames)
    if sort_by is not None:
        if sort_by not in ("name", "stamp"):
            raise ValueError(f"sort_by must be 'name', 'stamp' or None, got {sort_by!r}")
        ordered.sort(key=lambda f: getattr(f, sort_by))
    heldout = ordered[::every]
    train = [f for i, f in enumerate(ordered) if i % every]
    return train, heldout


class SkipLog:
    """Collects frames dropped for one reason and reports them in one warning."""

    def __init__(self, source: str, action: str = "skipped") -> None:
        self.source = source
        self.action = action
        self._reasons: dict[str, list[str]] = {}
        self._details: dict[str, str] = {}

    def add(self, reason: str, name: str, detail: str = "") -> None:
        """Count frame ``name`` under ``reason``; ``detail`` (the first per reason is shown)."""
        logger.debug("%s: %s %s: %s %s", self.source, self.action, name, reason, detail)
        self._reasons.setdefault(reason, []).append(name)
        if detail:
            self._details.setdefault(reason, detail)

    @property
    def count(self) -> int:
        return sum(len(names) for names in self._reasons.values())

    def warn(self, total: int) -> None:
        """One ``UserWarning`` per reason, naming the first few frames."""
        for reason, names in self._reasons.items():
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            detail = f"; first: {self._details[reason]}" if reason in self._details else ""
            warnings.warn(
                f"{self.source}: {self.action} {len(names)} of {total} image(s): {reason} "
                f"({shown}){detail}",
                stacklevel=3,
            )


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------

#: OpenGL / Blender camera axes (x right, y up, z backward) -> OpenCV (x right, y down,
#: z forward): ``camtoworld_cv = camtoworld_gl @ GL_TO_CV``.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def check_pose(name: str, matrix: np.ndarray | Sequence) -> np.ndarray:
    """A ``4x4`` rigid transform as float64, its rotation snapped to the nearest rotation.

    Accepts ``(4, 4)`` or ``(3, 4)`` (bottom row ``[0, 0, 0, 1]`` appended).

    Raises:
        CaptureError: naming ``name``: wrong shape, NaN/inf, or not rigid (scale, shear,
            reflection beyond :data:`~lyra_core.geometry.transforms.ROTATION_TOLERANCE`).
    """
    try:
        T = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CaptureError(f"{name}: pose is not a numeric matrix ({exc})") from None
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4):
        raise CaptureError(f"{name}: pose must be a 4x4 (or 3x4) matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise CaptureError(f"{name}: pose contains NaN or inf: {T.tolist()}")
    try:
        check_rigid("pose", torch.from_numpy(T))
    except ValueError as exc:
        raise CaptureError(f"{name}: {exc}") from None
    U, _, Vt = np.linalg.svd(T[:3, :3])
    T[:3, :3] = U @ Vt
    T[3] = (0.0, 0.0, 0.0, 1.0)
    return T


# --------------------------------------------------------------------------------------------
# Images and depth
# --------------------------------------------------------------------------------------------


def to_rgb8(image: np.ndarray, name: str, bgr: bool) -> np.ndarray:
    """Any decoded image -> (H, W, 3) uint8 RGB.

    Grey images are repeated over the channels, 16-bit ones scaled to 8 bits, float ones in
    [0, 1] scaled by 255; an alpha channel is composited onto :data:`BACKGROUND`.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.
        name: the file or topic, for messages.
        bgr: True if the channels are in OpenCV's BGR(A) order.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
        bgr = False
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise CaptureError(f"{name}: not a colour image (array of shape {image.shape})")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
    elif image.dtype.kind == "f":
        image = np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255)
    elif image.dtype != np.uint8:
        raise CaptureError(f"{name}: unsupported image data type {image.dtype}")
    image = image.astype(np.uint8, copy=False)
    if bgr:
        image = image[..., [2, 1, 0, 3]] if image.shape[2] == 4 else image[..., ::-1]
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        background = np.asarray(BACKGROUND, dtype=np.float32)
        blended = image[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
        image = np.clip(blended + 0.5, 0, 255)
    return np.ascontiguousarray(image, dtype=np.uint8)


def read_rgb_file(path: Path, label: str | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (:func:`to_rgb8`).

    Raises:
        CaptureError: the file cannot be decoded.
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CaptureError(f"{label or path}: cannot read the image file {path}")
    return to_rgb8(image, str(label or path), bgr=True)


def read_depth_file(path: Path, png_scale: float, npy_scale: float = 1.0) -> np.ndarray:
    """Read a depth map as (H, W) float32 meters, 0 where unknown (NaN, inf, <= 0).

    Args:
        path: a 16-bit PNG (or any single-channel image OpenCV reads) or a ``.npy`` array.
        png_scale: meters per PNG unit (``1e-3`` for millimetres).
        npy_scale: meters per ``.npy`` unit.

    Raises:
        CaptureError: unreadable file or not a single-channel map.
    """
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False).astype(np.float32) * np.float32(npy_scale)
        except (OSError, ValueError) as exc:
            raise CaptureError(f"cannot read the depth file {path}: {exc}") from None
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise CaptureError(f"cannot read the depth file {path}")
        depth = raw.astype(np.float32) * np.float32(png_scale)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise CaptureError(f"{path}: depth must be a single-channel (H, W) map, got {depth.shape}")
    return clean_depth(depth)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float32 copy with NaN, inf and non-positive values set to 0 (unknown)."""
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Undistortion and resizing
# --------------------------------------------------------------------------------------------


def has_distortion(coeffs: Sequence[float]) -> bool:
    return any(float(c) != 0.0 for c in coeffs)


class Undistorter:
    """Remaps images of a distorted camera onto a pinhole camera of the same size.

    The pinhole intrinsics are OpenCV's ``getOptimalNewCameraMatrix`` with ``alpha = 0``: every
    output pixel sees the scene (no black border), at the cost of cropping the image's edges.

    Args:
        intrinsics: the distorted camera's pinhole part (OpenCV pixel centres).
        coeffs: OpenCV distortion coefficients ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``.
    """

    def __init__(self, intrinsics: Intrinsics, coeffs: tuple[float, ...]) -> None:
        size = (intrinsics.width, intrinsics.height)
        K = intrinsics.matrix(torch.float64).numpy()
        D = np.asarray(coeffs, dtype=np.float64)
        new_K, _ = cv2.getOptimalNewCameraMatrix(K, D, size, 0.0, size)
        self.intrinsics = Intrinsics.from_matrix(new_K, *size)
        self._maps = cv2.initUndistortRectifyMap(K, D, None, new_K, size, cv2.CV_32FC1)

    def rgb(self, image: np.ndarray) -> np.ndarray:
        return cv2.remap(image, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        return cv2.remap(depth, *self._maps, cv2.INTER_NEAREST, borderValue=0.0)


@functools.lru_cache(maxsize=16)
def undistorter(intrinsics: Intrinsics, coeffs: tuple[float, ...]) -> Undistorter:
    """Cached :class:`Undistorter` (one per camera and image size)."""
    return Undistorter(intrinsics, coeffs)


def finish_frame(
    rgb: np.ndarray,
    depth: np.ndarray | None,
    intrinsics: Intrinsics,
    distortion: Sequence[float],
    downscale: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray | None, Intrinsics]:
    """Undistort (when ``distortion`` is non-zero) and downscale one image and its depth.

    Args:
        rgb: (H, W, 3) uint8 image as read.
        depth: (H, W) float32 meters registered to ``rgb``, or None.
        intrinsics: the camera of ``rgb`` (same ``W x H``).
        distortion: OpenCV coefficients ``(k1, k2, p1, p2[, k3, ...])``; empty or all zero for
            none.
        downscale: integer factor (1: keep); the output is ``(W // n) x (H // n)``, colour
            area-averaged, depth nearest.
        name: the frame, for messages.

    Returns:
        ``(rgb, depth, intrinsics)`` of the pinhole image at the output size.
    """
    height, width = rgb.shape[:2]
    if (width, height) != (intrinsics.width, intrinsics.height):
        raise CaptureError(
            f"{name}: image is {width}x{height} but the camera is "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    if depth is not None and depth.shape != (height, width):
        raise CaptureError(
            f"{name}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
            f"{width}x{height} (depth must be registered to the colour image)"
        )
    if has_distortion(distortion):
        remap = undistorter(intrinsics, tuple(float(c) for c in distortion))
        rgb = remap.rgb(rgb)
        depth = None if depth is None else remap.depth(depth)
        intrinsics = remap.intrinsics
    if downscale > 1:
        size = (max(1, width // downscale), max(1, height // downscale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        if depth is not None:
            depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
        intrinsics = intrinsics.resize(*size)
    return np.ascontiguousarray(rgb), depth, intrinsics


def shrunk_intrinsics(full: Intrinsics, rgb: np.ndarray, downscale: int, path: Path) -> Intrinsics:
    """Intrinsics of a pre-shrunk copy (``images_N``) of a ``full``-size image.

    Raises:
        CaptureError: the copy's size is not ``full``'s divided by ``downscale`` (to a pixel).
    """
    height, width = rgb.shape[:2]
    if abs(width - full.width / downscale) >= 1 or abs(height - full.height / downscale) >= 1:
        raise CaptureError(
            f"{path}: image is {width}x{height}, expected about "
            f"{full.width / downscale:g}x{full.height / downscale:g} "
            f"({full.width}x{full.height} shrunk {downscale} times)"
        )
    return full.resize(width, height)


def check_downscale(downscale: object) -> int:
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise CaptureError(f"downscale must be an integer >= 1, got {downscale!r}")
    return downscale


def intrinsics_or_error(
    name: str, fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> Intrinsics:
    """:class:`Intrinsics`, with a bad value reported as :class:`CaptureError` naming ``name``."""
    try:
        if not all(math.isfinite(float(v)) for v in (fx, fy, cx, cy)):
            raise ValueError(f"non-finite intrinsics fx={fx} fy={fy} cx={cx} cy={cy}")
        return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(width), int(height))
    except (TypeError, ValueError) as exc:
        raise CaptureError(f"{name}: bad camera intrinsics: {exc}") from None
