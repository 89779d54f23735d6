"""Dataclass settings from YAML files, with unknown keys reported instead of ignored."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


def load_yaml_dataclass(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Build dataclass ``cls`` from the mapping in YAML file ``path``.

    Raises:
        ValueError: the file holds keys that are not fields of ``cls`` (typos would otherwise
            silently fall back to defaults).
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown} for {cls.__name__}")
    return cls(**data)


def parse_training_args(cls: type[T], prog: str, doc: str | None, argv: list[str] | None) -> T:
    """``--config FILE [--steps N] [--out-dir DIR]`` -> the dataclass ``cls`` (which has
    ``steps`` and ``out_dir`` fields), overrides applied."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="settings YAML")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--out-dir", help="override the output folder")
    args = parser.parse_args(argv)
    config = load_yaml_dataclass(cls, args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.out_dir is not None:
        config.out_dir = args.out_dir
    return config
