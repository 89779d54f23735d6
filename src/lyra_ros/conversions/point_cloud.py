"""Coloured point clouds: ``sensor_msgs/PointCloud2`` <-> NumPy positions and colours.

``sensor_msgs_py.point_cloud2`` is used when it is importable (a ROS install) for the plain cases
every version of it handles (native byte order, no row padding); otherwise, or if it fails on
input that passed the checks here, the NumPy code below does the work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from lyra_ros.conversions._common import ArrayLike, _byte_array, _copy_header, _rows, _to_numpy

try:
    from sensor_msgs_py import point_cloud2
except ImportError:
    point_cloud2 = None

__all__ = ["pointcloud2_from_points", "pointcloud2_to_numpy"]


_CLOUD_POINT_STEP = 16

_FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}


def _colors_uint8(colors: ArrayLike, n: int) -> np.ndarray:
    """``(N, 3)`` uint8 colours from uint8, integer ``[0, 255]`` or float ``[0, 1]`` input."""
    values = _to_numpy("colors", colors)
    if values.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3) like points, got {values.shape}")
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ValueError("colors contain NaN or inf")
        return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError("integer colors must lie in [0, 255]")
        return values.astype(np.uint8)
    raise ValueError(f"colors must be uint8 or float in [0, 1], got dtype {values.dtype}")


def _cloud_fields() -> list[PointField]:
    """Fields of :func:`pointcloud2_from_points`: x, y, z and packed rgb, all FLOAT32.

    The colour ``0x00RRGGBB`` is stored in the bits of a float32, as RViz and PCL expect.
    """
    names = ("x", "y", "z", "rgb")
    return [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(names)
    ]


def _pack_rgb(colors: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 -> ``(N,)`` uint32 ``0x00RRGGBB``."""
    c = colors.astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """``(N,)`` uint32 ``0x??RRGGBB`` -> ``(N, 3)`` uint8."""
    shifts = np.array([16, 8, 0], dtype=np.uint32)
    return ((packed[:, None] >> shifts) & 0xFF).astype(np.uint8)


def pointcloud2_from_points(
    points: ArrayLike, colors: ArrayLike, header: Header | None = None
) -> PointCloud2:
    """Coloured ``sensor_msgs/PointCloud2``: height 1, little-endian, FLOAT32 x, y, z, rgb.

    Args:
        points: ``(N, 3)`` positions, meters (cast to float32).
        colors: ``(N, 3)`` uint8, or float in ``[0, 1]`` (clipped, rounded to 8 bits).
        header: Copied into the message.

    Returns:
        Cloud with ``point_step`` 16; ``is_dense`` is True unless a point is NaN/inf.

    Raises:
        ValueError: Wrong shapes or dtypes, or NaN/inf colours.
    """
    xyz = _to_numpy("points", points)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {xyz.shape}")
    if not (np.issubdtype(xyz.dtype, np.floating) or np.issubdtype(xyz.dtype, np.integer)):
        raise ValueError(f"points must be numeric, got dtype {xyz.dtype}")
    rgb = _pack_rgb(_colors_uint8(colors, len(xyz)))
    # One (N, 4) little-endian float32 block: xyz, then the packed colour bits (integer writes
    # only, so no float operation can touch them).
    block = np.empty((len(xyz), 4), dtype="<f4")
    block[:, :3] = xyz
    block.view("<u4")[:, 3] = rgb
    msg = _create_cloud_ros(block) if sys.byteorder == "little" else None
    if msg is None:
        msg = PointCloud2(height=1, width=len(block), fields=_cloud_fields())
        msg.is_bigendian = False
        msg.point_step = _CLOUD_POINT_STEP
        msg.row_step = _CLOUD_POINT_STEP * len(block)
        msg.data = _byte_array(block)
    msg.header = _copy_header(header)
    msg.is_dense = bool(np.isfinite(block[:, :3]).all())
    return msg


def _create_cloud_ros(block: np.ndarray) -> PointCloud2 | None:
    """``sensor_msgs_py.point_cloud2.create_cloud`` of an ``(N, 4)`` float32 block, if usable."""
    if point_cloud2 is None:
        return None
    try:
        return point_cloud2.create_cloud(Header(), _cloud_fields(), block)
    except Exception:  # an older or broken sensor_msgs_py: use the numpy code
        return None


def _field(msg: PointCloud2, names: Sequence[str], required: bool) -> PointField | None:
    """First field of ``msg`` named one of ``names``; ``ValueError`` if required and absent."""
    by_name = {f.name: f for f in msg.fields}
    for name in names:
        if name in by_name:
            return by_name[name]
    if required:
        present = ", ".join(repr(n) for n in by_name) or "none"
        raise ValueError(f"PointCloud2 has no field {names[0]!r} (fields: {present})")
    return None


