"""Self-distillation training of the Lyra student: ``lyra-train --config config/train_tiny.yaml``.

One code path from one CPU to many GPUs through accelerate (``accelerate launch -m
lyra_core.training.train_student --config ...`` for several processes; bf16 with ``mixed_precision:
bf16``).
Every step decodes one scene from its six trajectory videos, renders the Gaussians at
trajectory and held-out cameras and applies Lyra's loss (:func:`lyra_core.pipelines.student.
distillation_loss`), with gradient clipping. Outputs in ``out_dir``:

- ``log.jsonl``: one line per logged step (loss terms, learning rate, seconds);
- ``checkpoints/step_XXXXXXX/``: ``decoder/`` (config.json + model.safetensors) and
  ``trainer.pt`` (optimizer, step, data generator); training resumes from the newest one;
- ``validation/step_XXXXXXX.png``: held-out targets (top) over renders (bottom), with PSNR,
  SSIM and the perceptual distance in the log;
- ``train_config.yaml`` (the settings) and ``lineage.json`` (the earlier runs a run started from
  a previous decoder continues: :mod:`lyra_core.training.lineage`).

The loop (seeding, accelerate, resume, schedule, logging, cadences) is
:class:`lyra_core.training.trainer.Trainer`; this module is the student's
:class:`StudentTask`.

The perceptual loss term and ``val_perceptual`` use the metric named by ``perceptual``
(:func:`lyra_core.models.perceptual.metric.load_perceptual`: ST-LPIPS AlexNet by default, ``none``
for none).

**Teacher data** (``lyra generate --teacher gen3c``, :mod:`lyra_core.data.teacher`): as Lyra
does, the decoder reads the teacher's stored latents directly (no video is encoded) and is
supervised by the teacher's decoded frames (the trajectories' ``rgb``; depth: the 3D cache's,
where it covers). Scenes without latents (procedural data) go through the VAE as before. The
decoder is this package's (``architecture: student``) or Lyra-1's (``architecture: lyra1``,
:class:`~lyra_core.models.lyra1.Lyra1Decoder`: raw latents plus VAE-encoded Plucker rays; its
views in Lyra-1's order, :data:`~lyra_core.pipelines.lyra1.LYRA1_VIEW_ORDER`), e.g.
``config/train_lyra1_teacher.yaml``. Scenes without held-out views (teacher scenes) are
validated on the last frame of every trajectory.

**Data parallel**: under ``accelerate launch --num_processes P`` process ``r`` trains on the
``r``-th of P scenes drawn per step from the shared data generator (so the P processes see
different scenes and a resumed run the same ones), and accelerate averages the gradients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from torch import Tensor, nn

from lyra_core.data.format import (
    SceneSample,
    TargetViews,
    list_scenes,
    load_scene,
    scene_inputs,
    scene_latents,
    scene_targets,
)
from lyra_core.evaluation.evaluate import render_heldout, student_method
from lyra_core.evaluation.metrics import image_metrics
from lyra_core.models.decoder import DecoderOutput, LyraDecoderConfig
from lyra_core.models.lyra1 import Lyra1Decoder, build_decoder, encode_plucker, load_decoder
from lyra_core.models.perceptual.metric import PerceptualMetric, load_perceptual
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.lyra1 import LYRA1_VIEW_ORDER
from lyra_core.pipelines.student import DECODER_FOLDER, STUDENT_CONFIG_NAME, LyraStudent
from lyra_core.training.config import (
    config_from_args,
    load_yaml_dataclass,
    training_parser,
)
from lyra_core.training.distill import decoded_loss, distillation_loss, render_targets
from lyra_core.training.lineage import DECODER_PRESETS, LINEAGE_NAME, write_lineage
from lyra_core.training.losses import LossWeights
from lyra_core.training.trainer import Trainer, TrainingTask
from lyra_core.utils.errors import CheckpointError, ConfigError, DataError, run_command
from lyra_core.utils.media import contact_sheet, to_uint8, write_png


@dataclass
class TrainConfig:
    """Training settings (the YAML file's keys)."""

    data_dir: str = "data/procedural"  # procedural or teacher scenes (or both)
    out_dir: str = "outputs/train"
    decoder: str = "tiny"  # preset (DECODER_PRESETS), a decoder folder or a student folder
    # settings changed from the preset's, e.g. {prune_ratio: 0.8}
    decoder_overrides: dict = field(default_factory=dict)
    vae: str = "tiny"  # "tiny" or a diffusers VAE folder (teacher data: the teacher's VAE)
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
    """The frozen video VAE the student reads: ``tiny`` or a diffusers folder.

    Raises:
        CheckpointError: a folder that holds no loadable VAE.
    """
    return VideoVAE.tiny() if config.vae == "tiny" else VideoVAE.from_pretrained(config.vae)


def preset_decoder_config(config: TrainConfig) -> LyraDecoderConfig:
    """The config of a fresh decoder: the preset ``decoder:`` names (:data:`DECODER_PRESETS`,
    the :class:`LyraDecoderConfig` class method of that name) with ``decoder_overrides``.

    Raises:
        ConfigError: ``decoder:`` is no preset, or overrides that are not decoder settings.
    """
    if config.decoder not in DECODER_PRESETS:
        raise ConfigError(f"decoder {config.decoder!r} is no preset {DECODER_PRESETS}")
    base = getattr(LyraDecoderConfig, config.decoder)().to_dict()
    try:
        return LyraDecoderConfig(**{**base, **config.decoder_overrides})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"decoder_overrides {config.decoder_overrides}: {err}") from err


