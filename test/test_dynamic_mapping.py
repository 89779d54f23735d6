"""4D ground truth (the procedural dynamic room) and RGB-D video to 4D (``DynamicMapper``,
``lyra fit --dynamic``) on a 64x48 video of moving objects seen by a moving camera."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lyra_core.cli import main as lyra
from lyra_core.evaluation.metrics import psnr
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import rigid_inverse
from lyra_core.mapping import GaussianMap, PosedFrame
from lyra_core.mapping.dynamic import (
    DynamicMapper,
    DynamicMapperConfig,
    fit_dynamic,
    static_map_config,
)
from lyra_core.rendering import render
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import read_ply
from lyra_core.scene.procedural_dynamic import DynamicRoom, procedural_dynamic_room
from lyra_core.training.fit import dynamic_poses, write_procedural_capture

WIDTH, HEIGHT, VIEWS, DURATION = 64, 48, 12, 2.0
INTRINSICS = Intrinsics.from_fov(1.0, WIDTH, HEIGHT)
HOLDOUT = 4
"""Frames 0, 4, 8 held out, the other 9 make the video."""
REFINE_STEPS = 30


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def room() -> DynamicRoom:
    return procedural_dynamic_room(0, num_gaussians=30_000, duration=DURATION)


def frame_time(k: int) -> float:
    return DURATION * k / (VIEWS - 1)


def shoot(scene: Gaussians, pose: torch.Tensor, stamp: float, name: str = "") -> PosedFrame:
    """A rendered RGB-D frame of ``scene`` (depth 0 where nothing was hit)."""
    with torch.no_grad():
        out = render(scene, Cameras.from_intrinsics(pose[None], INTRINSICS))
    depth = torch.where(out.alpha[0, ..., 0] > 0.5, out.depth[0, ..., 0], 0.0)
    return PosedFrame(out.rgb[0].clamp(0, 1), INTRINSICS, pose, depth, stamp=stamp, name=name)


@pytest.fixture(scope="module")
def video(room) -> list[PosedFrame]:
    """The room filmed while the objects move: stamps 100 s + the room's time."""
    return [
        shoot(room.gaussians_at(frame_time(k)), pose, 100.0 + frame_time(k), f"frame {k}")
        for k, pose in enumerate(dynamic_poses(VIEWS))
    ]


@pytest.fixture(scope="module")
def fitted(video):
    train = [f for k, f in enumerate(video) if k % HOLDOUT]
    config = DynamicMapperConfig(refine_steps=REFINE_STEPS, show_progress=False)
    mapper = DynamicMapper(config)
    mapper.extend(train)
    return mapper, mapper.build()


def project(point: torch.Tensor, pose: torch.Tensor) -> tuple[int, int]:
    """Pixel (column, row) of a world point in a camera at ``pose``."""
    cam = rigid_inverse(pose)[:3, :3] @ point + rigid_inverse(pose)[:3, 3]
    u = INTRINSICS.fx * cam[0] / cam[2] + INTRINSICS.cx
    v = INTRINSICS.fy * cam[1] / cam[2] + INTRINSICS.cy
    return round(float(u)), round(float(v))


def is_red(rgb: torch.Tensor) -> torch.Tensor:
    """The first object's colour (0.95, 0.15, 0.1): nothing in the room is that red."""
    return (rgb[..., 0] > 0.75) & (rgb[..., 1] < 0.35) & (rgb[..., 2] < 0.35)


# ---------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_4d_world_renders_as_the_ground_truth_at_each_slice_time(room, backend):
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    world = room.world(times)
    assert world.time_range == (0.0, 2.0)
    camera = Cameras.from_intrinsics(dynamic_poses(3)[1][None], INTRINSICS)
    previous = None
    for t in times:
        got = render(world, camera, time=t, backend=backend).rgb
        expected = render(room.gaussians_at(t), camera, backend=backend).rgb
        assert torch.equal(got, expected)
        if previous is not None:
            assert float((got - previous).abs().amax()) > 0.5  # something moved
        previous = got


