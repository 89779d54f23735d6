"""Training run folders: ``out_dir/checkpoints/step_XXXXXXX/`` holding the model's own folder
(written by the caller, e.g. ``decoder/`` or ``vae/``) and ``trainer.pt`` (optimizer state and
step); training resumes from the newest complete one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

TRAINER_STATE_NAME = "trainer.pt"


def checkpoint_folder(out_dir: Path, step: int) -> Path:
    """The folder of ``step``'s checkpoint (not created)."""
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}"


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder was written at."""
    return int(Path(folder).name.removeprefix("step_"))


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (with their ``trainer.pt``), oldest first."""
    folders = sorted((Path(out_dir) / "checkpoints").glob("step_*"))
    return [f for f in folders if (f / TRAINER_STATE_NAME).is_file()]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    folders = list_checkpoints(out_dir)
    return folders[-1] if folders else None


def save_trainer_state(folder: Path, step: int, optimizer: torch.optim.Optimizer) -> None:
    """Write ``trainer.pt`` last and atomically: it marks the checkpoint complete."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (TRAINER_STATE_NAME + ".tmp")
    torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, folder / TRAINER_STATE_NAME)


def load_trainer_state(folder: Path, optimizer: torch.optim.Optimizer) -> int:
    """Restore the optimizer from ``trainer.pt``; returns the step."""
    state = torch.load(folder / TRAINER_STATE_NAME, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
