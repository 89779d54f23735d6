"""4D worlds: Gaussians with times and durations, PLY columns, render(time=...)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import PlyFormatError, read_ply, write_ply
from raw_scenes import assert_scenes_equal, make_scene


def blob(x: float, color: tuple[float, float, float], n: int = 1) -> Gaussians:
    """``n`` opaque 0.15 m Gaussians at ``(x, 0, 3)`` of one colour."""
    return Gaussians.from_activated(
        means=torch.tensor([[x, 0.0, 3.0]]).repeat(n, 1),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        scales=torch.full((n, 3), 0.15),
        opacities=torch.full((n,), 0.99),
        colors=torch.tensor([color], dtype=torch.float32).repeat(n, 1),
    )


def camera(size: int = 48) -> Cameras:
    K = [[40.0, 0.0, size / 2], [0.0, 40.0, size / 2], [0.0, 0.0, 1.0]]
    return Cameras.from_intrinsics(torch.eye(4)[None], Intrinsics.from_matrix(K, size, size))


def moving_world() -> Gaussians:
    """A red blob that moves along x at 0.5 m/s over 0..2 s (slices every 0.5 s), and a
    static grey blob above it."""
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    slices = [blob(-0.5 + 0.5 * t, (1.0, 0.0, 0.0)) for t in times]
    static = blob(0.0, (0.5, 0.5, 0.5))
    static.means[:, 1] = -0.8
    return Gaussians.from_time_slices(slices, times, static=static)


def test_from_time_slices_sets_times_and_durations() -> None:
    world = moving_world()
    assert len(world) == 6
    assert world.times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 0.0]
    assert world.durations[:5].tolist() == [0.5] * 5
    assert math.isinf(float(world.durations[5]))
    assert world.time_range == (0.0, 2.0)
    # Uneven gaps: each slice spans the times nearest to it, mirrored at the ends:
    # [-0.5, 0.5), [0.5, 2), [2, 4).
    uneven = Gaussians.from_time_slices([blob(0, (1, 0, 0))] * 3, [0.0, 1.0, 3.0])
    assert uneven.times.tolist() == [0.0, 1.25, 3.0]
    assert uneven.durations.tolist() == [1.0, 1.5, 2.0]
    assert uneven.time_range == (0.0, 3.0)
    for t, k in [(0.49, 0), (0.5, 1), (1.99, 1), (2.0, 2), (2.9, 2)]:
        assert len(uneven.at_time(t)) == 1, t
        expected = uneven[k]
        assert torch.equal(uneven.at_time(t).means, expected.means)
    single = Gaussians.from_time_slices([blob(0, (1, 0, 0))], [4.0])
    assert math.isinf(float(single.durations[0])) and single.time_range is None


@pytest.mark.parametrize(
    ("t", "expected_x"),
    [
        (0.0, -0.5),
        (0.2, -0.5),
        (0.25, -0.25),
        (0.74, -0.25),
        (0.75, 0.0),
        (1.9, 0.5),
        (9.0, 0.5),
        (-3.0, -0.5),
    ],
)
def test_step_mode_shows_the_nearest_slice_and_clamps(t: float, expected_x: float) -> None:
    at = moving_world().at_time(t)
    assert at.times is None and at.durations is None
    assert len(at) == 2  # one slice + the static blob
    moving = at.means[at.means[:, 1] == 0.0]
    assert moving[:, 0].tolist() == [expected_x]


def test_blend_mode_cross_fades_two_slices() -> None:
    world = moving_world()
    at = world.at_time(0.6, mode="blend")
    # Slices at 0.5 (weight 0.8) and 1.0 (weight 0.2) plus the static blob.
    assert len(at) == 3
    base = float(blob(0, (1, 0, 0)).opacities[0])
    moving = at.means[:, 1] == 0.0
    torch.testing.assert_close(
        at.opacities[moving], torch.tensor([0.8 * base, 0.2 * base]), rtol=1e-5, atol=1e-6
    )
    assert float(at.opacities[~moving][0]) == pytest.approx(base, rel=1e-6)
    # Exactly on a slice time only that slice has weight.
    assert len(world.at_time(1.0, mode="blend")) == 2


def test_blend_is_differentiable() -> None:
    world = moving_world()
    world.opacity_logits.requires_grad_(True)
    world.at_time(0.6, mode="blend").opacities.sum().backward()
    grad = world.opacity_logits.grad
    assert grad[1] > 0 and grad[2] > 0 and grad[0] == 0 and grad[3] == 0


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_render_at_time_matches_the_slice(backend: str) -> None:
    world = moving_world()
    cams = camera()
    for t in (0.0, 1.0, 2.0):
        at_t = render(world, cams, time=t, backend=backend)
        expected = render(world.at_time(t), cams, backend=backend)
        torch.testing.assert_close(at_t.rgb, expected.rgb)
        # The red blob's centre column moves right with time: x/z * f + c.
        red = at_t.rgb[0, :, :, 0] - at_t.rgb[0, :, :, 1]
        column = int(red.sum(dim=0).argmax())
        assert abs(column - (24 + 40 * (-0.5 + 0.5 * t) / 3.0)) <= 1


def test_render_needs_a_time_for_4d_and_checks_it() -> None:
    world = moving_world()
    with pytest.raises(ValueError, match="needs time="):
        render(world, camera())
    with pytest.raises(ValueError, match="finite"):
        render(world, camera(), time=float("nan"))
    with pytest.raises(ValueError, match="time mode"):
        render(world, camera(), time=0.0, time_mode="nearest")
    static = blob(0.0, (1, 1, 1))
    torch.testing.assert_close(render(static, camera(), time=5.0).rgb, render(static, camera()).rgb)
    with pytest.raises(ValueError, match="finite"):
        render(static, camera(), time=float("inf"))


def test_durations_validation() -> None:
    g = make_scene(n=4, with_times=True)
    g.durations[1] = float("inf")
    g.validate()  # a static Gaussian
    for bad in (0.0, -1.0, float("nan"), float("-inf")):
        g.durations[2] = bad
        with pytest.raises(ValueError, match=r"^durations contains 1 value\(s\) that are NaN"):
            g.validate()
    with pytest.raises(ValueError, match="together"):
        Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, times=g.times)
    with pytest.raises(ValueError, match="3D scenes"):
        Gaussians.from_time_slices([g], [0.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        Gaussians.from_time_slices([blob(0, (1, 0, 0))] * 2, [1.0, 1.0])


def test_ply_round_trip_keeps_time_and_static_inf(tmp_path: Path) -> None:
    world = moving_world()
    path = tmp_path / "world4d.ply"
    write_ply(path, world)
    back = read_ply(path)
    assert_scenes_equal(back, world)
    assert math.isinf(float(back.durations[-1]))
    # 3D files are unchanged: no time columns.
    write_ply(tmp_path / "static.ply", blob(0, (1, 0, 0)))
    names = PlyData.read(str(tmp_path / "static.ply"))["vertex"].data.dtype.names
    assert "time" not in names and "duration" not in names


def test_ply_with_time_but_no_duration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "world4d.ply"
    write_ply(path, moving_world())
    data = PlyData.read(str(path))["vertex"].data
    names = [n for n in data.dtype.names if n != "duration"]
    stripped = np.empty(len(data), dtype=[(n, "<f4") for n in names])
    for n in names:
        stripped[n] = data[n]
    bad = tmp_path / "bad.ply"
    PlyData([PlyElement.describe(stripped, "vertex")]).write(str(bad))
    with pytest.raises(PlyFormatError, match="both the 'time' and 'duration'"):
        read_ply(bad)
    data["duration"][0] = -1.0
    PlyData([PlyElement.describe(data, "vertex")]).write(str(bad))
    with pytest.raises(PlyFormatError, match="property 'duration'"):
        read_ply(bad)
