"""The package's exceptions: one base class, :class:`LyraError`, and one subclass per kind of
failure a user can act on. Each also derives from :class:`ValueError` (bad input), so callers
that caught ``ValueError`` keep working; the message always names the file or input and the
problem."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = [
    "USAGE_ERROR",
    "CaptureError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LyraError",
    "PlyFormatError",
    "WorldBuildError",
    "error_message",
    "input_errors",
    "run_command",
]

USAGE_ERROR = 2
"""Exit status of a command's expected failures (bad options or bad input), as argparse uses."""


class LyraError(Exception):
    """Base class of the errors raised by ``lyra_core`` and ``lyra_ros`` for bad input."""


class CheckpointError(LyraError, ValueError):
    """A checkpoint folder or file is missing, incomplete, corrupt, or does not fit its config."""


class ConfigError(LyraError, ValueError):
    """A settings file is missing, not YAML, or holds unknown keys or values of the wrong type."""


class DataError(LyraError, ValueError):
    """A data folder or scene is missing or unreadable, or data-generation settings are invalid."""


class CaptureError(DataError):
    """A capture (transforms.json folder, COLMAP model, ROS 2 bag) is missing, unreadable or
    inconsistent: files, topics or frames absent, images of the wrong size, non-rigid or NaN
    poses, an unknown format, or no usable frame at all."""


class PlyFormatError(LyraError, ValueError):
    """A file is not a readable 3DGS PLY, or holds invalid Gaussians (NaN/inf, zero quaternions)."""


class WorldBuildError(LyraError, ValueError):
    """A world could not be built from the given inputs."""


def input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report bad input rather than a bug: :class:`LyraError`, missing,
    existing, mistyped or forbidden paths, and YAML syntax errors."""
    errors: tuple[type[BaseException], ...] = (
        LyraError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    )
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        return errors
    return (*errors, yaml.YAMLError)


def error_message(err: BaseException) -> str:
    """``err`` as one line: OS errors as ``strerror: filename``, other messages unwrapped."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        message = f"{err.strerror}: {err.filename}"
        if err.filename2 is not None:
            message += f" -> {err.filename2}"
    else:
        message = str(err) or type(err).__name__
    return " ".join(message.split())


def run_command(prog: str, command: Callable[[], int | None]) -> int:
    """Run a command's body and return its exit status. An expected failure
    (:func:`input_errors`) prints one line ``PROG: error: MESSAGE`` to stderr and returns
    :data:`USAGE_ERROR` instead of a traceback; other exceptions are bugs and propagate."""
    try:
        return int(command() or 0)
    except input_errors() as err:
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return USAGE_ERROR
