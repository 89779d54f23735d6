"""Issue 11's prototype: the native CPU rasteriser's forward pass in numba, timed against the C++
extension (``rasterize_native``) and the torch backend (``rasterize_tiles``).

The question it answers: does a numba kernel reach the C++/OpenMP extension's speed, so that the
extension (a compiler at set-up, a build cache) could be replaced by a pure-Python dependency?

Same semantics as ``csrc/rasterize_cpu.cpp``'s ``rasterize_forward``:

- binning: every visible (camera, Gaussian) pair is offered the tiles of its bounding box
  ``[floor((m - r) / ts), ceil((m + r) / ts))``; a tile is kept when the Gaussian's alpha reaches
  1/255 at one of its pixel centres (the exact minimum of the quadratic form over the tile);
  pairs are ordered by tile, then depth (stable: equal depths keep index order);
- compositing: per tile, front to back, ``alpha = min(0.999, opacity * exp(-sigma))``, skipped
  below 1/255; a pixel stops (exclusive) once its transmittance would reach 1e-4 or less.

The float32 arithmetic follows the C++ operation by operation (the same float32 rounding, the same
polynomial ``exp``, no fused multiply-adds), so the outputs are bit-identical in practice (the
check below allows 1e-4). Structure, written for numba:

- binning (``_bin_tiles``): two ``prange`` passes over the Gaussians in memory order (how many
  tiles each reaches, kept as a bit mask over its candidate tiles; then which), a stable LSD
  radix sort of the depths and a counting sort of the pairs by tile, front to back;
- compositing (``_composite``): ``prange`` over tiles, statically split in interleaved order;
  each tile's Gaussians gathered into contiguous arrays; row by row, every Gaussian that can
  reach 1/255 on the row updates the row's 16 pixels branch-free (stopped pixels have alpha 0),
  which LLVM vectorises; a row ends once all its pixels stopped.

What did not pay: a pixel-by-pixel loop with per-pixel early exit and a log-domain reject
before the ``exp`` (2.3x slower than the vectorised rows: branchy scalar code), restricting the
row to the Gaussian's column interval (breaks the vectorisation), numba's argsort (~10x slower
than the radix sort) and numba's dynamic scheduling (``parallel_chunksize``, 3-5x slower).

Timed: the scene of ``benchmarks/render.py`` (procedural_room(100_000, seed=0), its 320x240
camera), projected once with ``project_gaussians_native``; forward only, inference mode, with 2
torch and 2 numba threads, then 1 and 1 (per-core speed, less sensitive to the load); the three
rasterisers in interleaved rounds (each round runs all three, so a change of the machine's load
hits them alike), median over rounds. numba's first
call of a process is timed in fresh processes, with an empty cache (compilation) and with the
cache that run wrote.

Run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine: numba's OpenMP threads otherwise spin
at every parallel region's barrier and a busy second core makes every region wait (2-3x slower).

Usage: python benchmarks/numba_prototype.py [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from lyra_core.rendering.backends.native import (
    build_directory,
    native_extension,
    project_gaussians_native,
    rasterize_native,
)
from lyra_core.rendering.backends.tiles import rasterize_tiles
from lyra_core.rendering.projection import ProjectedGaussians, corner_based_Ks
from lyra_core.rendering.renderer import NATIVE_TILE_SIZE, TORCH_TILE_SIZE
from lyra_core.rendering.spherical_harmonics import sh_to_rgb
from lyra_core.scene.procedural_room import procedural_room
from render import _room_camera
from report import write_report

# float32 constants, as the C++ kernel's float(k...) casts (numba keeps float32 x float32 in
# float32; a Python float literal would promote the expression to float64).
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_ALPHA_THRESHOLD = np.float32(1.0 / 255.0)
_LOG_ALPHA_THRESHOLD = np.float32(math.log(np.float32(1.0 / 255.0)))
_MAX_ALPHA = np.float32(0.999)
_TRANSMITTANCE_EPS = np.float32(1e-4)
_MIN_OPACITY = np.float32(1e-30)
# exp_neg's constants (rasterize_cpu.cpp): 2^k e^r, r in [-ln2/2, ln2/2], degree-7 Taylor.
_EXP_FLOOR = np.float32(-80.0)
_ROUND = np.float32(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693145751953125)
_LN2_LO = np.float32(1.428606765330187e-06)
_TAYLOR = tuple(np.float32(1.0 / math.factorial(n)) for n in range(8))
# 2^-1, 2^-2, 2^-4, ..., 2^-64: 2^k (k = 0..-116) as a product of selects, so that the loop over a
# tile row vectorises (a table lookup would be a gather; the C++ kernel builds the float bits).
_INV_POW2 = tuple(np.float32(2.0 ** -(2**i)) for i in range(7))


@njit(cache=True, fastmath=False, inline="always")
def _exp_neg(x: np.float32) -> np.float32:
    """exp(x) for x <= 0 in float32, the C++ kernel's polynomial (relative error ~1e-7)."""
    x = _EXP_FLOOR if x < _EXP_FLOOR else x
    k = (x * _LOG2E + _ROUND) - _ROUND
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = _TAYLOR[7]
    p = p * r + _TAYLOR[6]
    p = p * r + _TAYLOR[5]
    p = p * r + _TAYLOR[4]
    p = p * r + _TAYLOR[3]
    p = p * r + _TAYLOR[2]
    p = p * r + _TAYLOR[1]
    p = p * r + _TAYLOR[0]
    n = np.int32(-k)  # 0..116: multiply by 2^-n, exact
    p = p * (_INV_POW2[0] if n & 1 else _F1)
    p = p * (_INV_POW2[1] if n & 2 else _F1)
    p = p * (_INV_POW2[2] if n & 4 else _F1)
    p = p * (_INV_POW2[3] if n & 8 else _F1)
    p = p * (_INV_POW2[4] if n & 16 else _F1)
    p = p * (_INV_POW2[5] if n & 32 else _F1)
    return p * (_INV_POW2[6] if n & 64 else _F1)


