"""The native CPU backend: a C++ torch extension for projection and tile rasterisation.

Same maths and outputs as the pure-PyTorch backend (:mod:`~lyra_core.rendering.projection` and
:mod:`~lyra_core.rendering.backends.tiles`), forward and analytic backward, in
``csrc/rasterize_cpu.cpp``:

- :func:`project_gaussians_native` is :func:`~lyra_core.rendering.projection.project_gaussians`
  with gradients for means, quats and scales (cameras get none);
- :func:`rasterize_native` is :func:`~lyra_core.rendering.backends.tiles.rasterize_tiles` with
  gradients for the 2D means, conics, features and opacities.

Each is a :class:`torch.autograd.Function` on float32 CPU tensors; spherical harmonics stay in
PyTorch. Threads follow ``torch.get_num_threads()``. Memory: the forward keeps the per-tile
Gaussian lists and one int32 per pixel for the backward; the backward adds one gradient buffer of
(6 + D) floats per (camera, Gaussian) per thread.

Building: ``python -m lyra_core.rendering.backends.native`` compiles the extension once with
``torch.utils.cpp_extension`` (ninja and a C++ compiler; ~30 s) into a folder named after a hash
of the source, the compiler flags and the torch and Python versions, under ``LYRA_NATIVE_DIR``
(default ``~/.cache/lyra_ros/native``). The set-up script runs it. Rendering never compiles: it
imports the built library when it is there, and otherwise ``render(backend="auto")`` warns once
and uses the torch backend. ``LYRA_NATIVE=0`` disables the native backend.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from lyra_core.rendering.projection import ProjectedGaussians

EXTENSION_NAME = "lyra_rasterize_cpu"
SOURCE = Path(__file__).with_name("csrc") / "rasterize_cpu.cpp"
DISABLE_VARIABLE = "LYRA_NATIVE"
"""Set to ``0`` to never load the extension (the torch backend is used instead)."""
DIR_VARIABLE = "LYRA_NATIVE_DIR"
"""Folder of built extensions (default ``~/.cache/lyra_ros/native``)."""
STALE_LOCK_SECONDS = 600.0
"""A build lock older than this was left by a killed build and is removed."""

# -march=native: the library is built on the machine that runs it (the build folder's hash
# includes the CPU model), so it uses its widest vectors; -ffp-contract=off: no fused
# multiply-adds, so float rounding follows the torch backend's; -fno-trapping-math lets the
# compiler vectorise selects and float->int conversions (no effect on results). No -ffast-math:
# the kernels rely on exact IEEE rounding.
# -fopenmp: at::parallel_for is a header template whose OpenMP pragmas compile into this library
# (without it every loop runs on one thread); libgomp.so.1 resolves to the one torch loaded.
_CFLAGS = [
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-trapping-math",
    "-fno-math-errno",
    "-fopenmp",
]
_LDFLAGS = ["-fopenmp"]


def _disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off")


def build_directory() -> Path:
    """Where this source, these flags and this torch / Python build the extension.

    The key holds the torch installation's folder too: two virtualenvs with the same torch
    version compile with different include paths, and sharing a folder would make each one's
    build recompile the other's (and replace a library the other may be loading)."""
    root = os.environ.get(DIR_VARIABLE) or Path.home() / ".cache" / "lyra_ros" / "native"
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    parts = (
        *_CFLAGS,
        *_LDFLAGS,
        torch.__version__,
        str(Path(torch.__file__).resolve().parent),
        sys.version,
        platform.machine(),
        _cpu_model(),
    )
    for part in parts:
        key.update(part.encode())
    return Path(root) / key.hexdigest()[:16]


