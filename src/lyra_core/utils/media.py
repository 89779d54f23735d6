"""Images people look at: PNG contact sheets, depth colour maps, GIF and MP4 clips.

All writers are atomic (:mod:`lyra_core.utils.atomic`): a reader sees the old file or the
new one, an existing file keeps its mode and group, and missing parent folders are created.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lyra_core.utils.atomic import atomic_path, atomic_write, write_text_atomic


def to_uint8(rgb: Tensor | np.ndarray) -> np.ndarray:
    """(..., H, W, 3) float image in [0, 1] -> uint8 numpy array (clipped)."""
    if isinstance(rgb, Tensor):
        rgb = rgb.detach().float().cpu().numpy()
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(
    depth: Tensor, alpha: Tensor | None = None, near: float | None = None, far: float | None = None
) -> np.ndarray:
    """Depth (..., H, W) or (..., H, W, 1) in meters -> (..., H, W, 3) uint8 turbo colour map.

    Pixels with alpha < 0.5 (nothing hit) are black. ``near``/``far`` default to the 2nd and
    98th percentile of the valid depths.
    """
    d = depth.detach().float().cpu()
    if d.shape[-1] == 1:
        d = d[..., 0]
    valid = torch.ones_like(d, dtype=torch.bool) if alpha is None else alpha.reshape(d.shape) > 0.5
    values = d[valid]
    if values.numel() == 0:
        return np.zeros((*d.shape, 3), dtype=np.uint8)
    lo = float(torch.quantile(values, 0.02)) if near is None else near
    hi = float(torch.quantile(values, 0.98)) if far is None else far
    scaled = ((d - lo) / max(hi - lo, 1e-6)).clamp(0, 1).numpy()
    flat = (scaled.reshape(-1, 1) * 255).astype(np.uint8)
    colours = cv2.applyColorMap(flat, cv2.COLORMAP_TURBO)[:, 0, ::-1].reshape(*d.shape, 3)
    return np.where(valid.numpy()[..., None], colours, 0).astype(np.uint8)


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None, gap: int = 4
) -> np.ndarray:
    """Tile images (each (H, W, 3) uint8, all the same size) into one grid, a row per sequence.

    Labels are drawn in the top-left corner of each row's first image.
    """
    if not rows or not rows[0]:
        raise ValueError("contact_sheet needs at least one image")
    height, width = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    sheet = np.full(
        (len(rows) * (height + gap) + gap, cols * (width + gap) + gap, 3), 255, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = gap + i * (height + gap), gap + j * (width + gap)
            sheet[y : y + height, x : x + width] = image
        if row_labels:
            _label(sheet, row_labels[i], gap + 4, gap + i * (height + gap) + 16)
    return sheet


def _label(image: np.ndarray, text: str, x: int, y: int) -> None:
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thickness)


def _prepare(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, its parent folder created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (:func:`~lyra_core.utils.atomic.write_text_atomic`),
    creating the parent folder."""
    return write_text_atomic(_prepare(path), text)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG."""
    path = _prepare(path)
    with atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")
    return path


def write_gif(path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write (H, W, 3) uint8 RGB frames as a looping GIF."""
    if not frames:
        raise ValueError("write_gif needs at least one frame")
    images = [Image.fromarray(f) for f in frames]
    path = _prepare(path)
    with atomic_write(path) as f:
        images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
    return path


def write_mp4(path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write (H, W, 3) uint8 RGB frames as an MPEG-4 video with OpenCV.

    Raises:
        RuntimeError: when OpenCV has no MPEG-4 encoder on this machine.
    """
    if not frames:
        raise ValueError("write_mp4 needs at least one frame")
    height, width = frames[0].shape[:2]
    path = _prepare(path)
    # OpenCV writes to a file name only (and picks the container from its extension).
    with atomic_path(path) as tmp:
        video = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not video.isOpened():
            raise RuntimeError("OpenCV could not open an MPEG-4 video writer")
        try:
            for frame in frames:
                video.write(np.ascontiguousarray(frame[..., ::-1]))
        finally:
            video.release()
    return path
