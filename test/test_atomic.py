"""Tests for lyra_core.utils.atomic and the writers built on it (PLY, media, reports, checkpoints,
scene folders): all-or-nothing writes, kept permissions, and clean-up after a kill -9."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.training.checkpoints import TRAINER_STATE_NAME, save_trainer_state
from lyra_core.utils.atomic import (
    STALE_TEMP_AGE_S,
    atomic_path,
    atomic_write,
    is_temp_name,
    sweep_stale_temp_files,
    temp_name,
    write_bytes_atomic,
    write_folder_atomically,
    write_text_atomic,
)
from lyra_core.utils.media import write_gif, write_png, write_text
from raw_scenes import make_scene

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from report import write_report  # noqa: E402


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def other_group() -> int | None:
    """A group id this process may give its files, other than the one they get by default."""
    if os.geteuid() == 0:
        return 1 if os.getegid() != 1 else 2
    groups = [g for g in os.getgroups() if g != os.getegid()]
    return groups[0] if groups else None


def _save_trainer_pt(path: Path) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    save_trainer_state(path.parent, 7, optimizer)


# Every writer of a file, as (name of the file it writes, write it).
WRITERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "bytes": ("a.bin", lambda p: write_bytes_atomic(p, b"new")),
    "text": ("a.txt", lambda p: write_text_atomic(p, "new")),
    "ply": ("world.ply", lambda p: write_ply(p, make_scene(4))),
    "png": ("a.png", lambda p: write_png(p, np.zeros((4, 4, 3), np.uint8))),
    "gif": ("a.gif", lambda p: write_gif(p, [np.zeros((4, 4, 3), np.uint8)], fps=5)),
    "media_text": ("m.json", lambda p: write_text(p, "{}")),
    "report": ("r.json", lambda p: write_report(p.parent, p.name, {"a": 1})),
    "trainer_state": (TRAINER_STATE_NAME, _save_trainer_pt),
}


# ---------------------------------------------------------------------- permissions (defect 4)


@pytest.mark.parametrize("writer", WRITERS)
def test_replacing_a_file_keeps_its_mode(tmp_path: Path, writer: str) -> None:
    name, write = WRITERS[writer]
    target = tmp_path / name
    target.write_bytes(b"old")
    target.chmod(0o640)
    write(target)
    assert target.read_bytes() != b"old"
    assert mode_of(target) == 0o640
    assert names(tmp_path) == [name]


@pytest.mark.parametrize("writer", WRITERS)
def test_replacing_a_file_keeps_its_group(tmp_path: Path, writer: str) -> None:
    gid = other_group()
    if gid is None:
        pytest.skip("this user belongs to no second group")
    name, write = WRITERS[writer]
    target = tmp_path / name
    target.write_bytes(b"old")
    os.chown(target, -1, gid)
    target.chmod(0o664)
    write(target)
    assert target.read_bytes() != b"old"
    assert target.stat().st_gid == gid
    assert mode_of(target) == 0o664


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_new_file_mode_honours_umask(tmp_path: Path, umask, writer: str, mask: int) -> None:
    name, write = WRITERS[writer]
    umask(mask)
    write(tmp_path / name)
    assert mode_of(tmp_path / name) == 0o666 & ~mask


def test_set_group_id_bit_is_kept(tmp_path: Path) -> None:
    gid = other_group()
    if gid is None:
        pytest.skip("this user belongs to no second group")
    target = tmp_path / "tool"
    target.write_bytes(b"old")
    os.chown(target, -1, gid)
    target.chmod(0o2750)  # changing a file's group clears this bit: it must be set after
    write_bytes_atomic(target, b"new")
    assert mode_of(target) == 0o2750 and target.stat().st_gid == gid


def test_folder_keeps_mode_and_new_folder_honours_umask(tmp_path: Path, umask) -> None:
    umask(0o022)
    folder = tmp_path / "ckpt"
    write_folder_atomically(folder, lambda tmp: (tmp / "a").write_text("1"))
    assert mode_of(folder) == 0o755  # was 0o700 with tempfile.mkdtemp
    folder.chmod(0o750)
    write_folder_atomically(folder, lambda tmp: (tmp / "a").write_text("2"))
    assert mode_of(folder) == 0o750 and (folder / "a").read_text() == "2"
    assert names(tmp_path) == ["ckpt"]


# ---------------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_error_mid_write_keeps_old_content_and_leaves_no_temp(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_write(target) as f:
        f.write(b"partial new content")
        f.flush()
        assert [p for p in names(tmp_path) if is_temp_name(p)]  # the data goes to a temp file
        raise error
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["a.bin"]


def test_atomic_write_text_mode_and_bad_arguments(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "t.txt", "w") as f:
        f.write("grüße\n")
    assert (tmp_path / "t.txt").read_bytes() == "grüße\n".encode()
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    with (
        pytest.raises(ValueError, match="text mode"),
        atomic_write(tmp_path / "x", "wb", encoding="utf-8"),
    ):
        pass
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError), atomic_write(tmp_path / "dir"):
        pass
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "missing" / "x"):
        pass
    assert names(tmp_path) == ["dir", "t.txt"]


def test_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real.name)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_atomic_path_keeps_extension_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with atomic_path(target) as tmp:
        assert tmp.name == "clip.mp4" and is_temp_name(tmp.parent.name)
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and mode_of(target) == 0o600
    with pytest.raises(OSError, match="encoder"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("no encoder")
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass  # wrote nothing
    assert target.read_bytes() == b"new" and names(tmp_path) == ["clip.mp4"]


def test_write_folder_atomically_keeps_old_folder_on_failure(tmp_path: Path) -> None:
    folder = tmp_path / "scene"
    write_folder_atomically(folder, lambda tmp: (tmp / "a").write_text("old"))

    def broken(tmp: Path) -> None:
        (tmp / "a").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(folder, broken)
    assert (folder / "a").read_text() == "old" and names(tmp_path) == ["scene"]
    with pytest.raises(FileExistsError):
        write_folder_atomically(folder, lambda tmp: (tmp / "a").write_text("x"), overwrite=False)
    assert (folder / "a").read_text() == "old" and names(tmp_path) == ["scene"]


# ---------------------------------------------------------------------- kill -9 (defect 7)

_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from lyra_core.utils.atomic import atomic_write

    with atomic_write(sys.argv[1]) as f:
        f.write(b"n" * 1_000_000)
        f.flush()
        print("writing", flush=True)
        while True:
            f.write(b"n" * 100_000)
            f.flush()
            time.sleep(0.01)
    """
)


