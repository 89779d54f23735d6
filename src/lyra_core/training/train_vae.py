"""Train the small video VAE the shipped student reads latents from:
``lyra train-vae --config config/vae_tiny.yaml``.

Lyra reads the latents of NVIDIA's Cosmos tokenizer; its weights cannot be downloaded here, so
the project's VAE is a small Cosmos-architecture one (:meth:`VideoVAE.tiny`: 8x time, 8x space,
16 channels by default; ``architecture`` overrides its arguments) trained on this project's
procedural data: the trajectory videos of the training scenes, both the scene renders (what the
teacher will generate) and the 3D-cache renders (what the student reads today), with an L1
reconstruction loss (Cosmos' continuous tokenizer is a plain autoencoder, no KL term). After
training, the per-channel latent mean and standard deviation over training videos are written
into the VAE's config (``latents_mean``, ``latents_std``) so :meth:`VideoVAE.encode` returns
normalised latents.

Outputs in ``out_dir``: ``train_config.yaml``, ``log.jsonl``, ``checkpoints/step_XXXXXXX/``
(``vae/`` + ``trainer.pt``; training resumes from the newest), ``validation/step_XXXXXXX.png``
(frames over their reconstructions), and at the end ``vae/`` (the final diffusers folder with
latent statistics) and ``report.json`` (reconstruction PSNR on the validation scenes).

The loop (seeding, accelerate, resume, schedule, logging, cadences) is
:class:`lyra_core.training.trainer.Trainer`; this module is the VAE's :class:`VAETask`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_core.data.format import list_scenes, load_scene
from lyra_core.evaluation.metrics import psnr
from lyra_core.models.vae import VideoVAE
from lyra_core.training.config import (
    config_from_args,
    load_yaml_dataclass,
    training_parser,
)
from lyra_core.training.trainer import Trainer, TrainingTask
from lyra_core.utils.errors import CheckpointError, ConfigError, DataError, run_command
from lyra_core.utils.media import contact_sheet, to_uint8, write_png, write_text

VAE_FOLDER = "vae"


@dataclass
class VAETrainConfig:
    """VAE training settings (the YAML file's keys)."""

    data_dir: str = "data/procedural"
    out_dir: str = "outputs/vae_tiny"
    steps: int = 1500
    batch_size: int = 4  # videos per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50  # then cosine decay to 10 % of lr
    grad_clip: float = 1.0
    cache_fraction: float = 0.5  # share of training videos that are 3D-cache renders
    stats_videos: int = 256  # training videos the latent statistics are measured on
    val_videos: int = 32  # validation videos the reported PSNR averages over
    mixed_precision: str = "no"
    log_every: int = 10
    val_every: int = 250
    save_every: int = 250
    seed: int = 0
    architecture: dict = field(default_factory=dict)  # AutoencoderKLCosmos args (VideoVAE.tiny)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> VAETrainConfig:
        return load_yaml_dataclass(cls, path)


def scene_videos(scene_dir: Path, kind: str) -> Tensor:
    """The six trajectory videos of a scene as (6, N, H, W, 3) float in [0, 1].

    ``kind`` is ``"rgb"`` (scene renders) or ``"cache"`` (3D-cache renders).
    """
    sample = load_scene(scene_dir)
    attribute = {"rgb": "rgb", "cache": "cache_rgb"}[kind]
    return torch.stack([getattr(v, attribute) for v in sample.trajectories.values()]).float() / 255


def sample_batch(scenes: list[Path], config: VAETrainConfig, rng: torch.Generator) -> Tensor:
    """``batch_size`` random trajectory videos (B, N, H, W, 3) from random scenes."""
    videos = []
    for _ in range(config.batch_size):
        scene = scenes[int(torch.randint(len(scenes), (1,), generator=rng))]
        kind = "cache" if float(torch.rand((), generator=rng)) < config.cache_fraction else "rgb"
        pool = scene_videos(scene, kind)
        videos.append(pool[int(torch.randint(len(pool), (1,), generator=rng))])
    return torch.stack(videos)


def _fixed_videos(scenes: list[Path], count: int) -> list[tuple[str, Tensor]]:
    """A deterministic list of ``count`` (kind, (N, H, W, 3)) videos cycling over scenes,
    trajectories and both kinds."""
    videos: list[tuple[str, Tensor]] = []
    for index, scene in enumerate(scenes):
        for kind in ("rgb", "cache"):
            pool = scene_videos(scene, kind)
            videos.append((kind, pool[index % len(pool)]))
            if len(videos) == count:
                return videos
    return videos


def reconstruction_loss(vae: VideoVAE, videos: Tensor) -> Tensor:
    """Mean L1 between (B, N, H, W, 3) videos in [-1, 1] units and their reconstructions."""
    video = videos.permute(0, 4, 1, 2, 3) * 2.0 - 1.0
    latents = vae.vae.encode(video).latent_dist.mode()
    return (vae.vae.decode(latents).sample - video).abs().mean()


@torch.no_grad()
def reconstruct(vae: VideoVAE, video: Tensor) -> Tensor:
    """(N, H, W, 3) -> its reconstruction through normalised latents, same shape."""
    return vae.decode(vae.encode(video[None]))[0]


@torch.no_grad()
def reconstruction_psnr(vae: VideoVAE, videos: list[tuple[str, Tensor]]) -> dict[str, float]:
    """Mean reconstruction PSNR (dB) per kind and over all videos."""
    scores: dict[str, list[float]] = {"rgb": [], "cache": []}
    for kind, video in videos:
        scores[kind].append(float(psnr(reconstruct(vae, video), video).mean()))
    every = scores["rgb"] + scores["cache"]
    report = {f"psnr_{kind}": sum(v) / len(v) for kind, v in scores.items() if v}
    report["psnr"] = sum(every) / len(every)
    return report


@torch.no_grad()
def latent_statistics(vae: VideoVAE, videos: list[tuple[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation (C,) of the raw latents of ``videos``."""
    latents = [
        vae.vae.encode(video[None].permute(0, 4, 1, 2, 3) * 2.0 - 1.0).latent_dist.mode()
        for _, video in videos
    ]
    flat = torch.cat([z.transpose(0, 1).reshape(z.shape[1], -1) for z in latents], dim=1)
    return flat.mean(dim=1), flat.std(dim=1).clamp_min(1e-6)


def with_latent_statistics(vae: VideoVAE, mean: Tensor, std: Tensor) -> VideoVAE:
    """A :class:`VideoVAE` over the same weights whose config stores ``mean``/``std``."""
    vae.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    return VideoVAE(vae.vae)


def _write_validation(vae: VideoVAE, video: Tensor, path: Path) -> None:
    """First, middle and last frame of a video over their reconstructions."""
    recon = reconstruct(vae, video)
    picks = [0, len(video) // 2, len(video) - 1]
    sheet = contact_sheet(
        [[to_uint8(video[i]) for i in picks], [to_uint8(recon[i]) for i in picks]],
        ["video", "VAE"],
    )
    write_png(path, sheet)


class VAETask(TrainingTask):
    """Reconstruction training of the video VAE: each step encodes and decodes ``batch_size``
    random training videos (L1); validation reports reconstruction PSNR on the first 8 fixed
    validation videos and writes a frame grid of the first."""

    name = "train vae"
    loss_key = "l1"
    validate_at_end = True

    def __init__(
        self,
        config: VAETrainConfig,
        vae: VideoVAE,
        train_scenes: list[Path],
        val_videos: list[tuple[str, Tensor]],
        device: torch.device,
    ) -> None:
        self.config = config
        self.vae = vae
        self.model = vae
        self.train_scenes = train_scenes
        self.val_videos = val_videos
        self.device = device

    def loss(self, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        videos = sample_batch(self.train_scenes, self.config, rng).to(self.device)
        # the VAE itself, not accelerate's wrapper: the loss calls its encoder and decoder
        return reconstruction_loss(self.vae, videos), {}

    def validate(self, model: nn.Module, step: int) -> dict[str, float]:
        path = Path(self.config.out_dir) / "validation" / f"step_{step:07d}.png"
        scores = reconstruction_psnr(model, self.val_videos[:8])
        _write_validation(model, self.val_videos[0][1], path)
        return {f"val_{k}": v for k, v in scores.items()}

    def save(self, folder: Path, model: nn.Module) -> None:
        model.save_pretrained(folder / VAE_FOLDER)

    def load(self, folder: Path) -> None:
        saved = VideoVAE.from_pretrained(folder / VAE_FOLDER)
        try:
            self.vae.vae.load_state_dict(saved.vae.state_dict())
        except RuntimeError as err:
            ours = dict(self.vae.vae.config)
            differ = [
                f"{k} {v} there, {ours[k]} here"
                for k, v in saved.vae.config.items()
                if k in ours and not k.startswith("_") and ours[k] != v
            ]
            raise CheckpointError(
                f"{folder / VAE_FOLDER} does not fit this run's VAE "
                f"({'; '.join(differ) or 'other weights'})"
            ) from err


def train_vae(config: VAETrainConfig) -> dict:
    """Run (or resume) VAE training; returns the final report (also in ``report.json``).

    Raises:
        DataError: no training or no validation scenes.
        ConfigError: ``architecture`` arguments the VAE does not take.
        CheckpointError: a checkpoint to resume from that cannot be loaded.
    """
    train_scenes = list_scenes(Path(config.data_dir) / "train")
    val_scenes = list_scenes(Path(config.data_dir) / "val")
    if not train_scenes or not val_scenes:
        raise DataError(f"need train/ and val/ scenes under {config.data_dir}")
    trainer = Trainer(config)
    try:
        vae = VideoVAE.tiny(**config.architecture)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"architecture {config.architecture}: {err}") from err
    val_videos = _fixed_videos(val_scenes, config.val_videos)
    vae = trainer.fit(VAETask(config, vae, train_scenes, val_videos, trainer.device))
    return finalize(vae.eval(), train_scenes, val_videos, config)


def finalize(
    vae: VideoVAE,
    train_scenes: list[Path],
    val_videos: list[tuple[str, Tensor]],
    config: VAETrainConfig,
) -> dict:
    """Measure latent statistics, save ``out_dir/vae`` and write ``report.json``."""
    out_dir = Path(config.out_dir)
    mean, std = latent_statistics(vae, _fixed_videos(train_scenes, config.stats_videos))
    vae = with_latent_statistics(vae, mean, std)
    vae.save_pretrained(out_dir / VAE_FOLDER)
    first = val_videos[0][1]
    report = {
        "steps": config.steps,
        "train_scenes": len(train_scenes),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "video_shape": list(first.shape),
        "latent_shape": list(vae.encode(first[None]).shape[1:]),
        "val_videos": len(val_videos),
        **{f"val_{k}": v for k, v in reconstruction_psnr(vae, val_videos).items()},
    }
    write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """``lyra train-vae``: returns 0, or 2 after one line on stderr for an expected failure."""
    args = training_parser("lyra train-vae", __doc__).parse_args(argv)

    def command() -> int:
        print(json.dumps(train_vae(config_from_args(VAETrainConfig, args)), indent=2))
        return 0

    return run_command("lyra train-vae", command)


if __name__ == "__main__":
    raise SystemExit(main())
