"""Video latents for the Lyra student: a diffusers video VAE behind a small, shape-checked API.

Lyra reads Cosmos tokenizer latents (8x time, 8x space, 16 channels): diffusers'
``AutoencoderKLCosmos``. Real weights load from a local diffusers folder
(:meth:`VideoVAE.from_pretrained`; nothing is downloaded); :meth:`VideoVAE.tiny` builds a small
Cosmos-architecture VAE (by default with Cosmos' 8x factors) for tests and the CPU-trained model
the shipped student reads (``lyra train-vae``). Frames follow the renderer's layout,
(B, T, H, W, 3) in [0, 1]; latents follow the decoder's, (B, T', C, h, w) with
T' = 1 + (T - 1) / 8 (the first frame is encoded on its own, causally).

The tokenizer as NVIDIA releases it (``Cosmos-Tokenize1-CV8x8x8-720p``: TorchScript
``encoder.jit`` / ``decoder.jit`` and ``mean_std.pt``) loads with :meth:`VideoVAE.from_cosmos_jit`
behind the same API and normalisation. :meth:`VideoVAE.encode_raw` gives un-normalised latents of
any 3-channel signal in the VAE's input units (Lyra-1 encodes Plucker rays and time embeddings
that way), one chunk of videos at a time.

Normalisation: ``latents = (z - mean) / std`` per channel (and per latent frame where the
statistics have frames). Lyra-1's stored generator latents are ``0.5 *`` that (EDM
``sigma_data``); Lyra-1's decoder reads raw ``z`` (:meth:`VideoVAE.denormalize`).

A folder whose weights do not fit its config is refused with
:class:`~lyra_core.utils.errors.CheckpointError` (diffusers would re-initialise missing weights
with a log line only).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from lyra_core.models.modeling_utils import check_folder_weights
from lyra_core.utils.errors import CheckpointError

CONFIG_NAME = "config.json"


COSMOS_JIT_FILES = ("encoder.jit", "decoder.jit", "mean_std.pt")


def _diffusers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach a hub
    import diffusers

    return diffusers


class CosmosJitTokenizer(nn.Module):
    """The released Cosmos tokenizer's TorchScript encoder and decoder behind the two calls
    :class:`VideoVAE` makes (``encode_latents``, ``decode_latents``), with a ``config`` like a
    diffusers model's (factors, channels, latent statistics).

    The encoder maps ``(B, 3, T, H, W)`` in [-1, 1] to a tuple whose first entry is the latent
    ``(B, C, T', h, w)`` (Cosmos' continuous formulation; a bare tensor is accepted too); the
    decoder maps latents back to video. Inputs are cast to the modules' parameter dtype (e.g.
    bf16 after ``.to(torch.bfloat16)``) and outputs back to the input dtype.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        mean: Tensor,
        std: Tensor,
        latent_channels: int = 16,
        temporal_factor: int = 8,
        spatial_factor: int = 8,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = SimpleNamespace(
            temporal_compression_ratio=temporal_factor,
            spatial_compression_ratio=spatial_factor,
            latent_channels=latent_channels,
            latents_mean=mean.flatten().tolist(),
            latents_std=std.flatten().tolist(),
        )

    @staticmethod
    def _dtype_of(module: nn.Module, fallback: torch.dtype) -> torch.dtype:
        param = next(iter(module.parameters()), None)
        return param.dtype if param is not None else fallback

    def encode_latents(self, video: Tensor, sample: bool = False) -> Tensor:
        """(B, 3, T, H, W) -> (B, C, T', h, w); ``sample`` has no effect (an autoencoder)."""
        out = self.encoder(video.to(self._dtype_of(self.encoder, video.dtype)))
        latents = out[0] if isinstance(out, tuple | list) else out
        if not isinstance(latents, Tensor) or latents.dim() != 5:
            raise ValueError("the Cosmos encoder did not return a (B, C, T', h, w) latent")
        if latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"the Cosmos encoder gave {latents.shape[1]} channels, expected "
                f"{self.config.latent_channels} (latent_channels)"
            )
        return latents.to(video.dtype)

    def decode_latents(self, z: Tensor) -> Tensor:
        """(B, C, T', h, w) -> (B, 3, T, H, W) in about [-1, 1]."""
        out = self.decoder(z.to(self._dtype_of(self.decoder, z.dtype)))
        video = out[0] if isinstance(out, tuple | list) else out
        return video.to(z.dtype)


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
            check_folder_weights(vae, folder)
            return cls(vae)
        except CheckpointError:
            raise
        except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
            message = " ".join(str(err).split())
            raise CheckpointError(f"video VAE {folder}: {message}") from err

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> VideoVAE:
        """Load either kind of tokenizer folder: a diffusers folder (``config.json``, no
        TorchScript files: :meth:`from_pretrained`), else the released TorchScript Cosmos
        tokenizer (:meth:`from_cosmos_jit`).

        Raises:
            CheckpointError: as the loader of the folder's kind.
        """
        folder = Path(folder)
        is_diffusers = (folder / CONFIG_NAME).is_file()
        if is_diffusers and not any((folder / n).exists() for n in COSMOS_JIT_FILES):
            return cls.from_pretrained(folder)
        return cls.from_cosmos_jit(folder)

    @classmethod
    def from_cosmos_jit(
        cls,
        folder: str | os.PathLike[str],
        latent_channels: int = 16,
        temporal_factor: int = 8,
        spatial_factor: int = 8,
        map_location: str | torch.device = "cpu",
    ) -> VideoVAE:
        """Load the Cosmos tokenizer as released (e.g. ``Cosmos-Tokenize1-CV8x8x8-720p``):
        TorchScript ``encoder.jit`` and ``decoder.jit`` and ``mean_std.pt`` (a pair of tensors,
        mean and std, ``latent_channels`` x latent frames values each, read with
        ``weights_only=True``). The defaults are CV8x8x8's factors.

        Raises:
            CheckpointError: a missing folder or file, a file that is not TorchScript, or
                statistics that are not two tensors of ``latent_channels x frames`` values.
        """
        folder = Path(folder)
        for name in COSMOS_JIT_FILES:
            if not (folder / name).is_file():
                raise CheckpointError(f"no Cosmos tokenizer at {folder}: {name} is missing")
        modules = []
        for name in COSMOS_JIT_FILES[:2]:
            try:
                with warnings.catch_warnings():  # deprecated in torch, but the released format
                    warnings.simplefilter("ignore", DeprecationWarning)
                    module = torch.jit.load(str(folder / name), map_location=map_location)
                modules.append(module)
            except (RuntimeError, ValueError, OSError) as err:
                message = " ".join(str(err).split())[:200]
                raise CheckpointError(
                    f"{folder / name}: not a TorchScript module ({message})"
                ) from err
        path = folder / COSMOS_JIT_FILES[2]
        try:
            stats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling errors have no common base class
            message = " ".join(str(err).split())[:200]
            raise CheckpointError(f"{path}: not plain tensors ({message})") from err
        if not (
            isinstance(stats, tuple | list)
            and len(stats) == 2
            and all(isinstance(t, Tensor) for t in stats)
            and stats[0].numel() == stats[1].numel()
            and stats[0].numel() % latent_channels == 0
            and stats[0].numel() > 0
        ):
            raise CheckpointError(
                f"{path}: expected (mean, std), two tensors of {latent_channels} x frames values"
            )
        mean, std = (t.float() for t in stats)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise CheckpointError(f"{path}: statistics must be finite with std > 0")
        tokenizer = CosmosJitTokenizer(
            modules[0], modules[1], mean, std, latent_channels, temporal_factor, spatial_factor
        )
        return cls(tokenizer.eval())

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
        """Save as a diffusers folder (config.json + safetensors); not for TorchScript ones."""
        if isinstance(self.vae, CosmosJitTokenizer):
            raise TypeError("a TorchScript Cosmos tokenizer is loaded from its folder, not saved")
        self.vae.save_pretrained(folder)

    def latent_frames(self, num_frames: int) -> int:
        """T' for T input frames."""
        return 1 + (num_frames - 1) // self.temporal_factor

    def encode(self, frames: Tensor, sample: bool = False, batch_size: int | None = None) -> Tensor:
        """(B, T, H, W, 3) in [0, 1] -> normalised latents (B, T', C, h, w).

        T - 1 must be a multiple of the temporal factor and H, W of the spatial factor.
        ``sample`` draws from the posterior instead of taking its mode. ``batch_size`` encodes
        that many videos at a time (bounds memory for long or many videos; None: all at once).
        """
        self._check_frames(frames)
        return self.normalize(self.encode_raw(frames * 2.0 - 1.0, sample, batch_size))

    def encode_raw(
        self, video: Tensor, sample: bool = False, batch_size: int | None = None
    ) -> Tensor:
        """(B, T, H, W, 3) signal in the VAE's input units ([-1, 1] for images; any 3-channel
        signal such as Plucker rays, as is) -> RAW latents (B, T', C, h, w), not normalised.

        ``batch_size`` videos go through the encoder at a time (None: all at once).
        """
        self._check_frames(video)
        step = video.shape[0] if batch_size is None else batch_size
        if step < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        chunks = [
            self._encode_latents(video[i : i + step].permute(0, 4, 1, 2, 3), sample)
            for i in range(0, video.shape[0], step)
        ]
        return torch.cat(chunks).permute(0, 2, 1, 3, 4)

    def decode(self, latents: Tensor, batch_size: int | None = None) -> Tensor:
        """Normalised latents (B, T', C, h, w) -> frames (B, T, H, W, 3) in [0, 1]
        (``batch_size`` videos at a time; None: all at once)."""
        if latents.dim() != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(
                f"latents must be (B, T', {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        z = self.denormalize(latents).permute(0, 2, 1, 3, 4)
        step = z.shape[0] if batch_size is None else max(1, batch_size)
        video = torch.cat([self._decode_latents(z[i : i + step]) for i in range(0, len(z), step)])
        return ((video + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latents (B, T', C, h, w) -> normalised ``(z - mean) / std``."""
        mean, std = self._stats_for(z.shape[1])
        return (z - mean.transpose(1, 2)) / std.transpose(1, 2)

    def denormalize(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, T', C, h, w) -> raw ``latents * std + mean``."""
        mean, std = self._stats_for(latents.shape[1])
        return latents * std.transpose(1, 2) + mean.transpose(1, 2)

    def _encode_latents(self, video: Tensor, sample: bool) -> Tensor:
        """(B, 3, T, H, W) -> raw (B, C, T', h, w) through the wrapped model."""
        if isinstance(self.vae, CosmosJitTokenizer):
            return self.vae.encode_latents(video, sample)
        posterior = self.vae.encode(video.to(self.vae.dtype)).latent_dist
        return posterior.sample() if sample else posterior.mode()

    def _decode_latents(self, z: Tensor) -> Tensor:
        """Raw (B, C, T', h, w) -> (B, 3, T, H, W) in about [-1, 1]."""
        if isinstance(self.vae, CosmosJitTokenizer):
            return self.vae.decode_latents(z)
        return self.vae.decode(z.to(self.vae.dtype)).sample

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


def _stats(values, default: float, channels: int) -> Tensor:
    """Latent statistics as (1, C, frames, 1, 1); ``values`` holds C x frames entries."""
    if values is None:
        return torch.full((1, channels, 1, 1, 1), default)
    return torch.as_tensor(list(values), dtype=torch.float32).reshape(1, channels, -1, 1, 1)
