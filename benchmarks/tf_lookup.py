"""Speed of the built-in tf buffer (:class:`lyra_core.geometry.transform_tree.TfBuffer`):
microseconds per lookup.

The tree is a chain ``f0 -> f1 -> ... -> f5`` whose links each hold 1,000 samples (10 s at
100 Hz, every sample a new translation and yaw), or the same chain as static links. Cases:

- ``1 link, at a sample``: one dynamic link looked up at one of its sample stamps;
- ``5 links, between samples``: ``f0 <- f5`` at stamps between samples, so every link is
  interpolated (slerp) -- the case the node's camera threads hit;
- ``5 links, latest``: ``f0 <- f5`` at the latest common time (tf2's time 0);
- ``5 links, static``: the same chain of static transforms;
- ``set_transform``: storing one dynamic sample (what the listener does per received transform).

Baselines measured in the same run, on the same chain and stamps:

- ``matrix_product``: multiplying the five precomputed ``4x4`` link matrices (NumPy ``@``), the
  floor of any lookup: ``vs_matrix_product`` = lookup time / that time.
- ``naive_walk``: the obvious lookup without the buffer's structures: a linear scan of each
  link's samples for the bracketing pair, SciPy ``Slerp`` + ``Rotation.as_matrix`` per link,
  then the product: ``speedup_vs_naive`` = its time / the buffer's.

Timing: median over repeats of batches of lookups at varying stamps, after a warm-up batch.

Usage: python benchmarks/tf_lookup.py [--repeats 7] [--batch 500] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy
from scipy.spatial.transform import Rotation, Slerp

from lyra_core.geometry.transform_tree import TfBuffer
from report import write_report

FRAMES = [f"f{i}" for i in range(6)]
RATE_HZ = 100.0
SECONDS = 10.0
TARGET_US_5_LINKS = 1000.0
"""The budget the node's camera threads were designed around: one 5-link lookup per rendered
frame, far below a frame's render time at 1 ms."""


