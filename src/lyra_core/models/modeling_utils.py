"""Helpers shared by the model folders (decoder, student): atomic folder writes (re-exported
from :mod:`lyra_core.utils.atomic`) and strict state-dict checks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from torch import nn

from lyra_core.utils.atomic import write_folder_atomically
from lyra_core.utils.errors import CheckpointError

__all__ = ["check_state_dict", "write_folder_atomically"]


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
