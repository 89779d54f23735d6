"""Training data for the Lyra student: procedural multi-trajectory scenes.

:mod:`lyra_core.data.procedural` generates scenes (random layout, input camera, the six Lyra
trajectories, 3D-cache renders, held-out views; CLI ``python -m lyra_core.data.procedural``);
:mod:`lyra_core.data.format` documents the on-disk format and the splits, and reads and writes
scenes (:func:`load_scene`, :func:`write_scene`, :class:`ProceduralDataset`).

The generator is imported lazily (``lyra_core.data.generate_scene`` works), so that running it
with ``python -m`` does not import it twice.
"""

from __future__ import annotations

import importlib
from typing import Any

from lyra_core.data.format import (
    SPLIT_SEED_RANGES,
    SPLITS,
    ProceduralDataset,
    SceneSample,
    ViewSet,
    list_scenes,
    load_scene,
    scene_dirname,
    split_of_seed,
    split_seeds,
    write_scene,
)

_PROCEDURAL_NAMES = (
    "GENERATOR_VERSION",
    "GeneratorConfig",
    "Layout",
    "generate_scene",
    "generate_split",
    "layout_gaussians",
    "random_layout",
    "write_generated_scene",
)

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "SPLIT_SEED_RANGES",
    "GeneratorConfig",
    "Layout",
    "ProceduralDataset",
    "SceneSample",
    "ViewSet",
    "generate_scene",
    "generate_split",
    "layout_gaussians",
    "list_scenes",
    "load_scene",
    "random_layout",
    "scene_dirname",
    "split_of_seed",
    "split_seeds",
    "write_generated_scene",
    "write_scene",
]


def __getattr__(name: str) -> Any:
    """Lazy access to the generator's public names (see the module docstring)."""
    if name in _PROCEDURAL_NAMES:
        return getattr(importlib.import_module(".procedural", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
