"""Which earlier runs a student training run continues, and its cumulative step count.

A run's ``decoder:`` setting names a preset (:data:`DECODER_PRESETS`: a fresh decoder) or a
folder to start from: a decoder checkpoint of an earlier run
(``RUN/checkpoints/step_XXXXXXX/decoder``) or an exported student folder (with
``student.json``). When a run starts, ``lyra train`` writes ``lineage.json`` into its output
folder::

    {"config": "config/train_tiny_continue.yaml",     # the settings file, null if unknown
     "decoder": "outputs/train_tiny/checkpoints/step_0001000/decoder",
     "parents": [{"config": "config/train_tiny.yaml", "out_dir": "outputs/train_tiny",
                  "steps": 1000, "cumulative_steps": 1000}]}

``parents`` lists the earlier runs oldest first, each with the steps it had when the next one
started from it and the total up to there (``cumulative_steps``; null when some earlier run is
unknown: a decoder folder outside any run). ``lyra export`` copies the chain into the student's
training record with this run's ``cumulative_steps``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lyra_core.pipelines.student import STUDENT_CONFIG_NAME, StudentConfig
from lyra_core.training.checkpoints import checkpoint_step
from lyra_core.utils.atomic import write_text_atomic
from lyra_core.utils.errors import CheckpointError

LINEAGE_NAME = "lineage.json"
DECODER_PRESETS = ("tiny", "reference", "lyra1")
"""The ``decoder:`` settings that build a fresh decoder: the
:class:`~lyra_core.models.decoder.LyraDecoderConfig` class method of that name (``lyra1``:
Lyra-1's static decoder)."""


def cumulative_steps(parents: list[dict[str, Any]], steps: int | None) -> int | None:
    """``steps`` plus the last parent's ``cumulative_steps`` (None where either is unknown)."""
    if steps is None:
        return None
    if not parents:
        return steps
    before = parents[-1].get("cumulative_steps")
    return None if before is None else int(before) + steps


def decoder_parents(decoder: str) -> list[dict[str, Any]]:
    """The earlier runs behind a ``decoder:`` setting, oldest first (``[]`` for a preset).

    Raises:
        CheckpointError: a student folder whose ``student.json`` is unreadable.
    """
    if decoder in DECODER_PRESETS:
        return []
    folder = Path(decoder)
    if (folder / STUDENT_CONFIG_NAME).is_file():
        record = StudentConfig.from_pretrained(folder).training
        parents = list(record.get("parents", []))
        steps = record.get("steps")
        entry = {
            "config": record.get("config"),
            "student": str(folder),
            "steps": steps,
            "cumulative_steps": record.get("cumulative_steps", cumulative_steps(parents, steps)),
        }
        return [*parents, entry]
    step_folder = folder.parent
    if folder.name == "decoder" and step_folder.parent.name == "checkpoints":
        try:
            steps = checkpoint_step(step_folder)
        except ValueError:
            steps = None
        if steps is not None:
            run_dir = step_folder.parent.parent
            lineage = read_lineage(run_dir)
            parents = list(lineage["parents"])
            entry = {
                "config": lineage["config"],
                "out_dir": str(run_dir),
                "steps": steps,
                "cumulative_steps": cumulative_steps(parents, steps),
            }
            return [*parents, entry]
    return [{"decoder": str(folder), "steps": None, "cumulative_steps": None}]


def read_lineage(run_dir: Path) -> dict[str, Any]:
    """A run's ``lineage.json``; for runs from before it was written, rebuilt from the
    ``decoder`` of its ``train_config.yaml`` (``config`` null). A folder with neither is taken as
    a run from scratch of unknown settings.

    Raises:
        CheckpointError: an unreadable ``lineage.json``.
    """
    path = Path(run_dir) / LINEAGE_NAME
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if not (isinstance(data, dict) and isinstance(data.get("parents"), list)):
                raise ValueError("expected an object with a parents list")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise CheckpointError(f"{path}: unreadable run lineage ({err})") from err
        return {"config": data.get("config"), "parents": data["parents"]}
    settings_path = Path(run_dir) / "train_config.yaml"
    decoder = None
    if settings_path.is_file():
        try:
            settings = yaml.safe_load(settings_path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise CheckpointError(f"{settings_path}: unreadable run settings ({err})") from err
        decoder = settings.get("decoder") if isinstance(settings, dict) else None
    return {"config": None, "parents": decoder_parents(str(decoder)) if decoder else []}


def write_lineage(run_dir: Path, config_path: str | None, decoder: str) -> Path:
    """Write ``run_dir/lineage.json`` for a run started from ``decoder`` with the settings file
    ``config_path``; returns its path."""
    record = {"config": config_path, "decoder": decoder, "parents": decoder_parents(decoder)}
    path = Path(run_dir) / LINEAGE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def training_lineage(run_dir: Path, steps: int) -> dict[str, Any]:
    """The lineage fields of an exported student's training record after ``steps`` steps of
    the run in ``run_dir``: ``config``, ``cumulative_steps``, ``parents``."""
    lineage = read_lineage(run_dir)
    parents = lineage["parents"]
    return {
        "config": lineage["config"],
        "cumulative_steps": cumulative_steps(parents, steps),
        "parents": parents,
    }
