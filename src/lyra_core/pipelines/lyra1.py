"""Lyra-1's released student as a pipeline: trajectory videos (or the generator's latents) ->
raw latents, VAE-encoded Plucker rays (and times) -> :class:`Lyra1Decoder` -> Gaussians.

The decoder comes from ``lyra import-checkpoint`` (a :class:`Lyra1Decoder` folder) and the
tokenizer from NVIDIA's release (``Cosmos-Tokenize1-CV8x8x8-720p``: TorchScript, read by
:meth:`VideoVAE.from_cosmos_jit`) or a diffusers folder. Lyra-1 runs at 704 x 1280, 121 frames per
trajectory, six trajectories, in bf16 on CUDA; videos and rays are encoded one video at a time,
and with ``offload=True`` each model sits on its device only while it runs.

The views are read in the order given; Lyra-1's demo feeds GEN3C's six trajectories in the order
:data:`LYRA1_VIEW_ORDER`. Give cameras as Lyra-1 was trained on them: relative to the first frame
of the first view (OpenCV axes and intrinsics). The stored generator latents are
``sigma_data`` (0.5) times the tokenizer-normalised latents (``latent_scale`` of
:meth:`Lyra1Student.__call__`).

A Lyra-1 *student folder* (what :meth:`lyra_core.pipelines.world.LyraWorldPipeline.from_pretrained`
and ``lyra world --source lyra --lyra-checkpoint FOLDER`` read, :func:`load_lyra1_folder`)::

    student.json    {"model": "lyra1"} plus optional fields (below)
    decoder/        Lyra1Decoder folder written by ``lyra import-checkpoint lyra_static.pt``
    tokenizer/      Cosmos-Tokenize1-CV8x8x8-720p as released (encoder.jit, decoder.jit,
                    mean_std.pt), or a diffusers AutoencoderKLCosmos folder

``student.json`` fields besides ``"model": "lyra1"`` (all optional): ``decoder`` and
``tokenizer`` (paths of those folders, relative to the student folder or absolute, so the
released files need not be copied; default ``"decoder"`` and ``"tokenizer"``); ``width``,
``height``, ``num_frames`` (default Lyra-1's 1280, 704, 121); ``movement_scale`` and
``trajectory_names`` (the six trajectories in GEN3C's order, default
:data:`~lyra_core.geometry.trajectories.LYRA_TRAJECTORY_NAMES`; the pipeline feeds them to the
decoder in :data:`LYRA1_VIEW_ORDER`); ``offload`` (default true: each model on the device only
while it runs). A folder with a missing or mismatched part is refused with a
:class:`~lyra_core.utils.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES
from lyra_core.models.decoder import DecoderOutput
from lyra_core.models.lyra1 import (
    Lyra1Decoder,
    encode_plucker,
    encode_time,
    load_decoder,
    time_embedding,
)
from lyra_core.models.modeling_utils import default_device_dtype, on_device
from lyra_core.models.vae import COSMOS_JIT_FILES, VideoVAE
from lyra_core.pipelines.student import STUDENT_CONFIG_NAME, LyraStudent, StudentConfig
from lyra_core.utils.errors import CheckpointError

__all__ = [
    "LYRA1_HEIGHT",
    "LYRA1_MODEL",
    "LYRA1_NUM_FRAMES",
    "LYRA1_VIEW_ORDER",
    "LYRA1_WIDTH",
    "Lyra1Inputs",
    "Lyra1Student",
    "is_lyra1_folder",
    "load_lyra1_folder",
]

LYRA1_HEIGHT, LYRA1_WIDTH, LYRA1_NUM_FRAMES = 704, 1280, 121
LYRA1_VIEW_ORDER = (5, 0, 1, 2, 3, 4)
"""Trajectory indices of GEN3C's six camera paths in the order Lyra-1's demo reads them."""
LYRA1_MODEL = "lyra1"
"""``student.json``'s ``model`` value that marks a Lyra-1 student folder."""


@dataclass
class Lyra1Inputs:
    """What the decoder reads, on the student's device (:meth:`Lyra1Student.encode`).

    Attributes:
        latents: (B, V, T', C, h, w) raw video latents.
        plucker: (B, V, T', 2C, h, w) raw latents of the Plucker rays.
        camtoworlds: (B, V, T, 4, 4); Ks: (B, V, T, 3, 3).
        times: raw latents of the input and target times (dynamic model), else None.
    """

    latents: Tensor
    plucker: Tensor
    camtoworlds: Tensor
    Ks: Tensor
    times: tuple[Tensor, Tensor] | None = None


