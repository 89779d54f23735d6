"""GEN3C's network (the Lyra teacher): diffusers' ``CosmosTransformer3DModel`` with GEN3C's
settings, and the constant text embeddings it reads.

GEN3C is Cosmos-Predict1 7B Video2World with a wider input: per latent voxel the noisy latent
(16 channels), the condition mask (1), the pose latents of two 3D-cache buffers (64 = 2 x
(16 RGB + 16 mask)) and the padding mask (1): 82 channels, patchified (1 x 2 x 2) to a
Linear(328 -> 4096, no bias). In diffusers' terms that is the
"Cosmos-1.0-Diffusion-7B-Video2World" configuration with ``in_channels=81`` (diffusers adds the
padding-mask channel itself): :meth:`Gen3CTransformerConfig.full`. Folders on disk keep exactly
that configuration (``lyra import-teacher`` writes them; diffusers reads them).

Padding channel: diffusers' own concatenation of the padding mask resizes it with torchvision,
which the CPU stack here does not install. :func:`load_transformer` and
:func:`build_transformer` therefore build the *same* network with the padding channel folded
into the inputs (``in_channels=82, concat_padding_mask=False``; identical weights and shapes),
and the caller appends the (all-zero, unpadded video) padding channel last: see
:func:`transformer_inputs`. :func:`save_transformer` writes the unfolded configuration back.

Text: the teacher's prompt is empty and its negative prompt is Cosmos' default, so the two T5
embeddings are constants, computed once (``lyra teacher encode-text``) and stored as
``text_embeddings.safetensors`` (:func:`save_text_embeddings` / :func:`load_text_embeddings`):
``prompt_embeds`` and ``negative_prompt_embeds``, each (1, 512, 1024) float32 for T5-11B,
zero after the prompt's tokens (as diffusers' Cosmos pipelines make them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lyra_core.models.modeling_utils import check_folder_weights, write_folder_atomically
from lyra_core.utils.errors import CheckpointError

__all__ = [
    "CONFIG_NAME",
    "TEXT_EMBEDDINGS_NAME",
    "WEIGHTS_NAME",
    "Gen3CTransformerConfig",
    "build_transformer",
    "encode_prompts",
    "load_text_embeddings",
    "load_transformer",
    "save_text_embeddings",
    "save_transformer",
    "transformer_inputs",
    "unfolded_config",
    "write_transformer_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
TEXT_EMBEDDINGS_NAME = "text_embeddings.safetensors"
TEXT_KEYS = ("prompt_embeds", "negative_prompt_embeds")


def _diffusers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach a hub
    import diffusers

    return diffusers


@dataclass(frozen=True)
class Gen3CTransformerConfig:
    """Sizes of GEN3C's transformer; :meth:`diffusers_kwargs` gives diffusers' arguments.

    Attributes:
        num_layers: transformer blocks (7B: 28).
        num_attention_heads: heads (7B: 32); width = heads x ``attention_head_dim``.
        attention_head_dim: channels per head (128).
        adaln_lora_dim: AdaLN-LoRA rank (256).
        text_embed_dim: T5 embedding width read by cross-attention (T5-11B: 1024).
        mlp_ratio: feed-forward width / model width (4).
        latent_channels: the video latent's channels (Cosmos CV8x8x8: 16).
        pose_channels: pose-latent channels, buffers x (RGB + mask) x latent channels (64).
        max_size: (frames, height, width) the positional embeddings cover, in latent voxels.
        patch_size: (time, height, width) patch of the tokens.
        rope_scale: RoPE extrapolation per axis (time, height, width).
    """

    num_layers: int = 28
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    adaln_lora_dim: int = 256
    text_embed_dim: int = 1024
    mlp_ratio: float = 4.0
    latent_channels: int = 16
    pose_channels: int = 64
    max_size: tuple[int, int, int] = (128, 240, 240)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_scale: tuple[float, float, float] = (2.0, 1.0, 1.0)

    @classmethod
    def full(cls) -> Gen3CTransformerConfig:
        """GEN3C-Cosmos-7B (Cosmos-1.0-Diffusion-7B-Video2World sizes, 81 input channels)."""
        return cls()

    @classmethod
    def tiny(cls, **changes) -> Gen3CTransformerConfig:
        """A few-block, narrow version for tests (same channels and layout): 2 blocks,
        width 32 (2 heads of 16), AdaLN-LoRA 8, text width 32, small position tables."""
        base = cls(
            num_layers=2,
            num_attention_heads=2,
            attention_head_dim=16,
            adaln_lora_dim=8,
            text_embed_dim=32,
            max_size=(16, 32, 32),
        )
        return replace(base, **changes)

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def in_channels(self) -> int:
        """diffusers' ``in_channels``: latent + condition mask + pose latents (81)."""
        return self.latent_channels + 1 + self.pose_channels

    @property
    def patch_embed_features(self) -> int:
        """Input features of the patch embedding, padding channel included (328)."""
        t, h, w = self.patch_size
        return (self.in_channels + 1) * t * h * w

    def diffusers_kwargs(self, fold_padding: bool = False) -> dict[str, Any]:
        """Arguments of ``CosmosTransformer3DModel``: GEN3C's (``in_channels=81``,
        ``concat_padding_mask=True``), or with ``fold_padding`` the same network taking the
        padding channel as an input (``in_channels=82``, ``concat_padding_mask=False``)."""
        return {
            "in_channels": self.in_channels + (1 if fold_padding else 0),
            "out_channels": self.latent_channels,
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "num_layers": self.num_layers,
            "mlp_ratio": self.mlp_ratio,
            "text_embed_dim": self.text_embed_dim,
            "adaln_lora_dim": self.adaln_lora_dim,
            "max_size": tuple(self.max_size),
            "patch_size": tuple(self.patch_size),
            "rope_scale": tuple(self.rope_scale),
            "concat_padding_mask": not fold_padding,
            "extra_pos_embed_type": "learnable",
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_transformer(
    config: Gen3CTransformerConfig, fold_padding: bool = True, device: torch.device | str = "cpu"
) -> nn.Module:
    """A randomly initialised ``CosmosTransformer3DModel`` of ``config`` (float32; use
    ``device="meta"`` for shapes without memory). ``fold_padding``: see the module docstring."""
    diffusers = _diffusers()
    with torch.device(device):
        return diffusers.CosmosTransformer3DModel(**config.diffusers_kwargs(fold_padding))


def _is_folded(transformer: nn.Module) -> bool:
    return not bool(transformer.config.concat_padding_mask)


def unfolded_config(transformer: nn.Module) -> dict[str, Any]:
    """The diffusers config of ``transformer`` as GEN3C's folder stores it (padding mask
    concatenated by diffusers, ``in_channels`` without it)."""
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    if _is_folded(transformer):
        config |= {"in_channels": config["in_channels"] - 1, "concat_padding_mask": True}
    return config


def transformer_inputs(
    transformer: nn.Module, condition_mask: Tensor, pose_latents: Tensor
) -> dict[str, Tensor]:
    """The ``condition_mask`` / ``padding_mask`` keyword arguments that give GEN3C's channel
    order ``[x_t, condition mask, pose latents, padding mask]``.

    Args:
        transformer: from :func:`build_transformer` or :func:`load_transformer`.
        condition_mask: (B, 1, T', h, w), 1 on the conditioning latent frames.
        pose_latents: (B, 64, T', h, w).

    Returns:
        ``{"condition_mask": ..., "padding_mask": ...}``; the padding mask is all zeros (no
        padded pixels), appended as a channel for a folded transformer.
    """
    condition = torch.cat([condition_mask, pose_latents], dim=1)
    b, _, t, h, w = condition.shape
    if _is_folded(transformer):
        padding = condition.new_zeros(b, 1, t, h, w)
        return {"condition_mask": torch.cat([condition, padding], dim=1)}
    # diffusers resizes this (B, 1, H, W) mask to the latent size itself (needs torchvision)
    return {"condition_mask": condition, "padding_mask": condition.new_zeros(1, 1, h, w)}


def load_transformer(
    folder: str | os.PathLike[str], torch_dtype: torch.dtype | None = None
) -> nn.Module:
    """Load a GEN3C transformer folder (diffusers ``CosmosTransformer3DModel``: config.json +
    safetensors), with the padding channel folded into the inputs.

    Raises:
        CheckpointError: no folder or config, a config that is not a Cosmos transformer or whose
            input is not GEN3C's, weights missing, unreadable or not fitting the config.
    """
    from safetensors import SafetensorError

    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"no GEN3C transformer at {folder}: {CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable transformer config ({err})") from err
    if not isinstance(config, dict) or config.get("_class_name") != "CosmosTransformer3DModel":
        raise CheckpointError(f"{path}: not a CosmosTransformer3DModel config")
    extra = 1 if config.get("concat_padding_mask", True) else 0
    channels = config.get("in_channels", 16) + extra
    out = config.get("out_channels", 16)
    if channels != out + 1 + 64 + 1:
        raise CheckpointError(
            f"{path}: {channels} input channels with the padding mask, GEN3C takes "
            f"{out + 66} (latent, condition mask, 64 pose channels, padding mask)"
        )
    diffusers = _diffusers()
    try:
        model = diffusers.CosmosTransformer3DModel.from_pretrained(
            folder,
            torch_dtype=torch_dtype,
            in_channels=channels,
            concat_padding_mask=False,
        )
        check_folder_weights(model, folder)
    except CheckpointError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
        message = " ".join(str(err).split())[:300]
        raise CheckpointError(f"GEN3C transformer {folder}: {message}") from err
    return model.eval()


