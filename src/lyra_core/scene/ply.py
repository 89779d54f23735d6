"""Read and write :class:`~lyra_core.scene.gaussians.Gaussians` as standard 3DGS PLY files.

The layout is the one written by the graphdeco 3DGS code and gsplat, which common splat
viewers open: ``binary_little_endian 1.0``, one ``vertex`` element with float32 properties

``x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3(K-1)-1} opacity scale_0..2 rot_0..3
[time duration]``

holding the raw parameters: ``opacity`` is the logit, ``scale_i`` the log scale, ``rot`` the
``(w, x, y, z)`` quaternion, ``f_dc`` the DC SH term and ``f_rest`` the higher SH terms in
channel-major order (all red coefficients, then green, then blue). Normals are written as 0
and ignored on read. The optional trailing ``time`` and ``duration`` properties (together or
not at all) hold each Gaussian's time and temporal extent in seconds (4D worlds; ``duration``
may be ``inf``, a static Gaussian); 3D files have neither.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError
from torch import Tensor

from lyra_core.scene.gaussians import MAX_SH_DEGREE, Gaussians, InvalidGaussians, num_sh_coeffs
from lyra_core.utils.atomic import STALE_TEMP_AGE_S, atomic_write, sweep_stale_temp_files
from lyra_core.utils.errors import PlyFormatError

__all__ = ["PlyFormatError", "read_ply", "write_ply"]

StrPath = str | os.PathLike[str]

_VERTEX = "vertex"
_NORMALS = ("nx", "ny", "nz")
_TIME = "time"
_DURATION = "duration"
# Parameters without f_rest, in file order; f_rest_* go between f_dc_2 and opacity.
_HEAD = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2")
_TAIL = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_REST_PREFIX = "f_rest_"
# Number of f_rest_* properties -> SH degree: 3 * ((d + 1)**2 - 1).
_DEGREE_BY_REST_COUNT = {3 * (num_sh_coeffs(d) - 1): d for d in range(MAX_SH_DEGREE + 1)}
# Bytes of each PLY scalar type, for the size check of the header's element counts.
_TYPE_BYTES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "int32", "uint32", "float", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}
# How much of a file the header size check reads (3DGS headers take about 2 KiB).
_HEADER_READ_LIMIT = 1 << 20
# What plyfile and numpy raise on malformed input; wrapped into PlyFormatError.
_PARSE_ERRORS = (
    PlyParseError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    OverflowError,
    struct.error,
)


def _rest_names(sh_degree: int) -> list[str]:
    return [f"{_REST_PREFIX}{i}" for i in range(3 * (num_sh_coeffs(sh_degree) - 1))]


def _property_names(sh_degree: int, with_times: bool) -> list[str]:
    """All vertex property names written by :func:`write_ply`, in file order."""
    names = [*_HEAD[:3], *_NORMALS, *_HEAD[3:], *_rest_names(sh_degree), *_TAIL]
    return [*names, _TIME, _DURATION] if with_times else names


def _sh_names(sh_degree: int) -> list[str]:
    """Property of each element of a ``(K, 3)`` SH block, in row-major order.

    ``sh[k, c]`` is ``f_dc_c`` for ``k = 0`` and ``f_rest_{c * (K - 1) + k - 1}`` otherwise
    (channel-major ``f_rest``: all red coefficients, then green, then blue).
    """
    k = num_sh_coeffs(sh_degree)
    return [
        f"f_dc_{c}" if i == 0 else f"{_REST_PREFIX}{c * (k - 1) + i - 1}"
        for i in range(k)
        for c in range(3)
    ]


def _field_names(sh_degree: int, with_times: bool) -> dict[str, list[str]]:
    """Properties of each :class:`Gaussians` field, in the field tensor's memory order."""
    fields = {
        "means": list(_HEAD[:3]),
        "quats": [f"rot_{i}" for i in range(4)],
        "log_scales": [f"scale_{i}" for i in range(3)],
        "opacity_logits": ["opacity"],
        "sh": _sh_names(sh_degree),
    }
    if with_times:
        fields["times"] = [_TIME]
        fields["durations"] = [_DURATION]
    return fields