def _kill_mid_write(target: Path) -> None:
    """Start a process writing ``target`` slowly through atomic_write and SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


@pytest.mark.parametrize("existing", [True, False])
def test_kill_9_mid_write_leaves_old_file_and_a_sweepable_temp(
    tmp_path: Path, existing: bool
) -> None:
    target = tmp_path / "world.ply"
    if existing:
        target.write_bytes(b"old world")
    bystanders = [".bashrc", ".world.ply.swp", "notes.txt"]
    for name in bystanders:
        (tmp_path / name).write_text("keep me")
    _kill_mid_write(target)
    assert target.read_bytes() == b"old world" if existing else not target.exists()
    litter = [tmp_path / n for n in names(tmp_path) if is_temp_name(n)]
    assert len(litter) == 1 and litter[0].stat().st_size >= 1_000_000
    assert sweep_stale_temp_files(tmp_path, older_than=60.0) == []  # still fresh
    assert sweep_stale_temp_files(tmp_path) == litter
    assert names(tmp_path) == sorted([*bystanders, *(["world.ply"] if existing else [])])


# ---------------------------------------------------------------------- sweeping


def test_sweep_touches_only_our_temporary_names(tmp_path: Path) -> None:
    ours = [
        temp_name("world.ply"),
        ".a.b.0123456789ab.lyra-tmp",
        ".world.ply.abcdef012345.tmp",  # the PLY writer's temporary name before this module
    ]
    others = [
        ".bashrc",
        ".world.ply.0123456789ab.lyra-tmpx",
        ".world.ply.0123456789AB.lyra-tmp",  # upper-case hex: not ours
        ".world.ply.0123.lyra-tmp",
        "world.ply.0123456789ab.lyra-tmp",  # not hidden
        ".notes.txt.0123456789ab.tmp",  # .tmp files of other programs
        ".x.0123456789ab.lyra-tmp.bak",
    ]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    folder_temp = tmp_path / temp_name("ckpt")
    (folder_temp / "inner").mkdir(parents=True)
    (folder_temp / "inner" / "w.bin").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / temp_name("nested")).write_bytes(b"x")  # not recursive
    removed = sweep_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted([*ours, folder_temp.name])
    assert names(tmp_path) == sorted([*others, ".cache"])
    assert len(list((tmp_path / ".cache").iterdir())) == 1


def test_sweep_respects_age(tmp_path: Path) -> None:
    fresh = tmp_path / temp_name("a.ply")
    old = tmp_path / temp_name("b.ply")
    old_folder = tmp_path / temp_name("ckpt")
    for path in (fresh, old):
        path.write_bytes(b"x")
    old_folder.mkdir()
    (old_folder / "still_written").write_bytes(b"x")  # a folder counts its newest entry
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(old_folder, (past, past))
    assert sweep_stale_temp_files(tmp_path, older_than=600) == [old]
    os.utime(old_folder / "still_written", (past, past))
    assert sweep_stale_temp_files(tmp_path, older_than=600) == [old_folder]
    assert names(tmp_path) == [fresh.name]
    assert sweep_stale_temp_files(tmp_path / "missing") == []


def test_sweep_restores_a_folder_cut_short_between_renames(tmp_path: Path) -> None:
    aside = tmp_path / temp_name("decoder", "lyra-old")
    aside.mkdir()
    (aside / "w.bin").write_bytes(b"weights")
    assert sweep_stale_temp_files(tmp_path) == []
    assert (tmp_path / "decoder" / "w.bin").read_bytes() == b"weights"
    stale = tmp_path / temp_name("decoder", "lyra-old")
    stale.mkdir()
    assert sweep_stale_temp_files(tmp_path) == [stale]  # the target exists: a leftover
    assert names(tmp_path) == ["decoder"]


def test_write_ply_sweeps_only_stale_temps(tmp_path: Path) -> None:
    stale = tmp_path / ".world.ply.0123456789ab.lyra-tmp"
    legacy = tmp_path / ".world.ply.abcdef012345.tmp"
    fresh = tmp_path / ".other.ply.0123456789ab.lyra-tmp"
    for path in (stale, legacy, fresh):
        path.write_bytes(b"x" * 100)
    past = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(stale, (past, past))
    os.utime(legacy, (past, past))
    write_ply(tmp_path / "world.ply", make_scene(3))
    assert names(tmp_path) == sorted([fresh.name, "world.ply"])
    assert read_ply(tmp_path / "world.ply").num_gaussians == 3


def test_trainer_state_sweeps_a_killed_save_of_its_step(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "step_0000010"
    (folder / "decoder").mkdir(parents=True)
    leftover = folder / temp_name(TRAINER_STATE_NAME)
    leftover.write_bytes(b"half")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    save_trainer_state(folder, 10, optimizer)
    assert names(folder) == ["decoder", TRAINER_STATE_NAME]
    assert torch.load(folder / TRAINER_STATE_NAME, weights_only=True)["step"] == 10


def test_temp_names_are_hidden_unique_and_bounded(tmp_path: Path) -> None:
    a, b = temp_name("world.ply"), temp_name("world.ply")
    assert a != b and a.startswith(".world.ply.") and a.endswith(".lyra-tmp")
    assert is_temp_name(a) and not is_temp_name("world.ply")
    long = temp_name("x" * 250)
    assert len(long) < 255 and is_temp_name(long)
    write_bytes_atomic(tmp_path / ("y" * 250), b"ok")  # would exceed NAME_MAX untruncated
    assert (tmp_path / ("y" * 250)).read_bytes() == b"ok"
    with pytest.raises(ValueError, match="tag"):
        temp_name("a", "other")
