"""Tests for lyra_core.rendering.renderer: the torch backend against the brute-force reference,
autograd,
pixel and depth conventions, input validation and (on CUDA) the gsplat backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import lyra_core.rendering.renderer as rendering
from lyra_core.geometry.cameras import Cameras
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering import available_backends, render
from lyra_core.rendering.projection import (
    ALPHA_THRESHOLD,
    corner_based_Ks,
    project_gaussians,
)
from lyra_core.rendering.spherical_harmonics import sh_to_rgb
from lyra_core.scene.gaussians import Gaussians

F32, F64 = torch.float32, torch.float64
BACKGROUND = (0.2, 0.5, 0.8)
PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")
# Tolerances of torch vs reference: rgb and alpha, then expected depth (meters: larger values,
# divided by alpha, which amplifies rounding where alpha is small).
TOL = {F32: dict(atol=1e-5, rtol=1e-5), F64: dict(atol=1e-10, rtol=1e-10)}
DEPTH_TOL = {F32: dict(atol=1e-4, rtol=1e-5), F64: dict(atol=1e-9, rtol=1e-10)}


def assert_renders_close(out, ref):
    dtype = ref.rgb.dtype
    assert out.rgb.shape == ref.rgb.shape
    assert out.alpha.shape == out.depth.shape == ref.alpha.shape
    assert out.rgb.dtype == out.alpha.dtype == out.depth.dtype == dtype
    assert_close(out.rgb, ref.rgb, **TOL[dtype])
    assert_close(out.alpha, ref.alpha, **TOL[dtype])
    assert_close(out.depth, ref.depth, **DEPTH_TOL[dtype])


def leaf_scene(scene: Gaussians) -> Gaussians:
    """A copy of ``scene`` whose raw tensors are fresh autograd leaves."""
    return Gaussians(**{k: getattr(scene, k).detach().clone().requires_grad_(True) for k in PARAMS})


def pinhole(fx, fy, cx, cy, width, height, pose=None, dtype=F64) -> Cameras:
    K = torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=dtype)
    pose = torch.eye(4, dtype=dtype) if pose is None else pose.to(dtype)
    return Cameras(pose[None], K, width, height)


def gaussians_at(means, scales, opacities, colors, quats=None, dtype=F64) -> Gaussians:
    means = torch.as_tensor(means, dtype=F64).reshape(-1, 3)
    n = len(means)
    scales = torch.as_tensor(scales, dtype=F64).expand(n, 3)
    opacities = torch.as_tensor(opacities, dtype=F64).expand(n)
    colors = torch.as_tensor(colors, dtype=F64).expand(n, 3)
    if quats is None:
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64).expand(n, 4)
    quats = torch.as_tensor(quats, dtype=F64).expand(n, 4)
    return Gaussians.from_activated(means, quats, scales, opacities, colors).to(dtype=dtype)


# ---------------------------------------------------------------------- torch vs reference


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_torch_backend_matches_reference(sh_degree, dtype, make_scene, make_cameras):
    scene = make_scene(200, sh_degree=sh_degree, dtype=dtype, seed=sh_degree)
    cameras = make_cameras(3, dtype=dtype)
    out = render(scene, cameras, backend="torch", background=BACKGROUND)
    ref = render(scene, cameras, backend="reference", background=BACKGROUND)
    assert (out.backend, ref.backend) == ("torch", "reference")
    assert out.rgb.shape == (3, 48, 64, 3)
    assert_renders_close(out, ref)
    # A meaningful scene in every camera: partly covered, partly empty.
    coverage = (ref.alpha > 0.5).float().mean(dim=(1, 2, 3))
    assert (coverage > 0.1).all() and (coverage < 0.9).all()
    assert (ref.alpha == 0).any()
    # Cameras see different images.
    assert (ref.rgb[0] - ref.rgb[1]).abs().max() > 0.1


@pytest.fixture(scope="module")
def odd_size_case(make_scene, make_cameras):
    """A float64 scene on a 61 x 45 image (no tile size divides it) and its reference render."""
    scene = make_scene(200, sh_degree=1, seed=10)
    cameras = make_cameras(2, width=61, height=45)
    ref = render(scene, cameras, backend="reference", background=BACKGROUND)
    return scene, cameras, ref


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_torch_backend_does_not_depend_on_tile_and_chunk_size(tile_size, chunk_size, odd_size_case):
    scene, cameras, ref = odd_size_case
    out = render(
        scene,
        cameras,
        backend="torch",
        background=BACKGROUND,
        tile_size=tile_size,
        chunk_size=chunk_size,
    )
    assert out.rgb.shape == (2, 45, 61, 3)
    assert_renders_close(out, ref)


def stacked_opaque_scene(dtype) -> Gaussians:
    """200 large, nearly opaque Gaussians stacked in front of the camera at the origin."""
    n = 200
    gen = torch.Generator().manual_seed(3)
    means = torch.cat(
        [
            (torch.rand(n, 2, generator=gen, dtype=F64) - 0.5) * 0.8,
            2.0 + 2.0 * torch.rand(n, 1, generator=gen, dtype=F64),
        ],
        dim=1,
    )
    scales = 0.3 + 0.4 * torch.rand(n, 3, generator=gen, dtype=F64)
    opacities = 0.85 + 0.15 * torch.rand(n, generator=gen, dtype=F64)
    quats = torch.randn(n, 4, generator=gen, dtype=F64)
    colors = torch.rand(n, 3, generator=gen, dtype=F64)
    return Gaussians.from_activated(means, quats, scales, opacities, colors).to(dtype=dtype)


def transmittance_without_early_stop(scene: Gaussians, cameras: Cameras) -> torch.Tensor:
    """(C, H, W) product of (1 - alpha) over every Gaussian, i.e. no early stop."""
    proj = project_gaussians(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        cameras.viewmats,
        corner_based_Ks(cameras.Ks),
        cameras.width,
        cameras.height,
    )
    rows, cols = torch.meshgrid(
        torch.arange(cameras.height, dtype=F64) + 0.5,
        torch.arange(cameras.width, dtype=F64) + 0.5,
        indexing="ij",
    )
    d = torch.stack([cols, rows], -1)[None, None] - proj.means2d.to(F64)[..., None, None, :]
    a, b, c = (t[..., None, None] for t in proj.conics.to(F64).unbind(-1))
    sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
    alpha = (scene.opacities.to(F64)[None, :, None, None] * torch.exp(-sigma)).clamp_max(0.999)
    alpha = torch.where((alpha >= ALPHA_THRESHOLD) & proj.visible[..., None, None], alpha, 0.0)
    return torch.prod(1.0 - alpha, dim=1)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("tile_size, chunk_size", [(8, 32), (4, 7), (16, 1)])
def test_early_stop_in_dense_scene(tile_size, chunk_size, dtype, make_cameras):
    scene = stacked_opaque_scene(dtype)
    cameras = make_cameras(2, dtype=dtype)
    out = render(
        scene,
        cameras,
        backend="torch",
        background=BACKGROUND,
        tile_size=tile_size,
        chunk_size=chunk_size,
    )
    ref = render(scene, cameras, backend="reference", background=BACKGROUND)
    if dtype == F64:
        assert_renders_close(out, ref)
    else:
        # In float32 the summation order (thread count) can move the stop by one Gaussian on a
        # pixel whose transmittance lands on the 1e-4 threshold: allow a few such pixels.
        off = (out.rgb - ref.rgb).abs().amax(dim=-1) > TOL[F32]["atol"] + 1e-5 * ref.rgb.abs().amax(
            dim=-1
        )
        assert off.float().mean() < 1e-3
        assert_close(out.rgb[~off], ref.rgb[~off], **TOL[F32])
        assert (out.rgb - ref.rgb).abs().max() < 5e-3

    # Without the early stop, transmittance would fall far below 1e-4 on many pixels ...
    full = transmittance_without_early_stop(scene, cameras)
    saturated = full < 1e-6
    assert saturated.float().mean() > 0.3
    # ... but compositing stops before it crosses 1e-4 (the stopping Gaussian is excluded).
    trans = 1.0 - out.alpha[..., 0].to(F64)
    slack = 1e-6 if dtype == F32 else 1e-12
    assert (trans > 1e-4 - slack).all()
    assert (out.alpha[..., 0][saturated] > 0.9).all()
    assert out.alpha[..., 0][saturated].mean() > 0.99


# ---------------------------------------------------------------------- autograd


@pytest.mark.parametrize("tile_size, chunk_size", [(8, 32), (4, 3)])
def test_torch_gradients_match_reference(tile_size, chunk_size, make_scene, make_cameras):
    scene = make_scene(60, sh_degree=2, seed=4)
    cameras = make_cameras(3, width=32, height=24)
    gen = torch.Generator().manual_seed(5)
    weights = [torch.rand(3, 24, 32, k, generator=gen, dtype=F64) for k in (3, 1, 1)]
    grads = {}
    for backend in ("torch", "reference"):
        leaves = leaf_scene(scene)
        out = render(
            leaves,
            cameras,
            backend=backend,
            background=BACKGROUND,
            tile_size=tile_size,
            chunk_size=chunk_size,
        )
        images = (out.rgb, out.alpha, out.depth)
        loss = sum((t * w).sum() for t, w in zip(images, weights, strict=True))
        loss.backward()
        grads[backend] = {name: getattr(leaves, name).grad for name in PARAMS}
    for name in PARAMS:
        got, want = grads["torch"][name], grads["reference"][name]
        assert (want != 0).float().mean() > 0.5, f"{name}: gradient mostly zero"
        assert_close(got, want, rtol=1e-8, atol=1e-10 * float(want.abs().max()), msg=name)


def tiny_gradcheck_scene() -> tuple[Gaussians, Cameras]:
    """3 broad Gaussians on a 16 x 12 image: every alpha is well above 1/255 at every pixel,
    below 0.999, and transmittance stays far above 1e-4, so the image is smooth in the inputs."""
    means = torch.tensor([[0.1, -0.05, 2.0], [-0.15, 0.1, 2.5], [0.05, 0.12, 3.0]], dtype=F64)
    quats = torch.tensor([[1.0, 0.1, -0.2, 0.3], [0.9, -0.3, 0.2, 0.1], [0.5, 0.5, 0.1, -0.4]])
    scales = torch.tensor([[0.6, 0.5, 0.4], [0.7, 0.55, 0.5], [0.8, 0.9, 0.6]], dtype=F64)
    opacities = torch.tensor([0.5, 0.4, 0.6], dtype=F64)
    sh = 0.3 * torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    scene = Gaussians.from_activated(means, quats.to(F64), scales, opacities, sh)
    return scene, pinhole(20.0, 20.0, 7.5, 5.5, 16, 12)


def test_gradcheck_tiny_scene():
    scene, camera = tiny_gradcheck_scene()
    # Check the premise: per-Gaussian alpha at every pixel centre is far from the 1/255 cut.
    for i in range(3):
        alpha = 1.0 - transmittance_without_early_stop(scene[i], camera)
        assert alpha.min() > 5 * ALPHA_THRESHOLD and alpha.max() < 0.99
    full = transmittance_without_early_stop(scene, camera)
    assert full.min() > 0.01

    def images(means, quats, log_scales, opacity_logits, sh):
        out = render(
            Gaussians(means, quats, log_scales, opacity_logits, sh),
            camera,
            backend="torch",
            background=BACKGROUND,
            tile_size=4,
            chunk_size=2,
        )
        return torch.cat([out.rgb, out.alpha, out.depth], dim=-1)

    inputs = tuple(getattr(scene, k).detach().clone().requires_grad_(True) for k in PARAMS)
    assert torch.autograd.gradcheck(images, inputs, fast_mode=True)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_inference_and_autograd_paths_agree(dtype, make_scene, make_cameras):
    scene = leaf_scene(make_scene(200, sh_degree=1, dtype=dtype, seed=6))
    cameras = make_cameras(2, dtype=dtype)
    for tile_size, chunk_size in ((8, 32), (4, 5)):
        kwargs = dict(backend="torch", background=BACKGROUND, tile_size=tile_size)
        kwargs["chunk_size"] = chunk_size
        with_grad = render(scene, cameras, **kwargs)
        assert with_grad.rgb.requires_grad
        with torch.no_grad():
            no_grad = render(scene, cameras, **kwargs)
        with torch.inference_mode():
            inference = render(scene, cameras, **kwargs)
        assert not no_grad.rgb.requires_grad and not inference.rgb.requires_grad
        for other in (no_grad, inference):
            for field in ("rgb", "alpha", "depth"):
                assert torch.equal(getattr(with_grad, field), getattr(other, field)), field


# ---------------------------------------------------------------------- pixel convention


def tilted_pose() -> torch.Tensor:
    return look_at(
        torch.tensor([0.3, -0.4, 0.2], dtype=F64),
        torch.tensor([1.0, 0.5, 4.0], dtype=F64),
        torch.tensor([0.1, -1.0, 0.0], dtype=F64),
    )


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("u, v", [(10, 7), (0, 0), (63, 47), (31, 23), (40, 3)])
def test_gaussian_on_pixel_ray_peaks_at_that_pixel(u, v, backend):
    fx, fy, cx, cy, z = 50.0, 56.0, 30.3, 21.6, 2.5
    pose = tilted_pose()
    camera = pinhole(fx, fy, cx, cy, 64, 48, pose=pose)
    point_cam = torch.tensor([(u - cx) / fx * z, (v - cy) / fy * z, z], dtype=F64)
    mean = pose[:3, :3] @ point_cam + pose[:3, 3]
    color = torch.tensor([0.9, 0.6, 0.3], dtype=F64)
    scene = gaussians_at(mean, 1e-3, 1.0, color)
    out = render(scene, camera, backend=backend, background=BACKGROUND)
    alpha = out.alpha[0, ..., 0]
    assert divmod(int(alpha.argmax()), 64) == (v, u)
    assert alpha[v, u] == pytest.approx(0.999, abs=1e-9)  # alpha clamp at the centre
    bg = torch.tensor(BACKGROUND, dtype=F64)
    assert_close(out.rgb[0, v, u], 0.999 * color + 0.001 * bg)
    # Exactly centred: the two neighbours on each axis see the same alpha.
    if 0 < u < 63:
        assert alpha[v, u - 1] == pytest.approx(float(alpha[v, u + 1]), abs=1e-12)
        assert 0.05 < alpha[v, u - 1] < 0.5
    if 0 < v < 47:
        assert alpha[v - 1, u] == pytest.approx(float(alpha[v + 1, u]), abs=1e-12)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_centred_gaussian_renders_symmetric_image(backend):
    width, height = 30, 21  # no tile size divides them
    camera = pinhole(25.0, 25.0, (width - 1) / 2, (height - 1) / 2, width, height)
    # Axis-aligned ellipse at the principal point: mirror symmetric about both axes.
    aligned = gaussians_at([0.0, 0.0, 3.0], [1.2, 0.8, 0.1], 0.9, [0.2, 0.7, 0.4])
    out = render(aligned, camera, backend=backend, background=BACKGROUND)
    for image in (out.rgb, out.alpha, out.depth):
        assert_close(image, image.flip(2), atol=1e-12, rtol=0)  # left-right
        assert_close(image, image.flip(1), atol=1e-12, rtol=0)  # up-down
    assert out.alpha[0, height // 2, width // 2, 0] > 0.8
    assert out.alpha[0, 0, 0, 0] > 0.0  # the ellipse reaches the corners: a non-trivial test

    # Rotated 30 degrees about the optical axis: only point symmetric.
    angle = math.radians(30.0)
    quat = [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]
    rotated = gaussians_at([0.0, 0.0, 3.0], [1.2, 0.8, 0.1], 0.9, [0.2, 0.7, 0.4], quats=quat)
    alpha = render(rotated, camera, backend=backend).alpha
    assert_close(alpha, alpha.flip(1, 2), atol=1e-12, rtol=0)
    assert (alpha - alpha.flip(2)).abs().max() > 0.01


# ---------------------------------------------------------------------- depth and background


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("z", [2.0, 3.5])
def test_opaque_plane_depth(z, backend, make_cameras):
    camera = make_cameras(1, dtype=F32)  # identity pose, 60 degree vertical field of view
    step = 0.2 * z / 2.0
    xs = torch.arange(-8, 9, dtype=F64) * step  # covers |x| <= 1.6 z / 2 > half-width 0.77 z
    ys = torch.arange(-6, 7, dtype=F64) * step  # covers |y| <= 1.2 z / 2 > half-height 0.58 z
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full_like(gx, z).reshape(-1)], -1)
    scene = gaussians_at(means, [0.75 * step, 0.75 * step, 1e-3], 0.99, [0.5, 0.5, 0.5], dtype=F32)
    assert len(scene) == 221
    out = render(scene, camera, backend=backend, background=BACKGROUND)
    opaque = out.alpha[..., 0] > 0.99
    assert opaque.float().mean() > 0.95
    assert_close(out.depth[..., 0][opaque], torch.full_like(out.depth[..., 0][opaque], z))
    # Expected depth is a weighted mean of Gaussian depths, which all equal z here.
    covered = out.alpha[..., 0] > 0
    assert_close(out.depth[..., 0][covered], torch.full_like(out.depth[..., 0][covered], z))


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_empty_pixels_show_background(backend, make_cameras):
    camera = make_cameras(1)
    scene = gaussians_at([[0.0, 0.0, 3.5], [0.0, 0.0, -3.0]], 0.05, 0.9, [1.0, 0.0, 0.0])
    out = render(scene, camera, backend=backend, background=BACKGROUND)
    alpha, depth = out.alpha[0, ..., 0], out.depth[0, ..., 0]
    empty = alpha == 0
    assert 0.5 < empty.float().mean() < 1.0
    assert empty[0, 0] and empty[-1, -1] and not empty[24, 32]
    assert (depth[empty] == 0).all()
    bg = torch.tensor(BACKGROUND, dtype=F64)
    assert (out.rgb[0][empty] == bg).all()
    assert_close(depth[~empty], torch.full_like(depth[~empty], 3.5))


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_scene_out_of_view_renders_background(backend, make_cameras):
    cameras = make_cameras(2)
    behind = gaussians_at([[0.0, 0.0, -3.0], [0.5, 0.0, -1.0], [80.0, 0.0, 2.0]], 0.1, 0.9, 0.5)
    out = render(behind, cameras, backend=backend, background=BACKGROUND)
    bg = torch.tensor(BACKGROUND, dtype=F64)
    assert torch.equal(out.rgb, bg.expand(2, 48, 64, 3))
    assert torch.equal(out.alpha, torch.zeros(2, 48, 64, 1, dtype=F64))
    assert torch.equal(out.depth, torch.zeros(2, 48, 64, 1, dtype=F64))


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_near_and_far_planes_cull_in_render(backend, make_cameras):
    camera = make_cameras(1)  # identity pose
    # A red Gaussian at z = 2 on the left, a blue one at z = 4 on the right.
    means = [[-0.5, 0.0, 2.0], [1.0, 0.0, 4.0]]
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    scene = gaussians_at(means, 0.1, 0.9, colors)

    def coverage(**planes):
        alpha = render(scene, camera, backend=backend, **planes).alpha[0, ..., 0]
        return bool((alpha[:, :32] > 0.5).any()), bool((alpha[:, 32:] > 0.5).any())

    assert coverage() == (True, True)
    assert coverage(far=3.0) == (True, False)
    assert coverage(near=3.0) == (False, True)
    assert coverage(near=4.5, far=9.0) == (False, False)


def test_eps2d_is_passed_through(make_scene, make_cameras):
    scene, cameras = make_scene(100, seed=8), make_cameras(2)
    default = render(scene, cameras, backend="torch")
    for eps2d in (0.1, 1.0):
        out = render(scene, cameras, backend="torch", eps2d=eps2d)
        assert_renders_close(out, render(scene, cameras, backend="reference", eps2d=eps2d))
        assert (out.alpha - default.alpha).abs().max() > 1e-3
    # A larger dilation spreads every Gaussian: more pixels are touched.
    wide = render(scene, cameras, backend="torch", eps2d=3.0)
    assert (wide.alpha > 0).sum() > (default.alpha > 0).sum()


def test_default_background_is_black(make_scene, make_cameras):
    scene, cameras = make_scene(50, seed=2), make_cameras(1)
    black = render(scene, cameras, backend="torch")
    white = render(scene, cameras, backend="torch", background=(1.0, 1.0, 1.0))
    assert_close(black.rgb + (1.0 - black.alpha), white.rgb)
    assert torch.equal(black.alpha, white.alpha)


def test_gaussians_are_cast_to_the_camera_dtype(make_scene, make_cameras):
    scene = make_scene(50, seed=2, dtype=F64)
    out = render(scene, make_cameras(1, dtype=F32), backend="torch")
    ref = render(scene.to(dtype=F32), make_cameras(1, dtype=F32), backend="torch")
    assert out.rgb.dtype == F32
    assert torch.equal(out.rgb, ref.rgb)


# ---------------------------------------------------------------------- spherical harmonics


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_gsplat(degree, make_scene, make_cameras):
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = make_scene(100, sh_degree=degree, seed=degree)
    cameras = make_cameras(4)
    ours = sh_to_rgb(scene.sh, scene.means, cameras.centers)
    dirs = scene.means[None] - cameras.centers[:, None]  # as gsplat.rasterization
    theirs = torch_impl._spherical_harmonics(degree, dirs, scene.sh.expand(4, -1, -1, -1))
    assert_close(ours, (theirs + 0.5).clamp_min(0.0))
    if degree > 0:  # view dependent
        assert (ours[0] - ours[1]).abs().max() > 1e-3


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field", PARAMS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_scene_is_rejected(field, bad, make_scene, make_cameras):
    scene = make_scene(20, sh_degree=1)
    getattr(scene, field).view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"^{field} contains 1 non-finite"):
        render(scene, make_cameras(1), backend="torch")


def test_zero_quaternion_is_rejected(make_scene, make_cameras):
    scene = make_scene(20)
    scene.quats[5] = 0.0
    with pytest.raises(ValueError, match="quats"):
        render(scene, make_cameras(1), backend="torch")


def test_non_finite_cameras_cannot_be_built(make_cameras):
    good = make_cameras(2)
    poses, Ks = good.camtoworlds.clone(), good.Ks.clone()
    poses[1, 0, 3] = math.nan
    with pytest.raises(ValueError, match="camtoworlds"):
        Cameras(poses, good.Ks, 64, 48)
    Ks[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="Ks"):
        Cameras(good.camtoworlds, Ks, 64, 48)


@pytest.mark.parametrize(
    "near, far, name",
    [
        (0.0, 10.0, "near"),
        (-1.0, 10.0, "near"),
        (math.nan, 10.0, "near"),
        (0.1, math.nan, "far"),
        (0.1, 0.0, "far"),
        (5.0, 5.0, "near"),
        (5.0, 1.0, "near"),
        (math.inf, math.inf, "near"),
    ],
)
def test_bad_planes_are_rejected(near, far, name, make_scene, make_cameras):
    with pytest.raises(ValueError, match=name):
        render(make_scene(10), make_cameras(1), backend="torch", near=near, far=far)


@pytest.mark.parametrize(
    "near", [np.float32(0.5), torch.tensor(0.5), 0.5], ids=["numpy", "tensor", "float"]
)
def test_planes_accept_numeric_scalars(near, make_scene, make_cameras):
    scene, cameras = make_scene(30), make_cameras(1)
    expected = render(scene, cameras, backend="torch", near=0.5)
    torch.testing.assert_close(render(scene, cameras, backend="torch", near=near).rgb, expected.rgb)


@pytest.mark.parametrize("near", [True, "0.5", None])
def test_planes_reject_non_numbers(near, make_scene, make_cameras):
    with pytest.raises(ValueError, match="near"):
        render(make_scene(10), make_cameras(1), backend="torch", near=near)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tile_size": 0}, "tile_size"),
        ({"tile_size": -8}, "tile_size"),
        ({"tile_size": 8.0}, "tile_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"chunk_size": True}, "chunk_size"),
    ],
)
def test_bad_tiling_is_rejected(kwargs, name, make_scene, make_cameras):
    with pytest.raises(ValueError, match=name):
        render(make_scene(10), make_cameras(1), backend="torch", **kwargs)


def test_cameras_with_mixed_dtypes_are_rejected(make_cameras):
    good = make_cameras(1)
    with pytest.raises(ValueError, match="Ks"):
        Cameras(good.camtoworlds.float(), good.Ks.double(), 64, 48)


def test_zero_cameras_are_rejected():
    with pytest.raises(ValueError, match="camtoworlds"):
        Cameras(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), 64, 48)


@pytest.mark.parametrize(
    "background",
    [(0.1, 0.2), (0.1, 0.2, 0.3, 0.4), (math.nan, 0.0, 0.0), (0.0, math.inf, 0.0), ()],
    ids=["two", "four", "nan", "inf", "empty"],
)
def test_bad_background_is_rejected(background, make_scene, make_cameras):
    with pytest.raises(ValueError, match="background"):
        render(make_scene(10), make_cameras(1), backend="torch", background=background)


def test_background_may_be_a_tensor(make_scene, make_cameras):
    scene, cameras = make_scene(30), make_cameras(1)
    as_tuple = render(scene, cameras, backend="torch", background=BACKGROUND)
    as_tensor = render(scene, cameras, backend="torch", background=torch.tensor(BACKGROUND))
    assert as_tensor.rgb.dtype == F64  # cast to the cameras' dtype
    assert_close(as_tuple.rgb, as_tensor.rgb, atol=1e-7, rtol=0)
    column = torch.tensor(BACKGROUND, dtype=F64)[:, None]  # any shape holding 3 values
    assert torch.equal(render(scene, cameras, backend="torch", background=column).rgb, as_tuple.rgb)


def test_unknown_backend_is_rejected(make_scene, make_cameras):
    with pytest.raises(ValueError, match="unknown backend 'vulkan'"):
        render(make_scene(10), make_cameras(1), backend="vulkan")


@pytest.mark.parametrize("empty", [False, True])
def test_gsplat_backend_on_cpu_is_rejected(empty, make_scene, make_cameras):
    scene = Gaussians.empty(dtype=F64) if empty else make_scene(10)
    with pytest.raises(ValueError, match=r"gsplat.*CUDA"):
        render(scene, make_cameras(1), backend="gsplat")


@pytest.mark.parametrize("backend", ["auto", *available_backends()])
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_empty_scene_renders_background(backend, sh_degree, make_cameras):
    device = "cuda" if backend == "gsplat" else "cpu"
    cameras = make_cameras(2, dtype=F32).to(device=device)
    scene = Gaussians.empty(sh_degree=sh_degree, device=device)
    out = render(scene, cameras, backend=backend, background=BACKGROUND)
    on_cpu = "native" if rendering.native_extension() is not None else "torch"
    expected_backend = {"auto": "gsplat" if device == "cuda" else on_cpu}.get(backend, backend)
    assert out.backend == expected_backend
    bg = torch.tensor(BACKGROUND, dtype=F32, device=device)
    assert torch.equal(out.rgb, bg.expand(2, 48, 64, 3))
    assert torch.equal(out.alpha, torch.zeros(2, 48, 64, 1, device=device))
    assert torch.equal(out.depth, torch.zeros(2, 48, 64, 1, device=device))


# ---------------------------------------------------------------------- backends


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_available_backends_on_cpu():
    backends = available_backends()
    assert "torch" in backends and "reference" in backends
    assert "gsplat" not in backends


def test_available_backends_follow_cuda_and_gsplat(monkeypatch):
    monkeypatch.setattr(rendering, "native_extension", lambda: None)
    monkeypatch.setattr(rendering, "gsplat_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rendering.available_backends() == ["torch", "reference"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rendering.available_backends() == ["gsplat", "torch", "reference"]
    monkeypatch.setattr(rendering, "native_extension", lambda: object())
    assert rendering.available_backends() == ["gsplat", "native", "torch", "reference"]
    monkeypatch.setattr(rendering, "gsplat_available", lambda: False)
    assert rendering.available_backends() == ["native", "torch", "reference"]


def test_auto_backend_on_cpu_is_torch(make_scene, make_cameras):
    scene, cameras = make_scene(30), make_cameras(1)
    auto = render(scene, cameras)
    assert auto.backend == "torch"
    assert torch.equal(auto.rgb, render(scene, cameras, backend="torch").rgb)


# ---------------------------------------------------------------------- CUDA: gsplat backend


def cuda_case(make_scene, make_cameras, sh_degree=2):
    scene = make_scene(300, sh_degree=sh_degree, dtype=F32, seed=20).to(device="cuda")
    cameras = make_cameras(3, dtype=F32).to(device="cuda")
    return scene, cameras


@pytest.mark.cuda
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_cuda_torch_backend_matches_gsplat(sh_degree, make_scene, make_cameras):
    scene, cameras = cuda_case(make_scene, make_cameras, sh_degree)
    ours = render(scene, cameras, backend="torch", background=BACKGROUND)
    theirs = render(scene, cameras, backend="gsplat", background=BACKGROUND)
    assert theirs.backend == "gsplat"
    assert render(scene, cameras, background=BACKGROUND).backend == "gsplat"  # auto
    assert theirs.rgb.shape == ours.rgb.shape == (3, 48, 64, 3)
    assert theirs.alpha.shape == theirs.depth.shape == (3, 48, 64, 1)
    assert_close(ours.rgb, theirs.rgb, atol=1e-4, rtol=1e-4)
    assert_close(ours.alpha, theirs.alpha, atol=1e-4, rtol=1e-4)
    # Expected depth divides by alpha: compare the accumulated depth, and depth where opaque.
    assert_close(ours.depth * ours.alpha, theirs.depth * theirs.alpha, atol=1e-4, rtol=1e-4)
    opaque = theirs.alpha > 0.05
    assert_close(ours.depth[opaque], theirs.depth[opaque], atol=1e-3, rtol=1e-4)
    assert (theirs.alpha > 0.5).any() and (theirs.alpha == 0).any()


@pytest.mark.cuda
def test_cuda_gsplat_means2d_match_and_carry_view_space_gradients(make_scene, make_cameras):
    scene, cameras = cuda_case(make_scene, make_cameras)
    scene.means.requires_grad_(True)
    outs = {b: render(scene, cameras, backend=b) for b in ("torch", "gsplat")}
    ours, theirs = outs["torch"], outs["gsplat"]
    assert theirs.means2d is not None and theirs.means2d.shape == ours.means2d.shape
    visible = ours.means2d.detach().abs().amax(dim=-1) < 1e4
    assert_close(theirs.means2d[visible], ours.means2d[visible], atol=1e-3, rtol=1e-4)
    grads = {}
    for name, out in outs.items():
        out.means2d.retain_grad()
        out.rgb.sum().backward()
        grads[name] = out.means2d.grad
    assert grads["gsplat"].abs().sum() > 0
    assert_close(grads["gsplat"][visible], grads["torch"][visible], atol=1e-3, rtol=1e-3)


@pytest.mark.cuda
def test_cuda_torch_backend_matches_reference(make_scene, make_cameras):
    scene, cameras = cuda_case(make_scene, make_cameras)
    scene, cameras = scene[:100], cameras[:2]
    ours = render(scene, cameras, backend="torch", background=BACKGROUND)
    ref = render(scene, cameras, backend="reference", background=BACKGROUND)
    assert ours.rgb.is_cuda
    assert_renders_close(ours, ref)


@pytest.mark.cuda
def test_cuda_gradients_match_gsplat(make_scene, make_cameras):
    scene, cameras = cuda_case(make_scene, make_cameras)
    gen = torch.Generator(device="cuda").manual_seed(5)
    weights = [torch.rand(3, 48, 64, k, generator=gen, device="cuda") for k in (3, 1, 1)]
    grads = {}
    for backend in ("torch", "gsplat"):
        leaves = leaf_scene(scene)
        out = render(leaves, cameras, backend=backend, background=BACKGROUND)
        images = (out.rgb, out.alpha, out.depth)
        loss = sum((t * w).sum() for t, w in zip(images, weights, strict=True))
        loss.backward()
        grads[backend] = {name: getattr(leaves, name).grad for name in PARAMS}
    for name in PARAMS:
        got, want = grads["torch"][name], grads["gsplat"][name]
        assert want.abs().max() > 0, name
        scale = float(want.abs().max())
        assert_close(got, want, rtol=1e-3, atol=1e-3 * scale, msg=name)
