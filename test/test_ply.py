"""Tests for lyra_core.scene.ply."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
import plyfile
import pytest
import torch
from plyfile import PlyData, PlyElement

from lyra_core.geometry.cameras import Cameras
from lyra_core.rendering import render
from lyra_core.scene.gaussians import SH_C0, Gaussians
from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.utils.errors import PlyFormatError
from raw_scenes import FIELDS, assert_scenes_equal, make_scene


def ply_scene(n: int = 16, sh_degree: int = 0, with_times: bool = False) -> Gaussians:
    return make_scene(n, sh_degree, with_times, seed=sh_degree * 2 + with_times)


def standard_names(sh_degree: int, with_times: bool = False) -> list[str]:
    """The 3DGS vertex layout, spelled out independently of the module under test."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return [*names, "time", "duration"] if with_times else names


def header_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines()


def write_standard_ply(path: Path, values: dict[str, np.ndarray], text: bool = False) -> None:
    """Write one vertex element with the given float32 columns straight through plyfile."""
    n = len(next(iter(values.values())))
    record = np.empty(n, dtype=[(name, "f4") for name in values])
    for name, column in values.items():
        record[name] = column
    PlyData([PlyElement.describe(record, "vertex")], text=text).write(str(path))


def known_columns(n: int = 2) -> dict[str, np.ndarray]:
    """Degree-0 columns with easy activations: opacity 0.5, scale 1, rgb 0.5, w=1."""
    cols = {name: np.zeros(n, np.float32) for name in standard_names(0)}
    cols["x"] = np.arange(n, dtype=np.float32)
    cols["rot_0"][:] = 1.0
    return cols


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("with_times", [False, True])
@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(tmp_path: Path, sh_degree: int, with_times: bool) -> None:
    g = ply_scene(sh_degree=sh_degree, with_times=with_times)
    g.means[0, 0] = -0.0
    g.log_scales[1, 1] = 1e-40  # float32 subnormal
    path = tmp_path / "scene.ply"
    write_ply(path, g)
    back = read_ply(path)
    assert back.sh_degree == sh_degree
    assert_scenes_equal(back, g)
    assert math.copysign(1.0, float(back.means[0, 0])) == -1.0
    for name in FIELDS:
        value = getattr(back, name)
        assert value is None or value.is_contiguous(), name
    # write(read(f)) reproduces f byte for byte.
    again = tmp_path / "again.ply"
    write_ply(str(again), back)
    assert again.read_bytes() == path.read_bytes()


def test_empty_scene_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.ply"
    write_ply(path, Gaussians.empty(sh_degree=1, with_times=True))
    back = read_ply(path)
    assert len(back) == 0 and back.sh_degree == 1 and back.times is not None


def test_other_dtypes_are_written_as_float32(tmp_path: Path) -> None:
    g = ply_scene(sh_degree=1).to(dtype=torch.float64)
    path = tmp_path / "f64.ply"
    write_ply(path, g)
    assert_scenes_equal(read_ply(path), g.to(dtype=torch.float32))
    half = ply_scene(sh_degree=1).to(dtype=torch.float16)
    write_ply(path, half)
    assert_scenes_equal(read_ply(path), half.to(dtype=torch.float32))


# ---------------------------------------------------------------------- layout


@pytest.mark.parametrize("with_times", [False, True])
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_header_has_standard_layout(tmp_path: Path, sh_degree: int, with_times: bool) -> None:
    path = tmp_path / "scene.ply"
    write_ply(path, ply_scene(n=5, sh_degree=sh_degree, with_times=with_times))
    lines = header_lines(path)
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 5"]
    assert lines[-1] == "end_header"
    props = lines[3:-1]
    assert all(line.startswith("property float ") for line in props)
    assert [line.split()[-1] for line in props] == standard_names(sh_degree, with_times)
    assert len(path.read_bytes()) == len("\n".join(lines)) + 1 + 5 * 4 * len(props)


def test_written_values_use_3dgs_conventions(tmp_path: Path) -> None:
    g = ply_scene(n=3, sh_degree=1, with_times=True)
    path = tmp_path / "scene.ply"
    write_ply(path, g)
    v = PlyData.read(str(path))["vertex"].data
    assert np.array_equal(v["nx"], np.zeros(3, np.float32))
    assert np.array_equal(v["opacity"], g.opacity_logits.numpy())
    assert np.array_equal(v["scale_2"], g.log_scales[:, 2].numpy())
    assert np.array_equal(v["rot_0"], g.quats[:, 0].numpy())  # w first
    assert np.array_equal(v["f_dc_1"], g.sh[:, 0, 1].numpy())
    # channel-major f_rest: R of coefficients 1..3, then G, then B.
    assert np.array_equal(v["f_rest_0"], g.sh[:, 1, 0].numpy())
    assert np.array_equal(v["f_rest_2"], g.sh[:, 3, 0].numpy())
    assert np.array_equal(v["f_rest_3"], g.sh[:, 1, 1].numpy())
    assert np.array_equal(v["f_rest_8"], g.sh[:, 3, 2].numpy())
    assert np.array_equal(v["time"], g.times.numpy())