def test_object_image_position_follows_its_pose(room):
    pose = dynamic_poses(3)[1]
    camera = Cameras.from_intrinsics(pose[None], INTRINSICS)
    columns = []
    for t in (0.0, 1.0, 2.0):
        box = room.objects_at(t)[: len(room.objects[0])]  # the red box only
        red = is_red(render(box, camera).rgb[0])
        rows, cols = torch.nonzero(red, as_tuple=True)
        center = room.object_pose(0, t)[:3, 3]
        u, v = project(center, pose)
        assert (
            abs(float(cols.float().mean()) - u) <= 2.5 and abs(float(rows.float().mean()) - v) <= 3
        )
        columns.append(u)
    assert abs(columns[2] - columns[0]) >= 10  # it crossed the image


def test_object_poses_and_quaternions(room):
    poses = room.object_pose(1, torch.tensor([0.0, 1.0, 2.0]))
    assert poses.shape == (3, 4, 4) and poses.dtype == torch.float32
    torch.testing.assert_close(poses[1], room.object_pose(1, 1.0))
    torch.testing.assert_close(poses[2], room.object_pose(1, 5.0))  # holds its end pose
    assert not torch.allclose(poses[0], poses[2])
    # Means and orientations are both carried by the pose.
    local = room.objects[1]
    world = room.objects_at(1.0)[len(room.objects[0]) :]
    R, t = poses[1][:3, :3], poses[1][:3, 3]
    torch.testing.assert_close(world.means, local.means @ R.T + t, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        quat_to_rotmat(world.quats), R @ quat_to_rotmat(local.quats), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(world.sh, local.sh)
    # Deterministic in the seed.
    again = procedural_dynamic_room(0, num_gaussians=30_000, duration=DURATION)
    assert torch.equal(again.gaussians_at(0.7).means, room.gaussians_at(0.7).means)
    other = procedural_dynamic_room(1, num_gaussians=30_000, duration=DURATION)
    assert not torch.allclose(other.object_pose(0, 0.0), room.object_pose(0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        room.object_pose(0, math.nan)
    with pytest.raises(IndexError):
        room.object_pose(2, 0.0)


# ---------------------------------------------------------------------------- RGB-D video to 4D


def static_only(frames: list[PosedFrame], refine_steps: int = 0) -> Gaussians:
    """Every frame fused into one static map, moving things included (the baseline), refined
    as the 4D world's static part is."""
    world = GaussianMap(static_map_config())
    for frame in frames:
        world.add_depth(frame)
    for frame in frames:
        world.add_keyframe(frame)
    world.refine(refine_steps)
    return world.gaussians()


def test_4d_world_beats_a_static_fusion_at_heldout_times(video, fitted):
    mapper, world = fitted
    heldout = video[::HOLDOUT]
    baseline = static_only([f for k, f in enumerate(video) if k % HOLDOUT], REFINE_STEPS)
    target = torch.stack([f.rgb for f in heldout])
    with torch.no_grad():
        four_d = torch.stack(
            [render(world, f.camera(), time=f.stamp - mapper.time_origin).rgb[0] for f in heldout]
        )
        flat = torch.stack([render(baseline, f.camera()).rgb[0] for f in heldout])
    psnr_4d = float(psnr(four_d.clamp(0, 1), target).mean())
    psnr_static = float(psnr(flat.clamp(0, 1), target).mean())
    print(f"held-out PSNR: 4D {psnr_4d:.2f} dB, static-only fusion {psnr_static:.2f} dB")
    assert psnr_4d > psnr_static + 1.5


def test_moving_object_is_where_its_time_says(room, video, fitted):
    mapper, world = fitted
    pose = dynamic_poses(3)[1]
    camera = Cameras.from_intrinsics(pose[None], INTRINSICS)
    early, late = frame_time(1), frame_time(VIEWS - 1)  # first and last training frames
    for t, other in ((early, late), (late, early)):
        world_t = t + 100.0 - mapper.time_origin
        world_other = other + 100.0 - mapper.time_origin
        u, v = project(room.object_pose(0, t)[:3, 3], pose)
        truth = render(room.gaussians_at(t), camera)
        here = render(world, camera, time=world_t)
        there = render(world, camera, time=world_other)
        assert bool(is_red(here.rgb[0, v, u]))
        assert float(here.depth[0, v, u, 0]) == pytest.approx(
            float(truth.depth[0, v, u, 0]), rel=0.05
        )
        assert not bool(is_red(there.rgb[0, v, u]))
        # At the other time the background shows there, at the room's depth.
        empty = render(room.gaussians_at(other), camera)
        assert float(there.depth[0, v, u, 0]) == pytest.approx(
            float(empty.depth[0, v, u, 0]), rel=0.1
        )


def ghosts(gaussians: Gaussians, room: DynamicRoom) -> int:
    """Red Gaussians above the floor near the box's path: the box left behind."""
    path = room.object_pose(0, torch.linspace(0, DURATION, 50))[:, :3, 3]
    near = torch.cdist(gaussians.means, path).amin(dim=1) < 0.6
    return int((near & is_red(gaussians.colors) & (gaussians.means[:, 2] > 0.05)).sum())


def test_static_map_holds_no_ghost_of_the_moving_object(room, video, fitted):
    mapper, world = fitted
    assert world.durations is not None
    static = world[torch.isinf(world.durations)]
    baseline = static_only([f for k, f in enumerate(video) if k % HOLDOUT])
    print(
        f"ghost Gaussians: 4D static part {ghosts(static, room)}, baseline {ghosts(baseline, room)}"
    )
    assert ghosts(baseline, room) > 200  # the test can fail: fusion keeps the box everywhere
    assert ghosts(static, room) <= 0.01 * ghosts(baseline, room)
    # Each frame's slice holds the box where it was at that frame's time.
    for t in mapper.times():
        at = world.at_time(t)
        red = at.means[is_red(at.colors) & (at.means[:, 2] > 0.05)]
        center = room.object_pose(0, t + mapper.time_origin - 100.0)[:3, 3]
        assert len(red) > 20
        assert float((red - center).norm(dim=1).median()) < 0.5


def test_a_still_video_gives_empty_slices_and_a_static_world(room):
    still = [shoot(room.static, pose, 5.0 + 0.1 * k) for k, pose in enumerate(dynamic_poses(4))]
    world, stats = fit_dynamic(still, DynamicMapperConfig(show_progress=False))
    assert stats["frames"] == 4 and stats["time_origin"] == 5.0
    assert stats["dynamic_gaussians"] <= 0.01 * 4 * WIDTH * HEIGHT
    assert stats["slice_gaussians"][0] == 0  # an empty slice
    assert (
        world.times is not None
        and len(world) == stats["static_gaussians"] + stats["dynamic_gaussians"]
    )
    # It renders as a plain fusion of the same frames does.
    out = render(world, still[1].camera(), time=0.1).rgb[0].clamp(0, 1)
    plain = render(static_only(still), still[1].camera()).rgb[0].clamp(0, 1)
    assert float(psnr(out, still[1].rgb)) > float(psnr(plain, still[1].rgb)) - 0.3


def test_each_time_shows_the_nearest_frames_slice(fitted):
    """Held-out frames leave uneven gaps between the stamps: every time still shows exactly
    the slice of the nearest frame (no gap with nothing moving, no overlap of two)."""
    mapper, world = fitted
    stamps = np.array(mapper.times())
    sizes = mapper.stats["slice_gaussians"]
    static = mapper.stats["static_gaussians"]
    assert len(set(np.diff(stamps).round(6))) == 2  # uneven
    for t in np.linspace(-0.3, stamps[-1] + 0.3, 61):
        nearest = int(np.argmin(np.abs(stamps - np.clip(t, 0, stamps[-1]))))
        assert len(world.at_time(float(t))) - static == sizes[nearest]


def test_bounds_and_reset(room, video):
    mapper = DynamicMapper(DynamicMapperConfig(max_frames=3, show_progress=False))
    mapper.extend(video[:5])
    assert len(mapper) == 3 and mapper.dropped == 2 and mapper.time_origin == video[2].stamp
    mapper.reset()
    assert len(mapper) == 0 and mapper.time_origin is None
    config = DynamicMapperConfig(
        max_gaussians_per_slice=50, max_dynamic_gaussians=300, show_progress=False
    )
    world, stats = fit_dynamic(video, config)
    assert max(stats["slice_gaussians"]) <= 25 and stats["dynamic_gaussians"] <= 300
    assert stats["slice_gaussians"][0] == 25  # the box is in every frame: the budget binds
    assert len(world) == stats["static_gaussians"] + stats["dynamic_gaussians"]


def test_bad_frames_are_refused(video):
    mapper = DynamicMapper(DynamicMapperConfig(show_progress=False))
    with pytest.raises(ValueError, match="no frames"):
        mapper.build()
    frame = video[0]
    with pytest.raises(ValueError, match="needs depth"):
        mapper.add(PosedFrame(frame.rgb, INTRINSICS, frame.camtoworld, None, stamp=1.0))
    with pytest.raises(ValueError, match="finite"):
        mapper.add(PosedFrame(frame.rgb, INTRINSICS, frame.camtoworld, frame.depth, math.nan))
    mapper.add(video[1])
    with pytest.raises(ValueError, match="stamps must increase"):
        mapper.add(video[1])
    bad_pose = frame.camtoworld.clone()
    bad_pose[0, 3] = math.nan
    with pytest.raises(ValueError, match=r"NaN|finite"):
        PosedFrame(frame.rgb, INTRINSICS, bad_pose, frame.depth, stamp=9.0)
    with pytest.raises(ValueError, match="max_frames"):
        DynamicMapperConfig(max_frames=0)
    with pytest.raises(ValueError, match="free_space_ratio"):
        DynamicMapperConfig(free_space_ratio=1.5)


# ---------------------------------------------------------------------------- lyra fit --dynamic


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dynamic_capture")
    write_procedural_capture(
        folder, views=VIEWS, depth=True, gaussians=30_000, moving_objects=2, duration=DURATION
    )
    return folder


FIT = ["--dynamic", "--holdout-every", "4", "--sh-degree", "0", "--no-progress"]
FIT += ["--threads", "2"]


def test_fit_dynamic_writes_a_4d_world_and_metrics(capture, tmp_path, capsys):
    meta = json.loads((capture / "transforms.json").read_text())
    assert [f["time"] for f in meta["frames"]][:2] == [0.0, frame_time(1)]
    run = tmp_path / "run"
    assert lyra(["fit", str(capture), "--out", str(run), "--max-steps", "20", *FIT]) == 0
    assert "4D" in capsys.readouterr().out
    world = read_ply(run / "world.ply")
    metrics = json.loads((run / "metrics.json").read_text())
    assert world.times is not None and len(world) == metrics["gaussians"]
    assert metrics["time_range"] == pytest.approx([0.0, DURATION - frame_time(1)], abs=1e-5)
    assert world.time_range == pytest.approx(tuple(metrics["time_range"]), abs=1e-5)
    assert metrics["time_origin"] == pytest.approx(frame_time(1))
    assert metrics["static_gaussians"] + metrics["dynamic_gaussians"] == metrics["gaussians"]
    assert metrics["dynamic_gaussians"] > 1000 and metrics["steps"] == 20
    heldout = metrics["heldout"]
    assert heldout["views"] == 3 and heldout["psnr"] > 15.0 and 0 < heldout["ssim"] <= 1
    assert metrics["heldout_times"] == pytest.approx(
        [frame_time(k) - frame_time(1) for k in (0, 4, 8)], abs=1e-5
    )
    assert (run / "heldout.png").stat().st_size > 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_depth", "--dynamic needs depth"),
        ("partial_time", "give every frame a time or none"),
        ("same_time", "stamps must increase"),
        ("nan_pose", "NaN"),
    ],
)
def test_fit_dynamic_bad_input_exits_2_with_one_line(case, message, capture, tmp_path, capsys):
    data = capture
    extra: list[str] = []
    if case == "no_depth":
        extra = ["--no-depth"]
    else:
        meta = json.loads((capture / "transforms.json").read_text())
        if case == "partial_time":
            del meta["frames"][3]["time"]
        elif case == "same_time":
            meta["frames"][2]["time"] = meta["frames"][1]["time"]
        else:
            meta["frames"][5]["transform_matrix"][1][3] = math.nan
        data = tmp_path / "data"
        data.mkdir()
        (data / "transforms.json").write_text(json.dumps(meta))
        for sub in ("images", "depth"):
            (data / sub).symlink_to(capture / sub)
    argv = ["fit", str(data), "--out", str(tmp_path / "run"), "--max-steps", "0", *FIT, *extra]
    assert lyra(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lyra fit: error:"), err
    assert message in err[0]
