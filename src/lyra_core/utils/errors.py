"""The package's exceptions: one base class, :class:`LyraError`, and one subclass per kind of
failure a user can act on. Each also derives from :class:`ValueError` (bad input), so callers
that caught ``ValueError`` keep working; the message always names the file or input and the
problem."""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LyraError",
    "PlyFormatError",
    "WorldBuildError",
]


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