@njit(cache=True, fastmath=False, inline="always")
def _sigma(u: np.float32, v: np.float32, a: np.float32, b: np.float32, c: np.float32):
    return _HALF * (a * u * u + c * v * v) + b * u * v


@njit(cache=True, fastmath=False, inline="always")
def _min_quadratic_over_box(u0, v0, u1, v1, a, b, c):
    """min over [u0, u1] x [v0, v1] of 0.5 a u^2 + b u v + 0.5 c v^2 (float32, convex)."""
    if u0 <= _F0 and u1 >= _F0 and v0 <= _F0 and v1 >= _F0:
        return _F0
    best = _sigma(u0, min(max(-b * u0 / c, v0), v1), a, b, c)
    best = min(best, _sigma(u1, min(max(-b * u1 / c, v0), v1), a, b, c))
    best = min(best, _sigma(min(max(-b * v0 / a, u0), u1), v0, a, b, c))
    return min(best, _sigma(min(max(-b * v1 / a, u0), u1), v1, a, b, c))


@njit(cache=True, fastmath=False, inline="always")
def _tile_box(mx, my, rx, ry, tile_size, tiles_x, tiles_y):
    """Candidate tiles [x0, x1) x [y0, y1) of a bounding box, clamped to the grid."""
    ts = np.float32(tile_size)
    cx, cy = mx / ts, my / ts
    rxt, ryt = np.float32(rx) / ts, np.float32(ry) / ts
    x0 = min(int(max(np.floor(cx - rxt), _F0)), tiles_x)
    x1 = min(int(max(np.ceil(cx + rxt), _F0)), tiles_x)
    y0 = min(int(max(np.floor(cy - ryt), _F0)), tiles_y)
    y1 = min(int(max(np.ceil(cy + ryt), _F0)), tiles_y)
    return x0, x1, y0, y1


