"""Raw-parameter scenes shared by the Gaussians and PLY tests (random values, any field)."""

from __future__ import annotations

import torch

from lyra_core.scene.gaussians import Gaussians

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh", "times", "durations")


def make_scene(
    n: int = 10, sh_degree: int = 0, with_times: bool = False, seed: int = 0
) -> Gaussians:
    """N Gaussians with standard-normal raw parameters (seeded)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return Gaussians(
        means=randn(n, 3),
        quats=randn(n, 4),
        log_scales=randn(n, 3),
        opacity_logits=randn(n),
        sh=randn(n, (sh_degree + 1) ** 2, 3),
        times=randn(n) if with_times else None,
        durations=randn(n).exp() if with_times else None,
    )


def assert_scenes_equal(a: Gaussians, b: Gaussians) -> None:
    """Bit-exact equality of every field (and of dtypes)."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype, name
            assert torch.equal(x, y), name
