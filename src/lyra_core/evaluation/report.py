"""The ``lyra eval`` report: per-method means, a markdown table, the run's environment and the
three output files (``metrics.json``, ``metrics.md``, ``heldout.png``).

``metrics.json`` holds (see :func:`lyra_core.evaluation.evaluate.evaluate`):

- ``date``, ``device`` (what the methods ran on: ``"cpu"`` or ``"cuda:0 (<GPU name>)"``),
  ``machine``, ``torch``;
- ``data``: split, scene count, held-out views per scene;
- ``perceptual``: the perceptual metric's name (or null), ``prune_ratio_override``: the
  ``--prune-ratio`` option (null: each decoder's configured ratio), ``control_seed``;
- ``methods``: a record per method (:func:`lyra_core.evaluation.evaluate.student_record`,
  :func:`lyra_core.evaluation.evaluate.control_record`; ``{}`` for the 3D cache);
- ``summary``: the mean of every metric over scenes, per method;
- ``per_scene``: every method's metrics per scene.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyra_core.utils.media import contact_sheet, write_png, write_text

__all__ = [
    "device_description",
    "environment",
    "markdown_table",
    "summarize",
    "write_report",
]

COLUMN_TITLES: dict[str, str] = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "psnr_covered": "PSNR cache-covered ↑",
    "psnr_uncovered": "PSNR cache-empty ↑",
    "uncovered_fraction": "empty share",
    "input_rgb_psnr": "input-view colours (dB) ↑",
    "input_depth_error": "input-view depth error ↓",
    "gaussians": "Gaussians",
}
"""Table column per metric; any other metric (a perceptual distance) is titled ``<name> ↓``."""


def summarize(per_scene: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean of every metric over scenes, per method (a metric missing in some scenes is
    averaged over the others; the ``scene`` name is not a metric)."""
    summary = {}
    for name, scores in per_scene.items():
        keys = dict.fromkeys(k for s in scores for k in s if k != "scene")
        summary[name] = {k: float(np.mean([s[k] for s in scores if k in s])) for k in keys}
    return summary


def markdown_table(summary: dict[str, dict[str, float]], methods: dict[str, dict]) -> str:
    """A markdown table: a row per method, its parameter count, a column per metric.

    Args:
        summary: :func:`summarize`'s means.
        methods: the method records (``parameters`` is read; absent shows ``-``).
    """
    metrics = list(dict.fromkeys(m for scores in summary.values() for m in scores))
    header = ["method", "parameters"] + [COLUMN_TITLES.get(m, f"{m} ↓") for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in summary.items():
        params = methods.get(name, {}).get("parameters")
        cells = [name, f"{params:,}" if params else "-"]
        cells += [_cell(m, scores.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "gaussians":
        return f"{value:,.0f}"
    return f"{value:.2f}" if "psnr" in metric else f"{value:.4f}"


def device_description(device: torch.device | str) -> str:
    """``"cpu"``, or a CUDA device with its name, e.g. ``"cuda:0 (NVIDIA H200)"``."""
    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = torch.cuda.current_device() if device.index is None else device.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def environment(device: torch.device | str) -> dict[str, str]:
    """Where the evaluation ran: date (UTC), device, CPU architecture and torch version."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_description(device),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }


def write_report(
    out_dir: Path, report: dict[str, Any], sheet_rows: list[list[np.ndarray]], labels: list[str]
) -> None:
    """Write ``metrics.json`` (``report``), ``metrics.md`` (:func:`markdown_table`) and
    ``heldout.png`` (the contact sheet of ``sheet_rows``, uint8 images, one label per row)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    write_text(out_dir / "metrics.md", markdown_table(report["summary"], report["methods"]))
    write_png(out_dir / "heldout.png", contact_sheet(sheet_rows, labels))