def test_reads_plyfile_standard_file_to_known_activations(tmp_path: Path) -> None:
    cols = known_columns()
    cols["scale_1"][:] = math.log(2.0)
    cols["f_dc_2"][1] = 0.5 / SH_C0  # blue 1.0
    cols["opacity"][1] = math.log(3.0)  # sigmoid -> 0.75
    path = tmp_path / "standard.ply"
    write_standard_ply(path, cols)
    g = read_ply(path)
    assert g.dtype == torch.float32 and g.sh_degree == 0 and g.times is None
    torch.testing.assert_close(g.opacities, torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(g.scales, torch.tensor([[1.0, 2.0, 1.0]] * 2))
    torch.testing.assert_close(g.colors, torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 1.0]]))
    torch.testing.assert_close(g.means[:, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(g.quats, torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2))


def test_reads_ascii_with_extra_properties_in_any_order(tmp_path: Path) -> None:
    cols = known_columns()
    cols = {"red": np.ones(2, np.float32), **dict(reversed(list(cols.items())))}
    cols["opacity"][:] = 2.0
    path = tmp_path / "ascii.ply"
    write_standard_ply(path, cols, text=True)
    assert b"format ascii" in path.read_bytes()
    g = read_ply(path)
    torch.testing.assert_close(g.opacity_logits, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(g.means[:, 0], torch.tensor([0.0, 1.0]))


def test_reads_big_endian(tmp_path: Path) -> None:
    g = ply_scene(sh_degree=2, with_times=True)
    path = tmp_path / "scene.ply"
    write_ply(path, g)
    data = PlyData.read(str(path))["vertex"].data.copy()
    big = tmp_path / "big.ply"
    PlyData([PlyElement.describe(data, "vertex")], byte_order=">").write(str(big))
    assert_scenes_equal(read_ply(big), g)


# ---------------------------------------------------------------------- errors


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.ply"
    write_ply(path, ply_scene(n=8, sh_degree=1))
    return path


def rewrite(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert old in data
    out = path.with_name("bad.ply")
    out.write_bytes(data.replace(old, new, 1))
    return out


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "nope.ply")


def test_truncated_file(good_file: Path) -> None:
    data = good_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 10):
        bad = good_file.with_name("cut.ply")
        bad.write_bytes(data[:cut])
        with pytest.raises(PlyFormatError, match=r"cut\.ply: truncated"):
            read_ply(bad)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\xff" * 300, b"ply\n" + bytes(range(256)) * 2, b"not a ply at all\n"],
)
def test_garbage_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.ply"
    path.write_bytes(content)
    with pytest.raises(PlyFormatError, match=r"garbage\.ply"):
        read_ply(path)


def test_wrong_header(good_file: Path) -> None:
    bad = rewrite(good_file, b"binary_little_endian 1.0", b"binary_little_endian 2.0")
    with pytest.raises(PlyFormatError, match="version"):
        read_ply(bad)
    bad = rewrite(good_file, b"element vertex 8", b"element vertex -8")
    with pytest.raises(PlyFormatError, match=r"bad\.ply"):
        read_ply(bad)


def test_missing_property(good_file: Path) -> None:
    bad = rewrite(good_file, b"property float scale_1\n", b"property float other\n")
    with pytest.raises(PlyFormatError, match="missing required vertex properties: scale_1"):
        read_ply(bad)


def test_no_vertex_element(good_file: Path) -> None:
    bad = rewrite(good_file, b"element vertex", b"element splat")
    with pytest.raises(PlyFormatError, match="no 'vertex' element"):
        read_ply(bad)


def test_wrong_f_rest_count(tmp_path: Path) -> None:
    cols = known_columns()
    cols.update({f"f_rest_{i}": np.zeros(2, np.float32) for i in range(10)})
    path = tmp_path / "rest.ply"
    write_standard_ply(path, cols)
    with pytest.raises(PlyFormatError, match=r"f_rest.*got 10"):
        read_ply(path)


def test_misnumbered_f_rest(good_file: Path) -> None:
    bad = rewrite(good_file, b"property float f_rest_8\n", b"property float f_rest_9\n")
    with pytest.raises(PlyFormatError, match="numbered"):
        read_ply(bad)


def test_non_finite_data(tmp_path: Path) -> None:
    cols = known_columns()
    cols["scale_2"][1] = np.inf
    path = tmp_path / "inf.ply"
    write_standard_ply(path, cols)
    with pytest.raises(PlyFormatError, match=r"'scale_2'.*non-finite"):
        read_ply(path)


def columns_of(n: int, sh_degree: int = 0) -> dict[str, np.ndarray]:
    """Valid random columns of ``n`` Gaussians in the standard layout (seeded)."""
    rng = np.random.default_rng(n + sh_degree)
    return {name: rng.normal(size=n).astype(np.float32) for name in standard_names(sh_degree)}


