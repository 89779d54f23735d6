"""Import GEN3C's released transformer (``nvidia/GEN3C-Cosmos-7B``: ``model.pt``) into a diffusers
``CosmosTransformer3DModel`` folder that :func:`lyra_core.models.gen3c.load_transformer` and
:meth:`lyra_core.pipelines.gen3c.Gen3CPipeline.from_pretrained` read.

    lyra import-teacher checkpoints/GEN3C-Cosmos-7B/model.pt --out models/gen3c/transformer

The file is a torch pickle holding the weights under ``["model"]`` with names ``net.*``; it is
read with ``torch.load(weights_only=True)`` (memory-mapped where the format allows), and a file
whose weights are not all plain tensors is refused. Names are converted by diffusers'
Cosmos-1.0 converter (``convert_cosmos_transformer_checkpoint_to_diffusers``), called directly:
diffusers' single-file auto-detection knows Video2World's 72-wide patch embedding, not GEN3C's
328-wide one (82 channels x 1 x 2 x 2: latent, condition mask, 64 pose channels, padding
mask). The entries that converter drops (``net.logvar.*``, ``net.pos_embedder.seq``: training
only) are ignored. The configuration is GEN3C's (:meth:`Gen3CTransformerConfig.full`) with the
sizes read from the weights (blocks, width, head size, AdaLN-LoRA rank, text width, MLP ratio,
position tables), so a reduced test checkpoint converts too; the channels stay GEN3C's. Any
missing, unexpected or mis-shaped weight is refused with the list, in the released names
(:class:`~lyra_core.utils.errors.CheckpointError`; one line and exit status 2 on the command
line). :func:`to_released` maps a diffusers name back to the released one.

The folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) is written atomically,
in the checkpoint's dtype unless ``--dtype`` says otherwise; no model is instantiated, so the
7B import needs about the checkpoint's size in memory (bf16: ~14 GB).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from lyra_core.models.gen3c import (
    Gen3CTransformerConfig,
    build_transformer,
    unfolded_config,
    write_transformer_folder,
)
from lyra_core.models.modeling_utils import (
    check_released_weights,
    load_released_weights,
    write_folder_atomically,
)
from lyra_core.utils.errors import CheckpointError, run_command

__all__ = [
    "DTYPES",
    "convert_state_dict",
    "import_teacher",
    "infer_config",
    "load_released_state_dict",
    "main",
    "released_shapes",
    "to_released",
]

DTYPES = {"keep": None, "bfloat16": torch.bfloat16, "float32": torch.float32}
"""``--dtype`` choices: the stored dtype of the converted weights (``keep``: as released)."""

_PREFIX = "net."
_BLOCK = r"transformer_blocks\.(\d+)\."


def _block(index: str, sub: int) -> str:
    return f"blocks.block{index}.blocks.{sub}."


_INVERSE_RULES: tuple[tuple[str, object], ...] = (
    (r"patch_embed\.proj\.", "x_embedder.proj.1."),
    (r"learnable_pos_embed\.", "extra_pos_embedder."),
    (r"time_embed\.t_embedder\.", "t_embedder.1."),
    (r"time_embed\.norm\.", "affline_norm."),
    (
        _BLOCK + r"norm([123])\.linear_([12])\.",
        lambda m: _block(m[1], int(m[2]) - 1) + f"adaLN_modulation.{m[3]}.",
    ),
    (
        _BLOCK + r"attn([12])\.(to_q|to_k|to_v)\.",
        lambda m: _block(m[1], int(m[2]) - 1) + f"block.attn.{m[3]}.0.",
    ),
    (
        _BLOCK + r"attn([12])\.norm_([qk])\.",
        lambda m: _block(m[1], int(m[2]) - 1) + f"block.attn.to_{m[3]}.1.",
    ),
    (
        _BLOCK + r"attn([12])\.to_out\.",
        lambda m: _block(m[1], int(m[2]) - 1) + "block.attn.to_out.",
    ),
    (_BLOCK + r"ff\.net\.0\.proj\.", lambda m: _block(m[1], 2) + "block.layer1."),
    (_BLOCK + r"ff\.net\.2\.", lambda m: _block(m[1], 2) + "block.layer2."),
    (r"norm_out\.linear_([12])\.", r"final_layer.adaLN_modulation.\1."),
    (r"proj_out\.", "final_layer.linear."),
)
"""diffusers name prefix (regex) -> GEN3C's name without ``net.`` (template or function)."""


def to_released(name: str) -> str:
    """GEN3C's released name (``net.*``) of a diffusers ``CosmosTransformer3DModel`` weight.

    Raises:
        KeyError: a name no rule covers.
    """
    for pattern, template in _INVERSE_RULES:
        match = re.match(pattern, name)
        if match:
            head = template(match) if callable(template) else match.expand(template)
            return _PREFIX + head + name[match.end() :]
    raise KeyError(f"no released name for {name!r}")


def _diffusers_converter():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.loaders.single_file_utils import (
        convert_cosmos_transformer_checkpoint_to_diffusers,
    )

    return convert_cosmos_transformer_checkpoint_to_diffusers


class _KeptOnPop(dict):
    """A dict whose ``pop`` returns without removing. diffusers 0.42.1's converter pops every
    entry out of the checkpoint it is given *before* looking there for its Cosmos-1.0 marker
    (``net.blocks.block1.blocks.0.block.attn.to_q.0.weight``), so on a plain dict it always
    applies the Cosmos-2.0 names; keeping the entries lets it see the marker."""

    def pop(self, key, *default):
        return self[key] if key in self or not default else default[0]


