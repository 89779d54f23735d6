"""lyra export + lyra eval: a trained run becomes a student folder; students are compared with
the raw 3D-cache baseline on held-out views (JSON + markdown + PNG)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core import cli
from lyra_core.data.format import list_scenes, load_scene
from lyra_core.evaluation.evaluate import CACHE_METHOD, cache_gaussians, image_metrics, render_views
from lyra_core.pipelines.student import LyraStudent
from lyra_core.training.train_student import main as train_main

HAVE_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
PERCEPTUAL = "stlpips-alex" if HAVE_STLPIPS else "none"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_dataset):
    """Three real training steps of the tiny student (with an all-Transformer override)."""
    tmp = tmp_path_factory.mktemp("run")
    config = {
        "data_dir": str(tiny_dataset),
        "out_dir": str(tmp / "run"),
        "steps": 3,
        "lr": 0.003,
        "perceptual": "none",
        "loss": {"mse": 1.0, "perceptual": 0.0},
        "target_views": 3,
        "frames_per_trajectory": 9,
        "val_every": 3,
        "save_every": 3,
        "decoder_overrides": {"transformer_layers": [0, 1, 2, 3]},
    }
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 0
    return tmp / "run"


def test_export_bundles_vae_decoder_and_training_record(tmp_path, trained_run):
    out = tmp_path / "student"
    assert cli.main(["export", "--run", str(trained_run), "--out", str(out)]) == 0
    student, config = LyraStudent.from_pretrained(out)
    assert (config.width, config.height, config.num_frames) == (32, 32, 9)
    assert config.training["steps"] == 3 and "val_psnr" in config.training
    assert student.decoder.config.transformer_layers == (0, 1, 2, 3)
    with pytest.raises(FileNotFoundError, match="step 7"):
        cli.main(["export", "--run", str(trained_run), "--out", str(out), "--step", "7"])


def test_eval_writes_reports_and_matches_direct_metrics(tmp_path, trained_run, tiny_dataset):
    student_dir = tmp_path / "student"
    cli.main(["export", "--run", str(trained_run), "--out", str(student_dir)])
    out = tmp_path / "eval"
    args = ["--data", str(tiny_dataset), "--split", "test", "--student", f"tiny={student_dir}"]
    code = cli.main(
        ["eval", *args, "--out", str(out), "--perceptual", PERCEPTUAL, "--untrained-control"]
    )
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["summary"]) == [CACHE_METHOD, "tiny", "tiny_untrained"]
    assert report["summary"]["tiny"] != report["summary"]["tiny_untrained"]
    assert report["data"] == {"split": "test", "scenes": 2, "views_per_scene": 2}
    assert ("stlpips-alex" in report["summary"]["tiny"]) == HAVE_STLPIPS
    assert report["methods"]["tiny"]["parameters"] > 0
    # students also report how their input-view Gaussians fit the input (the cache is exact)
    for name in ("tiny", "tiny_untrained"):
        fit = report["summary"][name]
        assert 0.0 < fit["input_rgb_psnr"] < 60.0 and 0.0 < fit["input_depth_error"] < 100.0
    assert "input_rgb_psnr" not in report["summary"][CACHE_METHOD]
    table = (out / "metrics.md").read_text()
    assert "| 3d_cache |" in table and "| tiny |" in table
    assert "input-view depth error" in table
    cache_row = next(line for line in table.splitlines() if line.startswith("| 3d_cache |"))
    assert [cell.strip() for cell in cache_row.split("|")].count("-") == 3  # parameters, 2 fits
    assert (out / "heldout.png").stat().st_size > 0

    # The baseline's numbers are the metrics of the cache rendered at the held-out cameras.
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    rendered = render_views(cache_gaussians(sample), sample.heldout, sample.background)
    direct = image_metrics(rendered, sample.heldout.rgb.float() / 255, None)
    first = report["per_scene"][CACHE_METHOD][0]
    assert first["psnr"] == pytest.approx(direct["psnr"], rel=1e-5)
    assert first["ssim"] == pytest.approx(direct["ssim"], rel=1e-5)


def test_cache_baseline_is_the_input_view_unprojected(tiny_dataset):
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    gaussians = cache_gaussians(sample)
    assert 0 < len(gaussians) <= 32 * 32
    # Rendered from the input camera, the cache reproduces the input image where it has depth.
    from lyra_core.data.format import ViewSet

    view = ViewSet(
        rgb=sample.input_rgb[None],
        depth=sample.input_depth[None],
        Ks=sample.input_K[None],
        camtoworlds=sample.input_camtoworld[None],
        cache_rgb=sample.input_rgb[None],
        cache_mask=(sample.input_depth > 0)[None],
    )
    rendered = render_views(gaussians, view, (0.0, 0.0, 0.0))[0]
    valid = sample.input_depth > 0
    error = (rendered - sample.input_rgb.float() / 255).abs()[valid].mean()
    assert float(error) < 0.1


def test_lyra_cli_lists_commands_and_refuses_unknown(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "train-vae" in capsys.readouterr().out
    assert cli.main(["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
