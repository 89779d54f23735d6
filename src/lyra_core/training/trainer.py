"""The training loop shared by ``lyra train`` (the student decoder) and ``lyra train-vae``.

A :class:`TrainingTask` says what is trained: the module, one step's loss, the validation and
the model's part of a checkpoint. :class:`Trainer` does everything else, the same way for both:

- seeding (``torch.manual_seed(seed)`` when the trainer is made, before the task builds its
  model) and one :class:`accelerate.Accelerator` (devices, processes, ``mixed_precision``);
- AdamW over the task's module, gradient clipping at ``grad_clip``, the learning rate
  ``lr * warmup_cosine(step)`` (:mod:`lyra_core.training.schedules`) set before every step;
- resume from the newest complete checkpoint (:mod:`lyra_core.training.checkpoints`): the
  module's weights, the optimizer state (e.g. Adam's moments and step counts) and the state of
  the generator that draws the training data, so an interrupted and resumed run computes the
  same steps as an uninterrupted one; a checkpoint that does not fit raises
  :class:`~lyra_core.utils.errors.CheckpointError`;
- in ``out_dir``: ``train_config.yaml`` (the settings), ``log.jsonl`` (one JSON line per
  ``log_every`` steps and per validation: ``step``, the loss under the task's
  :attr:`~TrainingTask.loss_key`, its extra terms, ``lr``, ``seconds`` and the validation
  metrics), validation every ``val_every`` steps and checkpoints
  ``checkpoints/step_XXXXXXX/`` every ``save_every`` steps and after the last (main process);
- a tqdm progress bar with the loss.

Usage::

    trainer = Trainer(config)  # seeds, makes the Accelerator
    task = MyTask(config, device=trainer.device)
    model = trainer.fit(task)  # the trained module, unwrapped
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from lyra_core.training.checkpoints import (
    checkpoint_folder,
    checkpoint_step,
    latest_checkpoint,
    load_trainer_state,
    save_trainer_state,
)
from lyra_core.training.schedules import set_learning_rate, warmup_cosine
from lyra_core.utils.atomic import write_text_atomic
from lyra_core.utils.errors import CheckpointError

LOG_NAME = "log.jsonl"
CONFIG_COPY_NAME = "train_config.yaml"


class LoopConfig(Protocol):
    """The settings the loop reads: fields of both training config dataclasses."""

    out_dir: str
    steps: int  # total optimizer steps of the run
    lr: float  # peak learning rate
    weight_decay: float  # AdamW's
    warmup_steps: int  # linear warm-up, then cosine decay to 10 % of lr
    grad_clip: float  # max gradient norm
    mixed_precision: str  # accelerate's: "no", "bf16", "fp16"
    log_every: int
    val_every: int
    save_every: int
    seed: int


class TrainingTask(ABC):
    """What one kind of training provides to :class:`Trainer`.

    Attributes:
        model: the trained module. Before training the trainer replaces it with accelerate's
            prepared module (the same object on one process without mixed precision), which
            :meth:`loss` should call (it syncs gradients across processes).
        name: the progress bar's label.
        loss_key: the log key of the loss value (e.g. ``"loss"``, ``"l1"``).
        validate_at_end: also validate after the last step (besides every ``val_every``).
    """

    model: nn.Module
    name: str = "train"
    loss_key: str = "loss"
    validate_at_end: bool = False

    @abstractmethod
    def loss(self, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """One step's loss: a scalar with gradients to :attr:`model`, and extra terms to log.

        Args:
            rng: draws the step's training data (its state is saved with each checkpoint).
        """

    def validate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Validation metrics after ``step`` steps (keys ``val_*``; ``{}``: none to report).

        Args:
            model: the trained module, unwrapped and in eval mode (back in train mode after).
        """
        return {}

    @abstractmethod
    def save(self, folder: Path, model: nn.Module) -> None:
        """Write the model's part of a checkpoint into ``folder`` (e.g. ``folder/decoder``);
        the trainer writes ``trainer.pt`` after it."""

    @abstractmethod
    def load(self, folder: Path) -> None:
        """Load the weights of :attr:`model` from a checkpoint folder written by :meth:`save`
        (before training, so before accelerate wraps the module).

        Raises:
            CheckpointError: weights that are missing, unreadable or do not fit the model (other
                errors from here are reported as one by the trainer).
        """


