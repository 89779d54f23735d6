"""``lyra teacher encode-text`` end to end on a tiny T5 made here: a sentencepiece vocabulary
trained in-process, a random 2-layer ``T5EncoderModel``, both saved as a Hugging Face folder.
The written embeddings must be what the T5 encoder gives for each prompt on its own tokens
(GEN3C: padded to the max length, zero from the prompt's token count on)."""

from __future__ import annotations

import io
import shutil

import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from lyra_core import cli
from lyra_core.cli.teacher import default_negative_prompt
from lyra_core.models.gen3c import TEXT_EMBEDDINGS_NAME, load_text_embeddings

D_MODEL = 32
SENTENCES = [
    "The video captures a series of frames showing ugly scenes, static with no motion.",
    "Motion blur, over-saturation, shaky footage, low resolution, grainy texture.",
    "A robot drives through a warehouse past shelves and boxes.",
    "Overall, the video is of poor quality, with jump cuts and visual noise.",
]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    """A tiny T5 folder laid out as google-t5/t5-11b's (config.json, weights, tokenizer.json)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_writer=model,
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    # transformers 5 parses a spiece.model file only with protobuf: hand it the pieces and scores.
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(len(processor))]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=4)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=D_MODEL, d_kv=16, d_ff=64, num_layers=2, num_heads=2
    )
    folder = tmp_path_factory.mktemp("t5")
    T5EncoderModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def own_encoding(folder, text: str) -> torch.Tensor:
    """(tokens, D) hidden states of T5 run on the prompt's tokens alone (no padding, no mask)."""
    tokenizer = T5Tokenizer.from_pretrained(folder)
    encoder = T5EncoderModel.from_pretrained(folder).eval()
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids).last_hidden_state[0]


def stderr_lines(capsys) -> list[str]:
    """stderr's lines, less transformers' "Loading weights" progress bar (one line that
    redraws itself on a terminal)."""
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("Loading weights")]


def test_encode_text_writes_gen3c_embeddings(t5_folder, tmp_path):
    out = tmp_path / "gen3c" / "text.safetensors"
    assert cli.main(["teacher", "encode-text", "--t5", str(t5_folder), "--out", str(out)]) == 0
    prompt, negative = load_text_embeddings(out)
    assert prompt.shape == negative.shape == (1, 512, D_MODEL)

    # The empty prompt is one token (</s>): T5's output for it alone, then zeros.
    empty = own_encoding(t5_folder, "")
    assert empty.shape == (1, D_MODEL)
    torch.testing.assert_close(prompt[0, :1], empty, atol=1e-5, rtol=1e-5)
    assert prompt[0, 0].abs().sum() > 0 and prompt[0, 1:].eq(0).all()

    text = default_negative_prompt()
    assert text.startswith("The video captures a series of frames showing ugly scenes")
    mine = own_encoding(t5_folder, text)
    n = mine.shape[0]
    assert 20 < n < 512
    torch.testing.assert_close(negative[0, :n], mine, atol=1e-5, rtol=1e-5)
    assert negative[0, n:].eq(0).all() and negative[0, :n].abs().sum(-1).gt(0).all()
    assert not torch.allclose(negative[0, 0], prompt[0, 0])
    with safe_open(str(out), "pt") as stored:
        metadata = stored.metadata()
    assert metadata["prompt"] == "" and metadata["negative_prompt"] == text


def test_prompt_options_and_folder_output(t5_folder, tmp_path, capsys):
    argv = ["encode-text", "--t5", str(t5_folder), "--out", f"{tmp_path / 'new'}/"]
    argv += ["--prompt", "a robot drives", "--max-length", "24"]
    assert cli.main(["teacher", *argv]) == 0  # a new folder, named by its trailing /
    assert TEXT_EMBEDDINGS_NAME in capsys.readouterr().out
    prompt, negative = load_text_embeddings(tmp_path / "new" / TEXT_EMBEDDINGS_NAME)
    assert prompt.shape == (1, 24, D_MODEL)
    mine = own_encoding(t5_folder, "a robot drives")
    n = mine.shape[0]
    assert 2 < n < 24
    torch.testing.assert_close(prompt[0, :n], mine, atol=1e-5, rtol=1e-5)
    assert prompt[0, n:].eq(0).all()
    assert negative[0].abs().sum(-1).gt(0).all()  # truncated to 24 tokens: none is padding


def test_bad_t5_folders_exit_2_with_one_line(t5_folder, tmp_path, capsys):
    out = tmp_path / "t.safetensors"

    def run(folder) -> list[str]:
        argv = ["teacher", "encode-text", "--t5", str(folder), "--out", str(out)]
        assert cli.main(argv) == 2
        assert not out.exists()
        lines = stderr_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("lyra teacher: error: "), lines
        return lines[0]

    assert "no T5 folder" in run(tmp_path / "missing")

    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(t5_folder / name, no_tokenizer / name)
    assert "no T5 tokenizer" in run(no_tokenizer)

    no_weights = tmp_path / "no_weights"
    shutil.copytree(t5_folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    assert "T5 at" in run(no_weights)

    # An encoder checkpoint without its last feed-forward layer: refused, not randomly filled.
    partial = tmp_path / "partial"
    shutil.copytree(t5_folder, partial)
    weights = load_file(partial / "model.safetensors")
    del weights["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    assert "1 missing weights (e.g. encoder.block.1" in run(partial)
