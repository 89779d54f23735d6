"""Learning-rate schedules as pure functions of the step (resume-safe: no scheduler state)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int = 0, final_fraction: float = 0.1) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``.

    Linear warm-up from ~0 to 1 over ``warmup`` steps, then a cosine decay to
    ``final_fraction`` at the last step.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer, lr: float) -> None:
    """Set every parameter group of ``optimizer`` to ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
