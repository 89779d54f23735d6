"""Shared by the benchmark scripts: write a result JSON atomically."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(folder: Path, name: str, report: dict) -> Path:
    """Write ``report`` to ``folder/name`` (temp file, then rename) and say where."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
