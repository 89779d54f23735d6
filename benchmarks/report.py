"""Shared by the benchmark scripts: timing, peak memory, the CPU run's header, and writing a
result JSON atomically."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from lyra_core.utils.atomic import write_text_atomic


def write_report(folder: Path, name: str, report: dict) -> Path:
    """Write ``report`` as JSON to ``folder/name`` atomically (:mod:`lyra_core.utils.atomic`)
    and say where."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_text_atomic(folder / name, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def cpu_run_header(
    benchmark: str, load_before: tuple[float, ...], omp_wait_policy: str | None
) -> dict:
    """The first keys of a CPU benchmark's JSON: what ran where, and how loaded the shared
    machine was (``load_before``: :func:`os.getloadavg` at the start; after: now)."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "omp_wait_policy": omp_wait_policy,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cuda_device": None,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, min_repeats: int, budget_s: float):
    """Median seconds per call after one warm-up; at least ``min_repeats`` calls."""
    fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _PeakRss:
    """Peak resident memory of this process while the block runs, sampled every millisecond.

    torch releases the GIL inside its kernels, so the sampling thread sees their buffers.
    """

    def __enter__(self) -> _PeakRss:
        self.baseline = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.baseline


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra memory of one call over what was allocated before it (GPU: allocator peak)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with _PeakRss() as peak:
        fn()
    return peak.extra_bytes / 2**20
