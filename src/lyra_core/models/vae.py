"""Video latents for the Lyra student: a diffusers video VAE behind a small, shape-checked API.

Lyra reads Cosmos tokenizer latents (8x time, 8x space, 16 channels): diffusers'
``AutoencoderKLCosmos``. Real weights load from a local diffusers folder
(:meth:`VideoVAE.from_pretrained`; nothing is downloaded); :meth:`VideoVAE.tiny` builds a small
Cosmos-architecture VAE (by default with Cosmos' 8x factors) for tests and the CPU-trained model
the shipped student reads (``lyra train-vae``). Frames follow the renderer's layout,
(B, T, H, W, 3) in [0, 1]; latents follow the decoder's, (B, T', C, h, w) with
T' = 1 + (T - 1) / 8 (the first frame is encoded on its own, causally).

A folder whose weights do not fit its config is refused with
:class:`~lyra_core.utils.errors.CheckpointError` (diffusers would re-initialise missing weights
with a log line only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_core.models.modeling_utils import check_state_dict
from lyra_core.utils.errors import CheckpointError

CONFIG_NAME = "config.json"


def _diffusers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach a hub
    import diffusers

    return diffusers


class VideoVAE(nn.Module):
    """Encode frames to normalised latents and decode them back."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        config = vae.config
        self.temporal_factor = int(getattr(config, "temporal_compression_ratio", 8))
        self.spatial_factor = int(getattr(config, "spatial_compression_ratio", 8))
        self.latent_channels = int(config.latent_channels)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        self.register_buffer(
            "latents_mean", _stats(mean, 0.0, self.latent_channels), persistent=False
        )
        self.register_buffer(
            "latents_std", _stats(std, 1.0, self.latent_channels), persistent=False
        )

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **kwargs) -> VideoVAE:
        """Load a local diffusers video VAE folder (``config.json`` names its class).

        Args:
            folder: the diffusers folder (``config.json`` + weights).
            **kwargs: passed to the diffusers class's ``from_pretrained`` (e.g.
                ``use_safetensors=True``).

        Raises:
            CheckpointError: no folder or ``config.json``, a config that is not JSON or names no
                diffusers model, weights that are missing, unreadable or do not fit the config.
        """
        from safetensors import SafetensorError

        folder = Path(folder)
        path = folder / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(f"no video VAE at {folder}: {CONFIG_NAME} is missing")
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not a readable VAE config ({err})") from err
        class_name = config.get("_class_name", "") if isinstance(config, dict) else ""
        diffusers = _diffusers()
        model_class = getattr(diffusers, str(class_name), None) if class_name else None
        if not (isinstance(model_class, type) and issubclass(model_class, diffusers.ModelMixin)):
            raise CheckpointError(f"{path}: names no diffusers model ({class_name!r})")
        try:
            vae = model_class.from_pretrained(folder, **kwargs)
            _check_weights(vae, folder)
            return cls(vae)
        except CheckpointError:
            raise
        except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
            message = " ".join(str(err).split())
            raise CheckpointError(f"video VAE {folder}: {message}") from err

    @classmethod
    def tiny(cls, **architecture) -> VideoVAE:
        """A small Cosmos-architecture VAE; by default ~0.6M parameters, 8x time, 8x space,
        16 channels.

        ``architecture`` overrides ``AutoencoderKLCosmos`` arguments, e.g. 4x space and time with
        ``spatial_compression_ratio=4, temporal_compression_ratio=4, patch_size=2`` (Cosmos needs
        the temporal ratio at most the spatial one and both at least ``patch_size``).
        """
        arguments = {
            "encoder_block_out_channels": (16, 32, 32, 32),
            "decode_block_out_channels": (32, 32, 32, 32),
            "attention_resolutions": (),
            "resolution": 64,
            "num_layers": 1,
            "latents_mean": None,
            "latents_std": None,
        } | architecture
        return cls(_diffusers().AutoencoderKLCosmos(**arguments))

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save as a diffusers folder (config.json + safetensors)."""
        self.vae.save_pretrained(folder)

    def latent_frames(self, num_frames: int) -> int:
        """T' for T input frames."""
        return 1 + (num_frames - 1) // self.temporal_factor

    def encode(self, frames: Tensor, sample: bool = False) -> Tensor:
        """(B, T, H, W, 3) in [0, 1] -> normalised latents (B, T', C, h, w).

        T - 1 must be a multiple of the temporal factor and H, W of the spatial factor.
        ``sample`` draws from the posterior instead of taking its mode.
        """
        self._check_frames(frames)
        video = frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # (B, 3, T, H, W) in [-1, 1]
        posterior = self.vae.encode(video).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
        mean, std = self._stats_for(latents.shape[2])
        return ((latents - mean) / std).permute(0, 2, 1, 3, 4)

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, T', C, h, w) -> frames (B, T, H, W, 3) in [0, 1]."""
        if latents.dim() != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(
                f"latents must be (B, T', {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        mean, std = self._stats_for(latents.shape[1])
        z = latents.permute(0, 2, 1, 3, 4) * std + mean
        video = self.vae.decode(z).sample
        return ((video + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)

    def _stats_for(self, latent_frames: int) -> tuple[Tensor, Tensor]:
        """Mean and std (1, C, T', 1, 1): per channel, and per latent frame where the VAE
        stores them so (Cosmos: channels x 16 frames, later frames reuse the last)."""

        def pick(stats: Tensor) -> Tensor:
            index = torch.arange(latent_frames, device=stats.device).clamp_max(stats.shape[2] - 1)
            return stats[:, :, index]

        return pick(self.latents_mean), pick(self.latents_std)

    def _check_frames(self, frames: Tensor) -> None:
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, T, H, W, 3), got {tuple(frames.shape)}")
        t, h, w = frames.shape[1:4]
        if (t - 1) % self.temporal_factor:
            raise ValueError(f"T - 1 = {t - 1} frames must be a multiple of {self.temporal_factor}")
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(f"frames of {w}x{h} must be multiples of {self.spatial_factor}")


def _check_weights(vae: nn.Module, folder: Path) -> None:
    """Refuse safetensors weights in ``folder`` whose names or shapes differ from ``vae``'s."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safetensors file is not iterable
            shapes |= {name: weights.get_slice(name).get_shape() for name in names}
    if shapes:
        check_state_dict(vae, shapes, folder)


def _stats(values, default: float, channels: int) -> Tensor:
    """Latent statistics as (1, C, frames, 1, 1); ``values`` holds C x frames entries."""
    if values is None:
        return torch.full((1, channels, 1, 1, 1), default)
    return torch.as_tensor(list(values), dtype=torch.float32).reshape(1, channels, -1, 1, 1)