def link_sample(link: int, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Translation (m) and quaternion (x, y, z, w) of link ``link`` at stamp ``t`` seconds."""
    translation = np.array([t, float(link), 0.0])
    quat = Rotation.from_euler("z", 10.0 * t + link, degrees=True).as_quat()
    return translation, quat


def sample_times() -> np.ndarray:
    return np.arange(0.0, SECONDS, 1.0 / RATE_HZ)


def make_buffer(static: bool) -> TfBuffer:
    buf = TfBuffer(cache_time=2 * SECONDS)
    for i, (parent, child) in enumerate(itertools.pairwise(FRAMES)):
        for t in sample_times()[:1] if static else sample_times():
            translation, quat = link_sample(i, float(t))
            buf.set_transform(parent, child, float(t), translation, quat, static=static)
    return buf


class NaiveChain:
    """Per-lookup chain walk with SciPy, no precomputation: the baseline."""

    def __init__(self) -> None:
        self.samples = [
            [(float(t), *link_sample(i, float(t))) for t in sample_times()]
            for i in range(len(FRAMES) - 1)
        ]

    def lookup(self, stamp: float) -> np.ndarray:
        T = np.eye(4)
        for samples in self.samples:
            k = next(k for k in range(1, len(samples)) if samples[k][0] >= stamp)
            (t0, p0, q0), (t1, p1, q1) = samples[k - 1], samples[k]
            alpha = (stamp - t0) / (t1 - t0)
            link = np.eye(4)
            link[:3, :3] = Slerp([t0, t1], Rotation.from_quat([q0, q1]))(stamp).as_matrix()
            link[:3, 3] = p0 + alpha * (p1 - p0)
            T = T @ link
        return T


def seconds_per_call(fn: Callable[[int], object], batch: int, repeats: int) -> float:
    """Median seconds per call of ``fn(k)`` over ``repeats`` batches (after one warm-up)."""
    for k in range(batch):
        fn(k)
    per_batch = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(batch):
            fn(k)
        per_batch.append((time.perf_counter() - start) / batch)
    return statistics.median(per_batch)


def run_benchmark(args: argparse.Namespace) -> dict:
    dynamic, static = make_buffer(static=False), make_buffer(static=True)
    naive = NaiveChain()
    # Stamps between samples (every link interpolates), spread over the middle of the cache.
    between = [5.0 + (k % 300) * 1e-2 + 3.7e-3 for k in range(args.batch)]
    at_sample = [float(t) for t in sample_times()[100:900]]
    links = [dynamic.lookup(parent, child, 5.0037) for parent, child in itertools.pairwise(FRAMES)]
    np.testing.assert_allclose(dynamic.lookup("f0", "f5", 5.0037), naive.lookup(5.0037), atol=1e-9)

    def product(k: int) -> np.ndarray:
        return links[0] @ links[1] @ links[2] @ links[3] @ links[4]

    inserts = itertools.count()

    def insert(k: int) -> None:
        t = SECONDS + next(inserts) * 1e-4
        dynamic.set_transform("f5", "f6", t, (t, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))

    batch, repeats = args.batch, args.repeats
    floor = seconds_per_call(product, batch, repeats)
    naive_s = seconds_per_call(lambda k: naive.lookup(between[k]), max(batch // 10, 10), repeats)
    cases = [
        ("1 link, at a sample", 1, lambda k: dynamic.lookup("f0", "f1", at_sample[k % 800])),
        ("5 links, between samples", 5, lambda k: dynamic.lookup("f0", "f5", between[k])),
        ("5 links, latest", 5, lambda k: dynamic.lookup("f0", "f5")),
        ("5 links, static", 5, lambda k: static.lookup("f0", "f5")),
        ("set_transform", 0, insert),
    ]
    rows = []
    for name, n_links, fn in cases:
        seconds = seconds_per_call(fn, batch, repeats)
        row = {
            "case": name,
            "links": n_links,
            "us": round(seconds * 1e6, 2),
            "per_s": round(1.0 / seconds),
            "vs_matrix_product": round(seconds / floor, 1) if n_links == 5 else None,
            "speedup_vs_naive": None,
        }
        if name == "5 links, between samples":
            row["speedup_vs_naive"] = round(naive_s / seconds, 1)
            row["meets_target"] = seconds * 1e6 < TARGET_US_5_LINKS
        rows.append(row)
        print(format_row(row), flush=True)
    return {
        "benchmark": "tf_lookup",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "device": "cpu (the buffer is pure Python/NumPy, one thread)",
        "tree": f"chain of 5 links, {int(SECONDS * RATE_HZ)} samples per dynamic link",
        "timing": f"median over {repeats} batches of {batch} calls after a warm-up batch",
        "baselines": {
            "matrix_product_us": round(floor * 1e6, 2),
            "naive_walk_us": round(naive_s * 1e6, 2),
            "vs_matrix_product": "lookup time / time of multiplying the 5 precomputed matrices",
            "speedup_vs_naive": "naive per-lookup chain walk (linear scan, SciPy Slerp) time / "
            "lookup time",
        },
        "target_us_5_links": TARGET_US_5_LINKS,
        "rows": rows,
    }


HEADER = f"{'case':<26} {'us':>9} {'per s':>9} {'vs product':>11} {'vs naive':>9}"


def format_row(row: dict) -> str:
    product = f"{row['vs_matrix_product']}x" if row["vs_matrix_product"] else "-"
    naive = f"{row['speedup_vs_naive']}x" if row["speedup_vs_naive"] else "-"
    return f"{row['case']:<26} {row['us']:>9.1f} {row['per_s']:>9} {product:>11} {naive:>9}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed batches per case")
    parser.add_argument("--batch", type=int, default=500, help="calls per batch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    print(HEADER)
    report = run_benchmark(args)
    write_report(args.out, "tf_lookup_cpu.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
