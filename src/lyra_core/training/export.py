"""Assemble a student checkpoint folder from a training run:
``lyra export --run outputs/train_tiny --out FOLDER``.

A run (:mod:`lyra_core.training.train_student`) saves decoder checkpoints only; the VAE it read
latents from is
named in its ``train_config.yaml``. The exported folder (:meth:`LyraStudent.save_pretrained`)
bundles both with a :class:`StudentConfig` read from the training data's ``meta.json`` (input
size, frames, trajectories) and a record of the training (settings, step, last validation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from lyra_core.data.format import list_scenes, load_scene
from lyra_core.models.decoder import LyraDecoder
from lyra_core.pipelines.student import LyraStudent, StudentConfig
from lyra_core.training.checkpoints import checkpoint_step, list_checkpoints
from lyra_core.training.train_student import TrainConfig, build_vae


def run_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint folder of ``step`` (default: the newest)."""
    folders = list_checkpoints(run_dir)
    if step is not None:
        folders = [f for f in folders if checkpoint_step(f) == step]
    if not folders:
        which = "any step" if step is None else f"step {step}"
        raise FileNotFoundError(f"{run_dir}: no checkpoint of {which}")
    return folders[-1]


def last_validation(run_dir: Path, step: int) -> dict:
    """The last log record with validation metrics at or before ``step``."""
    log = run_dir / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    validated = [r for r in records if "val_psnr" in r and r["step"] <= step]
    return {k: v for k, v in validated[-1].items() if k.startswith("val_")} if validated else {}


def student_config_from_data(data_dir: Path, training: dict) -> StudentConfig:
    """Input size, frames and trajectories of the training data (its first scene's meta)."""
    scenes = list_scenes(data_dir / "train")
    if not scenes:
        raise FileNotFoundError(f"no training scenes in {data_dir / 'train'}")
    meta = load_scene(scenes[0]).meta
    return StudentConfig(
        width=int(meta["width"]),
        height=int(meta["height"]),
        num_frames=int(meta["num_frames"]),
        movement_scale=float(meta["movement_scale"]),
        trajectory_names=list(meta["trajectory_names"]),
        training=training,
    )


def export_student(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Write the student folder of a run's checkpoint (newest by default) to ``out``."""
    config = TrainConfig(**yaml.safe_load((run_dir / "train_config.yaml").read_text()))
    checkpoint = run_checkpoint(run_dir, step)
    done = checkpoint_step(checkpoint)
    student = LyraStudent(build_vae(config), LyraDecoder.from_pretrained(checkpoint / "decoder"))
    training = {
        "steps": done,
        "settings": {k: v for k, v in vars(config).items() if k not in ("out_dir",)},
        "train_scenes": len(list_scenes(Path(config.data_dir) / "train")),
        **last_validation(run_dir, done),
    }
    vae_report = Path(config.vae).parent / "report.json"  # written by lyra train-vae
    if vae_report.is_file():
        training["vae"] = json.loads(vae_report.read_text())
    return student.save_pretrained(out, student_config_from_data(Path(config.data_dir), training))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyra export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training output folder")
    parser.add_argument("--out", type=Path, required=True, help="student checkpoint folder")
    parser.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
    args = parser.parse_args(argv)
    print(f"student checkpoint written to {export_student(args.run, args.out, args.step)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
