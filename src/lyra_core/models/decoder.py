"""The Lyra student: a latent 3DGS decoder (Transformer + Mamba-2) over several camera trajectories.

It reads the video latents of V trajectories at once (plus Plucker rays of their cameras) and
outputs one 3D Gaussian per pixel per latent frame per view in a single forward pass:

1. patch embedding of the latents: Conv3d (patch 1 x p x p) + LayerNorm, width D;
2. Plucker rays of each latent frame's camera on the latent grid, embedded by their own
   zero-initialised patch embedding and added to the tokens;
3. all views' tokens fused into ONE sequence, so attention and state-space scans mix the views;
4. hybrid blocks: bidirectional Mamba-2 blocks, with Transformer blocks (self-attention + MLP) at
   ``config.transformer_layers``;
5. LayerNorm, then a ConvTranspose3d head back to pixel resolution: 12 raw channels per pixel
   (distance 1, rgb 3, scale 3, rotation 4, opacity 1);
6. Lyra's activations: position = ray origin + ray direction * depth with
   depth = near (1 - w) + far w, w = sigmoid(distance - 1.65); scale = min(0.3 exp(x - 1), 0.3);
   opacity = sigmoid(x - 2); rotation = normalize(x); rgb = 0.5 tanh(x) + 0.5.

Models follow diffusers' conventions: built from a config dataclass, saved and loaded as a plain
folder (``config.json`` + ``model.safetensors``).

The same config also describes Lyra-1's released network (:meth:`LyraDecoderConfig.lyra1`,
``architecture="lyra1"``), built by the sibling class
:class:`~lyra_core.models.lyra1.Lyra1Decoder` (VAE-encoded Plucker rays, time embeddings, one
Gaussian per latent cell per video frame); :func:`~lyra_core.models.lyra1.load_decoder` loads
either kind of folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor, nn

from lyra_core.geometry.cameras import plucker_rays
from lyra_core.models.mamba2 import Mamba2Block
from lyra_core.models.modeling_utils import check_state_dict, write_folder_atomically
from lyra_core.scene.gaussians import SH_C0, Gaussians
from lyra_core.utils.errors import CheckpointError

RAW_CHANNELS = 12  # distance 1, rgb 3, scale 3, rotation 4, opacity 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class LyraDecoderConfig:
    """Hyper-parameters of :class:`LyraDecoder` (defaults: Lyra's reference numbers)."""

    latent_channels: int = 16
    vae_spatial_factor: int = 8
    patch_size: int = 2
    width: int = 512
    num_layers: int = 16
    num_heads: int = 8
    transformer_layers: tuple[int, ...] = (7, 15)  # 0-based: blocks 8 and 16
    mlp_ratio: float = 4.0
    d_state: int = 256
    d_conv: int = 4
    expand: int = 2
    head_dim: int = 64
    near: float = 0.1
    far: float = 500.0
    distance_shift: float = 1.65
    max_scale: float = 0.3
    opacity_shift: float = 2.0
    prune_ratio: float = 0.8
    # "student": this package's decoder (:class:`LyraDecoder`); "lyra1": Lyra-1's released
    # network (:class:`~lyra_core.models.lyra1.Lyra1Decoder`)
    architecture: str = "student"
    # Mamba-2 blocks: "separate" (two full mixers) or "shared" (Lyra-1: one in/out projection)
    mamba_layout: str = "separate"
    norm_eps: float = 1e-5  # LayerNorms of the Transformer blocks and the final norm
    temporal_factor: int = 8  # VAE temporal compression (Lyra-1's deconv up-samples time by it)
    use_time_embedding: bool = False  # Lyra-1 dynamic: time embeddings added to the tokens
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ("student", "lyra1"):
            raise ValueError(
                f"architecture must be 'student' or 'lyra1', got {self.architecture!r}"
            )
        if self.mamba_layout not in ("separate", "shared"):
            raise ValueError(
                f"mamba_layout must be 'separate' or 'shared', got {self.mamba_layout!r}"
            )
        if self.use_time_embedding and self.architecture != "lyra1":
            raise ValueError("use_time_embedding needs architecture 'lyra1'")
        self.transformer_layers = tuple(int(i) for i in self.transformer_layers)
        if any(not 0 <= i < self.num_layers for i in self.transformer_layers):
            raise ValueError(
                f"transformer_layers {self.transformer_layers} must lie in [0, {self.num_layers})"
            )
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")

    @classmethod
    def reference(cls) -> LyraDecoderConfig:
        """Lyra's full-size decoder: 16 blocks, width 512, Transformer blocks 8 and 16."""
        return cls()

    @classmethod
    def lyra1(cls) -> LyraDecoderConfig:
        """Lyra-1's released static decoder (``lyra_static.pt``): width 512, 16 blocks, 8 heads,
        Transformer blocks 7 and 15 (0-based), shared bidirectional Mamba-2 (d_state 256, head
        dim 64), LayerNorm eps 1e-6, VAE-encoded Plucker rays (32 channels), time-embedding
        layers present but unused, deconv (9, 2, 2) / stride (8, 2, 2) / padding (4, 0, 0),
        80 % opacity pruning. About 33M parameters."""
        return cls(architecture="lyra1", mamba_layout="shared", norm_eps=1e-6)

    @classmethod
    def lyra1_dynamic(cls) -> LyraDecoderConfig:
        """Lyra-1's released dynamic decoder (``lyra_dynamic.pt``): :meth:`lyra1` with the time
        embeddings of the input frames and of the target time added to the tokens."""
        return cls(
            architecture="lyra1", mamba_layout="shared", norm_eps=1e-6, use_time_embedding=True
        )

    @classmethod
    def tiny(cls) -> LyraDecoderConfig:
        """A small decoder for tests and CPU training."""
        return cls(
            width=64, num_layers=4, num_heads=4, transformer_layers=(1, 3), d_state=16, head_dim=16
        )

    @property
    def pixels_per_token(self) -> int:
        """Edge of the pixel square one token decodes to (patch x VAE downsampling)."""
        return self.patch_size * self.vae_spatial_factor

    def to_dict(self) -> dict:
        data = asdict(self)
        data["transformer_layers"] = list(self.transformer_layers)
        return data


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention (scaled_dot_product_attention) + MLP, both residual."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        batch, length, width = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(batch, length, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, L, head_dim) each
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Conv3d over (time 1, space p x p) patches, then LayerNorm: (N, C, T, h, w) -> tokens."""

    def __init__(
        self, in_channels: int, width: int, patch: int, norm: bool = True, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.proj = nn.Conv3d(
            in_channels, width, kernel_size=(1, patch, patch), stride=(1, patch, patch)
        )
        if zero_init:  # a conditioning branch that starts with no effect
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, T, h, w) -> (N, T * h/p * w/p, D)."""
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


@dataclass
class DecoderOutput:
    """Per-pixel Gaussians of every view and latent frame, activated.

    All tensors have leading dims (B, V, T', H, W) with H, W the pixel resolution.
    """

    means: Tensor  # (..., 3) meters
    quats: Tensor  # (..., 4) unit, wxyz
    log_scales: Tensor  # (..., 3) log meters
    opacity_logits: Tensor  # (...)
    rgb: Tensor  # (..., 3) in [0, 1]
    depth: Tensor  # (...) distance along the ray, meters

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def z_depth(self, camtoworlds: Tensor) -> Tensor:
        """Depth of every Gaussian along the optical axis of its own latent frame's camera
        (the convention of rendered depth maps; :attr:`depth` is the distance along the ray).

        Args:
            camtoworlds: (B, V, T', 4, 4) the latent frames' cameras (OpenCV axes).

        Returns:
            (B, V, T', H, W) meters.
        """
        forward = camtoworlds[..., None, None, :3, 2]
        centres = camtoworlds[..., None, None, :3, 3]
        return ((self.means - centres) * forward).sum(dim=-1)

    def to_gaussians(self, batch_index: int = 0, prune_ratio: float = 0.0) -> Gaussians:
        """Flatten one batch element into a :class:`Gaussians` scene (optionally pruned, e.g.
        Lyra's 0.8: keep the 20% most opaque)."""
        scene = Gaussians(
            means=self.means[batch_index].reshape(-1, 3),
            quats=self.quats[batch_index].reshape(-1, 4),
            log_scales=self.log_scales[batch_index].reshape(-1, 3),
            opacity_logits=self.opacity_logits[batch_index].reshape(-1),
            sh=((self.rgb[batch_index].reshape(-1, 3) - 0.5) / SH_C0)[:, None, :],
        )
        return scene.prune_by_opacity(prune_ratio) if prune_ratio > 0 else scene


def build_blocks(config: LyraDecoderConfig) -> nn.ModuleList:
    """The hybrid blocks: :class:`TransformerBlock` at ``config.transformer_layers``, pre-norm
    bidirectional :class:`~lyra_core.models.mamba2.Mamba2Block` elsewhere."""
    c = config
    return nn.ModuleList(
        TransformerBlock(c.width, c.num_heads, c.mlp_ratio, eps=c.norm_eps)
        if i in c.transformer_layers
        else Mamba2Block(
            c.width,
            d_state=c.d_state,
            d_conv=c.d_conv,
            expand=c.expand,
            head_dim=c.head_dim,
            layout=c.mamba_layout,  # type: ignore[arg-type]
        )
        for i in range(c.num_layers)
    )


def activate_gaussians(
    raw: Tensor, dirs: Tensor, origins: Tensor, config: LyraDecoderConfig
) -> DecoderOutput:
    """Lyra's activations of the 12 raw channels (distance 1, rgb 3, scale 3, rotation 4,
    opacity 1) of pixel-aligned Gaussians.

    Args:
        raw: (..., 12) raw outputs.
        dirs: (..., 3) unit ray directions (world), broadcast with ``raw[..., 0]``.
        origins: (..., 3) ray origins (camera centres, meters), broadcast likewise.
        config: near, far, distance_shift, max_scale, opacity_shift.
    """
    c = config
    weight = torch.sigmoid(raw[..., 0] - c.distance_shift)
    depth = c.near * (1 - weight) + c.far * weight
    log_max = math.log(c.max_scale)
    return DecoderOutput(
        means=origins + dirs * depth[..., None],
        quats=F.normalize(raw[..., 7:11], dim=-1),
        log_scales=torch.clamp_max(raw[..., 4:7] - 1.0 + log_max, log_max),  # min(exp(.), 0.3)
        opacity_logits=raw[..., 11] - c.opacity_shift,
        rgb=0.5 * torch.tanh(raw[..., 1:4]) + 0.5,
        depth=depth,
    )


class DecoderFolderMixin:
    """``save_pretrained`` / ``from_pretrained`` of the decoders built from a
    :class:`LyraDecoderConfig` (``config.json`` + ``model.safetensors``)."""

    config: LyraDecoderConfig

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (atomically)."""
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            weights = self.state_dict()  # type: ignore[attr-defined]
            state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})

        return write_folder_atomically(folder, write)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], device: torch.device | str | None = None
    ):
        """Build from ``config.json`` and load ``model.safetensors`` (strict).

        Raises:
            CheckpointError: a missing folder or file, a config that is not a
                :class:`LyraDecoderConfig` in JSON (or is for the other decoder class),
                unreadable weights, or weights that do not match the config (names and shapes).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"no decoder at {folder}: {path.name} is missing")
        try:
            data = json.loads(config_path.read_text())
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            model = cls(LyraDecoderConfig(**data))  # type: ignore[call-arg]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{config_path}: not a LyraDecoderConfig ({err})") from err
        try:
            state = load_file(str(weights_path), device=str(device or "cpu"))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{weights_path}: unreadable weights ({err})") from err
        check_state_dict(model, {k: v.shape for k, v in state.items()}, folder)
        model.load_state_dict(state)
        return model.to(device) if device is not None else model


