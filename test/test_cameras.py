"""Tests for lyra_core.geometry.cameras: intrinsics, poses, ROS frames, quaternions and Plucker
rays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics, plucker_rays
from lyra_core.geometry.transforms import (
    OPTICAL_TO_BODY,
    body_pose_to_optical,
    look_at,
    optical_pose_to_body,
    pose_from_translation_quaternion,
    rigid_inverse,
    translation_quaternion_from_pose,
)

W, H = 64, 48


def _random_poses(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n, 4, 4)`` random rigid camera-to-world poses."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=dtype)
    t = torch.randn(n, 3, generator=gen, dtype=dtype) * 3.0
    return pose_from_translation_quaternion(t, q)


def _project(K: torch.Tensor, viewmat: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Pixel ``(u, v)`` and depth of a world point (pinhole, no distortion)."""
    p_cam = viewmat[:3, :3] @ point + viewmat[:3, 3]
    uvw = K @ p_cam
    return torch.stack([uvw[0] / uvw[2], uvw[1] / uvw[2], p_cam[2]])


# --------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------


def test_from_fov_values_and_properties():
    fov_y = math.radians(50.0)
    k = Intrinsics.from_fov(fov_y, W, H)
    assert k.fy == pytest.approx(0.5 * H / math.tan(0.5 * fov_y))
    assert k.fx == pytest.approx(k.fy)
    assert (k.cx, k.cy) == pytest.approx(((W - 1) / 2, (H - 1) / 2))
    assert k.fov_y == pytest.approx(fov_y)
    # Square pixels: the horizontal fov follows from the aspect ratio.
    assert math.tan(k.fov_x / 2) == pytest.approx(math.tan(fov_y / 2) * W / H)

    k2 = Intrinsics.from_fov(fov_y, W, H, fov_x=math.radians(80.0))
    assert k2.fov_x == pytest.approx(math.radians(80.0))
    assert k2.fx != pytest.approx(k2.fy)


@pytest.mark.parametrize("fov", [0.0, math.pi, -0.3, float("nan")])
def test_from_fov_rejects_bad_fov(fov):
    with pytest.raises(ValueError, match="fov_y"):
        Intrinsics.from_fov(fov, W, H)


