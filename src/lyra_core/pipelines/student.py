"""The Lyra student as a pipeline: trajectory videos -> video latents -> decoder -> Gaussians.

Like a diffusers pipeline it composes models (a frozen :class:`VideoVAE` and a trainable
:class:`LyraDecoder`) without hidden state. The student reads the videos of the six Lyra
trajectories (the 3D-cache renders for now; the teacher's generated videos once it exists) and
is supervised by RGB and depth at trajectory and held-out cameras.

A trained student is saved as one folder (:meth:`LyraStudent.save_pretrained`,
:meth:`LyraStudent.from_pretrained`)::

    student.json    StudentConfig: the input videos and trajectories it was trained on
    vae/            diffusers folder of the video VAE (config.json + safetensors)
    decoder/        LyraDecoder folder (config.json + model.safetensors)

The VAE is part of the checkpoint because the student's latents are only meaningful for the VAE
it was trained with (the VAE is frozen while the decoder trains).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES
from lyra_core.models.decoder import DecoderOutput, LyraDecoder
from lyra_core.models.modeling_utils import write_folder_atomically
from lyra_core.models.vae import VideoVAE
from lyra_core.utils.errors import CheckpointError

STUDENT_CONFIG_NAME = "student.json"
VAE_FOLDER = "vae"
DECODER_FOLDER = "decoder"
STUDENT_FORMAT_VERSION = 1
"""Version of the checkpoint folder layout, stored in ``student.json``."""


@dataclass
class StudentConfig:
    """What a student was trained on; inference must feed it the same kind of input.

    Attributes:
        width: width W of the input videos, pixels (a multiple of the VAE's spatial factor
            times the decoder's patch size, e.g. 64).
        height: height H of the input videos, pixels (e.g. 48).
        num_frames: frames N per trajectory video, the input view first (N - 1 a multiple of
            the VAE's time factor, e.g. 17).
        movement_scale: Lyra trajectory scale of the training data (1.0 = Lyra's magnitudes).
        trajectory_names: the trajectories in the order the student reads them (names of
            :data:`lyra_core.geometry.trajectories.LYRA_TRAJECTORY_NAMES`).
        training: record of how it was trained, JSON (written by ``lyra export``): ``config``
            (the settings file), ``steps`` (this run's), ``cumulative_steps`` (with the runs it
            continued), ``parents`` (those earlier runs, oldest first: ``config``, ``out_dir``,
            ``steps``, ``cumulative_steps``), ``settings``, data and validation metrics.
    """

    width: int = 64
    height: int = 48
    num_frames: int = 17
    movement_scale: float = 1.0
    trajectory_names: list[str] = field(default_factory=lambda: list(LYRA_TRAJECTORY_NAMES))
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trajectory_names = list(self.trajectory_names)
        self.movement_scale = float(self.movement_scale)
        for name in ("width", "height", "num_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if not (math.isfinite(self.movement_scale) and self.movement_scale >= 0):
            raise ValueError(f"movement_scale must be finite and >= 0, got {self.movement_scale}")
        unknown = [n for n in self.trajectory_names if n not in LYRA_TRAJECTORY_NAMES]
        if unknown or not self.trajectory_names:
            raise ValueError(
                f"trajectory_names must be some of {LYRA_TRAJECTORY_NAMES}, got "
                f"{self.trajectory_names}"
            )
        if len(set(self.trajectory_names)) != len(self.trajectory_names):
            raise ValueError(f"trajectory_names repeat a name: {self.trajectory_names}")
        if not isinstance(self.training, dict):
            raise ValueError(f"training must be a dict, got {type(self.training).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``format_version``."""
        return {"format_version": STUDENT_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another format version, unknown or invalid fields.
        """
        data = dict(data)
        version = data.pop("format_version", STUDENT_FORMAT_VERSION)
        if version != STUDENT_FORMAT_VERSION:
            raise ValueError(
                f"format_version {version!r} is not supported (this code reads "
                f"{STUDENT_FORMAT_VERSION})"
            )
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown StudentConfig fields {unknown}")
        return cls(**data)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> StudentConfig:
        """Read ``folder/student.json`` without loading any weights.

        Raises:
            CheckpointError: no folder, no ``student.json`` or an invalid one.
        """
        path = Path(folder) / STUDENT_CONFIG_NAME
        if not Path(folder).is_dir():
            raise CheckpointError(f"no student checkpoint at {folder}: not a folder")
        if not path.is_file():
            raise CheckpointError(
                f"no student checkpoint at {folder}: {STUDENT_CONFIG_NAME} is missing"
            )
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: not a valid student config ({err})") from err


class LyraStudent(nn.Module):
    """Frozen video VAE + trainable latent 3DGS decoder."""

    def __init__(self, vae: VideoVAE, decoder: LyraDecoder) -> None:
        super().__init__()
        if vae.latent_channels != decoder.config.latent_channels:
            raise ValueError(
                f"VAE latents have {vae.latent_channels} channels, the decoder expects "
                f"{decoder.config.latent_channels}"
            )
        if vae.spatial_factor != decoder.config.vae_spatial_factor:
            raise ValueError(
                f"the VAE downsamples {vae.spatial_factor}x, the decoder expects "
                f"{decoder.config.vae_spatial_factor}x"
            )
        self.vae = vae.requires_grad_(False).eval()
        self.decoder = decoder

    def check_video_size(self, width: int, height: int, num_frames: int) -> None:
        """Raise ValueError unless W x H x N videos fit the VAE and the decoder's patches."""
        edge = self.vae.spatial_factor * self.decoder.config.patch_size
        if width % edge or height % edge:
            raise ValueError(f"videos of {width}x{height} pixels must be multiples of {edge}")
        if (num_frames - 1) % self.vae.temporal_factor:
            raise ValueError(
                f"num_frames - 1 = {num_frames - 1} must be a multiple of "
                f"{self.vae.temporal_factor}"
            )

    def latent_frame_indices(self, num_frames: int) -> Tensor:
        """Frame whose camera stands for each latent frame: 0, then the last of each group."""
        return torch.arange(self.vae.latent_frames(num_frames)) * self.vae.temporal_factor

    def forward(self, videos: Tensor, camtoworlds: Tensor, Ks: Tensor) -> DecoderOutput:
        """Decode V trajectory videos.

        Args:
            videos: (V, N, H, W, 3) frames in [0, 1] (N - 1 a multiple of the VAE's time factor).
            camtoworlds: (V, N, 4, 4) camera of every frame; Ks: (V, N, 3, 3).

        Returns:
            Per-pixel Gaussians with leading dims (1, V, T', H, W).
        """
        return self.decode(self.encode(videos), camtoworlds, Ks)

    def encode(self, videos: Tensor) -> Tensor:
        """(V, N, H, W, 3) frames in [0, 1] -> latents (V, T', C, h, w) of the frozen VAE."""
        with torch.no_grad():
            return self.vae.encode(videos)

    def decode(self, latents: Tensor, camtoworlds: Tensor, Ks: Tensor) -> DecoderOutput:
        """Latents (V, T', C, h, w) + the cameras of all N frames, (V, N, 4, 4) and
        (V, N, 3, 3) -> Gaussians with leading dims (1, V, T', H, W) (see :meth:`forward`)."""
        frames = self.latent_frame_indices(camtoworlds.shape[1]).to(latents.device)
        if len(frames) != latents.shape[1]:
            raise ValueError(
                f"{camtoworlds.shape[1]} frames make {len(frames)} latent frames, "
                f"got {latents.shape[1]}"
            )
        return self.decoder(latents[None], camtoworlds[:, frames][None], Ks[:, frames][None])

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | os.PathLike[str], config: StudentConfig) -> Path:
        """Write the checkpoint folder (layout in the module docstring) atomically: into a
        temporary sibling first, then renamed onto ``folder`` (an existing one is replaced only
        once the new one is complete).

        Raises:
            ValueError: ``config``'s video size does not fit this model.
        """
        self.check_video_size(config.width, config.height, config.num_frames)

        def write(tmp: Path) -> None:
            (tmp / STUDENT_CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            self.vae.save_pretrained(tmp / VAE_FOLDER)
            self.decoder.save_pretrained(tmp / DECODER_FOLDER)

        return write_folder_atomically(folder, write)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], device: torch.device | str | None = None
    ) -> tuple[LyraStudent, StudentConfig]:
        """Load a checkpoint folder written by :meth:`save_pretrained`, in eval mode.

        Returns:
            ``(student, config)``: the model and what it was trained on (the inference input
            size and trajectories; :class:`lyra_core.pipelines.world.LyraWorldPipeline` keeps both).

        Raises:
            CheckpointError: the folder or a file is missing or unreadable, weights do not match
                their config, or the VAE, the decoder and ``student.json`` do not fit together.
        """
        folder = Path(folder)
        config = StudentConfig.from_pretrained(folder)
        try:
            vae = VideoVAE.from_pretrained(folder / VAE_FOLDER, use_safetensors=True)
            decoder = LyraDecoder.from_pretrained(folder / DECODER_FOLDER)
            student = cls(vae, decoder)
            student.check_video_size(config.width, config.height, config.num_frames)
        except (OSError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"student checkpoint {folder}: {err}") from err
        student.eval()
        return (student.to(device) if device is not None else student), config
