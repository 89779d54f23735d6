"""Mamba-2 layers of the Lyra student decoder: the SSD scan, the Mamba-2 mixer and its block.

The selective state space model of Mamba-2 ("Transformers are SSMs", Dao & Gu, 2024) keeps,
per head, a ``(head_dim, d_state)`` state updated as

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,        y_t = h_t C_t,

with a scalar decay ``A < 0`` per head and input-dependent ``dt_t > 0``, ``B_t``, ``C_t``.
:func:`ssd_chunked` evaluates it with the state space duality (SSD) algorithm in pure PyTorch:
a quadratic, attention-like form inside chunks and a linear recurrence over chunk states.
On CUDA with ``mamba_ssm`` installed, :class:`Mamba2` uses its fused Triton kernel instead.

Tensor shapes follow ``mamba_ssm``: ``x`` is ``(batch, length, heads, head_dim)``, ``dt`` is
``(batch, length, heads)``, ``A`` is ``(heads,)``, ``B`` and ``C`` are
``(batch, length, groups, d_state)`` where head ``h`` reads group ``h // (heads // groups)``,
and states are ``(batch, heads, head_dim, d_state)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "BidirectionalMamba2",
    "GatedRMSNorm",
    "Mamba2",
    "Mamba2Block",
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


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
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
    dtype = _compute_dtype(x.dtype)
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
    out_dtype, dtype = x.dtype, _compute_dtype(x.dtype)

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
def _load_mamba_kernel() -> Callable[..., Tensor] | None:
    """``mamba_ssm``'s fused SSD kernel, or None when it cannot be imported (imported lazily)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a broken triton / CUDA toolchain
        return None
    return mamba_chunk_scan_combined


