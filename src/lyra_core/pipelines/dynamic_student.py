"""Lyra's dynamic student: an RGB-D video -> a Gaussian set of the scene at any wanted time.

Bullet time as Lyra-1's dynamic model: all input frames go in, ONE target time per forward pass,
and out comes a complete, independent 3D Gaussian set of the scene at that time; a 4D world is
a stack of such slices (:meth:`DynamicWorldPipeline.predict_4d`,
:meth:`~lyra_core.scene.gaussians.Gaussians.from_time_slices`).

:class:`DynamicLyraStudent` is the static :class:`~lyra_core.pipelines.student.LyraStudent`
(frozen video VAE + decoder) with a :class:`~lyra_core.models.dynamic_decoder.
DynamicLyraDecoder`: the frame times and the target time are normalised to [0, 1], embedded as
``[t, cos t, sin t]`` images, VAE-encoded and added to the tokens through zero-initialised patch
embeddings (:mod:`lyra_core.models.lyra1`'s :func:`time_embedding` and :func:`encode_time`).
:meth:`DynamicLyraStudent.from_static` starts it from a static student: every weight whose name
and shape match, the time embeddings zero, so it first computes exactly the static student.

:class:`DynamicWorldPipeline` feeds it what it was trained on (:mod:`lyra_core.data.dynamic`):

1. **4D cache** -- every input frame fitted to the model's size (:func:`~lyra_core.pipelines.
   world.fit_view`) and unprojected with its depth (:mod:`lyra_core.pipelines.cache4d`);
2. **trajectories** -- the six Lyra trajectories from input frame 0 (``scene_depth`` its median
   depth), trajectory frame ``i`` rendered from the cache at frame time ``t_i``;
3. **encode** once, then **decode** once per wanted time;
4. **anchor** (as the static student's single-frame build): the Gaussians of the input frame
   nearest in time stay exact, and the student's only where that frame saw nothing (its depth
   measured no surface on their ray, or they lie more than ``anchor_tolerance`` behind it;
   :func:`anchor_to_frame`).

Checkpoint folder: as the static student's (``student.json``, ``vae/``, ``decoder/``), the
decoder's ``config.json`` marked ``extra: {"time_embedding": true}``; ``student.json``'s
``num_frames`` is the input video's length T.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import lyra_trajectories
from lyra_core.models.decoder import DecoderOutput, LyraDecoder
from lyra_core.models.dynamic_decoder import DynamicLyraDecoder
from lyra_core.models.lyra1 import encode_time, time_embedding
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.cache4d import cache_slices, nearest_frame, render_cache_4d
from lyra_core.pipelines.student import (
    DECODER_FOLDER,
    VAE_FOLDER,
    LyraStudent,
    StudentConfig,
)
from lyra_core.pipelines.world import TRAJECTORY_SEED, fit_view
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.visibility import seen_by_depth
from lyra_core.utils.errors import CheckpointError

__all__ = [
    "DEFAULT_ANCHOR_TOLERANCE",
    "DynamicInputs",
    "DynamicLyraStudent",
    "DynamicWorldPipeline",
    "anchor_to_frame",
]

DEFAULT_ANCHOR_TOLERANCE = 0.25
"""Relative depth behind an observed surface within which a generated Gaussian counts as that
surface (and is replaced by the observation); the single-frame builder's default."""


