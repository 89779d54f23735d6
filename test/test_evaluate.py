"""lyra export + lyra eval: a trained run becomes a student folder; students are compared with
the raw 3D-cache baseline on held-out views (JSON + markdown + PNG). Also the metrics' values
(coverage PSNR, input-view fit), the one held-out renderer and the CLI's one-line failures."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
import torch
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core import cli
from lyra_core.data.format import list_scenes, load_scene
from lyra_core.evaluation import evaluate as evaluation
from lyra_core.evaluation.evaluate import (
    CACHE_METHOD,
    input_view_fit,
    render_heldout,
    scene_cache,
)
from lyra_core.evaluation.metrics import MIN_MSE, coverage_psnr, image_metrics
from lyra_core.evaluation.report import device_description
from lyra_core.geometry.cameras import Cameras
from lyra_core.models.decoder import DecoderOutput
from lyra_core.pipelines.cache3d import CACHE_BACKGROUND, render_views
from lyra_core.pipelines.student import LyraStudent
from lyra_core.training.train_student import main as train_main
from lyra_core.utils.media import to_uint8

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


def test_export_bundles_vae_decoder_and_training_record(tmp_path, trained_run, capsys):
    out = tmp_path / "student"
    assert cli.main(["export", "--run", str(trained_run), "--out", str(out)]) == 0
    student, config = LyraStudent.from_pretrained(out)
    assert (config.width, config.height, config.num_frames) == (32, 32, 9)
    assert config.training["steps"] == 3 and "val_psnr" in config.training
    assert student.decoder.config.transformer_layers == (0, 1, 2, 3)
    assert cli.main(["export", "--run", str(trained_run), "--out", str(out), "--step", "7"]) == 2
    assert "step 7" in capsys.readouterr().err


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, trained_run):
    out = tmp_path_factory.mktemp("export") / "student"
    assert cli.main(["export", "--run", str(trained_run), "--out", str(out)]) == 0
    return out


def test_eval_writes_reports_and_matches_direct_metrics(tmp_path, student_dir, tiny_dataset):
    out = tmp_path / "eval"
    args = ["--data", str(tiny_dataset), "--split", "test", "--no-progress"]
    args += ["--student", f"tiny={student_dir}", "--student", f"second={student_dir}"]
    code = cli.main(
        ["eval", *args, "--out", str(out), "--perceptual", PERCEPTUAL, "--untrained-control"]
    )
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    names = [CACHE_METHOD, "tiny", "tiny_untrained", "second", "second_untrained"]
    assert list(report["summary"]) == names
    summary = report["summary"]
    assert summary["tiny"] != summary["tiny_untrained"]
    assert report["data"] == {"split": "test", "scenes": 2, "views_per_scene": 2}
    assert ("stlpips-alex" in summary["tiny"]) == HAVE_STLPIPS
    # students also report how their input-view Gaussians fit the input (the cache is exact)
    for name in names[1:]:
        fit = summary[name]
        assert 0.0 < fit["input_rgb_psnr"] < 60.0 and 0.0 < fit["input_depth_error"] < 100.0
    assert "input_rgb_psnr" not in summary[CACHE_METHOD]
    table = (out / "metrics.md").read_text()
    assert "| 3d_cache |" in table and "| tiny |" in table
    assert "input-view depth error" in table
    cache_row = next(line for line in table.splitlines() if line.startswith("| 3d_cache |"))
    assert [cell.strip() for cell in cache_row.split("|")].count("-") == 3  # parameters, 2 fits
    assert (out / "heldout.png").stat().st_size > 0

    # The baseline's numbers are the metrics of the cache rendered at the held-out cameras.
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    rendered = render_heldout(scene_cache(sample), sample)
    direct = image_metrics(rendered, sample.heldout.rgb.float() / 255, None)
    first = report["per_scene"][CACHE_METHOD][0]
    assert first["psnr"] == pytest.approx(direct["psnr"], rel=1e-5)
    assert first["ssim"] == pytest.approx(direct["ssim"], rel=1e-5)
    assert first["gaussians"] == len(scene_cache(sample)) == int((sample.input_depth > 0).sum())


def test_eval_records_are_honest(tmp_path, student_dir, tiny_dataset):
    """Controls get their own record and seed; the device and the prune ratio applied (and the
    Gaussians it left) are in the JSON."""
    out = tmp_path / "eval"
    args = ["eval", "--data", str(tiny_dataset), "--out", str(out), "--perceptual", "none"]
    args += ["--student", f"a={student_dir}", "--student", f"b={student_dir}", "--no-progress"]
    assert cli.main([*args, "--untrained-control", "--control-seed", "5"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["device"] == "cpu" and report["control_seed"] == 5
    assert report["prune_ratio_override"] is None
    methods = report["methods"]
    student, config = LyraStudent.from_pretrained(student_dir)
    ratio = student.decoder.config.prune_ratio
    assert methods["a"]["trained_on"] == config.training and methods["a"]["prune_ratio"] == ratio
    assert methods["a"]["prune_ratio_source"] == "decoder config"
    for name, seed in (("a", 5), ("b", 6)):
        control = methods[f"{name}_untrained"]
        assert "trained_on" not in control and "checkpoint" not in control
        assert control["control_of"] == name and control["init_seed"] == seed
        assert control["vae_checkpoint"] == str(student_dir) and control["prune_ratio"] == ratio
    # distinct seeds: the two controls are different networks, the two students the same one
    assert report["per_scene"]["a_untrained"] != report["per_scene"]["b_untrained"]
    assert report["per_scene"]["a"] == report["per_scene"]["b"]
    # the Gaussians rendered are what the prune ratio leaves of V x T' x H x W
    total = len(config.trajectory_names) * student.vae.latent_frames(9) * 32 * 32
    for scene in report["per_scene"]["a"]:
        assert scene["gaussians"] == round((1 - ratio) * total)

    assert cli.main([*args, "--max-scenes", "1", "--prune-ratio", "0.5"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["prune_ratio_override"] == 0.5 and report["control_seed"] is None
    record = report["methods"]["a"]
    assert (record["prune_ratio"], record["prune_ratio_source"]) == (0.5, "--prune-ratio")
    assert report["per_scene"]["a"][0]["gaussians"] == round(0.5 * total)


def test_cache_baseline_is_the_input_view_unprojected(tiny_dataset):
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    gaussians = scene_cache(sample)
    assert 0 < len(gaussians) <= 32 * 32
    # Rendered from the input camera, the cache reproduces the input image where it has depth.
    camera = Cameras(sample.input_camtoworld[None], sample.input_K[None], 32, 32)
    renders = render_views(gaussians, camera, CACHE_BACKGROUND, output_type="float")
    valid = sample.input_depth > 0
    error = (renders.rgb[0] - sample.input_rgb.float() / 255).abs()[valid].mean()
    assert float(error) < 0.1
    # At the held-out cameras it is the data's own cache render (the same renderer, quantised).
    heldout = sample.heldout
    cameras = Cameras(heldout.camtoworlds, heldout.Ks, 32, 32)
    cached = render_views(gaussians, cameras, CACHE_BACKGROUND)
    assert cached.rgb.dtype == torch.uint8
    assert int((cached.rgb.int() - heldout.cache_rgb.int()).abs().max()) <= 1
    assert float((cached.mask == heldout.cache_mask).float().mean()) > 0.99


def test_render_views_float_and_uint8_agree_and_batches_barely_matter(tiny_dataset):
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    views = sample.trajectories["left"]
    cameras = Cameras(views.camtoworlds, views.Ks, 32, 32)
    gaussians = scene_cache(sample)
    background = (0.2, 0.3, 0.4)
    floats = render_views(gaussians, cameras, background, batch_size=4, output_type="float")
    quantised = render_views(gaussians, cameras, background, batch_size=4)
    assert floats.rgb.dtype == torch.float32 and float(floats.rgb.min()) >= 0.0
    assert float(floats.rgb.max()) <= 1.0
    assert torch.equal(quantised.rgb, torch.from_numpy(to_uint8(floats.rgb)))
    assert torch.equal(quantised.mask, floats.mask) and torch.equal(quantised.depth, floats.depth)
    # Batching is float noise only (callers that must match older numbers keep their batches).
    one_by_one = render_views(gaussians, cameras, background, batch_size=1, output_type="float")
    torch.testing.assert_close(one_by_one.rgb, floats.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(one_by_one.depth, floats.depth, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="output_type"):
        render_views(gaussians, cameras, background, output_type="png")


def test_coverage_psnr_values():
    torch.manual_seed(0)
    target = torch.rand(2, 8, 10, 3) * 0.5
    covered = torch.zeros(2, 8, 10, dtype=torch.bool)
    covered[:, :, :6] = True  # 60 % covered
    # A render equal to the target (a "student" returning the cache exactly where it covers):
    # the documented cap on both regions.
    exact = coverage_psnr(target, target, covered)
    cap = -10.0 * math.log10(MIN_MSE)
    assert exact == {
        "uncovered_fraction": pytest.approx(0.4),
        "psnr_covered": cap,
        "psnr_uncovered": cap,
    }
    assert cap == pytest.approx(100.0)
    # Known constant errors: 0.1 on covered pixels (20 dB), 0.25 on empty ones (12.04 dB).
    rendered = target + torch.where(covered[..., None], 0.1, 0.25)
    scores = coverage_psnr(rendered, target, covered)
    assert scores["psnr_covered"] == pytest.approx(20.0, abs=1e-4)
    assert scores["psnr_uncovered"] == pytest.approx(-20.0 * math.log10(0.25), abs=1e-4)
    # An error on one channel only counts a third (squared errors averaged over RGB).
    one_channel = target.clone()
    one_channel[..., 0] += 0.3
    expected = -10.0 * math.log10(0.09 / 3)
    assert coverage_psnr(one_channel, target, covered)["psnr_covered"] == pytest.approx(
        expected, abs=1e-4
    )
    # Pixels are pooled over views: one bad view of two halves the MSE, not the PSNR.
    half = target.clone()
    half[0] += 0.1
    assert coverage_psnr(half, target, covered)["psnr_covered"] == pytest.approx(
        -10.0 * math.log10(0.01 / 2), abs=1e-4
    )
    # A region without pixels is left out.
    all_covered = coverage_psnr(rendered, target, torch.ones_like(covered))
    assert set(all_covered) == {"uncovered_fraction", "psnr_covered"}
    assert all_covered["uncovered_fraction"] == 0.0
    with pytest.raises(ValueError, match="bool mask"):
        coverage_psnr(rendered, target, covered[0])


def _fitted_output(sample, rgb_offset: float, depth_scale: float) -> DecoderOutput:
    """Decoder output whose input-view Gaussians are the input pixels (+ ``rgb_offset``), placed
    on their rays at ``depth_scale`` x the input depth (1 where there is none)."""
    height, width = sample.input_depth.shape
    views = len(sample.trajectories)
    K, pose = sample.input_K.double(), sample.input_camtoworld.double()
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    rays = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ torch.linalg.inv(K).T
    depth = torch.where(sample.input_depth > 0, sample.input_depth.double(), 1.0)
    points = (rays * (depth_scale * depth)[..., None]) @ pose[:3, :3].T + pose[:3, 3]
    lead = (1, views, 1, height, width)
    rgb = sample.input_rgb.float() / 255.0 + rgb_offset
    return DecoderOutput(
        means=points.float().expand(*lead, 3),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(*lead, 4),
        log_scales=torch.full((*lead, 3), -4.0),
        opacity_logits=torch.zeros(lead),
        rgb=rgb.expand(*lead, 3),
        depth=torch.zeros(lead),
    )


def test_input_view_fit_values(tiny_dataset):
    sample = load_scene(list_scenes(tiny_dataset / "test")[0])
    # Exactly the 3D cache: infinite colour PSNR, no depth error.
    exact = input_view_fit(_fitted_output(sample, 0.0, 1.0), sample)
    assert math.isinf(exact["input_rgb_psnr"]) and exact["input_rgb_psnr"] > 0
    assert exact["input_depth_error"] == pytest.approx(0.0, abs=1e-5)
    # Known errors: colours 0.1 off (20 dB), every depth 25 % too far.
    off = input_view_fit(_fitted_output(sample, 0.1, 1.25), sample)
    assert off["input_rgb_psnr"] == pytest.approx(20.0, abs=1e-3)
    assert off["input_depth_error"] == pytest.approx(0.25, abs=1e-5)


def test_image_metrics_of_identical_images():
    image = torch.rand(2, 16, 16, 3)
    scores = image_metrics(image, image, None)
    assert math.isinf(scores["psnr"]) and scores["ssim"] == pytest.approx(1.0, abs=1e-6)
    small = image_metrics(image[:, :8, :8], (image[:, :8, :8] + 0.1), None)
    assert set(small) == {"psnr"} and small["psnr"] == pytest.approx(20.0, abs=1e-4)


def _one_line_failure(capsys, argv: list[str], *expected: str) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lyra eval: error:") and "Traceback" not in captured.err
    for text in expected:
        assert text in lines[0], lines[0]


def test_eval_cli_fails_in_one_line(tmp_path, capsys, tiny_dataset, tiny_student_checkpoint):
    out = ["--out", str(tmp_path / "eval"), "--perceptual", "none", "--no-progress"]
    data = ["--data", str(tiny_dataset)]
    _one_line_failure(capsys, ["eval", "--data", str(tmp_path / "none"), *out], "no data folder")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    _one_line_failure(capsys, ["eval", "--data", str(tmp_path / "empty"), *out], "no scenes")
    _one_line_failure(capsys, ["eval", *data, *out, "--student", "=folder"], "NAME=FOLDER")
    _one_line_failure(capsys, ["eval", *data, *out, "--student", "name="], "NAME=FOLDER")
    twice = ["--student", f"a={tiny_student_checkpoint}", "--student", f"a={tmp_path}"]
    _one_line_failure(capsys, ["eval", *data, *out, *twice], "already taken")
    clash = ["--student", f"a={tiny_student_checkpoint}", "--student", f"a_untrained={tmp_path}"]
    _one_line_failure(capsys, ["eval", *data, *out, *clash, "--untrained-control"], "taken")
    missing = ["--student", f"gone={tmp_path / 'gone'}"]
    _one_line_failure(capsys, ["eval", *data, *out, *missing], "no student checkpoint")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_student_checkpoint, corrupt)
    (corrupt / "student.json").write_text("{not json")
    _one_line_failure(capsys, ["eval", *data, *out, "--student", str(corrupt)], "student.json")
    shutil.rmtree(corrupt)
    shutil.copytree(tiny_student_checkpoint, corrupt)
    weights = next((corrupt / "decoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    _one_line_failure(capsys, ["eval", *data, *out, "--student", f"c={corrupt}"], str(corrupt))
    bad_metric = [*data, "--out", str(tmp_path / "eval"), "--perceptual", "nope-net"]
    _one_line_failure(capsys, ["eval", *bad_metric], "nope-net")
    assert not (tmp_path / "eval").exists()  # nothing written by a refused run


def test_eval_options_all_have_help():
    for action in evaluation.build_parser()._actions:
        assert action.help, action.option_strings


def test_device_description_names_the_device():
    assert device_description("cpu") == "cpu"
    if torch.cuda.is_available():
        name = device_description("cuda")
        assert name.startswith("cuda:") and torch.cuda.get_device_name() in name


def test_lyra_cli_lists_commands_and_refuses_unknown(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "train-vae" in capsys.readouterr().out
    assert cli.main(["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