# ---------------------------------------------------------------------- writing


def _to_cpu_float32(t: Tensor) -> Tensor:
    """``t`` detached, as float32 on the CPU (from any device and dtype)."""
    return t.detach().to(device="cpu", dtype=torch.float32)


def _vertex_array(gaussians: Gaussians) -> np.ndarray:
    """``(N,)`` structured little-endian float32 array in the standard 3DGS layout."""
    g = gaussians
    n = g.num_gaussians
    # (N, K-1, 3) -> (N, 3, K-1) -> (N, 3*(K-1)): all R coefficients, then G, then B.
    rest = g.sh[:, 1:].transpose(1, 2).reshape(n, 3 * (g.sh.shape[1] - 1))
    normals = g.means.new_zeros(n, len(_NORMALS))
    blocks = [g.means, normals, g.sh[:, 0], rest, g.opacity_logits[:, None], g.log_scales, g.quats]
    if g.times is not None:
        blocks += [g.times[:, None], g.durations[:, None]]
    table = torch.cat([_to_cpu_float32(b) for b in blocks], dim=1).numpy()
    names = _property_names(g.sh_degree, g.times is not None)
    record = np.dtype([(name, "<f4") for name in names])
    return table.astype("<f4", copy=False).view(record).reshape(n)


def write_ply(path: StrPath, gaussians: Gaussians) -> None:
    """Write ``gaussians`` to ``path`` as a standard binary 3DGS PLY, atomically.

    Tensors on any device and of any floating dtype are written as float32; float32 scenes
    round-trip bit-exactly through :func:`read_ply`. The parent directory must exist.

    The write goes through :func:`~lyra_core.utils.atomic.atomic_write`: readers see the old
    file or the new one, an existing file keeps its mode and group, and a failed or killed
    write leaves the old file. Temporary files that killed saves left in the target folder
    and that have not changed for :data:`~lyra_core.utils.atomic.STALE_TEMP_AGE_S` seconds
    (ten minutes; a save in progress changes its file far more often) are swept first.

    Raises:
        ValueError: if ``gaussians.validate()`` fails (NaN/inf, zero quaternions, overflowing
            scales); nothing is written then.
        FileNotFoundError: the parent directory does not exist.
    """
    gaussians.validate()
    path = Path(os.fspath(path))
    vertex = PlyElement.describe(_vertex_array(gaussians), _VERTEX)
    ply = PlyData([vertex], text=False, byte_order="<")
    sweep_stale_temp_files(path.parent, older_than=STALE_TEMP_AGE_S)
    with atomic_write(path) as f:
        ply.write(f)


# ---------------------------------------------------------------------- reading


def _sh_degree(path: Path, names: list[str]) -> int:
    """SH degree from the ``f_rest_*`` property names of the vertex element."""
    rest = [name for name in names if name.startswith(_REST_PREFIX)]
    if len(rest) not in _DEGREE_BY_REST_COUNT:
        expected = ", ".join(str(c) for c in _DEGREE_BY_REST_COUNT)
        raise PlyFormatError(
            f"{path}: wrong number of f_rest_* properties: got {len(rest)}, expected one of "
            f"{expected} (SH degree 0 to {MAX_SH_DEGREE})"
        )
    degree = _DEGREE_BY_REST_COUNT[len(rest)]
    if set(rest) != set(_rest_names(degree)):
        raise PlyFormatError(
            f"{path}: f_rest_* properties must be numbered f_rest_0..f_rest_{len(rest) - 1}, "
            f"got {sorted(rest)}"
        )
    return degree


