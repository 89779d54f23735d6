"""Settings of the training commands: dataclasses from YAML files (unknown keys and values of the
wrong type reported, not ignored), the shared ``--config/--steps/--out-dir`` options, and the
commands' handling of expected failures (one line on stderr, exit status 2; ``lyra-train`` and
``python -m lyra_core.training.train_student`` run without the ``lyra`` dispatcher)."""

from __future__ import annotations

import argparse
import os
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lyra_core.utils.errors import ConfigError

T = TypeVar("T")


def load_yaml_dataclass(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Build dataclass ``cls`` from the mapping in YAML file ``path``.

    Raises:
        ConfigError: no such file, not YAML, not a mapping, keys that are not fields of ``cls``
            (typos would otherwise silently fall back to defaults), or a value whose type does
            not fit its field (``steps: ten``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such settings file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not readable YAML ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if not _fits(value, hints.get(name, Any)):
            raise ConfigError(
                f"{path}: {name} must be {_type_name(hints[name])}, got {value!r} "
                f"({type(value).__name__})"
            )
    return cls(**data)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from YAML) fits a field annotated ``hint`` (simple types checked; an
    int fits a float field; other annotations accept anything)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    if hint is type(None):
        return value is None
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (str, dict, list):
        return isinstance(value, origin)
    return True


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        origin, getattr(origin, "__name__", str(origin))
    )


def training_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options of the training commands: ``--config FILE [--steps N] [--out-dir DIR]``."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, required=True, help="settings YAML file (see config/)"
    )
    parser.add_argument(
        "--steps", type=int, help="train to this many steps instead of the file's steps"
    )
    parser.add_argument("--out-dir", help="output folder instead of the file's out_dir")
    return parser


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` (with ``steps`` and ``out_dir`` fields) from ``args.config``, with
    the ``--steps`` and ``--out-dir`` overrides applied.

    Raises:
        ConfigError: see :func:`load_yaml_dataclass`; ``--steps`` below 1.
    """
    config = load_yaml_dataclass(cls, args.config)
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {args.steps}")
        config.steps = args.steps
    if args.out_dir is not None:
        config.out_dir = args.out_dir
    return config


def parse_training_args(cls: type[T], prog: str, doc: str | None, argv: list[str] | None) -> T:
    """``--config FILE [--steps N] [--out-dir DIR]`` -> the dataclass ``cls``, overrides applied
    (:func:`training_parser`, :func:`config_from_args`)."""
    return config_from_args(cls, training_parser(prog, doc).parse_args(argv))