@pytest.mark.parametrize(
    ("prop", "bad", "reason"),
    [
        ("x", np.nan, "non-finite"),
        ("opacity", -np.inf, "non-finite"),
        ("scale_1", np.inf, "non-finite"),
        ("f_dc_2", np.nan, "non-finite"),
        ("f_rest_5", np.nan, "non-finite"),  # sh[:, 2, 1]: the column -> property mapping
        ("rot_3", np.nan, "non-finite"),
        ("scale_1", 50.0, "overflows float32"),  # exp(50)**2 is inf in float32
    ],
)
def test_invalid_gaussians_name_vertex_property_and_count(
    tmp_path: Path, prop: str, bad: float, reason: str
) -> None:
    cols = columns_of(6, sh_degree=1)
    cols[prop][[2, 4]] = bad
    path = tmp_path / "bad_values.ply"
    write_standard_ply(path, cols)
    with pytest.raises(PlyFormatError) as caught:
        read_ply(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: vertex 2, property {prop!r}:")
    assert reason in message and "2 of 6 vertices bad, the first is vertex 2" in message


@pytest.mark.parametrize("value", [0.0, 1e-30, -1e-13])
def test_zero_norm_quaternions_are_refused(tmp_path: Path, value: float) -> None:
    cols = columns_of(5)
    for i in range(4):
        cols[f"rot_{i}"][3] = value
    path = tmp_path / "zero_quat.ply"
    write_standard_ply(path, cols)
    with pytest.raises(PlyFormatError, match=r"vertex 3, properties 'rot_0', 'rot_1', "):
        read_ply(path)
    with pytest.raises(PlyFormatError, match=r"zero-norm quaternion.*1 of 5 vertices bad"):
        read_ply(path)


def test_extreme_but_renderable_values_are_read(tmp_path: Path) -> None:
    cols = columns_of(3)
    for i in range(4):
        cols[f"rot_{i}"][0] = 1e-6  # small, but normalises fine
    cols["scale_0"][1] = 44.0  # the variance exp(88) still fits in float32
    cols["scale_2"][1] = -80.0
    cols["x"][2] = 1e30  # far away: culled by the renderer, not an error
    cols["opacity"][2] = -1e30
    path = tmp_path / "extreme.ply"
    write_standard_ply(path, cols)
    g = read_ply(path)
    assert g.num_gaussians == 3 and float(g.means[2, 0]) == float(np.float32(1e30))
    K = torch.tensor([[[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]])
    cameras = Cameras(torch.eye(4)[None], K, 16, 16)
    out = render(g, cameras, backend="torch")
    assert bool(torch.isfinite(out.rgb).all())


def test_validate_is_the_one_definition(tmp_path: Path) -> None:
    g = ply_scene(n=6)
    g.quats[4] = 1e-20
    with pytest.raises(ValueError, match=r"^quats contains 1 zero-norm.*first at index 4"):
        g.validate()
    with pytest.raises(ValueError, match="zero-norm"):
        write_ply(tmp_path / "never.ply", g)
    assert not (tmp_path / "never.ply").exists()
    g = ply_scene(n=6)
    g.log_scales[5, 0] = 45.0
    invalid = g.find_invalid()
    assert invalid is not None
    assert (invalid.field, invalid.index, invalid.column, invalid.count) == ("log_scales", 5, 0, 1)
    assert ply_scene(n=6).find_invalid() is None


@pytest.mark.parametrize("text", [False, True])
def test_absurd_declared_vertex_count_is_refused_before_reading(tmp_path: Path, text: bool) -> None:
    path = tmp_path / "huge.ply"
    write_standard_ply(path, columns_of(4), text=text)
    data = path.read_bytes().replace(b"element vertex 4\n", b"element vertex 4000000000\n", 1)
    path.write_bytes(data)
    # Without the check plyfile allocates 4e9 rows up front for ASCII files (~250 GiB).
    with pytest.raises(PlyFormatError, match=r"^\S*huge\.ply: truncated.*4000000000 'vertex'"):
        read_ply(path)


def test_absurd_count_of_another_element_is_refused(good_file: Path) -> None:
    header = b"element face 3000000000\nproperty list uchar int vertex_indices\nend_header\n"
    bad = rewrite(good_file, b"end_header\n", header)
    with pytest.raises(PlyFormatError, match=r"3000000000 'face'"):
        read_ply(bad)


# ---------------------------------------------------------------------- atomic writes


def test_failed_validation_leaves_existing_file_untouched(good_file: Path) -> None:
    before = good_file.read_bytes()
    g = ply_scene()
    g.opacity_logits[2] = float("nan")
    with pytest.raises(ValueError, match="opacity_logits"):
        write_ply(good_file, g)
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in good_file.parent.iterdir()) == [good_file.name]


def test_failure_mid_write_removes_temp_file(
    good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = good_file.read_bytes()

    def broken_write(self: PlyData, stream: BinaryIO) -> None:
        stream.write(b"ply\nformat binary_little_endian 1.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(plyfile.PlyData, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_ply(good_file, ply_scene())
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in good_file.parent.iterdir()) == [good_file.name]


def test_write_creates_only_the_target(tmp_path: Path) -> None:
    write_ply(tmp_path / "a.ply", ply_scene())
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]
    with pytest.raises(FileNotFoundError):
        write_ply(tmp_path / "missing_dir" / "a.ply", ply_scene())
