"""Helpers shared by the model folders (decoder, student): atomic folder writes and strict
state-dict checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import nn

from lyra_core.utils.errors import CheckpointError


def write_folder_atomically(folder: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create ``folder`` by ``write(tmp)`` into a hidden temporary sibling, then rename it.

    An existing ``folder`` is moved aside first and deleted only once the new one is in place
    (restored if the final rename fails), so readers see the old or the new folder, never a
    partial one. The temporary folder is removed when ``write`` raises.

    Returns:
        ``folder`` as a :class:`Path`.

    Raises:
        NotADirectoryError: ``folder`` exists and is not a directory.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(tmp)
        _swap_in(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Rename ``new`` onto ``folder``, moving an existing ``folder`` aside until it is done."""
    if not folder.exists():
        os.rename(new, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent)) / "old"
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except OSError:
        os.rename(old, folder)
        raise
    finally:
        shutil.rmtree(old.parent, ignore_errors=True)


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
