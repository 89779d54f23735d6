"""Kill -9 during a world save: SIGKILL a process in the middle of saving a ~50 MB PLY, many
times, and check that the file on disk is always the old or the new world; then check that
:func:`lyra_core.utils.atomic.sweep_stale_temp_files` removes what the killed saves left.

Setup: two random scenes A and B (``--gaussians`` Gaussians of SH degree 3, 248 bytes each:
200,000 make a 49.6 MB file). The target starts as A. Each trial forks a child that saves B,
A, B, ... over the target with :func:`lyra_core.scene.ply.write_ply` (what the ROS node's
``~/save_world`` calls) and sends it SIGKILL at a random moment, chosen two ways:

- ``anywhere``: after a delay uniform in ``[0, 2 x the measured time of one save]``; most of a
  save is building the vertex table, so few of these kills land while the file is written;
- ``in write``: once the parent (polling the folder) sees a new temporary file holding a
  random fraction, uniform in ``[0, 1]``, of the file's bytes: the kill lands while the bytes
  are written (polling is not instant, so a few land after; ``kills_that_left_a_temp_file``
  counts the kills that landed inside a save).

After each kill the target must hash to A or B and :func:`~lyra_core.scene.ply.read_ply` must
accept it.

Baseline, ``anywhere`` kills: a naive writer that streams the same bytes straight onto the target
(``open(path, "wb")``, 1 MiB chunks, as a writer without a temporary file does). It shows that
the check catches torn files.

Litter: the temporary files (count, MB) present after all kills, which ``write_ply``'s own
sweep leaves because they are younger than ``STALE_TEMP_AGE_S``; then after one
``sweep_stale_temp_files`` of the folder.

Usage: python benchmarks/kill_during_save.py [--kills 20] [--gaussians 200000]
    [--work-dir DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import random
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.utils.atomic import is_temp_name, sweep_stale_temp_files
from report import write_report

CHUNK_BYTES = 1 << 20


def _scene(n: int, seed: int) -> Gaussians:
    """``n`` random valid Gaussians of SH degree 3 (seeded)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return Gaussians(randn(n, 3), randn(n, 4), randn(n, 3) - 3.0, randn(n), randn(n, 16, 3))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _litter(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_temp_name(p.name))


def _fork(save_forever: Callable[[], None]) -> int:
    """Fork a child running ``save_forever``; returns its pid."""
    pid = os.fork()
    if pid == 0:  # child: never returns into the benchmark
        try:
            save_forever()
        finally:
            os._exit(1)
    return pid


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSIGNALED(status):
        raise RuntimeError(f"the saving child ended by itself (status {status})")


def _new_temp(folder: Path, known: set[str], timeout_s: float) -> str | None:
    """Poll ``folder`` (every 0.2 ms) until a temporary file not in ``known`` appears."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        for entry in os.scandir(folder):
            if is_temp_name(entry.name) and entry.name not in known:
                return entry.name
        time.sleep(0.0002)
    return None


def _kill_after_random_delay(max_delay_s: float, rng: random.Random) -> Callable[[int, Path], None]:
    """Kill anywhere in the save cycle: after a delay uniform in ``[0, max_delay_s]``."""

    def kill(pid: int, folder: Path) -> None:
        time.sleep(rng.uniform(0.0, max_delay_s))
        _kill(pid)

    return kill


def _kill_mid_write(total_bytes: int, rng: random.Random) -> Callable[[int, Path], None]:
    """Kill inside the write: once a new temporary file holds a random fraction, uniform in
    ``[0, 1]``, of the file's ``total_bytes`` (polled every 0.2 ms)."""

    def kill(pid: int, folder: Path) -> None:
        known = {p.name for p in _litter(folder)}
        name = _new_temp(folder, known, timeout_s=30.0)
        if name is not None:
            goal = rng.uniform(0.0, 1.0) * total_bytes
            with contextlib.suppress(FileNotFoundError):  # renamed: the save finished
                while (folder / name).stat().st_size < goal:
                    time.sleep(0.0002)
        _kill(pid)

    return kill


def _atomic_saver(target: Path, scenes: tuple[Gaussians, Gaussians]) -> Callable[[], None]:
    def save_forever() -> None:
        i = 1
        while True:
            write_ply(target, scenes[i % 2])
            i += 1

    return save_forever


def _naive_saver(target: Path, blobs: tuple[bytes, bytes]) -> Callable[[], None]:
    def save_forever() -> None:
        i = 1
        while True:
            data = memoryview(blobs[i % 2])
            with open(target, "wb") as f:
                for start in range(0, len(data), CHUNK_BYTES):
                    f.write(data[start : start + CHUNK_BYTES])
                f.flush()
                os.fsync(f.fileno())
            i += 1

    return save_forever


