"""lyra_core.mapping: the growing Gaussian map, its optimizer, anchoring and the occlusion fill."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from lyra_core.evaluation.metrics import psnr
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.mapping import (
    GaussianMap,
    MapConfig,
    OcclusionFillConfig,
    PosedFrame,
    background_layer,
)
from lyra_core.mapping.optimizer import GaussianOptimizer
from lyra_core.rendering import render
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_core.scene.visibility import seen_by_depth
from rgbd_frames import box_on_wall

INTRINSICS = Intrinsics.from_fov(1.1, 64, 48)


@pytest.fixture(scope="module")
def room() -> Gaussians:
    torch.manual_seed(0)
    return procedural_room(20_000, seed=0)


def _pose(t: float) -> torch.Tensor:
    return look_at((-0.8 + 1.6 * t, -2.0, 1.3), (0.0, 1.0, 0.9), up=(0, 0, 1))


def _frame(scene: Gaussians, pose: torch.Tensor, with_depth: bool = True) -> PosedFrame:
    with torch.no_grad():
        out = render(scene, Cameras.from_intrinsics(pose[None], INTRINSICS))
    depth = out.depth[0, ..., 0] if with_depth else None
    return PosedFrame(out.rgb[0], INTRINSICS, pose, depth)


def _score(gaussians: Gaussians, frame: PosedFrame) -> float:
    with torch.no_grad():
        out = render(gaussians, frame.camera())
    return float(psnr(out.rgb[0], frame.rgb))


# ---------------------------------------------------------------------------- frames


def test_posed_frame_rejects_bad_input():
    pose = torch.eye(4)
    with pytest.raises(ValueError, match="intrinsics say"):
        PosedFrame(np.zeros((10, 10, 3), np.uint8), INTRINSICS, pose)
    bad_pose = pose.clone()
    bad_pose[0, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        PosedFrame(np.zeros((48, 64, 3), np.uint8), INTRINSICS, bad_pose)
    depth = np.full((48, 64), np.nan, np.float32)
    frame = PosedFrame(np.zeros((48, 64, 3), np.uint8), INTRINSICS, pose, depth)
    assert frame.depth is not None and float(frame.depth.abs().sum()) == 0.0  # NaN -> unknown


# ---------------------------------------------------------------------------- optimizer


def test_optimizer_edits_keep_adam_moments():
    gaussians = procedural_room(50, seed=1)
    opt = GaussianOptimizer(gaussians)
    opt.gaussians().means.sum().backward()
    opt.step()
    moments = opt.optimizer.state[opt.params["means"]]["exp_avg"].clone()
    assert float(moments.abs().sum()) > 0
    keep = torch.arange(50) % 2 == 0
    opt.keep(keep)
    assert_close(opt.optimizer.state[opt.params["means"]]["exp_avg"], moments[keep])
    opt.append(procedural_room(10, seed=2))
    state = opt.optimizer.state[opt.params["means"]]["exp_avg"]
    assert state.shape == (35, 3)
    assert_close(state[:25], moments[keep])
    assert float(state[25:].abs().sum()) == 0.0


def test_optimizer_skips_non_finite_gradients():
    opt = GaussianOptimizer(procedural_room(20, seed=3))
    before = opt.snapshot()
    (opt.gaussians().means.sum() * float("nan")).backward()
    assert opt.step() is False
    assert_close(opt.snapshot().means, before.means)


# ---------------------------------------------------------------------------- visibility


def test_seen_by_depth_values():
    depth = torch.full((48, 64), 2.0)
    pose = torch.eye(4)
    points = torch.tensor(
        [
            [0.0, 0.0, 1.0],  # in front of the wall: seen
            [0.0, 0.0, 2.05],  # on the wall (within 5 %): seen
            [0.0, 0.0, 3.0],  # behind the wall: hidden
            [0.0, 0.0, -1.0],  # behind the camera
            [50.0, 0.0, 2.0],  # outside the image
        ]
    )
    seen = seen_by_depth(points, depth, INTRINSICS, pose)
    assert seen.tolist() == [True, True, False, False, False]
    depth[:] = 0.0  # no measurement: nothing is seen
    assert not bool(seen_by_depth(points, depth, INTRINSICS, pose).any())


# ---------------------------------------------------------------------------- the map


def test_same_frame_twice_adds_no_second_layer(room):
    frame = _frame(room, _pose(0.5))
    world = GaussianMap(MapConfig(steps_per_keyframe=0, pixel_stride=1))
    first = world.integrate(frame)
    assert first.added > 1000 and first.keyframe
    second = world.integrate(frame)
    assert second.added < 0.02 * first.added
    assert not second.keyframe


def test_fusion_fills_what_one_frame_missed(room):
    frames = [_frame(room, _pose(t)) for t in np.linspace(0.0, 1.0, 6)]
    heldout = _frame(room, look_at((0.9, -1.6, 1.3), (0.4, 1.0, 0.9), up=(0, 0, 1)))
    single = GaussianMap(MapConfig(steps_per_keyframe=0))
    single.integrate(frames[0])
    fused = GaussianMap(MapConfig(steps_per_keyframe=0))
    for frame in frames:
        fused.integrate(frame)
    assert _score(fused.gaussians(), heldout) > _score(single.gaussians(), heldout) + 2.0


def test_map_orient_normal_lays_the_floor_flat(room):
    frame = _frame(room, look_at((0.0, -2.0, 1.3), (0.0, 0.5, 0.0), up=(0, 0, 1)))
    thin_z = {}
    for orient in ("camera", "normal"):
        world = GaussianMap(MapConfig(steps_per_keyframe=0, pixel_stride=1, orient=orient))
        world.integrate(frame)
        gaussians = world.gaussians()
        floor = gaussians.means[:, 2] < 0.05  # the room's floor is the plane z = 0
        assert int(floor.sum()) > 500
        thin_z[orient] = quat_to_rotmat(gaussians.quats[floor])[:, 2, 2].abs()
    assert float(thin_z["normal"].median()) > 0.97  # thin along the floor's normal (z)
    assert float(thin_z["camera"].median()) < 0.6  # thin along the pitched optical axis
    with pytest.raises(ValueError, match="orient"):
        MapConfig(orient="ray")


def test_refinement_lowers_the_loss_and_is_deterministic(room):
    frames = [_frame(room, _pose(t)) for t in (0.0, 0.5, 1.0)]
    runs = []
    for _ in range(2):
        world = GaussianMap(MapConfig(steps_per_keyframe=0, refine_downscale=1, seed=7))
        for frame in frames:
            world.integrate(frame)
        before = np.mean([_score(world.gaussians(), f) for f in frames])
        world.refine(30)
        after = np.mean([_score(world.gaussians(), f) for f in frames])
        runs.append((before, after, world.gaussians()))
    assert runs[0][1] > runs[0][0] + 0.5
    assert_close(runs[0][2].means, runs[1][2].means)  # same seed, same frames: same map


def test_budget_is_never_exceeded(room):
    world = GaussianMap(MapConfig(max_gaussians=1500, steps_per_keyframe=2, pixel_stride=1))
    for t in np.linspace(0.0, 1.0, 4):
        world.integrate(_frame(room, _pose(t)))
        assert len(world) <= 1500
    assert len(world) == 1500


def test_observations_replace_generated_content(room):
    frame = _frame(room, _pose(0.5))
    camera = frame.camtoworld
    forward, origin = camera[:3, 2], camera[:3, 3]
    # Generated blobs: one floating in front of the camera (the frame sees through it), one
    # far behind the camera (outside the frustum).
    means = torch.stack([origin + 0.5 * forward, origin - 3.0 * forward])
    generated = Gaussians.from_activated(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
        scales=torch.full((2, 3), 0.05),
        opacities=torch.full((2,), 0.9),
        colors=torch.tensor([[1.0, 0.0, 1.0]] * 2),
    )
    world = GaussianMap(MapConfig(steps_per_keyframe=0))
    world.add_generated(generated)
    result = world.integrate(frame)
    assert result.replaced_generated == 1
    assert int((~world.observed).sum()) == 1
    kept = world.gaussians()[~world.observed]
    assert_close(kept.means, means[1:])


def test_rgb_only_frames_densify_from_points(room):
    frames = [_frame(room, _pose(t), with_depth=False) for t in (0.0, 0.5, 1.0)]
    points = room.means[::40]
    colors = room.colors[::40]
    world = GaussianMap(
        MapConfig(steps_per_keyframe=0, refine_downscale=1, densify_every=10, prune_every=1000)
    )
    world.add_points(points, colors)
    for frame in frames:
        assert world.integrate(frame).added == 0  # no depth: nothing added directly
    start = len(world)
    before = np.mean([_score(world.gaussians(), f) for f in frames])
    world.refine(40)
    assert len(world) > start  # clone/split happened
    assert np.mean([_score(world.gaussians(), f) for f in frames]) > before + 1.0


# ---------------------------------------------------------------------------- occlusion fill


def test_background_layer_extends_the_far_side():
    rgb, depth = box_on_wall()
    layer = background_layer(rgb, depth, OcclusionFillConfig(band=5))
    assert layer.mask.any()
    assert not layer.mask[depth > 2].any()  # only behind the box
    assert np.allclose(layer.depth[layer.mask], 3.0)  # the wall's depth
    colours = layer.rgb[layer.mask].astype(float)
    assert colours[:, 0].mean() > 150 and colours[:, 2].mean() < 60  # the wall's red, not blue
    flat = background_layer(rgb, np.full((48, 64), 3.0, np.float32))
    assert not flat.mask.any()  # no depth edge, no layer


def test_background_layer_fills_holes_off_the_input_view():
    rgb, depth = box_on_wall()
    base = gaussians_from_rgbd(rgb, depth, INTRINSICS)
    layer = background_layer(rgb, depth, OcclusionFillConfig(band=12, border=8))
    back = gaussians_from_rgbd(
        layer.rgb, layer.depth, layer.intrinsics(INTRINSICS), mask=layer.mask
    )
    filled = Gaussians.cat([base, back])
    at_input = Cameras.from_intrinsics(torch.eye(4)[None], INTRINSICS)
    with torch.no_grad():
        same = render(filled, at_input).rgb
        assert_close(same, render(base, at_input).rgb, atol=0.02, rtol=0)
        moved = torch.eye(4)
        moved[0, 3] = 0.3  # 30 cm to the right: the box no longer hides the wall behind it
        side = Cameras.from_intrinsics(moved[None], INTRINSICS)
        holes_before = float((render(base, side).alpha < 0.5).float().mean())
        holes_after = float((render(filled, side).alpha < 0.5).float().mean())
    assert holes_after < 0.1 * holes_before


def test_fill_config_validates():
    with pytest.raises(ValueError, match="band"):
        OcclusionFillConfig(band=0)
    with pytest.raises(ValueError, match="edge_ratio"):
        OcclusionFillConfig(edge_ratio=math.inf)


# ---------------------------------------------------------------------------- offline fitting


def test_epoch_sampling_visits_every_keyframe_once_per_epoch(room, monkeypatch):
    frames = [_frame(room, _pose(t), with_depth=False) for t in (0.0, 0.3, 0.6, 1.0)]
    world = GaussianMap(MapConfig(refine_downscale=1, sampling="epoch", densify="never"))
    world.add_points(room.means[::50], room.colors[::50])
    for frame in frames:
        world.add_keyframe(frame)
    seen = []
    monkeypatch.setattr(world, "_refine_step", lambda frame: seen.append(frame) or 0.0)
    world.refine(12)
    for epoch in range(3):
        chosen = seen[4 * epoch : 4 * epoch + 4]
        assert sorted(map(id, chosen)) == sorted(map(id, world.keyframes))
    assert seen[:4] != seen[4:8] or seen[4:8] != seen[8:]  # shuffled, not a fixed order


def test_progress_decays_the_position_lr_and_ends_densification(room):
    frame = _frame(room, _pose(0.5))
    config = MapConfig(
        refine_downscale=1,
        sampling="epoch",
        position_lr_final=0.01,
        densify="always",
        densify_until=0.5,
        densify_every=2,
        densify_grad_threshold=0.0,  # every seen Gaussian qualifies
        scene_scale=2.0,
    )
    world = GaussianMap(config)
    world.add_depth(frame)
    world.add_keyframe(frame)
    means_lr = next(g for g in world._optimizer.optimizer.param_groups if g["name"] == "means")
    assert means_lr["lr"] == pytest.approx(1.6e-4 * 2.0)
    world.set_progress(0.5)
    assert means_lr["lr"] == pytest.approx(1.6e-4 * 2.0 * 0.1)  # 0.01 ** 0.5
    count = len(world)
    world.refine(4)
    assert len(world) == count  # past densify_until: no clone or split
    world.set_progress(0.25)
    world.refine(2)
    assert len(world) > count
    with pytest.raises(ValueError, match="progress"):
        world.set_progress(1.5)


def test_state_dict_resumes_exactly_and_reset_opacity(room):
    frames = [_frame(room, _pose(t)) for t in (0.0, 0.5, 1.0)]
    config = MapConfig(
        refine_downscale=1,
        sampling="epoch",
        densify="always",
        densify_every=5,
        densify_grad_threshold=1e-5,
        prune_every=4,
        seed=3,
    )

    def fresh() -> GaussianMap:
        world = GaussianMap(config)
        for frame in frames:
            world.add_keyframe(frame)
        return world

    world = fresh()
    for frame in frames:
        world.add_depth(frame)
    world.refine(7)
    buffer = io.BytesIO()
    torch.save(world.state_dict(), buffer)
    world.refine(9)  # through a prune and a densification (random splits)
    copy = fresh()
    buffer.seek(0)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    assert copy.steps == 7
    copy.refine(9)
    assert len(copy) == len(world) and copy.steps == world.steps == 16
    for name in ("means", "log_scales", "opacity_logits", "sh"):
        assert_close(getattr(copy.gaussians(), name), getattr(world.gaussians(), name))
    copy.reset_opacity(0.01)
    assert float(copy.gaussians().opacities.max()) <= 0.01 + 1e-6
    with pytest.raises(ValueError, match="GaussianMap state"):
        copy.load_state_dict({"params": {}})
