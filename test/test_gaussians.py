"""Tests for lyra_core.scene.gaussians."""

from __future__ import annotations

import pytest
import torch

from lyra_core.scene.gaussians import OPACITY_EPS, SH_C0, Gaussians
from raw_scenes import FIELDS, assert_scenes_equal, make_scene

# ---------------------------------------------------------------------- construction


def test_from_activated_properties_return_activations() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 50
    means = torch.randn(n, 3, generator=gen)
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.5 + 0.01
    opacities = torch.rand(n, generator=gen) * 0.98 + 0.01
    colors = torch.rand(n, 3, generator=gen)
    times = torch.linspace(0.0, 2.0, n)
    durations = torch.full((n,), 0.5)
    g = Gaussians.from_activated(
        means, quats, scales, opacities, colors, times=times, durations=durations
    )
    assert g.sh_degree == 0
    assert len(g) == g.num_gaussians == n
    torch.testing.assert_close(g.scales, scales)
    torch.testing.assert_close(g.opacities, opacities)
    torch.testing.assert_close(g.colors, colors)
    torch.testing.assert_close(g.log_scales, scales.log())
    assert torch.equal(g.means, means)
    assert torch.equal(g.quats, quats)
    assert torch.equal(g.times, times)
    assert torch.equal(g.durations, durations)


def test_from_activated_sh_colors_stored_as_given() -> None:
    sh = torch.randn(4, 9, 3)
    g = Gaussians.from_activated(
        torch.zeros(4, 3), torch.ones(4, 4), torch.ones(4, 3), torch.full((4,), 0.5), sh
    )
    assert g.sh_degree == 2
    assert torch.equal(g.sh, sh)
    torch.testing.assert_close(g.colors, 0.5 + SH_C0 * sh[:, 0])
    torch.testing.assert_close(g.opacity_logits, torch.zeros(4))


def test_from_activated_clamps_opacity_to_finite_logits() -> None:
    g = Gaussians.from_activated(
        torch.zeros(2, 3),
        torch.ones(2, 4),
        torch.ones(2, 3),
        torch.tensor([0.0, 1.0]),
        torch.rand(2, 3),
    )
    g.validate()
    assert torch.isfinite(g.opacity_logits).all()
    torch.testing.assert_close(
        g.opacities, torch.tensor([OPACITY_EPS, 1 - OPACITY_EPS]), atol=1e-7, rtol=0
    )


def test_from_activated_half_precision_keeps_finite_logits() -> None:
    g = Gaussians.from_activated(
        torch.zeros(2, 3, dtype=torch.half),
        torch.ones(2, 4, dtype=torch.half),
        torch.ones(2, 3, dtype=torch.half),
        torch.tensor([0.0, 1.0], dtype=torch.half),
        torch.rand(2, 3).half(),
    )
    assert g.dtype == torch.half
    g.validate()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_from_activated_rejects_non_positive_scales(bad: float) -> None:
    scales = torch.ones(3, 3)
    scales[1, 2] = bad
    with pytest.raises(ValueError, match="scales"):
        Gaussians.from_activated(
            torch.zeros(3, 3), torch.ones(3, 4), scales, torch.full((3,), 0.5), torch.rand(3, 3)
        )


def test_from_activated_rejects_bad_colors_shape() -> None:
    with pytest.raises(ValueError, match="colors"):
        Gaussians.from_activated(
            torch.zeros(3, 3),
            torch.ones(3, 4),
            torch.ones(3, 3),
            torch.full((3,), 0.5),
            torch.rand(3),
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("means", torch.zeros(10, 2)),
        ("quats", torch.zeros(10, 3)),
        ("quats", torch.zeros(9, 4)),
        ("log_scales", torch.zeros(10, 3, 1)),
        ("opacity_logits", torch.zeros(10, 1)),
        ("sh", torch.zeros(10, 5, 3)),
        ("sh", torch.zeros(10, 25, 3)),
        ("sh", torch.zeros(10, 1, 4)),
        ("times", torch.zeros(11)),
    ],
)
def test_shape_errors_name_the_field(field: str, value: torch.Tensor) -> None:
    kwargs = {name: getattr(make_scene(), name) for name in FIELDS}
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        Gaussians(**kwargs)


def test_dtype_and_device_mismatch_errors() -> None:
    kwargs = {name: getattr(make_scene(), name) for name in FIELDS}
    with pytest.raises(ValueError, match="sh"):
        Gaussians(**{**kwargs, "sh": kwargs["sh"].double()})
    with pytest.raises(ValueError, match="means"):
        Gaussians(**{name: v.long() if v is not None else None for name, v in kwargs.items()})


