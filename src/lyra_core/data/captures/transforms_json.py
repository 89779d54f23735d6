"""nerfstudio / instant-ngp ``transforms.json`` captures (also the NeRF Blender
``transforms_*.json`` files).

What is read, per frame (a frame's own keys override the top-level ones):

* ``file_path``: the image, relative to the JSON file's folder. A path without a suffix gets
  ``.png`` (the Blender synthetic scenes). Frames whose image is missing are skipped with one
  warning; an image that exists but cannot be decoded is an error.
* ``transform_matrix``: ``4x4`` (or ``3x4``) camera-to-world in the OpenGL / Blender camera
  convention (x right, y up, z backward), converted to OpenCV (x right, y down, z forward) by
  flipping the camera's y and z axes. The world frame is kept as it is (nerfstudio's
  ``applied_transform`` is not undone).
* intrinsics: ``fl_x``/``fl_y`` or ``camera_angle_x``/``camera_angle_y`` (radians, over the full
  image width/height), ``cx``/``cy`` (default: the image centre), ``w``/``h`` (default: the
  image's size). nerfstudio and instant-ngp put pixel ``(0, 0)``'s centre at ``(0.5, 0.5)``
  (COLMAP's convention), so ``cx``/``cy`` are shifted by ``-0.5`` into the OpenCV convention of
  :class:`~lyra_core.geometry.cameras.Intrinsics`.
* distortion: ``k1``, ``k2``, ``k3``, ``p1``, ``p2`` (OpenCV's model; ``camera_model``
  ``OPENCV`` or ``PINHOLE``); the images are undistorted with OpenCV and the intrinsics replaced
  by those of the undistorted image. Fisheye and equirectangular models are rejected; ``k4`` is
  ignored (a fisheye coefficient in nerfstudio).
* ``depth_file_path`` (optional): a 16-bit PNG in millimetres, or a ``.npy`` array in meters;
  nerfstudio's top-level ``depth_unit_scale_factor`` (meters per stored unit, default ``1e-3``)
  applies to PNGs, and to ``.npy`` files when it is given. A missing depth file drops that
  frame's depth with a warning. Depth of another size with the image's aspect ratio is resized
  (nearest), as nerfstudio does.
* ``ply_file_path`` (optional, top level): initial points, ``x y z`` and ``red green blue``.
* ``time`` (optional, per frame): the frame's capture time (seconds, or D-NeRF's normalised
  ``[0, 1]``) becomes its ``stamp``; without it the stamp is the frame's index. Either every
  frame has a finite ``time`` or none has.

instant-ngp's ``aabb_scale``, ``scale`` and ``offset`` only place the scene in its unit cube and
are ignored: poses stay in the capture's own units (meters for metric captures).

With ``downscale=N`` images come from nerfstudio's ``images_N/`` folder beside the JSON file when
it holds the image (and ``w``/``h`` are given), otherwise the full image is undistorted and
resized to ``(W // N) x (H // N)``; the intrinsics follow (:meth:`Intrinsics.resize`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lyra_core.data.captures.common import (
    GL_TO_CV,
    Capture,
    CaptureFrame,
    SkipLog,
    check_downscale,
    check_pose,
    clean_depth,
    finish_frame,
    intrinsics_or_error,
    read_depth_file,
    read_rgb_file,
    shrunk_intrinsics,
)
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.utils.errors import CaptureError

__all__ = ["find_transforms_json", "read_point_ply", "read_transforms_json"]

TRANSFORMS_JSON = "transforms.json"

_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_INTRINSIC_KEYS = (
    "camera_model",
    "camera_angle_x",
    "camera_angle_y",
    "fl_x",
    "fl_y",
    "cx",
    "cy",
    "w",
    "h",
    "k1",
    "k2",
    "k3",
    "p1",
    "p2",
)
_DEFAULT_DEPTH_UNIT = 1e-3


def find_transforms_json(path: Path) -> Path | None:
    """The JSON file for ``path`` (the file itself or ``<folder>/transforms.json``), or None."""
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    candidate = path / TRANSFORMS_JSON
    return candidate if candidate.is_file() else None


def read_transforms_json(path: str | Path, *, downscale: int = 1, depth: bool = True) -> Capture:
    """Read a ``transforms.json`` capture (module docstring for the keys and conventions).

    Args:
        path: the JSON file or the folder holding ``transforms.json``.
        downscale: integer factor to shrink the images by (1: full size).
        depth: read ``depth_file_path`` maps where given (False: RGB only).

    Returns:
        The :class:`Capture`, frames sorted by ``file_path``; ``stamp`` is the frame's ``time``,
        or without one its index in that order (skipped frames keep their index).

    Raises:
        CaptureError: unreadable JSON, no frames, bad intrinsics or poses, undecodable images,
            images whose size differs from ``w``/``h``, or no frame with an image on disk.
    """
    downscale = check_downscale(downscale)
    path = Path(path)
    json_path = find_transforms_json(path)
    if json_path is None:
        hint = ""
        if path.is_dir() and sorted(path.glob("transforms_*.json")):
            names = ", ".join(p.name for p in sorted(path.glob("transforms_*.json")))
            hint = f" (it holds {names}: pass one of those files)"
        raise CaptureError(f"{path}: no {TRANSFORMS_JSON} found{hint}")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(f"{json_path}: cannot read the JSON file: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise CaptureError(f"{json_path}: expected an object with a 'frames' list")
    if not meta["frames"]:
        raise CaptureError(f"{json_path}: the 'frames' list is empty")
    root = json_path.parent
    for i, entry in enumerate(meta["frames"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_path"), str):
            raise CaptureError(f"{json_path}: frames[{i}] has no 'file_path' string")
        if "transform_matrix" not in entry:
            raise CaptureError(f"{json_path}: frames[{i}] ({entry['file_path']}) has no pose")
    entries = sorted(meta["frames"], key=lambda e: e["file_path"])
    stamps = _frame_times(entries, json_path)

    skips = SkipLog(str(json_path))
    depth_skips = SkipLog(str(json_path), "kept without depth")
    frames: list[CaptureFrame] = []
    for index, entry in enumerate(entries):
        name = entry["file_path"]
        image_path = _resolve_image(root, name)
        if image_path is None:
            skips.add("image file missing", name)
            continue
        camera = {**{k: meta[k] for k in _INTRINSIC_KEYS if k in meta}, **entry}
        small = _downscaled_image(root, image_path, camera, downscale)
        rgb = read_rgb_file(small or image_path, label=f"{json_path}: {name}")
        label = f"{json_path}: {name}"
        if small is None:
            intrinsics, distortion = _camera(camera, (rgb.shape[1], rgb.shape[0]), label)
        else:  # the size check is against the full-resolution w, h
            intrinsics, distortion = _camera(camera, None, label)
            intrinsics = shrunk_intrinsics(intrinsics, rgb, downscale, small)
        depth_map = None
        if depth and entry.get("depth_file_path"):
            depth_map = _read_depth(root, entry["depth_file_path"], meta, rgb.shape[:2], json_path)
            if depth_map is None:
                depth_skips.add("depth file missing", name)
        pose = check_pose(f"{json_path}: {name}", entry["transform_matrix"]) @ GL_TO_CV
        rgb, depth_map, intrinsics = finish_frame(
            rgb, depth_map, intrinsics, distortion, 1 if small else downscale, name
        )
        frames.append(CaptureFrame(rgb, intrinsics, pose, depth_map, stamps[index], name))
    skips.warn(len(entries))
    depth_skips.warn(len(entries))
    if not frames:
        raise CaptureError(
            f"{json_path}: no usable frame: none of the {len(entries)} image file(s) exist "
            f"(first: {root / entries[0]['file_path']})"
        )
    points = colors = None
    if meta.get("ply_file_path"):
        points, colors = read_point_ply(root / meta["ply_file_path"])
    return Capture(frames, points, colors, "transforms_json", skips.count, json_path)


def _frame_times(entries: list[dict[str, Any]], json_path: Path) -> list[float]:
    """Each frame's ``time`` (all frames have one or none does), else its index."""
    timed = ["time" in entry for entry in entries]
    if not any(timed):
        return [float(index) for index in range(len(entries))]
    if not all(timed):
        missing = entries[timed.index(False)]["file_path"]
        raise CaptureError(
            f"{json_path}: {sum(timed)} of {len(entries)} frames have a 'time', {missing} has "
            "none (give every frame a time or none)"
        )
    return [_number(entry, "time", f"{json_path}: {entry['file_path']}") for entry in entries]


