"""Tests of the Mamba-2 layers: the chunked SSD scan against the per-step recurrence, the
causality of the mixer, the bidirectional mixer and the residual block."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lyra_core.models.mamba2 import BidirectionalMamba2, Mamba2, Mamba2Block
from lyra_core.models.ssd import mamba_kernel_available, ssd_chunked, ssd_naive

F64 = torch.float64


def random_ssd_inputs(
    batch: int = 2,
    length: int = 37,
    heads: int = 4,
    head_dim: int = 3,
    groups: int = 1,
    d_state: int = 5,
    *,
    with_state: bool = False,
    dtype: torch.dtype = F64,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Keyword arguments of the SSD scans: random x, dt in (0.01, 0.51), -A in (0.5, 4)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=F64)

    inputs = {
        "x": randn(batch, length, heads, head_dim),
        "dt": 0.01 + 0.5 * rand(batch, length, heads),
        "A": -(0.5 + 3.5 * rand(heads)),
        "B": randn(batch, length, groups, d_state),
        "C": randn(batch, length, groups, d_state),
        "initial_state": randn(batch, heads, head_dim, d_state) if with_state else None,
    }
    return {k: None if v is None else v.to(device, dtype) for k, v in inputs.items()}


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_matches_naive(chunk_size: int, groups: int, with_state: bool) -> None:
    inputs = random_ssd_inputs(groups=groups, with_state=with_state)
    y_ref, state_ref = ssd_naive(**inputs)
    y, state = ssd_chunked(**inputs, chunk_size=chunk_size)
    assert y.shape == inputs["x"].shape and y.dtype == F64
    assert state.shape == (2, 4, 3, 5)
    assert_close(y, y_ref)
    assert_close(state, state_ref)


def test_ssd_chunked_float32_and_long_decay() -> None:
    """Float32 over a sequence whose total decay underflows, and a single-step sequence."""
    inputs = random_ssd_inputs(length=300, groups=2, with_state=True, dtype=torch.float32)
    y_ref, state_ref = ssd_naive(**inputs)
    y, state = ssd_chunked(**inputs, chunk_size=64)
    assert y.dtype == torch.float32
    assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert_close(state, state_ref, rtol=1e-4, atol=1e-4)
    short = random_ssd_inputs(length=1)
    assert_close(ssd_chunked(**short, chunk_size=8)[0], ssd_naive(**short)[0])


def test_ssd_chunked_gradients_match_naive() -> None:
    inputs = random_ssd_inputs(
        batch=1, length=11, heads=4, head_dim=2, groups=2, d_state=3, with_state=True
    )
    gen = torch.Generator().manual_seed(1)
    w_y = torch.randn(inputs["x"].shape, generator=gen, dtype=F64)
    w_state = torch.randn(inputs["initial_state"].shape, generator=gen, dtype=F64)

    def grads(scan, **kwargs) -> tuple[torch.Tensor, ...]:
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y, state = scan(**leaves, **kwargs)
        loss = (y * w_y).sum() + (state * w_state).sum()
        return torch.autograd.grad(loss, list(leaves.values()))

    expected = grads(ssd_naive)
    for chunk_size in (3, 4, 16):
        for got, ref in zip(grads(ssd_chunked, chunk_size=chunk_size), expected, strict=True):
            assert_close(got, ref)


def test_ssd_rejects_bad_shapes() -> None:
    inputs = random_ssd_inputs(heads=4, groups=1)
    inputs["B"] = inputs["B"].expand(-1, -1, 3, -1)
    inputs["C"] = inputs["C"].expand(-1, -1, 3, -1)
    with pytest.raises(ValueError, match="divisible"):
        ssd_chunked(**inputs)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(**random_ssd_inputs(), chunk_size=0)


def small_mixer(cls: type[torch.nn.Module] = Mamba2, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {"d_model": 16, "d_state": 8, "head_dim": 8, "n_groups": 2, "chunk_size": 8}
    return cls(**(args | kwargs)).to(F64)


def test_mamba2_init_ranges() -> None:
    mixer = Mamba2(d_model=256)
    assert (mixer.n_heads, mixer.d_inner, mixer.conv_dim) == (8, 512, 1024)
    dt = torch.nn.functional.softplus(mixer.dt_bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    neg_A = mixer.A_log.detach().exp()
    assert neg_A.min() >= 1.0 and neg_A.max() <= 16.0
    assert_close(mixer.D.detach(), torch.ones(8))


def test_mamba2_shape_and_causality() -> None:
    mixer = small_mixer()
    x = torch.randn(2, 21, 16, dtype=F64)
    out = mixer(x)
    assert out.shape == x.shape and out.dtype == F64
    t = 12
    x2 = x.clone()
    x2[:, t] += 1.0
    out2 = mixer(x2)
    assert_close(out2[:, :t], out[:, :t], rtol=0, atol=1e-12)
    assert (out2[:, t] - out[:, t]).abs().max() > 1e-3


def test_mamba2_chunk_size_independent() -> None:
    x = torch.randn(1, 21, 16, dtype=F64)
    out = small_mixer(chunk_size=8)(x)
    assert_close(small_mixer(chunk_size=5)(x), out)
    assert_close(small_mixer(chunk_size=64)(x), out)


def test_mamba2_use_kernel_true_needs_cuda_kernel() -> None:
    mixer = small_mixer(use_kernel=True)
    with pytest.raises(RuntimeError, match="use_kernel"):
        mixer(torch.randn(1, 4, 16, dtype=F64))


def test_bidirectional_mamba2_sees_the_future() -> None:
    mixer = small_mixer(BidirectionalMamba2)
    x = torch.randn(2, 21, 16, dtype=F64)
    out = mixer(x)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, 12] += 1.0
    changed = (mixer(x2) - out).abs().amax(dim=(0, 2))
    assert changed[:12].min() > 1e-6 and changed[12:].min() > 1e-6
    mean = small_mixer(BidirectionalMamba2, merge="mean")
    assert_close(mean(x), 0.5 * out)


def test_mamba2_block_is_identity_with_zero_out_proj() -> None:
    block = small_mixer(Mamba2Block)
    x = torch.randn(2, 21, 16, dtype=F64)
    assert block(x).shape == x.shape
    with torch.no_grad():
        block.mixer.forward_mixer.out_proj.weight.zero_()
        block.mixer.backward_mixer.out_proj.weight.zero_()
    assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba_kernel_available()),
    reason="needs a CUDA GPU and an importable mamba_ssm",
)
def test_ssd_chunked_matches_mamba_kernel() -> None:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    inputs = random_ssd_inputs(
        batch=2,
        length=300,
        heads=8,
        head_dim=64,
        groups=2,
        d_state=64,
        with_state=True,
        dtype=torch.float32,
        device="cuda",
    )
    inputs["x"] = 0.1 * inputs["x"]
    inputs["initial_state"] = 0.1 * inputs["initial_state"]
    y, state = ssd_chunked(**inputs, chunk_size=64)
    state_in = inputs.pop("initial_state")
    y_k, state_k = mamba_chunk_scan_combined(
        **inputs, chunk_size=64, initial_states=state_in, return_final_states=True
    )
    assert_close(y_k, y, rtol=1e-2, atol=1e-2)
    assert_close(state_k.float(), state, rtol=1e-2, atol=1e-2)
    mixer = small_mixer(d_model=128, d_state=64, head_dim=64, chunk_size=64).float().cuda()
    u = torch.randn(2, 300, 128, device="cuda")
    assert_close(mixer(u), _chunked_forward(mixer, u), rtol=1e-2, atol=1e-2)


def _chunked_forward(mixer: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """Output of ``mixer`` with the pure PyTorch scan forced."""
    use_kernel, mixer.use_kernel = mixer.use_kernel, False
    try:
        return mixer(u)
    finally:
        mixer.use_kernel = use_kernel
