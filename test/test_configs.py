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
