"""The Lyra student as a pipeline: trajectory videos -> video latents -> decoder -> Gaussians,
and the self-distillation training step on a scene sample.

Like a diffusers pipeline it composes models (a frozen :class:`VideoVAE` and a trainable
:class:`LyraDecoder`) without hidden state. The student reads the videos of the six Lyra
trajectories (the 3D-cache renders for now; the teacher's generated videos once it exists) and
is supervised by RGB and depth at trajectory and held-out cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .cameras import Cameras
from .data.format import SceneSample
from .losses import LossWeights, lyra_loss
from .models.decoder import DecoderOutput, LyraDecoder
from .models.vae import VideoVAE
from .rendering import render


@dataclass
class TargetViews:
    """Supervision: N views with colour and depth.

    Attributes:
        rgb: (N, H, W, 3) float in [0, 1].
        depth: (N, H, W) meters, 0 where unknown.
        camtoworlds: (N, 4, 4); Ks: (N, 3, 3).
    """

    rgb: Tensor
    depth: Tensor
    camtoworlds: Tensor
    Ks: Tensor


class LyraStudent(nn.Module):
    """Frozen video VAE + trainable latent 3DGS decoder."""

    def __init__(self, vae: VideoVAE, decoder: LyraDecoder) -> None:
        super().__init__()
        if vae.latent_channels != decoder.config.latent_channels:
            raise ValueError(
                f"VAE latents have {vae.latent_channels} channels, the decoder expects "
                f"{decoder.config.latent_channels}"
            )
        self.vae = vae.requires_grad_(False).eval()
        self.decoder = decoder

    def latent_frame_indices(self, num_frames: int) -> Tensor:
        """Frame whose camera stands for each latent frame: 0, then the last of each group."""
        return torch.arange(self.vae.latent_frames(num_frames)) * self.vae.temporal_factor

    def forward(self, videos: Tensor, camtoworlds: Tensor, Ks: Tensor) -> DecoderOutput:
        """Decode V trajectory videos.

        Args:
            videos: (V, N, H, W, 3) frames in [0, 1] (N - 1 a multiple of the VAE's time factor).
            camtoworlds: (V, N, 4, 4) camera of every frame; Ks: (V, N, 3, 3).

        Returns:
            Per-pixel Gaussians with leading dims (1, V, T', H, W).
        """
        with torch.no_grad():
            latents = self.vae.encode(videos)  # (V, T', C, h, w)
        frames = self.latent_frame_indices(videos.shape[1]).to(videos.device)
        return self.decoder(latents[None], camtoworlds[:, frames][None], Ks[:, frames][None])


def scene_inputs(sample: SceneSample) -> tuple[Tensor, Tensor, Tensor]:
    """The student's inputs from a scene: the 3D-cache videos of the six trajectories."""
    views = list(sample.trajectories.values())
    videos = torch.stack([v.cache_rgb for v in views]).float() / 255.0
    return videos, torch.stack([v.camtoworlds for v in views]), torch.stack([v.Ks for v in views])


def scene_targets(sample: SceneSample, frames_per_trajectory: int = 1) -> TargetViews:
    """Supervision from a scene: the last ``frames_per_trajectory`` frames of every trajectory
    (what the cache cannot show) and all held-out views."""
    sets = [v for v in sample.trajectories.values()]
    pick = slice(-frames_per_trajectory, None)
    rgb = [v.rgb[pick] for v in sets] + [sample.heldout.rgb]
    depth = [v.depth[pick] for v in sets] + [sample.heldout.depth]
    poses = [v.camtoworlds[pick] for v in sets] + [sample.heldout.camtoworlds]
    Ks = [v.Ks[pick] for v in sets] + [sample.heldout.Ks]
    return TargetViews(torch.cat(rgb).float() / 255.0, torch.cat(depth), torch.cat(poses),
                       torch.cat(Ks))  # fmt: skip


def distillation_loss(
    student: LyraStudent,
    sample: SceneSample,
    targets: TargetViews,
    weights: LossWeights | None = None,
    perceptual=None,
) -> tuple[Tensor, dict[str, float]]:
    """Decode the scene, render the Gaussians at the target cameras, compare (Lyra's loss)."""
    weights = weights or LossWeights(perceptual=0.0)
    output = student(*scene_inputs(sample))
    gaussians = output.to_gaussians()
    height, width = targets.rgb.shape[1:3]
    cameras = Cameras(targets.camtoworlds, targets.Ks, width, height)
    background = tuple(sample.meta.get("background", (0.0, 0.0, 0.0)))
    rendered = render(gaussians, cameras, background=background)
    return lyra_loss(rendered.rgb, targets.rgb, rendered.depth[..., 0], targets.depth,
                     gaussians.opacities, weights, perceptual)  # fmt: skip
