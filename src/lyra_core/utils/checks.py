"""Input checks shared by the core: clear ``ValueError`` messages that name the field."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def check_finite(name: str, value: Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` if ``value`` holds NaN or inf."""
    if value.numel() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_shape(name: str, value: Tensor, shape: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``value.shape`` matches ``shape`` (``None`` = any size)."""
    ok = value.dim() == len(shape) and all(
        want is None or want == got for want, got in zip(shape, value.shape, strict=True)
    )
    if not ok:
        pretty = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {pretty}, got {tuple(value.shape)}")


def check_positive_number(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_image_size(width: int, height: int) -> None:
    """Raise ``ValueError`` unless width and height are positive integers."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def as_float_tensor(value: Tensor | np.ndarray | Sequence, like: Tensor | None = None) -> Tensor:
    """Convert ``value`` to a floating tensor (dtype/device of ``like`` if given, else float32)."""
    if isinstance(value, Tensor):
        if like is not None:
            return value.to(dtype=like.dtype, device=like.device)
        return value if value.is_floating_point() else value.float()
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)


def check_trailing(name: str, value: Tensor, trailing: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` has shape ``(..., *trailing)``."""
    n = len(trailing)
    if value.dim() < n or tuple(value.shape[-n:]) != trailing:
        want = "(..., " + ", ".join(str(s) for s in trailing) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