class Lyra1Student:
    """An imported Lyra-1 decoder and its tokenizer.

    Args:
        vae: the tokenizer the decoder was trained with (Cosmos CV8x8x8).
        decoder: a :class:`Lyra1Decoder`.
        device: where the models run (default: CUDA when available).
        dtype: their dtype while running (default: bf16 on CUDA, float32 on the CPU).
        offload: keep each model on the CPU except while it runs.
    """

    def __init__(
        self,
        vae: VideoVAE,
        decoder: Lyra1Decoder,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
    ) -> None:
        if not isinstance(decoder, Lyra1Decoder):
            raise TypeError(f"decoder must be a Lyra1Decoder, got {type(decoder).__name__}")
        self.device, self.dtype = default_device_dtype(device, dtype)
        self.offload = offload
        home = torch.device("cpu") if offload else self.device
        self.vae = vae.eval().to(home)
        self.vae.vae.to(dtype=self.dtype)  # the network; the latent statistics stay float32
        self.decoder = decoder.eval().to(home, self.dtype)

    @classmethod
    def from_pretrained(
        cls,
        decoder_folder: str | os.PathLike[str],
        tokenizer_folder: str | os.PathLike[str],
        **kwargs,
    ) -> Lyra1Student:
        """Load an imported decoder folder and a tokenizer folder (TorchScript
        ``encoder.jit``/``decoder.jit``/``mean_std.pt``, or a diffusers folder).

        Raises:
            CheckpointError: either folder missing or not of its kind.
        """
        decoder = load_decoder(decoder_folder)
        if not isinstance(decoder, Lyra1Decoder):
            raise CheckpointError(
                f"{decoder_folder}: not a Lyra-1 decoder (lyra import-checkpoint)"
            )
        tokenizer = Path(tokenizer_folder)
        vae = VideoVAE.from_folder(tokenizer)
        if vae.latent_channels != decoder.config.latent_channels:
            raise CheckpointError(
                f"the tokenizer {tokenizer} makes {vae.latent_channels}-channel latents, the "
                f"decoder {decoder_folder} reads {decoder.config.latent_channels}"
            )
        return cls(vae, decoder, **kwargs)

    check_video_size = LyraStudent.check_video_size
    """Raise ValueError unless W x H x N videos fit the tokenizer and the decoder's patches (the
    student's rule: it reads only ``vae`` and ``decoder.config.patch_size``)."""

    @torch.inference_mode()
    def __call__(self, camtoworlds: Tensor, Ks: Tensor, **inputs) -> DecoderOutput:
        """Gaussians of the scene seen by V trajectories: :meth:`encode` (same arguments),
        then :meth:`decode`.

        Returns:
            Gaussians with leading dims (B, V, T, h, w), float32, on ``self.device``.
        """
        return self.decode(self.encode(camtoworlds, Ks, **inputs))

    @torch.inference_mode()
    def encode(
        self,
        camtoworlds: Tensor,
        Ks: Tensor,
        videos: Tensor | None = None,
        latents: Tensor | None = None,
        latent_scale: float = 1.0,
        frame_times: Tensor | None = None,
        target_time: float | None = None,
    ) -> Lyra1Inputs:
        """The tokenizer's part: video latents, Plucker latents and time latents. Videos are
        moved to the device and encoded one at a time, rays one view at a time, so memory stays
        bounded by one 121-frame video.

        Args:
            camtoworlds: (B, V, T, 4, 4) camera of every video frame (OpenCV axes).
            Ks: (B, V, T, 3, 3) intrinsics at the video resolution.
            videos: (B, V, T, H, W, 3) frames in [0, 1], or uint8 (kept on the CPU, moved one
                video at a time); or give ``latents``.
            latents: (B, V, T', C, h, w) latents normalised by the tokenizer's statistics and
                multiplied by ``latent_scale`` (Lyra-1's stored generator latents: 0.5).
            latent_scale: see ``latents``.
            frame_times: (T,) times of the frames (default 0 .. T - 1); dynamic model only.
            target_time: the time the Gaussians are wanted at; required by the dynamic model.
        """
        if (videos is None) == (latents is None):
            raise ValueError("give exactly one of videos and latents")
        batch, views, frames = camtoworlds.shape[:3]
        factor = self.vae.spatial_factor
        with on_device(self.vae, self.device, self.offload) as vae:
            if videos is not None:
                if videos.shape[:3] != (batch, views, frames):
                    raise ValueError(
                        f"videos must start with {(batch, views, frames)} like the cameras, "
                        f"got {tuple(videos.shape)}"
                    )
                height, width = videos.shape[3:5]
                flat = videos.reshape(batch * views, *videos.shape[2:])
                raw = torch.cat([vae.encode_raw(self._frames(v)) for v in flat])
            else:
                height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
                flat = latents.reshape(batch * views, *latents.shape[2:]).to(self.device)
                raw = vae.denormalize(flat.float() / latent_scale).to(self.dtype)
            raw = raw.reshape(batch, views, *raw.shape[1:])
            cams, intrinsics = camtoworlds.to(self.device), Ks.to(self.device)
            plucker = encode_plucker(vae, cams, intrinsics, height, width)  # rays in float32
            times = None
            if self.decoder.config.use_time_embedding:
                if target_time is None:
                    raise ValueError("the dynamic Lyra-1 decoder needs target_time")
                steps = torch.arange(frames) if frame_times is None else frame_times
                times = tuple(
                    encode_time(vae, t.expand(batch, -1, -1).to(self.device), height, width)
                    for t in time_embedding(steps, target_time)
                )
        return Lyra1Inputs(raw, plucker, cams, intrinsics, times)

    def _frames(self, video: Tensor) -> Tensor:
        """(T, H, W, 3) frames in [0, 1] or uint8 -> (1, T, H, W, 3) in [-1, 1] on the device."""
        frames = video[None].to(self.device).float()
        if video.dtype == torch.uint8:
            frames = frames / 255.0
        return (frames * 2.0 - 1.0).to(self.dtype)

    @torch.inference_mode()
    def decode(self, inputs: Lyra1Inputs) -> DecoderOutput:
        """The decoder's part: :class:`Lyra1Inputs` -> Gaussians (see :meth:`__call__`)."""
        times = [] if inputs.times is None else [t.to(self.dtype) for t in inputs.times]
        with on_device(self.decoder, self.device, self.offload) as decoder:
            return decoder(
                inputs.latents.to(self.dtype),
                inputs.plucker.to(self.dtype),
                inputs.camtoworlds,
                inputs.Ks,
                *times,
            )