@njit(cache=True, fastmath=False, inline="always")
def _tile_reached(mx, my, a, b, c, log_opacity, tx, ty, tile_size):
    """True when alpha reaches 1/255 at some pixel centre of tile (tx, ty)."""
    ts = np.float32(tile_size)
    u0 = np.float32(tx) * ts + _HALF - mx
    v0 = np.float32(ty) * ts + _HALF - my
    span = ts - _F1
    return log_opacity - _min_quadratic_over_box(u0, v0, u0 + span, v0 + span, a, b, c) >= (
        _LOG_ALPHA_THRESHOLD
    )


@njit(cache=True)
def _depth_order(depths, visible):
    """``visible`` sorted by depth, stable: an LSD radix sort on the float32 bits (11 bits a pass),
    which order like the values for depths > near > 0. ~10x faster than numba's argsort here."""
    keys = depths[visible].view(np.uint32)
    order = visible.copy()
    keys_tmp, order_tmp = np.empty_like(keys), np.empty_like(order)
    for shift in range(0, 32, 11):
        bucket = np.zeros(2049, dtype=np.int64)
        for key in keys:
            bucket[((key >> shift) & 2047) + 1] += 1
        if bucket.max() == keys.shape[0]:
            continue  # a digit all keys share moves nothing
        bucket = np.cumsum(bucket)
        for i in range(keys.shape[0]):
            digit = (keys[i] >> shift) & 2047
            keys_tmp[bucket[digit]] = keys[i]
            order_tmp[bucket[digit]] = order[i]
            bucket[digit] += 1
        keys, keys_tmp = keys_tmp, keys
        order, order_tmp = order_tmp, order
    return order


