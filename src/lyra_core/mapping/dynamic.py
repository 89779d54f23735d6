"""RGB-D video to a 4D world: a static background map plus per-time Gaussians of what moves.

:class:`DynamicMapper` takes posed RGB-D frames with stamps (:class:`PosedFrame`, seconds) and
builds a 4D :class:`~lyra_core.scene.gaussians.Gaussians`
(:meth:`~lyra_core.scene.gaussians.Gaussians.from_time_slices`): the static background fused
and refined by a :class:`GaussianMap`, and one time slice per frame holding the pixels of that
frame the static map does not explain, at the frame's time relative to the first frame's stamp.

Two passes over the stored frames (:meth:`DynamicMapper.build`):

1. **Free-space test** (what moved): every pixel of frame ``i`` with depth is unprojected to a
   point ``X`` and looked up in up to ``consistency_frames`` other frames spread over the video
   (:func:`~lyra_core.scene.visibility.lookup_depth`). Frame ``j`` *sees through* ``X`` when
   its depth at ``X``'s pixel (the smallest over the 3x3 neighbourhood, so a depth edge never
   votes) lies behind ``X`` by more than the margin ``max(depth_tolerance * z, min_margin)``: at
   frame ``j``'s time the space at ``X`` was empty, so ``X`` is not static. It *agrees* when the
   depths match within the margin; a nearer surface (occlusion) or no depth gives no vote. ``X``
   is dynamic when at least ``min_votes`` frames and a share ``free_space_ratio`` of the voting
   ones see through it. Those pixels (dilated by ``exclude_dilate``) are left out of the static
   map: their depth is zeroed (not fused) and, for refinement, their colour is replaced by the
   static map's own render (they say nothing about the background behind the moving thing).
2. **Residual** (what the static map lacks): every frame is compared with the static map
   rendered at its pose; a pixel with depth is dynamic when pass 1 flagged it, the map does not
   cover it (alpha below the map's ``add_alpha_threshold``), its measured depth is in front of
   the rendered one by more than the margin, or its colour differs by more than
   ``color_threshold`` (mean absolute RGB difference). After a morphological opening
   (``mask_open``, which drops specks at texture and depth edges) the dynamic pixels become
   discs (:func:`~lyra_core.scene.rgbd.gaussians_from_rgbd`), the frame's time slice. A frame
   without dynamic pixels gives an empty slice: at its time only the static map shows.

Render the result with ``render(world, cameras, time=t)`` where ``t`` is a stamp minus
:attr:`DynamicMapper.time_origin` (the first stored frame's stamp); ``"step"`` mode shows the
nearest frame's slice.

Bounds: at most ``max_frames`` frames are stored (the oldest are dropped), each slice holds at
most ``max_gaussians_per_slice`` Gaussians and all slices together at most
``max_dynamic_gaussians`` (a seeded subsample of the dynamic pixels beyond them); the static map
has its own budget (``map.max_gaussians``). Deterministic for a given frame sequence and seed.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.gaussian_map import GaussianMap, MapConfig
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import ORIENTATIONS, gaussians_from_rgbd
from lyra_core.scene.visibility import lookup_depth

__all__ = ["DynamicMapper", "DynamicMapperConfig", "fit_dynamic", "static_map_config"]


def static_map_config(**overrides: Any) -> MapConfig:
    """The static map's default settings: offline fusion of every pixel (no refinement while
    adding, every frame kept as a keyframe, each visited once per epoch; a coarser map leaves
    static pixels it renders poorly, which pass 2 then takes for moving ones); ``overrides``
    replace fields."""
    settings: dict[str, Any] = {
        "pixel_stride": 1,
        "steps_per_keyframe": 0,
        "max_keyframes": 1024,
        "sampling": "epoch",
        "densify": "never",
    }
    settings.update(overrides)
    return MapConfig(**settings)


@dataclass
class DynamicMapperConfig:
    """Settings of a :class:`DynamicMapper` (units: meters, seconds, pixels).

    Attributes:
        max_frames: frames stored; adding more drops the oldest.
        map: settings of the static map (:func:`static_map_config`).
        refine_steps: refinement steps of the static map after fusion (0: none).
        refine_seconds: also stop refining after this many seconds (None: no limit).
        consistency_frames: other frames each frame is checked against in pass 1 (spread
            evenly over the stored frames).
        depth_tolerance: two depths are the same surface within this share of the depth.
        min_margin: smallest depth margin, meters (depth noise floor).
        free_space_ratio: share of the voting frames that must see through a point for it to
            be dynamic.
        min_votes: and at least this many frames (fewer when fewer frames are stored).
        exclude_dilate: pixels around the pass-1 dynamic pixels also left out of the static
            map (a margin at the silhouette of what moves).
        color_threshold: mean absolute RGB difference from the static render that makes a
            pixel dynamic in pass 2 (1: colour never does).
        mask_open: side of the square kernel of the opening applied to the pass-2 mask
            (1: none).
        pixel_stride: dynamic Gaussians from every n-th pixel per axis.
        opacity: opacity of the dynamic Gaussians.
        orient: orientation of the dynamic discs (:func:`gaussians_from_rgbd`).
        max_gaussians_per_slice: budget of one time slice.
        max_dynamic_gaussians: budget of all time slices together.
        seed: seed of the subsampling beyond the budgets (the static map has ``map.seed``).
        show_progress: tqdm bars while building.
    """

    max_frames: int = 64
    map: MapConfig = field(default_factory=static_map_config)
    refine_steps: int = 0
    refine_seconds: float | None = None
    consistency_frames: int = 8
    depth_tolerance: float = 0.05
    min_margin: float = 0.02
    free_space_ratio: float = 0.3
    min_votes: int = 2
    exclude_dilate: int = 2
    color_threshold: float = 0.25
    mask_open: int = 3
    pixel_stride: int = 1
    opacity: float = 0.95
    orient: str = "camera"
    max_gaussians_per_slice: int = 100_000
    max_dynamic_gaussians: int = 2_000_000
    seed: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_frames", "consistency_frames", "min_votes", "mask_open"):
            _check_int(name, getattr(self, name), 1)
        for name in ("pixel_stride", "max_gaussians_per_slice", "max_dynamic_gaussians"):
            _check_int(name, getattr(self, name), 1)
        _check_int("refine_steps", self.refine_steps, 0)
        _check_int("exclude_dilate", self.exclude_dilate, 0)
        for name in ("depth_tolerance", "min_margin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("free_space_ratio", "color_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not 0.0 < self.opacity < 1.0:
            raise ValueError(f"opacity must be in (0, 1), got {self.opacity!r}")
        if self.refine_seconds is not None and not self.refine_seconds > 0:
            raise ValueError(f"refine_seconds must be > 0 or None, got {self.refine_seconds!r}")
        if self.orient not in ORIENTATIONS:
            raise ValueError(
                f"orient must be one of {', '.join(ORIENTATIONS)}, got {self.orient!r}"
            )


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class DynamicMapper:
    """RGB-D video to a 4D world (module docstring).

    Use: ``mapper.add(frame)`` for each frame in time order, then ``world = mapper.build()``;
    :meth:`reset` forgets the frames. :attr:`stats` and :attr:`dynamic_masks` describe the last
    build.

    Args:
        config: settings.
        device: where the static map lives and renders.
    """

    def __init__(
        self, config: DynamicMapperConfig | None = None, device: torch.device | str = "cpu"
    ):
        self.config = config or DynamicMapperConfig()
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget the stored frames and the last build."""
        self.frames: collections.deque[PosedFrame] = collections.deque(
            maxlen=self.config.max_frames
        )
        self.dropped = 0
        self.static_map: GaussianMap | None = None
        self.dynamic_masks: list[Tensor] = []
        self.stats: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def time_origin(self) -> float | None:
        """Stamp of the first stored frame (world time 0), seconds; None without frames."""
        return self.frames[0].stamp if self.frames else None

    def add(self, frame: PosedFrame) -> None:
        """Store ``frame`` (the oldest stored frame is dropped beyond ``max_frames``).

        Raises:
            ValueError: a frame without depth, a non-finite stamp, or a stamp not after the
                last stored frame's.
        """
        if frame.depth is None or not bool((frame.depth > 0).any()):
            raise ValueError(f"{frame.label}: dynamic mapping needs depth (the frame has none)")
        if not math.isfinite(frame.stamp):
            raise ValueError(f"{frame.label}: stamp must be finite, got {frame.stamp!r}")
        if self.frames and not frame.stamp > self.frames[-1].stamp:
            raise ValueError(
                f"{frame.label}: stamps must increase: {frame.stamp!r} s is not after the last "
                f"frame's {self.frames[-1].stamp!r} s"
            )
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1
        self.frames.append(frame)

    def extend(self, frames: Iterable[PosedFrame]) -> None:
        """:meth:`add` every frame of ``frames``."""
        for frame in frames:
            self.add(frame)

    def times(self) -> list[float]:
        """World times of the stored frames: stamps minus :attr:`time_origin`, seconds."""
        origin = self.time_origin
        return [frame.stamp - origin for frame in self.frames] if self.frames else []

    # ------------------------------------------------------------------ build

    def build(self) -> Gaussians:
        """The 4D world of the stored frames: the static map (``durations = inf``) plus one
        time slice per frame (module docstring).

        Raises:
            ValueError: no frame stored.
        """
        if not self.frames:
            raise ValueError("no frames: add posed RGB-D frames before build()")
        cfg = self.config
        start = time.perf_counter()
        frames = list(self.frames)
        show = cfg.show_progress
        moving = [
            self._free_space_mask(i, frames)
            for i in tqdm(range(len(frames)), desc="4d: free space", disable=not show)
        ]
        static_map = self._fuse_static(frames, moving, show)
        generator = torch.Generator().manual_seed(cfg.seed)
        per_slice = min(cfg.max_gaussians_per_slice, cfg.max_dynamic_gaussians // len(frames))
        per_slice = max(per_slice, 1)
        static = static_map.gaussians()
        slices, masks = [], []
        for frame, first_pass in tqdm(
            list(zip(frames, moving, strict=True)), desc="4d: slices", disable=not show
        ):
            mask = self._residual_mask(frame, first_pass, static)
            masks.append(mask.cpu())
            slices.append(self._slice(frame, mask, per_slice, generator, static))
        stamps = self.times()
        world = Gaussians.from_time_slices(slices, stamps, static=static)
        self.static_map = static_map
        self.dynamic_masks = masks
        self.stats = {
            "frames": len(frames),
            "dropped_frames": self.dropped,
            "time_origin": self.time_origin,
            "time_range": world.time_range,
            "static_gaussians": len(static),
            "dynamic_gaussians": sum(len(s) for s in slices),
            "slice_gaussians": [len(s) for s in slices],
            "free_space_fraction": [round(float(m.float().mean()), 5) for m in moving],
            "dynamic_fraction": [round(float(m.float().mean()), 5) for m in masks],
            "refine_steps": static_map.steps,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return world

    # ------------------------------------------------------------------ pass 1

    def _margin(self, z: Tensor) -> Tensor:
        return torch.clamp_min(self.config.depth_tolerance * z, self.config.min_margin)

    def _free_space_mask(self, i: int, frames: Sequence[PosedFrame]) -> Tensor:
        """(H, W) bool: pixels of frame ``i`` whose point other frames see through."""
        frame = frames[i]
        assert frame.depth is not None
        depth = frame.depth.to(self.device)
        valid = depth > 0
        points = _unproject(depth, frame)[valid]
        through = torch.zeros(len(points), dtype=torch.int32, device=self.device)
        agree = torch.zeros_like(through)
        for j in _spread(i, len(frames), self.config.consistency_frames):
            other = frames[j]
            assert other.depth is not None
            other_depth = other.depth.to(self.device)
            nearest = -torch.nn.functional.max_pool2d(
                -other_depth[None, None], 3, stride=1, padding=1
            )[0, 0]  # 3x3 minimum: a depth edge never sees through
            found = lookup_depth(points, nearest, other.intrinsics, other.camtoworld)
            measured = torch.zeros_like(found.z)
            inside = found.inside
            measured[inside] = other_depth[found.v[inside], found.u[inside]]
            margin = self._margin(found.z)
            ok = inside & (found.measured > 0)
            through += (ok & (found.measured > found.z + margin)).int()
            agree += (inside & (measured > 0) & ((measured - found.z).abs() <= margin)).int()
        votes = through + agree
        needed = min(self.config.min_votes, max(len(frames) - 1, 1))
        dynamic = (through >= needed) & (through >= self.config.free_space_ratio * votes)
        mask = torch.zeros_like(valid)
        mask[valid] = dynamic
        return _open(mask.cpu(), self.config.mask_open)

    # ------------------------------------------------------------------ static map

    def _fuse_static(
        self, frames: Sequence[PosedFrame], moving: Sequence[Tensor], show: bool
    ) -> GaussianMap:
        cfg = self.config
        static_map = GaussianMap(cfg.map, device=self.device)
        excluded = [_dilate(m.cpu(), cfg.exclude_dilate) for m in moving]
        masked = [
            replace(f, depth=torch.where(m, 0.0, f.depth))
            for f, m in zip(frames, excluded, strict=True)
        ]
        for frame in tqdm(masked, desc="4d: static fusion", disable=not show):
            static_map.add_depth(frame)
        if not cfg.refine_steps:
            return static_map
        background = static_map.gaussians()
        for frame, mask in zip(masked, excluded, strict=True):
            if bool(mask.any()):
                with torch.no_grad():
                    own = render(
                        background, frame.camera(self.device), background=cfg.map.background
                    )
                rgb = torch.where(mask[..., None], own.rgb[0].cpu(), frame.rgb)
                frame = replace(frame, rgb=rgb)
            static_map.add_keyframe(frame)
        start = time.perf_counter()
        bar = tqdm(total=cfg.refine_steps, desc="4d: refine static", disable=not show)
        for step in range(cfg.refine_steps):
            elapsed = time.perf_counter() - start
            if cfg.refine_seconds is not None and elapsed >= cfg.refine_seconds:
                break
            shares = [step / cfg.refine_steps]
            if cfg.refine_seconds is not None:
                shares.append(elapsed / cfg.refine_seconds)
            static_map.set_progress(min(1.0, max(shares)))
            static_map.refine(1)
            bar.update(1)
        bar.close()
        return static_map

    # ------------------------------------------------------------------ pass 2

    def _residual_mask(self, frame: PosedFrame, first_pass: Tensor, static: Gaussians) -> Tensor:
        """(H, W) bool: pixels of ``frame`` the static map does not explain."""
        assert frame.depth is not None
        cfg = self.config
        depth = frame.depth.to(self.device)
        valid = (depth >= cfg.map.min_depth) & (depth <= cfg.map.max_depth)
        with torch.no_grad():
            out = render(static, frame.camera(self.device), background=cfg.map.background)
        alpha = out.alpha[0, ..., 0]
        rendered = out.depth[0, ..., 0]
        covered = alpha >= cfg.map.add_alpha_threshold
        in_front = covered & (depth < rendered - self._margin(depth))
        color = covered & (
            (out.rgb[0] - frame.rgb.to(self.device)).abs().mean(-1) > cfg.color_threshold
        )
        residual = ((~covered | in_front | color) & valid).cpu()
        return _open(residual, cfg.mask_open) | first_pass.cpu()

    def _slice(
        self,
        frame: PosedFrame,
        mask: Tensor,
        budget: int,
        generator: torch.Generator,
        static: Gaussians,
    ) -> Gaussians:
        cfg = self.config
        if not bool(mask.any()):
            return Gaussians.empty(static.sh_degree, device=static.device)
        new = gaussians_from_rgbd(
            frame.rgb,
            frame.depth,
            frame.intrinsics,
            frame.camtoworld,
            stride=cfg.pixel_stride,
            opacity=cfg.opacity,
            min_depth=cfg.map.min_depth,
            max_depth=cfg.map.max_depth,
            mask=mask,
            orient=cfg.orient,
        )
        if len(new) > budget:
            keep = torch.randperm(len(new), generator=generator)[:budget].sort().values
            new = new[keep]
        return new.to(static.device).with_sh_degree(static.sh_degree)


def fit_dynamic(
    frames: Iterable[PosedFrame],
    config: DynamicMapperConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Gaussians, dict[str, Any]]:
    """A 4D world from posed RGB-D frames in time order: ``(world, stats)``
    (:class:`DynamicMapper`; world time 0 is the first frame's stamp, ``stats["time_origin"]``).
    """
    mapper = DynamicMapper(config, device=device)
    mapper.extend(frames)
    world = mapper.build()
    return world, mapper.stats


def _unproject(depth: Tensor, frame: PosedFrame) -> Tensor:
    """(H, W, 3) world points of every pixel of ``depth`` (meters, OpenCV camera)."""
    k = frame.intrinsics
    v, u = torch.meshgrid(
        torch.arange(frame.height, device=depth.device, dtype=depth.dtype),
        torch.arange(frame.width, device=depth.device, dtype=depth.dtype),
        indexing="ij",
    )
    points = torch.stack([(u - k.cx) / k.fx * depth, (v - k.cy) / k.fy * depth, depth], -1)
    pose = frame.camtoworld.to(depth)
    return points @ pose[:3, :3].T + pose[:3, 3]


def _spread(i: int, count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` frame indices other than ``i``, spread evenly over ``range(count)``."""
    others = [j for j in range(count) if j != i]
    if len(others) <= wanted:
        return others
    picks = np.linspace(0, len(others) - 1, wanted).round().astype(int)
    return [others[p] for p in sorted(set(picks.tolist()))]


def _dilate(mask: Tensor, radius: int) -> Tensor:
    if radius == 0 or not bool(mask.any()):
        return mask
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return torch.from_numpy(cv2.dilate(mask.numpy().astype(np.uint8), kernel) > 0)


def _open(mask: Tensor, size: int) -> Tensor:
    if size <= 1 or not bool(mask.any()):
        return mask
    kernel = np.ones((size, size), np.uint8)
    opened = cv2.morphologyEx(mask.numpy().astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return torch.from_numpy(opened > 0)
