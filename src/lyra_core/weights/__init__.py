"""Model weights shipped inside the package.

``student_tiny/``: the tiny Lyra student trained on CPU (a
:class:`lyra_core.pipelines.student.LyraStudent`
checkpoint folder: ``student.json``, ``vae/``, ``decoder/``). It is installed with the package
(setup.py ``package_data``; colcon installs the whole package folder); :func:`shipped_student_path`
returns None for an install without it. ``student_tiny_dynamic/``: the tiny dynamic student (a
:class:`lyra_core.pipelines.dynamic_student.DynamicLyraStudent` folder; time-conditioned, one
Gaussian set per wanted time), :func:`shipped_dynamic_student_path`. How they were trained and
how they compare: README, "Shipped models and how they compare".
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_STUDENT = "student_tiny"
"""Folder name of the shipped student, beside this file."""

SHIPPED_DYNAMIC_STUDENT = "student_tiny_dynamic"
"""Folder name of the shipped dynamic (4D) student, beside this file."""


def shipped_student_path() -> Path | None:
    """Folder of the shipped tiny student, or None when this install has none (no student.json).

    Only the presence of ``student.json`` is checked; loading validates the rest
    (:meth:`lyra_core.pipelines.student.LyraStudent.from_pretrained`).
    """
    return _shipped(SHIPPED_STUDENT)


def shipped_dynamic_student_path() -> Path | None:
    """Folder of the shipped tiny dynamic student, or None when this install has none."""
    return _shipped(SHIPPED_DYNAMIC_STUDENT)


def _shipped(name: str) -> Path | None:
    folder = Path(__file__).resolve().parent / name
    return folder if (folder / "student.json").is_file() else None


__all__ = [
    "SHIPPED_DYNAMIC_STUDENT",
    "SHIPPED_STUDENT",
    "shipped_dynamic_student_path",
    "shipped_student_path",
]
