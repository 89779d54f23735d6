"""The SSD scan of Mamba-2 ("Transformers are SSMs", Dao & Gu, 2024) in pure PyTorch, beside
``mamba_ssm``'s fused kernel (used on CUDA when it imports).

Per head, a ``(head_dim, d_state)`` state is updated as

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,        y_t = h_t C_t,

with a scalar decay ``A < 0`` per head and input-dependent ``dt_t > 0``, ``B_t``, ``C_t``.
:func:`ssd_naive` runs this recurrence step by step (the reference); :func:`ssd_chunked`
evaluates it with the state space duality (SSD) algorithm: a quadratic, attention-like form
inside chunks and a linear recurrence over chunk states.

Tensor shapes follow ``mamba_ssm``: ``x`` is ``(batch, length, heads, head_dim)``, ``dt`` is
``(batch, length, heads)``, ``A`` is ``(heads,)``, ``B`` and ``C`` are
``(batch, length, groups, d_state)`` where head ``h`` reads group ``h // (heads // groups)``,
and states are ``(batch, heads, head_dim, d_state)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor

__all__ = [
    "compute_dtype",
    "load_mamba_kernel",
    "mamba_kernel_available",
    "ssd_chunked",
    "ssd_naive",
]


# --------------------------------------------------------------------------------------------
# SSD scan
# --------------------------------------------------------------------------------------------


def _check_ssd_inputs(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be (batch, length, heads, head_dim), got {tuple(x.shape)}")
    batch, length, heads, head_dim = x.shape
    if dt.shape != (batch, length, heads):
        raise ValueError(f"dt must be {(batch, length, heads)}, got {tuple(dt.shape)}")
    if A.shape != (heads,):
        raise ValueError(f"A must be ({heads},), got {tuple(A.shape)}")
    if B.ndim != 4 or B.shape[:2] != (batch, length) or B.shape != C.shape:
        raise ValueError(
            f"B and C must be (batch, length, groups, d_state) with batch {batch} and length "
            f"{length}, got {tuple(B.shape)} and {tuple(C.shape)}"
        )
    groups, d_state = B.shape[2:]
    if heads % groups != 0:
        raise ValueError(f"heads ({heads}) must be divisible by groups ({groups})")
    expected = (batch, heads, head_dim, d_state)
    if initial_state is not None and initial_state.shape != expected:
        raise ValueError(f"initial_state must be {expected}, got {tuple(initial_state.shape)}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half-precision decays and state sums lose too much."""
    return torch.promote_types(dtype, torch.float32)