def _trials(
    name: str,
    target: Path,
    reset: Callable[[], None],
    saver: Callable[[], None],
    kill: Callable[[int, Path], None],
    digests: dict[str, str],
    kills: int,
) -> dict:
    """Run ``kills`` kill trials of one writer; count intact / torn targets after each, and
    the kills that landed inside a save of the atomic writer (a new temporary file appeared)."""
    intact = torn = mid_save = readable = 0
    start = time.perf_counter()
    for _ in range(kills):
        reset()
        before = len(_litter(target.parent))
        kill(_fork(saver), target.parent)
        mid_save += len(_litter(target.parent)) > before
        found = _digest(target) if target.exists() else None
        intact += found in digests.values()
        torn += found not in digests.values()
        try:
            read_ply(target)
            readable += 1
        except (ValueError, OSError):
            pass
    row = {
        "writer": name,
        "saves_killed": kills,
        "target_old_or_new": intact,
        "target_torn_or_missing": torn,
        "target_readable_by_read_ply": readable,
        "kills_that_left_a_temp_file": mid_save,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{name:>16}: {kills} kills, {intact} old-or-new, {torn} torn, {readable} readable, "
        f"{mid_save} left a temp file"
    )
    return row


def run_benchmark(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)  # no thread pools: the children are plain fork()s
    rng = random.Random(args.seed)
    scenes = (_scene(args.gaussians, 0), _scene(args.gaussians, 1))
    with tempfile.TemporaryDirectory(prefix="lyra-kill-", dir=args.work_dir) as work:
        folder = Path(work)
        target = folder / "world.ply"
        write_ply(folder / "b.ply", scenes[1])
        blob_b = (folder / "b.ply").read_bytes()
        (folder / "b.ply").unlink()
        start = time.perf_counter()
        write_ply(target, scenes[0])
        save_s = time.perf_counter() - start
        blob_a = target.read_bytes()
        digests = {"A": hashlib.sha256(blob_a).hexdigest(), "B": hashlib.sha256(blob_b).hexdigest()}
        print(f"world file {len(blob_a) / 1e6:.1f} MB, one write_ply {save_s:.2f} s")
        max_delay_s = 2.0 * save_s
        saver = _atomic_saver(target, scenes)
        rows = [
            _trials(
                "atomic, anywhere",
                target,
                lambda: None,  # the target stays whatever the last killed save left
                saver,
                _kill_after_random_delay(max_delay_s, rng),
                digests,
                args.kills,
            ),
            _trials(
                "atomic, in write",
                target,
                lambda: None,
                saver,
                _kill_mid_write(len(blob_a), rng),
                digests,
                args.kills,
            ),
        ]
        litter = _litter(folder)
        litter_mb = sum(p.stat().st_size for p in litter) / 1e6
        removed = sweep_stale_temp_files(folder)
        left = _litter(folder)
        others = sorted(p.name for p in folder.iterdir())
        print(f"litter: {len(litter)} temp files ({litter_mb:.0f} MB); after sweep {len(left)}")

        def reset_naive() -> None:
            target.write_bytes(blob_a)

        naive = _trials(
            "naive, anywhere",
            target,
            reset_naive,
            _naive_saver(target, (blob_a, blob_b)),
            _kill_after_random_delay(max_delay_s, rng),
            digests,
            args.kills,
        )
    return {
        "benchmark": "kill_during_save",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "work_dir": str(args.work_dir or tempfile.gettempdir()),
        "world_file_mb": round(len(blob_a) / 1e6, 1),
        "gaussians": args.gaussians,
        "one_save_seconds": round(save_s, 3),
        "kill_moments": {
            "anywhere": f"uniform in [0, {max_delay_s:.2f}] s after the saving child starts",
            "in_write": (
                "once a new temporary file holds a fraction uniform in [0, 1] of the file's "
                "bytes (polled every 0.2 ms)"
            ),
        },
        "seed": args.seed,
        "atomic": rows,
        "litter": {
            "temp_files_before_sweep": len(litter),
            "temp_files_before_sweep_mb": round(litter_mb, 1),
            "removed_by_sweep": len(removed),
            "temp_files_after_sweep": len(left),
            "files_left_after_sweep": others,
        },
        "naive_baseline": naive,
        "method": (
            "fork a child that saves the two worlds alternately over one target, SIGKILL it at "
            "a random moment (kill_moments), then hash the target (must be world A or B) and "
            "read it with read_ply; litter = .lyra-tmp files in the folder after all atomic "
            "trials"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="trials per writer")
    parser.add_argument("--gaussians", type=int, default=200_000, help="Gaussians per world")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: system temp")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    report = run_benchmark(args)
    write_report(args.out, "kill_during_save_cpu.json", report)


if __name__ == "__main__":
    main()
