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
    if data.get("dynamic"):
        from lyra_core.training.train_dynamic import DynamicTrainConfig

        settings_class = DynamicTrainConfig
    else:
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


def test_lyra1_preset_is_lyra1s_decoder():
    """``decoder: lyra1`` builds Lyra-1's static decoder, as the reference preset with Lyra-1's
    three settings did; the teacher-data config uses it."""
    from lyra_core.models.decoder import LyraDecoderConfig
    from lyra_core.training.train_student import preset_decoder_config
    from lyra_core.utils.errors import ConfigError

    config = TrainConfig.from_yaml(CONFIG_DIR / "train_lyra1_teacher.yaml")
    assert config.decoder == "lyra1" and not config.decoder_overrides
    lyra1 = preset_decoder_config(config)
    assert lyra1 == LyraDecoderConfig.lyra1() and lyra1.architecture == "lyra1"
    overrides = {"architecture": "lyra1", "mamba_layout": "shared", "norm_eps": 1e-6}
    spelled_out = TrainConfig(decoder="reference", decoder_overrides=overrides)
    assert preset_decoder_config(spelled_out) == lyra1
    pruned = TrainConfig(decoder="lyra1", decoder_overrides={"prune_ratio": 0.8})
    assert preset_decoder_config(pruned).prune_ratio == 0.8
    with pytest.raises(ConfigError, match="no preset"):
        preset_decoder_config(TrainConfig(decoder="outputs/run/decoder"))