def ssd_naive(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference SSM scan, one time step at a time (slow; for tests).

    Computes ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T`` and ``y_t = h_t C_t`` per head.

    Args:
        x: (batch, length, heads, head_dim) inputs.
        dt: (batch, length, heads) positive step sizes (already softplus-ed).
        A: (heads,) negative decay rates.
        B: (batch, length, groups, d_state) input projections, heads divisible by groups.
        C: (batch, length, groups, d_state) output projections.
        initial_state: (batch, heads, head_dim, d_state) state before the first step, or
            None for zeros.

    Returns:
        y: (batch, length, heads, head_dim), in the dtype of ``x``.
        final_state: (batch, heads, head_dim, d_state) state after the last step, in the
            compute dtype (at least float32).
    """
    _check_ssd_inputs(x, dt, A, B, C, initial_state)
    batch, length, heads, head_dim = x.shape
    dtype = compute_dtype(x.dtype)
    rep = heads // B.shape[2]
    Bh = B.to(dtype).repeat_interleave(rep, dim=2)  # (batch, length, heads, d_state)
    Ch = C.to(dtype).repeat_interleave(rep, dim=2)
    dt = dt.to(dtype)
    decay = torch.exp(dt * A.to(dtype))  # (batch, length, heads)
    xdt = x.to(dtype) * dt[..., None]  # (batch, length, heads, head_dim)
    if initial_state is None:
        h = x.new_zeros(batch, heads, head_dim, B.shape[-1], dtype=dtype)
    else:
        h = initial_state.to(dtype)
    ys = []
    for t in range(length):
        h = decay[:, t, :, None, None] * h + xdt[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else xdt
    return y.to(x.dtype), h


def _segment_decay(log_decay_cumsum: Tensor) -> Tensor:
    """Decay between every pair of positions of a chunk.

    Args:
        log_decay_cumsum: (..., chunk) cumulative sums ``s_i`` of the log decays ``dt_i A``.

    Returns:
        (..., chunk, chunk) ``exp(s_i - s_j)`` (the decay from step j to step i) for ``i >= j``
        and 0 above the diagonal. The mask is applied before ``exp`` so no inf (nor a NaN
        gradient) can appear.
    """
    chunk = log_decay_cumsum.shape[-1]
    diff = log_decay_cumsum[..., :, None] - log_decay_cumsum[..., None, :]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=diff.device).tril()
    return diff.masked_fill(~causal, -math.inf).exp()


def _pass_states(
    chunk_states: Tensor, chunk_decay: Tensor, initial_state: Tensor
) -> tuple[Tensor, Tensor]:
    """Linear recurrence over chunks: the state entering each chunk and the final state.

    Args:
        chunk_states: (batch, chunks, groups, rep, head_dim, d_state) state contributed by
            each chunk's own inputs, at the chunk's end.
        chunk_decay: (batch, chunks, groups, rep) total decay across each chunk.
        initial_state: (batch, groups, rep, head_dim, d_state) state before the first chunk.

    Returns:
        entering: (batch, chunks, groups, rep, head_dim, d_state) state before each chunk.
        final: (batch, groups, rep, head_dim, d_state) state after the last chunk.
    """
    h = initial_state
    entering = []
    for k in range(chunk_states.shape[1]):
        entering.append(h)
        h = chunk_decay[:, k, :, :, None, None] * h + chunk_states[:, k]
    return torch.stack(entering, dim=1), h


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """SSM scan with the chunked SSD algorithm (pure PyTorch, differentiable).

    Same recurrence as :func:`ssd_naive`. The sequence is cut into chunks of ``chunk_size``
    steps (zero-padded at the end; padded steps have ``dt = 0`` so they leave the state
    unchanged). Inside a chunk the output is the masked quadratic form
    ``y_i = sum_{j <= i} (C_i . B_j) exp(s_i - s_j) dt_j x_j`` with ``s`` the cumulative log
    decay; across chunks the end-of-chunk states are passed on by a linear recurrence and read
    out with ``C``. Cost is O(length * chunk_size) instead of O(length^2).

    Args:
        x: (batch, length, heads, head_dim) inputs.
        dt: (batch, length, heads) positive step sizes (already softplus-ed).
        A: (heads,) negative decay rates.
        B: (batch, length, groups, d_state) input projections, heads divisible by groups.
        C: (batch, length, groups, d_state) output projections.
        chunk_size: steps per chunk; any positive value (``length`` need not be a multiple).
        initial_state: (batch, heads, head_dim, d_state) state before the first step, or
            None for zeros.

    Returns:
        y: (batch, length, heads, head_dim), in the dtype of ``x``.
        final_state: (batch, heads, head_dim, d_state) state after the last step, in the
            compute dtype (at least float32).
    """
    _check_ssd_inputs(x, dt, A, B, C, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    batch, length, heads, head_dim = x.shape
    groups, d_state = B.shape[2:]
    rep = heads // groups
    out_dtype, dtype = x.dtype, compute_dtype(x.dtype)

    pad = (-length) % chunk_size
    chunks = (length + pad) // chunk_size
    x, dt, B, C = (t.to(dtype) for t in (x, dt, B, C))
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))

    # Chunked views; heads split as (groups, rep) so B and C are shared without copies.
    xdt = (x * dt[..., None]).view(batch, chunks, chunk_size, groups, rep, head_dim)
    Bc = B.view(batch, chunks, chunk_size, groups, d_state)
    Cc = C.view(batch, chunks, chunk_size, groups, d_state)
    log_decay = (dt * A.to(dtype)).view(batch, chunks, chunk_size, groups, rep)
    cumsum = log_decay.permute(0, 1, 3, 4, 2).cumsum(dim=-1)  # (batch, chunks, g, rep, chunk)

    # 1. Inside chunks: masked "attention" with scores (C_i . B_j) * decay(j -> i).
    scores = torch.einsum("bcign,bcjgn->bcgij", Cc, Bc)[:, :, :, None] * _segment_decay(cumsum)
    y = torch.einsum("bcgrij,bcjgrp->bcigrp", scores, xdt)

    # 2. State each chunk's inputs leave at its end: sum_j decay(j -> end) dt_j x_j B_j^T.
    to_end = torch.exp(cumsum[..., -1:] - cumsum).permute(0, 1, 4, 2, 3)  # (b, c, chunk, g, r)
    chunk_states = torch.einsum("bclgrp,bclgn->bcgrpn", xdt * to_end[..., None], Bc)

    # 3. Pass states across chunks.
    if initial_state is None:
        h0 = x.new_zeros(batch, groups, rep, head_dim, d_state)
    else:
        h0 = initial_state.to(dtype).view(batch, groups, rep, head_dim, d_state)
    entering, final = _pass_states(chunk_states, torch.exp(cumsum[..., -1]), h0)

    # 4. Read the entering states out, decayed up to each step: C_i^T h exp(s_i).
    from_start = torch.exp(cumsum).permute(0, 1, 4, 2, 3)[..., None]  # (b, c, chunk, g, r, 1)
    y = y + torch.einsum("bclgn,bcgrpn->bclgrp", Cc, entering) * from_start

    y = y.reshape(batch, chunks * chunk_size, heads, head_dim)[:, :length]
    return y.to(out_dtype), final.reshape(batch, heads, head_dim, d_state)


# --------------------------------------------------------------------------------------------
# Optional fused kernel
# --------------------------------------------------------------------------------------------


@functools.cache
def load_mamba_kernel() -> Callable[..., Tensor] | None:
    """``mamba_ssm``'s fused SSD kernel, or None when it cannot be imported (imported lazily)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a broken triton / CUDA toolchain
        return None
    return mamba_chunk_scan_combined


def mamba_kernel_available() -> bool:
    """True when ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`` imports."""
    return load_mamba_kernel() is not None
