"""Lyra-1's released decoder (``lyra_static.pt`` / ``lyra_dynamic.pt``) as a sibling of
:class:`~lyra_core.models.decoder.LyraDecoder`, built from the same config
(:meth:`LyraDecoderConfig.lyra1`, :meth:`LyraDecoderConfig.lyra1_dynamic`).

What differs from this package's student decoder (facts from nv-tlabs/lyra, ``Lyra-1/src/models/
recon/model_latent_recon.py`` and ``src/models/utils/{attention,mamba2,model}.py``):

- inputs are RAW (un-normalised) Cosmos latents: Lyra-1 de-normalises the generator's latents
  (:meth:`~lyra_core.models.vae.VideoVAE.denormalize`) before the decoder;
- the Plucker rays ``(o x d, d)`` of every video frame at full resolution are encoded by the same
  VAE, each 3-channel half as a video (:func:`encode_plucker`): 2 x 16 = 32 channels at the latent
  grid, embedded by a zero-initialised ``Conv3d (1, 2, 2) + LayerNorm`` and added to the tokens;
- dynamic model: the times of the input frames and of the wanted target time are embedded as
  ``[t, cos t, sin t]`` (:func:`time_embedding`), painted as constant images, VAE-encoded
  (:func:`encode_time`) and added through two more zero-initialised patch embeddings (present
  but unused in the static model);
- Mamba-2 blocks use the shared bidirectional layout
  (:class:`~lyra_core.models.mamba2.SharedBidirectionalMamba2`), LayerNorms eps 1e-6;
- the head is ``ConvTranspose3d(512 -> 12, kernel (9, 2, 2), stride (8, 2, 2), padding (4, 0,
  0))``: T' latent frames -> T = 8 (T' - 1) + 1 video frames at the LATENT spatial resolution,
  i.e. one Gaussian per 8 x 8-pixel block per video frame per view, placed on the ray of that
  frame's camera through the block's centre.

Activations (distance, rgb, scale, rotation, opacity) are the student's
(:func:`~lyra_core.models.decoder.activate_gaussians`), which are Lyra's.

Conventions: intrinsics here are OpenCV's (pixel centres at integers, as everywhere in this
package); Lyra-1's code puts pixel centres at +0.5, so its ``cx, cy`` are ours + 0.5. Lyra-1 was
trained with every camera expressed relative to the first frame of the first view (and scaled
by its data's scene scale); the Gaussians come out in that frame.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from lyra_core.geometry.cameras import plucker_rays
from lyra_core.models.decoder import (
    RAW_CHANNELS,
    DecoderFolderMixin,
    DecoderOutput,
    LyraDecoder,
    LyraDecoderConfig,
    PatchEmbed,
    activate_gaussians,
    build_blocks,
)

__all__ = [
    "Lyra1Decoder",
    "build_decoder",
    "encode_plucker",
    "encode_time",
    "load_decoder",
    "time_embedding",
]


class Lyra1Decoder(DecoderFolderMixin, nn.Module):
    """Lyra-1's latent 3DGS decoder: V trajectories' latents + their cameras -> Gaussians.

    Submodules (the key map to the released names is
    :data:`lyra_core.models.lyra1_checkpoint.KEY_MAP`): ``patch_embed``, ``plucker_embed``,
    ``time_embed``, ``target_time_embed`` (each ``proj`` Conv3d + ``norm`` LayerNorm),
    ``blocks`` (hybrid), ``norm`` (LayerNorm) and ``head`` (ConvTranspose3d).
    """

    def __init__(self, config: LyraDecoderConfig) -> None:
        super().__init__()
        if config.architecture != "lyra1":
            raise ValueError(
                f"Lyra1Decoder needs architecture 'lyra1', got {config.architecture!r} "
                "(use LyraDecoder)"
            )
        self.config = c = config
        channels, width, patch = c.latent_channels, c.width, c.patch_size
        self.patch_embed = PatchEmbed(channels, width, patch)
        self.plucker_embed = PatchEmbed(2 * channels, width, patch, zero_init=True)
        self.time_embed = PatchEmbed(channels, width, patch, zero_init=True)
        self.target_time_embed = PatchEmbed(channels, width, patch, zero_init=True)
        self.blocks = build_blocks(c)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)
        tf, p = c.temporal_factor, c.patch_size
        self.head = nn.ConvTranspose3d(
            c.width,
            RAW_CHANNELS,
            kernel_size=(tf + 1, p, p),
            stride=(tf, p, p),
            padding=(tf // 2, 0, 0),
        )

    def video_frames(self, latent_frames: int) -> int:
        """T = temporal_factor (T' - 1) + 1 video frames (Gaussian sets) for T' latent frames."""
        return self.config.temporal_factor * (latent_frames - 1) + 1

    def forward(
        self,
        latents: Tensor,
        plucker_latents: Tensor,
        camtoworlds: Tensor,
        Ks: Tensor,
        time_latents: Tensor | None = None,
        target_time_latents: Tensor | None = None,
    ) -> DecoderOutput:
        """Decode.

        Args:
            latents: (B, V, T', C, h, w) RAW video latents of V trajectories.
            plucker_latents: (B, V, T', 2C, h, w) raw VAE latents of the full-resolution
                Plucker rays, moment half then direction half (:func:`encode_plucker`).
            camtoworlds: (B, V, T, 4, 4) camera of every video frame (OpenCV axes),
                T = temporal_factor (T' - 1) + 1.
            Ks: (B, V, T, 3, 3) intrinsics of the pixel-resolution frames
                (H = h * vae_spatial_factor, W = w * vae_spatial_factor).
            time_latents: (B, T', C, h, w) raw latents of the input frames' time embedding,
                shared by the views (:func:`encode_time`); dynamic model only.
            target_time_latents: (B, 1, C, h, w) raw latents of the target time; dynamic only.

        Returns:
            Activated Gaussians with leading dims (B, V, T, h, w): one per latent cell per video
            frame per view.
        """
        c = self.config
        batch, views, frames, channels, h, w = latents.shape
        if channels != c.latent_channels:
            raise ValueError(f"latents have {channels} channels, the config {c.latent_channels}")
        if h % c.patch_size or w % c.patch_size:
            raise ValueError(f"latent grid {h}x{w} must be divisible by patch {c.patch_size}")
        expected = (batch, views, frames, 2 * channels, h, w)
        if tuple(plucker_latents.shape) != expected:
            raise ValueError(
                f"plucker_latents must be {expected}, got {tuple(plucker_latents.shape)}"
            )
        video_frames = self.video_frames(frames)
        if camtoworlds.shape[:3] != (batch, views, video_frames):
            raise ValueError(
                f"camtoworlds must be ({batch}, {views}, {video_frames}, 4, 4) for {frames} "
                f"latent frames, got {tuple(camtoworlds.shape)}"
            )
        height, width = h * c.vae_spatial_factor, w * c.vae_spatial_factor

        def per_view(x: Tensor) -> Tensor:  # (B, V, T', C, h, w) -> (B V, C, T', h, w)
            return x.reshape(batch * views, *x.shape[2:]).transpose(1, 2)

        tokens = self.patch_embed(per_view(latents))  # (B V, T' h/p w/p, D)
        if c.use_time_embedding:
            tokens = tokens + self._time_tokens(time_latents, target_time_latents, latents)
        tokens = tokens + self.plucker_embed(per_view(plucker_latents.to(tokens.dtype)))

        per_view_tokens = tokens.shape[1]
        x = tokens.reshape(batch, views * per_view_tokens, c.width)  # one sequence, all views
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).reshape(
            batch * views, frames, h // c.patch_size, w // c.patch_size, c.width
        )
        raw = self.head(x.permute(0, 4, 1, 2, 3))  # (B V, 12, T, h, w)
        raw = raw.permute(0, 2, 3, 4, 1).reshape(batch, views, video_frames, h, w, RAW_CHANNELS)
        # positions in float32 whatever the network's dtype (bf16 cannot hold 500 m rays)
        poses = camtoworlds.to(torch.promote_types(camtoworlds.dtype, torch.float32))
        rays = plucker_rays(poses, Ks, width, height, grid_size=(h, w))
        origins = poses[..., None, None, :3, 3]
        return activate_gaussians(raw.to(poses.dtype), rays[..., 3:], origins, c)

    def _time_tokens(
        self, time_latents: Tensor | None, target_time_latents: Tensor | None, latents: Tensor
    ) -> Tensor:
        """Tokens of the input and target time embeddings, repeated for every view."""
        batch, views, frames, channels, h, w = latents.shape
        if time_latents is None or target_time_latents is None:
            raise ValueError(
                "the dynamic Lyra-1 decoder needs time_latents and target_time_latents"
            )
        if tuple(time_latents.shape) != (batch, frames, channels, h, w):
            raise ValueError(
                f"time_latents must be {(batch, frames, channels, h, w)}, "
                f"got {tuple(time_latents.shape)}"
            )
        if tuple(target_time_latents.shape) != (batch, 1, channels, h, w):
            raise ValueError(
                f"target_time_latents must be {(batch, 1, channels, h, w)}, "
                f"got {tuple(target_time_latents.shape)}"
            )
        dtype = self.patch_embed.proj.weight.dtype
        inputs = self.time_embed(time_latents.to(dtype).transpose(1, 2))
        target = target_time_latents.to(dtype).expand(batch, frames, channels, h, w)
        tokens = inputs + self.target_time_embed(target.transpose(1, 2))  # (B, N, D)
        return tokens.repeat_interleave(views, dim=0)  # (B V, N, D), batch-major like latents


def build_decoder(config: LyraDecoderConfig) -> LyraDecoder | Lyra1Decoder:
    """The decoder class that ``config.architecture`` names, with fresh weights."""
    return Lyra1Decoder(config) if config.architecture == "lyra1" else LyraDecoder(config)


def load_decoder(
    folder: str | os.PathLike[str], device: torch.device | str | None = None
) -> LyraDecoder | Lyra1Decoder:
    """Load a decoder folder of either architecture (``config.json`` says which).

    Raises:
        CheckpointError: as :meth:`LyraDecoder.from_pretrained`.
    """
    import json
    from pathlib import Path

    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        data = None  # from_pretrained reports it
    lyra1 = isinstance(data, dict) and data.get("architecture") == "lyra1"
    return (Lyra1Decoder if lyra1 else LyraDecoder).from_pretrained(folder, device)


# ------------------------------------------------------------------ conditioning signals


def time_embedding(frame_times: Tensor, target_time: float | Tensor) -> tuple[Tensor, Tensor]:
    """Lyra-1's time embedding of the input frames and of the target time.

    The times (frame indices or seconds) are min-max normalised over the inputs and the target
    together, then embedded as ``[t, cos t, sin t]``.

    Args:
        frame_times: (T,) times of the input video frames.
        target_time: the time at which the Gaussians are wanted (within the inputs' range).

    Returns:
        (T, 3) input embeddings and (1, 3) target embedding, float32.
    """
    times = torch.cat([frame_times.reshape(-1).float(), torch.as_tensor(target_time).reshape(1)])
    span = times.max() - times.min()
    t = (times - times.min()) / span if span > 0 else torch.zeros_like(times)
    embedded = torch.stack([t, torch.cos(t), torch.sin(t)], dim=-1)
    return embedded[:-1], embedded[-1:]


def encode_time(vae, embeddings: Tensor, height: int, width: int, batch_size: int = 1) -> Tensor:
    """VAE-encode time embeddings painted as constant images (Lyra-1: ``x * 2 - 1``).

    Args:
        vae: a :class:`~lyra_core.models.vae.VideoVAE`.
        embeddings: (B, T, 3) per-frame embeddings (:func:`time_embedding`); T = 1 for a target.
        height, width: frame size in pixels.
        batch_size: videos encoded at once (bounds memory).

    Returns:
        (B, T', C, h, w) raw latents.
    """
    b, t, _ = embeddings.shape
    video = embeddings[:, :, None, None, :].expand(b, t, height, width, 3) * 2.0 - 1.0
    return vae.encode_raw(video, batch_size=batch_size)


def encode_plucker(
    vae, camtoworlds: Tensor, Ks: Tensor, height: int, width: int, batch_size: int = 1
) -> Tensor:
    """VAE-encode the full-resolution Plucker rays of every view (Lyra-1's 32-channel input).

    The rays ``(o x d, d)`` of each video frame (:func:`~lyra_core.geometry.cameras.plucker_rays`)
    are split into their two 3-channel halves; each half is encoded as a video, as is (no
    rescaling), one view at a time, and the two latents concatenated along channels.

    Args:
        vae: a :class:`~lyra_core.models.vae.VideoVAE`.
        camtoworlds: (B, V, T, 4, 4) camera of every video frame.
        Ks: (B, V, T, 3, 3) intrinsics at ``width x height``.
        height, width: frame size in pixels.
        batch_size: videos encoded at once.

    Returns:
        (B, V, T', 2C, h, w) raw latents.
    """
    batch, views = camtoworlds.shape[:2]
    encoded = []
    for b in range(batch):
        for v in range(views):
            rays = plucker_rays(camtoworlds[b, v].float(), Ks[b, v], width, height)  # (T,H,W,6)
            halves = torch.stack([rays[..., :3], rays[..., 3:]])  # (2, T, H, W, 3)
            latents = vae.encode_raw(halves, batch_size=batch_size)  # (2, T', C, h, w)
            encoded.append(torch.cat([latents[0], latents[1]], dim=1))
    return torch.stack(encoded).reshape(batch, views, *encoded[0].shape)