def _check_properties(path: Path, vertex: PlyElement) -> tuple[int, bool]:
    """Check the vertex properties; return ``(sh_degree, has_time)``."""
    props = {p.name: p for p in vertex.properties}
    missing = [name for name in (*_HEAD, *_TAIL) if name not in props]
    if missing:
        raise PlyFormatError(f"{path}: missing required vertex properties: {', '.join(missing)}")
    degree = _sh_degree(path, list(props))
    has_time = _TIME in props
    if has_time != (_DURATION in props):
        raise PlyFormatError(
            f"{path}: a 4D PLY needs both the 'time' and 'duration' vertex properties, "
            f"got only {_TIME if has_time else _DURATION!r}"
        )
    used = [name for names in _field_names(degree, has_time).values() for name in names]
    lists = [name for name in used if isinstance(props[name], PlyListProperty)]
    if lists:
        raise PlyFormatError(f"{path}: properties must be scalars, got lists: {', '.join(lists)}")
    return degree, has_time


def _as_float_matrix(data: np.ndarray) -> np.ndarray | None:
    """``(N, P)`` float32 view of ``data`` if every field is a packed float32, else ``None``.

    Fast path for the usual all-float32 files: one fancy index per field instead of one
    strided copy per property.
    """
    names = data.dtype.names
    if not names:
        return None
    order = data.dtype.fields[names[0]][0].byteorder
    packed = np.dtype([(name, np.dtype("f4").newbyteorder(order)) for name in names])
    if data.dtype != packed:
        return None
    return data.view(packed[0]).reshape(data.shape[0], len(names))


