"""Model weights shipped inside the package.

``student_tiny/``: the tiny Lyra student trained on CPU (a
:class:`lyra_core.pipelines.student.LyraStudent`
checkpoint folder: ``student.json``, ``vae/``, ``decoder/``). It is installed with the package
(setup.py ``package_data``; colcon installs the whole package folder); :func:`shipped_student_path`
returns None for an install without it. How it was trained and how it compares: README,
"Shipped models and how they compare".
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_STUDENT = "student_tiny"
"""Folder name of the shipped student, beside this file."""


def shipped_student_path() -> Path | None:
    """Folder of the shipped tiny student, or None when this install has none (no student.json).

    Only the presence of ``student.json`` is checked; loading validates the rest
    (:meth:`lyra_core.pipelines.student.LyraStudent.from_pretrained`).
    """
    folder = Path(__file__).resolve().parent / SHIPPED_STUDENT
    return folder if (folder / "student.json").is_file() else None


__all__ = ["SHIPPED_STUDENT", "shipped_student_path"]