def build_student(config: TrainConfig) -> LyraStudent:
    """The VAE and the decoder to train: a preset with ``decoder_overrides``, or the decoder of
    a folder (a decoder folder, or a student folder's ``decoder/``).

    Raises:
        ConfigError: overrides that are not decoder settings.
        CheckpointError: a folder that holds no loadable decoder.
    """
    vae = build_vae(config)
    if config.decoder in DECODER_PRESETS:
        decoder = build_decoder(preset_decoder_config(config))
    else:
        folder = Path(config.decoder)
        if (folder / STUDENT_CONFIG_NAME).is_file():
            folder = folder / DECODER_FOLDER
        decoder = load_decoder(folder)
    if isinstance(decoder, Lyra1Decoder) and not decoder.config.use_time_embedding:
        # unused by the static model: frozen, so data-parallel training expects no gradient
        decoder.time_embed.requires_grad_(False)
        decoder.target_time_embed.requires_grad_(False)
    return LyraStudent(vae, decoder)


def reads_latents_only(student: LyraStudent) -> bool:
    """Whether the decoder needs the latent path (:func:`decode_latents`) for every scene
    (Lyra-1's decoder; this package's decodes procedural scenes through the student)."""
    return isinstance(_unwrap(student.decoder), Lyra1Decoder)


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside accelerate's / DDP's wrapper."""
    return getattr(module, "module", module)


def decoder_inputs(student: LyraStudent, sample: SceneSample) -> tuple[Tensor, Tensor, Tensor]:
    """``(latents (V, T', C, h, w) normalised, camtoworlds (V, N, 4, 4), Ks (V, N, 3, 3))`` of
    a scene on the VAE's device: a teacher scene's stored latents as they are, else its 3D-cache
    videos encoded by the frozen VAE."""
    device = student.vae.latents_mean.device
    stored = scene_latents(sample)
    if stored is not None:
        return tuple(t.to(device) for t in stored)
    videos, camtoworlds, Ks = (t.to(device) for t in scene_inputs(sample))
    return student.encode(videos), camtoworlds, Ks


def decode_latents(
    student: LyraStudent, latents: Tensor, camtoworlds: Tensor, Ks: Tensor
) -> DecoderOutput:
    """Decode normalised latents (V, T', C, h, w) of V trajectories with their cameras
    (V, N, 4, 4) and (V, N, 3, 3), with gradients to ``student.decoder``.

    This package's decoder reads them as :meth:`LyraStudent.decode`; Lyra-1's reads the raw
    latents and the VAE-encoded Plucker rays of every frame (no gradient through the VAE), its
    six views in :data:`LYRA1_VIEW_ORDER`.

    Returns:
        Gaussians with leading dims (1, V, T', H, W) (Lyra-1: (1, V, N, h, w)).
    """
    if not reads_latents_only(student):
        return student.decode(latents, camtoworlds, Ks)
    if latents.shape[0] == len(LYRA1_VIEW_ORDER):
        order = list(LYRA1_VIEW_ORDER)
        latents, camtoworlds, Ks = latents[order], camtoworlds[order], Ks[order]
    factor = student.vae.spatial_factor
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    with torch.no_grad():
        raw = student.vae.denormalize(latents)
        plucker = encode_plucker(student.vae, camtoworlds[None], Ks[None], height, width)
    return student.decoder(raw[None], plucker, camtoworlds[None], Ks[None])


def latent_distillation_loss(
    student: LyraStudent,
    sample: SceneSample,
    targets: TargetViews,
    weights: LossWeights,
    perceptual=None,
    prune_ratio: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Lyra's loss on a scene read as latents (:func:`decoder_inputs`, :func:`decode_latents`):
    the Gaussians rendered at the target cameras against the targets (a teacher scene: the
    teacher's decoded frames), pruned as :func:`~lyra_core.training.distill.distillation_loss`
    prunes, plus the pixel-aligned terms where weighted (this package's decoder only)."""
    output = decode_latents(student, *decoder_inputs(student, sample))
    return decoded_loss(
        student,
        sample,
        output,
        targets,
        weights,
        perceptual,
        prune_ratio,
        aligned_terms=not reads_latents_only(student),
    )


def validate(
    student: LyraStudent,
    scene_dirs: list[Path],
    out_dir: Path,
    step: int,
    perceptual: PerceptualMetric | None = None,
) -> dict:
    """Render the held-out views of validation scenes as inference does (pruned by the decoder's
    ``prune_ratio``): PNG grid of the first + mean ``val_psnr``, ``val_ssim`` and, with a
    metric, ``val_perceptual`` (:func:`lyra_core.evaluation.metrics.image_metrics`)."""
    scores: dict[str, list[float]] = {}
    world = student_method(student)
    for index, scene_dir in enumerate(scene_dirs):
        sample = load_scene(scene_dir)
        if sample.heldout is None or reads_latents_only(student):
            rendered, target = _render_targets(student, sample)
        else:
            rendered = render_heldout(world(sample), sample)
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


def _render_targets(student: LyraStudent, sample: SceneSample) -> tuple[Tensor, Tensor]:
    """Renders (pruned by the decoder's ``prune_ratio``) and targets in [0, 1], (K, H, W, 3),
    of the scene's held-out views, or of the last frame of every trajectory without them."""
    targets = scene_targets(sample, 1)
    with torch.no_grad():
        output = decode_latents(student, *decoder_inputs(student, sample))
        gaussians = output.to_gaussians(prune_ratio=student.decoder.config.prune_ratio)
        rendered = render_targets(gaussians, targets, sample.background).rgb.clamp(0, 1)
    return rendered, targets.rgb.to(rendered.device)


def select_views(targets: TargetViews, count: int | None, rng: torch.Generator) -> TargetViews:
    """``count`` target views drawn without replacement (all of them for None)."""
    total = targets.rgb.shape[0]
    if count is None or count >= total:
        return targets
    index = torch.randperm(total, generator=rng)[:count]
    return TargetViews(
        targets.rgb[index], targets.depth[index], targets.camtoworlds[index], targets.Ks[index]
    )


class DecoderTask(TrainingTask):
    """A student's decoder trained on scenes while its VAE stays frozen: the state every
    student task shares (its subclasses draw the steps and validate).

    Args:
        config: the run's settings (:class:`TrainConfig` or the dynamic student's).
        student: the student (``LyraStudent`` or ``DynamicLyraStudent``) whose decoder trains.
        train_scenes, val_scenes: scene folders.
        perceptual: the perceptual metric of the loss and validation, or None.
    """

    def __init__(
        self,
        config: Any,
        student: Any,
        train_scenes: list[Path],
        val_scenes: list[Path],
        perceptual: PerceptualMetric | None,
    ) -> None:
        self.config = config
        self.student = student
        self.train_scenes = train_scenes
        self.val_scenes = val_scenes
        self.perceptual = perceptual
        self.weights = LossWeights(**config.loss)

    @property
    def model(self) -> nn.Module:
        """The trained decoder (``student.decoder``)."""
        return self.student.decoder

    @model.setter
    def model(self, module: nn.Module) -> None:
        self.student.decoder = module

    def save(self, folder: Path, model: nn.Module) -> None:
        model.save_pretrained(folder / DECODER_FOLDER)


class StudentTask(DecoderTask):
    """Self-distillation of the student's decoder (the VAE stays frozen): each step decodes one
    random training scene and renders ``target_views`` random target views."""

    name = "train"
    loss_key = "loss"

    def loss(self, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        config = self.config
        state = PartialState()
        draws = torch.randint(len(self.train_scenes), (state.num_processes,), generator=rng)
        sample = load_scene(self.train_scenes[int(draws[state.process_index])])
        targets = select_views(
            scene_targets(sample, config.frames_per_trajectory), config.target_views, rng
        )
        if scene_latents(sample) is not None or reads_latents_only(self.student):
            loss = latent_distillation_loss
        else:
            loss = distillation_loss
        return loss(
            self.student,
            sample,
            targets,
            self.weights,
            perceptual=self.perceptual.loss if self.perceptual is not None else None,
            prune_ratio=config.prune_ratio,
        )

    def validate(self, model: nn.Module, step: int) -> dict[str, float]:
        if not self.val_scenes:
            return {}
        student = LyraStudent(self.student.vae, model)
        scenes = self.val_scenes[: self.config.val_scenes]
        return validate(student, scenes, Path(self.config.out_dir), step, self.perceptual)

    def load(self, folder: Path) -> None:
        saved = load_decoder(folder / DECODER_FOLDER)
        try:
            self.student.decoder.load_state_dict(saved.state_dict())
        except RuntimeError as err:
            ours = self.student.decoder.config.to_dict()
            differ = [
                f"{k} {v} there, {ours[k]} here"
                for k, v in saved.config.to_dict().items()
                if ours.get(k) != v
            ]
            raise CheckpointError(
                f"{folder / DECODER_FOLDER} does not fit this run's decoder "
                f"({'; '.join(differ) or 'other weights'})"
            ) from err


def prepare_training(
    config: Any, what: str
) -> tuple[list[Path], list[Path], Trainer, PerceptualMetric | None]:
    """What every student run sets up first: the ``train``/``val`` scenes under
    ``config.data_dir``, the :class:`Trainer` and the perceptual metric (on its device).

    Args:
        config: the run's settings (``data_dir``, ``loss``, ``perceptual`` and the trainer's).
        what: the scenes' name in the error, e.g. ``"dynamic training"``.

    Raises:
        DataError: no training scenes.
        ConfigError: bad loss terms, an unknown perceptual metric, or a perceptual loss weight
            without one.
    """
    train_scenes = list_scenes(Path(config.data_dir) / "train")
    val_scenes = list_scenes(Path(config.data_dir) / "val")
    if not train_scenes:
        raise DataError(f"no {what} scenes in {Path(config.data_dir) / 'train'}")
    try:
        weights = LossWeights(**config.loss)
    except TypeError as err:
        raise ConfigError(f"loss {config.loss}: {err}") from err
    trainer = Trainer(config)
    try:
        perceptual = load_perceptual(config.perceptual)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"perceptual {config.perceptual!r}: {err}") from err
    if weights.perceptual and perceptual is None:
        raise ConfigError(
            f"loss weight perceptual {weights.perceptual} needs a perceptual metric, "
            f"got perceptual: {config.perceptual!r}"
        )
    if perceptual is not None:
        perceptual.to(trainer.device)
    return train_scenes, val_scenes, trainer, perceptual


def train(config: TrainConfig, config_path: str | None = None) -> Path:
    """Run (or resume) training; returns the output folder.

    Args:
        config: the settings.
        config_path: the settings file, recorded in ``lineage.json`` (None: not from a file).

    Raises:
        DataError: no training scenes.
        ConfigError: settings that do not fit together (loss terms, perceptual metric,
            decoder overrides).
        CheckpointError: a ``decoder``/``vae`` folder, or the checkpoint to resume from, that
            cannot be loaded.
    """
    out_dir = Path(config.out_dir)
    train_scenes, val_scenes, trainer, perceptual = prepare_training(config, "training")
    student = build_student(config)
    student.vae.to(trainer.device)
    if trainer.is_main_process and not (out_dir / LINEAGE_NAME).exists():
        write_lineage(out_dir, config_path, config.decoder)
    trainer.fit(StudentTask(config, student, train_scenes, val_scenes, perceptual))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``lyra train``: returns 0, or 2 after one line on stderr for an expected failure."""
    args = training_parser("lyra train", __doc__).parse_args(argv)
    if _is_dynamic(args.config):
        from lyra_core.training.train_dynamic import main as train_dynamic

        return train_dynamic(argv)

    def command() -> int:
        config = config_from_args(TrainConfig, args)
        print(f"training output in {train(config, config_path=str(args.config))}")
        return 0

    return run_command("lyra train", command)


def _is_dynamic(path: Path) -> bool:
    """Whether the settings file says ``dynamic: true`` (the dynamic student's settings,
    :mod:`lyra_core.training.train_dynamic`); an unreadable file is left to the loader."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("dynamic") is True


if __name__ == "__main__":
    raise SystemExit(main())
