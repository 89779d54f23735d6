"""lyra-train: real training steps from a config, logs, validation grid, checkpoint, resume."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core.models.decoder import LyraDecoder
from lyra_core.training.train_student import TrainConfig, main

HAVE_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
LOSS = {"mse": 1.0, "perceptual": 0.5, "depth": 0.05, "opacity": 0.0}  # Lyra's weights
# ST-LPIPS (the default metric) in the loss and in validation where its weights are installed.
PERCEPTUAL = {"loss": LOSS} if HAVE_STLPIPS else {"perceptual": "none"}


@pytest.fixture(scope="module")
def data_dir(tiny_dataset):
    return tiny_dataset


def write_config(tmp_path, data_dir, **overrides):
    config = {
        "data_dir": str(data_dir),
        "out_dir": str(tmp_path / "run"),
        "steps": 4,
        "lr": 0.003,
        "log_every": 1,
        "val_every": 2,
        "save_every": 2,
    } | overrides
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_logs_validates_checkpoints_and_resumes(tmp_path, data_dir):
    path = write_config(tmp_path, data_dir, **PERCEPTUAL)
    assert main(["--config", str(path)]) == 0
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in lines) and "val_psnr" in lines[1]
    assert ("perceptual" in lines[0]) == ("val_perceptual" in lines[1]) == HAVE_STLPIPS
    assert (run / "validation" / "step_0000004.png").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000004",
    ]
    LyraDecoder.from_pretrained(run / "checkpoints" / "step_0000004" / "decoder")

    assert main(["--config", str(path), "--steps", "6"]) == 0  # resumes at step 4
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]


def test_bad_configs_are_refused(tmp_path, data_dir):
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="no training scenes"):
        main(["--config", str(write_config(tmp_path, tmp_path / "empty"))])
    with pytest.raises(ValueError, match="needs a perceptual metric"):
        main(["--config", str(write_config(tmp_path, data_dir, loss=LOSS, perceptual="none"))])
    with pytest.raises(ValueError, match="unknown perceptual metric"):
        main(["--config", str(write_config(tmp_path, data_dir, perceptual="lpips"))])
