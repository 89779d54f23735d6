"""Self-distillation training of the Lyra student: ``lyra-train --config config/train_tiny.yaml``.

One code path from one CPU to many GPUs through accelerate (``accelerate launch -m
lyra_core.training.train_student --config ...`` for several processes; bf16 with ``mixed_precision:
bf16``).
Every step decodes one scene from its six trajectory videos, renders the Gaussians at
trajectory and held-out cameras and applies Lyra's loss (:func:`lyra_core.pipelines.student.
distillation_loss`), with gradient clipping. Outputs in ``out_dir``:

- ``log.jsonl``: one line per logged step (loss terms, learning rate, seconds);
- ``checkpoints/step_XXXXXXX/``: ``decoder/`` (config.json + model.safetensors) and
  ``trainer.pt`` (optimizer, step); training resumes from the newest one;
- ``validation/step_XXXXXXX.png``: held-out targets (top) over renders (bottom), with PSNR,
  SSIM and the perceptual distance in the log.

The perceptual loss term and ``val_perceptual`` use the metric named by ``perceptual``
(:func:`lyra_core.models.perceptual.metric.load_perceptual`: ST-LPIPS AlexNet by default, ``none``
for none).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from lyra_core.data.format import TargetViews, list_scenes, load_scene, scene_targets
from lyra_core.evaluation.evaluate import image_metrics, render_views, student_method
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.perceptual.metric import PerceptualMetric, load_perceptual
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.student import LyraStudent
from lyra_core.training.checkpoints import (
    checkpoint_folder,
    latest_checkpoint,
    load_trainer_state,
    save_trainer_state,
)
from lyra_core.training.config import load_yaml_dataclass, parse_training_args
from lyra_core.training.distill import distillation_loss
from lyra_core.training.losses import LossWeights
from lyra_core.training.schedules import set_learning_rate, warmup_cosine
from lyra_core.utils.media import contact_sheet, to_uint8, write_png


@dataclass
class TrainConfig:
    """Training settings (the YAML file's keys)."""

    data_dir: str = "data/procedural"
    out_dir: str = "outputs/train"
    decoder: str = "tiny"  # preset name (tiny, reference) or a checkpoint folder
    decoder_overrides: dict = field(default_factory=dict)
    vae: str = "tiny"  # "tiny" or a diffusers VAE folder
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    frames_per_trajectory: int = 1
    loss: dict = field(
        default_factory=lambda: {"mse": 1.0, "perceptual": 0.0, "depth": 0.05, "opacity": 0.0}
    )
    target_views: int | None = None  # views rendered per step, drawn from the targets; None: all
    warmup_steps: int = 0  # linear warm-up, then cosine decay to 10 % of lr
    prune_ratio: float = 0.0  # least-opaque share not rendered in training (inference: 0.8)
    perceptual: str = "stlpips-alex"  # loss term (weight loss.perceptual) and val_perceptual
    mixed_precision: str = "no"
    log_every: int = 10
    val_every: int = 100
    val_scenes: int = 4  # validation scenes averaged (the PNG shows the first)
    save_every: int = 100
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        return load_yaml_dataclass(cls, path)


def build_vae(config: TrainConfig) -> VideoVAE:
    """The frozen video VAE the student reads: ``tiny`` or a diffusers folder."""
    return VideoVAE.tiny() if config.vae == "tiny" else VideoVAE.from_pretrained(config.vae)


def build_student(config: TrainConfig) -> LyraStudent:
    vae = build_vae(config)
    if config.decoder in ("tiny", "reference"):
        base = getattr(LyraDecoderConfig, config.decoder)()
        decoder = LyraDecoder(LyraDecoderConfig(**{**base.to_dict(), **config.decoder_overrides}))
    else:
        decoder = LyraDecoder.from_pretrained(config.decoder)
    return LyraStudent(vae, decoder)


def save_checkpoint(out_dir: Path, step: int, decoder: LyraDecoder, optimizer) -> Path:
    folder = checkpoint_folder(out_dir, step)
    decoder.save_pretrained(folder / "decoder")
    save_trainer_state(folder, step, optimizer)
    return folder


def validate(
    student: LyraStudent,
    scene_dirs: list[Path],
    out_dir: Path,
    step: int,
    perceptual: PerceptualMetric | None = None,
) -> dict:
    """Render the held-out views of validation scenes as inference does (pruned by the decoder's
    ``prune_ratio``): PNG grid of the first + mean ``val_psnr``, ``val_ssim`` and, with a
    metric, ``val_perceptual`` (:func:`lyra_core.evaluation.evaluate.image_metrics`)."""
    scores: dict[str, list[float]] = {}
    world = student_method(student)
    for index, scene_dir in enumerate(scene_dirs):
        sample = load_scene(scene_dir)
        rendered = render_views(world(sample), sample.heldout, sample.background)
        target = (sample.heldout.rgb.float() / 255.0).to(rendered.device)
        if index == 0:
            sheet = contact_sheet(
                [[to_uint8(t) for t in target], [to_uint8(r) for r in rendered]],
                ["held-out", "student"],
            )
            write_png(out_dir / "validation" / f"step_{step:07d}.png", sheet)
        for metric, value in image_metrics(rendered, target, perceptual).items():
            key = "perceptual" if perceptual is not None and metric == perceptual.name else metric
            scores.setdefault(f"val_{key}", []).append(value)
    return {name: sum(values) / len(values) for name, values in scores.items()}


def select_views(targets: TargetViews, count: int | None, rng: torch.Generator) -> TargetViews:
    """``count`` target views drawn without replacement (all of them for None)."""
    total = targets.rgb.shape[0]
    if count is None or count >= total:
        return targets
    index = torch.randperm(total, generator=rng)[:count]
    return TargetViews(
        targets.rgb[index], targets.depth[index], targets.camtoworlds[index], targets.Ks[index]
    )


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; returns the output folder."""
    from accelerate import Accelerator

    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    train_scenes = list_scenes(Path(config.data_dir) / "train")
    val_scenes = list_scenes(Path(config.data_dir) / "val")
    if not train_scenes:
        raise FileNotFoundError(f"no training scenes in {Path(config.data_dir) / 'train'}")
    weights = LossWeights(**config.loss)
    perceptual = load_perceptual(config.perceptual)
    if weights.perceptual and perceptual is None:
        raise ValueError(
            f"loss weight perceptual {weights.perceptual} needs a perceptual metric, "
            f"got perceptual: {config.perceptual!r}"
        )
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if perceptual is not None:
        perceptual.to(accelerator.device)
    student = build_student(config)
    optimizer = torch.optim.AdamW(
        student.decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    start = 0
    resume = latest_checkpoint(out_dir)
    if resume is not None:
        saved = LyraDecoder.from_pretrained(resume / "decoder")
        student.decoder.load_state_dict(saved.state_dict())
        start = load_trainer_state(resume, optimizer)
    student.decoder, optimizer = accelerator.prepare(student.decoder, optimizer)
    student.vae.to(accelerator.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (out_dir / "train_config.yaml").write_text(yaml.safe_dump(asdict(config)))

    perceptual_loss = perceptual.loss if perceptual is not None else None
    rng = torch.Generator().manual_seed(config.seed + start)
    log = (out_dir / "log.jsonl").open("a")
    progress = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        desc="train",
        disable=not accelerator.is_main_process,
    )
    for step in progress:
        began = time.perf_counter()
        set_learning_rate(
            optimizer, config.lr * warmup_cosine(step, config.steps, config.warmup_steps)
        )
        scene = train_scenes[int(torch.randint(len(train_scenes), (1,), generator=rng))]
        sample = load_scene(scene)
        targets = select_views(
            scene_targets(sample, config.frames_per_trajectory), config.target_views, rng
        )
        with accelerator.autocast():
            loss, terms = distillation_loss(
                student,
                sample,
                targets,
                weights,
                perceptual=perceptual_loss,
                prune_ratio=config.prune_ratio,
            )
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(student.decoder.parameters(), config.grad_clip)
        optimizer.step()
        done = step + 1
        record = {
            "step": done,
            "loss": float(loss.detach()),
            **terms,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - began, 3),
        }
        progress.set_postfix(loss=f"{record['loss']:.4f}")
        if accelerator.is_main_process and val_scenes and done % config.val_every == 0:
            record |= validate(student, val_scenes[: config.val_scenes], out_dir, done, perceptual)
        if accelerator.is_main_process and (done % config.log_every == 0 or "val_psnr" in record):
            log.write(json.dumps(record) + "\n")
            log.flush()
        if accelerator.is_main_process and (done % config.save_every == 0 or done == config.steps):
            save_checkpoint(out_dir, done, accelerator.unwrap_model(student.decoder), optimizer)
    log.close()
    return out_dir


def main(argv: list[str] | None = None) -> int:
    config = parse_training_args(TrainConfig, "lyra train", __doc__, argv)
    print(f"training output in {train(config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