class Trainer:
    """Runs a :class:`TrainingTask` from step 0 or its newest checkpoint to ``config.steps``."""

    def __init__(self, config: LoopConfig) -> None:
        """Seed torch with ``config.seed`` and make the :class:`accelerate.Accelerator`.

        Make the trainer before the task builds its model, so the initial weights depend on the
        seed only.
        """
        from accelerate import Accelerator

        torch.manual_seed(config.seed)
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)

    @property
    def device(self) -> torch.device:
        """The device the task's data and frozen modules belong on."""
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        """Whether this process writes logs, validation and checkpoints."""
        return self.accelerator.is_main_process

    def fit(self, task: TrainingTask) -> nn.Module:
        """Train ``task.model`` (resuming from the newest checkpoint in ``out_dir``).

        Returns:
            The trained module, unwrapped (in train mode).

        Raises:
            CheckpointError: the newest checkpoint is unreadable or does not fit the task.
        """
        config, accelerator = self.config, self.accelerator
        task.model.train()
        optimizer = torch.optim.AdamW(
            task.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        start, rng = self._resume(task, optimizer)
        task.model, optimizer = accelerator.prepare(task.model, optimizer)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main_process:
            write_text_atomic(self.out_dir / CONFIG_COPY_NAME, yaml.safe_dump(asdict(config)))
        progress = tqdm(
            range(start, config.steps),
            initial=start,
            total=config.steps,
            desc=task.name,
            disable=not self.is_main_process,
        )
        with (self.out_dir / LOG_NAME).open("a") as log:
            for step in progress:
                record = self._step(task, optimizer, step, rng)
                progress.set_postfix({task.loss_key: f"{record[task.loss_key]:.4f}"})
                if not self.is_main_process:
                    continue
                done = step + 1
                validation = self._validate(task, done)
                record |= validation
                if done % config.log_every == 0 or validation:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if done % config.save_every == 0 or done == config.steps:
                    self._save(task, optimizer, done, rng)
        return accelerator.unwrap_model(task.model)

    def _step(
        self, task: TrainingTask, optimizer: torch.optim.Optimizer, step: int, rng: torch.Generator
    ) -> dict:
        """One optimizer step at 0-based ``step``; returns its log record."""
        config, accelerator = self.config, self.accelerator
        began = time.perf_counter()
        set_learning_rate(
            optimizer, config.lr * warmup_cosine(step, config.steps, config.warmup_steps)
        )
        with accelerator.autocast():
            loss, terms = task.loss(rng)
        optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(task.model.parameters(), config.grad_clip)
        optimizer.step()
        return {
            "step": step + 1,
            task.loss_key: float(loss.detach()),
            **terms,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - began, 3),
        }

    def _validate(self, task: TrainingTask, done: int) -> dict[str, float]:
        """The task's validation when ``done`` is due (every ``val_every`` steps; after the last
        with :attr:`TrainingTask.validate_at_end`), else ``{}``."""
        last = task.validate_at_end and done == self.config.steps
        if not (done % self.config.val_every == 0 or last):
            return {}
        model = self.accelerator.unwrap_model(task.model)
        model.eval()
        try:
            return task.validate(model, done)
        finally:
            model.train()

    def _save(
        self, task: TrainingTask, optimizer: torch.optim.Optimizer, done: int, rng: torch.Generator
    ) -> None:
        folder = checkpoint_folder(self.out_dir, done)
        task.save(folder, self.accelerator.unwrap_model(task.model))
        save_trainer_state(folder, done, optimizer, rng_state=rng.get_state())

    def _resume(
        self, task: TrainingTask, optimizer: torch.optim.Optimizer
    ) -> tuple[int, torch.Generator]:
        """Restore the newest checkpoint into ``task.model`` and ``optimizer``; returns its step
        (0: none) and the generator of the training data in the state saved with it (seeded
        with ``seed + step`` for none, and for checkpoints from before that state was kept)."""
        folder = latest_checkpoint(self.out_dir)
        if folder is None:
            return 0, torch.Generator().manual_seed(self.config.seed)
        try:
            task.load(folder)
        except CheckpointError:
            raise
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
            message = " ".join(str(err).split())
            raise CheckpointError(f"checkpoint {folder} does not fit this run: {message}") from err
        state = load_trainer_state(folder, optimizer)
        step = int(state["step"])
        if step != checkpoint_step(folder):
            raise CheckpointError(f"{folder}: trainer.pt is of step {step}, not its folder's")
        rng = torch.Generator().manual_seed(self.config.seed + step)
        if "rng" in state:
            try:
                rng.set_state(state["rng"])
            except (TypeError, RuntimeError) as err:
                raise CheckpointError(f"{folder}: trainer.pt holds no generator state") from err
        return step, rng


__all__ = ["LoopConfig", "Trainer", "TrainingTask"]
