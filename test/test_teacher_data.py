"""Teacher-made data end to end on the CPU: a tiny random GEN3C teacher saved as a folder ->
``lyra generate --teacher gen3c`` on tiny images with depth -> teacher scenes (latents, decoded
frames, cameras, cache renders) -> ``lyra train`` on the stored latents (no re-encoding); resume,
sharding over two processes with ``accelerate launch`` (gloo), data-parallel training, and bad
input as one line with exit status 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

from lyra_core.data.format import list_scenes, load_scene, scene_latents
from lyra_core.data.generator import main as generate
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories
from lyra_core.models.lyra1 import load_decoder
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.gen3c import Gen3CPipeline
from lyra_core.training.train_student import main as train
from lyra_core.utils.media import to_uint8

WIDTH, HEIGHT, FRAMES = 48, 32, 9  # 16-pixel multiples; 9 frames = 2 latent frames
SIZE = ["--width", str(WIDTH), "--height", str(HEIGHT), "--frames", str(FRAMES), "--steps", "2"]


def write_images(folder, count, seed=0):
    """``count`` random 60 x 40 images (cropped and resized to 48 x 32) and their depths (a
    slanted wall), alternately a 16-bit PNG in millimetres and a .npy in meters."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "depth").mkdir()
    for i in range(count):
        image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / "images" / f"img{i}.png"), image)
        slope = np.linspace(0.0, 1.0, 60, dtype=np.float32)[None] * rng.uniform(0.2, 0.8)
        depth = np.broadcast_to(1.5 + slope, (40, 60)).copy()  # a slanted wall, 1.5-2.3 m
        if i % 2:
            np.save(folder / "depth" / f"img{i}.npy", depth)
        else:
            cv2.imwrite(str(folder / "depth" / f"img{i}.png"), (depth * 1000).astype(np.uint16))


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory):
    """A tiny teacher folder, two images with depth, and their teacher scenes (train split)."""
    root = tmp_path_factory.mktemp("teacher")
    Gen3CPipeline.tiny(seed=0).save_pretrained(root / "teacher")
    write_images(root, 2)
    argv = ["--teacher", "gen3c", "--images", str(root / "images"), "--depth", str(root / "depth")]
    argv += ["--teacher-path", str(root / "teacher"), "--out", str(root / "data"), *SIZE]
    assert generate([*argv, "--no-progress"]) == 0
    return root, argv


