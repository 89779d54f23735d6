"""The depth world source: lyra_core.scene.rgbd and lyra_core.mapping.world_builder (no DDS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.mapping.world_builder import BuildOptions, build_world, resolve_source
from lyra_core.rendering import render
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.rgbd import gaussians_from_rgbd, normals_from_depth
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


# ------------------------------------------------------------------ surface-oriented discs

TILTED_NORMAL = torch.nn.functional.normalize(torch.tensor([0.6, -0.2, -1.0]), dim=0)
"""Unit normal (camera frame, facing the camera) of the tilted plane through (0, 0, 2)."""


def _plane_points(pose: torch.Tensor, intrinsics: Intrinsics = INTR) -> torch.Tensor:
    """(H, W, 3) world points where the pixels of a camera at ``pose`` meet the tilted plane."""
    v, u = torch.meshgrid(
        torch.arange(intrinsics.height, dtype=torch.float32),
        torch.arange(intrinsics.width, dtype=torch.float32),
        indexing="ij",
    )
    rays = (
        torch.stack(
            [
                (u - intrinsics.cx) / intrinsics.fx,
                (v - intrinsics.cy) / intrinsics.fy,
                torch.ones_like(u),
            ],
            dim=-1,
        )
        @ pose[:3, :3].T
    )
    origin = pose[:3, 3]
    distance = (TILTED_NORMAL @ torch.tensor([0.0, 0.0, 2.0]) - origin @ TILTED_NORMAL) / (
        rays @ TILTED_NORMAL
    )
    return origin + distance[..., None] * rays


def _plane_texture(points: torch.Tensor) -> torch.Tensor:
    """Smooth colour painted on the plane, a function of the in-plane coordinates."""
    t1 = torch.nn.functional.normalize(
        torch.linalg.cross(TILTED_NORMAL, torch.tensor([0.0, 1, 0])), dim=0
    )
    t2 = torch.linalg.cross(TILTED_NORMAL, t1)
    a, b = 2 * math.pi * (points @ t1) / 1.5, 2 * math.pi * (points @ t2) / 1.5
    return torch.stack(
        [0.5 + 0.4 * a.sin(), 0.5 + 0.4 * b.cos(), 0.5 + 0.2 * a.sin() * b.cos()], dim=-1
    )


def tilted_plane_rgbd() -> tuple[np.ndarray, np.ndarray]:
    """(48, 64, 3) uint8 texture and (48, 64) depth of the tilted plane seen at the origin."""
    points = _plane_points(torch.eye(4))
    rgb = (_plane_texture(points) * 255).round().to(torch.uint8).numpy()
    return rgb, points[..., 2].numpy().astype(np.float32)


def test_normals_from_depth_of_a_tilted_plane_and_its_edges():
    _, depth = tilted_plane_rgbd()
    normals, ok = normals_from_depth(depth, INTR)
    assert ok.all()
    torch.testing.assert_close(normals, TILTED_NORMAL.expand(48, 64, 3), atol=1e-4, rtol=0)
    # A box 1 m in front: pixels on both sides of its edges keep their own surface's normal
    # (one-sided differences), so the wall's normal is not bent towards the box.
    depth[14:34, 20:44] = 1.0
    depth[0, 5] = 0.0  # an unknown pixel: no normal there, its neighbours still have one
    normals, ok = normals_from_depth(depth, INTR)
    strided, strided_ok = normals_from_depth(depth, INTR, stride=2)
    assert strided.shape == (24, 32, 3) and strided_ok.all()  # (0, 5) is not on the grid
    torch.testing.assert_close(strided[3:, :8], TILTED_NORMAL.expand(21, 8, 3), atol=1e-4, rtol=0)
    assert not ok[0, 5] and ok.sum() == 48 * 64 - 1
    wall = np.ones((48, 64), bool)
    wall[14:34, 20:44] = False
    wall[0, 5] = False
    torch.testing.assert_close(
        normals[torch.from_numpy(wall)], TILTED_NORMAL.expand(int(wall.sum()), 3), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(normals[20, 30], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(normals[14, 20], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5, rtol=0)


def test_normal_orientation_puts_the_thin_axis_on_the_plane_normal():
    rgb, depth = tilted_plane_rgbd()
    pose = torch.eye(4)
    pose[:3, :3] = look_at((0.0, 0.0, 0.0), (0.3, 0.1, 1.0), up=(0.0, -1.0, 0.0))[:3, :3]
    camera = gaussians_from_rgbd(rgb, depth, INTR, pose)
    normal = gaussians_from_rgbd(rgb, depth, INTR, pose, orient="normal")
    world_normal = pose[:3, :3] @ TILTED_NORMAL
    axes = quat_to_rotmat(normal.quats)
    thin = normal.scales.argmin(dim=-1)
    assert (thin == 2).all()
    assert float((axes[:, :, 2] @ world_normal).abs().min()) > 0.9999
    # Camera-facing discs are thin along the optical axis instead, ~34 degrees off the normal.
    camera_thin = quat_to_rotmat(camera.quats)[:, :, 2]
    assert float((camera_thin @ world_normal).abs().max()) < 0.85
    # In-plane axes: the pixel's footprint on the plane, whose area is the camera-facing disc's
    # times (ray . optical axis) / |ray . normal|; stretched along the slope.
    ratio = normal.scales[:, :2] / camera.scales[:, :2]
    rays = torch.nn.functional.normalize(normal.means, dim=-1)  # the camera sits at the origin
    obliquity = (rays @ pose[:3, 2]) / (rays @ world_normal).abs()
    torch.testing.assert_close(ratio.prod(dim=-1), obliquity, atol=1e-4, rtol=1e-4)
    assert float(ratio[:, 0].max()) > 1.5 and float(ratio.min()) > 0.8
    torch.testing.assert_close(normal.scales[:, 2], camera.scales[:, 2])
    torch.testing.assert_close(normal.means, camera.means)


def test_normal_orientation_keeps_fronto_parallel_discs_and_falls_back_at_edges():
    rgb, depth = checker_rgbd()
    depth[:, 50] = 0.0  # columns 49 and 53 keep one neighbour along u: one-sided normals
    depth[:, 52] = 0.0  # column 51 alone between two unknown columns: no normal there
    camera = gaussians_from_rgbd(rgb, depth, INTR)
    normal = gaussians_from_rgbd(rgb, depth, INTR, orient="normal")
    torch.testing.assert_close(_covariances(normal), _covariances(camera), atol=1e-9, rtol=0)
    lone = torch.isclose(normal.means[:, 0], torch.tensor((51 - 31.5) / 60 * 2))
    assert int(lone.sum()) == 48
    torch.testing.assert_close(normal.quats[lone], camera.quats[lone])


def test_normal_discs_render_an_oblique_view_closer_to_the_truth():
    rgb, depth = tilted_plane_rgbd()
    camera = gaussians_from_rgbd(rgb, depth, INTR)
    normal = gaussians_from_rgbd(rgb, depth, INTR, orient="normal")
    identity = Cameras.from_intrinsics(torch.eye(4)[None], INTR)
    with torch.no_grad():
        at_input = {name: render(g, identity) for name, g in (("c", camera), ("n", normal))}
    # The input view is the same with either orientation.
    assert (at_input["n"].alpha[0][4:-4, 4:-4] > 0.95).all()
    torch.testing.assert_close(at_input["n"].rgb, at_input["c"].rgb, atol=0.03, rtol=0)
    centre = torch.tensor([0.0, 0.0, 2.0])
    gains = []
    for degrees in (30.0, 45.0):  # orbiting towards the plane's grazing side
        angle = math.radians(-degrees)
        eye = centre + 2.0 * torch.tensor([math.sin(angle), 0.0, -math.cos(angle)])
        pose = look_at(eye, centre, up=(0.0, -1.0, 0.0))
        points = _plane_points(pose)
        truth = _plane_texture(points)
        u = points[..., 0] / points[..., 2] * INTR.fx + INTR.cx
        v = points[..., 1] / points[..., 2] * INTR.fy + INTR.cy
        seen = (u > 2) & (u < 61) & (v > 2) & (v < 45)  # inside the input view
        view = Cameras.from_intrinsics(pose[None], INTR)
        with torch.no_grad():
            errors = [
                float(((render(g, view).rgb[0] - truth)[seen] ** 2).mean())
                for g in (camera, normal)
            ]
        gains.append(10 * math.log10(errors[0] / errors[1]))
    assert min(gains) > 1.0, gains


def _covariances(gaussians):
    rs = quat_to_rotmat(gaussians.quats) * gaussians.scales[:, None, :]
    return (rs @ rs.transpose(1, 2)).double()


def test_builder_options_orient_and_fill_border():
    rgb, depth = box_on_wall()
    common = {"depth_stride": 1, "fill_occlusions": True}
    plain = build_world(rgb, depth, INTR, np.eye(4), BuildOptions(**common)).gaussians
    bordered = build_world(
        rgb, depth, INTR, np.eye(4), BuildOptions(**common, fill_border=24)
    ).gaussians
    assert len(bordered) - len(plain) == (64 + 48) * (48 + 48) - 64 * 48  # the ring
    at_input = Cameras.from_intrinsics(torch.eye(4)[None], INTR)
    turned = torch.eye(4)
    turned[:3, :3] = look_at((0.0, 0.0, 0.0), (-0.25, 0.0, 1.0), up=(0.0, -1.0, 0.0))[:3, :3]
    side = Cameras.from_intrinsics(turned[None], INTR)
    with torch.no_grad():
        torch.testing.assert_close(
            render(bordered, at_input).rgb, render(plain, at_input).rgb, atol=0.02, rtol=0
        )
        without, with_border = render(plain, side), render(bordered, side)
    # Turned 14 degrees left: the left ~14 columns look beyond the frame's border.
    margin = (slice(8, 40), slice(0, 10))
    assert float(without.alpha[0, ..., 0][margin].max()) < 0.5
    assert float(with_border.alpha[0, ..., 0][margin].min()) > 0.9
    colours = with_border.rgb[0][margin]  # the red wall carried on, at the wall's depth
    assert float(colours[..., 0].mean()) > 0.7 and float(colours[..., 2].mean()) < 0.1
    v, u = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    rays = torch.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, torch.ones_like(u)], -1)
    wall_z = with_border.depth[0, ..., 0] * (rays @ turned[2, :3])  # z in the input camera
    torch.testing.assert_close(wall_z[margin], torch.full((32, 10), 3.0), atol=0.05, rtol=0)

    rgb, depth = tilted_plane_rgbd()
    surface = build_world(
        rgb,
        depth,
        INTR,
        np.eye(4),
        BuildOptions(depth_stride=1, orient="normal", fill_occlusions=False),
    ).gaussians
    assert float((quat_to_rotmat(surface.quats)[:, :, 2] @ TILTED_NORMAL).abs().min()) > 0.9999


@pytest.mark.parametrize(
    "options, match",
    [
        ({"orient": "ray"}, "orient"),
        ({"fill_border": -1}, "fill_border"),
        ({"fill_border": 2.5}, "fill_border"),
        ({"depth_stride": 0}, "depth_stride"),
    ],
)
def test_builder_rejects_bad_options(options, match):
    rgb, depth = checker_rgbd()
    with pytest.raises(WorldBuildError, match=match):
        build_world(rgb, depth, INTR, np.eye(4), BuildOptions(**options))
