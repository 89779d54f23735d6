"""Mamba-2 layers of the Lyra student decoder: the Mamba-2 mixer, its bidirectional form and
its block; the scan itself is :mod:`lyra_core.models.ssd`.

The selective state space model of Mamba-2 ("Transformers are SSMs", Dao & Gu, 2024) keeps,
per head, a ``(head_dim, d_state)`` state updated as

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,        y_t = h_t C_t,

with a scalar decay ``A < 0`` per head and input-dependent ``dt_t > 0``, ``B_t``, ``C_t``.
:func:`ssd_chunked` evaluates it with the state space duality (SSD) algorithm in pure PyTorch:
a quadratic, attention-like form inside chunks and a linear recurrence over chunk states.
On CUDA with ``mamba_ssm`` installed, :class:`Mamba2` uses its fused Triton kernel instead.

Two bidirectional layouts: :class:`BidirectionalMamba2` runs two complete mixers (each with its
own projections); :class:`SharedBidirectionalMamba2` is Lyra-1's released layout, ONE ``in_proj``
and ONE ``out_proj`` around two :class:`Mamba2Scan` (each with its own conv1d, ``dt_bias``,
``A_log``, ``D`` and gated norm), the second on the reversed sequence, the two summed.

Tensor shapes follow ``mamba_ssm``: ``x`` is ``(batch, length, heads, head_dim)``, ``dt`` is
``(batch, length, heads)``, ``A`` is ``(heads,)``, ``B`` and ``C`` are
``(batch, length, groups, d_state)`` where head ``h`` reads group ``h // (heads // groups)``,
and states are ``(batch, heads, head_dim, d_state)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from lyra_core.models.ssd import (
    compute_dtype,
    load_mamba_kernel,
    ssd_chunked,
)

__all__ = [
    "BidirectionalMamba2",
    "GatedRMSNorm",
    "Mamba2",
    "Mamba2Block",
    "Mamba2Scan",
    "SharedBidirectionalMamba2",
]


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


class _SSDMixing(nn.Module):
    """The part of a Mamba-2 mixer between its projections, shared by :class:`Mamba2` and
    :class:`Mamba2Scan`: ``[z, xBC, dt]`` -> causal conv1d + SiLU on ``xBC`` -> SSD scan with
    ``dt = softplus(dt + dt_bias)``, ``A = -exp(A_log)`` and the skip ``D x`` -> gated RMSNorm.

    Subclasses call :meth:`_init_ssm` to create ``conv1d``, ``dt_bias``, ``A_log``, ``D`` and
    ``norm`` (in that order) and :meth:`reset_ssm_parameters` to initialise them.
    """

    def _init_ssm(
        self,
        d_inner: int,
        d_state: int,
        d_conv: int,
        head_dim: int,
        n_groups: int,
        chunk_size: int,
        use_kernel: bool | None,
        factory: dict,
    ) -> None:
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = d_inner
        self.head_dim = head_dim
        self.n_groups = n_groups
        self.chunk_size = chunk_size
        self.use_kernel = use_kernel
        if d_inner % head_dim != 0:
            raise ValueError(f"head_dim ({head_dim}) must divide d_inner ({d_inner})")
        self.n_heads = d_inner // head_dim
        if self.n_heads % n_groups != 0:
            raise ValueError(f"n_groups ({n_groups}) must divide n_heads ({self.n_heads})")
        self.conv_dim = d_inner + 2 * n_groups * d_state
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
        self.norm = GatedRMSNorm(d_inner, d_inner // n_groups, **factory)

    @property
    def d_in_proj(self) -> int:
        """Width of the ``[z, x, B, C, dt]`` input: ``2 d_inner + 2 n_groups d_state + heads``."""
        return self.d_inner + self.conv_dim + self.n_heads

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
        kernel = load_mamba_kernel() if x.is_cuda else None
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

    def mix(self, zxbcdt: Tensor) -> Tensor:
        """(batch, length, d_in_proj) ``[z, x, B, C, dt]`` -> (batch, length, d_inner), causal."""
        batch, length, _ = zxbcdt.shape
        z, xBC, dt = zxbcdt.split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xBC = self._causal_conv(xBC)
        gn = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, gn, gn], dim=-1)
        x = x.unflatten(-1, (self.n_heads, self.head_dim))
        B = B.unflatten(-1, (self.n_groups, self.d_state))
        C = C.unflatten(-1, (self.n_groups, self.d_state))
        ssm_dtype = compute_dtype(zxbcdt.dtype)
        dt = F.softplus(dt.to(ssm_dtype) + self.dt_bias.to(ssm_dtype))
        A = -torch.exp(self.A_log.to(ssm_dtype))
        y = self._scan(x, dt, A, B, C).to(x.dtype)
        y = y + x * self.D.to(x.dtype)[:, None]
        return self.norm(y.reshape(batch, length, self.d_inner), z)


class Mamba2(_SSDMixing):
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
        d_inner = expand * d_model
        conv_dim = d_inner + 2 * n_groups * d_state
        n_heads = d_inner // head_dim if d_inner % head_dim == 0 else 0
        # in_proj first, then the SSM parameters, then out_proj: the order of random init
        self.in_proj = nn.Linear(d_model, d_inner + conv_dim + n_heads, bias=False, **factory)
        self._init_ssm(
            d_inner, d_state, d_conv, head_dim, n_groups, chunk_size, use_kernel, factory
        )
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor, A_init_range)

    def forward(self, u: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model); output t sees inputs <= t."""
        return self.out_proj(self.mix(self.in_proj(u)))


