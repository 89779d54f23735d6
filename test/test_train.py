"""lyra train: real training steps from a config, logs, validation grid, checkpoints, a resume
that restores weights, optimizer state, schedule and data order, lineage of continued runs, and
one-line failures."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core.models.decoder import LyraDecoder
from lyra_core.pipelines.student import StudentConfig
from lyra_core.training import export
from lyra_core.training.checkpoints import load_trainer_state, save_trainer_state
from lyra_core.training.config import training_parser
from lyra_core.training.train_student import TrainConfig, main
from lyra_core.utils.errors import CheckpointError, ConfigError

HAVE_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
LOSS = {"mse": 1.0, "perceptual": 0.5, "depth": 0.05, "opacity": 0.0}  # Lyra's weights
# ST-LPIPS (the default metric) in the loss and in validation where its weights are installed.
PERCEPTUAL = {"loss": LOSS} if HAVE_STLPIPS else {"perceptual": "none"}


def write_config(tmp_path, data_dir, name="train.yaml", **overrides):
    config = {
        "data_dir": str(data_dir),
        "out_dir": str(tmp_path / "run"),
        "steps": 4,
        "lr": 0.003,
        "target_views": 3,  # drawn from the generator, so the data order matters on resume
        "log_every": 1,
        "val_every": 2,
        "save_every": 2,
    } | overrides
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """A 4-step run (checkpoints at steps 2 and 4) and its config file."""
    tmp = tmp_path_factory.mktemp("train")
    path = write_config(tmp, tiny_dataset, **PERCEPTUAL)
    assert main(["--config", str(path)]) == 0
    return tmp / "run", path


def test_train_logs_validates_and_checkpoints(trained):
    run, _ = trained
    lines = read_log(run)
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in lines) and "val_psnr" in lines[1]
    assert ("perceptual" in lines[0]) == ("val_perceptual" in lines[1]) == HAVE_STLPIPS
    assert {"mse", "depth", "opacity", "lr", "seconds"} <= set(lines[0])
    assert (run / "validation" / "step_0000004.png").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000004",
    ]
    assert yaml.safe_load((run / "train_config.yaml").read_text())["steps"] == 4
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["decoder"] == "tiny" and lineage["parents"] == []
    LyraDecoder.from_pretrained(run / "checkpoints" / "step_0000004" / "decoder")


def _assert_same_optimizer_state(resumed: dict, straight: dict) -> None:
    states = resumed["optimizer"]["state"]
    assert states.keys() == straight["optimizer"]["state"].keys() and states
    for index, state in states.items():
        other = straight["optimizer"]["state"][index]
        assert int(state["step"]) == int(other["step"]) == 4
        torch.testing.assert_close(state["exp_avg"], other["exp_avg"])
        torch.testing.assert_close(state["exp_avg_sq"], other["exp_avg_sq"])
    groups = resumed["optimizer"]["param_groups"], straight["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups[0]] == [g["lr"] for g in groups[1]]
    assert torch.equal(resumed["rng"], straight["rng"])


def test_resume_continues_exactly_where_the_run_stopped(trained, tmp_path):
    """4 steps in one go == 2 steps, a resume from the step-2 checkpoint, 2 more steps: the same
    weights, Adam moments and step counts, learning rates and scenes drawn."""
    run, path = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_0000004")  # as if stopped after step 2
    assert main(["--config", str(path), "--out-dir", str(copy)]) == 0

    straight = run / "checkpoints" / "step_0000004"
    resumed = copy / "checkpoints" / "step_0000004"
    expected = LyraDecoder.from_pretrained(straight / "decoder").state_dict()
    for name, value in LyraDecoder.from_pretrained(resumed / "decoder").state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)
    _assert_same_optimizer_state(
        torch.load(resumed / "trainer.pt", weights_only=True),
        torch.load(straight / "trainer.pt", weights_only=True),
    )
    again, before = read_log(copy)[-2:], read_log(run)[-2:]
    assert [r["step"] for r in again] == [3, 4]
    for key in ("lr", "loss", "mse", "depth"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in before], rel=1e-5)

    # --steps extends a finished run from its last checkpoint.
    assert main(["--config", str(path), "--out-dir", str(copy), "--steps", "5"]) == 0
    assert [r["step"] for r in read_log(copy)][-3:] == [3, 4, 5]
    assert (copy / "checkpoints" / "step_0000005" / "trainer.pt").is_file()


def test_continued_runs_record_their_parents_and_cumulative_steps(trained, tmp_path, tiny_dataset):
    """A run from a previous run's decoder, then one from the exported student of that run:
    each export's training record holds the chain of runs and the steps summed over it."""
    run, first_config = trained
    child_config = write_config(
        tmp_path,
        tiny_dataset,
        name="child.yaml",
        out_dir=str(tmp_path / "child"),
        decoder=str(run / "checkpoints" / "step_0000002" / "decoder"),
        steps=1,
        val_every=100,
        perceptual="none",
    )
    assert main(["--config", str(child_config)]) == 0
    assert export.main(["--run", str(tmp_path / "child"), "--out", str(tmp_path / "s1")]) == 0
    record = StudentConfig.from_pretrained(tmp_path / "s1").training
    assert record["config"] == str(child_config) and record["steps"] == 1
    assert record["cumulative_steps"] == 3
    assert record["parents"] == [
        {"config": str(first_config), "out_dir": str(run), "steps": 2, "cumulative_steps": 2}
    ]

    grandchild_config = write_config(
        tmp_path,
        tiny_dataset,
        name="grandchild.yaml",
        out_dir=str(tmp_path / "grandchild"),
        decoder=str(tmp_path / "s1"),  # a student folder: its decoder/ is loaded
        steps=2,
        save_every=1,
        val_every=100,
        perceptual="none",
    )
    assert main(["--config", str(grandchild_config)]) == 0
    out = tmp_path / "s2"
    args = ["--run", str(tmp_path / "grandchild"), "--out", str(out), "--step", "1"]
    assert export.main(args) == 0
    record = StudentConfig.from_pretrained(out).training
    assert record["steps"] == 1 and record["cumulative_steps"] == 4
    assert [p["steps"] for p in record["parents"]] == [2, 1]
    assert [p["cumulative_steps"] for p in record["parents"]] == [2, 3]
    assert record["parents"][-1]["student"] == str(tmp_path / "s1")