def _cpu_model() -> str:
    """The CPU's model name (Linux), so that -march=native builds are not shared across CPUs."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    """The built shared library (present once :func:`build` ran)."""
    return build_directory() / f"{EXTENSION_NAME}.so"


@functools.cache
def native_extension() -> ModuleType | None:
    """The built extension, or None when it is not built, fails to load or is disabled.

    Never compiles (see :func:`build`). The first miss warns once per process.
    """
    if _disabled():
        _warn(f"{DISABLE_VARIABLE}=0 disables it")
        return None
    path = library_path()
    if not path.is_file():
        _warn("it is not built; run `python -m lyra_core.rendering.backends.native`")
        return None
    try:
        spec = importlib.util.spec_from_file_location(EXTENSION_NAME, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as err:  # a library from another build of torch, a truncated file
        _warn(f"{path} does not load ({err}); rebuild it")
        return None
    return module


def native_available() -> bool:
    """True when the native extension is built and loads."""
    return native_extension() is not None


def _warn(reason: str) -> None:
    warnings.warn(
        f"native CPU rasteriser unavailable: {reason}; rendering on CPU uses the slower torch "
        "backend",
        RuntimeWarning,
        stacklevel=3,
    )


def build(verbose: bool = False) -> Path:
    """Compile the extension into :func:`build_directory` (no-op when it is built).

    Returns the library path. Raises whatever the compiler raises.
    """
    from torch.utils.cpp_extension import load

    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"  # torch's build lock; a killed build leaves it behind
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
    load(
        name=EXTENSION_NAME,
        sources=[str(SOURCE)],
        extra_cflags=list(_CFLAGS),  # copies: torch's load appends to the lists it is given
        extra_ldflags=list(_LDFLAGS),
        build_directory=str(folder),
        verbose=verbose,
    )
    return folder / f"{EXTENSION_NAME}.so"


class _ProjectFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far
    ):
        ext = native_extension()
        tensors = [t.contiguous() for t in (means, quats, scales, opacities, viewmats, Ks)]
        means2d, conics, depths, radii = ext.project_forward(
            *tensors, width, height, float(eps2d), float(near), float(far)
        )
        ctx.save_for_backward(*tensors[:3], *tensors[4:], radii)
        ctx.image_size = (width, height)
        ctx.eps2d = float(eps2d)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii):
        means, quats, scales, viewmats, Ks, radii = ctx.saved_tensors
        v_means, v_quats, v_scales = native_extension().project_backward(
            means,
            quats,
            scales,
            viewmats,
            Ks,
            *ctx.image_size,
            ctx.eps2d,
            radii,
            v_means2d.contiguous(),
            v_conics.contiguous(),
            v_depths.contiguous(),
        )
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


class _RasterizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, features, opacities, depths, radii, width, height, tile):
        ext = native_extension()
        inputs = [t.contiguous() for t in (means2d, conics, features, opacities)]
        accumulated, trans, last, offsets, pair_ids = ext.rasterize_forward(
            *inputs, depths.detach().contiguous(), radii.contiguous(), width, height, tile
        )
        ctx.save_for_backward(*inputs, offsets, pair_ids, trans, last)
        ctx.grid = (width, height, tile)
        return accumulated, trans

    @staticmethod
    def backward(ctx, v_accumulated, v_trans):
        means2d, conics, features, opacities, offsets, pair_ids, trans, last = ctx.saved_tensors
        v_means2d, v_conics, v_features, v_opacities = native_extension().rasterize_backward(
            means2d,
            conics,
            features,
            opacities,
            offsets,
            pair_ids,
            trans,
            last,
            v_accumulated.contiguous(),
            v_trans.contiguous(),
            *ctx.grid,
        )
        return v_means2d, v_conics, v_features, v_opacities, None, None, None, None, None


def project_gaussians_native(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> ProjectedGaussians:
    """:func:`~lyra_core.rendering.projection.project_gaussians` in C++ (same arguments).

    Gradients flow to ``means``, ``quats`` and ``scales``; none to the opacities (they only
    shape the bounding boxes), ``viewmats`` or ``Ks``.
    """
    means2d, conics, depths, radii = _ProjectFunction.apply(
        means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far
    )
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=depths, radii=radii)


def rasterize_native(
    projected: ProjectedGaussians,
    features: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    *,
    tile_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """:func:`~lyra_core.rendering.backends.tiles.rasterize_tiles` in C++.

    Args:
        projected: Gaussians projected into C cameras (N per camera).
        features: (C, N, D) features to composite, D <= 58.
        opacities: (N,) opacities in [0, 1].
        width, height: image size, pixels.
        tile_size: tile edge, pixels.

    Returns:
        ``(accumulated, transmittance)``: (C, H, W, D) and (C, H, W).
    """
    return _RasterizeFunction.apply(
        projected.means2d,
        projected.conics,
        features,
        opacities,
        projected.depths,
        projected.radii,
        width,
        height,
        tile_size,
    )


def main() -> int:
    """Build the extension, printing the compiler's log with ``-v``; exit status 1 on failure."""
    if _disabled():
        print(f"{DISABLE_VARIABLE}=0: not building the native CPU rasteriser")
        return 0
    start = time.perf_counter()
    try:
        path = build(verbose="-v" in sys.argv[1:])
    except Exception as err:
        print(f"native CPU rasteriser: build failed: {err}", file=sys.stderr)
        return 1
    print(f"native CPU rasteriser ready: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
