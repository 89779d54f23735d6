"""Lyra's dynamic student: procedural dynamic data (time-synchronised trajectories, flipped
supervision), the 4D cache, time conditioning, the pipeline and a training step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lyra_core.data.dynamic import (
    DynamicDataset,
    DynamicGeneratorConfig,
    generate_dynamic_scene,
    load_dynamic_scene,
    write_dynamic_scene,
)
from lyra_core.evaluation.metrics import psnr
from lyra_core.geometry.cameras import Cameras
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.dynamic_decoder import DynamicLyraDecoder, is_dynamic_config
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.cache3d import render_views
from lyra_core.pipelines.cache4d import cache_world, nearest_frame, render_world_at
from lyra_core.pipelines.dynamic_student import DynamicLyraStudent, DynamicWorldPipeline
from lyra_core.pipelines.student import LyraStudent, StudentConfig
from lyra_core.rendering import render
from lyra_core.scene.procedural_dynamic import procedural_dynamic_room
from lyra_core.training.losses import LossWeights
from lyra_core.training.train_dynamic import dynamic_loss

CONFIG = DynamicGeneratorConfig(
    width=32, height=32, num_frames=9, num_heldout=2, num_gaussians=4000, num_objects=2
)
SEED = 3


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    """One small dynamic scene written to disk (train split folder)."""
    root = tmp_path_factory.mktemp("dynamic") / "train"
    sample = generate_dynamic_scene(SEED, CONFIG, split="train")
    return write_dynamic_scene(root / "scene_000003", sample)


@pytest.fixture(scope="module")
def sample(scene_dir):
    return load_dynamic_scene(scene_dir)


def room():
    return procedural_dynamic_room(
        SEED,
        num_gaussians=CONFIG.num_gaussians,
        num_objects=CONFIG.num_objects,
        duration=CONFIG.duration,
    )


def render_truth(poses: torch.Tensor, t: float) -> torch.Tensor:
    cameras = Cameras.from_intrinsics(poses, CONFIG.intrinsics())
    return render_views(room().gaussians_at(t), cameras, (0.0, 0.0, 0.0)).rgb


def test_dynamic_scene_at_time_t_is_its_ground_truth_at_t(sample):
    times = sample.input_times
    assert torch.allclose(times, torch.linspace(0, CONFIG.duration, CONFIG.num_frames).double())
    world = room().world(times.tolist())  # the 4D world: static room + object time slices
    moved = 0
    for name, views in sample.trajectories.items():
        for i in (0, 4, 8):
            t = float(times[i])
            expected = render_truth(views.camtoworlds[i : i + 1], t)
            assert torch.equal(views.rgb[i : i + 1], expected), (name, i)
            cameras = Cameras.from_intrinsics(views.camtoworlds[i : i + 1], CONFIG.intrinsics())
            four_d = render(world, cameras, time=t).rgb.clamp(0, 1)
            exact = render(room().gaussians_at(t), cameras).rgb.clamp(0, 1)
            assert torch.allclose(four_d, exact, atol=1e-5)
            other = render_truth(views.camtoworlds[i : i + 1], float(times[8 - i]))
            moved += int(not torch.equal(other, expected))
    assert moved > 0  # the objects really move between the times


def test_flipped_views_stand_at_the_far_end_and_see_their_own_time(sample):
    steps = sample.num_frames
    for name, flipped in sample.flipped.items():
        trajectory = sample.trajectories[name]
        for i in range(steps):
            assert torch.equal(flipped.camtoworlds[i], trajectory.camtoworlds[steps - 1 - i])
        for i in (1, 6):
            expected = render_truth(flipped.camtoworlds[i : i + 1], float(sample.input_times[i]))
            assert torch.equal(flipped.rgb[i : i + 1], expected)
    # trajectory k starts at the input camera; its flipped view ends there
    assert torch.equal(sample.flipped["left"].camtoworlds[-1], sample.input.camtoworlds[0])


def tiny_decoder_config() -> LyraDecoderConfig:
    return LyraDecoderConfig(**{**LyraDecoderConfig.tiny().to_dict(), "far": 20.0})


def test_time_embedding_changes_the_output_only_once_the_embeddings_are_non_zero(sample):
    torch.manual_seed(0)
    static = LyraDecoder(tiny_decoder_config())
    student = DynamicLyraStudent.from_static(LyraStudent(VideoVAE.tiny(), static)).eval()
    assert is_dynamic_config(student.decoder.config)
    videos = sample.trajectories["left"].cache_rgb[None].float() / 255.0
    poses, Ks = sample.trajectories["left"].camtoworlds[None], sample.trajectories["left"].Ks[None]
    times = sample.input_times
    with torch.no_grad():
        a = student(videos, poses, Ks, times, 0.0)
        b = student(videos, poses, Ks, times, 2.0)
        reference = LyraStudent(student.vae, static).eval()(videos, poses, Ks)
        assert torch.equal(a.means, b.means) and torch.equal(a.rgb, b.rgb)
        assert torch.allclose(a.means, reference.means) and torch.allclose(a.rgb, reference.rgb)
        torch.nn.init.normal_(student.decoder.target_time_embed.proj.weight, std=0.5)
        c = student(videos, poses, Ks, times, 0.0)
        d = student(videos, poses, Ks, times, 2.0)
    assert (c.means - d.means).abs().max() > 1e-4
    assert (c.rgb - d.rgb).abs().max() > 1e-4


def test_dataset_yields_inputs_times_and_the_twelve_targets(scene_dir, sample):
    item = DynamicDataset(scene_dir.parent, target_index=2)[0]
    steps, h, w = CONFIG.num_frames, CONFIG.height, CONFIG.width
    assert item["videos"].shape == (6, steps, h, w, 3)
    assert item["camtoworlds"].shape == (6, steps, 4, 4) and item["Ks"].shape == (6, steps, 3, 3)
    assert item["input"]["rgb"].shape == (steps, h, w, 3)
    assert torch.allclose(item["frame_times"], sample.input_times)
    assert float(item["target_time"]) == pytest.approx(0.5)  # 2 s over 8 gaps, frame 2
    targets = item["targets"]
    assert targets["rgb"].shape == (12, h, w, 3) and targets["depth"].shape == (12, h, w)
    assert torch.allclose(targets["times"], torch.full((12,), 0.5, dtype=torch.float64))
    names = list(sample.trajectories)
    for k, name in enumerate(names):
        assert torch.equal(targets["camtoworlds"][k], sample.trajectories[name].camtoworlds[2])
        assert torch.equal(
            targets["camtoworlds"][6 + k], sample.trajectories[name].camtoworlds[steps - 3]
        )
        assert torch.equal(targets["rgb"][6 + k], sample.flipped[name].rgb[2].float() / 255.0)
    drawn = DynamicDataset(scene_dir.parent, seed=5)[0]
    assert float(drawn["target_time"]) == float(sample.input_times[int(drawn["target_index"])])


def test_4d_cache_at_an_input_camera_and_time_reproduces_that_frame(sample):
    views = sample.input
    cache = cache_world(
        views.rgb, views.depth, sample.intrinsics(), views.camtoworlds, sample.input_times
    )
    cameras = Cameras.from_intrinsics(views.camtoworlds, sample.intrinsics())
    rendered = render_world_at(cache, cameras, sample.input_times, (0.0, 0.0, 0.0)).rgb
    assert torch.equal(rendered, views.cache_rgb)  # the stored cache renders are these
    own = psnr(rendered.float() / 255, views.rgb.float() / 255)
    assert float(own.min()) > 18.0
    # at the same cameras, the cache of the far end of the video fits less well
    last = render_world_at(cache, cameras, torch.full((9,), 2.0), (0.0, 0.0, 0.0)).rgb
    far = psnr(last[:3].float() / 255, views.rgb[:3].float() / 255)
    assert float(own[:3].mean()) > float(far.mean()) + 1.0
    assert nearest_frame(sample.input_times, 0.74) == 3


def test_pipeline_rebuilds_the_stored_inputs_and_anchors_to_the_nearest_frame(sample):
    torch.manual_seed(0)
    student = DynamicLyraStudent(VideoVAE.tiny(), DynamicLyraDecoder(tiny_decoder_config()))
    config = StudentConfig(width=32, height=32, num_frames=9)
    pipeline = DynamicWorldPipeline(student, config)
    views = sample.input
    inputs = pipeline.prepare(
        views.rgb, views.depth, views.Ks[0], views.camtoworlds, sample.input_times, seed=SEED
    )
    stored = torch.stack([v.cache_rgb for v in sample.trajectories.values()])
    assert torch.equal(inputs.videos, stored)
    anchored = pipeline.predict(inputs, 1.1)  # nearest frame: 4 (t = 1.0)
    observed = inputs.slices[4]
    assert torch.equal(anchored.means[: len(observed)], observed.means)
    raw = pipeline.predict(inputs, 1.1, anchored=False)
    assert len(anchored) < len(observed) + len(raw)  # seen rays were replaced
    world = pipeline.predict_4d(inputs, [0.0, 1.0, 2.0])
    assert world.time_range == (0.0, 2.0)


def test_a_training_step_lowers_the_loss_on_a_fixed_batch(scene_dir):
    torch.manual_seed(0)
    student = DynamicLyraStudent(VideoVAE.tiny(), DynamicLyraDecoder(tiny_decoder_config()))
    optimizer = torch.optim.Adam(student.decoder.parameters(), lr=2e-3)
    weights = LossWeights(perceptual=0.0)
    losses = []
    for _ in range(6):
        loss, terms = dynamic_loss(
            student, scene_dir, 3, weights, 4, torch.Generator().manual_seed(0)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert terms["target_index"] == 3.0
    assert losses[-1] < losses[0] * 0.95
    assert student.decoder.time_embed.proj.weight.abs().max() > 0  # the time path learns


def test_training_run_writes_a_loadable_dynamic_student_and_eval_scores_it(
    scene_dir, sample, tmp_path
):
    from lyra_core.cli import main as lyra
    from lyra_core.evaluation.dynamic import CACHE_4D_METHOD, evaluate_dynamic

    torch.manual_seed(0)
    static = LyraStudent(VideoVAE.tiny(), LyraDecoder(tiny_decoder_config()))
    static.save_pretrained(tmp_path / "static", StudentConfig(width=32, height=32, num_frames=9))
    data_root = scene_dir.parent.parent
    settings = {
        "dynamic": True,  # `lyra train` hands the file to lyra_core.training.train_dynamic
        "data_dir": str(data_root),
        "out_dir": str(tmp_path / "run"),
        "student": str(tmp_path / "static"),
        "steps": 2,
        "target_views": 3,
        "loss": {"mse": 1.0, "perceptual": 0.0, "depth": 0.05, "opacity": 0.1},
        "perceptual": "none",
        "log_every": 1,
    }
    (tmp_path / "dynamic.yaml").write_text(yaml.safe_dump(settings))
    assert lyra(["train", "--config", str(tmp_path / "dynamic.yaml")]) == 0
    folder = tmp_path / "run" / "student"
    pipeline = DynamicWorldPipeline.from_pretrained(folder)
    assert pipeline.config.num_frames == 9 and pipeline.config.training["dynamic"]
    with pytest.raises(Exception, match="student checkpoint"):
        LyraStudent.from_pretrained(folder)  # a dynamic decoder is not a static one
    report = evaluate_dynamic(data_root, "train", {"dyn": folder}, None, perceptual_name="none")
    summary = report["summary"]
    evaluated = [
        *(["eval", "--dynamic", "--split", "train", "--perceptual", "none", "--no-progress"]),
        *("--data", str(data_root), "--student", f"dyn={folder}", "--out", str(tmp_path / "ev")),
    ]
    assert lyra(evaluated) == 0
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["summary"]["dyn"]["psnr"] == pytest.approx(summary["dyn"]["psnr"], abs=1e-6)
    assert set(summary) == {CACHE_4D_METHOD, "dyn", "dyn_raw"}
    views = sample.input
    cache = cache_world(
        views.rgb, views.depth, sample.intrinsics(), views.camtoworlds, sample.input_times
    )
    cameras = Cameras(sample.heldout.camtoworlds, sample.heldout.Ks, 32, 32)
    rendered = render_world_at(cache, cameras, sample.heldout_times, (0, 0, 0), output_type="float")
    expected = psnr(rendered.rgb, sample.heldout.rgb.float() / 255).mean()
    assert summary[CACHE_4D_METHOD]["psnr"] == pytest.approx(float(expected), abs=1e-4)


def test_generator_cli_reports_bad_settings_in_one_line(tmp_path, capsys):
    from lyra_core.cli import main as lyra

    bad = ["generate", "--dynamic", "--out", str(tmp_path), "--num-scenes", "1", "--frames", "1"]
    assert lyra(bad) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_shipped_dynamic_student_loads_with_its_training_chain():
    from lyra_core.weights import shipped_dynamic_student_path

    folder = shipped_dynamic_student_path()
    assert folder is not None, "the package must ship lyra_core/weights/student_tiny_dynamic"
    pipeline = DynamicWorldPipeline.from_pretrained(folder)
    record = pipeline.config.training
    assert (pipeline.config.width, pipeline.config.height, pipeline.config.num_frames) == (
        64,
        48,
        9,
    )
    assert record["config"] == "config/train_tiny_dynamic_continue.yaml"
    assert record["parents"][-1]["config"] == "config/train_tiny_dynamic.yaml"
    assert record["cumulative_steps"] == 6700 + 700 + 800
    assert pipeline.student.decoder.target_time_embed.proj.weight.abs().max() > 0