def test_resize_round_trip_and_corner_convention():
    k = Intrinsics(50.0, 55.0, 30.3, 20.7, W, H)
    back = k.resize(2 * W, 3 * H).resize(W, H)
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(back, name) == pytest.approx(getattr(k, name))
    # A centred principal point stays centred: pixel corners scale, not pixel centres.
    c = Intrinsics.from_fov(1.0, W, H).resize(W // 8, H // 8)
    assert (c.cx, c.cy) == pytest.approx(((W // 8 - 1) / 2, (H // 8 - 1) / 2))


def test_resize_moves_projected_pixel_consistently():
    k = Intrinsics(50.0, 55.0, 30.3, 20.7, W, H)
    viewmat = torch.eye(4, dtype=torch.float64)
    point = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    u, v, _ = _project(k.matrix(torch.float64), viewmat, point)
    new_w, new_h = 40, 36
    u2, v2, _ = _project(k.resize(new_w, new_h).matrix(torch.float64), viewmat, point)
    sx, sy = new_w / W, new_h / H
    assert float(u2) == pytest.approx((float(u) + 0.5) * sx - 0.5)
    assert float(v2) == pytest.approx((float(v) + 0.5) * sy - 0.5)


def test_crop_shifts_projection():
    k = Intrinsics(50.0, 55.0, 30.3, 20.7, W, H)
    crop = k.crop(5, 7, 32, 24)
    assert (crop.width, crop.height) == (32, 24)
    viewmat = torch.eye(4, dtype=torch.float64)
    point = torch.tensor([0.1, 0.2, 3.0], dtype=torch.float64)
    u, v, _ = _project(k.matrix(torch.float64), viewmat, point)
    uc, vc, _ = _project(crop.matrix(torch.float64), viewmat, point)
    assert float(uc) == pytest.approx(float(u) - 5)
    assert float(vc) == pytest.approx(float(v) - 7)
    with pytest.raises(ValueError, match="x0"):
        k.crop(40, 0, 32, 24)
    with pytest.raises(ValueError, match="y0"):
        k.crop(0, -1, 32, 24)


def test_from_matrix_round_trip():
    k = Intrinsics(50.0, 55.0, 30.3, 20.7, W, H)
    for K in (k.matrix(torch.float64), k.matrix(torch.float64).numpy(), k.matrix().tolist()):
        back = Intrinsics.from_matrix(K, W, H)
        assert (back.width, back.height) == (W, H)
        for name in ("fx", "fy", "cx", "cy"):
            assert getattr(back, name) == pytest.approx(getattr(k, name), rel=1e-6)
    with pytest.raises(ValueError, match="K"):
        Intrinsics.from_matrix(np.eye(4), W, H)
    with pytest.raises(ValueError, match="K"):
        Intrinsics.from_matrix([[50.0, 1.0, 30.0], [0, 50.0, 20.0], [0, 0, 1]], W, H)
    with pytest.raises(ValueError, match="K"):
        Intrinsics.from_matrix([[float("nan"), 0, 30.0], [0, 50.0, 20.0], [0, 0, 1]], W, H)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fx": float("nan")}, "fx"),
        ({"fx": 0.0}, "fx"),
        ({"fy": -1.0}, "fy"),
        ({"cx": float("inf")}, "cx"),
        ({"width": 0}, "width"),
        ({"height": 48.0}, "height"),
        ({"width": True}, "width"),
    ],
)
def test_intrinsics_rejects_bad_fields(kwargs, field):
    args = {"fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5, "width": W, "height": H}
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        Intrinsics(**args)


def test_intrinsics_is_frozen_and_normalises_types():
    k = Intrinsics(np.float32(50), 50, 31, 23, np.int64(W), H)
    assert isinstance(k.fx, float) and isinstance(k.fy, float) and isinstance(k.width, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.fx = 10.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Poses and Cameras
# --------------------------------------------------------------------------------------------


def test_rigid_inverse_matches_general_inverse_batched():
    T = _random_poses(6).reshape(2, 3, 4, 4)
    inv = rigid_inverse(T)
    assert inv.shape == (2, 3, 4, 4)
    torch.testing.assert_close(inv, torch.linalg.inv(T))
    torch.testing.assert_close(inv @ T, torch.eye(4, dtype=T.dtype).expand_as(T))


def test_cameras_viewmats_centers_and_indexing():
    c2w = _random_poses(5).float()
    k = Intrinsics.from_fov(1.0, W, H)
    cams = Cameras.from_intrinsics(c2w, k)
    assert len(cams) == 5
    torch.testing.assert_close(cams.viewmats @ cams.camtoworlds, torch.eye(4).expand(5, 4, 4))
    torch.testing.assert_close(cams.centers, c2w[:, :3, 3])
    torch.testing.assert_close(cams.Ks[3], k.matrix())

    one = cams[-1]
    assert isinstance(one, Cameras) and len(one) == 1
    torch.testing.assert_close(one.camtoworlds[0], c2w[4])
    assert len(cams[1:4]) == 3
    picked = cams[torch.tensor([4, 0])]
    torch.testing.assert_close(picked.camtoworlds, c2w[[4, 0]])
    assert (picked.width, picked.height) == (W, H)

    cams64 = cams.to(dtype=torch.float64)
    assert cams64.camtoworlds.dtype == torch.float64 and cams64.Ks.dtype == torch.float64


def test_cameras_rejects_bad_inputs():
    c2w = _random_poses(2).float()
    Ks = Intrinsics.from_fov(1.0, W, H).matrix().expand(2, 3, 3).clone()
    with pytest.raises(ValueError, match="camtoworlds"):
        Cameras(c2w[0], Ks, W, H)  # a single pose is not auto-batched
    with pytest.raises(ValueError, match="Ks"):
        Cameras(c2w, Ks[0], W, H)
    with pytest.raises(ValueError, match="Ks"):
        Cameras(c2w, Ks[:1], W, H)
    with pytest.raises(ValueError, match="width"):
        Cameras(c2w, Ks, 0, H)

    nan_pose = c2w.clone()
    nan_pose[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="camtoworlds"):
        Cameras(nan_pose, Ks, W, H)
    nan_K = Ks.clone()
    nan_K[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="Ks"):
        Cameras(c2w, nan_K, W, H)

    scaled = c2w.clone()
    scaled[0, :3, :3] *= 1.01
    with pytest.raises(ValueError, match="rotation"):
        Cameras(scaled, Ks, W, H)
    mirrored = c2w.clone()
    mirrored[0, :3, 0] *= -1.0  # orthonormal but det = -1
    with pytest.raises(ValueError, match="rotation"):
        Cameras(mirrored, Ks, W, H)


def test_look_at_targets_optical_axis_and_up_is_image_up():
    gen = torch.Generator().manual_seed(1)
    eye = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(8, 3, generator=gen, dtype=torch.float64) * 4.0
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    c2w = look_at(eye, target, up)
    assert c2w.shape == (8, 4, 4)
    R = c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=R.dtype).expand_as(R))
    assert bool((torch.linalg.det(R) > 0).all())

    k = Intrinsics.from_fov(1.0, W, H)
    K = k.matrix(torch.float64)
    viewmats = rigid_inverse(c2w)
    for i in range(8):
        u, v, depth = _project(K, viewmats[i], target[i])
        assert depth > 0
        assert float(u) == pytest.approx(k.cx) and float(v) == pytest.approx(k.cy)
        # A point slightly "up" from the target appears above it in the image.
        _, v_up, _ = _project(K, viewmats[i], target[i] + 0.1 * up)
        assert float(v_up) < k.cy


def test_look_at_default_up_and_errors():
    c2w = look_at([0.0, 0.0, 0.0], [0.0, 0.0, 5.0])
    assert c2w.dtype == torch.float32
    torch.testing.assert_close(c2w, torch.eye(4))  # default up (0, -1, 0) = OpenCV identity
    with pytest.raises(ValueError, match="coincide"):
        look_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="parallel"):
        look_at([0.0, 0.0, 0.0], [0.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="eye"):
        look_at([float("nan"), 0.0, 0.0], [0.0, 0.0, 1.0])


# --------------------------------------------------------------------------------------------
# ROS frames and quaternions
# --------------------------------------------------------------------------------------------


def test_optical_to_body_axes():
    R = OPTICAL_TO_BODY[:3, :3]
    # optical z (forward) = body x, optical x (right) = body -y, optical y (down) = body -z.
    torch.testing.assert_close(R @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(R @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, -1.0]))
    assert float(torch.linalg.det(R)) == pytest.approx(1.0)


def test_body_optical_round_trip_and_forward_axis():
    T_world_body = _random_poses(4).reshape(2, 2, 4, 4)
    T_world_optical = body_pose_to_optical(T_world_body)
    assert T_world_optical.shape == (2, 2, 4, 4)
    torch.testing.assert_close(optical_pose_to_body(T_world_optical), T_world_body)
    # Body x (forward) is the optical z axis; the position is unchanged.
    torch.testing.assert_close(T_world_optical[..., :3, 2], T_world_body[..., :3, 0])
    torch.testing.assert_close(T_world_optical[..., :3, 3], T_world_body[..., :3, 3])
    # A point 2 m ahead of the robot is on the optical axis at depth 2.
    p_world = T_world_body[0, 0, :3, 3] + 2.0 * T_world_body[0, 0, :3, 0]
    p_cam = rigid_inverse(T_world_optical[0, 0]) @ torch.cat([p_world, p_world.new_ones(1)])
    torch.testing.assert_close(p_cam[:3], p_cam.new_tensor([0.0, 0.0, 2.0]))


def test_quaternion_known_yaw():
    s = math.sin(math.pi / 4)
    T = pose_from_translation_quaternion([1.0, 2.0, 3.0], [0.0, 0.0, s, s])  # 90 deg yaw
    expected = torch.tensor(
        [[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
    )
    torch.testing.assert_close(T, expected)
    t, q = translation_quaternion_from_pose(T)
    torch.testing.assert_close(t, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, s, s]))


def test_quaternion_round_trip_batched_and_normalised():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    q[0, 0] = torch.tensor([1.0, 0.0, 0.0, 1e-9], dtype=torch.float64)  # ~180 deg about x
    t = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    T = pose_from_translation_quaternion(t, 7.0 * q)  # unnormalised input
    t2, q2 = translation_quaternion_from_pose(T)
    q_unit = q / q.norm(dim=-1, keepdim=True)
    q_unit = torch.where(q_unit[..., 3:] < 0, -q_unit, q_unit)
    torch.testing.assert_close(t2, t)
    torch.testing.assert_close(q2, q_unit)
    assert bool((q2[..., 3] >= 0).all())
    # q and -q are the same rotation.
    torch.testing.assert_close(pose_from_translation_quaternion(t, -q), T)


@pytest.mark.parametrize("q", [[0.0, 0.0, 0.0, 0.0], [0.0, float("nan"), 0.0, 1.0]])
def test_quaternion_rejects_bad(q):
    with pytest.raises(ValueError, match="q_xyzw"):
        pose_from_translation_quaternion([0.0, 0.0, 0.0], q)


# --------------------------------------------------------------------------------------------
# Plucker rays
# --------------------------------------------------------------------------------------------


def _plucker_setup():
    c2w = _random_poses(6, seed=5).reshape(2, 3, 4, 4)
    k = Intrinsics(40.0, 44.0, 31.0, 20.0, W, H)  # principal point on a pixel centre
    Ks = k.matrix(torch.float64).expand(2, 3, 3, 3)
    return c2w, k, Ks


def test_plucker_identities():
    c2w, k, Ks = _plucker_setup()
    rays = plucker_rays(c2w, Ks, W, H)
    assert rays.shape == (2, 3, H, W, 6)
    moment, d = rays[..., :3], rays[..., 3:]
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(d.shape[:-1], dtype=d.dtype))
    torch.testing.assert_close((moment * d).sum(-1), torch.zeros(d.shape[:-1], dtype=d.dtype))
    # The moment is the same for any point on the ray.
    o = c2w[..., None, None, :3, 3]
    p = o + 3.7 * d
    torch.testing.assert_close(torch.linalg.cross(p, d, dim=-1), moment)
    # The principal-point ray is the optical axis.
    torch.testing.assert_close(d[..., int(k.cy), int(k.cx), :], c2w[..., :3, 2])