def _convert_names(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' Cosmos-1.0 conversion of ``state`` (a new dict; ``state`` is not changed)."""
    return _diffusers_converter()(_KeptOnPop(state))


def released_shapes(config: Gen3CTransformerConfig) -> dict[str, tuple[int, ...]]:
    """``{released name: shape}`` of a GEN3C checkpoint for ``config`` (meta device)."""
    model = build_transformer(config, fold_padding=False, device="meta")
    return {to_released(k): tuple(v.shape) for k, v in model.state_dict().items()}


def load_released_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read GEN3C's ``model.pt``: ``torch.load(weights_only=True)``, the ``["model"]`` dict (or
    the whole dict when it holds the weights directly).

    Raises:
        CheckpointError: no such file, not loadable with ``weights_only=True``, no weight dict,
            or entries that are not plain dense tensors.
    """
    return load_released_weights(path, "model", "['model'], net.* names", mmap=True)


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> Gen3CTransformerConfig:
    """GEN3C's config with the sizes the released ``shapes`` imply; the defaults stand where a
    size cannot be read (the strict check then lists what does not fit). Channels and patch
    size are always GEN3C's."""
    base = Gen3CTransformerConfig.full()
    try:
        width = shapes["net.x_embedder.proj.1.weight"][0]
        blocks = {int(m[1]) for k in shapes if (m := re.match(r"net\.blocks\.block(\d+)\.", k))}
        first = f"net.blocks.block{min(blocks)}.blocks."
        head_dim = shapes[first + "0.block.attn.to_q.1.weight"][0]
        (pt, ph, pw) = base.patch_size
        table = {a: shapes[f"net.extra_pos_embedder.pos_emb_{a}"][0] for a in "thw"}
        return replace(
            base,
            num_layers=max(blocks) + 1,
            attention_head_dim=head_dim,
            num_attention_heads=width // head_dim,
            adaln_lora_dim=shapes[first + "0.adaLN_modulation.1.weight"][0],
            text_embed_dim=shapes[first + "1.block.attn.to_k.0.weight"][1],
            mlp_ratio=shapes[first + "2.block.layer1.weight"][0] / width,
            max_size=(table["t"] * pt, table["h"] * ph, table["w"] * pw),
        )
    except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError):
        return base


def convert_state_dict(
    state: Mapping[str, Tensor], config: Gen3CTransformerConfig, source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename GEN3C's weights to diffusers' with diffusers' Cosmos-1.0 converter, refusing any
    weight that is missing, unexpected or mis-shaped for ``config``.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped weight (released
            names), or non-finite values.
    """
    model = build_transformer(config, fold_padding=False, device="meta")
    ours = {to_released(k): k for k in model.state_dict()}  # released -> diffusers name
    expected = {to_released(k): tuple(v.shape) for k, v in model.state_dict().items()}
    # The converter renames in place; tensors keep their identity, which maps names back.
    origin = {id(v): k for k, v in state.items()}
    renamed = _convert_names(state)
    new_name = {origin[id(v)]: k for k, v in renamed.items()}
    # Not ``net.*``, or renamed to something that is not this network's weight (entries the
    # converter drops, training-only, are ignored).
    unexpected = sorted(
        k
        for k in state
        if not k.startswith(_PREFIX) or (k in new_name and new_name[k] != ours.get(k))
    )
    check_released_weights(state, expected, unexpected, source, "GEN3C's transformer")
    return {new_name[k]: state[k] for k in expected}


def import_teacher(
    path: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "keep"
) -> tuple[Path, Gen3CTransformerConfig]:
    """Convert GEN3C's ``model.pt`` into a diffusers transformer folder at ``out`` (written
    atomically, an existing folder replaced).

    Args:
        path: the released checkpoint.
        out: the folder to write.
        dtype: ``"keep"`` (as released), ``"bfloat16"`` or ``"float32"``.

    Returns:
        The folder and the config it holds.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    state = load_released_state_dict(path)
    config = infer_config({k: tuple(v.shape) for k, v in state.items()})
    converted = convert_state_dict(state, config, str(path))
    if DTYPES[dtype] is not None:
        converted = {k: v.to(DTYPES[dtype]) for k, v in converted.items()}
    stored = unfolded_config(build_transformer(config, fold_padding=False, device="meta"))
    folder = write_folder_atomically(
        out, lambda tmp: write_transformer_folder(tmp, converted, stored)
    )
    return folder, config


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra import-teacher``."""
    parser = argparse.ArgumentParser(
        prog="lyra import-teacher",
        description="convert GEN3C's released transformer (GEN3C-Cosmos-7B model.pt, weights "
        "under ['model'], net.* names) into a diffusers CosmosTransformer3DModel folder",
    )
    parser.add_argument("path", type=Path, help="the released model.pt (torch pickle)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="transformer folder to write (replaced if present), e.g. TEACHER/transformer",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="keep",
        help="dtype of the stored weights (keep: as released; bfloat16 halves float32 files)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra import-teacher``: returns 0, or 2 after one line on stderr for bad input."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        folder, config = import_teacher(args.path, args.out, args.dtype)
        print(
            f"GEN3C transformer ({config.num_layers} blocks, width {config.width}) "
            f"written to {folder}"
        )
        return 0

    return run_command("lyra import-teacher", command)


if __name__ == "__main__":
    raise SystemExit(main())
