"""Tests for lyra_core.geometry.trajectories: the six Lyra trajectories and waypoint
interpolation."""

from __future__ import annotations

import math

import pytest
import torch

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import (
    LYRA_CIRCLE_RADII,
    LYRA_MAGNITUDE_RANGES,
    LYRA_TRAJECTORY_NAMES,
    lyra_trajectories,
    lyra_trajectory,
    sample_lyra_magnitude,
    waypoint_trajectory,
)
from lyra_core.geometry.transforms import look_at, rigid_inverse

DEPTH = 2.5
N = 121


@pytest.fixture
def pose() -> torch.Tensor:
    """A non-trivial input camera-to-world pose (float32)."""
    return look_at(
        torch.tensor([0.4, -1.2, 0.7]),
        torch.tensor([3.0, 0.5, 2.0]),
        torch.tensor([0.1, 0.2, 1.0]),
    )


def _offsets(traj: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` camera-centre offsets expressed in the input camera frame."""
    R0, c0 = pose[:3, :3].double(), pose[:3, 3].double()
    return (traj[:, :3, 3].double() - c0) @ R0


def _look_at_point(pose: torch.Tensor) -> torch.Tensor:
    return pose[:3, 3].double() + DEPTH * pose[:3, 2].double()


def test_names_and_ranges_documented():
    assert LYRA_TRAJECTORY_NAMES == ("left", "right", "up", "zoom_out", "zoom_in", "clockwise")
    assert set(LYRA_MAGNITUDE_RANGES) == set(LYRA_TRAJECTORY_NAMES)
    assert LYRA_MAGNITUDE_RANGES["clockwise"] == (0.4, 0.6)


def test_all_trajectories_start_at_input_and_are_valid(pose):
    trajs = lyra_trajectories(pose, DEPTH, num_frames=N)
    assert list(trajs) == list(LYRA_TRAJECTORY_NAMES)
    for name, traj in trajs.items():
        assert traj.shape == (N, 4, 4) and traj.dtype == torch.float32, name
        assert torch.equal(traj[0], pose), name
        R = traj[:, :3, :3].double()
        eye = torch.eye(3, dtype=torch.float64).expand_as(R)
        torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=1e-5, rtol=0)
        # No jumps between consecutive frames.
        steps = (traj[1:, :3, 3] - traj[:-1, :3, 3]).norm(dim=-1)
        assert float(steps.max()) < 0.05 * DEPTH, name


@pytest.mark.parametrize(
    ("name", "axis", "sign"),
    [("left", 0, -1.0), ("right", 0, 1.0), ("up", 1, -1.0), ("zoom_in", 2, 1.0)],
)
def test_linear_trajectories_move_along_input_axes(pose, name, axis, sign):
    magnitude = 0.25
    traj = lyra_trajectory(name, pose, DEPTH, num_frames=N, magnitude=magnitude)
    off = _offsets(traj, pose)
    expected = torch.zeros(3, dtype=torch.float64)
    expected[axis] = sign * magnitude * DEPTH
    torch.testing.assert_close(off[-1], expected, atol=1e-5, rtol=0)
    # Monotonic eased motion: progress along the axis never goes backwards, starts slow.
    progress = sign * off[:, axis]
    assert bool((progress[1:] >= progress[:-1] - 1e-6).all())
    assert float(progress[1]) < float(progress[-1]) / (N - 1)


def test_zoom_changes_distance_to_look_at_point(pose):
    p = _look_at_point(pose)
    magnitude = 0.35
    for name, sign in (("zoom_in", -1.0), ("zoom_out", 1.0)):
        traj = lyra_trajectory(name, pose, DEPTH, num_frames=N, magnitude=magnitude)
        dist = (traj[:, :3, 3].double() - p).norm(dim=-1)
        assert float(dist[0]) == pytest.approx(DEPTH, rel=1e-5)
        assert float(dist[-1] - dist[0]) == pytest.approx(sign * magnitude * DEPTH, rel=1e-4)


def test_every_frame_looks_at_the_look_at_point(pose):
    k = Intrinsics.from_fov(1.0, 64, 48)
    K = k.matrix(torch.float64)
    p = _look_at_point(pose)
    up_input = -pose[:3, 1].double()
    for name, traj in lyra_trajectories(pose, DEPTH, seed=7).items():
        viewmats = rigid_inverse(traj.double())
        p_cam = viewmats[:, :3, :3] @ p + viewmats[:, :3, 3]
        assert bool((p_cam[:, 2] > 0).all()), name
        uv = (p_cam @ K.T)[:, :2] / p_cam[:, 2:]
        torch.testing.assert_close(uv[:, 0], torch.full_like(uv[:, 0], k.cx), atol=1e-3, rtol=0)
        torch.testing.assert_close(uv[:, 1], torch.full_like(uv[:, 1], k.cy), atol=1e-3, rtol=0)
        # The input up direction stays level: camera x is orthogonal to it, camera -y leans up.
        x_axes, y_axes = traj[:, :3, 0].double(), traj[:, :3, 1].double()
        torch.testing.assert_close(x_axes @ up_input, torch.zeros(len(traj), dtype=torch.float64))
        assert bool(((-y_axes) @ up_input > 0.5).all()), name


def test_clockwise_circle_geometry(pose):
    magnitude = 0.5
    num_frames = 241
    traj = lyra_trajectory("clockwise", pose, DEPTH, num_frames=num_frames, magnitude=magnitude)
    off = _offsets(traj, pose)
    rx, ry = (f * magnitude * DEPTH for f in LYRA_CIRCLE_RADII)
    # Closed after each full circle (two circles over the trajectory).
    for i in (0, (num_frames - 1) // 2, num_frames - 1):
        torch.testing.assert_close(off[i], torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    # Stays in the input camera's x-y plane on the ellipse centred at (-rx, 0).
    torch.testing.assert_close(off[:, 2], torch.zeros(num_frames, dtype=torch.float64))
    ellipse = ((off[:, 0] + rx) / rx) ** 2 + (off[:, 1] / ry) ** 2
    torch.testing.assert_close(ellipse, torch.ones_like(ellipse), atol=1e-4, rtol=0)
    assert float(off[:, 0].min()) == pytest.approx(-2 * rx, rel=1e-3)
    assert float(off[:, 1].max()) == pytest.approx(ry, rel=1e-3)
    assert float(off[:, 1].min()) == pytest.approx(-ry, rel=1e-3)
    # Clockwise in image space (x right, y down): positive shoelace sum = 2 * area.
    x, y = off[: (num_frames - 1) // 2 + 1, 0], off[: (num_frames - 1) // 2 + 1, 1]
    shoelace = float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum())
    assert shoelace == pytest.approx(2 * math.pi * rx * ry, rel=1e-2)
    assert float(off[5, 1]) > 0  # first moves image-down


@pytest.mark.parametrize("name", LYRA_TRAJECTORY_NAMES)
def test_sampled_magnitudes_in_documented_range(name):
    low, high = LYRA_MAGNITUDE_RANGES[name]
    gen = torch.Generator().manual_seed(11)
    draws = [sample_lyra_magnitude(name, gen) for _ in range(200)]
    assert all(low <= m <= high for m in draws)
    assert max(draws) - min(draws) > 0.8 * (high - low)  # actually spans the range


def test_sampled_displacement_in_range(pose):
    for seed in range(10):
        trajs = lyra_trajectories(pose, DEPTH, seed=seed)
        for name in ("left", "right", "up", "zoom_in", "zoom_out"):
            low, high = LYRA_MAGNITUDE_RANGES[name]
            moved = float(_offsets(trajs[name], pose)[-1].norm()) / DEPTH
            assert low - 1e-5 <= moved <= high + 1e-5, (seed, name, moved)
        width = -float(_offsets(trajs["clockwise"], pose)[:, 0].min()) / DEPTH
        magnitude = width / (2 * LYRA_CIRCLE_RADII[0])
        low, high = LYRA_MAGNITUDE_RANGES["clockwise"]
        assert low - 0.01 <= magnitude <= high + 1e-5, (seed, magnitude)


def test_seed_determinism(pose):
    a = lyra_trajectories(pose, DEPTH, seed=3)
    b = lyra_trajectories(pose, DEPTH, seed=3)
    c = lyra_trajectories(pose, DEPTH, seed=4)
    for name in LYRA_TRAJECTORY_NAMES:
        assert torch.equal(a[name], b[name]), name
        assert not torch.allclose(a[name], c[name]), name
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(
        lyra_trajectory("up", pose, DEPTH, generator=g1),
        lyra_trajectory("up", pose, DEPTH, generator=g2),
    )


@pytest.mark.parametrize("name", LYRA_TRAJECTORY_NAMES)
def test_movement_scale_is_linear(pose, name):
    base = lyra_trajectory(name, pose, DEPTH, movement_scale=1.0, magnitude=0.3)
    double = lyra_trajectory(name, pose, DEPTH, movement_scale=2.0, magnitude=0.3)
    torch.testing.assert_close(
        _offsets(double, pose), 2.0 * _offsets(base, pose), atol=1e-5, rtol=0
    )
    still = lyra_trajectory(name, pose, DEPTH, movement_scale=0.0, magnitude=0.3)
    torch.testing.assert_close(still, pose.expand_as(still), atol=1e-6, rtol=0)


def test_output_follows_input_dtype(pose):
    traj = lyra_trajectory("left", pose.double(), DEPTH, num_frames=5, magnitude=0.2)
    assert traj.dtype == torch.float64 and traj.shape == (5, 4, 4)
    assert torch.equal(traj[0], pose.double())


def test_lyra_trajectory_validation(pose):
    with pytest.raises(ValueError, match=r"unknown trajectory.*left, right, up"):
        lyra_trajectory("spin", pose, DEPTH)
    with pytest.raises(ValueError, match="scene_depth"):
        lyra_trajectory("left", pose, 0.0)
    with pytest.raises(ValueError, match="scene_depth"):
        lyra_trajectory("left", pose, float("nan"))
    with pytest.raises(ValueError, match="num_frames"):
        lyra_trajectory("left", pose, DEPTH, num_frames=1)
    bad = pose.clone()
    bad[0, 3] = float("inf")
    with pytest.raises(ValueError, match="camtoworld"):
        lyra_trajectory("left", bad, DEPTH)
    with pytest.raises(ValueError, match="camtoworld"):
        lyra_trajectory("left", pose[:3], DEPTH)
    with pytest.raises(ValueError, match="zoom_in"):
        lyra_trajectory("zoom_in", pose, DEPTH, magnitude=0.4, movement_scale=3.0)
    with pytest.raises(ValueError, match="movement_scale"):
        lyra_trajectory("left", pose, DEPTH, movement_scale=-1.0)


# --------------------------------------------------------------------------------------------
# Waypoints
# --------------------------------------------------------------------------------------------


def _waypoints() -> torch.Tensor:
    eyes = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.2, 0.5], [2.0, -0.3, 0.2], [2.5, 0.0, 1.5]])
    targets = eyes + torch.tensor([[0.0, 0.0, 4.0], [1.0, 0.0, 4.0], [2.0, 0.5, 3.0], [3, 0, 3]])
    return look_at(eyes, targets)


def test_waypoint_trajectory_passes_through_waypoints():
    wps = _waypoints()
    times = [0.0, 1.0, 2.5, 4.0]
    traj = waypoint_trajectory(wps, num_frames=81, times=times)  # frames every 0.05
    assert traj.shape == (81, 4, 4) and traj.dtype == torch.float32
    for wp, t in zip(wps, times, strict=True):
        torch.testing.assert_close(traj[round(t / 0.05)], wp, atol=1e-5, rtol=0)
    default = waypoint_trajectory(wps, num_frames=31)  # default times 0, 1, 2, 3
    for i in range(4):
        torch.testing.assert_close(default[10 * i], wps[i], atol=1e-5, rtol=0)


def test_waypoint_trajectory_is_smooth():
    traj = waypoint_trajectory(_waypoints(), num_frames=200).double()
    R = traj[:, :3, :3]
    rel = R[:-1].transpose(-1, -2) @ R[1:]
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angles = torch.arccos(cos)
    assert float(angles.max()) < math.radians(2.0)
    steps = (traj[1:, :3, 3] - traj[:-1, :3, 3]).norm(dim=-1)
    assert float(steps.max()) < 3.0 * float(steps.mean())
    # Velocity changes gradually too (C1 position spline): no kinks at the waypoints.
    vel = traj[1:, :3, 3] - traj[:-1, :3, 3]
    assert float((vel[1:] - vel[:-1]).norm(dim=-1).max()) < 0.2 * float(steps.mean())


def test_waypoint_trajectory_two_waypoints_is_linear():
    wps = _waypoints()[:2]
    traj = waypoint_trajectory(wps, num_frames=5)
    torch.testing.assert_close(traj[2, :3, 3], wps[:, :3, 3].mean(0))
    torch.testing.assert_close(traj[-1], wps[-1], atol=1e-6, rtol=0)


def test_waypoint_trajectory_validation():
    wps = _waypoints()
    with pytest.raises(ValueError, match="waypoints"):
        waypoint_trajectory(wps[:1], num_frames=10)
    with pytest.raises(ValueError, match="times"):
        waypoint_trajectory(wps, num_frames=10, times=[0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="times"):
        waypoint_trajectory(wps, num_frames=10, times=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="num_frames"):
        waypoint_trajectory(wps, num_frames=1)
    bad = wps.clone()
    bad[2, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="waypoints"):
        waypoint_trajectory(bad, num_frames=10)
