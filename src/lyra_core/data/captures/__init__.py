"""Posed captures from disk: nerfstudio / instant-ngp ``transforms.json`` folders, COLMAP sparse
models and ROS 2 bags, read into :class:`CaptureFrame` records (undistorted pinhole images,
OpenCV camera-to-world poses in meters, optional registered depth in meters).

:func:`load_capture` detects the format and hands its options to the reader:

* :func:`~lyra_core.data.captures.transforms_json.read_transforms_json`: ``downscale``, ``depth``.
* :func:`~lyra_core.data.captures.colmap.read_colmap`: ``image_dir``, ``downscale``.
* :func:`~lyra_core.data.captures.rosbag.read_rosbag`: ``image_topic``, ``depth_topic``,
  ``camera_info_topic``, ``world_frame``, ``camera_frame``, ``downscale``, ``stride``, ...

:func:`split_holdout` is the standard evaluation split (every 8th image held out).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from lyra_core.data.captures.colmap import find_colmap_model, read_colmap
from lyra_core.data.captures.common import (
    HOLDOUT_EVERY,
    Capture,
    CaptureFrame,
    split_holdout,
)
from lyra_core.data.captures.rosbag import find_bag, read_rosbag
from lyra_core.data.captures.transforms_json import find_transforms_json, read_transforms_json
from lyra_core.utils.errors import CaptureError

__all__ = [
    "CAPTURE_FORMATS",
    "HOLDOUT_EVERY",
    "Capture",
    "CaptureError",
    "CaptureFrame",
    "detect_capture_format",
    "load_capture",
    "read_colmap",
    "read_rosbag",
    "read_transforms_json",
    "split_holdout",
]

CAPTURE_FORMATS = {
    "transforms_json": read_transforms_json,
    "colmap": read_colmap,
    "rosbag": read_rosbag,
}
"""Format name -> reader."""


def detect_capture_format(path: str | Path) -> str:
    """The format of the capture at ``path``: a key of :data:`CAPTURE_FORMATS`.

    * ``transforms_json``: a ``.json`` file, or a folder holding ``transforms.json``.
    * ``colmap``: a sparse-model folder (``cameras``, ``images``, ``points3D`` as ``.bin`` or
      ``.txt``) or a project folder with ``sparse/0``, ``sparse`` or ``colmap/sparse/0``.
    * ``rosbag``: a ``.mcap`` or ``.db3`` file, a folder with ``metadata.yaml``, or a folder
      holding one ``.mcap``/``.db3`` file.

    Raises:
        CaptureError: ``path`` does not exist or is none of these.
    """
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"{path}: no such file or folder")
    if find_transforms_json(path) is not None:
        return "transforms_json"
    if find_bag(path) is not None:
        return "rosbag"
    if find_colmap_model(path) is not None:
        return "colmap"
    hint = ""
    if path.is_dir() and sorted(path.glob("transforms_*.json")):
        names = ", ".join(p.name for p in sorted(path.glob("transforms_*.json")))
        hint = f" (it holds {names}: pass one of those files)"
    raise CaptureError(
        f"{path}: unknown capture format{hint}; expected a folder with transforms.json, a COLMAP "
        "model or project folder (sparse/0), or a ROS 2 bag (.mcap, .db3, folder with "
        "metadata.yaml)"
    )


def load_capture(path: str | Path, format: str | None = None, **options: Any) -> Capture:
    """Read the posed capture at ``path`` with the reader of its format.

    Args:
        path: see :func:`detect_capture_format`.
        format: a key of :data:`CAPTURE_FORMATS` to skip detection.
        **options: keyword arguments of that format's reader (module docstring); ``None``
            values are left to the reader's default.

    Raises:
        CaptureError: unknown format, an option the reader does not take, or any error of the
            reader (each names the file or topic).
    """
    if format is None:
        format = detect_capture_format(path)
    if format not in CAPTURE_FORMATS:
        raise CaptureError(
            f"unknown capture format {format!r} (known: {', '.join(CAPTURE_FORMATS)})"
        )
    reader = CAPTURE_FORMATS[format]
    accepted = [
        name
        for name, p in inspect.signature(reader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CaptureError(
            f"{path}: option(s) {', '.join(unknown)} do not apply to a {format} capture "
            f"(options: {', '.join(accepted)})"
        )
    return reader(path, **{k: v for k, v in options.items() if v is not None})
