"""lyra train-vae: real VAE training steps, checkpoints, a resume that restores weights,
optimizer state, schedule and data order, latent statistics, report, one-line failures."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core.data.format import list_scenes
from lyra_core.models.vae import VideoVAE
from lyra_core.training.schedules import warmup_cosine
from lyra_core.training.train_vae import VAETrainConfig, main, reconstruction_loss, scene_videos
from lyra_core.utils.errors import ConfigError


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


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """A 4-step VAE run (checkpoints at steps 2 and 4) and its config file."""
    tmp = tmp_path_factory.mktemp("vae")
    path = write_config(tmp, tiny_dataset)
    assert main(["--config", str(path)]) == 0
    return tmp / "vae", path


def test_train_vae_checkpoints_and_reports(trained, tiny_dataset):
    run, _ = trained
    lines = read_log(run)
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert set(lines[0]) == {"step", "l1", "lr", "seconds"}
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


def test_resume_continues_exactly_where_the_run_stopped(trained, tmp_path):
    """4 steps in one go == 2 steps, a resume from the step-2 checkpoint, 2 more steps: the same
    weights, Adam moments and step counts, learning rates and videos drawn."""
    run, path = trained
    copy = tmp_path / "vae"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_0000004")  # as if stopped after step 2
    assert main(["--config", str(path), "--out-dir", str(copy)]) == 0

    straight = run / "checkpoints" / "step_0000004"
    resumed = copy / "checkpoints" / "step_0000004"
    expected = VideoVAE.from_pretrained(straight / "vae").state_dict()
    for name, value in VideoVAE.from_pretrained(resumed / "vae").state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)
    states = [torch.load(f / "trainer.pt", weights_only=True) for f in (resumed, straight)]
    assert states[0]["optimizer"]["state"].keys() == states[1]["optimizer"]["state"].keys()
    for index, state in states[0]["optimizer"]["state"].items():
        other = states[1]["optimizer"]["state"][index]
        assert int(state["step"]) == int(other["step"]) == 4
        torch.testing.assert_close(state["exp_avg"], other["exp_avg"])
        torch.testing.assert_close(state["exp_avg_sq"], other["exp_avg_sq"])
    assert torch.equal(states[0]["rng"], states[1]["rng"])
    again, before = read_log(copy)[-2:], read_log(run)[-2:]
    assert [r["step"] for r in again] == [3, 4]
    for key in ("lr", "l1", "val_psnr"):
        assert [r.get(key) for r in again] == pytest.approx([r.get(key) for r in before])
    reports = [json.loads((r / "report.json").read_text()) for r in (copy, run)]
    assert reports[0]["val_psnr"] == pytest.approx(reports[1]["val_psnr"])


def test_vae_training_reduces_reconstruction_error(tiny_dataset):
    torch.manual_seed(0)
    vae = VideoVAE.tiny()
    videos = scene_videos(list_scenes(tiny_dataset / "train")[0], "rgb")[:2]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    first = float(reconstruction_loss(vae, videos).detach())
    for _ in range(15):
        optimizer.zero_grad()
        loss = reconstruction_loss(vae, videos)
        loss.backward()
        optimizer.step()
    assert float(reconstruction_loss(vae, videos).detach()) < 0.8 * first


def test_bad_vae_configs_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batchsize: 3\n")
    with pytest.raises(ConfigError, match="batchsize"):
        VAETrainConfig.from_yaml(path)
    path.write_text("batch_size: 2.5\n")
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        VAETrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"data_dir": "empty"}, "need train/ and val/ scenes"),  # under tmp_path
        ({"architecture": {"latent_chanels": 8}}, "latent_chanels"),
    ],
)
def test_expected_failures_print_one_line_and_exit_2(
    settings, message, tmp_path, tiny_dataset, capsys
):
    settings = dict(settings)
    data_dir = tmp_path / settings.pop("data_dir") if "data_dir" in settings else tiny_dataset
    assert main(["--config", str(write_config(tmp_path, data_dir, **settings))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lyra train-vae: error: ") and message in err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such settings file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda vae: (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"x"), "vae"),
        (lambda vae: (vae / "config.json").write_text("{oops"), "not a readable VAE config"),
    ],
    ids=["weights", "config"],
)
def test_resuming_from_a_corrupt_checkpoint_fails_cleanly(
    corrupt, message, trained, tmp_path, capsys
):
    run, path = trained
    copy = tmp_path / "vae"
    shutil.copytree(run, copy)
    corrupt(copy / "checkpoints" / "step_0000004" / "vae")
    assert main(["--config", str(path), "--out-dir", str(copy), "--steps", "6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step_0000004" in err and message in err
    assert not (copy / "checkpoints" / "step_0000006").exists()


def test_warmup_cosine_schedule():
    values = [warmup_cosine(step, 100, warmup=10) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
