"""The package's exceptions: one base class, :class:`LyraError`, and one subclass per kind of
failure a user can act on. Each also derives from :class:`ValueError` (bad input), so callers
that caught ``ValueError`` keep working; the message always names the file or input and the
problem."""

from __future__ import annotations

__all__ = ["CheckpointError", "LyraError", "PlyFormatError", "WorldBuildError"]


class LyraError(Exception):
    """Base class of the errors raised by ``lyra_core`` and ``lyra_ros`` for bad input."""


class CheckpointError(LyraError, ValueError):
    """A checkpoint folder or file is missing, incomplete, corrupt, or does not fit its config."""


class PlyFormatError(LyraError, ValueError):
    """A file is not a readable 3DGS PLY, or holds invalid Gaussians (NaN/inf, zero quaternions)."""


class WorldBuildError(LyraError, ValueError):
    """A world could not be built from the given inputs."""
