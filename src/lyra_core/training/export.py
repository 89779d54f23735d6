"""Assemble a student checkpoint folder from a training run:
``lyra export --run outputs/train_tiny --out FOLDER``.

A run (:mod:`lyra_core.training.train_student`) saves decoder checkpoints only; the VAE it read
latents from is named in its ``train_config.yaml``. The exported folder
(:meth:`LyraStudent.save_pretrained`) bundles both with a :class:`StudentConfig` read from the
training data's ``meta.json`` (input size, frames, trajectories) and a record of the training:
the settings file (``config``), this run's ``steps``, ``cumulative_steps`` and ``parents`` (the
earlier runs it continued, :mod:`lyra_core.training.lineage`), the settings, the last validation
and the VAE's report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lyra_core.data.format import list_scenes, load_scene
from lyra_core.models.decoder import LyraDecoder
from lyra_core.pipelines.student import DECODER_FOLDER, LyraStudent, StudentConfig
from lyra_core.training.checkpoints import checkpoint_step, list_checkpoints
from lyra_core.training.config import load_yaml_dataclass
from lyra_core.training.lineage import training_lineage
from lyra_core.training.train_student import TrainConfig, build_vae
from lyra_core.training.trainer import CONFIG_COPY_NAME, LOG_NAME
from lyra_core.utils.errors import CheckpointError, DataError, run_command


def run_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint folder of ``step`` (default: the newest).

    Raises:
        CheckpointError: the run has no (complete) checkpoint of that step.
    """
    folders = list_checkpoints(run_dir)
    if step is not None:
        folders = [f for f in folders if checkpoint_step(f) == step]
    if not folders:
        which = "any step" if step is None else f"step {step}"
        raise CheckpointError(f"{run_dir}: no checkpoint of {which}")
    return folders[-1]


def last_validation(run_dir: Path, step: int) -> dict:
    """The last log record with validation metrics at or before ``step``."""
    log = run_dir / LOG_NAME
    lines = log.read_text().splitlines() if log.exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    validated = [r for r in records if "val_psnr" in r and r["step"] <= step]
    return {k: v for k, v in validated[-1].items() if k.startswith("val_")} if validated else {}


def student_config_from_data(data_dir: Path, training: dict) -> StudentConfig:
    """Input size, frames and trajectories of the training data (its first scene's meta).

    Raises:
        DataError: no training scenes.
    """
    scenes = list_scenes(data_dir / "train")
    if not scenes:
        raise DataError(f"no training scenes in {data_dir / 'train'}")
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
    """Write the student folder of a run's checkpoint (newest by default) to ``out``.

    Raises:
        CheckpointError: ``run_dir`` is not a training run, has no such checkpoint, or its
            decoder or VAE cannot be loaded.
        ConfigError: the run's ``train_config.yaml`` is not a student training's settings.
        DataError: the run's training data is gone.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_COPY_NAME).is_file():
        raise CheckpointError(f"{run_dir}: not a training run (no {CONFIG_COPY_NAME})")
    config = load_yaml_dataclass(TrainConfig, run_dir / CONFIG_COPY_NAME)
    checkpoint = run_checkpoint(run_dir, step)
    done = checkpoint_step(checkpoint)
    decoder = LyraDecoder.from_pretrained(checkpoint / DECODER_FOLDER)
    student = LyraStudent(build_vae(config), decoder)
    lineage = training_lineage(run_dir, done)
    training = {
        "config": lineage["config"],
        "steps": done,
        "cumulative_steps": lineage["cumulative_steps"],
        "parents": lineage["parents"],
        "settings": {k: v for k, v in vars(config).items() if k not in ("out_dir",)},
        "train_scenes": len(list_scenes(Path(config.data_dir) / "train")),
        **last_validation(run_dir, done),
    }
    vae_report = Path(config.vae).parent / "report.json"  # written by lyra train-vae
    if vae_report.is_file():
        training["vae"] = json.loads(vae_report.read_text())
    return student.save_pretrained(out, student_config_from_data(Path(config.data_dir), training))


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra export``."""
    parser = argparse.ArgumentParser(prog="lyra export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="training output folder (the out_dir of a run)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="student checkpoint folder to write (replaced)"
    )
    parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step to export (default: the newest)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra export``: returns 0, or 2 after one line on stderr for an expected failure."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        folder = export_student(args.run, args.out, args.step)
        print(f"student checkpoint written to {folder}")
        return 0

    return run_command("lyra export", command)


if __name__ == "__main__":
    raise SystemExit(main())