@njit(parallel=True, fastmath=False, cache=True)
def _bin_tiles(means2d, conics, depths, radii, opacities, tile_size, tiles_x, tiles_y):
    """(Gaussian, tile) pairs sorted by (camera, tile) then depth.

    Args: (M, 2) means2d, (M, 3) conics, (M,) depths, (M, 2) int32 radii for the M = C * N
    flat (camera, Gaussian) pairs, (N,) opacities.

    Returns: tile_offsets (C * tiles + 1,) int64 and pair_ids (P,) int64 flat indices.
    """
    flat, num_gauss = means2d.shape[0], opacities.shape[0]
    tiles = tiles_x * tiles_y
    # Parallel regions are few on purpose: each ends at a barrier, and on a machine whose other
    # core is busy every barrier can wait for a time slice. Array expressions and np.zeros would
    # each be one more region, so buffers are filled by the loops.
    # In index order (memory order): how many tiles each Gaussian reaches, remembered as a bit
    # mask over its candidate tiles (row-major in its box) when it has at most 64 of them.
    reached = np.empty(flat + 1, dtype=np.int64)
    masks = np.empty(flat, dtype=np.uint64)
    reached[0] = 0
    for idx in prange(flat):
        reached[idx + 1], masks[idx] = 0, np.uint64(0)
        if radii[idx, 0] > 0 and radii[idx, 1] > 0:
            mx, my = means2d[idx, 0], means2d[idx, 1]
            a, b, c = conics[idx, 0], conics[idx, 1], conics[idx, 2]
            log_opacity = np.log(max(opacities[idx % num_gauss], _MIN_OPACITY))
            x0, x1, y0, y1 = _tile_box(
                mx, my, radii[idx, 0], radii[idx, 1], tile_size, tiles_x, tiles_y
            )
            count, bit, mask = 0, 0, np.uint64(0)
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    if _tile_reached(mx, my, a, b, c, log_opacity, tx, ty, tile_size):
                        count += 1
                        if bit < 64:
                            mask |= np.uint64(1) << np.uint64(bit)
                    bit += 1
            reached[idx + 1] = count
            masks[idx] = mask
    starts = np.cumsum(reached)
    pair_tile = np.empty(starts[-1], dtype=np.int64)
    for idx in prange(flat):
        if starts[idx + 1] > starts[idx]:
            mx, my = means2d[idx, 0], means2d[idx, 1]
            a, b, c = conics[idx, 0], conics[idx, 1], conics[idx, 2]
            log_opacity = np.log(max(opacities[idx % num_gauss], _MIN_OPACITY))
            x0, x1, y0, y1 = _tile_box(
                mx, my, radii[idx, 0], radii[idx, 1], tile_size, tiles_x, tiles_y
            )
            slot, cam_tile, mask = starts[idx], (idx // num_gauss) * tiles, masks[idx]
            small = (x1 - x0) * (y1 - y0) <= 64
            for bit in range((x1 - x0) * (y1 - y0)):
                ty, tx = y0 + bit // (x1 - x0), x0 + bit % (x1 - x0)
                if (
                    (mask >> np.uint64(bit)) & np.uint64(1)
                    if small
                    else _tile_reached(mx, my, a, b, c, log_opacity, tx, ty, tile_size)
                ):
                    pair_tile[slot] = cam_tile + ty * tiles_x + tx
                    slot += 1
    # Counting sort by tile, walking the Gaussians front to back: lists come out in depth order.
    tile_offsets = np.empty(flat // num_gauss * tiles + 1, dtype=np.int64)
    for job in range(tile_offsets.shape[0]):
        tile_offsets[job] = 0
    for tile in pair_tile:
        tile_offsets[tile + 1] += 1
    tile_offsets = np.cumsum(tile_offsets)
    fill = tile_offsets[:-1].copy()
    pair_ids = np.empty(pair_tile.shape[0], dtype=np.int64)
    binned, count = np.empty(flat, dtype=np.int64), 0  # Gaussians with pairs, index order
    for idx in range(flat):
        if starts[idx + 1] > starts[idx]:
            binned[count] = idx
            count += 1
    for idx in _depth_order(depths, binned[:count]):  # stable: equal depths keep index order
        for slot in range(starts[idx], starts[idx + 1]):
            tile = pair_tile[slot]
            pair_ids[fill[tile]] = idx
            fill[tile] += 1
    return tile_offsets, pair_ids


@njit(cache=True, fastmath=False)
def _gather_tile(ids, means2d, conics, features, opacities, x_start, y_start):
    """One tile's Gaussians (flat indices ``ids``, depth order), gathered contiguously.

    Returns (K, 8) float32 rows and (K, D) float32 features. A row holds: x0 and y0, the offsets
    of the tile's first pixel centre from the Gaussian's centre (x_start + 0.5 - mx, formed as
    the C++ kernel forms them); the conic a, b, c; the opacity; the largest sigma at which alpha
    can reach 1/255 (log(255 opacity) plus a 1e-3 margin that covers rounding: the exact test
    on alpha decides); and (a c - b^2) / a, the minimum of sigma along a row, per squared row
    offset (NaN for a degenerate conic: no row is skipped).
    """
    num_gauss = opacities.shape[0]
    rows = np.empty((ids.shape[0], 8), dtype=np.float32)
    feats = np.empty((ids.shape[0], features.shape[1]), dtype=np.float32)
    for k in range(ids.shape[0]):
        idx = ids[k]
        a, b, c = conics[idx, 0], conics[idx, 1], conics[idx, 2]
        opacity = opacities[idx % num_gauss]
        det = float(a) * float(c) - float(b) * float(b)
        rows[k, 0] = np.float32(x_start) + _HALF - means2d[idx, 0]
        rows[k, 1] = np.float32(y_start) + _HALF - means2d[idx, 1]
        rows[k, 2] = a
        rows[k, 3] = b
        rows[k, 4] = c
        rows[k, 5] = opacity
        rows[k, 6] = math.log(max(float(opacity), 1e-30) * 255.0) + 1e-3
        rows[k, 7] = det / a if a > 0 and det > 0 else np.nan
        feats[k, :] = features[idx, :]
    return rows, feats


@njit(parallel=True, fastmath=False, cache=True)
def _composite(
    tile_offsets, pair_ids, means2d, conics, features, opacities, width, height, tile_size, order
):
    """Front-to-back compositing, one tile per parallel iteration (in ``order``), row by row.

    A tile row is the vector: each Gaussian of the tile's depth-sorted list that can reach
    1/255 on the row updates all its pixels branch-free (stopped pixels and padding have
    ``alive`` 0, so alpha 0), which LLVM vectorises; a row ends once all its pixels stopped.
    Every pixel sees the same float32 operations as in the C++ kernel.

    Returns (C, H, W, D) accumulated features and (C, H, W) transmittance.
    """
    num_jobs, dim = tile_offsets.shape[0] - 1, features.shape[1]
    tiles_x = (width + tile_size - 1) // tile_size
    tiles = tiles_x * ((height + tile_size - 1) // tile_size)
    # np.empty: every pixel is written by its tile (one parallel region, see _bin_tiles).
    accumulated = np.empty((num_jobs // tiles, height, width, dim), dtype=np.float32)
    transmittance = np.empty((num_jobs // tiles, height, width), dtype=np.float32)
    columns = np.arange(tile_size).astype(np.float32)
    for i in prange(num_jobs):
        job = order[i]
        start, end = tile_offsets[job], tile_offsets[job + 1]
        cam, tile = job // tiles, job % tiles
        x_start, y_start = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
        cols = min(tile_size, width - x_start)
        rows, feats = _gather_tile(
            pair_ids[start:end], means2d, conics, features, opacities, x_start, y_start
        )
        t_row = np.empty(tile_size, dtype=np.float32)
        alive = np.empty(tile_size, dtype=np.float32)
        weight = np.empty(tile_size, dtype=np.float32)
        acc = np.empty((dim, tile_size), dtype=np.float32)
        for row in range(min(tile_size, height - y_start)):
            t_row[:] = _F1
            alive[:] = _F0
            alive[:cols] = _F1
            acc[:] = _F0
            running = cols
            fy = np.float32(row)
            for p in range(end - start):
                v = fy + rows[p, 1]
                if float(rows[p, 6]) - 0.5 * float(v) * float(v) * float(rows[p, 7]) < 0.0:
                    continue  # alpha < 1/255 along this whole row
                x0, a, b, c, opacity = rows[p, 0], rows[p, 2], rows[p, 3], rows[p, 4], rows[p, 5]
                stops = 0
                for col in range(tile_size):
                    value = opacity * _exp_neg(-_sigma(columns[col] + x0, v, a, b, c))
                    alpha = value if value < _MAX_ALPHA else _MAX_ALPHA
                    alpha = (alpha if alpha >= _ALPHA_THRESHOLD else _F0) * alive[col]
                    before = t_row[col]
                    after = before * (_F1 - alpha)
                    hit = alpha > _F0
                    stop = hit & (after <= _TRANSMITTANCE_EPS)  # exclusive: not blended
                    kept = hit & ~stop
                    alive[col] = _F0 if stop else alive[col]
                    stops += np.int32(stop)
                    weight[col] = alpha * before if kept else _F0
                    t_row[col] = after if kept else before
                for d in range(dim):
                    feature = feats[p, d]
                    for col in range(tile_size):
                        acc[d, col] += weight[col] * feature
                running -= stops
                if running == 0:
                    break
            y = y_start + row
            for col in range(cols):
                transmittance[cam, y, x_start + col] = t_row[col]
                for d in range(dim):
                    accumulated[cam, y, x_start + col, d] = acc[d, col]
    return accumulated, transmittance


def _tile_order(num_jobs: int) -> np.ndarray:
    """Tiles in the order the parallel loop takes them: numba splits a ``prange`` into one
    contiguous block per thread, so thread t gets tiles t, t + T, t + 2T, ... (costs vary a lot
    across the image; neighbouring tiles cost alike). numba's dynamic scheduling
    (``parallel_chunksize(1)``) was 3-5x slower here."""
    threads = numba.get_num_threads()
    return np.concatenate([np.arange(t, num_jobs, threads) for t in range(threads)])


def rasterize_numba(
    projected: ProjectedGaussians,
    features: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    *,
    tile_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """:func:`~lyra_core.rendering.backends.native.rasterize_native`'s forward in numba: the same
    arguments (float32 CPU tensors: projected (C, N), features (C, N, D), opacities (N,)) and
    outputs, ``(accumulated, transmittance)`` (C, H, W, D) and (C, H, W), without autograd."""
    num_cams, num_gauss, dim = features.shape

    def flat(t: Tensor, cols: int) -> np.ndarray:
        return t.detach().reshape(num_cams * num_gauss, cols).contiguous().numpy()

    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    means2d = flat(projected.means2d, 2)
    conics = flat(projected.conics, 3)
    opac = opacities.detach().contiguous().numpy()
    offsets, pair_ids = _bin_tiles(
        means2d,
        conics,
        projected.depths.detach().reshape(-1).contiguous().numpy(),
        flat(projected.radii, 2),
        opac,
        tile_size,
        tiles_x,
        tiles_y,
    )
    accumulated, trans = _composite(
        offsets,
        pair_ids,
        means2d,
        conics,
        flat(features, dim),
        opac,
        width,
        height,
        tile_size,
        _tile_order(len(offsets) - 1),
    )
    return torch.from_numpy(accumulated), torch.from_numpy(trans)


def scene_inputs(size: int, width: int, height: int) -> tuple[ProjectedGaussians, Tensor, Tensor]:
    """render.py's scene and camera, projected as ``render`` does: (projected, features, opacities)
    with features = [rgb, depth] (C, N, 4)."""
    scene = procedural_room(size, seed=0)
    cams = _room_camera(width, height, torch.device("cpu"))
    with torch.inference_mode():
        opacities = scene.opacities
        projected = project_gaussians_native(
            scene.means,
            scene.quats,
            scene.scales,
            opacities,
            cams.viewmats,
            corner_based_Ks(cams.Ks),
            width,
            height,
        )
        colors = sh_to_rgb(scene.sh, scene.means, cams.centers)
        features = torch.cat([colors, projected.depths[..., None]], dim=-1)
    return projected, features, opacities


def first_call_seconds(size: int, width: int, height: int, threads: int) -> float:
    """Seconds of the first ``rasterize_numba`` call of a process (compilation or loading numba's
    cache, plus one render). Runs in a child process (see :func:`_first_calls`)."""
    numba.set_num_threads(threads)
    projected, features, opacities = scene_inputs(size, width, height)
    start = time.perf_counter()
    rasterize_numba(projected, features, opacities, width, height)
    return time.perf_counter() - start


def _first_calls(args: argparse.Namespace) -> dict[str, float]:
    """The first call in fresh processes with an empty numba cache (compilation) and then with
    the cache that run wrote (what every later process pays)."""
    spawn = multiprocessing.get_context("spawn")
    seconds = {}
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("NUMBA_CACHE_DIR")
        os.environ["NUMBA_CACHE_DIR"] = cache  # read by numba when the child imports it
        try:
            for name in ("compile", "cached"):
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    job = pool.submit(
                        first_call_seconds, args.size, args.width, args.height, args.threads[0]
                    )
                    seconds[name] = round(job.result(), 2)
        finally:
            if previous is None:
                del os.environ["NUMBA_CACHE_DIR"]
            else:
                os.environ["NUMBA_CACHE_DIR"] = previous
    return seconds


def _time_rounds(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each entry of ``calls``, in interleaved rounds after a warm-up (a
    change of the machine's load hits them all alike)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for fn in calls.values():
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def run_benchmark(args: argparse.Namespace) -> dict:
    width, height = args.width, args.height
    first_calls = _first_calls(args)
    projected, features, opacities = scene_inputs(args.size, width, height)
    load_before = os.getloadavg()

    ours = rasterize_numba(projected, features, opacities, width, height)
    with torch.inference_mode():
        theirs = rasterize_native(projected, features, opacities, width, height)
    # Before any timing: the prototype must render what the C++ kernel renders.
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=0.0)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-4, rtol=0.0)
    max_diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))

    calls = {
        "numba": lambda: rasterize_numba(
            projected, features, opacities, width, height, tile_size=NATIVE_TILE_SIZE
        ),
        "native": lambda: rasterize_native(
            projected, features, opacities, width, height, tile_size=NATIVE_TILE_SIZE
        ),
        "torch": lambda: rasterize_tiles(
            projected, features, opacities, width, height, tile_size=TORCH_TILE_SIZE
        ),
    }
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        times = _time_rounds(calls, args.repeats)
        median = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            row = {
                "rasteriser": name,
                "threads": threads,
                "tile_size": TORCH_TILE_SIZE if name == "torch" else NATIVE_TILE_SIZE,
                "ms": round(median[name] * 1e3, 2),
                "fps": round(1.0 / median[name], 2),
                "ms_range": [round(min(ts) * 1e3, 2), round(max(ts) * 1e3, 2)],
                "vs_native": round(median[name] / median["native"], 2),
                "speedup_vs_torch": round(median["torch"] / median[name], 2),
            }
            rows.append(row)
            print(
                f"{name:>7} {threads:>7} {row['tile_size']:>5} {row['ms']:>9.1f} "
                f"{row['fps']:>7.1f} {row['ms_range'][0]:>8.1f}-{row['ms_range'][1]:<8.1f} "
                f"{row['vs_native']:>8.2f}x {row['speedup_vs_torch']:>8.2f}x",
                flush=True,
            )
    load_after = os.getloadavg()
    print(
        f"numba first call of a process (+ one render): {first_calls['compile']:.2f} s compiling, "
        f"{first_calls['cached']:.2f} s from its on-disk cache"
    )
    return {
        "benchmark": "numba_prototype",
        "issue": 11,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "cpu": platform.processor() or platform.machine(),
        "device": "cpu",
        "cpu_threads": "each row's threads: torch.set_num_threads and numba.set_num_threads",
        "scene": f"procedural_room({args.size}, seed=0), render.py's camera at {width}x{height}, "
        "projected once with project_gaussians_native; features rgb + depth (D=4)",
        "gaussians": args.size,
        "width": width,
        "height": height,
        "timing": "forward only, inference mode, the same projected input for all three; per "
        f"thread count {args.repeats} interleaved rounds after a warm-up, median per rasteriser",
        "baselines": {
            "vs_native": "this rasteriser's time / rasterize_native's (C++), same rounds and "
            "threads",
            "speedup_vs_torch": "rasterize_tiles' time (torch backend) / this rasteriser's",
        },
        "check": "torch.testing.assert_close(numba, rasterize_native, atol=1e-4, rtol=0) on "
        "accumulated and transmittance before timing",
        "max_abs_diff_vs_native": max_diff,
        "numba_first_call_s": first_calls,
        "numba_first_call": "first rasterize_numba call of a fresh process, one render included: "
        "compile = empty cache (NUMBA_CACHE_DIR), cached = the cache that run wrote",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "native_build": build_directory().name,
        "load_average": {"before": load_before, "after": load_after},
        "load_note": "2-core machine shared with other engineers' jobs: medians of interleaved "
        "rounds; compare the ratios rather than absolute times",
        "rows": rows,
    }


HEADER = (
    f"{'backend':>7} {'threads':>7} {'tile':>5} {'ms':>9} {'fps':>7} {'ms range':>17} "
    f"{'/native':>9} {'vs torch':>9}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="Gaussians")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2, 1], help="torch and numba thread counts"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if native_extension() is None:
        raise SystemExit(
            "the native extension is not built: python -m lyra_core.rendering.backends.native"
        )
    print(HEADER)
    report = run_benchmark(args)
    write_report(args.out, "numba_prototype_cpu.json", report)


if __name__ == "__main__":
    main()