def _field_dtype(field: PointField, point_step: int) -> np.dtype:
    """Dtype of ``field``, checked to lie inside one point of ``point_step`` bytes."""
    dtype = _FIELD_DTYPES.get(field.datatype)
    if dtype is None:
        raise ValueError(
            f"PointCloud2 field {field.name!r} has unknown datatype {field.datatype}; "
            "expected a sensor_msgs/PointField constant in 1..8"
        )
    if field.offset + dtype.itemsize > point_step:
        raise ValueError(
            f"PointCloud2 field {field.name!r} (offset {field.offset}, {dtype.itemsize} bytes) "
            f"does not fit in point_step {point_step}"
        )
    return dtype


def _cloud_layout(msg: PointCloud2) -> tuple[list[PointField], np.dtype]:
    """Validate ``msg``; return the fields to read (x, y, z, colour?) and their record dtype.

    The colour field is read as an unsigned integer of its byte order, whatever its datatype.
    """
    fields = [_field(msg, (axis,), required=True) for axis in ("x", "y", "z")]
    colour = _field(msg, ("rgb", "rgba"), required=False)
    if colour is not None:
        fields.append(colour)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    width, height = int(msg.width), int(msg.height)
    dtypes = [_field_dtype(f, point_step) for f in fields]
    if colour is not None and dtypes[-1].itemsize != 4:
        raise ValueError(
            f"PointCloud2 colour field {colour.name!r} must be 4 bytes (FLOAT32, UINT32 or "
            f"INT32), got datatype {colour.datatype}"
        )
    if row_step < width * point_step:
        raise ValueError(
            f"PointCloud2 row_step {row_step} is smaller than width * point_step = "
            f"{width} * {point_step} = {width * point_step}"
        )
    if len(msg.data) != height * row_step:
        raise ValueError(
            f"PointCloud2 data has {len(msg.data)} bytes, expected height * row_step = "
            f"{height} * {row_step} = {height * row_step}"
        )
    if colour is not None:
        dtypes[-1] = np.dtype(np.uint32)
    order = ">" if msg.is_bigendian else "<"
    record = np.dtype(
        {
            "names": [f"f{i}" for i in range(len(fields))],
            "formats": [d.newbyteorder(order) for d in dtypes],
            "offsets": [f.offset for f in fields],
            "itemsize": point_step,
        }
    )
    return fields, record


def _read_points_ros(msg: PointCloud2, fields: list[PointField]) -> list[np.ndarray] | None:
    """Columns of ``fields`` read by ``sensor_msgs_py.point_cloud2.read_points``, if usable."""
    native = bool(msg.is_bigendian) == (sys.byteorder == "big")
    if point_cloud2 is None or not native or msg.row_step != msg.width * msg.point_step:
        return None
    try:
        records = point_cloud2.read_points(msg, field_names=[f.name for f in fields])
        return [np.asarray(records[f.name]).reshape(-1) for f in fields]
    except Exception:  # an older or broken sensor_msgs_py: use the numpy code
        return None


def pointcloud2_to_numpy(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Positions and colours of a ``sensor_msgs/PointCloud2``.

    Reads any field offsets, ``point_step``, ``row_step`` padding and byte order, so clouds
    from :func:`pointcloud2_from_points`, ``sensor_msgs_py.point_cloud2.create_cloud`` or
    drivers all work. x, y and z may have any numeric datatype; the colour is the packed
    ``0x??RRGGBB`` field ``rgb`` (or ``rgba``), FLOAT32, UINT32 or INT32.

    Returns:
        ``points``: ``(N, 3)`` float32 meters (``N = width * height``, row-major).
        ``colors``: ``(N, 3)`` uint8 RGB, zeros when the cloud has no colour field.

    Raises:
        ValueError: Missing x/y/z, unknown datatypes, fields outside ``point_step``, a
            ``row_step`` smaller than ``width * point_step`` or a wrong data length.
    """
    fields, record = _cloud_layout(msg)
    width, height = int(msg.width), int(msg.height)
    columns = _read_points_ros(msg, fields) if width * height else None
    if columns is None:
        rows = _rows(msg.data, height, int(msg.row_step), width * int(msg.point_step))
        records = rows.view(record).reshape(-1) if width * height else np.empty(0, record)
        columns = [records[f"f{i}"] for i in range(len(fields))]
    points = np.stack(columns[:3], axis=-1).astype(np.float32)
    if len(columns) == 3:
        return points, np.zeros((len(points), 3), dtype=np.uint8)
    return points, _unpack_rgb(_bits_uint32(columns[3]))


def _bits_uint32(column: np.ndarray) -> np.ndarray:
    """``(N,)`` native uint32 holding the bits of a 4-byte column of any type and byte order."""
    values = np.ascontiguousarray(column)
    bits = values.view(np.dtype(np.uint32).newbyteorder(values.dtype.byteorder))
    return bits.astype(np.uint32)
