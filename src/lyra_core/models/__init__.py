"""Lyra model layers (pure PyTorch, optional fused kernels): the Mamba-2 decoder layers."""

from lyra_core.models.mamba2 import (
    BidirectionalMamba2,
    GatedRMSNorm,
    Mamba2,
    Mamba2Block,
    mamba_kernel_available,
    ssd_chunked,
    ssd_naive,
)

__all__ = [
    "BidirectionalMamba2",
    "GatedRMSNorm",
    "Mamba2",
    "Mamba2Block",
    "mamba_kernel_available",
    "ssd_chunked",
    "ssd_naive",
]