def test_export_failures_print_one_line_and_exit_2(trained, tmp_path, capsys):
    run, _ = trained
    out = str(tmp_path / "student")
    for args, message in [
        (["--run", str(tmp_path / "nowhere")], "not a training run"),
        (["--run", str(run), "--step", "3"], "no checkpoint of step 3"),
    ]:
        assert export.main([*args, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lyra export: error: ") and message in err
    assert not (tmp_path / "student").exists()


def test_every_option_has_help():
    parsers = [training_parser("lyra train", "doc"), export.build_parser()]
    for parser in parsers:
        options = [a for a in parser._actions if a.dest != "help"]
        assert options and all(a.help for a in options), parser.prog


def test_bad_configs_are_refused(tmp_path, tiny_dataset):
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        TrainConfig.from_yaml(path)
    path.write_text("steps: ten\n")
    with pytest.raises(ConfigError, match="steps must be an integer"):
        TrainConfig.from_yaml(path)
    path.write_text("steps: [1\n")
    with pytest.raises(ConfigError, match="not readable YAML"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="no such settings file"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("target_views: null\nlr: 1\n")  # null where allowed, an int for a float
    assert TrainConfig.from_yaml(path).target_views is None


EXPECTED_FAILURES = {
    "missing config file": (lambda tmp, data: tmp / "missing.yaml", "no such settings file"),
    "not YAML": (lambda tmp, data: _text(tmp / "c.yaml", "steps: [1\n"), "not readable YAML"),
    "unknown key": (lambda tmp, data: _text(tmp / "c.yaml", "stepz: 3\n"), "stepz"),
    "no scenes": (lambda tmp, data: write_config(tmp, tmp / "empty"), "no training scenes"),
    "unknown loss term": (
        lambda tmp, data: write_config(tmp, data, loss={"msee": 1.0}),
        "msee",
    ),
    "perceptual term without a metric": (
        lambda tmp, data: write_config(tmp, data, loss=LOSS, perceptual="none"),
        "needs a perceptual metric",
    ),
    "unknown perceptual metric": (
        lambda tmp, data: write_config(tmp, data, perceptual="lpips"),
        "unknown perceptual metric",
    ),
    "missing decoder folder": (
        lambda tmp, data: write_config(tmp, data, decoder=str(tmp / "nowhere")),
        "no decoder at",
    ),
    "unknown decoder override": (
        lambda tmp, data: write_config(tmp, data, decoder_overrides={"widht": 3}),
        "widht",
    ),
}


def _text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("failure", EXPECTED_FAILURES)
def test_expected_failures_print_one_line_and_exit_2(failure, tmp_path, tiny_dataset, capsys):
    make, message = EXPECTED_FAILURES[failure]
    assert main(["--config", str(make(tmp_path, tiny_dataset))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lyra train: error: ") and message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def _garbage_trainer_state(run):
    (run / "checkpoints" / "step_0000004" / "trainer.pt").write_bytes(b"not a checkpoint")


def _garbage_decoder(run):
    (run / "checkpoints" / "step_0000004" / "decoder" / "model.safetensors").write_bytes(b"x")


CORRUPT_CHECKPOINTS = {
    "trainer.pt not a checkpoint": (_garbage_trainer_state, [], "unreadable trainer state"),
    "decoder weights unreadable": (_garbage_decoder, [], "unreadable weights"),
    "another decoder width": (lambda run: None, ["decoder_overrides: {width: 32}"], "width 64"),
}


@pytest.mark.parametrize("corruption", CORRUPT_CHECKPOINTS)
def test_resuming_from_a_corrupt_or_mismatched_checkpoint_fails_cleanly(
    corruption, trained, tmp_path, capsys
):
    run, path = trained
    corrupt, extra_settings, message = CORRUPT_CHECKPOINTS[corruption]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    corrupt(copy)
    config = tmp_path / "resume.yaml"
    config.write_text("\n".join([path.read_text(), *extra_settings]) + "\n")
    args = ["--config", str(config), "--out-dir", str(copy), "--steps", "6"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step_0000004" in err and message in err
    assert not (copy / "checkpoints" / "step_0000006").exists()


def test_optimizer_state_of_other_parameters_is_refused(tmp_path):
    saved = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(saved.parameters())
    saved(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_trainer_state(tmp_path, 1, optimizer, rng_state=torch.Generator().get_state())
    state = load_trainer_state(tmp_path, torch.optim.AdamW(torch.nn.Linear(3, 2).parameters()))
    assert state["step"] == 1 and state["rng"].dtype == torch.uint8
    with pytest.raises(CheckpointError, match="does not fit"):
        load_trainer_state(tmp_path, torch.optim.AdamW(torch.nn.Linear(4, 2).parameters()))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_trainer_state(tmp_path, torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]))


def test_the_command_fails_without_a_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "lyra_core.training.train_student", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"lyra train: error: {missing}: no such settings file"
    ]
