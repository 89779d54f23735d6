"""Every training config the repository ships parses into its settings dataclass (a typo in a
key would otherwise only surface minutes into a run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lyra_core.training.train_student import TrainConfig
from lyra_core.training.train_vae import VAETrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
TRAINING_CONFIGS = sorted(
    p for p in CONFIG_DIR.rglob("*.yaml") if p.name.startswith(("train", "vae", "student"))
)


def test_training_configs_are_found():
    names = {p.name for p in TRAINING_CONFIGS}
    assert {"vae_tiny.yaml", "train_tiny.yaml", "train_tiny_prune.yaml"} <= names


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_training_config_parses(path):
    data = yaml.safe_load(path.read_text())
    settings_class = TrainConfig if "decoder" in data else VAETrainConfig
    config = settings_class.from_yaml(path)
    assert config.steps > 0 and config.out_dir.startswith("outputs/")


def test_shipped_student_records_the_four_stage_chain_of_configs():
    """The shipped student.json names its config and the earlier runs it continued; each stage's
    config starts from the previous stage's final decoder, and the steps add up (README: 1,000 +
    1,200 + 2,500 + 2,000 = 6,700)."""
    from lyra_core.pipelines.student import StudentConfig
    from lyra_core.weights import shipped_student_path

    record = StudentConfig.from_pretrained(shipped_student_path()).training
    chain = [*record["parents"], record]
    assert [stage["config"] for stage in chain] == [
        "config/train_tiny.yaml",
        "config/train_tiny_continue.yaml",
        "config/train_tiny_prune.yaml",
        "config/train_tiny_depth.yaml",
    ]
    root = CONFIG_DIR.parent
    configs = [TrainConfig.from_yaml(root / stage["config"]) for stage in chain]
    assert configs[0].decoder == "tiny"
    total = 0
    for stage, config, previous in zip(chain, configs, [None, *configs[:-1]], strict=True):
        assert stage["steps"] == config.steps
        total += config.steps
        assert stage["cumulative_steps"] == total
        if previous is not None:
            step_folder = f"{previous.out_dir}/checkpoints/step_{previous.steps:07d}"
            assert config.decoder == f"{step_folder}/decoder"
    assert record["cumulative_steps"] == 6700
    assert record["settings"]["decoder"] == configs[-1].decoder
    assert [p["out_dir"] for p in record["parents"]] == [c.out_dir for c in configs[:-1]]
