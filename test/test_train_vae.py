"""lyra train-vae: real VAE training steps, checkpoints, resume, latent statistics, report."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core.data.format import list_scenes
from lyra_core.models.vae import VideoVAE
from lyra_core.training.schedules import warmup_cosine
from lyra_core.training.train_vae import VAETrainConfig, main, reconstruction_loss, scene_videos


def write_config(tmp_path, data_dir, **overrides):
    config = {
        "data_dir": str(data_dir),
        "out_dir": str(tmp_path / "vae"),
        "steps": 4,
        "batch_size": 2,
        "lr": 0.003,
        "warmup_steps": 1,
        "stats_videos": 4,
        "val_videos": 2,
        "log_every": 1,
        "val_every": 2,
        "save_every": 2,
    } | overrides
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_vae_checkpoints_resumes_and_reports(tmp_path, tiny_dataset):
    path = write_config(tmp_path, tiny_dataset)
    assert main(["--config", str(path)]) == 0
    run = tmp_path / "vae"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert "val_psnr" in lines[1] and (run / "validation" / "step_0000004.png").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000004",
    ]
    report = json.loads((run / "report.json").read_text())
    assert report["latent_shape"] == [2, 16, 4, 4]  # 9 frames -> 2, 32 px -> 4
    assert 0 < report["val_psnr"] < 60 and {"val_psnr_rgb", "val_psnr_cache"} <= set(report)

    # The final folder stores latent statistics: encoded training videos are normalised.
    vae = VideoVAE.from_pretrained(run / "vae")
    assert vae.latents_std.shape == (1, 16, 1, 1, 1)
    videos = torch.cat([scene_videos(s, "rgb") for s in list_scenes(tiny_dataset / "train")])
    with torch.no_grad():
        latents = vae.encode(videos)
    assert abs(float(latents.mean())) < 0.5 and 0.5 < float(latents.std()) < 2.0

    assert main(["--config", str(path), "--steps", "6"]) == 0  # resumes at step 4
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]


def test_vae_training_reduces_reconstruction_error(tiny_dataset):
    torch.manual_seed(0)
    vae = VideoVAE.tiny()
    videos = scene_videos(list_scenes(tiny_dataset / "train")[0], "rgb")[:2]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    first = float(reconstruction_loss(vae, videos))
    for _ in range(15):
        optimizer.zero_grad()
        loss = reconstruction_loss(vae, videos)
        loss.backward()
        optimizer.step()
    assert float(reconstruction_loss(vae, videos)) < 0.8 * first


def test_bad_vae_configs_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batchsize: 3\n")
    with pytest.raises(ValueError, match="batchsize"):
        VAETrainConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        main(["--config", str(write_config(tmp_path, tmp_path / "empty"))])


def test_warmup_cosine_schedule():
    values = [warmup_cosine(step, 100, warmup=10) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
