"""Stand-ins for Cosmos's released tokenizer files (``encoder.jit``, ``decoder.jit``,
``mean_std.pt``), shared by the VAE and Lyra-1 world tests."""

from __future__ import annotations

import warnings

import torch


class TinyCosmosEncoder(torch.nn.Module):
    """Stands in for ``encoder.jit``: (B, 3, T, H, W) in [-1, 1] -> (latent, posterior stats),
    causal 8x time (the first frame alone), 8x space, 16 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv3d(3, 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        first = torch.nn.functional.avg_pool3d(x[:, :, :1], (1, 8, 8))
        rest = torch.nn.functional.avg_pool3d(x[:, :, 1:], (8, 8, 8))
        zeros = torch.zeros(1)
        return self.proj(torch.cat([first, rest], 2)), (zeros, zeros)


class TinyCosmosDecoder(torch.nn.Module):
    """Stands in for ``decoder.jit``: latents -> (B, 3, 1 + 8 (T' - 1), 8 h, 8 w)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv3d(16, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.proj(z)
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(8, dim=2)], 2)
        return torch.nn.functional.interpolate(x, scale_factor=(1.0, 8.0, 8.0), mode="nearest")


def write_cosmos_folder(folder, mean_std=None):
    torch.manual_seed(1)
    encoder, decoder = TinyCosmosEncoder().eval(), TinyCosmosDecoder().eval()
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is deprecated, and the released format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(encoder).save(str(folder / "encoder.jit"))
        torch.jit.script(decoder).save(str(folder / "decoder.jit"))
    if mean_std is None:  # 16 channels x 16 latent frames, as released
        mean_std = (torch.randn(16, 16) * 0.1, 0.5 + torch.rand(16, 16))
    torch.save(mean_std, folder / "mean_std.pt")
    return encoder, decoder, mean_std
