"""Helpers shared by the conversion modules: array coercion, message byte buffers, headers."""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from std_msgs.msg import Header
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def _to_numpy(name: str, value: ArrayLike | Sequence) -> np.ndarray:
    """Numpy view/copy of an array, a (CPU or GPU) tensor or a nested sequence."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be array-like, got {type(value).__name__}") from err


def _bytes_of(data: Any) -> np.ndarray:
    """``(N,)`` uint8 view of a message's ``data`` field (array.array, bytes or list)."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _byte_array(values: np.ndarray) -> array.array:
    """The bytes of a C-contiguous array as the ``array('B')`` rclpy stores for ``uint8[]``.

    Assigning an ``array.array`` skips rclpy's per-element check of lists and bytes.
    """
    return array.array("B", np.ascontiguousarray(values).tobytes())


def _copy_header(header: Header | None) -> Header:
    """A new ``Header`` equal to ``header`` (default: empty), so messages never share one."""
    if header is None:
        return Header()
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return out


def _rows(data: Any, height: int, step: int, row_bytes: int) -> np.ndarray:
    """``(height, row_bytes)`` contiguous uint8 rows of a buffer with ``step`` bytes per row."""
    raw = _bytes_of(data)
    return np.ascontiguousarray(raw.reshape(height, step)[:, :row_bytes])
