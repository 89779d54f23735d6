"""Trainable Gaussians with 3DGS's Adam settings, and the structural edits mapping needs.

The parameters are the raw 3DGS fields of :class:`~lyra_core.scene.gaussians.Gaussians`, with
the SH split into its DC term and the rest (they get different learning rates). Learning rates
follow 3DGS (Kerbl et al. 2023) and gsplat's trainer: positions 1.6e-4 times the scene scale
(meters), log-scales 5e-3, quaternions 1e-3, opacity logits 5e-2, SH DC 2.5e-3, higher SH
2.5e-3 / 20. Adding, removing or replacing Gaussians keeps Adam's moments of the ones that stay
(new ones start at zero), as gsplat's densification strategies do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lyra_core.scene.gaussians import Gaussians

__all__ = ["GaussianOptimizer", "LearningRates"]

PARAMETER_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0", "sh_rest")


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates per parameter (3DGS's); ``means`` is multiplied by the scene scale."""

    means: float = 1.6e-4
    quats: float = 1e-3
    log_scales: float = 5e-3
    opacity_logits: float = 5e-2
    sh0: float = 2.5e-3
    sh_rest: float = 2.5e-3 / 20


class GaussianOptimizer:
    """Gaussians as leaf tensors with one Adam param group each.

    Args:
        gaussians: the starting scene (copied; SH degree kept).
        scene_scale: meters; scales the position learning rate.
        learning_rates: per-parameter rates.
    """

    def __init__(
        self,
        gaussians: Gaussians,
        scene_scale: float = 1.0,
        learning_rates: LearningRates | None = None,
    ) -> None:
        if not scene_scale > 0:
            raise ValueError(f"scene_scale must be > 0, got {scene_scale!r}")
        self.learning_rates = learning_rates or LearningRates()
        self.scene_scale = float(scene_scale)
        self.params = _split(gaussians.detach().clone())
        groups = [
            {"params": [self.params[name]], "lr": self._lr(name), "name": name}
            for name in PARAMETER_NAMES
        ]
        self.optimizer = torch.optim.Adam(groups, eps=1e-15)

    def _lr(self, name: str) -> float:
        rate = getattr(self.learning_rates, name)
        return rate * self.scene_scale if name == "means" else rate

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    def gaussians(self) -> Gaussians:
        """The current scene (differentiable: built from the leaf tensors)."""
        p = self.params
        return Gaussians(
            means=p["means"],
            quats=p["quats"],
            log_scales=p["log_scales"],
            opacity_logits=p["opacity_logits"],
            sh=torch.cat([p["sh0"], p["sh_rest"]], dim=1),
        )

    def snapshot(self) -> Gaussians:
        """A detached copy of the current scene (what a renderer may serve)."""
        return self.gaussians().detach().clone()

    def set_position_lr_factor(self, factor: float) -> None:
        """Multiply the position learning rate by ``factor`` (e.g. an exponential decay)."""
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = self._lr("means") * factor

    def step(self) -> bool:
        """One Adam step if every gradient is finite; otherwise skip it and return False."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    # ------------------------------------------------------------------ structure

    def append(self, gaussians: Gaussians) -> None:
        """Add Gaussians (their SH degree is matched to the map's); their moments start at 0."""
        if len(gaussians) == 0:
            return
        degree = self.gaussians().sh_degree
        extra = _split(gaussians.with_sh_degree(degree).to(dtype=self.params["means"].dtype))

        def edit(name: str, t: Tensor, is_state: bool) -> Tensor:
            addition = torch.zeros_like(extra[name]) if is_state else extra[name].detach()
            return torch.cat([t, addition.to(t)])

        self._edit(edit)

    def keep(self, mask: Tensor) -> None:
        """Keep only the Gaussians where ``mask`` (N,) is True."""
        mask = mask.to(self.params["means"].device)
        if bool(mask.all()):
            return
        self._edit(lambda name, t, is_state: t[mask])

    def replace(self, index: Tensor, values: Gaussians) -> None:
        """Overwrite the Gaussians at ``index`` with ``values`` and reset their moments."""
        new = _split(values.with_sh_degree(self.gaussians().sh_degree))

        def edit(name: str, t: Tensor, is_state: bool) -> Tensor:
            out = t.clone()
            out[index] = 0.0 if is_state else new[name].to(t)
            return out

        self._edit(edit)

    def _edit(self, fn: Callable[[str, Tensor, bool], Tensor]) -> None:
        """Rebuild every parameter (and its Adam moments) with ``fn(name, tensor, is_state)``."""
        for group in self.optimizer.param_groups:
            name = group["name"]
            old = group["params"][0]
            state = self.optimizer.state.pop(old, {})
            new = torch.nn.Parameter(fn(name, old.detach(), False))
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = fn(name, state[key], True)
            group["params"][0] = new
            if state:
                self.optimizer.state[new] = state
            self.params[name] = new


def _split(gaussians: Gaussians) -> dict[str, torch.nn.Parameter]:
    fields = {
        "means": gaussians.means,
        "quats": gaussians.quats,
        "log_scales": gaussians.log_scales,
        "opacity_logits": gaussians.opacity_logits,
        "sh0": gaussians.sh[:, :1],
        "sh_rest": gaussians.sh[:, 1:],
    }
    return {name: torch.nn.Parameter(value.contiguous()) for name, value in fields.items()}
