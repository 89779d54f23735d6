"""Which files the world node may touch: world files inside ``world_dir``, checkpoints inside
``checkpoint_dirs``.

Any participant on the node's DDS domain can call ``~/save_world`` and ``~/load_world``, so the
path in a request is a name inside the node's world folder, never a free path: an absolute
path, a ``..`` component, or a name whose resolved real path (symbolic links followed) leaves
the folder is refused with a :class:`PathRefusedError` saying why. ``allow_any_path`` turns the
confinement off (the node warns about it at start-up). The same rule confines the Lyra student
checkpoint a ``lyra_checkpoint`` parameter names to the ``checkpoint_dirs`` folders (plus
``shipped``, the student installed with the package).

Pure functions of paths (no ROS): :class:`WorldFiles` and :func:`check_checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from lyra_core.utils.errors import LyraError

__all__ = ["PathRefusedError", "WorldFiles", "check_checkpoint", "inside"]

SHIPPED = "shipped"
"""``lyra_checkpoint`` value naming the student installed with the package (always allowed)."""


class PathRefusedError(LyraError, ValueError):
    """A path a request or parameter gave leads outside the folders the node may use."""


def inside(path: Path, folder: Path) -> bool:
    """Whether the real path of ``path`` (links followed, ``..`` resolved) is ``folder``'s real
    path or below it. ``path`` need not exist."""
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    return real == root or root in real.parents


class WorldFiles:
    """World files of the node: names inside ``root`` (created on the first save).

    Args:
        root: The world folder; a relative one is taken from the current directory, once, here.
        allow_any_path: Accept absolute paths and names leading out of ``root`` too (relative
            names still start at ``root``).
    """

    def __init__(self, root: str | os.PathLike[str], allow_any_path: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.allow_any_path = allow_any_path

    def resolve(self, name: str, *, for_writing: bool = False) -> Path:
        """The path of world file ``name``.

        Args:
            name: A relative name such as ``world.ply`` or ``runs/a.ply`` (its folders must
                exist inside the world folder).
            for_writing: Create the world folder if it does not exist yet and the file goes
                straight into it.

        Raises:
            PathRefusedError: ``name`` is empty, absolute, holds ``..``, or resolves (through
                symbolic links) outside the world folder; never raised with ``allow_any_path``
                except for an empty name.
        """
        if not name or not name.strip() or "\x00" in name:
            raise PathRefusedError(f"refused: {name!r} is not a file name inside {self.root}")
        path = self.root / Path(name).expanduser() if self.allow_any_path else self._confined(name)
        if for_writing and path.parent == self.root:
            self.root.mkdir(parents=True, exist_ok=True)
        return path

    def _confined(self, name: str) -> Path:
        pure = PurePath(name)
        if pure.is_absolute() or name.startswith("~"):
            raise PathRefusedError(
                f"refused: {name!r} is an absolute path; give a name inside the world folder "
                f"{self.root} (world_dir), e.g. 'world.ply'"
            )
        if ".." in pure.parts:
            raise PathRefusedError(
                f"refused: {name!r} holds '..'; give a name inside the world folder {self.root}"
            )
        path = self.root / pure
        if path == self.root or not inside(path, self.root):
            raise PathRefusedError(
                f"refused: {name!r} leads outside the world folder {self.root} (through a "
                "symbolic link) or is the folder itself"
            )
        return path


def check_checkpoint(
    value: str, allowed: Sequence[str | os.PathLike[str]], allow_any_path: bool = False
) -> str:
    """Check that a ``lyra_checkpoint`` value names a folder inside one of ``allowed``.

    ``''`` (none) and ``shipped`` always pass; relative folders in ``allowed`` and ``value``
    are taken from the current directory; symbolic links are followed.

    Returns:
        ``value`` unchanged.

    Raises:
        PathRefusedError: the folder is outside every allowed folder (and not ``allow_any_path``).
    """
    if not value or value == SHIPPED or allow_any_path:
        return value
    folder = Path(value).expanduser()
    roots = [Path(root).expanduser() for root in allowed]
    if any(inside(folder, root) for root in roots):
        return value
    listed = ", ".join(str(root.absolute()) for root in roots) or "none"
    raise PathRefusedError(
        f"{value!r} is outside the allowed checkpoint folders ({listed}); add its folder to "
        f"checkpoint_dirs, or use '{SHIPPED}'"
    )