def test_validate_is_not_run_on_construction() -> None:
    g = make_scene()
    g.means[0, 0] = float("nan")
    Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh)  # no error


@pytest.mark.parametrize("field", [f for f in FIELDS if f != "durations"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_validate_names_non_finite_field(field: str, bad: float) -> None:
    g = make_scene(with_times=True)
    g.validate()
    getattr(g, field).view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"^{field} contains 1 non-finite"):
        g.validate()


def test_validate_rejects_zero_quaternion() -> None:
    g = make_scene()
    g.quats[4] = 0.0
    with pytest.raises(ValueError, match=r"quats.*zero-norm"):
        g.validate()


# ---------------------------------------------------------------------- properties


def test_properties_and_nbytes() -> None:
    g = make_scene(n=10, sh_degree=1)
    torch.testing.assert_close(g.scales, g.log_scales.exp())
    torch.testing.assert_close(g.opacities, torch.sigmoid(g.opacity_logits))
    assert g.colors.shape == (10, 3)
    assert g.device == torch.device("cpu")
    assert g.dtype == torch.float32
    # (3 + 4 + 3 + 1 + 4 * 3) floats per Gaussian, 4 bytes each.
    assert g.nbytes == 10 * 23 * 4
    assert make_scene(n=10, sh_degree=1, with_times=True).nbytes == 10 * 25 * 4
    assert g.to(dtype=torch.float64).nbytes == 10 * 23 * 8


def test_colors_are_not_clamped() -> None:
    g = make_scene(n=3)
    g.sh[:, 0] = 10.0
    assert (g.colors > 1).all()


def test_empty() -> None:
    g = Gaussians.empty(sh_degree=3, dtype=torch.float64, with_times=True)
    assert len(g) == 0
    assert g.sh.shape == (0, 16, 3)
    assert g.dtype == torch.float64
    assert g.times is not None and g.times.shape == (0,)
    g.validate()
    with pytest.raises(ValueError, match="sh_degree"):
        Gaussians.empty(sh_degree=4)


def test_repr_is_short() -> None:
    text = repr(make_scene(n=7, sh_degree=2))
    assert "num_gaussians=7" in text and "sh_degree=2" in text
    assert len(text) < 200


# ---------------------------------------------------------------------- transforms


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_to_dtype(dtype: torch.dtype) -> None:
    g = make_scene(with_times=True).to(dtype=dtype)
    assert g.dtype == dtype
    for name in FIELDS:
        assert getattr(g, name).dtype == dtype, name
    with pytest.raises(ValueError, match="dtype"):
        g.to(dtype=torch.int32)


def test_clone_is_independent_and_detach_drops_grad() -> None:
    g = make_scene()
    c = g.clone()
    c.means.add_(1.0)
    assert not torch.equal(c.means, g.means)
    g.means.requires_grad_(True)
    assert not g.detach().means.requires_grad


def test_index_mask_slice_and_int() -> None:
    g = make_scene(n=6, sh_degree=1, with_times=True)
    mask = torch.tensor([True, False, True, False, False, True])
    sub = g[mask]
    assert len(sub) == 3
    assert torch.equal(sub.sh, g.sh[mask])
    assert torch.equal(sub.times, g.times[mask])
    assert_scenes_equal(g[torch.tensor([0, 2, 5])], sub)
    assert_scenes_equal(g[[0, 2, 5]], sub)
    assert_scenes_equal(g[1:3], g[torch.tensor([1, 2])])
    last = g[-1]
    assert len(last) == 1 and torch.equal(last.means, g.means[-1:])
    with pytest.raises(IndexError):
        g[6]
    with pytest.raises(IndexError, match="mask"):
        g[torch.tensor([True, False])]


def test_cat_concatenates_and_pads_sh() -> None:
    a = make_scene(n=4, sh_degree=0, seed=1)
    b = make_scene(n=3, sh_degree=2, seed=2)
    c = Gaussians.cat([a, b])
    assert len(c) == 7
    assert c.sh_degree == 2
    assert torch.equal(c.means, torch.cat([a.means, b.means]))
    assert torch.equal(c.sh[:4, 0], a.sh[:, 0])
    assert torch.equal(c.sh[:4, 1:], torch.zeros(4, 8, 3))
    assert torch.equal(c.sh[4:], b.sh)
    assert_scenes_equal(Gaussians.cat([c[:2], c[2:]]), c)


def test_cat_errors() -> None:
    with pytest.raises(ValueError, match="times"):
        Gaussians.cat([make_scene(with_times=True), make_scene()])
    with pytest.raises(ValueError, match="at least one"):
        Gaussians.cat([])
    with pytest.raises(ValueError, match="dtype"):
        Gaussians.cat([make_scene(), make_scene().to(dtype=torch.float64)])


def test_prune_by_opacity_keeps_most_opaque_in_order() -> None:
    n = 100
    g = make_scene(n=n, with_times=True)
    g.times = torch.arange(n, dtype=torch.float32)  # remembers the original index
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    g.opacity_logits = perm.float() / 10.0 - 5.0  # distinct, unsaturated opacities
    pruned = g.prune_by_opacity(0.8)
    assert len(pruned) == 20
    kept = pruned.times.long()
    assert torch.equal(kept, torch.sort(kept).values)  # original order
    expected = torch.sort(torch.topk(g.opacities, 20).indices).values
    assert torch.equal(kept, expected)
    assert pruned.opacities.min() > torch.sort(g.opacities, descending=True).values[20]
    assert torch.equal(pruned.means, g.means[expected])


def test_prune_by_opacity_ratio_bounds() -> None:
    g = make_scene(n=10)
    assert_scenes_equal(g.prune_by_opacity(0.0), g)
    assert len(g.prune_by_opacity(0.55)) == round(0.45 * 10)
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            g.prune_by_opacity(ratio)


def test_crop_is_inclusive() -> None:
    means = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0001, 0.0, 0.0], [-1.0, 0.5, 0.2], [0.5, 2.0, 0.5]]
    )
    g = make_scene(n=5)
    g.means = means
    cropped = g.crop([-1.0, 0.0, 0.0], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.equal(cropped.means, means[[0, 1, 3]])
    assert torch.equal(cropped.sh, g.sh[[0, 1, 3]])
    with pytest.raises(ValueError, match="box_min"):
        g.crop([1.0, 0.0, 0.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="box_max"):
        g.crop([0.0, 0.0, 0.0], [1.0, 1.0])


def test_with_sh_degree_truncates_and_pads() -> None:
    g = make_scene(n=4, sh_degree=2)
    low = g.with_sh_degree(1)
    assert low.sh.shape == (4, 4, 3)
    assert torch.equal(low.sh, g.sh[:, :4])
    high = g.with_sh_degree(3)
    assert torch.equal(high.sh[:, :9], g.sh)
    assert torch.equal(high.sh[:, 9:], torch.zeros(4, 7, 3))
    with pytest.raises(ValueError, match="degree"):
        g.with_sh_degree(4)


def test_transformed_moves_means_and_rotates_quaternions() -> None:
    """A rigid pose maps the means and turns each Gaussian's covariance by its rotation
    (R Sigma R^T); scales, opacities, colours, times and durations are kept, and the dtype."""
    from lyra_core.geometry.transforms import look_at
    from lyra_core.rendering.projection import covariances_3d

    g = make_scene(n=6, with_times=True)
    pose = look_at(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, 0.3, -0.2]))
    moved = g.transformed(pose)
    rotation, translation = pose[:3, :3], pose[:3, 3]
    assert moved.dtype == torch.float32
    assert torch.allclose(moved.means, g.means @ rotation.T + translation, atol=1e-5)
    expected = rotation @ covariances_3d(g.quats, g.scales) @ rotation.T
    assert torch.allclose(covariances_3d(moved.quats, moved.scales), expected, atol=1e-4)
    for name in ("log_scales", "opacity_logits", "sh", "times", "durations"):
        assert torch.equal(getattr(moved, name), getattr(g, name)), name
    # a 90 degree turn about z: the identity rotation becomes that turn's quaternion
    turn = torch.eye(4)
    turn[:2, :2] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    one = Gaussians.from_activated(
        torch.tensor([[1.0, 0.0, 0.0]]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), 0.1),
        torch.tensor([0.5]),
        torch.full((1, 3), 0.5),
    ).transformed(turn)
    half = 0.5**0.5
    assert torch.allclose(one.means, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(one.quats, torch.tensor([[half, 0.0, 0.0, half]]), atol=1e-6)
    with pytest.raises(ValueError, match="pose"):
        g.transformed(torch.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_roundtrip() -> None:
    g = make_scene(n=20, sh_degree=1, with_times=True).to("cuda")
    assert g.device.type == "cuda"
    assert len(g.prune_by_opacity(0.8)) == 4
    assert len(g.crop([-10.0] * 3, [10.0] * 3)) == 20
    assert_scenes_equal(g.to("cpu"), make_scene(n=20, sh_degree=1, with_times=True))