def _gather(
    path: Path, data: np.ndarray, matrix: np.ndarray | None, names: list[str]
) -> np.ndarray:
    """``(N, len(names))`` float32 copy of the named properties (validated later, as a scene).

    ``matrix`` is ``_as_float_matrix(data)``, passed in to compute it once per file.
    """
    if matrix is not None:
        columns = [data.dtype.names.index(name) for name in names]
        return np.take(matrix, columns, axis=1).astype(np.float32, copy=False)
    table = np.empty((data.shape[0], len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        table[:, j] = data[name]
    return table


def _check_declared_sizes(path: Path) -> None:
    """Refuse a header whose element counts need more bytes than the file holds.

    Runs before plyfile, which allocates ``count`` rows up front for ASCII files and files
    with list properties: a corrupt ``element vertex 4000000000`` would otherwise ask for
    hundreds of gigabytes. The bound is a minimum: binary rows take the sizes of their
    scalars (lists at least their length field), ASCII rows at least two bytes (a digit and
    a separator) per property. Headers this check cannot parse are left to plyfile's own
    errors.
    """
    with open(path, "rb") as f:
        head = f.read(_HEADER_READ_LIMIT)
        file_size = os.fstat(f.fileno()).st_size
    end = head.find(b"end_header")
    newline = head.find(b"\n", end) if end >= 0 else -1
    if newline < 0:
        return
    try:
        lines = head[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        return
    fmt = None
    elements: list[list] = []  # [name, count, minimum bytes per row]
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "format":
            fmt = words[1]
        elif len(words) == 3 and words[0] == "element":
            if not words[2].isdigit():
                return
            elements.append([words[1], int(words[2]), 0])
        elif len(words) >= 3 and words[0] == "property" and elements:
            type_name = words[2] if words[1] == "list" else words[1]
            if type_name not in _TYPE_BYTES:
                return
            elements[-1][2] += 2 if fmt == "ascii" else _TYPE_BYTES[type_name]
    if fmt is None:
        return
    need = sum(count * row for _, count, row in elements) - (fmt == "ascii")
    available = file_size - (newline + 1)
    if need > available:
        declared = ", ".join(f"{count} {name!r}" for name, count, _ in elements)
        raise PlyFormatError(
            f"{path}: truncated PLY file or corrupt header: it declares {declared} elements, "
            f"at least {need} bytes, but only {available} bytes follow the header"
        )


def _invalid_gaussians_error(
    path: Path, invalid: InvalidGaussians, n: int, sh_degree: int, has_time: bool
) -> PlyFormatError:
    """A :class:`PlyFormatError` naming the vertex and the PLY property of ``invalid``."""
    props = _field_names(sh_degree, has_time)[invalid.field]
    if invalid.column is None:
        where = "properties " + ", ".join(repr(p) for p in props)
    else:
        where = f"property {props[invalid.column]!r}"
    return PlyFormatError(
        f"{path}: vertex {invalid.index}, {where}: {invalid.field} {invalid.reason} "
        f"({invalid.count} of {n} vertices bad, the first is vertex {invalid.index})"
    )


def _describe_parse_error(error: Exception) -> str:
    """A short reason for a plyfile/numpy parse failure."""
    if isinstance(error, UnicodeDecodeError):
        return f"not a PLY file: the header is not ASCII text ({error.reason})"
    if "end-of-file" in str(error):
        return f"truncated PLY file: {error}"
    return f"not a readable PLY file: {error}"


def _load(path: Path) -> tuple[np.ndarray, int, bool]:
    """Parse ``path``; return its ``(N,)`` structured vertex data, SH degree and time flag."""
    _check_declared_sizes(path)
    try:
        ply = PlyData.read(os.fspath(path))
    except FileNotFoundError:
        raise
    except _PARSE_ERRORS as e:
        raise PlyFormatError(f"{path}: {_describe_parse_error(e)}") from e
    if _VERTEX not in ply:
        found = ", ".join(repr(e.name) for e in ply.elements) or "none"
        raise PlyFormatError(f"{path}: no 'vertex' element (elements found: {found})")
    vertex = ply[_VERTEX]
    degree, has_time = _check_properties(path, vertex)
    return vertex.data, degree, has_time


def read_ply(path: StrPath, device: torch.device | str | None = None) -> Gaussians:
    """Read a 3DGS PLY into a float32 :class:`Gaussians` on ``device`` (default CPU).

    Accepts binary (either endianness) and ASCII files. Unknown properties (normals,
    colours, ...) and other elements are ignored. Requires ``x y z``, ``f_dc_0..2``,
    ``opacity``, ``scale_0..2`` and ``rot_0..3``; the SH degree follows from the number of
    ``f_rest_*`` properties (0, 9, 24 or 45); ``time`` and ``duration`` properties fill
    ``times`` and ``durations`` (4D).

    The Gaussians read must pass :meth:`Gaussians.validate` (finite values, quaternions that
    can be normalised, scales whose square fits in float32): one bad vertex would make every
    render of the scene fail, so the file is refused with the first bad vertex, its property
    and the number of bad vertices.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        PlyFormatError: if the file is not a valid 3DGS PLY (bad or truncated header or
            data, element counts larger than the file, missing vertex element or
            properties, wrong ``f_rest`` count) or holds invalid Gaussians.
    """
    path = Path(os.fspath(path))
    data, degree, has_time = _load(path)
    n = data.shape[0]
    matrix = _as_float_matrix(data)
    fields = {}
    for field, names in _field_names(degree, has_time).items():
        try:
            table = _gather(path, data, matrix, names)
        except _PARSE_ERRORS as e:
            raise PlyFormatError(f"{path}: cannot read {field} as float32: {e}") from e
        fields[field] = torch.from_numpy(table)
    gaussians = Gaussians(
        means=fields["means"],
        quats=fields["quats"],
        log_scales=fields["log_scales"],
        opacity_logits=fields["opacity_logits"].reshape(n),
        sh=fields["sh"].reshape(n, num_sh_coeffs(degree), 3),
        times=fields["times"].reshape(n) if has_time else None,
        durations=fields["durations"].reshape(n) if has_time else None,
    )
    invalid = gaussians.find_invalid()
    if invalid is not None:
        raise _invalid_gaussians_error(path, invalid, n, degree, has_time)
    return gaussians if device is None else gaussians.to(device)