def _read_student_json(folder: Path) -> dict[str, Any] | None:
    """``folder/student.json`` as a dict, or None when absent or not a JSON object."""
    try:
        data = json.loads((folder / STUDENT_CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_lyra1_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder/student.json`` marks a Lyra-1 student (``"model": "lyra1"``)."""
    data = _read_student_json(Path(folder))
    return data is not None and data.get("model") == LYRA1_MODEL


def load_lyra1_folder(
    folder: str | os.PathLike[str], device: torch.device | str | None = None
) -> tuple[Lyra1Student, StudentConfig]:
    """Load a Lyra-1 student folder (layout in the module docstring).

    Args:
        folder: the student folder.
        device: where the models run (default: CUDA when available); bf16 on CUDA.

    Returns:
        ``(student, config)``: the models and the input videos and trajectories they read.

    Raises:
        CheckpointError: no ``student.json`` marking a Lyra-1 student, invalid fields, a
            missing or mismatched decoder or tokenizer, or a video size they cannot read.
    """
    folder = Path(folder)
    data = _read_student_json(folder)
    if data is None or data.get("model") != LYRA1_MODEL:
        raise CheckpointError(
            f"{folder}: not a Lyra-1 student folder ({STUDENT_CONFIG_NAME} with "
            f'"model": "{LYRA1_MODEL}" is missing or unreadable)'
        )
    data = dict(data)
    data.pop("model")
    parts = {name: data.pop(name, name) for name in ("decoder", "tokenizer")}
    offload = data.pop("offload", True)
    if not isinstance(offload, bool):
        raise CheckpointError(f"{folder / STUDENT_CONFIG_NAME}: offload must be true or false")
    data.setdefault("width", LYRA1_WIDTH)
    data.setdefault("height", LYRA1_HEIGHT)
    data.setdefault("num_frames", LYRA1_NUM_FRAMES)
    data.setdefault("trajectory_names", list(LYRA_TRAJECTORY_NAMES))
    try:
        config = StudentConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder / STUDENT_CONFIG_NAME}: {err}") from err
    if len(config.trajectory_names) != len(LYRA1_VIEW_ORDER):
        raise CheckpointError(
            f"{folder / STUDENT_CONFIG_NAME}: a Lyra-1 student reads "
            f"{len(LYRA1_VIEW_ORDER)} trajectories, got {config.trajectory_names}"
        )
    paths = {}
    for name, value in parts.items():
        if not isinstance(value, str) or not value:
            raise CheckpointError(f"{folder / STUDENT_CONFIG_NAME}: {name} must be a path")
        paths[name] = folder / value  # an absolute value replaces the folder
        if not paths[name].is_dir():
            hint = (
                "write it with lyra import-checkpoint"
                if name == "decoder"
                else "Cosmos-Tokenize1-CV8x8x8-720p: " + ", ".join(COSMOS_JIT_FILES)
            )
            raise CheckpointError(
                f"Lyra-1 student {folder}: the {name} folder {paths[name]} is missing ({hint})"
            )
    student = Lyra1Student.from_pretrained(
        paths["decoder"], paths["tokenizer"], device=device, offload=offload
    )
    try:
        student.check_video_size(config.width, config.height, config.num_frames)
    except ValueError as err:
        raise CheckpointError(f"Lyra-1 student {folder}: {err}") from err
    return student, config
