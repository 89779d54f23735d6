"""``lyra teacher``: tools for the GEN3C teacher.

    lyra teacher encode-text --t5 checkpoints/t5-11b --out models/gen3c/text_embeddings.safetensors

``encode-text`` computes the teacher's two constant T5 embeddings once: the prompt (empty, as
Lyra generates its data) and the negative prompt (Cosmos' default, diffusers'
``DEFAULT_NEGATIVE_PROMPT``), each padded to 512 tokens and zero after its own tokens, and writes
them atomically (:func:`lyra_core.models.gen3c.save_text_embeddings`). The T5 folder is a local
Hugging Face folder of the encoder (``T5EncoderModel``, Cosmos: t5-11b) and its tokenizer;
nothing is downloaded. It needs the ``transformers`` package (and ``sentencepiece`` for T5's
tokenizer), which ``lyra_core`` does not install: without it the command stops with one line.
Generation (:class:`lyra_core.pipelines.gen3c.Gen3CPipeline`) reads the file and never loads T5.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from lyra_core.models.gen3c import TEXT_EMBEDDINGS_NAME, encode_prompts, save_text_embeddings
from lyra_core.utils.errors import CheckpointError, LyraError, run_command

__all__ = ["build_parser", "encode_text", "main"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _load_t5(folder: Path, dtype: torch.dtype):
    """(tokenizer, encoder) from a local folder; LyraError without ``transformers``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer, T5EncoderModel
    except ImportError as err:
        raise LyraError(
            "encode-text needs the 'transformers' package (with 'sentencepiece'), which is not "
            "installed: pip install transformers sentencepiece"
        ) from err
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"no T5 model at {folder}: config.json is missing")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        encoder = T5EncoderModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        message = " ".join(str(err).split())[:300]
        raise CheckpointError(f"T5 at {folder}: {message}") from err
    return tokenizer, encoder.eval()


def default_negative_prompt() -> str:
    """Cosmos' default negative prompt, as diffusers' Cosmos pipelines define it."""
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
    out = Path(out)
    if out.is_dir():
        out = out / TEXT_EMBEDDINGS_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"prompt": prompt, "negative_prompt": negative, "t5": Path(t5).name}
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
        type=Path,
        required=True,
        help=f"file to write (a folder gets {TEXT_EMBEDDINGS_NAME} inside)",
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
