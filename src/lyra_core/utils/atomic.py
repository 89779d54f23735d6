"""Atomic writes of files and folders: a reader sees the old content or the new, never a part.

Every writer in ``lyra_core`` (PLY worlds, images and videos, reports, checkpoints, data set
scenes) goes through this module, so there is one temporary-name pattern and one place that
cleans up after killed writers.

How a file is written (:func:`atomic_write`): the data goes into a hidden temporary file in the
target's folder, named ``.{name}.{12 hex digits}.lyra-tmp``; it is flushed and ``fsync``-ed,
given the existing target's permission bits and group (owner too when running as root), renamed
over the target with :func:`os.replace`, and the folder is ``fsync``-ed so the rename survives
a power cut. On any error, ``KeyboardInterrupt`` included, the temporary file is removed and the
target is untouched. A new file gets mode ``0o666 & ~umask`` (``0644`` under the usual umask).

Folders (:func:`write_folder_atomically`) are built in a hidden temporary sibling with the same
pattern; an existing folder is first renamed to ``.{name}.{12 hex digits}.lyra-old`` and deleted
once the new one is in place.

A process killed with ``SIGKILL`` (or a power cut) cannot clean up: it leaves its temporary
file or folder behind. The target is still intact, and :func:`sweep_stale_temp_files` removes
the leftovers. It only ever touches names of the pattern above (and the ``.{name}.ply.{hex}.tmp``
files of the PLY writer before this module existed); a ``.lyra-old`` folder whose target is
missing (killed between the two renames of a folder swap) is renamed back instead of deleted.

Limits: symbolic links are followed (the file they point to is replaced, the link stays); hard
links to the target keep the old content; ACLs and extended attributes are not copied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "STALE_TEMP_AGE_S",
    "atomic_path",
    "atomic_write",
    "is_temp_name",
    "sweep_stale_temp_files",
    "temp_name",
    "write_bytes_atomic",
    "write_folder_atomically",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

#: Age (seconds since the last change) after which writers that sweep on their own (the PLY
#: writer, checkpoint saving) treat a temporary file as left behind by a killed process. A live
#: writer changes its temporary file far more often than this.
STALE_TEMP_AGE_S = 600.0

_TEMP_TAG = "lyra-tmp"
_OLD_TAG = "lyra-old"
_TOKEN_HEX_DIGITS = 12
_TEMP_NAME = re.compile(
    rf"^\.(?P<target>.+)\.[0-9a-f]{{{_TOKEN_HEX_DIGITS}}}\.(?P<tag>{_TEMP_TAG}|{_OLD_TAG})$",
    re.DOTALL,
)
# Temporary files of the PLY writer before this module (".world.ply.<12 hex>.tmp").
_LEGACY_PLY_TEMP = re.compile(r"^\..+\.ply\.[0-9a-f]{12}\.tmp$", re.DOTALL)
# Longest target name kept whole in a temporary name (file names are limited to 255 bytes).
_MAX_NAME_IN_TEMP = 200
_FILE_MODES = ("wb", "w")


def temp_name(target_name: str, tag: str = _TEMP_TAG) -> str:
    """A fresh hidden temporary name for ``target_name``: ``.{name}.{12 hex digits}.lyra-tmp``.

    Args:
        target_name: the final file or folder name (no directory part).
        tag: ``"lyra-tmp"`` (work in progress) or ``"lyra-old"`` (a folder being replaced).
    """
    if tag not in (_TEMP_TAG, _OLD_TAG):
        raise ValueError(f"tag must be {_TEMP_TAG!r} or {_OLD_TAG!r}, got {tag!r}")
    name = target_name if tag == _OLD_TAG else target_name[:_MAX_NAME_IN_TEMP]
    return f".{name}.{secrets.token_hex(_TOKEN_HEX_DIGITS // 2)}.{tag}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a bare file name) is one of this module's temporary names."""
    return _TEMP_NAME.match(name) is not None


# ---------------------------------------------------------------------- files


