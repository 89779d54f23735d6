"""Weight files of the perceptual networks, read from local files only: ST-LPIPS from the
``stlpips-pytorch`` wheel, LPIPS v0.1 from the ``lpips`` linear layers plus torchvision's
ImageNet backbone (:func:`lpips_state_dict`)."""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from lyra_core.models.perceptual.networks import (
    _LPIPS_SLICE_STARTS,
    _SCALE,
    _SHIFT,
    STLPIPS_FILES,
    STLPIPS_PACKAGE,
    Backbone,
    _check_net,
)


def stlpips_weights_path(net: Backbone = "alex") -> Path:
    """The ST-LPIPS weight file of the installed ``stlpips-pytorch`` package.

    The package is located with :func:`importlib.util.find_spec`; none of its modules is
    imported.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: it is, but without the weight file.
    """
    _check_net(net)
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"ST-LPIPS weights come with the stlpips-pytorch package: "
            f"pip install --no-deps {STLPIPS_PACKAGE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "weights" / "vST0.0" / STLPIPS_FILES[net]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall the package: "
            f"pip install --no-deps --force-reinstall {STLPIPS_PACKAGE}"
        )
    return path


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} cannot be read as a torch state dict ({err})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return dict(state)


def lpips_state_dict(
    linear: Mapping[str, Tensor], backbone: Mapping[str, Tensor], net: Backbone = "alex"
) -> dict[str, Tensor]:
    """Combine LPIPS v0.1 linear layers and a torchvision backbone into our state dict.

    ``linear`` keeps its keys (``lin0.model.1.weight`` ..); torchvision's ``features.<i>.*``
    becomes ``net.slice<k>.<i>.*`` with the slice that holds layer i, its ``classifier.*``
    (unused by LPIPS) is dropped, and the input scaling gets LPIPS' constants. Other keys pass
    through unchanged, so that :meth:`PerceptualMetric.load_weights` reports them.
    """
    _check_net(net)
    starts = _LPIPS_SLICE_STARTS[net]
    where = {str(i): f"slice{k}" for k in range(1, 6) for i in range(starts[k - 1], starts[k])}
    state: dict[str, Tensor] = {
        "scaling_layer.shift": torch.tensor(_SHIFT).reshape(1, 3, 1, 1),
        "scaling_layer.scale": torch.tensor(_SCALE).reshape(1, 3, 1, 1),
    }
    state |= dict(linear)
    for key, value in backbone.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            continue
        if parts[0] == "features" and len(parts) == 3 and parts[1] in where:
            key = f"net.{where[parts[1]]}.{parts[1]}.{parts[2]}"
        state[key] = value
    return state
