"""Lyra-1's released student as a pipeline: trajectory videos (or the generator's latents) ->
raw latents, VAE-encoded Plucker rays (and times) -> :class:`Lyra1Decoder` -> Gaussians.

The decoder comes from ``lyra import-checkpoint`` (a :class:`Lyra1Decoder` folder) and the
tokenizer from NVIDIA's release (``Cosmos-Tokenize1-CV8x8x8-720p``: TorchScript, read by
:meth:`VideoVAE.from_cosmos_jit`) or a diffusers folder. Lyra-1 runs at 704 x 1280, 121 frames per
trajectory, six trajectories, in bf16 on CUDA; videos and rays are encoded one video at a time,
and with ``offload=True`` each model sits on its device only while it runs.

The views are read in the order given; Lyra-1's demo feeds GEN3C's six trajectories in the order
:data:`LYRA1_VIEW_ORDER`. Give cameras as Lyra-1 was trained on them: relative to the first frame
of the first view (OpenCV axes and intrinsics). The stored generator latents are
``sigma_data`` (0.5) times the tokenizer-normalised latents (``latent_scale`` of
:meth:`Lyra1Student.__call__`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_core.models.decoder import DecoderOutput
from lyra_core.models.lyra1 import (
    Lyra1Decoder,
    encode_plucker,
    encode_time,
    load_decoder,
    time_embedding,
)
from lyra_core.models.vae import VideoVAE
from lyra_core.utils.errors import CheckpointError

__all__ = ["LYRA1_HEIGHT", "LYRA1_NUM_FRAMES", "LYRA1_VIEW_ORDER", "LYRA1_WIDTH", "Lyra1Student"]

LYRA1_HEIGHT, LYRA1_WIDTH, LYRA1_NUM_FRAMES = 704, 1280, 121
LYRA1_VIEW_ORDER = (5, 0, 1, 2, 3, 4)
"""Trajectory indices of GEN3C's six camera paths in the order Lyra-1's demo reads them."""


class Lyra1Student:
    """An imported Lyra-1 decoder and its tokenizer.

    Args:
        vae: the tokenizer the decoder was trained with (Cosmos CV8x8x8).
        decoder: a :class:`Lyra1Decoder`.
        device: where the models run (default: CUDA when available).
        dtype: their dtype while running (default: bf16 on CUDA, float32 on the CPU).
        offload: keep each model on the CPU except while it runs.
    """

    def __init__(
        self,
        vae: VideoVAE,
        decoder: Lyra1Decoder,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
    ) -> None:
        if not isinstance(decoder, Lyra1Decoder):
            raise TypeError(f"decoder must be a Lyra1Decoder, got {type(decoder).__name__}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.offload = offload
        home = torch.device("cpu") if offload else self.device
        self.vae = vae.eval().to(home)
        self.vae.vae.to(dtype=self.dtype)  # the network; the latent statistics stay float32
        self.decoder = decoder.eval().to(home, self.dtype)

    @classmethod
    def from_pretrained(
        cls,
        decoder_folder: str | os.PathLike[str],
        tokenizer_folder: str | os.PathLike[str],
        **kwargs,
    ) -> Lyra1Student:
        """Load an imported decoder folder and a tokenizer folder (TorchScript
        ``encoder.jit``/``decoder.jit``/``mean_std.pt``, or a diffusers folder).

        Raises:
            CheckpointError: either folder missing or not of its kind.
        """
        decoder = load_decoder(decoder_folder)
        if not isinstance(decoder, Lyra1Decoder):
            raise CheckpointError(
                f"{decoder_folder}: not a Lyra-1 decoder (lyra import-checkpoint)"
            )
        tokenizer = Path(tokenizer_folder)
        if (tokenizer / "encoder.jit").is_file():
            vae = VideoVAE.from_cosmos_jit(tokenizer)
        else:
            vae = VideoVAE.from_pretrained(tokenizer)
        return cls(vae, decoder, **kwargs)

    @contextlib.contextmanager
    def _on_device(self, model: nn.Module) -> Iterator[nn.Module]:
        model.to(self.device)
        try:
            yield model
        finally:
            if self.offload:
                model.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @torch.inference_mode()
    def __call__(
        self,
        camtoworlds: Tensor,
        Ks: Tensor,
        videos: Tensor | None = None,
        latents: Tensor | None = None,
        latent_scale: float = 1.0,
        frame_times: Tensor | None = None,
        target_time: float | None = None,
    ) -> DecoderOutput:
        """Gaussians of the scene seen by V trajectories.

        Args:
            camtoworlds: (B, V, T, 4, 4) camera of every video frame (OpenCV axes).
            Ks: (B, V, T, 3, 3) intrinsics at the video resolution.
            videos: (B, V, T, H, W, 3) frames in [0, 1]; or give ``latents``.
            latents: (B, V, T', C, h, w) latents normalised by the tokenizer's statistics and
                multiplied by ``latent_scale`` (Lyra-1's stored generator latents: 0.5).
            latent_scale: see ``latents``.
            frame_times: (T,) times of the frames (default 0 .. T - 1); dynamic model only.
            target_time: the time the Gaussians are wanted at; required by the dynamic model.

        Returns:
            Gaussians with leading dims (B, V, T, h, w), float32, on ``self.device``.
        """
        if (videos is None) == (latents is None):
            raise ValueError("give exactly one of videos and latents")
        batch, views, frames = camtoworlds.shape[:3]
        factor = self.vae.spatial_factor
        with self._on_device(self.vae) as vae:
            if videos is not None:
                if videos.shape[:3] != (batch, views, frames):
                    raise ValueError(
                        f"videos must start with {(batch, views, frames)} like the cameras, "
                        f"got {tuple(videos.shape)}"
                    )
                height, width = videos.shape[3:5]
                flat = videos.reshape(batch * views, *videos.shape[2:])
                frames_in = flat.to(self.device, self.dtype) * 2.0 - 1.0
                raw = vae.encode_raw(frames_in, batch_size=1)
            else:
                height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
                flat = latents.reshape(batch * views, *latents.shape[2:]).to(self.device)
                raw = vae.denormalize(flat.float() / latent_scale).to(self.dtype)
            raw = raw.reshape(batch, views, *raw.shape[1:])
            cams, intrinsics = camtoworlds.to(self.device), Ks.to(self.device)
            plucker = encode_plucker(vae, cams, intrinsics, height, width)  # rays in float32
            times = None
            if self.decoder.config.use_time_embedding:
                if target_time is None:
                    raise ValueError("the dynamic Lyra-1 decoder needs target_time")
                steps = torch.arange(frames) if frame_times is None else frame_times
                times = [
                    encode_time(vae, t.expand(batch, -1, -1).to(self.device), height, width)
                    for t in time_embedding(steps, target_time)
                ]
        with self._on_device(self.decoder) as decoder:
            if times is None:
                return decoder(raw.to(self.dtype), plucker.to(self.dtype), cams, intrinsics)
            return decoder(raw.to(self.dtype), plucker.to(self.dtype), cams, intrinsics, *times)
