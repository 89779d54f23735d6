"""Self-distillation training of the Lyra student: ``lyra-train --config config/train_tiny.yaml``.

One code path from one CPU to many GPUs through accelerate (``accelerate launch -m
lyra_core.train --config ...`` for several processes; bf16 with ``mixed_precision: bf16``).
Every step decodes one scene from its six trajectory videos, renders the Gaussians at
trajectory and held-out cameras and applies Lyra's loss (:func:`lyra_core.student.
distillation_loss`), with gradient clipping. Outputs in ``out_dir``:

- ``log.jsonl``: one line per logged step (loss terms, learning rate, seconds);
- ``checkpoints/step_XXXXXXX/``: ``decoder/`` (config.json + model.safetensors) and
  ``trainer.pt`` (optimizer, step); training resumes from the newest one;
- ``validation/step_XXXXXXX.png``: held-out targets (top) over renders (bottom), with PSNR/SSIM
  in the log.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from .cameras import Cameras
from .data.format import list_scenes, load_scene
from .losses import LossWeights
from .media import contact_sheet, to_uint8, write_png
from .metrics import psnr, ssim
from .models.decoder import LyraDecoder, LyraDecoderConfig
from .models.vae import VideoVAE
from .rendering import render
from .student import LyraStudent, distillation_loss, scene_inputs, scene_targets


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
    loss: dict = field(default_factory=lambda: {"mse": 1.0, "perceptual": 0.0, "depth": 0.05,
                                                "opacity": 0.0})  # fmt: skip
    mixed_precision: str = "no"
    log_every: int = 10
    val_every: int = 100
    save_every: int = 100
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {unknown}")
        return cls(**data)


def build_student(config: TrainConfig) -> LyraStudent:
    vae = VideoVAE.tiny() if config.vae == "tiny" else VideoVAE.from_pretrained(config.vae)
    if config.decoder in ("tiny", "reference"):
        base = getattr(LyraDecoderConfig, config.decoder)()
        decoder = LyraDecoder(LyraDecoderConfig(**{**base.to_dict(), **config.decoder_overrides}))
    else:
        decoder = LyraDecoder.from_pretrained(config.decoder)
    return LyraStudent(vae, decoder)


def _latest_checkpoint(out_dir: Path) -> Path | None:
    steps = sorted((out_dir / "checkpoints").glob("step_*"))
    return steps[-1] if steps else None


def save_checkpoint(out_dir: Path, step: int, decoder: LyraDecoder, optimizer) -> Path:
    folder = out_dir / "checkpoints" / f"step_{step:07d}"
    decoder.save_pretrained(folder / "decoder")
    tmp = folder / "trainer.pt.tmp"
    torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, folder / "trainer.pt")
    return folder


def validate(student: LyraStudent, scene_dir: Path, out_dir: Path, step: int) -> dict:
    """Render the held-out views of a validation scene; PNG grid + PSNR/SSIM."""
    sample = load_scene(scene_dir)
    views = sample.heldout
    with torch.no_grad():
        gaussians = student(*scene_inputs(sample)).to_gaussians()
        height, width = views.rgb.shape[1:3]
        rendered = render(
            gaussians,
            Cameras(views.camtoworlds, views.Ks, width, height),
            background=tuple(sample.meta.get("background", (0, 0, 0))),
        ).rgb
    target = views.rgb.float() / 255.0
    sheet = contact_sheet([[to_uint8(t) for t in target], [to_uint8(r) for r in rendered]],
                          ["held-out", "student"])  # fmt: skip
    write_png(out_dir / "validation" / f"step_{step:07d}.png", sheet)
    quality = {"val_psnr": float(psnr(rendered, target).mean())}
    if min(height, width) >= 11:  # SSIM's window
        quality["val_ssim"] = float(ssim(rendered, target).mean())
    return quality


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; returns the output folder."""
    from accelerate import Accelerator

    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    train_scenes = list_scenes(Path(config.data_dir) / "train")
    val_scenes = list_scenes(Path(config.data_dir) / "val")
    if not train_scenes:
        raise FileNotFoundError(f"no training scenes in {Path(config.data_dir) / 'train'}")
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    student = build_student(config)
    optimizer = torch.optim.AdamW(student.decoder.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)  # fmt: skip
    start = 0
    resume = _latest_checkpoint(out_dir)
    if resume is not None:
        saved = LyraDecoder.from_pretrained(resume / "decoder")
        student.decoder.load_state_dict(saved.state_dict())
        state = torch.load(resume / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    student.decoder, optimizer = accelerator.prepare(student.decoder, optimizer)
    student.vae.to(accelerator.device)
    weights = LossWeights(**config.loss)
    out_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (out_dir / "train_config.yaml").write_text(yaml.safe_dump(asdict(config)))

    rng = torch.Generator().manual_seed(config.seed + start)
    log = (out_dir / "log.jsonl").open("a")
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps,
                    desc="train", disable=not accelerator.is_main_process)  # fmt: skip
    for step in progress:
        began = time.perf_counter()
        scene = train_scenes[int(torch.randint(len(train_scenes), (1,), generator=rng))]
        sample = load_scene(scene)
        with accelerator.autocast():
            loss, terms = distillation_loss(student, sample,
                                            scene_targets(sample, config.frames_per_trajectory),
                                            weights)  # fmt: skip
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(student.decoder.parameters(), config.grad_clip)
        optimizer.step()
        done = step + 1
        record = {"step": done, "loss": float(loss.detach()), **terms,
                  "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - began, 3)}  # fmt: skip
        progress.set_postfix(loss=f"{record['loss']:.4f}")
        if accelerator.is_main_process and val_scenes and done % config.val_every == 0:
            record |= validate(student, val_scenes[0], out_dir, done)
        if accelerator.is_main_process and (done % config.log_every == 0 or "val_psnr" in record):
            log.write(json.dumps(record) + "\n")
            log.flush()
        if accelerator.is_main_process and (done % config.save_every == 0 or done == config.steps):
            save_checkpoint(out_dir, done, accelerator.unwrap_model(student.decoder), optimizer)
    log.close()
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyra-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="training YAML")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--out-dir", help="override the output folder")
    args = parser.parse_args(argv)
    config = TrainConfig.from_yaml(args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.out_dir is not None:
        config.out_dir = args.out_dir
    print(f"training output in {train(config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
