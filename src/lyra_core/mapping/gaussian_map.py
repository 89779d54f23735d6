"""A Gaussian map that grows and refines from posed frames (RGB-D or RGB).

The mapping half of the SLAM-class Gaussian mappers (SplaTAM, Gaussian-SLAM, RTG-SLAM) with
poses given (a robot's tf, a capture's cameras):

- **Add** (:meth:`GaussianMap.integrate`): the map is rendered at the frame's pose; Gaussians
  are added from the frame's depth only where the map is unobserved (rendered alpha below
  ``add_alpha_threshold``) or where the measured surface lies in front of the rendered one by
  more than ``add_depth_factor`` times the median depth error, so a surface seen again does not
  get a second layer. Each new Gaussian is a disc of the pixel footprint
  (:func:`~lyra_core.scene.rgbd.gaussians_from_rgbd`).
- **Anchor**: Gaussians from generated content (:meth:`GaussianMap.add_generated`: the Lyra
  student, later the teacher) are dropped where a frame with depth sees them
  (:func:`~lyra_core.scene.visibility.seen_by_depth`): observations replace them, they only fill
  what nothing observed.
- **Keyframes**: a frame becomes a keyframe when the camera moved or turned enough since the
  last keyframe, or when the map covered too little of it; each keyframe triggers
  ``steps_per_keyframe`` refinement steps over a window of the latest keyframes plus a few
  random older ones (so earlier places are not forgotten).
- **Refine** (:meth:`GaussianMap.refine`): per step one keyframe, rendered at
  1/``refine_downscale`` resolution: (1 - ssim_weight) L1 + ssim_weight (1 - SSIM) on colour,
  plus ``depth_weight`` times the L1 depth error where depth was measured; Adam with 3DGS's
  per-parameter learning rates (:mod:`lyra_core.mapping.optimizer`). A step whose loss or
  gradients are not finite is skipped (rolled back), never served. Every ``prune_every`` steps
  transparent (opacity < ``prune_opacity``) and oversized Gaussians are removed; without depth,
  Gaussians with large view-space gradients are cloned or split (3DGS densification).
- **Offline fitting** (``lyra fit``): :meth:`GaussianMap.add_keyframe` registers every training
  view without refining, ``sampling="epoch"`` visits each keyframe once per epoch in a seeded
  random order (3DGS), and :meth:`GaussianMap.set_progress` applies the run's schedule: the
  position learning rate decays exponentially to ``position_lr_final`` times its start, and
  densification stops after ``densify_until`` of the run (3DGS: 1 % and half the run).
  :meth:`GaussianMap.reset_opacity` is 3DGS's opacity reset; :meth:`GaussianMap.state_dict` /
  :meth:`GaussianMap.load_state_dict` checkpoint everything but the keyframes, so a resumed run
  continues exactly where it stopped.
- **Budget**: the map never holds more than ``max_gaussians``: beyond it, the least opaque
  Gaussians go first (opacity is the contribution measure). Keyframes are bounded by
  ``max_keyframes`` (the oldest are thinned out), so memory stays bounded.

Deterministic for a given seed and frame sequence on one machine and thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lyra_core.evaluation.metrics import ssim
from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.optimizer import GaussianOptimizer, LearningRates
from lyra_core.rendering import render
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import ORIENTATIONS, gaussians_from_rgbd
from lyra_core.scene.visibility import seen_by_depth

__all__ = ["GaussianMap", "IntegrationResult", "MapConfig"]


@dataclass
class MapConfig:
    """Settings of a :class:`GaussianMap` (units: meters, degrees, steps).

    Attributes:
        max_gaussians: hard budget of the map.
        pixel_stride: new Gaussians from every n-th pixel per axis of a frame.
        new_opacity: opacity of Gaussians added from depth.
        orient: Gaussians added from depth are discs facing the camera (``"camera"``) or lying
            in the surface along the depth map's normals (``"normal"``;
            :func:`~lyra_core.scene.rgbd.gaussians_from_rgbd`; the default: +1.5 dB at held-out
            views after fusion and refinement in ``benchmarks/fusion.py``).
        add_alpha_threshold: a pixel is unobserved when the map's rendered alpha is below it.
        add_depth_factor: add where the measured depth is in front of the rendered one by more
            than this many median depth errors.
        min_depth, max_depth: valid measured depth range.
        keyframe_translation: camera motion since the last keyframe that makes a keyframe.
        keyframe_rotation_deg: camera rotation since the last keyframe that makes a keyframe.
        keyframe_coverage: a frame the map covers less than this share of (of its pixels with
            depth, or of all pixels without depth) becomes a keyframe.
        window: latest keyframes refined together.
        old_keyframes: random older keyframes added to each step's choice.
        max_keyframes: keyframes kept (older ones are thinned out beyond it).
        steps_per_keyframe: refinement steps run when a keyframe arrives.
        refine_downscale: refinement renders at 1/n of the frame resolution.
        ssim_weight: weight of the D-SSIM term (3DGS: 0.2).
        depth_weight: weight of the L1 depth term, per meter.
        prune_opacity: Gaussians below this opacity are removed.
        prune_scale: Gaussians larger than this (largest axis, times the scene scale) are removed.
        prune_every: steps between prunes.
        densify: clone/split on view-space gradients: "auto" (only for frames without depth),
            "always" or "never".
        densify_grad_threshold: mean view-space gradient (NDC units, 3DGS's 2e-4) to densify.
        densify_every: steps between densifications.
        clone_scale: Gaussians at most this large (times the scene scale) are cloned, larger
            ones split.
        scene_scale: meters; None: the median depth of the first frame with depth (else 1).
            Scales the position learning rate, ``prune_scale`` and ``clone_scale``.
        sampling: which keyframe a refinement step uses: ``"window"`` (online mapping: one of
            the latest ``window`` keyframes or ``old_keyframes`` random older ones) or
            ``"epoch"`` (offline fitting: every keyframe once per epoch, in a random order).
        position_lr_final: position learning rate at the end of a run (:meth:`set_progress`
            1) relative to its start; it decays exponentially in between (3DGS: 0.01; 1: none).
        densify_until: share of a run (:meth:`set_progress`) after which densification stops
            (3DGS: 0.5 of its 30k steps; 1: never).
        sh_degree: SH degree of the map's Gaussians (None: that of the first ones added).
        background: RGB behind the map when rendering.
        seed: random seed of keyframe sampling and splitting.
    """

    max_gaussians: int = 300_000
    pixel_stride: int = 2
    new_opacity: float = 0.9
    orient: str = "normal"
    add_alpha_threshold: float = 0.5
    add_depth_factor: float = 40.0
    min_depth: float = 0.05
    max_depth: float = 20.0
    keyframe_translation: float = 0.25
    keyframe_rotation_deg: float = 15.0
    keyframe_coverage: float = 0.95
    window: int = 8
    old_keyframes: int = 2
    max_keyframes: int = 64
    steps_per_keyframe: int = 20
    refine_downscale: int = 1
    ssim_weight: float = 0.2
    depth_weight: float = 0.5
    prune_opacity: float = 0.005
    prune_scale: float = 0.5
    prune_every: int = 50
    densify: str = "auto"
    densify_grad_threshold: float = 2e-4
    densify_every: int = 100
    clone_scale: float = 0.01
    scene_scale: float | None = None
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seed: int = 0
    sampling: str = "window"
    position_lr_final: float = 1.0
    densify_until: float = 1.0
    sh_degree: int | None = None
    learning_rates: LearningRates = field(default_factory=LearningRates)

    def __post_init__(self) -> None:
        positive_ints = ("max_gaussians", "pixel_stride", "window", "max_keyframes")
        positive_ints += ("refine_downscale", "prune_every", "densify_every")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("old_keyframes", "steps_per_keyframe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("add_alpha_threshold", "keyframe_coverage", "ssim_weight", "new_opacity"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(
                f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )
        if self.orient not in ORIENTATIONS:
            raise ValueError(
                f"orient must be one of {', '.join(ORIENTATIONS)}, got {self.orient!r}"
            )
        if self.densify not in ("auto", "always", "never"):
            raise ValueError(f"densify must be auto, always or never, got {self.densify!r}")
        if self.scene_scale is not None and not self.scene_scale > 0:
            raise ValueError(f"scene_scale must be > 0, got {self.scene_scale!r}")
        if self.sampling not in ("window", "epoch"):
            raise ValueError(f"sampling must be window or epoch, got {self.sampling!r}")
        if not 0.0 < self.position_lr_final <= 1.0:
            raise ValueError(f"position_lr_final must be in (0, 1], got {self.position_lr_final}")
        if not 0.0 <= self.densify_until <= 1.0:
            raise ValueError(f"densify_until must be in [0, 1], got {self.densify_until!r}")
        if self.sh_degree is not None and self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0, 1, 2, 3 or None, got {self.sh_degree!r}")


@dataclass
class IntegrationResult:
    """What :meth:`GaussianMap.integrate` did with one frame."""

    added: int
    replaced_generated: int
    keyframe: bool
    steps: int
    loss: float | None
    coverage: float


class GaussianMap:
    """A growing, refining Gaussian map (see the module docstring).

    Args:
        config: settings.
        device: where the map lives and renders.
    """

    def __init__(self, config: MapConfig | None = None, device: torch.device | str = "cpu"):
        self.config = config or MapConfig()
        self.device = torch.device(device)
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._rng = np.random.default_rng(self.config.seed)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything: no Gaussians, no keyframes."""
        self._optimizer: GaussianOptimizer | None = None
        self._observed = torch.zeros(0, dtype=torch.bool)
        self.keyframes: list[PosedFrame] = []
        self.scene_scale = self.config.scene_scale
        self.steps = 0
        self.last_loss: float | None = None
        self.skipped_steps = 0
        self._grad_sum = torch.zeros(0)
        self._grad_count = torch.zeros(0)
        self._epoch: list[int] = []
        self._progress = 0.0

    def __len__(self) -> int:
        return 0 if self._optimizer is None else len(self._optimizer)

    def gaussians(self) -> Gaussians:
        """A detached copy of the map (safe to serve while mapping continues)."""
        if self._optimizer is None:
            return Gaussians.empty(device=self.device)
        return self._optimizer.snapshot()

    @property
    def observed(self) -> Tensor:
        """(N,) bool: Gaussians that come from observations (False: generated content)."""
        return self._observed.clone()

    def stats(self) -> dict[str, float | int | None]:
        """Counts for status messages and logs."""
        return {
            "gaussians": len(self),
            "generated": int((~self._observed).sum()),
            "keyframes": len(self.keyframes),
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "last_loss": self.last_loss,
        }

    # ------------------------------------------------------------------ schedule and state

    @property
    def progress(self) -> float:
        """Share of an offline run done, in [0, 1] (:meth:`set_progress`; 0 online)."""
        return self._progress

    @property
    def position_lr_factor(self) -> float:
        """The position learning rate now, relative to its start:
        ``position_lr_final ** progress`` (3DGS's log-linear decay)."""
        return self.config.position_lr_final**self._progress

    def set_progress(self, fraction: float) -> None:
        """Tell the map how much of an offline run is done (steps or time, ``[0, 1]``): sets
        the position learning rate to :attr:`position_lr_factor` and stops densification past
        ``densify_until``."""
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"progress must be in [0, 1], got {fraction!r}")
        self._progress = float(fraction)
        if self._optimizer is not None:
            self._optimizer.set_position_lr_factor(self.position_lr_factor)

    def reset_opacity(self, max_opacity: float = 0.01) -> None:
        """3DGS's opacity reset: clamp every opacity to at most ``max_opacity`` and clear the
        opacity's Adam moments, so Gaussians that stay useful grow back and floaters are
        pruned."""
        if self._optimizer is None or not 0.0 < max_opacity < 1.0:
            return
        logits = self._optimizer.params["opacity_logits"]
        limit = math.log(max_opacity / (1.0 - max_opacity))
        with torch.no_grad():
            logits.clamp_(max=limit)
        for value in self._optimizer.optimizer.state.get(logits, {}).values():
            if isinstance(value, Tensor) and value.shape == logits.shape:
                value.zero_()

    def state_dict(self) -> dict:
        """Everything a resumed run needs but the keyframes: the Gaussians, Adam's state, the
        densification statistics, counters, the schedule and the random generators' states.

        Register the keyframes again (same frames, same order) and call
        :meth:`load_state_dict`: the next steps are then those the original map would take.
        """
        params = {}
        optimizer_state = None
        if self._optimizer is not None:
            params = {k: v.detach().cpu().clone() for k, v in self._optimizer.params.items()}
            optimizer_state = self._optimizer.optimizer.state_dict()
        return {
            "params": params,
            "optimizer": optimizer_state,
            "observed": self._observed.clone(),
            "grad_sum": self._grad_sum.clone(),
            "grad_count": self._grad_count.clone(),
            "scene_scale": self.scene_scale,
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "last_loss": self.last_loss,
            "progress": self._progress,
            "epoch": list(self._epoch),
            "numpy_rng": self._rng.bit_generator.state,
            "torch_rng": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the keyframes stay as they are).

        Raises:
            ValueError: the state is incomplete or its parts do not fit together.
        """
        try:
            params = state["params"]
            self.scene_scale = state["scene_scale"]
            self._optimizer = None
            if params:
                sh = torch.cat([params["sh0"], params["sh_rest"]], dim=1)
                gaussians = Gaussians(
                    params["means"],
                    params["quats"],
                    params["log_scales"],
                    params["opacity_logits"],
                    sh,
                ).to(device=self.device, dtype=torch.float32)
                self._optimizer = GaussianOptimizer(
                    gaussians, self.scene_scale or 1.0, self.config.learning_rates
                )
                self._optimizer.optimizer.load_state_dict(state["optimizer"])
            count = len(self)
            for name in ("observed", "grad_sum", "grad_count"):
                if len(state[name]) != count:
                    raise ValueError(f"{name} has {len(state[name])} entries for {count} Gaussians")
            self._observed = state["observed"].clone().bool()
            self._grad_sum = state["grad_sum"].clone().float()
            self._grad_count = state["grad_count"].clone().float()
            self.steps = int(state["steps"])
            self.skipped_steps = int(state["skipped_steps"])
            self.last_loss = state["last_loss"]
            self._epoch = [int(i) for i in state["epoch"]]
            self._rng.bit_generator.state = state["numpy_rng"]
            self._generator.set_state(state["torch_rng"])
            self.set_progress(float(state["progress"]))
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"not a GaussianMap state: {err!r}") from err

    # ------------------------------------------------------------------ growing

    def add_generated(self, gaussians: Gaussians) -> None:
        """Seed the map with generated Gaussians; frames with depth replace what they see."""
        self._append(gaussians, observed=False)

    def add_observed(self, gaussians: Gaussians) -> None:
        """Add Gaussians that come from observations (e.g. a capture's sparse points)."""
        self._append(gaussians, observed=True)

    def add_points(self, points: Tensor, colors: Tensor, opacity: float = 0.1) -> None:
        """Add observed points (N, 3) with colours (N, 3) in [0, 1] as isotropic Gaussians, the
        3DGS initialisation: scale = mean distance to the 3 nearest neighbours."""
        from scipy.spatial import cKDTree

        points = torch.as_tensor(points, dtype=torch.float32)
        if len(points) == 0:
            return
        if self.scene_scale is None:  # before the optimizer exists: it scales the position lr
            center = points.median(dim=0).values
            self.scene_scale = float((points - center).norm(dim=1).median().clamp_min(1e-3))
        k = min(4, len(points))
        distances, _ = cKDTree(points.numpy()).query(points.numpy(), k=k)
        mean = distances[:, 1:].mean(axis=1) if k > 1 else np.full(len(points), 0.01)
        scale = torch.from_numpy(np.clip(mean, 1e-4, None)).float()[:, None].expand(-1, 3)
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(points), 4)
        self.add_observed(
            Gaussians.from_activated(
                means=points,
                quats=quats.contiguous(),
                scales=scale.contiguous(),
                opacities=torch.full((len(points),), float(opacity)),
                colors=torch.as_tensor(colors, dtype=torch.float32).clamp(0, 1),
            )
        )

    def integrate(self, frame: PosedFrame, refine: bool = True) -> IntegrationResult:
        """Add what ``frame`` shows that the map lacks, maybe keep it as a keyframe, refine."""
        added, replaced, coverage = self._add_depth(frame)
        keyframe = self._is_keyframe(frame, coverage)
        steps, loss = 0, None
        if keyframe:
            self._keep_keyframe(frame)
            if refine and self.config.steps_per_keyframe:
                loss = self.refine(self.config.steps_per_keyframe)
                steps = self.config.steps_per_keyframe
        return IntegrationResult(added, replaced, keyframe, steps, loss, coverage)

    def add_depth(self, frame: PosedFrame) -> int:
        """Add Gaussians from ``frame``'s depth where the map lacks them (as :meth:`integrate`
        does, and generated content it sees is dropped), without keyframes or refinement.

        Returns:
            The number of Gaussians added (0 for a frame without depth).
        """
        return self._add_depth(frame)[0]

    def add_keyframe(self, frame: PosedFrame) -> None:
        """Keep ``frame`` as a keyframe (at 1/``refine_downscale`` resolution) without adding
        Gaussians or refining: offline fitting registers every training view this way."""
        self._keep_keyframe(frame)

    def _add_depth(self, frame: PosedFrame) -> tuple[int, int, float]:
        """(added, replaced generated, coverage of the frame before adding)."""
        if self.scene_scale is None and frame.depth is not None:
            valid = frame.depth[frame.depth > 0]
            if len(valid):
                self.scene_scale = float(valid.median())
        rendered = self._render_frame(frame)
        covered = rendered.alpha[0, ..., 0] > self.config.add_alpha_threshold
        if frame.depth is not None and bool((frame.depth > 0).any()):
            covered = covered[frame.depth.to(covered.device) > 0]  # what the frame can map
        coverage = float(covered.float().mean())
        added = replaced = 0
        if frame.depth is not None:
            replaced = self._replace_generated(frame)
            if replaced:
                rendered = self._render_frame(frame)
            added = self._add_from_depth(frame, rendered)
        return added, replaced, coverage

    def _render_frame(self, frame: PosedFrame):
        with torch.no_grad():
            return render(
                self.gaussians(),
                frame.camera(self.device),
                background=self.config.background,
            )

    def _replace_generated(self, frame: PosedFrame) -> int:
        generated = ~self._observed
        if self._optimizer is None or not bool(generated.any()):
            return 0
        means = self._optimizer.params["means"].detach()
        seen = seen_by_depth(means, frame.depth, frame.intrinsics, frame.camtoworld)
        drop = seen & generated.to(seen.device)
        if bool(drop.any()):
            self._keep(~drop)
        return int(drop.sum())

    def _add_from_depth(self, frame: PosedFrame, rendered) -> int:
        assert frame.depth is not None
        measured = frame.depth.to(self.device)
        alpha = rendered.alpha[0, ..., 0]
        rendered_depth = rendered.depth[0, ..., 0]
        valid = (measured >= self.config.min_depth) & (measured <= self.config.max_depth)
        unobserved = alpha < self.config.add_alpha_threshold
        both = valid & ~unobserved
        in_front = torch.zeros_like(unobserved)
        if bool(both.any()):
            error = (rendered_depth[both] - measured[both]).abs().median()
            margin = self.config.add_depth_factor * error
            in_front = both & (measured < rendered_depth - margin)
        mask = valid & (unobserved | in_front)
        if not bool(mask.any()):
            return 0
        new = gaussians_from_rgbd(
            frame.rgb,
            frame.depth,
            frame.intrinsics,
            frame.camtoworld,
            stride=self.config.pixel_stride,
            opacity=self.config.new_opacity,
            min_depth=self.config.min_depth,
            max_depth=self.config.max_depth,
            mask=mask.cpu(),
            orient=self.config.orient,
        )
        self._append(new, observed=True)
        return len(new)

    def _append(self, gaussians: Gaussians, observed: bool | Tensor) -> None:
        """Add Gaussians flagged observed (one flag for all, or (N,) flags); keep the budget."""
        if len(gaussians) == 0:
            return
        gaussians = gaussians.to(device=self.device, dtype=torch.float32)
        if self._optimizer is None:
            if self.config.sh_degree is not None:
                gaussians = gaussians.with_sh_degree(self.config.sh_degree)
            self._optimizer = GaussianOptimizer(
                gaussians, self.scene_scale or 1.0, self.config.learning_rates
            )
            self._optimizer.set_position_lr_factor(self.position_lr_factor)
        else:
            self._optimizer.append(gaussians)
        if isinstance(observed, bool):
            observed = torch.full((len(gaussians),), observed, dtype=torch.bool)
        self._observed = torch.cat([self._observed, observed.cpu()])
        self._grad_sum = torch.cat([self._grad_sum, torch.zeros(len(gaussians))])
        self._grad_count = torch.cat([self._grad_count, torch.zeros(len(gaussians))])
        self._enforce_budget()

    def _keep(self, mask: Tensor) -> None:
        assert self._optimizer is not None
        mask = mask.cpu()
        self._optimizer.keep(mask)
        self._observed = self._observed[mask]
        self._grad_sum = self._grad_sum[mask]
        self._grad_count = self._grad_count[mask]

    def _enforce_budget(self) -> None:
        excess = len(self) - self.config.max_gaussians
        if excess <= 0:
            return
        assert self._optimizer is not None
        opacity = torch.sigmoid(self._optimizer.params["opacity_logits"].detach()).cpu()
        drop = torch.topk(opacity, excess, largest=False).indices
        mask = torch.ones(len(self), dtype=torch.bool)
        mask[drop] = False
        self._keep(mask)

    # ------------------------------------------------------------------ keyframes

    def _is_keyframe(self, frame: PosedFrame, coverage: float) -> bool:
        if not self.keyframes:
            return True
        last = self.keyframes[-1].camtoworld
        moved = float((frame.camtoworld[:3, 3] - last[:3, 3]).norm())
        relative = last[:3, :3].T @ frame.camtoworld[:3, :3]
        cos_angle = ((torch.trace(relative) - 1.0) / 2.0).clamp(-1.0, 1.0)
        turned = math.degrees(math.acos(float(cos_angle)))
        return (
            moved >= self.config.keyframe_translation
            or turned >= self.config.keyframe_rotation_deg
            or coverage < self.config.keyframe_coverage
        )

    def _keep_keyframe(self, frame: PosedFrame) -> None:
        self.keyframes.append(frame.downscaled(self.config.refine_downscale))
        if len(self.keyframes) > self.config.max_keyframes:
            # Thin out the older half (every other one), keep the window intact.
            old = len(self.keyframes) - self.config.window
            thinned = self.keyframes[:old:2] + self.keyframes[old:]
            self.keyframes = thinned

    # ------------------------------------------------------------------ refinement

    def refine(self, steps: int) -> float | None:
        """Run ``steps`` optimisation steps over the keyframes; the mean loss (None if none)."""
        if self._optimizer is None or not self.keyframes or steps <= 0:
            return None
        losses = []
        for _ in range(steps):
            loss = self._refine_step(self._pick_keyframe())
            if loss is not None:
                losses.append(loss)
            if self.steps % self.config.prune_every == 0:
                self._prune()
            if self._densifies() and self.steps % self.config.densify_every == 0:
                self._densify()
        self.last_loss = float(np.mean(losses)) if losses else self.last_loss
        return self.last_loss

    def _pick_keyframe(self) -> PosedFrame:
        if self.config.sampling == "epoch":
            self._epoch = [i for i in self._epoch if i < len(self.keyframes)]
            if not self._epoch:
                self._epoch = self._rng.permutation(len(self.keyframes)).tolist()
            return self.keyframes[self._epoch.pop()]
        window = self.keyframes[-self.config.window :]
        older = self.keyframes[: -self.config.window]
        choices = list(window)
        if older and self.config.old_keyframes:
            picks = self._rng.choice(len(older), min(len(older), self.config.old_keyframes), False)
            choices += [older[i] for i in picks]
        return choices[int(self._rng.integers(len(choices)))]

    def _refine_step(self, frame: PosedFrame) -> float | None:
        assert self._optimizer is not None
        self.steps += 1
        gaussians = self._optimizer.gaussians()
        out = render(gaussians, frame.camera(self.device), background=self.config.background)
        target = frame.rgb.to(self.device)
        rgb = out.rgb[0]
        l1 = (rgb - target).abs().mean()
        loss = (1.0 - self.config.ssim_weight) * l1
        if self.config.ssim_weight and min(frame.width, frame.height) >= 11:
            loss = loss + self.config.ssim_weight * (1.0 - ssim(rgb, target))
        if frame.depth is not None and self.config.depth_weight:
            measured = frame.depth.to(self.device)
            valid = measured > 0
            if bool(valid.any()):
                depth_error = (out.depth[0, ..., 0] - measured).abs()[valid].mean()
                loss = loss + self.config.depth_weight * depth_error
        if not bool(torch.isfinite(loss)):
            self.skipped_steps += 1
            self._optimizer.optimizer.zero_grad(set_to_none=True)
            return None
        track = self._densifies() and out.means2d is not None
        if track:
            out.means2d.retain_grad()
        loss.backward()
        if track and out.means2d.grad is not None:
            self._track_gradients(out.means2d.grad[0], frame)
        if not self._optimizer.step():
            self.skipped_steps += 1
            return None
        return float(loss.detach())

    # ------------------------------------------------------------------ prune and densify

    def _prune(self) -> None:
        if self._optimizer is None or len(self) == 0:
            return
        p = self._optimizer.params
        opacity = torch.sigmoid(p["opacity_logits"].detach())
        largest = p["log_scales"].detach().exp().amax(dim=-1)
        limit = self.config.prune_scale * (self.scene_scale or 1.0)
        keep = (opacity >= self.config.prune_opacity) & (largest <= limit)
        if not bool(keep.all()):
            self._keep(keep.cpu())

    def _densifies(self) -> bool:
        if self._progress >= self.config.densify_until and self.config.densify_until < 1.0:
            return False
        if self.config.densify == "always":
            return True
        if self.config.densify == "never":
            return False
        return any(frame.depth is None for frame in self.keyframes[-self.config.window :])

    def _track_gradients(self, grad: Tensor, frame: PosedFrame) -> None:
        # Pixel gradients to NDC units, as 3DGS's threshold expects.
        ndc = grad.detach().cpu() * torch.tensor([frame.width / 2.0, frame.height / 2.0])
        norm = ndc.norm(dim=-1)
        seen = norm > 0
        self._grad_sum[seen] += norm[seen]
        self._grad_count[seen] += 1

    def _densify(self) -> None:
        assert self._optimizer is not None
        mean_grad = self._grad_sum / self._grad_count.clamp_min(1)
        chosen = mean_grad > self.config.densify_grad_threshold
        self._grad_sum.zero_()
        self._grad_count.zero_()
        room = self.config.max_gaussians - len(self)
        if not bool(chosen.any()) or room <= 0:
            return
        index = torch.nonzero(chosen).flatten()
        index = index[torch.argsort(mean_grad[index], descending=True)][:room]
        current = self._optimizer.snapshot().to("cpu")[index]
        small = current.scales.amax(dim=-1) <= self.config.clone_scale * (self.scene_scale or 1.0)
        clones = current[small]
        large = current[~small]
        if len(large):
            # Split: two children sampled inside the parent, scales / 1.6 (3DGS).
            samples = torch.randn(len(large), 3, generator=self._generator) * large.scales
            rotation = quat_to_rotmat(large.quats)
            offset = (rotation @ samples[..., None])[..., 0]
            child = Gaussians(
                means=large.means + offset,
                quats=large.quats,
                log_scales=large.log_scales - math.log(1.6),
                opacity_logits=large.opacity_logits,
                sh=large.sh,
            )
            self._optimizer.replace(index[~small], child)
            twin = Gaussians(
                means=large.means - offset,
                quats=large.quats,
                log_scales=child.log_scales,
                opacity_logits=large.opacity_logits,
                sh=large.sh,
            )
            clones = Gaussians.cat([clones, twin])
        flags = self._observed[index]
        self._append(clones, torch.cat([flags[small], flags[~small]]))
