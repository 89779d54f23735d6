"""Helpers shared by the model folders (decoder, student, VAE, teacher) and the importers of
released checkpoints: atomic folder writes (re-exported from :mod:`lyra_core.utils.atomic`),
strict state-dict checks, and the ``weights_only`` reading of released torch pickles."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_core.utils.atomic import write_folder_atomically
from lyra_core.utils.errors import CheckpointError

__all__ = [
    "check_folder_weights",
    "check_released_weights",
    "check_state_dict",
    "default_device_dtype",
    "load_released_weights",
    "name_listing",
    "on_device",
    "write_folder_atomically",
]


def check_state_dict(
    model: nn.Module, shapes: Mapping[str, Sequence[int]], folder: str | os.PathLike[str]
) -> None:
    """Refuse weights whose names or shapes differ from ``model``'s state dict.

    Args:
        model: the module the weights are for.
        shapes: ``{name: shape}`` of the stored weights.
        folder: shown in the error message.

    Raises:
        CheckpointError: listing (the first few) missing, unexpected and mis-shaped weights.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(shapes[k])} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in shapes and tuple(shapes[k]) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shape mismatch {mismatched[:3]}" if mismatched else "",
            )
            if part
        )
        raise CheckpointError(f"checkpoint {folder} does not match its config: {details}")


def check_folder_weights(model: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Refuse the safetensors weights in ``folder`` (every ``*.safetensors`` file, read by their
    headers only) whose names or shapes differ from ``model``'s (:func:`check_state_dict`); a
    folder without safetensors files passes (the loader found its weights elsewhere).

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped weights.
    """
    from safetensors import safe_open

    folder = Path(folder)
    shapes: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safetensors file is not iterable
            shapes |= {name: weights.get_slice(name).get_shape() for name in names}
    if shapes:
        check_state_dict(model, shapes, folder)


def name_listing(names: Sequence[str], limit: int = 12) -> str:
    """``[a, b, ...]`` of the first ``limit`` names, with the total where some are left out
    (``[a, b, ... (40 in all)]``): the lists in checkpoint refusals."""
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > limit else ''}]"


def load_released_weights(
    path: str | os.PathLike[str], container: str, layout: str, mmap: bool = False
) -> dict[str, Tensor]:
    """Read a released torch pickle of weights with ``torch.load(weights_only=True)`` on the
    CPU: the dict under ``container`` (or the whole dict when it holds the weights directly).

    Args:
        path: the ``.pt`` file.
        container: the key of the weight dict (GEN3C: ``"model"``, DeepSpeed: ``"module"``).
        layout: what the refusal of a file without a weight dict says was expected.
        mmap: memory-map the file where its format allows (zip files; legacy files are read
            whole).

    Returns:
        ``{name: tensor}`` (a new dict).

    Raises:
        CheckpointError: no such file, not loadable with ``weights_only=True`` (truncated,
            corrupt, or holding objects other than tensors and containers), no weight dict,
            or entries that are not plain dense tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:  # legacy (non-zip) files cannot be memory-mapped
            if not mmap or "mmap" not in str(err):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors share no base class
        message = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"{path}: not a torch checkpoint of plain tensors ({message})"
        ) from err
    if isinstance(data, Mapping) and isinstance(data.get(container), Mapping):
        data = data[container]
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"{path}: expected a dict of weights ({layout})")
    bad = [
        str(k)
        for k, v in data.items()
        if not (isinstance(k, str) and isinstance(v, Tensor) and v.layout == torch.strided)
    ]
    if bad:
        raise CheckpointError(f"{path}: entries that are not plain tensors: {name_listing(bad)}")
    return dict(data)


def check_released_weights(
    state: Mapping[str, Tensor],
    expected: Mapping[str, tuple[int, ...]],
    unexpected: Sequence[str],
    source: str,
    network: str,
) -> None:
    """Refuse released weights that do not make ``network``: missing names (in ``expected``,
    not in ``state``), the ``unexpected`` ones the caller found, shapes other than
    ``expected``'s, then non-finite values.

    Args:
        state: ``{released name: tensor}``.
        expected: ``{released name: shape}`` of the network being imported into.
        unexpected: the names of ``state`` that belong to no weight of the network.
        source: the checkpoint, as the message names it.
        network: what the checkpoint should hold (``"Lyra-1's decoder"``).

    Raises:
        CheckpointError: ``"{source} is not {network}: missing [...]; unexpected [...];
            mis-shaped [...]"`` (the non-empty lists), or the names with non-finite values.
    """
    missing = sorted(set(expected) - set(state))
    mismatched = [
        f"{k} {tuple(v.shape)} (expected {expected[k]})"
        for k, v in sorted(state.items())
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} {name_listing(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", mismatched),
            )
            if names
        ]
        raise CheckpointError(f"{source} is not {network}: " + "; ".join(parts))
    nonfinite = sorted(k for k, v in state.items() if not torch.isfinite(v.float()).all())
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite values in {name_listing(nonfinite)}")


def default_device_dtype(
    device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a pipeline runs in: ``device`` (default CUDA when available) and
    ``dtype`` (default bf16 on CUDA, float32 elsewhere)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device, offload: bool) -> Iterator[nn.Module]:
    """Move ``model`` to ``device`` for the ``with`` block; with ``offload`` it goes back to the
    CPU afterwards (and CUDA's cache is emptied), so only the running model holds GPU memory."""
    model.to(device)
    try:
        yield model
    finally:
        if offload:
            model.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
