"""The networks of the Lyra student and its metrics (PyTorch modules, diffusers conventions).

- :mod:`.decoder`: :class:`~lyra_core.models.decoder.LyraDecoder`, the latent 3DGS decoder
  (Transformer + Mamba-2 blocks over all trajectories' tokens, per-pixel Gaussians out) and its
  config;
- :mod:`.mamba2` and :mod:`.ssd`: Mamba-2 layers in pure PyTorch and their SSD scan (chunked,
  with ``mamba_ssm``'s fused kernel where it imports), re-exported here;
- :mod:`.vae`: :class:`~lyra_core.models.vae.VideoVAE`, the frozen video VAE (a diffusers Cosmos
  autoencoder behind a shape-checked encode/decode);
- :mod:`.perceptual`: the perceptual networks and distances (ST-LPIPS, LPIPS) used as loss and
  metric;
- :mod:`.modeling_utils`: atomic folder writes and strict state-dict checks shared by the model
  folders.

The decoder and the VAE are imported from their modules (``lyra_core.models.decoder``), so
importing this package does not import diffusers.
"""

from lyra_core.models.mamba2 import BidirectionalMamba2, GatedRMSNorm, Mamba2, Mamba2Block
from lyra_core.models.ssd import mamba_kernel_available, ssd_chunked, ssd_naive

__all__ = [
    "BidirectionalMamba2",
    "GatedRMSNorm",
    "Mamba2",
    "Mamba2Block",
    "mamba_kernel_available",
    "ssd_chunked",
    "ssd_naive",
]
