"""``lyra teacher``: tools for the GEN3C teacher.

    lyra teacher encode-text --t5 checkpoints/google-t5/t5-11b \
        --out models/gen3c/text_embeddings.safetensors

``encode-text`` computes the teacher's two constant T5 embeddings once, as GEN3C's inference
does (Cosmos-Predict1's T5 text encoder): the prompt (empty, as Lyra generates its data) and
the negative prompt (GEN3C's default, the same text as diffusers' ``DEFAULT_NEGATIVE_PROMPT``),
each encoded on its own, padded to 512 tokens and zero from its own token count on
(:func:`lyra_core.models.gen3c.encode_prompts`), and writes them atomically
(:func:`lyra_core.models.gen3c.save_text_embeddings`).

The T5 folder is a local Hugging Face folder (GEN3C downloads ``google-t5/t5-11b``): config.json
of a ``t5`` model, its weights (``model.safetensors`` or ``pytorch_model.bin``; a full
encoder-decoder checkpoint is fine, the decoder is skipped) and the tokenizer
(``tokenizer.json``; a folder with only ``spiece.model`` needs the ``protobuf`` package too).
Nothing is downloaded, and a folder whose encoder weights are incomplete is refused. It needs
the ``transformers`` package (a dependency of ``lyra_core``); without it the command stops with
one line. Generation (:class:`lyra_core.pipelines.gen3c.Gen3CPipeline`) reads the file and never
loads T5.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from lyra_core.models.gen3c import TEXT_EMBEDDINGS_NAME, encode_prompts, save_text_embeddings
from lyra_core.utils.errors import CheckpointError, LyraError, run_command

__all__ = ["build_parser", "encode_text", "main"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _load_t5(folder: Path, dtype: torch.dtype):
    """(tokenizer, encoder) from a local folder, as GEN3C loads them (``T5TokenizerFast``,
    ``T5EncoderModel``); CheckpointError for a folder that is not a complete T5."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import T5EncoderModel, T5TokenizerFast
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise LyraError(
            "encode-text needs the 'transformers' package, which is not installed: "
            "pip install transformers"
        ) from err
    if not folder.is_dir():
        raise CheckpointError(f"no T5 folder at {folder}")
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"no T5 model at {folder}: config.json is missing")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise CheckpointError(f"{config}: not a model configuration ({err})") from err
    if model_type != "t5":
        raise CheckpointError(f"{folder}: a {model_type!r} model, not T5 (model_type 't5')")
    has_json = (folder / "tokenizer.json").is_file()
    if not has_json and not (folder / "spiece.model").is_file():
        raise CheckpointError(f"no T5 tokenizer at {folder}: tokenizer.json is missing")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its loading report: refused below in one line instead
    try:
        tokenizer = T5TokenizerFast.from_pretrained(folder, local_files_only=True)
        encoder, info = T5EncoderModel.from_pretrained(
            folder,
            dtype=dtype,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # listed in info, refused below
        )
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        hint = "" if has_json else " (converting spiece.model needs sentencepiece and protobuf)"
        raise CheckpointError(f"T5 at {folder}{hint}: {_one_line(err)}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    mis_shaped = {key[0] if isinstance(key, tuple) else key for key in info["mismatched_keys"]}
    problems = [
        f"{len(keys)} {kind} weights (e.g. {sorted(keys)[0]})"
        for kind, keys in (("missing", info["missing_keys"]), ("mis-shaped", mis_shaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"T5 encoder at {folder}: {', '.join(problems)}")
    if len(tokenizer) > encoder.config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens, the encoder embeds "
            f"{encoder.config.vocab_size}: not one T5"
        )
    return tokenizer, encoder.eval()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def default_negative_prompt() -> str:
    """GEN3C's default negative prompt (its inference scripts' ``--negative_prompt``), which
    diffusers' Cosmos pipelines define as the same text."""
    from diffusers.pipelines.cosmos.pipeline_cosmos_video2world import DEFAULT_NEGATIVE_PROMPT

    return DEFAULT_NEGATIVE_PROMPT


def encode_text(
    t5: str | os.PathLike[str],
    out: str | os.PathLike[str],
    prompt: str = "",
    negative_prompt: str | None = None,
    max_sequence_length: int = 512,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Compute and write the prompt and negative-prompt embeddings; returns the file."""
    if max_sequence_length < 1:
        raise LyraError(f"max-length must be >= 1, got {max_sequence_length}")
    tokenizer, encoder = _load_t5(Path(t5), DTYPES[dtype])
    negative = default_negative_prompt() if negative_prompt is None else negative_prompt
    encoder.to(device)

    def run(tokens_in, attention_mask):
        return encoder(tokens_in.to(device), attention_mask=attention_mask.to(device))

    embeds = encode_prompts(tokenizer, run, [prompt, negative], max_sequence_length).cpu()
    folder = Path(out).is_dir() or os.fspath(out).endswith(("/", os.sep))
    out = Path(out) / TEXT_EMBEDDINGS_NAME if folder else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "prompt": prompt,
        "negative_prompt": negative,
        "t5": Path(t5).name,
        "max_sequence_length": str(max_sequence_length),
    }
    return save_text_embeddings(out, embeds[:1], embeds[1:], metadata)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra teacher``."""
    parser = argparse.ArgumentParser(
        prog="lyra teacher",
        description="tools for the GEN3C teacher (camera-controlled video diffusion)",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="encode-text"
    )
    encode = commands.add_parser(
        "encode-text",
        help="compute the constant T5 embeddings (empty prompt, default negative prompt)",
        description="compute the teacher's two constant T5 embeddings from a local T5 folder "
        "and write them to a safetensors file (needs the transformers package)",
    )
    encode.add_argument(
        "--t5", type=Path, required=True, help="local T5 folder (T5EncoderModel + tokenizer)"
    )
    encode.add_argument(
        "--out",
        required=True,  # a str: a trailing / marks a folder
        help=f"file to write (a folder, or a path ending in /, gets {TEXT_EMBEDDINGS_NAME})",
    )
    encode.add_argument("--prompt", default="", help="the prompt (default: empty, as Lyra)")
    encode.add_argument(
        "--negative-prompt",
        default=None,
        help="the negative prompt (default: Cosmos' default negative prompt)",
    )
    encode.add_argument(
        "--max-length", type=int, default=512, help="tokens per prompt (Cosmos: 512)"
    )
    encode.add_argument("--device", default="cpu", help="torch device for T5 (default: cpu)")
    encode.add_argument(
        "--dtype", choices=tuple(DTYPES), default="float32", help="T5's dtype while encoding"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lyra teacher``: returns 0, or 2 after one line on stderr for bad input."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        path = encode_text(
            args.t5,
            args.out,
            args.prompt,
            args.negative_prompt,
            args.max_length,
            args.device,
            args.dtype,
        )
        print(f"text embeddings written to {path}")
        return 0

    return run_command("lyra teacher", command)


if __name__ == "__main__":
    raise SystemExit(main())
