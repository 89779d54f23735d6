"""Training of Lyra's dynamic student: ``python -m lyra_core.training.train_dynamic --config
config/train_tiny_dynamic.yaml`` (``lyra train`` with a dynamic config once wired).

Every step draws one training scene of :mod:`lyra_core.data.dynamic` and ONE target time (a
frame time, uniform over the T frames, as Lyra-1), decodes the six 4D-cache trajectory videos
with all T frames in at that time (:class:`~lyra_core.pipelines.dynamic_student.
DynamicLyraStudent`), renders the Gaussians at ``target_views`` of Lyra's 12 targets at that time
(the six trajectories at the target step and the six flipped views; :func:`~lyra_core.data.
dynamic.dynamic_targets`) and applies Lyra's loss (:func:`lyra_core.training.losses.lyra_loss`).

The run starts from a student folder (``student``): a static student (``shipped``: the package's
tiny student) becomes a dynamic one with every weight kept and zero time embeddings
(:meth:`DynamicLyraStudent.from_static`), so it starts out equal to the static student; a dynamic
student folder continues. The VAE stays frozen. The loop is :class:`lyra_core.training.trainer.
Trainer` (resume, logging, checkpoints ``checkpoints/step_XXXXXXX/decoder``); validation renders
the held-out (camera, time) pairs of ``val`` scenes (``val_psnr``: anchored, ``val_psnr_raw``:
the student alone, ``val_psnr_cache``: the 4D cache). At the end the complete student is written
to ``out_dir/student`` (load it with :meth:`DynamicLyraStudent.from_pretrained`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lyra_core.data.dynamic import dynamic_inputs, dynamic_targets, load_dynamic_scene
from lyra_core.evaluation.dynamic import (
    CACHE_4D_METHOD,
    cache_4d_method,
    evaluate_dynamic_scenes,
    student_4d_methods,
)
from lyra_core.models.dynamic_decoder import (
    TIME_EMBEDDING_KEY,
    DynamicLyraDecoder,
    is_dynamic_config,
)
from lyra_core.models.perceptual.metric import PerceptualMetric
from lyra_core.pipelines.dynamic_student import DynamicLyraStudent, DynamicWorldPipeline
from lyra_core.pipelines.student import DECODER_FOLDER, LyraStudent, StudentConfig
from lyra_core.training.config import config_from_args, load_yaml_dataclass, training_parser
from lyra_core.training.distill import decoded_loss
from lyra_core.training.losses import LossWeights
from lyra_core.training.train_student import DecoderTask, prepare_training, select_views
from lyra_core.training.trainer import LOG_NAME
from lyra_core.utils.errors import CheckpointError, run_command
from lyra_core.weights import shipped_student_path

__all__ = [
    "STUDENT_OUT",
    "DynamicStudentTask",
    "DynamicTrainConfig",
    "dynamic_loss",
    "load_initial_student",
    "main",
    "train_dynamic",
    "training_record",
]

STUDENT_OUT = "student"
"""Folder under ``out_dir`` the finished student is written to."""


@dataclass
class DynamicTrainConfig:
    """Training settings (the YAML file's keys)."""

    dynamic: bool = True  # marks a dynamic config (``lyra train`` dispatches on it)
    data_dir: str = "data/dynamic"
    out_dir: str = "outputs/train_tiny_dynamic"
    student: str = "shipped"  # "shipped", a static student folder or a dynamic one
    steps: int = 500
    lr: float = 3e-4
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    warmup_steps: int = 20
    target_views: int | None = 6  # of Lyra's 12 targets per step; None: all 12
    loss: dict = field(
        default_factory=lambda: {"mse": 1.0, "perceptual": 0.5, "depth": 0.05, "opacity": 0.1}
    )
    prune_ratio: float = 0.8  # least-opaque share not rendered in training (inference: 0.8)
    perceptual: str = "stlpips-alex"
    mixed_precision: str = "no"
    log_every: int = 10
    val_every: int = 100
    val_scenes: int = 4
    save_every: int = 100
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> DynamicTrainConfig:
        return load_yaml_dataclass(cls, path)


def load_initial_student(name: str) -> DynamicLyraStudent:
    """The student a run starts from (see the module docstring).

    Raises:
        CheckpointError: no such folder, or not a student.
    """
    folder = shipped_student_path() if name == "shipped" else Path(name)
    if folder is None:
        raise CheckpointError("this install has no shipped student")
    if _is_dynamic_decoder(Path(folder) / DECODER_FOLDER / "config.json"):
        student, _ = DynamicLyraStudent.from_pretrained(folder)
        return student
    static, _ = LyraStudent.from_pretrained(folder)
    return DynamicLyraStudent.from_static(static)


def _is_dynamic_decoder(config_file: Path) -> bool:
    """Whether a decoder folder's config.json holds a dynamic decoder (time embeddings);
    an unreadable file is left to the loader's error."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    extra = config.get("extra") if isinstance(config, dict) else None
    return isinstance(extra, dict) and extra.get(TIME_EMBEDDING_KEY) is True


def dynamic_loss(
    student: DynamicLyraStudent,
    scene: Path,
    index: int,
    weights: LossWeights,
    target_views: int | None,
    rng: torch.Generator,
    perceptual=None,
    prune_ratio: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Lyra's loss of one scene at the target frame ``index``: decode at ``t_index``, render at
    ``target_views`` random views of the 12 targets at that time, compare."""
    sample = load_dynamic_scene(scene)
    device = next(student.decoder.parameters()).device
    videos, poses, Ks, frame_times = dynamic_inputs(sample)
    targets, _ = dynamic_targets(sample, index)
    targets = select_views(targets, target_views, rng)
    output = student(
        videos.to(device), poses.to(device), Ks.to(device), frame_times, float(frame_times[index])
    )
    loss, terms = decoded_loss(
        student, sample, output, targets, weights, perceptual, prune_ratio, aligned_terms=False
    )
    terms["target_index"] = float(index)
    return loss, terms


class DynamicStudentTask(DecoderTask):
    """The dynamic student's decoder trained on dynamic scenes (module docstring)."""

    name = "train-dynamic"
    loss_key = "loss"
    validate_at_end = True

    def __init__(
        self,
        config: DynamicTrainConfig,
        student: DynamicLyraStudent,
        train_scenes: list[Path],
        val_scenes: list[Path],
        perceptual: PerceptualMetric | None,
        num_frames: int,
    ) -> None:
        super().__init__(config, student, train_scenes, val_scenes, perceptual)
        self.num_frames = num_frames

    def loss(self, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        scene = self.train_scenes[int(torch.randint(len(self.train_scenes), (1,), generator=rng))]
        index = int(torch.randint(self.num_frames, (1,), generator=rng))
        return dynamic_loss(
            self.student,
            scene,
            index,
            self.weights,
            self.config.target_views,
            rng,
            perceptual=self.perceptual.loss if self.perceptual is not None else None,
            prune_ratio=self.config.prune_ratio,
        )

    def validate(self, model: nn.Module, step: int) -> dict[str, float]:
        if not self.val_scenes:
            return {}
        student = DynamicLyraStudent(self.student.vae, model)
        pipeline = DynamicWorldPipeline(student, self.student_config())
        methods = {CACHE_4D_METHOD: cache_4d_method, **student_4d_methods(pipeline, "student")}
        per_scene, _, _ = evaluate_dynamic_scenes(
            self.val_scenes[: self.config.val_scenes], methods, None, progress=False
        )
        keys = {
            CACHE_4D_METHOD: "val_psnr_cache",
            "student": "val_psnr",
            "student_raw": "val_psnr_raw",
        }
        return {
            keys[name]: sum(s["psnr"] for s in scores) / len(scores)
            for name, scores in per_scene.items()
        }

    def student_config(self, training: dict | None = None) -> StudentConfig:
        """The :class:`StudentConfig` of the data (size from the first training scene)."""
        sample = load_dynamic_scene(self.train_scenes[0])
        return StudentConfig(
            width=int(sample.meta["width"]),
            height=int(sample.meta["height"]),
            num_frames=sample.num_frames,
            movement_scale=float(sample.meta["movement_scale"]),
            trajectory_names=list(sample.meta["trajectory_names"]),
            training=training or {},
        )

    def load(self, folder: Path) -> None:
        saved = DynamicLyraDecoder.from_pretrained(folder / DECODER_FOLDER)
        if not is_dynamic_config(saved.config):
            raise CheckpointError(f"{folder / DECODER_FOLDER} is not a dynamic decoder")
        try:
            self.student.decoder.load_state_dict(saved.state_dict())
        except RuntimeError as err:
            raise CheckpointError(f"{folder / DECODER_FOLDER} does not fit this run") from err


def train_dynamic(config: DynamicTrainConfig, config_path: str | None = None) -> Path:
    """Run (or resume) training; returns ``out_dir``.

    Raises:
        DataError: no training scenes; ConfigError: bad loss terms or perceptual metric;
        CheckpointError: a student folder or checkpoint that does not load.
    """
    out_dir = Path(config.out_dir)
    train_scenes, val_scenes, trainer, perceptual = prepare_training(config, "dynamic training")
    student = load_initial_student(config.student)
    student.vae.to(trainer.device)
    student.decoder.to(trainer.device)
    num_frames = load_dynamic_scene(train_scenes[0]).num_frames
    task = DynamicStudentTask(config, student, train_scenes, val_scenes, perceptual, num_frames)
    model = trainer.fit(task)
    if trainer.is_main_process:
        record = training_record(config, config_path, len(train_scenes))
        final = DynamicLyraStudent(student.vae, model.eval())
        final.save_pretrained(out_dir / STUDENT_OUT, task.student_config(record))
    return out_dir


def training_record(config: DynamicTrainConfig, config_path: str | None, scenes: int) -> dict:
    """The ``training`` record of the finished student's ``student.json``: this run (config,
    steps, data, last validation) and the chain it continued (``parents``, oldest first, from the
    starting student's own record; ``cumulative_steps`` over the chain)."""
    folder = shipped_student_path() if config.student == "shipped" else Path(config.student)
    parent: dict = {}
    if folder is not None and (Path(folder) / "student.json").is_file():
        parent = StudentConfig.from_pretrained(folder).training
    parents = [*parent.get("parents", []), {k: v for k, v in parent.items() if k != "parents"}]
    before = int(parent.get("cumulative_steps", parent.get("steps", 0)) or 0)
    validation: dict = {}
    log = Path(config.out_dir) / LOG_NAME
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "val_psnr" in entry:
                validation = {k: v for k, v in entry.items() if k.startswith("val_") or k == "step"}
    return {
        "config": config_path,
        "out_dir": config.out_dir,
        "steps": config.steps,
        "cumulative_steps": before + config.steps,
        "started_from": config.student,
        "parents": parents if parent else [],
        "data_dir": config.data_dir,
        "train_scenes": scenes,
        "dynamic": True,
        "validation": validation,
    }


def main(argv: list[str] | None = None) -> int:
    """Train: 0, or 2 after one line on stderr for an expected failure."""
    args = training_parser("lyra train", __doc__).parse_args(argv)

    def command() -> int:
        config = config_from_args(DynamicTrainConfig, args)
        out = train_dynamic(config, config_path=str(args.config))
        print(f"training output in {out}; student in {out / STUDENT_OUT}")
        return 0

    return run_command("lyra train", command)


if __name__ == "__main__":
    raise SystemExit(main())