class Mamba2Scan(_SSDMixing):
    """One scan of a Mamba-2 mixer without its projections (``mamba_scans.i`` of Lyra-1):
    ``conv1d``, ``dt_bias``, ``A_log``, ``D`` and the gated ``norm``.

    Args:
        d_inner: inner width (``expand * d_model``).
        d_state, d_conv, head_dim, n_groups, chunk_size, use_kernel, device, dtype: as for
            :class:`Mamba2`.

    ``dt_bias``, ``A_log`` and ``D`` get :meth:`reset_ssm_parameters`'s defaults (call it again
    for other ranges).
    """

    def __init__(
        self,
        d_inner: int,
        d_state: int = 256,
        d_conv: int = 4,
        head_dim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 64,
        *,
        use_kernel: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self._init_ssm(
            d_inner, d_state, d_conv, head_dim, n_groups, chunk_size, use_kernel, factory
        )
        self.reset_ssm_parameters()

    def forward(self, zxbcdt: Tensor) -> Tensor:
        """(batch, length, d_in_proj) ``[z, x, B, C, dt]`` -> (batch, length, d_inner)."""
        return self.mix(zxbcdt)


class _Bidirectional(nn.Module):
    """Common constructor of the two non-causal mixers; subclasses build their layers in
    :meth:`_build` and merge the two directions with :meth:`_merge`."""

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
        sizes = (d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size)
        self._build(*sizes, use_kernel=use_kernel, device=device, dtype=dtype)

    def _build(self, *sizes: int, **options) -> None:
        raise NotImplementedError

    def _merge(self, both: Tensor) -> Tensor:
        return 0.5 * both if self.merge == "mean" else both


class BidirectionalMamba2(_Bidirectional):
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

    def _build(self, *sizes: int, **options) -> None:
        self.forward_mixer = Mamba2(*sizes, **options)
        self.backward_mixer = Mamba2(*sizes, **options)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        return self._merge(self.forward_mixer(x) + self.backward_mixer(x.flip(1)).flip(1))


class SharedBidirectionalMamba2(_Bidirectional):
    """Non-causal Mamba-2 mixer in Lyra-1's released layout (``Mamba2MultiScan``, scan "bi").

    ``zx = in_proj(x)``; ``y = scans[0](zx) + flip(scans[1](flip(zx)))`` (or half of it with
    ``merge="mean"``); ``out = out_proj(y)``. One ``in_proj`` (``d_model -> 2 d_inner +
    2 n_groups d_state + heads``, no bias) and one ``out_proj`` (``d_inner -> d_model``, no bias)
    are shared by the two :class:`Mamba2Scan`, which each have their own conv1d (with bias),
    ``dt_bias``, ``A_log``, ``D`` and gated norm. The reversed scan's conv1d is causal in
    reversed order, so every output token sees the whole sequence.

    Args:
        d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, use_kernel, device,
            dtype: as for :class:`Mamba2`.
        merge: "sum" (Lyra-1) or "mean" of the two directions.
    """

    def _build(self, *sizes: int, **options) -> None:
        d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size = sizes
        d_inner = expand * d_model
        scans = [
            Mamba2Scan(d_inner, d_state, d_conv, head_dim, n_groups, chunk_size, **options)
            for _ in range(2)
        ]
        factory = {"device": options["device"], "dtype": options["dtype"]}
        self.in_proj = nn.Linear(d_model, scans[0].d_in_proj, bias=False, **factory)
        self.scans = nn.ModuleList(scans)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        zx = self.in_proj(x)
        return self.out_proj(self._merge(self.scans[0](zx) + self.scans[1](zx.flip(1)).flip(1)))


class Mamba2Block(nn.Module):
    """Pre-norm residual block of the Lyra decoder: ``x + mixer(RMSNorm(x))``.

    Args:
        d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, merge, use_kernel,
            device, dtype: passed to the bidirectional mixer.
        layout: "separate" (:class:`BidirectionalMamba2`, two complete mixers) or "shared"
            (:class:`SharedBidirectionalMamba2`, Lyra-1's released layout).
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
        layout: Literal["separate", "shared"] = "separate",
        norm_eps: float = 1e-5,
        use_kernel: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        mixers = {"separate": BidirectionalMamba2, "shared": SharedBidirectionalMamba2}
        if layout not in mixers:
            raise ValueError(f"layout must be 'separate' or 'shared', got {layout!r}")
        self.norm = nn.RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)
        self.mixer = mixers[layout](
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
