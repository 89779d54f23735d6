"""Train the small video VAE the embedded student reads latents from:
``lyra train-vae --config config/vae_tiny.yaml``.

Lyra reads the latents of NVIDIA's Cosmos tokenizer; its weights cannot be downloaded here, so
the embedded default is a small Cosmos-architecture VAE (:meth:`VideoVAE.tiny`: 8x time, 8x space,
16 channels) trained on this project's procedural data: the trajectory videos of the training
scenes, both the scene renders (what the teacher will generate) and the 3D-cache renders (what
the student reads today), with an L1 reconstruction loss (Cosmos' continuous tokenizer is a
plain autoencoder, no KL term). After training, the per-channel latent mean and standard
deviation over training videos are written into the VAE's config (``latents_mean``,
``latents_std``) so :meth:`VideoVAE.encode` returns normalised latents.

Outputs in ``out_dir``: ``log.jsonl``, ``checkpoints/step_XXXXXXX/`` (``vae/`` + ``trainer.pt``;
training resumes from the newest), ``validation/step_XXXXXXX.png`` (frames over their
reconstructions), and at the end ``vae/`` (the final diffusers folder with latent statistics)
and ``report.json`` (reconstruction PSNR on the validation scenes).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from lyra_core.data.format import list_scenes, load_scene
from lyra_core.evaluation.metrics import psnr
from lyra_core.models.vae import VideoVAE
from lyra_core.training.checkpoints import (
    checkpoint_folder,
    latest_checkpoint,
    load_trainer_state,
    save_trainer_state,
)
from lyra_core.training.config import load_yaml_dataclass, parse_training_args
from lyra_core.training.schedules import set_learning_rate, warmup_cosine
from lyra_core.utils.media import contact_sheet, to_uint8, write_png, write_text


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


def _save_checkpoint(out_dir: Path, step: int, vae: VideoVAE, optimizer) -> None:
    folder = checkpoint_folder(out_dir, step)
    vae.save_pretrained(folder / "vae")
    save_trainer_state(folder, step, optimizer)


def _resume(out_dir: Path, vae: VideoVAE, optimizer) -> int:
    folder = latest_checkpoint(out_dir)
    if folder is None:
        return 0
    vae.vae.load_state_dict(VideoVAE.from_pretrained(folder / "vae").vae.state_dict())
    return load_trainer_state(folder, optimizer)


def train_vae(config: VAETrainConfig) -> dict:
    """Run (or resume) VAE training; returns the final report (also in ``report.json``)."""
    from accelerate import Accelerator

    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    train_scenes = list_scenes(Path(config.data_dir) / "train")
    val_scenes = list_scenes(Path(config.data_dir) / "val")
    if not train_scenes or not val_scenes:
        raise FileNotFoundError(f"need train/ and val/ scenes under {config.data_dir}")
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    vae = VideoVAE.tiny(**config.architecture).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = _resume(out_dir, vae, optimizer)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_config.yaml").write_text(yaml.safe_dump(asdict(config)))
    val_videos = _fixed_videos(val_scenes, config.val_videos)

    rng = torch.Generator().manual_seed(config.seed + start)
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train vae")
    with (out_dir / "log.jsonl").open("a") as log:
        for step in progress:
            began = time.perf_counter()
            set_learning_rate(
                optimizer, config.lr * warmup_cosine(step, config.steps, config.warmup_steps)
            )
            videos = sample_batch(train_scenes, config, rng).to(accelerator.device)
            with accelerator.autocast():
                loss = reconstruction_loss(accelerator.unwrap_model(vae), videos)
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(vae.parameters(), config.grad_clip)
            optimizer.step()
            done = step + 1
            record = {
                "step": done,
                "l1": float(loss.detach()),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - began, 3),
            }
            progress.set_postfix(l1=f"{record['l1']:.4f}")
            model = accelerator.unwrap_model(vae)
            if done % config.val_every == 0 or done == config.steps:
                model.eval()
                record |= {
                    f"val_{k}": v for k, v in reconstruction_psnr(model, val_videos[:8]).items()
                }
                _write_validation(
                    model, val_videos[0][1], out_dir / "validation" / f"step_{done:07d}.png"
                )
                model.train()
            if done % config.log_every == 0 or "val_psnr" in record:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if done % config.save_every == 0 or done == config.steps:
                _save_checkpoint(out_dir, done, model, optimizer)
    return finalize(accelerator.unwrap_model(vae).eval(), train_scenes, val_videos, config)


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
    vae.save_pretrained(out_dir / "vae")
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
    config = parse_training_args(VAETrainConfig, "lyra train-vae", __doc__, argv)
    print(json.dumps(train_vae(config), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
