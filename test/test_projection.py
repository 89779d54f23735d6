"""Tests for lyra_core.rendering.projection: EWA projection, culling, bounding radii and
rotations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lyra_core.geometry.cameras import Cameras
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering.projection import (
    ALPHA_THRESHOLD,
    MAX_EXTENT,
    corner_based_Ks,
    covariances_3d,
    max_extent_for_opacity,
    project_gaussians,
    quat_to_rotmat,
)

F64 = torch.float64
EPS2D = 0.3


def project(scene, cameras, **kwargs):
    return project_gaussians(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        cameras.viewmats,
        corner_based_Ks(cameras.Ks),
        cameras.width,
        cameras.height,
        **kwargs,
    )


def one_camera(fx=80.0, fy=60.0, cx=30.0, cy=22.0, width=64, height=48, pose=None) -> Cameras:
    """A single float64 camera; ``pose`` is a camera-to-world matrix (default identity)."""
    K = torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=F64)
    pose = torch.eye(4, dtype=F64) if pose is None else pose
    return Cameras(pose[None], K, width, height)


def tilted_pose() -> torch.Tensor:
    return look_at(
        torch.tensor([0.3, -0.4, 0.2], dtype=F64),
        torch.tensor([1.0, 0.5, 4.0], dtype=F64),
        torch.tensor([0.1, -1.0, 0.0], dtype=F64),
    )


def to_world(pose: torch.Tensor, points_cam: torch.Tensor) -> torch.Tensor:
    return points_cam @ pose[:3, :3].T + pose[:3, 3]


def single_gaussians(means, scales, opacities, quats=None):
    """Raw tensors of N Gaussians (float64) for project_gaussians."""
    means = torch.as_tensor(means, dtype=F64).reshape(-1, 3)
    n = len(means)
    scales = torch.as_tensor(scales, dtype=F64).expand(n, 3)
    opacities = torch.as_tensor(opacities, dtype=F64).expand(n)
    if quats is None:
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64).expand(n, 4)
    return means, quats, scales, opacities


def project_raw(cameras, means, quats, scales, opacities, **kwargs):
    return project_gaussians(
        means,
        quats,
        scales,
        opacities,
        cameras.viewmats,
        corner_based_Ks(cameras.Ks),
        cameras.width,
        cameras.height,
        **kwargs,
    )


# ---------------------------------------------------------------------- gsplat's reference


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_gsplat_torch_reference(seed, make_scene, make_cameras):
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    # A wide scene: Gaussians behind the cameras, beyond far, far off-axis (past gsplat's
    # field-of-view clamp of the Jacobian) and with opacities down to below 1/255.
    scene = make_scene(
        300,
        seed=seed,
        depth_range=(-1.0, 7.0),
        spread=(1.6, 1.4),
        scale_range=(0.01, 1.0),
        opacity_range=(0.0005, 1.0),
    )
    low = torch.arange(len(scene)) % 10 == 0
    scene.opacity_logits[low] = math.log(0.5 / 254.5)  # opacity 0.5 / 255
    cameras = make_cameras(4)
    near, far = 0.05, 6.0
    ours = project(scene, cameras, eps2d=EPS2D, near=near, far=far)

    covars, _ = torch_impl._quat_scale_to_covar_preci(
        scene.quats, scene.scales, compute_covar=True, compute_preci=False
    )
    Ks = corner_based_Ks(cameras.Ks)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        scene.means,
        covars,
        cameras.viewmats,
        Ks,
        cameras.width,
        cameras.height,
        eps2d=EPS2D,
        near_plane=near,
        far_plane=far,
    )

    assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    theirs_visible = (radii > 0).all(dim=-1)
    both = ours.visible & theirs_visible
    # Ours culls more (opacity-aware boxes), never less.
    assert not (ours.visible & ~theirs_visible).any()
    assert both.sum() > 300, "too few visible Gaussians for a meaningful comparison"
    assert_close(ours.means2d[both], means2d[both], rtol=1e-12, atol=1e-9)
    assert_close(ours.conics[both], conics[both], rtol=1e-10, atol=1e-12)
    assert (ours.radii <= radii)[theirs_visible].all()

    # The comparison covers Gaussians past the field-of-view clamp of the Jacobian.
    x_px = ours.means2d[..., 0] - Ks[:, None, 0, 2]  # fx x / z
    lim_px = (cameras.width - Ks[:, 0, 2]) + 0.3 * 0.5 * cameras.width  # fx lim_x_pos
    assert (both & (x_px > lim_px[:, None])).any()

    # Our radii: ceil(min(3.33, sqrt(2 ln(255 o))) sigma) per axis, with gsplat's dilated
    # variances recovered from its conics; visible iff that box overlaps the image.
    a, b, c = conics.unbind(-1)
    det_conic = a * c - b * b
    var = torch.stack([c / det_conic, a / det_conic], dim=-1)
    extent = torch.tensor([max_extent_for_opacity(float(o)) for o in scene.opacities], dtype=F64)
    expected = torch.ceil(extent[None, :, None] * var.sqrt())
    m = means2d
    in_image = (
        (m[..., 0] + expected[..., 0] > 0)
        & (m[..., 0] - expected[..., 0] < cameras.width)
        & (m[..., 1] + expected[..., 1] > 0)
        & (m[..., 1] - expected[..., 1] < cameras.height)
    )
    expected_visible = theirs_visible & in_image & (expected > 0).all(dim=-1)
    assert torch.equal(ours.visible, expected_visible)
    assert torch.equal(ours.radii[both], expected[both].to(torch.int32))
    assert torch.equal(ours.radii[~ours.visible], torch.zeros_like(ours.radii[~ours.visible]))
    # Transparent Gaussians are culled by opacity alone (gsplat's reference keeps them).
    assert (theirs_visible & low[None]).any()
    assert not (ours.visible & low[None]).any()


# ---------------------------------------------------------------------- analytic checks


@pytest.mark.parametrize("z", [1.5, 4.0])
@pytest.mark.parametrize("posed", [False, True])
def test_isotropic_gaussian_on_the_optical_axis(z, posed):
    fx, fy, cx, cy, s = 80.0, 60.0, 30.0, 22.0, 0.05
    pose = tilted_pose() if posed else torch.eye(4, dtype=F64)
    cameras = one_camera(fx, fy, cx, cy, pose=pose)
    mean = to_world(pose, torch.tensor([[0.0, 0.0, z]], dtype=F64))
    # Any rotation: an isotropic Gaussian does not care.
    quat = torch.tensor([[0.3, -0.5, 0.7, 0.2]], dtype=F64)
    out = project_raw(cameras, *single_gaussians(mean, s, 0.8, quat))

    var_x, var_y = (fx * s / z) ** 2 + EPS2D, (fy * s / z) ** 2 + EPS2D
    # Corner-based pixel coordinates: the principal point (cx, cy) is at (cx + 0.5, cy + 0.5).
    assert_close(out.means2d[0, 0], torch.tensor([cx + 0.5, cy + 0.5], dtype=F64))
    assert_close(out.depths[0, 0], torch.tensor(z, dtype=F64))
    assert_close(out.conics[0, 0], torch.tensor([1 / var_x, 0.0, 1 / var_y], dtype=F64))
    extent = math.sqrt(2 * math.log(0.8 * 255))
    expected_radii = [math.ceil(extent * math.sqrt(var_x)), math.ceil(extent * math.sqrt(var_y))]
    assert out.radii[0, 0].tolist() == expected_radii


def test_points_project_with_the_pinhole_model():
    gen = torch.Generator().manual_seed(3)
    pose = tilted_pose()
    fx, fy, cx, cy = 70.0, 75.0, 33.2, 20.7
    cameras = one_camera(fx, fy, cx, cy, pose=pose)
    n = 50
    z = 0.5 + 5 * torch.rand(n, generator=gen, dtype=F64)
    xy = (torch.rand(n, 2, generator=gen, dtype=F64) - 0.5) * z[:, None]
    points_cam = torch.cat([xy, z[:, None]], dim=1)
    out = project_raw(cameras, *single_gaussians(to_world(pose, points_cam), 1e-3, 0.5))
    X, Y, Z = points_cam.unbind(-1)
    # OpenCV pixel coordinates are the corner-based ones minus 0.5.
    expected = torch.stack([fx * X / Z + cx, fy * Y / Z + cy], dim=-1)
    assert_close(out.means2d[0] - 0.5, expected, rtol=1e-12, atol=1e-10)
    assert_close(out.depths[0], Z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "point",
    [(0.3, -0.2, 2.0), (-1.0, 0.7, 3.0), (5.0, 0.1, 2.0), (0.2, -6.0, 2.0)],
    ids=["central", "off-axis", "past-x-clamp", "past-y-clamp"],
)
def test_covariance_is_ewa_with_the_field_of_view_clamp(point):
    """Conic = inverse of J R Sigma R^T J^T + 0.3 I, J the pinhole Jacobian at the mean with
    x/z and y/z clamped to 1.3 times the half field of view (as gsplat)."""
    width, height, fx, fy, cx, cy = 64, 48, 80.0, 60.0, 30.0, 22.0
    pose = tilted_pose()
    cameras = one_camera(fx, fy, cx, cy, width, height, pose=pose)
    quat = torch.tensor([[0.8, 0.1, -0.4, 0.3]], dtype=F64)
    scales = torch.tensor([[0.5, 0.2, 0.05]], dtype=F64)
    mean_cam = torch.tensor([point], dtype=F64)
    out = project_raw(
        cameras, to_world(pose, mean_cam), quat, scales, torch.tensor([0.9], dtype=F64)
    )

    cov_world = covariances_3d(quat, scales)[0]
    R = pose[:3, :3].T  # world to camera
    cov_cam = R @ cov_world @ R.T
    x, y, z = point
    cxc, cyc = cx + 0.5, cy + 0.5  # corner-based
    lim_x = ((width - cxc) / fx + 0.15 * width / fx, cxc / fx + 0.15 * width / fx)
    lim_y = ((height - cyc) / fy + 0.15 * height / fy, cyc / fy + 0.15 * height / fy)
    tx = z * min(max(x / z, -lim_x[1]), lim_x[0])
    ty = z * min(max(y / z, -lim_y[1]), lim_y[0])
    J = torch.tensor([[fx / z, 0.0, -fx * tx / z**2], [0.0, fy / z, -fy * ty / z**2]], dtype=F64)
    cov2d = J @ cov_cam @ J.T + EPS2D * torch.eye(2, dtype=F64)
    inv = torch.linalg.inv(cov2d)
    assert_close(out.conics[0, 0], torch.stack([inv[0, 0], inv[0, 1], inv[1, 1]]))
    # The mean itself is never clamped.
    assert_close(out.means2d[0, 0], torch.tensor([fx * x / z + cxc, fy * y / z + cyc], dtype=F64))


# ---------------------------------------------------------------------- culling


FLAT = (0.1, 0.1, 1e-4)  # flat along the optical axis: sigma_x = fx s / z exactly, off-axis too

CULL_CASES = {
    "behind-camera": dict(point=(0.0, 0.0, -2.0)),
    "at-camera-centre": dict(point=(0.0, 0.0, 0.0)),
    "closer-than-near": dict(point=(0.0, 0.0, 0.05), near=0.1),
    "beyond-far": dict(point=(0.0, 0.0, 12.0), far=10.0),
    "transparent": dict(point=(0.0, 0.0, 2.0), opacity=0.5 / 255),
    "far-right": dict(point=(40.0, 0.0, 2.0)),
    "far-above": dict(point=(0.0, -30.0, 2.0)),
    # Centre at corner-based x = -4.5 with sigma_x = 4.04 px: the alpha >= 1/255 box of opacity
    # 0.006 is only 4 px wide, so it ends at x = -0.5 (its opaque twin below is visible).
    "faint-just-outside": dict(point=(-0.9125, 0.0, 2.0), opacity=0.006, scale=FLAT),
}


def project_case(point, opacity=0.9, scale=0.05, **kwargs):
    cameras = one_camera(fx=80.0, fy=80.0, cx=31.5, cy=23.5)
    mean = torch.tensor([point], dtype=F64)
    return project_raw(cameras, *single_gaussians(mean, scale, opacity), **kwargs)


@pytest.mark.parametrize("case", list(CULL_CASES.values()), ids=list(CULL_CASES))
def test_culled_gaussians_have_zero_radii(case):
    out = project_case(**case)
    assert out.radii.tolist() == [[[0, 0]]]
    assert not out.visible.any()


@pytest.mark.parametrize(
    "case",
    [
        dict(point=(0.0, 0.0, 2.0)),
        dict(point=(0.0, 0.0, 2.0), opacity=1.01 / 255),
        dict(point=(0.0, 0.0, 0.15), near=0.1),
        dict(point=(0.0, 0.0, 9.0), far=10.0),
        dict(point=(-0.9125, 0.0, 2.0), opacity=1.0, scale=FLAT),  # twin of faint-just-outside
        dict(point=(0.88, 0.6, 2.0), scale=0.02),  # centre just past the bottom-right corner
    ],
    ids=["central", "barely-opaque", "past-near", "before-far", "opaque-just-outside", "corner"],
)
def test_visible_gaussians_have_positive_radii(case):
    out = project_case(**case)
    assert (out.radii > 0).all()
    assert out.visible.all()


def test_faint_gaussian_box_is_four_pixels_wide():
    out = project_case((-0.9125, 0.0, 2.0), opacity=0.006, scale=FLAT)
    assert_close(out.means2d[0, 0, 0], torch.tensor(-4.5, dtype=F64))
    # The radii are computed before culling; recompute them for the centred twin.
    twin = project_case((0.0, 0.0, 2.0), opacity=0.006, scale=FLAT)
    assert twin.radii[0, 0].tolist() == [4, 4]


def test_culling_is_per_camera():
    scene_means = torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)
    poses = torch.eye(4, dtype=F64).repeat(2, 1, 1)
    poses[1, 2, 3] = 5.0  # second camera in front of the Gaussian, looking away from it
    Ks = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 23.5], [0, 0, 1]], dtype=F64).expand(2, 3, 3)
    cameras = Cameras(poses, Ks.clone(), 64, 48)
    out = project_raw(cameras, *single_gaussians(scene_means, 0.05, 0.9))
    assert out.visible.tolist() == [[True], [False]]
    assert_close(out.depths, torch.tensor([[2.0], [-3.0]], dtype=F64))


# ---------------------------------------------------------------------- bounding radii


def test_radius_depends_on_opacity():
    f, z, s = 80.0, 2.0, 0.25  # sigma_px^2 = (f s / z)^2 + 0.3 = 100.3
    cameras = one_camera(fx=f, fy=f, cx=31.5, cy=23.5)
    mean = torch.tensor([[0.0, 0.0, z]], dtype=F64)
    sigma = math.sqrt((f * s / z) ** 2 + EPS2D)
    radii = {}
    for opacity in (1.0, 0.1):
        out = project_raw(cameras, *single_gaussians(mean, s, opacity))
        radii[opacity] = out.radii[0, 0].tolist()
    # Opacity 1: sqrt(2 ln 255) = 3.329 < 3.33 sigma; opacity 0.1: sqrt(2 ln 25.5) = 2.545 sigma.
    assert radii[1.0] == [math.ceil(math.sqrt(2 * math.log(255)) * sigma)] * 2 == [34, 34]
    assert radii[0.1] == [math.ceil(math.sqrt(2 * math.log(25.5)) * sigma)] * 2 == [26, 26]
    assert max_extent_for_opacity(1.0) == pytest.approx(math.sqrt(2 * math.log(255)))
    assert max_extent_for_opacity(0.1) == pytest.approx(math.sqrt(2 * math.log(25.5)))
    assert max_extent_for_opacity(0.5 / 255) == 0.0
    assert max_extent_for_opacity(1.0) <= MAX_EXTENT


@pytest.mark.parametrize("opacity", [1.0, 0.5, 0.05, 0.01])
def test_radii_bound_the_one_over_255_ellipse_tightly(opacity):
    """Every point of the ellipse where alpha = 1/255 lies in the box; the box is at most one
    pixel larger than the ellipse (ceil)."""
    gen = torch.Generator().manual_seed(7)
    n = 40
    cameras = one_camera(fx=90.0, fy=70.0, cx=31.5, cy=23.5)
    z = 2.0 + 2.0 * torch.rand(n, generator=gen, dtype=F64)
    means = torch.stack([0.2 * torch.randn(n, generator=gen, dtype=F64) * z / 2, 0 * z, z], -1)
    quats = torch.randn(n, 4, generator=gen, dtype=F64)
    scales = 0.02 * torch.exp(3 * torch.rand(n, 3, generator=gen, dtype=F64))
    opacities = torch.full((n,), opacity, dtype=F64)
    out = project_raw(cameras, means, quats, scales, opacities)
    assert out.visible.all()

    a, b, c = out.conics[0].unbind(-1)
    conic = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)  # (n, 2, 2)
    level = 2 * math.log(opacity / ALPHA_THRESHOLD)  # d^T conic d = level on the ellipse
    angles = torch.linspace(0, 2 * math.pi, 2001, dtype=F64)
    circle = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (m, 2)
    # d = sqrt(level) L^-T u with conic = L L^T maps the unit circle onto the ellipse.
    L = torch.linalg.cholesky(conic)
    d = math.sqrt(level) * torch.linalg.solve_triangular(
        L.transpose(-1, -2), circle.T.expand(n, 2, -1), upper=True
    )  # (n, 2, m)
    on_ellipse = torch.einsum("nim,nij,njm->nm", d, conic, d)
    assert_close(on_ellipse, torch.full_like(on_ellipse, level))
    half_extent = d.abs().amax(dim=-1)  # (n, 2)
    radii = out.radii[0].to(F64)
    assert (half_extent <= radii).all()
    assert (half_extent > radii - 1.0 - 1e-6).all()


# ---------------------------------------------------------------------- rotations


def test_quat_to_rotmat_matches_scipy_and_is_a_rotation():
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    gen = torch.Generator().manual_seed(11)
    quats = torch.randn(200, 4, generator=gen, dtype=F64)  # (w, x, y, z), not normalised
    R = quat_to_rotmat(quats)
    eye = torch.eye(3, dtype=F64).expand(200, 3, 3)
    assert_close(R @ R.transpose(-1, -2), eye)
    assert_close(torch.linalg.det(R), torch.ones(200, dtype=F64))
    expected = rotation.from_quat(quats[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy: xyzw
    assert_close(R, torch.from_numpy(expected))
    # Scale and sign of the quaternion do not matter.
    assert_close(quat_to_rotmat(3.7 * quats), R)
    assert_close(quat_to_rotmat(-0.2 * quats), R)


def test_quat_to_rotmat_known_rotations():
    half = math.sqrt(0.5)
    quats = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0, 0, 1.0], [half, 0, 0, half], [half, half, 0, 0]], dtype=F64
    )
    expected = torch.tensor(
        [
            [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],  # 180 deg about z
            [[0, -1, 0], [1, 0, 0], [0, 0, 1]],  # +90 deg about z: x -> y
            [[1, 0, 0], [0, 0, -1], [0, 1, 0]],  # +90 deg about x: y -> z
        ],
        dtype=F64,
    )
    assert_close(quat_to_rotmat(quats), expected, atol=1e-15, rtol=0)


def test_covariances_3d_is_rotated_diagonal():
    gen = torch.Generator().manual_seed(5)
    quats = torch.randn(30, 4, generator=gen, dtype=F64)
    scales = 0.01 + torch.rand(30, 3, generator=gen, dtype=F64)
    cov = covariances_3d(quats, scales)
    assert_close(cov, cov.transpose(-1, -2))
    eig = torch.linalg.eigvalsh(cov)
    assert_close(eig, torch.sort(scales**2, dim=-1).values)
    R = quat_to_rotmat(quats)
    assert_close(cov, R @ torch.diag_embed(scales**2) @ R.transpose(-1, -2))


def test_corner_based_Ks_shifts_the_principal_point_only():
    Ks = torch.tensor([[[50.0, 0, 10.0], [0, 60.0, 20.0], [0, 0, 1]]], dtype=F64)
    before = Ks.clone()
    shifted = corner_based_Ks(Ks)
    assert torch.equal(Ks, before)  # input untouched
    expected = before.clone()
    expected[0, 0, 2], expected[0, 1, 2] = 10.5, 20.5
    assert torch.equal(shifted, expected)