class DynamicLyraStudent(LyraStudent):
    """Frozen video VAE + trainable time-conditioned decoder (module docstring)."""

    decoder: DynamicLyraDecoder

    def __init__(self, vae: VideoVAE, decoder: DynamicLyraDecoder) -> None:
        if not isinstance(decoder, DynamicLyraDecoder):
            raise TypeError(f"need a DynamicLyraDecoder, got {type(decoder).__name__}")
        super().__init__(vae, decoder)

    @classmethod
    def from_static(
        cls, student: LyraStudent, decoder: LyraDecoder | None = None
    ) -> DynamicLyraStudent:
        """A dynamic student from a static one: its VAE, and a dynamic decoder of its decoder's
        config holding every one of its weights (the time embeddings zero).

        Args:
            student: the static student (its VAE is shared).
            decoder: the static decoder to copy (default ``student.decoder``).
        """
        static = student.decoder if decoder is None else decoder
        dynamic = DynamicLyraDecoder(static.config)
        missing, unexpected = dynamic.load_state_dict(static.state_dict(), strict=False)
        new = {n for n in missing if not n.startswith(("time_embed.", "target_time_embed."))}
        if new or unexpected:
            raise CheckpointError(f"static decoder does not fit: {sorted(new)} {unexpected}")
        return cls(student.vae, dynamic.to(next(static.parameters()).device))

    def encode_times(
        self, frame_times: Tensor | Sequence[float], target_time: float, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """Raw VAE latents of the time embeddings: inputs (1, T', C, h, w), target
        (1, 1, C, h, w) (no grad; :func:`~lyra_core.models.lyra1.time_embedding`, min-max over
        the inputs and the target)."""
        device = next(self.decoder.parameters()).device
        times = torch.as_tensor(frame_times, dtype=torch.float64).reshape(-1)
        inputs, target = time_embedding(times, float(target_time))
        with torch.no_grad():
            return (
                encode_time(self.vae, inputs[None].to(device), height, width),
                encode_time(self.vae, target[None].to(device), height, width),
            )

    def forward(  # type: ignore[override]
        self,
        videos: Tensor,
        camtoworlds: Tensor,
        Ks: Tensor,
        frame_times: Tensor | Sequence[float],
        target_time: float,
    ) -> DecoderOutput:
        """Decode V trajectory videos at one target time.

        Args:
            videos: (V, T, H, W, 3) frames in [0, 1]; frame ``i`` of every view at
                ``frame_times[i]``.
            camtoworlds: (V, T, 4, 4); Ks: (V, T, 3, 3).
            frame_times: (T,) seconds (or frame indices).
            target_time: the wanted time, within the frame times' range.

        Returns:
            Per-pixel Gaussians with leading dims (1, V, T', H, W), the scene at
            ``target_time``.
        """
        return self.decode(self.encode(videos), camtoworlds, Ks, frame_times, target_time)

    def decode(  # type: ignore[override]
        self,
        latents: Tensor,
        camtoworlds: Tensor,
        Ks: Tensor,
        frame_times: Tensor | Sequence[float],
        target_time: float,
    ) -> DecoderOutput:
        """Latents (V, T', C, h, w) + cameras of all T frames + times -> Gaussians (1, V, T', H,
        W) at ``target_time``."""
        frames = self.latent_frame_indices(camtoworlds.shape[1]).to(latents.device)
        if len(frames) != latents.shape[1]:
            raise ValueError(
                f"{camtoworlds.shape[1]} frames make {len(frames)} latent frames, "
                f"got {latents.shape[1]}"
            )
        edge = self.vae.spatial_factor
        height, width = latents.shape[-2] * edge, latents.shape[-1] * edge
        time_latents, target_latents = self.encode_times(frame_times, target_time, height, width)
        return self.decoder(
            latents[None],
            camtoworlds[:, frames][None],
            Ks[:, frames][None],
            time_latents,
            target_latents,
        )

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], device: torch.device | str | None = None
    ) -> tuple[DynamicLyraStudent, StudentConfig]:
        """Load a dynamic student folder (:meth:`save_pretrained`), in eval mode.

        Raises:
            CheckpointError: missing or unreadable files, or not a dynamic student.
        """
        folder = Path(folder)
        config = StudentConfig.from_pretrained(folder)
        try:
            vae = VideoVAE.from_pretrained(folder / VAE_FOLDER, use_safetensors=True)
            decoder = DynamicLyraDecoder.from_pretrained(folder / DECODER_FOLDER)
            student = cls(vae, decoder)
            student.check_video_size(config.width, config.height, config.num_frames)
        except (OSError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"dynamic student checkpoint {folder}: {err}") from err
        student.eval()
        return (student.to(device) if device is not None else student), config


def anchor_to_frame(
    generated: Gaussians,
    observed: Gaussians,
    depth: Tensor,
    intrinsics: Intrinsics,
    camtoworld: Tensor,
    tolerance: float = DEFAULT_ANCHOR_TOLERANCE,
) -> Gaussians:
    """The observed Gaussians of a frame plus the generated ones that frame did not see.

    A generated Gaussian is dropped when its centre projects onto a pixel with depth and lies in
    front of, or within ``tolerance`` (relative) behind, the measured surface
    (:func:`~lyra_core.scene.visibility.seen_by_depth`): the measurement contradicts or
    replaces it. Outside the frustum, on pixels without depth and well behind the surface it
    stays.

    Args:
        generated: the student's Gaussians at the frame's time (world frame).
        observed: the frame's own Gaussians (its 3D cache).
        depth: (H, W) the frame's z-depth, meters (0 where unknown); intrinsics: its W x H.
        camtoworld: (4, 4) the frame's pose.
    """
    means = generated.means.detach().float().cpu()
    seen = seen_by_depth(
        means, depth.float().cpu(), intrinsics, camtoworld.float().cpu(), tolerance
    )
    kept = generated[(~seen).to(generated.device)].to(device="cpu", dtype=torch.float32)
    return Gaussians.cat([observed.to(device="cpu"), kept.with_sh_degree(observed.sh_degree)])