class LyraDecoder(DecoderFolderMixin, nn.Module):
    """Latents of V trajectories (+ their cameras) -> per-pixel 3D Gaussians."""

    def __init__(self, config: LyraDecoderConfig) -> None:
        super().__init__()
        if config.architecture != "student":
            raise ValueError(
                f"architecture {config.architecture!r} is built by "
                "lyra_core.models.lyra1.Lyra1Decoder (or load_decoder), not LyraDecoder"
            )
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.latent_channels, c.width, c.patch_size)
        self.plucker_embed = PatchEmbed(6, c.width, c.patch_size, norm=False, zero_init=True)
        self.blocks = build_blocks(c)
        self.norm = nn.LayerNorm(c.width, eps=c.norm_eps)
        p = c.pixels_per_token
        self.head = nn.ConvTranspose3d(
            c.width, RAW_CHANNELS, kernel_size=(1, p, p), stride=(1, p, p)
        )

    def forward(self, latents: Tensor, camtoworlds: Tensor, Ks: Tensor) -> DecoderOutput:
        """Decode.

        Args:
            latents: (B, V, T', C, h, w) video latents of V trajectories (T' latent frames).
            camtoworlds: (B, V, T', 4, 4) camera of each latent frame (OpenCV axes).
            Ks: (B, V, T', 3, 3) intrinsics of the pixel-resolution frames
                (H = h * vae_spatial_factor, W = w * vae_spatial_factor).

        Returns:
            Activated per-pixel Gaussians with leading dims (B, V, T', H, W).
        """
        c = self.config
        batch, views, frames, channels, h, w = latents.shape
        if channels != c.latent_channels:
            raise ValueError(f"latents have {channels} channels, the config {c.latent_channels}")
        if h % c.patch_size or w % c.patch_size:
            raise ValueError(f"latent grid {h}x{w} must be divisible by patch {c.patch_size}")
        height, width = h * c.vae_spatial_factor, w * c.vae_spatial_factor

        flat = latents.reshape(batch * views, frames, channels, h, w).transpose(1, 2)
        tokens = self.patch_embed(flat)  # (B V, T' h/p w/p, D)
        rays_latent = plucker_rays(camtoworlds, Ks, width, height, grid_size=(h, w))
        rays_latent = rays_latent.reshape(batch * views, frames, h, w, 6).permute(0, 4, 1, 2, 3)
        tokens = tokens + self.plucker_embed(rays_latent.to(tokens.dtype))

        per_view = tokens.shape[1]
        x = tokens.reshape(batch, views * per_view, c.width)  # one sequence over all views
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).reshape(
            batch * views, frames, h // c.patch_size, w // c.patch_size, c.width
        )
        raw = self.head(x.permute(0, 4, 1, 2, 3))  # (B V, 12, T', H, W)
        raw = raw.permute(0, 2, 3, 4, 1).reshape(batch, views, frames, height, width, RAW_CHANNELS)
        rays = plucker_rays(camtoworlds, Ks, width, height)  # (B, V, T', H, W, 6)
        return activate_gaussians(raw, rays[..., 3:], camtoworlds[..., None, None, :3, 3], c)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "DecoderFolderMixin",
    "DecoderOutput",
    "LyraDecoder",
    "LyraDecoderConfig",
    "PatchEmbed",
    "TransformerBlock",
    "activate_gaussians",
    "build_blocks",
    "count_parameters",
]