def _resolve_image(root: Path, file_path: str) -> Path | None:
    path = root / file_path
    if path.is_file():
        return path
    if not path.suffix and path.with_name(path.name + ".png").is_file():
        return path.with_name(path.name + ".png")
    return None


def _downscaled_image(
    root: Path, image_path: Path, camera: Mapping[str, Any], downscale: int
) -> Path | None:
    """nerfstudio's pre-shrunk ``images_N/<file name>`` when it exists and ``w``/``h`` are known."""
    if downscale == 1 or "w" not in camera or "h" not in camera:
        return None
    candidate = root / f"images_{downscale}" / image_path.name
    return candidate if candidate.is_file() else None


def _number(camera: Mapping[str, Any], key: str, label: str) -> float:
    value = camera[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CaptureError(f"{label}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _camera(
    camera: Mapping[str, Any], image_size: tuple[int, int] | None, label: str
) -> tuple[Intrinsics, tuple[float, ...]]:
    """Full-resolution intrinsics (OpenCV pixel centres) and OpenCV distortion of one frame.

    Args:
        camera: the frame's keys over the top-level ones.
        image_size: ``(W, H)`` of the image read, checked against ``w``/``h``; None when ``w``
            and ``h`` are given and the image is a shrunk copy.
        label: the JSON file and frame, for messages.
    """
    model = str(camera.get("camera_model", "OPENCV")).upper()
    if model not in _PINHOLE_MODELS:
        raise CaptureError(
            f"{label}: camera_model {model!r} is not supported (pinhole models with OpenCV "
            f"distortion only: {', '.join(_PINHOLE_MODELS)})"
        )
    width = int(_number(camera, "w", label)) if "w" in camera else None
    height = int(_number(camera, "h", label)) if "h" in camera else None
    if image_size is not None:
        width = image_size[0] if width is None else width
        height = image_size[1] if height is None else height
        if (width, height) != image_size:
            raise CaptureError(
                f"{label}: image is {image_size[0]}x{image_size[1]} but w, h say {width}x{height}"
            )
    assert width is not None and height is not None
    fl_x = fl_y = None
    if "fl_x" in camera:
        fl_x = _number(camera, "fl_x", label)
    elif "camera_angle_x" in camera:
        fl_x = 0.5 * width / math.tan(0.5 * _number(camera, "camera_angle_x", label))
    if "fl_y" in camera:
        fl_y = _number(camera, "fl_y", label)
    elif "camera_angle_y" in camera:
        fl_y = 0.5 * height / math.tan(0.5 * _number(camera, "camera_angle_y", label))
    if fl_x is None and fl_y is None:
        raise CaptureError(f"{label}: no focal length (fl_x/fl_y or camera_angle_x/camera_angle_y)")
    fl_x = fl_y if fl_x is None else fl_x
    fl_y = fl_x if fl_y is None else fl_y
    cx = _number(camera, "cx", label) if "cx" in camera else width / 2.0
    cy = _number(camera, "cy", label) if "cy" in camera else height / 2.0
    intrinsics = intrinsics_or_error(label, fl_x, fl_y, cx - 0.5, cy - 0.5, width, height)
    coeffs = [
        _number(camera, key, label) if key in camera else 0.0 for key in ("k1", "k2", "p1", "p2")
    ]
    if "k3" in camera:
        coeffs.append(_number(camera, "k3", label))
    return intrinsics, tuple(coeffs)


def _read_depth(
    root: Path, file_path: str, meta: Mapping[str, Any], size: tuple[int, int], json_path: Path
) -> np.ndarray | None:
    path = root / file_path
    if not path.is_file():
        return None
    scale = meta.get("depth_unit_scale_factor")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0
    ):
        raise CaptureError(f"{json_path}: depth_unit_scale_factor must be > 0, got {scale!r}")
    png_scale = _DEFAULT_DEPTH_UNIT if scale is None else float(scale)
    depth = read_depth_file(path, png_scale, 1.0 if scale is None else float(scale))
    if depth.shape == size:
        return depth
    height, width = size
    if abs(depth.shape[1] / width - depth.shape[0] / height) > 0.02 * depth.shape[1] / width:
        raise CaptureError(
            f"{path}: depth is {depth.shape[1]}x{depth.shape[0]}, which does not fit the "
            f"{width}x{height} image (different aspect ratio)"
        )
    return clean_depth(cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST))


def read_point_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points of a point-cloud PLY: ``(N, 3)`` float32 ``x y z`` and ``(N, 3)`` uint8
    ``red green blue`` (None without colours).

    Raises:
        CaptureError: missing or unreadable file, no ``vertex`` element with ``x y z``.
    """
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"].data
        points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise CaptureError(f"{path}: cannot read the points (a PLY with x y z): {exc}") from None
    if not np.isfinite(points).all():
        raise CaptureError(f"{path}: points contain NaN or inf")
    names = vertex.dtype.names or ()
    if not {"red", "green", "blue"} <= set(names):
        return points, None
    colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    if colors.dtype.kind == "f":
        colors = np.clip(colors * 255.0 + 0.5, 0, 255)
    return points, colors.astype(np.uint8)
