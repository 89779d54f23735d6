"""The tiny student decoder with Lyra-1's time conditioning (the dynamic student's network).

:class:`DynamicLyraDecoder` is :class:`~lyra_core.models.decoder.LyraDecoder` (per-pixel
Gaussians for every latent frame of every view) plus Lyra-1's time conditioning
(:mod:`lyra_core.models.lyra1`):

- the input frame times and the ONE target time of the forward pass are min-max normalised
  to [0, 1] and embedded as ``[t, cos t, sin t]`` (:func:`~lyra_core.models.lyra1.
  time_embedding`), painted as constant images and encoded by the student's video VAE
  (:func:`~lyra_core.models.lyra1.encode_time`): input-time latents (B, T', C, h, w) and a
  target-time latent (B, 1, C, h, w), repeated over the T' latent frames;
- two zero-initialised patch embeddings, ``time_embed`` (inputs) and ``target_time_embed``
  (target), whose sum is added to every view's tokens with the Plucker embedding, so a decoder
  loaded from a static student starts out computing exactly what the static one does.

The patch embeddings are a Conv3d (patch 1 x p x p) without LayerNorm, like this decoder's
Plucker embedding (Lyra-1 puts a LayerNorm after its zero-initialised convolutions, whose gain
at zero input is ``1 / sqrt(eps)``).

Lyra-1's own architecture (:class:`~lyra_core.models.lyra1.Lyra1Decoder`,
``use_time_embedding=True``) emits one Gaussian per 8 x 8-pixel block per video frame: 48 per
frame at the tiny student's 64 x 48, too coarse to be useful at this size, so the tiny
dynamic student keeps this package's per-pixel head.

The flag lives in the config's ``extra`` (``{"time_embedding": true}``), because
:class:`~lyra_core.models.decoder.LyraDecoderConfig` reserves ``use_time_embedding`` for
``architecture="lyra1"``; a dynamic decoder folder does not load as a static
:class:`LyraDecoder` (its weights have two more modules).
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from lyra_core.models.decoder import DecoderOutput, LyraDecoder, LyraDecoderConfig, PatchEmbed

__all__ = ["TIME_EMBEDDING_KEY", "DynamicLyraDecoder", "dynamic_config", "is_dynamic_config"]

TIME_EMBEDDING_KEY = "time_embedding"
"""Key of ``LyraDecoderConfig.extra`` that marks a dynamic student decoder."""


def dynamic_config(config: LyraDecoderConfig) -> LyraDecoderConfig:
    """A copy of a student decoder config marked as dynamic (``extra["time_embedding"]``)."""
    return replace(config, extra={**config.extra, TIME_EMBEDDING_KEY: True})


def is_dynamic_config(config: LyraDecoderConfig) -> bool:
    """Whether a config describes a :class:`DynamicLyraDecoder`."""
    return bool(config.extra.get(TIME_EMBEDDING_KEY, False))


class DynamicLyraDecoder(LyraDecoder):
    """Latents of V trajectories + their cameras + input and target times -> per-pixel 3D
    Gaussians of the scene at the target time.

    Args:
        config: a ``"student"`` decoder config; it is marked dynamic (:func:`dynamic_config`)
            if it is not already.
    """

    def __init__(self, config: LyraDecoderConfig) -> None:
        config = config if is_dynamic_config(config) else dynamic_config(config)
        super().__init__(config)
        c = config
        self.time_embed = PatchEmbed(
            c.latent_channels, c.width, c.patch_size, norm=False, zero_init=True
        )
        self.target_time_embed = PatchEmbed(
            c.latent_channels, c.width, c.patch_size, norm=False, zero_init=True
        )
        self._pending_time_tokens: Tensor | None = None
        # The parent adds the Plucker tokens to the latent tokens; the time tokens ride along.
        self.plucker_embed.register_forward_hook(self._add_time_tokens)

    def _add_time_tokens(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        del module, args
        if self._pending_time_tokens is None:
            raise RuntimeError("DynamicLyraDecoder must be called with its time latents")
        return output + self._pending_time_tokens.to(output.dtype)

    def time_tokens(self, time_latents: Tensor, target_time_latents: Tensor, views: int) -> Tensor:
        """Tokens of the input and target times, repeated for every view.

        Args:
            time_latents: (B, T', C, h, w) latents of the input frames' time embedding.
            target_time_latents: (B, 1, C, h, w) latent of the target time.
            views: V.

        Returns:
            (B V, T' h/p w/p, D), batch-major like the latent tokens.
        """
        batch, frames = time_latents.shape[:2]
        if target_time_latents.shape[:2] != (batch, 1):
            raise ValueError(
                f"target_time_latents must be ({batch}, 1, C, h, w), got "
                f"{tuple(target_time_latents.shape)}"
            )
        dtype = self.patch_embed.proj.weight.dtype
        inputs = self.time_embed(time_latents.to(dtype).transpose(1, 2))
        target = target_time_latents.to(dtype).expand(-1, frames, -1, -1, -1)
        tokens = inputs + self.target_time_embed(target.transpose(1, 2))
        return tokens.repeat_interleave(views, dim=0)

    def forward(  # type: ignore[override]
        self,
        latents: Tensor,
        camtoworlds: Tensor,
        Ks: Tensor,
        time_latents: Tensor,
        target_time_latents: Tensor,
    ) -> DecoderOutput:
        """Decode at one target time.

        Args:
            latents, camtoworlds, Ks: as :meth:`LyraDecoder.forward` ((B, V, T', C, h, w),
                (B, V, T', 4, 4), (B, V, T', 3, 3)).
            time_latents: (B, T', C, h, w) raw VAE latents of the input frames' times.
            target_time_latents: (B, 1, C, h, w) raw VAE latent of the target time.

        Returns:
            Per-pixel Gaussians with leading dims (B, V, T', H, W), all of the scene at the
            target time.
        """
        batch, views, frames = latents.shape[:3]
        if tuple(time_latents.shape) != (batch, frames, *latents.shape[3:]):
            raise ValueError(
                f"time_latents must be {(batch, frames, *latents.shape[3:])}, got "
                f"{tuple(time_latents.shape)}"
            )
        self._pending_time_tokens = self.time_tokens(time_latents, target_time_latents, views)
        try:
            return super().forward(latents, camtoworlds, Ks)
        finally:
            self._pending_time_tokens = None