def accelerate_launch(*argv, timeout=120):
    """Two processes talking over gloo on the CPU. ``accelerate launch --cpu`` starts one
    process only (accelerate 1.x without mpirun), so the launcher is its multi-process one and
    ``ACCELERATE_USE_CPU`` keeps both on the CPU."""
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", "0", "-m", "lyra_core.cli"]
    return subprocess.run(
        [*command, *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_teacher_scenes_hold_latents_decoded_frames_and_cameras(teacher_data):
    root, _ = teacher_data
    scenes = list_scenes(root / "data" / "train")
    assert [p.name for p in scenes] == ["scene_000000", "scene_000001"]
    teacher = Gen3CPipeline.from_pretrained(root / "teacher", device="cpu", progress=False)
    for index, path in enumerate(scenes):
        sample = load_scene(path)
        assert sample.meta["image"] == f"img{index}.png" and sample.heldout is None
        assert list(sample.trajectories) == list(LYRA_TRAJECTORY_NAMES)
        assert sample.input_rgb.shape == (HEIGHT, WIDTH, 3)
        depth = sample.input_depth
        assert float(depth.min()) >= 1.5 and float(depth.max()) <= 2.5  # meters, both formats
        assert torch.equal(sample.input_camtoworld, torch.eye(4))
        expected = lyra_trajectories(
            torch.eye(4, dtype=torch.float64), sample.meta["scene_depth"], FRAMES, seed=index
        )
        for name, views in sample.trajectories.items():
            assert views.latents.shape == (1, 16, 2, HEIGHT // 8, WIDTH // 8)
            assert torch.isfinite(views.latents).all() and views.latents.abs().max() > 0.1
            assert views.rgb.shape == (FRAMES, HEIGHT, WIDTH, 3) and views.rgb.dtype == torch.uint8
            # the stored frames are the teacher's latents decoded (Lyra's targets)
            decoded = to_uint8(teacher.decode(views.latents).permute(0, 2, 3, 1))
            assert np.abs(decoded.astype(int) - views.rgb.numpy()).max() <= 1
            assert torch.allclose(views.camtoworlds, expected[name].float(), atol=1e-6)
            assert torch.allclose(views.Ks[0], sample.input_K)
            # frame 0 is the input camera: the cache covers it, at the input's depth
            assert views.cache_mask[0].float().mean() > 0.9
            covered = views.cache_mask[0] & (views.depth[0] > 0)
            assert torch.allclose(views.depth[0][covered], depth[covered], rtol=0.05)
            assert views.cache_rgb.shape == (FRAMES, HEIGHT, WIDTH, 3)
        latents, poses, _ = scene_latents(sample)
        assert latents.shape == (6, 2, 16, HEIGHT // 8, WIDTH // 8) and poses.shape[:2] == (6, 9)
    one, two = (load_scene(p).trajectories["left"].latents for p in scenes)
    assert not torch.allclose(one, two)  # different images and noise


def _train_config(root, tmp_path, **changes):
    """A two-step ``lyra train`` config on the teacher scenes (tiny decoder, the teacher's
    VAE; ``changes`` replace settings), written to ``tmp_path / "train.yaml"``."""
    config = {
        "data_dir": str(root / "data"),
        "out_dir": str(tmp_path / "run"),
        "decoder": "tiny",
        "decoder_overrides": {"far": 20.0},
        "vae": str(root / "teacher" / "vae"),
        "steps": 2,
        "lr": 0.01,
        "frames_per_trajectory": FRAMES,
        "perceptual": "none",
        "loss": {"mse": 1.0, "perceptual": 0.0, "depth": 0.05, "opacity": 0.0},
        "log_every": 1,
        "val_every": 100,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config | changes))
    return path


def test_train_reads_teacher_latents_and_updates_the_decoder(teacher_data, tmp_path, monkeypatch):
    root, _ = teacher_data

    def no_encoding(*args, **kwargs):
        raise AssertionError("teacher scenes must not be re-encoded")

    monkeypatch.setattr(VideoVAE, "encode", no_encoding)
    path = _train_config(root, tmp_path, target_views=3, save_every=1)
    assert train(["--config", str(path)]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    weights = [
        load_decoder(tmp_path / "run" / "checkpoints" / f"step_000000{s}" / "decoder").state_dict()
        for s in (1, 2)
    ]
    changed = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert len(changed) > len(weights[0]) // 2


def test_resume_skips_finished_work_and_completes_a_killed_scene(teacher_data, capsys):
    root, argv = teacher_data
    split = root / "data" / "train"
    scene = split / "scene_000001"
    latents = np.load(scene / "trajectories" / "up" / "latents.npy")
    mtime = (split / "scene_000000" / "meta.json").stat().st_mtime_ns
    # a writer killed during "up": no meta.json, the trajectory missing, its temporary left
    (scene / "meta.json").unlink()
    (scene / "trajectories" / "up").rename(scene / "trajectories" / ".up.0123456789ab.lyra-tmp")
    assert list_scenes(split) == [split / "scene_000000"]
    assert generate([*argv, "--no-progress"]) == 0
    assert "generated 1 trajectories, skipped 11" in capsys.readouterr().out
    assert sorted(p.name for p in (scene / "trajectories").iterdir()) == sorted(
        LYRA_TRAJECTORY_NAMES
    )
    np.testing.assert_allclose(np.load(scene / "trajectories" / "up" / "latents.npy"), latents)
    assert (split / "scene_000000" / "meta.json").stat().st_mtime_ns == mtime
    assert len(list_scenes(split)) == 2


def test_two_processes_share_the_work_and_agree_with_one(teacher_data, tmp_path):
    root, _ = teacher_data
    write_images(tmp_path, 3)  # the first two are the fixture's images
    out = tmp_path / "data"
    argv = ["generate", "--teacher", "gen3c", "--images", str(tmp_path / "images")]
    argv += ["--depth", str(tmp_path / "depth"), "--teacher-path", str(root / "teacher")]
    result = accelerate_launch(*argv, "--out", str(out), *SIZE, "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = re.findall(r"process (\d)/2: generated (\d+) trajectories", result.stdout)
    assert sorted(counts) == [("0", "9"), ("1", "9")]  # 3 scenes x 6 trajectories, split evenly
    scenes = list_scenes(out / "train")
    assert [p.name for p in scenes] == [f"scene_00000{i}" for i in range(3)]
    for scene in scenes:
        names = sorted(p.name for p in (scene / "trajectories").iterdir())
        assert names == sorted(LYRA_TRAJECTORY_NAMES)  # each once, no temporaries
    for i in range(2):  # the same seeds and noise as the single-process run
        for name in ("left", "clockwise"):
            ours = np.load(
                out / "train" / f"scene_00000{i}" / "trajectories" / name / "latents.npy"
            )
            theirs = root / "data" / "train" / f"scene_00000{i}" / "trajectories" / name
            np.testing.assert_allclose(ours, np.load(theirs / "latents.npy"), atol=1e-3)
    # a rerun on two processes finds nothing to do
    again = accelerate_launch(*argv, "--out", str(out), *SIZE, "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(re.findall(r"generated (\d+) trajectories, skipped (\d+)", again.stdout)) == [
        ("0", "18"),
        ("0", "18"),
    ]


def test_data_parallel_training_of_the_lyra1_decoder(teacher_data, tmp_path):
    """Lyra-1's decoder (VAE-encoded Plucker rays) on teacher latents, two processes."""
    root, _ = teacher_data
    lyra1 = {"architecture": "lyra1", "mamba_layout": "shared", "far": 20.0}
    path = _train_config(root, tmp_path, target_views=2, save_every=2, decoder_overrides=lyra1)
    result = accelerate_launch("train", "--config", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # the main process logs, once per step
    assert all(np.isfinite(r["loss"]) for r in log)
    decoder = load_decoder(tmp_path / "run" / "checkpoints" / "step_0000002" / "decoder")
    assert decoder.config.architecture == "lyra1"


@pytest.mark.parametrize("case", ["no_folder", "no_depth", "unreadable"])
def test_bad_input_is_one_line_and_exit_2(case, teacher_data, tmp_path, capsys):
    root, _ = teacher_data
    write_images(tmp_path, 2)
    if case == "no_depth":
        (tmp_path / "depth" / "img1.npy").unlink()
    elif case == "unreadable":
        (tmp_path / "images" / "img1.png").write_text("not an image")
    images = tmp_path / ("missing" if case == "no_folder" else "images")
    argv = ["--teacher", "gen3c", "--images", str(images), "--depth", str(tmp_path / "depth")]
    argv += ["--teacher-path", str(root / "teacher"), "--out", str(tmp_path / "out"), *SIZE]
    assert generate(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("lyra generate: error:")
    needle = {"no_folder": "no such folder", "no_depth": "img1", "unreadable": "not a readable"}
    assert needle[case] in err
    assert not (tmp_path / "out" / "train").exists() or not list_scenes(tmp_path / "out" / "train")


def test_depth_estimator_hook_stands_in_for_depth_files(teacher_data, tmp_path, monkeypatch):
    root, _ = teacher_data
    write_images(tmp_path, 1)
    (tmp_path / "my_depth.py").write_text(
        "import numpy as np\n\n\n"
        "def estimate(rgb):\n"
        "    assert rgb.dtype == np.uint8 and rgb.shape == (32, 48, 3)\n"
        "    return np.full(rgb.shape[:2], 3.0, dtype=np.float32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["--teacher", "gen3c", "--images", str(tmp_path / "images"), *SIZE, "--no-progress"]
    argv += ["--teacher-path", str(root / "teacher"), "--out", str(tmp_path / "out")]
    assert generate([*argv, "--depth-estimator", "my_depth:estimate"]) == 0
    (scene,) = list_scenes(tmp_path / "out" / "train")
    sample = load_scene(scene)
    assert sample.meta["depth_source"] == "estimator" and sample.meta["scene_depth"] == 3.0
    assert torch.all(sample.input_depth == 3.0)
    assert generate([*argv, "--depth-estimator", "my_depth:missing"]) == 2
