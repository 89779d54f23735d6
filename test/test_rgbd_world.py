"""The depth world source: lyra_core.scene.rgbd and lyra_core.mapping.world_builder (no DDS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.mapping.world_builder import BuildOptions, build_world, resolve_source
from lyra_core.rendering import render
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_core.utils.errors import WorldBuildError
from rgbd_frames import box_on_wall

INTR = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)


def checker_rgbd(depth: float = 2.0):
    rows, cols = np.mgrid[0:48, 0:64]
    rgb = np.where(((rows // 8 + cols // 8) % 2)[..., None] == 1, 230, 20).astype(np.uint8)
    rgb = np.repeat(rgb, 3, axis=-1)
    rgb[..., 0] = 200
    return rgb, np.full((48, 64), depth, np.float32)


def test_one_gaussian_per_valid_pixel_at_its_unprojection():
    rgb, depth = checker_rgbd()
    depth[0, :] = 0.0
    depth[1, :] = np.nan
    depth[2, :] = np.inf
    g = gaussians_from_rgbd(rgb, depth, INTR)
    assert len(g) == 45 * 64
    # pixel (u, v) = (10, 20) at 2 m: x = (10 - 31.5) / 60 * 2
    expected = torch.tensor([(10 - 31.5) / 60 * 2, (20 - 23.5) / 60 * 2, 2.0])
    assert torch.isclose(g.means, expected).all(dim=1).any()
    torch.testing.assert_close(g.opacities, torch.full((len(g),), 0.95))
    assert (g.scales[:, 2] < g.scales[:, 0]).all()  # discs, thin along the view axis


def test_stride_and_pose():
    rgb, depth = checker_rgbd()
    pose = torch.eye(4)
    pose[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    dense = gaussians_from_rgbd(rgb, depth, INTR)
    sparse = gaussians_from_rgbd(rgb, depth, INTR, pose, stride=4)
    assert len(sparse) == 12 * 16
    torch.testing.assert_close(sparse.scales[0], dense.scales[0] * 4)
    assert torch.allclose(sparse.means[:, 2], torch.full((len(sparse),), 5.0))


def test_rendering_the_input_view_reproduces_the_image():
    _, depth = checker_rgbd()
    rows, cols = np.mgrid[0:48, 0:64]  # a smooth image: disc overlap blurs only hard edges
    rgb = np.stack([cols * 4, rows * 5, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    g = gaussians_from_rgbd(rgb, depth, INTR)
    out = render(g, Cameras.from_intrinsics(torch.eye(4)[None], INTR))
    image = out.rgb[0].numpy() * 255
    inner = np.s_[4:-4, 4:-4]  # edges see fewer neighbouring discs
    assert np.abs(image[inner] - rgb[inner]).max() < 6  # ~1 px of the gradient: disc overlap
    assert (out.alpha[0][inner] > 0.95).all()
    np.testing.assert_allclose(out.depth[0, ..., 0].numpy()[inner], 2.0, atol=0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": np.zeros((10, 10), np.float32)}, "depth"),
        ({"rgb": np.zeros((48, 64), np.uint8)}, "rgb"),
        ({"camtoworld": torch.full((4, 4), math.nan)}, "camtoworld"),
        ({"stride": 0}, "stride"),
        ({"opacity": 1.5}, "opacity"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, match):
    rgb, depth = checker_rgbd()
    args = {"rgb": rgb, "depth": depth, "camtoworld": None} | kwargs
    stride = args.pop("stride", 1)
    opacity = args.pop("opacity", 0.95)
    with pytest.raises(ValueError, match=match):
        gaussians_from_rgbd(
            args["rgb"], args["depth"], INTR, args["camtoworld"], stride=stride, opacity=opacity
        )


def test_build_world_anchors_in_the_world_frame():
    rgb, depth = checker_rgbd()
    world_from_camera = np.eye(4)
    world_from_camera[:3, 3] = [0.0, 0.0, 1.0]
    built = build_world(rgb, depth, INTR, world_from_camera, BuildOptions(depth_stride=1))
    assert built.source == "depth" and built.seconds >= 0
    torch.testing.assert_close(built.gaussians.means[:, 2].mean(), torch.tensor(3.0))


def test_build_world_errors():
    rgb, depth = checker_rgbd()
    eye = np.eye(4)
    with pytest.raises(WorldBuildError, match="registered"):
        build_world(rgb, depth[:20], INTR, eye, BuildOptions())
    with pytest.raises(WorldBuildError, match="depth image"):
        build_world(rgb, None, INTR, eye, BuildOptions())
    with pytest.raises(WorldBuildError, match="NaN"):
        build_world(rgb, depth, INTR, np.full((4, 4), np.nan), BuildOptions())
    with pytest.raises(WorldBuildError, match="no valid pixels"):
        build_world(rgb, np.zeros_like(depth), INTR, eye, BuildOptions())


def test_source_resolution():
    assert resolve_source(BuildOptions(source="auto"), has_depth=True) == "depth"
    assert resolve_source(BuildOptions(source="depth"), has_depth=True) == "depth"
    with pytest.raises(WorldBuildError, match="checkpoint"):
        resolve_source(BuildOptions(source="lyra"), has_depth=True)
    with pytest.raises(WorldBuildError, match="unknown world source"):
        resolve_source(BuildOptions(source="nerf"), has_depth=True)


def test_occlusion_fill_shows_background_off_the_input_view():
    rgb, depth = box_on_wall()
    plain = build_world(
        rgb, depth, INTR, np.eye(4), BuildOptions(depth_stride=1, fill_occlusions=False)
    ).gaussians
    filled = build_world(rgb, depth, INTR, np.eye(4), BuildOptions(depth_stride=1)).gaussians
    assert len(plain) == 48 * 64 and len(filled) > len(plain)
    at_input = Cameras.from_intrinsics(torch.eye(4)[None], INTR)
    moved = torch.eye(4)
    moved[0, 3] = 0.25  # 25 cm right: the box uncovers wall it hid
    side = Cameras.from_intrinsics(moved[None], INTR)
    with torch.no_grad():
        torch.testing.assert_close(
            render(filled, at_input).rgb, render(plain, at_input).rgb, atol=0.02, rtol=0
        )
        box = (slice(None), slice(8, 40), slice(0, 56))  # around the box, not the new margin
        holes_plain = float((render(plain, side).alpha[0, ..., 0][box[1:]] < 0.5).float().mean())
        filled_side = render(filled, side)
        holes_filled = float((filled_side.alpha[0, ..., 0][box[1:]] < 0.5).float().mean())
    assert holes_filled < 0.3 * holes_plain
    # What fills the holes is the wall (red, 3 m), not the box (blue, 1 m).
    revealed = (render(plain, side).alpha[0, ..., 0] < 0.5) & (filled_side.alpha[0, ..., 0] > 0.5)
    colours = filled_side.rgb[0][revealed]
    assert float(colours[:, 0].mean()) > 0.6 and float(colours[:, 2].mean()) < 0.25
    np.testing.assert_allclose(
        float(filled_side.depth[0, ..., 0][revealed].median()), 3.0, atol=0.1
    )