def write_transformer_folder(
    folder: Path, state_dict: Mapping[str, Tensor], config: Mapping[str, Any]
) -> None:
    """Write ``config.json`` (diffusers' format, ``_class_name`` added) and the weights as one
    safetensors file into an existing ``folder`` (not atomic on its own)."""
    from safetensors.torch import save_file

    diffusers = _diffusers()
    stored = {
        "_class_name": "CosmosTransformer3DModel",
        "_diffusers_version": diffusers.__version__,
    }
    stored |= {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    (folder / CONFIG_NAME).write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def save_transformer(transformer: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Save ``transformer`` as GEN3C's diffusers folder (unfolded config), atomically."""
    state = transformer.state_dict()
    config = unfolded_config(transformer)
    return write_folder_atomically(folder, lambda tmp: write_transformer_folder(tmp, state, config))


# ---------------------------------------------------------------------- text embeddings


def encode_prompts(
    tokenizer: Callable[..., Any],
    text_encoder: Callable[..., Any],
    prompts: Sequence[str],
    max_sequence_length: int = 512,
) -> Tensor:
    """T5 embeddings of ``prompts`` as GEN3C (Cosmos-Predict1) computes them: each prompt on its
    own, padded to ``max_sequence_length`` tokens (longer ones truncated), the encoder given the
    tokenizer's attention mask, and the output zeroed from the prompt's token count on.

    Args:
        tokenizer: a Hugging Face T5 tokenizer (called with ``padding="max_length"``; appends
            the end token, so the empty prompt is one token long).
        text_encoder: a T5 encoder returning ``.last_hidden_state``.
        prompts: the texts.
        max_sequence_length: tokens per prompt (Cosmos: 512).

    Returns:
        (N, max_sequence_length, D) float32.
    """
    embeds = []
    for prompt in prompts:
        tokens = tokenizer(
            [prompt],
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)
        hidden = hidden.last_hidden_state.float().cpu()
        length = int(tokens.attention_mask.sum())
        positions = torch.arange(hidden.shape[1])[None, :, None]
        embeds.append(torch.where(positions < length, hidden, 0.0))
    return torch.cat(embeds)


def save_text_embeddings(
    path: str | os.PathLike[str],
    prompt_embeds: Tensor,
    negative_prompt_embeds: Tensor,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the two (1, L, D) embeddings to a safetensors file, atomically."""
    from safetensors.torch import save

    from lyra_core.utils.atomic import write_bytes_atomic

    tensors = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
    _check_text(tensors, str(path))
    data = save(
        {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
        metadata=dict(metadata or {}),
    )
    return write_bytes_atomic(path, data)


def load_text_embeddings(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """(prompt_embeds, negative_prompt_embeds), each (1, L, D) float32.

    Raises:
        CheckpointError: no such file, not safetensors, or not the two finite (1, L, D)
            tensors of one shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no text embeddings at {path} (make them with 'lyra teacher encode-text')"
        )
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a safetensors file ({err})") from err
    _check_text(tensors, str(path))
    return tensors["prompt_embeds"].float(), tensors["negative_prompt_embeds"].float()


def _check_text(tensors: Mapping[str, Tensor], source: str) -> None:
    if set(tensors) != set(TEXT_KEYS):
        raise CheckpointError(
            f"{source}: expected exactly {list(TEXT_KEYS)}, got {sorted(tensors)}"
        )
    shapes = {tuple(t.shape) for t in tensors.values()}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 3 or shape[0] != 1 or 0 in shape:
        raise CheckpointError(f"{source}: embeddings must share one (1, L, D) shape, got {shapes}")
    if not all(torch.isfinite(t.float()).all() for t in tensors.values()):
        raise CheckpointError(f"{source}: non-finite text embeddings")
