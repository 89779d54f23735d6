"""Inference with a trained Lyra student: one camera image (+ depth) -> a Gaussian world.

:class:`LyraWorldPipeline` composes a :class:`lyra_core.pipelines.student.LyraStudent` and the
:class:`lyra_core.pipelines.student.StudentConfig` it was trained with, like a diffusers pipeline,
and
feeds the student exactly what it saw in training (:mod:`lyra_core.data.generator`):

1. **cache** -- the image is centre-cropped to the model's aspect ratio and resized to its
   W x H (colour: area averaging; depth: nearest), with the intrinsics cropped and scaled to
   match. The view is unprojected with its depth
   (:func:`lyra_core.pipelines.cache3d.cache_gaussians`),
   ``scene_depth`` is the median valid depth, the six Lyra trajectories start at the input
   camera (:func:`lyra_core.geometry.trajectories.lyra_trajectories`, the training ``num_frames``
   and
   ``movement_scale``, a fixed seed), and the cache is rendered along them over black
   (:func:`lyra_core.pipelines.cache3d.render_cache`, uint8, the generator's own function).
2. **encode** -- the cache videos through the student's video VAE.
3. **decode** -- the latents and cameras through the decoder, pruned by opacity
   (:meth:`lyra_core.models.decoder.DecoderOutput.to_gaussians`).

Gaussians come out in the frame of ``camtoworld`` (the world frame). The decoder reads Plucker
rays of world-frame cameras, so inputs are in distribution when the world looks like the
training data: z up, the floor near z = 0 (a ROS map frame does).

Without depth: Lyra estimates it with a monocular depth network, which this project cannot
ship. The pipeline then calls ``depth_estimator`` when one is given, and otherwise assumes a
fronto-parallel plane at ``assumed_depth`` meters: the cache is the image on that plane, so the
world keeps the input view's appearance but has no measured geometry.

**Lyra-1.** :meth:`LyraWorldPipeline.from_pretrained` also reads a Lyra-1 student folder
(``student.json`` with ``"model": "lyra1"``, ``decoder/`` from ``lyra import-checkpoint``,
``tokenizer/`` with the released Cosmos TorchScript files; layout and fields in
:mod:`lyra_core.pipelines.lyra1`) and runs it through
:class:`~lyra_core.pipelines.lyra1.Lyra1Student` with the same three stages, at the student's
size (Lyra-1: 704 x 1280, 121 frames), with these differences:

- the six trajectories are rendered and fed in Lyra-1's view order
  (:data:`~lyra_core.pipelines.lyra1.LYRA1_VIEW_ORDER`; ``LyraWorldOutput.videos`` and
  ``camtoworlds`` follow it);
- the decoder reads its cameras relative to the first frame of the first view (as Lyra-1 was
  trained), and the Gaussians are moved back into the world frame (means and rotations);
- videos are encoded one at a time and Plucker rays one view at a time, in bf16 on CUDA, and
  each model sits on the device only while it runs (``offload`` in ``student.json``);
- a dynamic decoder is asked for the scene at the input frame (target time 0).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import lyra_trajectories
from lyra_core.geometry.transforms import rigid_inverse
from lyra_core.pipelines.cache3d import DEFAULT_BATCH_SIZE, cache_gaussians, render_cache
from lyra_core.pipelines.lyra1 import (
    LYRA1_VIEW_ORDER,
    Lyra1Student,
    is_lyra1_folder,
    load_lyra1_folder,
)
from lyra_core.pipelines.student import LyraStudent, StudentConfig
from lyra_core.scene.gaussians import Gaussians

DepthEstimator = Callable[[np.ndarray, Intrinsics], np.ndarray]
"""``depth_estimator(rgb, intrinsics) -> depth``: (H, W, 3) uint8 and its intrinsics to (H, W)
depth in meters along the optical axis (0 or NaN where unknown)."""

DEFAULT_ASSUMED_DEPTH = 3.0
"""Meters to the fronto-parallel plane assumed without depth (a room-sized scene)."""

TRAJECTORY_SEED = 0
"""Seed of the trajectory magnitudes: fixed, so inference is deterministic."""

__all__ = [
    "DEFAULT_ASSUMED_DEPTH",
    "TRAJECTORY_SEED",
    "DepthEstimator",
    "LyraWorldOutput",
    "LyraWorldPipeline",
    "fit_view",
]


@dataclass
class LyraWorldOutput:
    """A built world and what the student read to build it.

    Attributes:
        gaussians: the world, in the frame of the input ``camtoworld``.
        videos: (V, N, H, W, 3) uint8 3D-cache renders, the student's input.
        camtoworlds: (V, N, 4, 4) float32 trajectory cameras; Ks: (V, N, 3, 3).
        scene_depth: median valid input depth, meters (the trajectories' scale).
        depth_source: ``"input"``, ``"estimator"`` or ``"plane"`` (see the module docstring).
        timings: seconds per stage: ``cache``, ``encode``, ``decode`` and ``total``.
    """

    gaussians: Gaussians
    videos: Tensor
    camtoworlds: Tensor
    Ks: Tensor
    scene_depth: float
    depth_source: str
    timings: dict[str, float] = field(default_factory=dict)


def fit_view(
    rgb: Tensor,
    depth: Tensor | None,
    intrinsics: Intrinsics,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor | None, Intrinsics]:
    """Centre-crop a view to the aspect ratio of ``width x height``, then resize it to that.

    The crop keeps the full height of a wider image (full width of a taller one), so nothing is
    stretched; the principal point moves with the crop and everything scales about the pixel
    corners (:meth:`Intrinsics.crop`, :meth:`Intrinsics.resize`). Colour is area-averaged (pixels
    repeat when upsampling), depth takes the nearest pixel (no mixing across edges or invalid
    pixels).

    Args:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 meters, or None.
        intrinsics: of the H x W view.
        width, height: the model's input size, pixels.

    Returns:
        (height, width, 3) uint8, (height, width) float32 or None, and their intrinsics.
    """
    src_w, src_h = intrinsics.width, intrinsics.height
    crop_w = min(src_w, round(src_h * width / height))
    crop_h = min(src_h, round(src_w * height / width))
    x0, y0 = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    fitted = intrinsics.crop(x0, y0, crop_w, crop_h).resize(width, height)
    rows, cols = slice(y0, y0 + crop_h), slice(x0, x0 + crop_w)
    rgb = _resize(rgb[rows, cols].permute(2, 0, 1).float(), height, width, "area")
    rgb = rgb.permute(1, 2, 0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
    if depth is not None:
        depth = _resize(depth[rows, cols][None].float(), height, width, "nearest-exact")[0]
    return rgb, depth, fitted


def _resize(image: Tensor, height: int, width: int, mode: str) -> Tensor:
    """(C, h, w) -> (C, height, width); unchanged when already that size."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    return F.interpolate(image[None], size=(height, width), mode=mode)[0]


@dataclass
class _StudentInputs:
    """The cache stage's result, on the CPU (fields as in :class:`LyraWorldOutput`)."""

    videos: Tensor
    camtoworlds: Tensor
    Ks: Tensor
    scene_depth: float
    depth_source: str


class _Stopwatch:
    """Seconds per stage, measured after the device finished the stage's work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.stages[stage] = now - self.last
        self.last = now

    def timings(self) -> dict[str, float]:
        return {**self.stages, "total": self.last - self.start}


class LyraWorldPipeline:
    """Image (+ depth) + camera -> Gaussian world with a trained student (module docstring).

    Args:
        student: the trained model, or an imported Lyra-1 student.
        config: what it was trained on (input size, frames, trajectories; for Lyra-1 the six
            trajectories in GEN3C's order, fed in :data:`LYRA1_VIEW_ORDER`).
        depth_estimator: called when no depth is given (see :data:`DepthEstimator`); without
            one, a plane at ``assumed_depth`` is used.
        device: where the cache is rendered and the student runs; default the student's (a
            :class:`Lyra1Student` runs on its own ``device``, which must be this one).
    """

    def __init__(
        self,
        student: LyraStudent | Lyra1Student,
        config: StudentConfig,
        depth_estimator: DepthEstimator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        student.check_video_size(config.width, config.height, config.num_frames)
        self.config = config
        self.depth_estimator = depth_estimator
        self.trajectory_names = list(config.trajectory_names)
        if isinstance(student, Lyra1Student):
            if len(self.trajectory_names) != len(LYRA1_VIEW_ORDER):
                raise ValueError(
                    f"a Lyra-1 student reads {len(LYRA1_VIEW_ORDER)} trajectories, got "
                    f"{self.trajectory_names}"
                )
            self.trajectory_names = [self.trajectory_names[i] for i in LYRA1_VIEW_ORDER]
            if device is not None and torch.device(device) != student.device:
                raise ValueError(f"the Lyra-1 student runs on {student.device}, not {device}")
            self.device = student.device
            self.student = student
            return
        self.device = torch.device(device) if device is not None else _device_of(student)
        self.student = student.eval().to(self.device)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        depth_estimator: DepthEstimator | None = None,
    ) -> LyraWorldPipeline:
        """Load a student checkpoint folder: this package's (:meth:`LyraStudent.from_pretrained`)
        or an imported Lyra-1 student (``student.json`` with ``"model": "lyra1"``,
        :func:`lyra_core.pipelines.lyra1.load_lyra1_folder`).

        Raises:
            lyra_core.utils.errors.CheckpointError: a missing, corrupt or inconsistent
            checkpoint.
        """
        if is_lyra1_folder(folder):
            lyra1, config = load_lyra1_folder(folder, device=device)
            return cls(lyra1, config, depth_estimator)
        student, config = LyraStudent.from_pretrained(folder, device=device)
        return cls(student, config, depth_estimator, device)

    @property
    def is_lyra1(self) -> bool:
        """Whether the student is an imported Lyra-1 one."""
        return isinstance(self.student, Lyra1Student)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model's input videos, pixels."""
        return self.config.width, self.config.height

    @torch.inference_mode()
    def __call__(
        self,
        rgb: np.ndarray | Tensor,
        depth: np.ndarray | Tensor | None,
        K: np.ndarray | Tensor,
        camtoworld: np.ndarray | Tensor,
        *,
        assumed_depth: float = DEFAULT_ASSUMED_DEPTH,
        prune_ratio: float | None = None,
        seed: int = TRAJECTORY_SEED,
    ) -> LyraWorldOutput:
        """Build a world.

        Args:
            rgb: (H, W, 3) uint8 image, any size.
            depth: (H, W) depth registered to ``rgb``, meters along the optical axis (0, NaN or
                inf where unknown), or None (then ``depth_estimator``, else a plane).
            K: (3, 3) intrinsics of ``rgb``, pixels (OpenCV: pixel centres at integers).
            camtoworld: (4, 4) pose of the camera in the world (OpenCV axes: x right, y down,
                z forward), meters.
            assumed_depth: distance of the fronto-parallel plane used without depth, meters.
            prune_ratio: fraction of the least opaque Gaussians dropped; default the decoder's
                (Lyra: 0.8).
            seed: seed of the trajectory magnitudes (the generator uses the scene's seed).

        Returns:
            The world, the student's inputs and the time of each stage.

        Raises:
            ValueError: bad shapes, dtype, intrinsics or pose, or no valid depth.
        """
        clock = _Stopwatch(self.device)
        inputs = self._cache(rgb, depth, K, camtoworld, assumed_depth, seed)
        clock.lap("cache")
        ratio = self.student.decoder.config.prune_ratio if prune_ratio is None else prune_ratio
        if self.is_lyra1:
            gaussians = self._run_lyra1(inputs, ratio, clock)
        else:
            latents = self.student.encode(inputs.videos.to(self.device).float() / 255.0)
            clock.lap("encode")
            poses, Ks = inputs.camtoworlds.to(self.device), inputs.Ks.to(self.device)
            output = self.student.decode(latents, poses, Ks)
            gaussians = output.to_gaussians(prune_ratio=ratio)
        clock.lap("decode")
        return LyraWorldOutput(
            gaussians=gaussians,
            videos=inputs.videos,
            camtoworlds=inputs.camtoworlds,
            Ks=inputs.Ks,
            scene_depth=inputs.scene_depth,
            depth_source=inputs.depth_source,
            timings=clock.timings(),
        )

    def _run_lyra1(
        self, inputs: _StudentInputs, prune_ratio: float, clock: _Stopwatch
    ) -> Gaussians:
        """Encode and decode with a Lyra-1 student (module docstring): cameras relative to the
        first frame of the first view in, Gaussians moved back to the world frame out."""
        reference = inputs.camtoworlds[0, 0].double()
        relative = (rigid_inverse(reference) @ inputs.camtoworlds.double()).float()
        dynamic = self.student.decoder.config.use_time_embedding
        times = {"frame_times": torch.arange(self.config.num_frames), "target_time": 0.0}
        videos = inputs.videos[None]  # uint8 on the CPU: moved one video at a time
        encoded = self.student.encode(
            relative[None], inputs.Ks[None], videos=videos, **(times if dynamic else {})
        )
        clock.lap("encode")
        output = self.student.decode(encoded)
        gaussians = output.to_gaussians(prune_ratio=prune_ratio)
        return gaussians.transformed(reference)

    def _cache(
        self,
        rgb: np.ndarray | Tensor,
        depth: np.ndarray | Tensor | None,
        K: np.ndarray | Tensor,
        camtoworld: np.ndarray | Tensor,
        assumed_depth: float,
        seed: int,
    ) -> _StudentInputs:
        """Stage 1: the 3D-cache videos along the trajectories (module docstring)."""
        rgb_t = _as_image(rgb)
        intrinsics = Intrinsics.from_matrix(K, rgb_t.shape[1], rgb_t.shape[0])
        pose64 = _as_pose(camtoworld)
        depth_t, depth_source = self._input_depth(rgb_t, depth, intrinsics)
        width, height = self.size
        rgb_m, depth_m, intr_m = fit_view(rgb_t, depth_t, intrinsics, width, height)
        if depth_m is None:
            depth_m = torch.full((height, width), _check_assumed_depth(assumed_depth))
        scene_depth = _median_valid_depth(depth_m)
        cache = cache_gaussians(rgb_m, depth_m, intr_m, pose64.to(torch.float32))
        trajectories = lyra_trajectories(
            pose64, scene_depth, self.config.num_frames, self.config.movement_scale, seed=seed
        )
        poses = torch.stack([trajectories[n] for n in self.trajectory_names])
        poses = poses.to(torch.float32)
        videos = torch.stack(
            [render_cache(cache, p, intr_m, self.device, DEFAULT_BATCH_SIZE).rgb for p in poses]
        )
        Ks = intr_m.matrix(torch.float32).expand(*poses.shape[:2], 3, 3).clone()
        return _StudentInputs(videos, poses, Ks, scene_depth, depth_source)

    def _input_depth(
        self, rgb: Tensor, depth: np.ndarray | Tensor | None, intrinsics: Intrinsics
    ) -> tuple[Tensor | None, str]:
        """The given depth, else the estimator's, else None (the plane): (H, W) float32."""
        if depth is None and self.depth_estimator is None:
            return None, "plane"
        source = "input"
        if depth is None:
            depth, source = self.depth_estimator(rgb.numpy(), intrinsics), "estimator"
        depth_t = _cpu_tensor(depth).to(torch.float32)
        if tuple(depth_t.shape) != tuple(rgb.shape[:2]):
            raise ValueError(
                f"{source} depth must have shape {tuple(rgb.shape[:2])} like the "
                f"image, got {tuple(depth_t.shape)}"
            )
        return depth_t, source


def _cpu_tensor(value: np.ndarray | Tensor) -> Tensor:
    """A CPU tensor of an array (copied: ROS buffers can be read-only) or tensor."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    return torch.tensor(np.asarray(value))


def _as_image(rgb: np.ndarray | Tensor) -> Tensor:
    """(H, W, 3) uint8 on the CPU."""
    image = _cpu_tensor(rgb)
    if image.dim() != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {tuple(image.shape)} {image.dtype}")
    return image


def _as_pose(camtoworld: np.ndarray | Tensor) -> Tensor:
    """(4, 4) float64 on the CPU (the generator computes trajectories in float64)."""
    pose = _cpu_tensor(camtoworld).to(torch.float64)
    if pose.shape != (4, 4) or not torch.isfinite(pose).all():
        raise ValueError(f"camtoworld must be a finite (4, 4) matrix, got {tuple(pose.shape)}")
    return pose


def _check_assumed_depth(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"assumed_depth must be a positive distance in meters, got {value!r}")
    return float(value)


def _median_valid_depth(depth: Tensor) -> float:
    """Median of the finite positive depths (the generator's ``scene_depth``), meters."""
    valid = depth[torch.isfinite(depth) & (depth > 0)]
    if valid.numel() == 0:
        raise ValueError("the depth image has no valid pixel (all 0, NaN or inf)")
    return float(valid.median())


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
