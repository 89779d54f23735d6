"""Import Lyra-1's released decoder weights (``lyra_static.pt`` / ``lyra_dynamic.pt``) into a
:class:`~lyra_core.models.lyra1.Lyra1Decoder` folder (``config.json`` + ``model.safetensors``).

    lyra import-checkpoint checkpoints/Lyra/lyra_static.pt --out models/lyra1_static

The released files are torch pickles holding the DeepSpeed module dict under ``["module"]``.
They are read with ``torch.load(weights_only=True)``; a file whose weights are not all plain
tensors, or that does not unpickle under that restriction, is refused. Names are converted by
:data:`KEY_MAP` (first matching rule wins; the rest of the name is kept):

==========================================  =====================================
released (``LatentRecon``)                  ours (:class:`Lyra1Decoder`)
==========================================  =====================================
``patch_embed.*``                           ``patch_embed.*``
``patch_plucker_embed.*``                   ``plucker_embed.*``
``patch_time_embed.*``                      ``time_embed.*``
``patch_time_embed_tgt.*``                  ``target_time_embed.*``
``enc_blocks.i.mamba.mamba_scans.j.*``      ``blocks.i.mixer.scans.j.*``
``enc_blocks.i.mamba.*`` (in/out_proj)      ``blocks.i.mixer.*``
``enc_blocks.i.attn.*`` (qkv, proj)         ``blocks.i.*``
``enc_blocks.i.mlp.fc1.*`` / ``fc2.*``      ``blocks.i.mlp.0.*`` / ``blocks.i.mlp.2.*``
``enc_blocks.i.*`` (norm, norm1, norm2)     ``blocks.i.*``
``enc_norm.*``                              ``norm.*``
``deconv.*``                                ``head.*``
==========================================  =====================================

A leading ``module.`` or ``_orig_mod.`` shared by every name (DDP, ``torch.compile``) is
dropped first. The config is Lyra-1's (:meth:`LyraDecoderConfig.lyra1` or
:meth:`~LyraDecoderConfig.lyra1_dynamic`, by ``variant``) with the sizes read from the weights'
shapes (width, depth, Transformer block positions, Mamba-2 sizes, deconv); attention heads are
``width // 64`` (Lyra-1: 8 of 64). Any missing, unexpected or mis-shaped weight is refused with
the list (:class:`~lyra_core.utils.errors.CheckpointError`; exit status 2 on the command line).
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

from lyra_core.models.decoder import LyraDecoderConfig
from lyra_core.models.lyra1 import Lyra1Decoder
from lyra_core.models.modeling_utils import check_released_weights, load_released_weights
from lyra_core.utils.errors import CheckpointError, run_command

__all__ = [
    "INVERSE_KEY_MAP",
    "KEY_MAP",
    "convert_state_dict",
    "import_checkpoint",
    "infer_config",
    "load_released_state_dict",
    "main",
    "released_shapes",
    "to_ours",
    "to_released",
]

_I = r"(\d+)"
KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"patch_embed\.", "patch_embed."),
    (r"patch_plucker_embed\.", "plucker_embed."),
    (r"patch_time_embed_tgt\.", "target_time_embed."),
    (r"patch_time_embed\.", "time_embed."),
    (rf"enc_blocks\.{_I}\.mamba\.mamba_scans\.{_I}\.", r"blocks.\1.mixer.scans.\2."),
    (rf"enc_blocks\.{_I}\.mamba\.", r"blocks.\1.mixer."),
    (rf"enc_blocks\.{_I}\.attn\.", r"blocks.\1."),
    (rf"enc_blocks\.{_I}\.mlp\.fc1\.", r"blocks.\1.mlp.0."),
    (rf"enc_blocks\.{_I}\.mlp\.fc2\.", r"blocks.\1.mlp.2."),
    (rf"enc_blocks\.{_I}\.(norm|norm1|norm2)\.", r"blocks.\1.\2."),
    (r"enc_norm\.", "norm."),
    (r"deconv\.", "head."),
)
"""Released name prefix (regex, matched at the start) -> our prefix (``re`` template)."""

INVERSE_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"patch_embed\.", "patch_embed."),
    (r"plucker_embed\.", "patch_plucker_embed."),
    (r"target_time_embed\.", "patch_time_embed_tgt."),
    (r"time_embed\.", "patch_time_embed."),
    (rf"blocks\.{_I}\.mixer\.scans\.{_I}\.", r"enc_blocks.\1.mamba.mamba_scans.\2."),
    (rf"blocks\.{_I}\.mixer\.", r"enc_blocks.\1.mamba."),
    (rf"blocks\.{_I}\.(qkv|proj)\.", r"enc_blocks.\1.attn.\2."),
    (rf"blocks\.{_I}\.mlp\.0\.", r"enc_blocks.\1.mlp.fc1."),
    (rf"blocks\.{_I}\.mlp\.2\.", r"enc_blocks.\1.mlp.fc2."),
    (rf"blocks\.{_I}\.(norm|norm1|norm2)\.", r"enc_blocks.\1.\2."),
    (r"norm\.", "enc_norm."),
    (r"head\.", "deconv."),
)
"""Our name prefix -> the released one (the inverse of :data:`KEY_MAP`)."""

_STRIPPED_PREFIXES = ("module.", "_orig_mod.")


def _rename(name: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, template in rules:
        match = re.match(pattern, name)
        if match:
            return match.expand(template) + name[match.end() :]
    return None


def to_ours(name: str) -> str | None:
    """Our name of a released weight name (None: no rule matches)."""
    return _rename(name, KEY_MAP)


def to_released(name: str) -> str | None:
    """The released name of one of our weight names (None: no rule matches)."""
    return _rename(name, INVERSE_KEY_MAP)


def released_shapes(config: LyraDecoderConfig) -> dict[str, tuple[int, ...]]:
    """``{released name: shape}`` that a checkpoint for ``config`` holds (built on the meta
    device: no memory)."""
    with torch.device("meta"):
        model = Lyra1Decoder(config)
    return {to_released(k) or k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_released_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a released checkpoint: ``torch.load(weights_only=True)``, the ``["module"]`` dict
    (or the whole dict when it holds the weights directly), a shared ``module.`` /
    ``_orig_mod.`` prefix dropped.

    Raises:
        CheckpointError: no such file, not loadable with ``weights_only=True`` (truncated,
            corrupt, or holding objects other than tensors and containers), no weight dict,
            or entries that are not plain dense tensors.
    """
    state = load_released_weights(path, "module", "DeepSpeed ['module']")
    for prefix in _STRIPPED_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def infer_config(shapes: Mapping[str, tuple[int, ...]], dynamic: bool = False) -> LyraDecoderConfig:
    """Lyra-1's config with the sizes that the released ``shapes`` imply; the defaults stand
    where a size cannot be read (the strict check then lists what does not fit)."""
    base = LyraDecoderConfig.lyra1_dynamic() if dynamic else LyraDecoderConfig.lyra1()
    try:
        width, channels, _, patch, _ = shapes["patch_embed.proj.weight"]
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"enc_blocks\.(\d+)\.", k))}
        attention = {
            int(m.group(1))
            for k in shapes
            if (m := re.match(r"enc_blocks\.(\d+)\.attn\.qkv\.w", k))
        }
        changes: dict = {
            "width": width,
            "latent_channels": channels,
            "patch_size": patch,
            "num_heads": max(1, width // 64),
            "num_layers": max(blocks) + 1,
            "transformer_layers": tuple(sorted(attention)),
            "temporal_factor": shapes["deconv.weight"][2] - 1,
        }
        if attention:
            first = min(attention)
            changes["mlp_ratio"] = shapes[f"enc_blocks.{first}.mlp.fc1.weight"][0] / width
        mamba = sorted(blocks - attention)
        if mamba:
            scan = f"enc_blocks.{mamba[0]}.mamba.mamba_scans.0."
            d_inner = shapes[f"enc_blocks.{mamba[0]}.mamba.out_proj.weight"][1]
            conv_dim, _, d_conv = shapes[scan + "conv1d.weight"]
            heads = shapes[scan + "dt_bias"][0]
            changes |= {
                "expand": d_inner // width,
                "d_state": (conv_dim - d_inner) // 2,
                "d_conv": d_conv,
                "head_dim": d_inner // heads,
            }
        return replace(base, **changes)
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return base


def convert_state_dict(
    state: Mapping[str, Tensor], config: LyraDecoderConfig, source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename released weights to ours (:data:`KEY_MAP`), refusing any that is missing,
    unexpected or mis-shaped for ``config``.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped weight
            (released names), or non-finite values.
    """
    expected = released_shapes(config)
    unexpected = sorted(k for k in state if k not in expected or to_ours(k) is None)
    check_released_weights(state, expected, unexpected, source, "Lyra-1's decoder")
    return {to_ours(k) or k: v for k, v in state.items()}


def import_checkpoint(
    path: str | os.PathLike[str], out: str | os.PathLike[str], variant: str = "auto"
) -> tuple[Path, LyraDecoderConfig]:
    """Convert a released checkpoint into a :class:`Lyra1Decoder` folder at ``out`` (written
    atomically, an existing folder replaced).

    Args:
        path: ``lyra_static.pt`` or ``lyra_dynamic.pt``.
        out: the folder to write.
        variant: "static", "dynamic" (time embeddings used), or "auto": "dynamic" when the file
            name contains "dynamic" (the weights are the same layout either way).

    Returns:
        The folder and the config it holds.
    """
    if variant not in ("auto", "static", "dynamic"):
        raise CheckpointError(f"variant must be auto, static or dynamic, got {variant!r}")
    if variant == "auto":
        variant = "dynamic" if "dynamic" in Path(path).name.lower() else "static"
    state = load_released_state_dict(path)
    config = infer_config({k: tuple(v.shape) for k, v in state.items()}, variant == "dynamic")
    converted = convert_state_dict(state, config, str(path))
    model = Lyra1Decoder(config)
    model.load_state_dict(converted)  # casts to the model's float32
    return model.save_pretrained(out), config


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra import-checkpoint``."""
    parser = argparse.ArgumentParser(
        prog="lyra import-checkpoint",
        description="convert Lyra-1's released decoder (lyra_static.pt / lyra_dynamic.pt) "
        "into a decoder folder (config.json + model.safetensors)",
    )
    parser.add_argument("path", type=Path, help="the released .pt file (DeepSpeed module dict)")
    parser.add_argument(
        "--out", type=Path, required=True, help="decoder folder to write (replaced if present)"
    )
    parser.add_argument(
        "--variant",
        choices=("auto", "static", "dynamic"),
        default="auto",
        help="static or dynamic (time embeddings); auto: dynamic when the file name says so",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra import-checkpoint``: returns 0, or 2 after one line on stderr for bad input."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        folder, config = import_checkpoint(args.path, args.out, args.variant)
        kind = "dynamic" if config.use_time_embedding else "static"
        print(
            f"Lyra-1 {kind} decoder ({config.num_layers} blocks, width {config.width}) "
            f"written to {folder}"
        )
        return 0

    return run_command("lyra import-checkpoint", command)


if __name__ == "__main__":
    raise SystemExit(main())