def _resolve_target(path: Path) -> Path:
    """``path`` with a symbolic link at its end followed (so the link itself survives)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _existing_stat(target: Path) -> os.stat_result | None:
    """``stat`` of an existing target, ``None`` if there is none; refuses folders."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{target} is a folder, not a file")
    return st


def _keep_owner_and_mode(fd: int, keep: os.stat_result) -> None:
    """Give the open file ``fd`` the group (owner too when allowed) and mode bits of ``keep``.

    The group is set first: changing it can clear set-user/group-ID bits, which the mode then
    restores. What the process may not change (another user's group, a file system without
    permissions) is silently left as it is.
    """
    uid = keep.st_uid if os.geteuid() == 0 else -1
    with contextlib.suppress(OSError):
        os.fchown(fd, uid, keep.st_gid)
    with contextlib.suppress(OSError):
        os.fchmod(fd, stat.S_IMODE(keep.st_mode))


def _fsync_dir(folder: Path) -> None:
    """``fsync`` a folder so a rename in it is durable (skipped where folders cannot be)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove a file or folder tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_write(
    path: StrPath, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and, when the block ends cleanly, put it at ``path``.

    Usage::

        with atomic_write("world.ply") as f:
            f.write(data)

    See the module docstring for the steps. The parent folder must exist.

    Args:
        path: the target file.
        mode: ``"wb"`` (binary) or ``"w"`` (text).
        encoding: text encoding for ``"w"`` (default UTF-8); not allowed with ``"wb"``.
        newline: as for :func:`open`, text mode only.

    Yields:
        The open temporary file. Do not close it yourself.

    Raises:
        ValueError: for another ``mode``.
        IsADirectoryError: ``path`` is a folder.
        FileNotFoundError: the parent folder does not exist.
    """
    if mode not in _FILE_MODES:
        raise ValueError(f"mode must be one of {_FILE_MODES}, got {mode!r}")
    if mode == "w":
        encoding = encoding or "utf-8"
    elif encoding is not None or newline is not None:
        raise ValueError("encoding and newline only apply to text mode 'w'")
    target = _resolve_target(Path(os.fspath(path)))
    keep = _existing_stat(target)
    tmp = target.with_name(temp_name(target.name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    # Replacing a file: start private (0600) so the data is never more visible than the old
    # file's; the kept mode is applied before any byte is written.
    fd = os.open(tmp, flags, 0o600 if keep is not None else 0o666)
    try:
        if keep is not None:
            _keep_owner_and_mode(fd, keep)
        file = os.fdopen(fd, mode, encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        _remove_quietly(tmp)
        raise
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)


def write_bytes_atomic(path: StrPath, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`; returns ``path`` as a Path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(os.fspath(path))


def write_text_atomic(path: StrPath, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write` (newlines written as given)."""
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(os.fspath(path))


@contextlib.contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path for a library that can only write to a file name (e.g. OpenCV's
    ``VideoWriter``); when the block ends cleanly the file there is moved onto ``path``.

    The temporary path is ``.{name}.{hex}.lyra-tmp/{name}``: a hidden temporary folder holding
    a file with the target's own name, so libraries that pick a format from the extension see
    the right one. Owner, mode and durability are handled as in :func:`atomic_write`.

    Raises:
        FileNotFoundError: the block wrote nothing at the yielded path, or the parent folder
            does not exist.
    """
    target = _resolve_target(Path(os.fspath(path)))
    keep = _existing_stat(target)
    folder = target.with_name(temp_name(target.name))
    os.mkdir(folder, 0o700)
    tmp = folder / target.name
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            if keep is not None:
                _keep_owner_and_mode(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        _remove_quietly(folder)
    _fsync_dir(target.parent)


# ---------------------------------------------------------------------- folders


def _fsync_tree(folder: Path) -> None:
    """``fsync`` every file and folder under ``folder`` (so a rename of it is durable)."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def write_folder_atomically(
    folder: StrPath, write: Callable[[Path], None], *, overwrite: bool = True
) -> Path:
    """Create ``folder`` by ``write(tmp)`` into a hidden temporary sibling, then rename it.

    The temporary sibling is ``.{name}.{hex}.lyra-tmp``. An existing ``folder`` is renamed to
    ``.{name}.{hex}.lyra-old`` first and deleted only once the new one is in place (renamed
    back if the final rename fails), so readers see the old or the new folder, never a partial
    one. The new folder keeps an existing folder's mode and group; otherwise it gets
    ``0o777 & ~umask``. Files inside are ``fsync``-ed before the rename. The temporary folder
    is removed when ``write`` raises. Missing parent folders are created.

    Args:
        folder: the folder to create or replace.
        write: fills the (empty, existing) temporary folder it is given.
        overwrite: replace an existing ``folder``; when False an existing one is an error.

    Returns:
        ``folder`` as a :class:`Path`.

    Raises:
        NotADirectoryError: ``folder`` exists and is not a directory.
        FileExistsError: ``overwrite`` is False and ``folder`` exists (before or after
            writing); nothing is left behind.
    """
    folder = Path(os.fspath(folder))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    if not overwrite and folder.exists():
        raise FileExistsError(f"{folder} already exists")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(temp_name(folder.name))
    os.mkdir(tmp, 0o777)
    try:
        if folder.is_dir():
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                _keep_owner_and_mode(fd, os.stat(folder))
            finally:
                os.close(fd)
        write(tmp)
        _fsync_tree(tmp)
        _swap_in(tmp, folder, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(folder.parent)
    return folder


def _swap_in(new: Path, folder: Path, overwrite: bool) -> None:
    """Rename ``new`` onto ``folder``, moving an existing ``folder`` aside until it is done."""
    if not folder.exists():
        try:
            os.rename(new, folder)
        except OSError as e:  # another writer created it meanwhile (non-empty: ENOTEMPTY)
            if folder.exists():
                raise FileExistsError(f"{folder} appeared while it was being written") from e
            raise
        return
    if not overwrite:
        raise FileExistsError(f"{folder} appeared while it was being written")
    old = folder.with_name(temp_name(folder.name, _OLD_TAG))
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- clean-up


def _newest_mtime(path: Path) -> float:
    """Latest modification time (seconds) of ``path`` or, for a folder, anything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def sweep_stale_temp_files(folder: StrPath, *, older_than: float = 0.0) -> list[Path]:
    """Remove the temporary files and folders that killed writers left in ``folder``.

    Looks only at the entries of ``folder`` itself (not below it) named by this module's
    pattern, ``.{name}.{12 hex}.lyra-tmp`` or ``.lyra-old`` (and ``.{name}.ply.{12 hex}.tmp``,
    the PLY writer's name before this module); every other file is left alone. A
    ``.lyra-old`` folder whose ``name`` is missing (a folder swap killed between its two
    renames) is renamed back to ``name`` rather than removed. Best effort: an entry that
    cannot be removed is logged and skipped.

    With the default ``older_than=0`` everything matching is swept, including the temporary
    file of a save that is running right now (that save then fails; the target stays
    intact): call it when no writer is active in ``folder``, or pass ``older_than``.

    Args:
        folder: the folder to clean; a missing one is fine.
        older_than: only sweep entries unchanged for at least this many seconds (for a
            folder: its newest entry).

    Returns:
        The paths removed.
    """
    folder = Path(os.fspath(folder))
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    removed: list[Path] = []
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        legacy = _LEGACY_PLY_TEMP.match(entry.name) and entry.is_file(follow_symlinks=False)
        if entry.is_symlink() or not (match or legacy):
            continue
        path = Path(entry.path)
        try:
            if older_than > 0 and now - _newest_mtime(path) < older_than:
                continue
            if match and match["tag"] == _OLD_TAG and entry.is_dir():
                target = folder / match["target"]
                if not os.path.lexists(target):
                    os.rename(path, target)
                    logger.warning("restored %s from %s (a cut-short folder swap)", target, path)
                    continue
            if entry.is_dir():
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue  # removed by someone else meanwhile
        except OSError as e:
            logger.warning("could not remove stale temporary %s: %s", path, e)
            continue
        removed.append(path)
    return removed