@dataclass
class DynamicInputs:
    """An input video prepared for the student (CPU tensors unless noted).

    Attributes:
        rgb: (T, H, W, 3) uint8 frames at the model's size; depth: (T, H, W) meters (0: none).
        intrinsics: of the fitted frames.
        camtoworlds: (T, 4, 4) float32 input poses.
        frame_times: (T,) float64 seconds.
        slices: the T frames' 3D caches (the 4D cache).
        videos: (V, T, H, W, 3) uint8 4D-cache renders along the trajectories.
        poses: (V, T, 4, 4) float32 trajectory cameras; Ks: (V, T, 3, 3).
        latents: (V, T', C, h, w) the videos' latents, on the student's device.
        scene_depth: median valid depth of frame 0, meters.
    """

    rgb: Tensor
    depth: Tensor
    intrinsics: Intrinsics
    camtoworlds: Tensor
    frame_times: Tensor
    slices: list[Gaussians]
    videos: Tensor
    poses: Tensor
    Ks: Tensor
    latents: Tensor
    scene_depth: float


class DynamicWorldPipeline:
    """RGB-D video + poses + times -> the scene at any time, as 3D slices or a 4D world.

    Args:
        student: a trained :class:`DynamicLyraStudent`.
        config: what it was trained on (size, ``num_frames`` = T, trajectories).
        device: where the student runs and the cache renders (default: the student's).
        anchor_tolerance: see :func:`anchor_to_frame`.
    """

    def __init__(
        self,
        student: DynamicLyraStudent,
        config: StudentConfig,
        device: torch.device | str | None = None,
        anchor_tolerance: float = DEFAULT_ANCHOR_TOLERANCE,
    ) -> None:
        student.check_video_size(config.width, config.height, config.num_frames)
        self.config = config
        self.device = (
            torch.device(device) if device is not None else next(student.parameters()).device
        )
        self.student = student.eval().to(self.device)
        self.anchor_tolerance = anchor_tolerance

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], device: torch.device | str = "cpu"
    ) -> DynamicWorldPipeline:
        """Load a dynamic student folder (:meth:`DynamicLyraStudent.from_pretrained`)."""
        student, config = DynamicLyraStudent.from_pretrained(folder, device=device)
        return cls(student, config, device)

    @torch.inference_mode()
    def prepare(
        self,
        rgb: Tensor | np.ndarray,
        depth: Tensor | np.ndarray,
        K: Tensor | np.ndarray,
        camtoworlds: Tensor | np.ndarray,
        frame_times: Tensor | Sequence[float],
        seed: int = TRAJECTORY_SEED,
    ) -> DynamicInputs:
        """Stages 1-3 of the module docstring (everything that does not depend on the wanted
        time).

        Args:
            rgb: (T, H, W, 3) uint8 frames, any size; depth: (T, H, W) meters (0/NaN/inf: none).
            K: (3, 3) intrinsics of the frames; camtoworlds: (T, 4, 4) poses (OpenCV axes).
            frame_times: (T,) strictly increasing seconds; T = the student's ``num_frames``.
            seed: seed of the trajectory magnitudes (the data generator uses the scene seed).

        Raises:
            ValueError: wrong frame count, shapes or times.
        """
        rgb_t, depth_t = torch.as_tensor(np.asarray(rgb)), torch.as_tensor(np.asarray(depth))
        poses = torch.as_tensor(np.asarray(camtoworlds), dtype=torch.float64)
        times = torch.as_tensor(np.asarray(frame_times), dtype=torch.float64).reshape(-1)
        count = self.config.num_frames
        if not (len(rgb_t) == len(depth_t) == len(poses) == len(times) == count):
            raise ValueError(
                f"the student reads videos of {count} frames: got {len(rgb_t)} frames, "
                f"{len(depth_t)} depths, {len(poses)} poses and {len(times)} times"
            )
        if not bool(torch.isfinite(times).all()) or bool((times.diff() <= 0).any()):
            raise ValueError(f"frame times must be finite and increasing, got {times.tolist()}")
        if rgb_t.dtype != torch.uint8 or rgb_t.dim() != 4 or rgb_t.shape[-1] != 3:
            raise ValueError(f"rgb must be (T, H, W, 3) uint8, got {tuple(rgb_t.shape)}")
        source = Intrinsics.from_matrix(K, rgb_t.shape[2], rgb_t.shape[1])
        width, height = self.config.width, self.config.height
        fitted = [
            fit_view(rgb_t[i], depth_t[i].float(), source, width, height) for i in range(count)
        ]
        frames = torch.stack([f[0] for f in fitted])
        depths = torch.stack([f[1] for f in fitted])
        depths = torch.where(torch.isfinite(depths) & (depths > 0), depths, 0.0)
        intrinsics = fitted[0][2]
        poses32 = poses.to(torch.float32)
        slices = cache_slices(frames, depths, intrinsics, poses32)
        valid = depths[0][depths[0] > 0]
        if valid.numel() == 0:
            raise ValueError("frame 0 has no valid depth")
        scene_depth = float(valid.median())
        trajectories = lyra_trajectories(
            poses[0], scene_depth, count, self.config.movement_scale, seed=seed
        )
        traj = torch.stack([trajectories[n] for n in self.config.trajectory_names]).float()
        world = Gaussians.from_time_slices(slices, times.tolist())
        views = len(traj)
        videos = render_cache_4d(
            world, traj.flatten(0, 1), times.repeat(views), intrinsics, self.device
        ).rgb.reshape(views, count, height, width, 3)
        Ks = intrinsics.matrix(torch.float32).expand(views, count, 3, 3).clone()
        latents = self.student.encode(videos.to(self.device).float() / 255.0)
        return DynamicInputs(
            frames,
            depths,
            intrinsics,
            poses32,
            times,
            slices,
            videos,
            traj,
            Ks,
            latents,
            scene_depth,
        )

    @torch.inference_mode()
    def predict(
        self,
        inputs: DynamicInputs,
        time: float,
        anchored: bool = True,
        prune_ratio: float | None = None,
    ) -> Gaussians:
        """The scene at world time ``time`` (seconds, clamped into the frames' range): the
        student's Gaussians (pruned by ``prune_ratio``, default the decoder's), anchored to the
        input frame nearest in time unless ``anchored`` is False. CPU, float32."""
        times = inputs.frame_times
        t = min(max(float(time), float(times[0])), float(times[-1]))
        output = self.student.decode(
            inputs.latents,
            inputs.poses.to(self.device),
            inputs.Ks.to(self.device),
            times,
            t,
        )
        ratio = self.student.decoder.config.prune_ratio if prune_ratio is None else prune_ratio
        generated = output.to_gaussians(prune_ratio=ratio).to(device="cpu", dtype=torch.float32)
        if not anchored:
            return generated
        j = nearest_frame(times, t)
        return anchor_to_frame(
            generated,
            inputs.slices[j],
            inputs.depth[j],
            inputs.intrinsics,
            inputs.camtoworlds[j],
            self.anchor_tolerance,
        )

    def predict_4d(
        self,
        inputs: DynamicInputs,
        times: Sequence[float] | Tensor | None = None,
        anchored: bool = True,
    ) -> Gaussians:
        """A 4D world: one :meth:`predict` slice per time (default the frame times), stacked
        with :meth:`Gaussians.from_time_slices` (rendered at ``t`` it shows the nearest slice)."""
        stamps = inputs.frame_times if times is None else torch.as_tensor(times)
        stamps = [float(t) for t in stamps.reshape(-1)]
        slices = [self.predict(inputs, t, anchored) for t in stamps]
        return Gaussians.from_time_slices(slices, stamps)

    def __call__(
        self,
        rgb: Tensor | np.ndarray,
        depth: Tensor | np.ndarray,
        K: Tensor | np.ndarray,
        camtoworlds: Tensor | np.ndarray,
        frame_times: Tensor | Sequence[float],
        times: Sequence[float] | None = None,
    ) -> Gaussians:
        """The 4D world of an RGB-D video (:meth:`prepare`, then :meth:`predict_4d`)."""
        return self.predict_4d(self.prepare(rgb, depth, K, camtoworlds, frame_times), times)