def mamba_kernel_available() -> bool:
    """True when ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`` imports."""
    return _load_mamba_kernel() is not None


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def _inverse_softplus(t: Tensor) -> Tensor:
    """``softplus^{-1}(t) = log(exp(t) - 1)`` for ``t > 0``, written stably."""
    return t + torch.log(-torch.expm1(-t))


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``x * silu(z)``, normalised over groups of ``group_size`` channels.

    Matches ``mamba_ssm``'s ``RMSNormGated`` with ``norm_before_gate=False``.

    Args:
        dim: number of channels.
        group_size: channels per normalisation group (default ``dim``); must divide ``dim``.
        eps: added to the mean square.
        device, dtype: of the weight.
    """

    def __init__(
        self,
        dim: int,
        group_size: int | None = None,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.group_size = dim if group_size is None else group_size
        if dim % self.group_size != 0:
            raise ValueError(f"group_size ({self.group_size}) must divide dim ({dim})")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """(..., dim) inputs and gates -> (..., dim)."""
        gated = x * F.silu(z)
        grouped = gated.unflatten(-1, (-1, self.group_size))
        normed = F.rms_norm(grouped, (self.group_size,), eps=self.eps).flatten(-2)
        return normed * self.weight


class Mamba2(nn.Module):
    """Mamba-2 mixer (causal), laid out like ``mamba_ssm.Mamba2``.

    ``in_proj`` maps each token to ``[z, x, B, C, dt]``; ``x, B, C`` go through a causal
    depthwise conv1d of width ``d_conv`` and SiLU; ``dt = softplus(dt + dt_bias)``,
    ``A = -exp(A_log)``; the SSD scan gives ``y``, plus the skip ``D x``; then
    ``out_proj(norm(y * silu(z)))`` with a gated RMSNorm per group.

    Args:
        d_model: token width.
        d_state: SSM state size per head (N).
        d_conv: width of the causal depthwise convolution.
        expand: inner width is ``expand * d_model``.
        head_dim: channels per SSM head (P); must divide the inner width.
        n_groups: number of B/C groups shared by the heads; must divide the head count.
        chunk_size: chunk length of the SSD scan.
        dt_min, dt_max: range of the initial ``dt`` (log-uniform).
        dt_init_floor: lower clamp of the initial ``dt``.
        A_init_range: range of the initial ``-A`` (uniform).
        use_kernel: None picks the ``mamba_ssm`` Triton kernel when it imports and the input
            is on CUDA, else :func:`ssd_chunked`; True requires the kernel (RuntimeError
            otherwise); False always uses :func:`ssd_chunked`.
        device, dtype: of the parameters.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 256,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 64,
        *,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        use_kernel: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.head_dim = head_dim
        self.n_groups = n_groups
        self.chunk_size = chunk_size
        self.use_kernel = use_kernel
        if self.d_inner % head_dim != 0:
            raise ValueError(f"head_dim ({head_dim}) must divide d_inner ({self.d_inner})")
        self.n_heads = self.d_inner // head_dim
        if self.n_heads % n_groups != 0:
            raise ValueError(f"n_groups ({n_groups}) must divide n_heads ({self.n_heads})")
        self.conv_dim = self.d_inner + 2 * n_groups * d_state

        d_in_proj = self.d_inner + self.conv_dim + self.n_heads  # [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False, **factory)
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            d_conv,
            groups=self.conv_dim,
            padding=d_conv - 1,
            **factory,
        )
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads, **factory))
        self.A_log = nn.Parameter(torch.empty(self.n_heads, **factory))
        self.D = nn.Parameter(torch.empty(self.n_heads, **factory))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # type: ignore[attr-defined]
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // n_groups, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory)
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor, A_init_range)

    @torch.no_grad()
    def reset_ssm_parameters(
        self,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
    ) -> None:
        """Initialise ``dt_bias`` (softplus in [dt_min, dt_max]), ``A_log`` and ``D = 1``."""
        log_lo, log_hi = math.log(dt_min), math.log(dt_max)
        u = torch.rand(self.n_heads, device=self.dt_bias.device, dtype=torch.float64)
        dt = torch.exp(log_lo + u * (log_hi - log_lo)).clamp(min=dt_init_floor)
        self.dt_bias.copy_(_inverse_softplus(dt))
        A = torch.empty_like(u).uniform_(*A_init_range)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def _causal_conv(self, xBC: Tensor) -> Tensor:
        """(batch, length, conv_dim) -> same, causal depthwise conv then SiLU."""
        length = xBC.shape[1]
        out = self.conv1d(xBC.transpose(1, 2))[..., :length]
        return F.silu(out.transpose(1, 2))

    def _kernel_for(self, x: Tensor) -> Callable[..., Tensor] | None:
        """The fused kernel if it should be used for ``x``, else None."""
        if self.use_kernel is False:
            return None
        kernel = _load_mamba_kernel() if x.is_cuda else None
        if self.use_kernel and kernel is None:
            raise RuntimeError("use_kernel=True needs mamba_ssm importable and a CUDA input")
        return kernel

    def _scan(self, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """SSD scan of (batch, length, heads, head_dim) ``x``; returns the same shape."""
        kernel = self._kernel_for(x)
        if kernel is not None:
            return kernel(x, dt, A, B, C, chunk_size=self.chunk_size)
        y, _ = ssd_chunked(x, dt, A, B, C, chunk_size=self.chunk_size)
        return y

    def forward(self, u: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model); output t sees inputs <= t."""
        batch, length, _ = u.shape
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xBC = self._causal_conv(xBC)
        gn = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        x = x.unflatten(-1, (self.n_heads, self.head_dim))
        B = B.unflatten(-1, (self.n_groups, self.d_state))
        C = C.unflatten(-1, (self.n_groups, self.d_state))
        ssm_dtype = _compute_dtype(u.dtype)
        dt = F.softplus(dt.to(ssm_dtype) + self.dt_bias.to(ssm_dtype))
        A = -torch.exp(self.A_log.to(ssm_dtype))
        y = self._scan(x, dt, A, B, C).to(x.dtype)
        y = y + x * self.D.to(x.dtype)[:, None]
        y = self.norm(y.reshape(batch, length, self.d_inner), z)
        return self.out_proj(y)


class BidirectionalMamba2(nn.Module):
    """Non-causal Mamba-2 mixer: one :class:`Mamba2` left to right, one right to left.

    ``out = fwd(x) + flip(bwd(flip(x)))`` with ``merge="sum"`` (the default; each direction's
    ``out_proj`` learns its own scale, so summing loses nothing) or half of that with
    ``merge="mean"``. The two mixers have separate parameters. Every output token sees the
    whole sequence, as suits non-causal token sequences.

    Args:
        d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, use_kernel, device,
            dtype: passed to both :class:`Mamba2` mixers.
        merge: "sum" or "mean" of the two directions.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 256,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 64,
        *,
        merge: Literal["sum", "mean"] = "sum",
        use_kernel: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if merge not in ("sum", "mean"):
            raise ValueError(f"merge must be 'sum' or 'mean', got {merge!r}")
        self.merge = merge

        def mixer() -> Mamba2:
            return Mamba2(
                d_model,
                d_state,
                d_conv,
                expand,
                head_dim,
                n_groups,
                chunk_size,
                use_kernel=use_kernel,
                device=device,
                dtype=dtype,
            )

        self.forward_mixer = mixer()
        self.backward_mixer = mixer()

    def forward(self, x: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        out = self.forward_mixer(x) + self.backward_mixer(x.flip(1)).flip(1)
        return 0.5 * out if self.merge == "mean" else out


class Mamba2Block(nn.Module):
    """Pre-norm residual block of the Lyra decoder: ``x + BidirectionalMamba2(RMSNorm(x))``.

    Args:
        d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, merge, use_kernel,
            device, dtype: passed to :class:`BidirectionalMamba2`.
        norm_eps: epsilon of the pre-norm :class:`torch.nn.RMSNorm`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 256,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 64,
        *,
        merge: Literal["sum", "mean"] = "sum",
        norm_eps: float = 1e-5,
        use_kernel: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)
        self.mixer = BidirectionalMamba2(
            d_model,
            d_state,
            d_conv,
            expand,
            head_dim,
            n_groups,
            chunk_size,
            merge=merge,
            use_kernel=use_kernel,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        return x + self.mixer(self.norm(x))