def test_plucker_pixel_indexing_matches_projection():
    c2w, k, Ks = _plucker_setup()
    rays = plucker_rays(c2w[0, 0], Ks[0, 0], W, H)
    assert rays.shape == (H, W, 6)
    u, v = 5, 3  # column, row
    pix = torch.tensor([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0], dtype=torch.float64)
    point = c2w[0, 0, :3, :3] @ (2.5 * pix) + c2w[0, 0, :3, 3]
    expected = point - c2w[0, 0, :3, 3]
    torch.testing.assert_close(rays[v, u, 3:], expected / expected.norm())


def test_plucker_grid_size_equals_resized_intrinsics():
    c2w, k, Ks = _plucker_setup()
    h, w = H // 8, W // 8
    coarse = plucker_rays(c2w, Ks, W, H, grid_size=(h, w))
    resized = k.resize(w, h).matrix(torch.float64).expand(2, 3, 3, 3)
    assert coarse.shape == (2, 3, h, w, 6)
    torch.testing.assert_close(coarse, plucker_rays(c2w, resized, w, h))


def test_plucker_broadcasts_shared_intrinsics_and_validates():
    c2w, k, _ = _plucker_setup()
    rays = plucker_rays(c2w.float(), k.matrix(), W, H, grid_size=(4, 5))
    assert rays.shape == (2, 3, 4, 5, 6) and rays.dtype == torch.float32
    with pytest.raises(ValueError, match="camtoworlds"):
        plucker_rays(c2w[..., :3, :], k.matrix(), W, H)
    bad = c2w.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="camtoworlds"):
        plucker_rays(bad, k.matrix(torch.float64), W, H)
    with pytest.raises(ValueError, match="grid_size"):
        plucker_rays(c2w, k.matrix(torch.float64), W, H, grid_size=(0, 4))
