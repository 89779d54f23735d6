"""Training run folders: ``out_dir/checkpoints/step_XXXXXXX/`` holding the model's own folder
(written by the caller, e.g. ``decoder/`` or ``vae/``) and ``trainer.pt`` (optimizer state, step
and the training data generator's state); training resumes from the newest complete one."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from lyra_core.utils.atomic import atomic_write, sweep_stale_temp_files
from lyra_core.utils.errors import CheckpointError

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


def save_trainer_state(
    folder: Path,
    step: int,
    optimizer: torch.optim.Optimizer,
    rng_state: torch.Tensor | None = None,
) -> None:
    """Write ``trainer.pt`` last and atomically: it marks the checkpoint complete.

    It holds ``step``, the optimizer's state dict and, where given, ``rng_state`` (the state of
    the generator that draws the training data, so a resumed run draws what an uninterrupted one
    would).

    Call it after the model's own folder is written. It first sweeps ``folder`` of the
    temporary files and folders a killed earlier save of this step left behind
    (:func:`~lyra_core.utils.atomic.sweep_stale_temp_files`): by then this process has no
    write of its own in progress there.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_files(folder)
    with atomic_write(folder / TRAINER_STATE_NAME) as f:
        state = {"step": step, "optimizer": optimizer.state_dict()}
        torch.save(state | ({"rng": rng_state} if rng_state is not None else {}), f)


def read_trainer_state(folder: Path) -> dict:
    """The contents of ``folder/trainer.pt``: ``step`` (int), ``optimizer`` (state dict) and, in
    checkpoints written since the data generator's state is kept, ``rng`` (uint8 tensor).

    Raises:
        CheckpointError: the file is missing, unreadable or lacks ``step`` or ``optimizer``.
    """
    path = Path(folder) / TRAINER_STATE_NAME
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no trainer state") from err
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: unreadable trainer state ({err})") from err
    if not (isinstance(state, dict) and {"step", "optimizer"} <= set(state)):
        raise CheckpointError(f"{path}: not a trainer state (needs step and optimizer)")
    return state


def load_trainer_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimizer from ``trainer.pt``; returns the whole state
    (:func:`read_trainer_state`: ``step``, ``optimizer``, maybe ``rng``).

    Raises:
        CheckpointError: an unreadable file, or an optimizer state of other parameters (another
            number or other shapes).
    """
    path = Path(folder) / TRAINER_STATE_NAME
    state = read_trainer_state(folder)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit the model ({err})") from err
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise CheckpointError(
                        f"{path}: optimizer state {name} of shape {tuple(value.shape)} does not "
                        f"fit a parameter of shape {tuple(param.shape)}"
                    )
    return state
