"""Training data for the Lyra student: procedural multi-trajectory scenes.

:mod:`lyra_core.data.layouts` draws random room and outdoor layouts and covers them with
Gaussians; :mod:`lyra_core.data.generator` generates scenes from them (input camera, the six Lyra
trajectories, 3D-cache renders, held-out views; CLI ``lyra generate`` or
``python -m lyra_core.data.generator``); :mod:`lyra_core.data.format` documents the on-disk
format and the splits, and reads and writes scenes (:func:`load_scene`, :func:`write_scene`,
:class:`ProceduralDataset`).

The layouts and the generator are imported lazily (``lyra_core.data.generate_scene`` works), so
that running the generator with ``python -m`` does not import it twice.
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

_LAZY_NAMES = {
    "GENERATOR_VERSION": "generator",
    "GeneratorConfig": "generator",
    "generate_scene": "generator",
    "generate_split": "generator",
    "write_generated_scene": "generator",
    "LAYOUT_KINDS": "layouts",
    "Layout": "layouts",
    "layout_gaussians": "layouts",
    "random_layout": "layouts",
}

__all__ = [
    "GENERATOR_VERSION",
    "LAYOUT_KINDS",
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
    """Lazy access to the layouts' and the generator's public names (module docstring)."""
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
