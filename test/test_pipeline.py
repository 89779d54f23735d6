"""Student checkpoints and the inference pipeline (lyra_core.pipelines.student,
lyra_core.pipelines.world)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from lyra_core.data import generator
from lyra_core.data.generator import GeneratorConfig, generate_scene
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.pipelines.student import LyraStudent, StudentConfig
from lyra_core.pipelines.world import LyraWorldPipeline, fit_view
from lyra_core.utils.errors import CheckpointError

SEED = 3
SCENE = GeneratorConfig(width=64, height=48, num_frames=9, num_heldout=1, num_gaussians=4000)


@pytest.fixture(scope="module")
def scene():
    """A procedural scene and the float64 input pose the generator made its trajectories from
    (the scene stores it as float32)."""
    poses = []
    trajectories = generator.lyra_trajectories

    def spy(pose, *args, **kwargs):
        poses.append(pose.clone())
        return trajectories(pose, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generator, "lyra_trajectories", spy)
        sample = generate_scene(SEED, SCENE)
    assert sample.meta["camera_accepted"]  # so the last candidate pose is the chosen one
    return sample, poses[-1]


@pytest.fixture(scope="module")
def pipeline(tiny_student_checkpoint):
    return LyraWorldPipeline.from_pretrained(tiny_student_checkpoint)


@pytest.fixture(scope="module")
def built(pipeline, scene):
    sample, pose64 = scene
    return pipeline(sample.input_rgb, sample.input_depth, sample.input_K, pose64, seed=SEED)


def random_inputs(views: int = 2):
    gen = torch.Generator().manual_seed(1)
    videos = torch.rand(views, 9, 48, 64, 3, generator=gen)
    poses = torch.eye(4).expand(views, 9, 4, 4).clone()
    poses[..., 0, 3] = torch.linspace(0, 0.5, 9)
    Ks = Intrinsics.from_fov(1.0, 64, 48).matrix().expand(views, 9, 3, 3).clone()
    return videos, poses, Ks


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tiny_student_checkpoint, tmp_path):
    student, config = LyraStudent.from_pretrained(tiny_student_checkpoint)
    assert (config.width, config.height, config.num_frames) == (64, 48, 9)
    assert config.trajectory_names == list(LYRA_TRAJECTORY_NAMES)
    assert config.training == {"note": "untrained"}
    assert not student.training

    folder = student.save_pretrained(tmp_path / "copy", config)
    assert sorted(p.name for p in folder.iterdir()) == ["decoder", "student.json", "vae"]
    again, config_again = LyraStudent.from_pretrained(folder)
    assert config_again == config
    state, state_again = student.state_dict(), again.state_dict()
    assert state.keys() == state_again.keys()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    inputs = random_inputs()
    a, b = student(*inputs), again(*inputs)
    for name in ("means", "quats", "log_scales", "opacity_logits", "rgb"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_temporaries(
    tiny_student_checkpoint, tmp_path
):
    student, config = LyraStudent.from_pretrained(tiny_student_checkpoint)
    folder = tmp_path / "ckpt"
    student.save_pretrained(folder, config)
    (folder / "stale.txt").write_text("from the old folder")
    config.training = {"steps": 2}
    student.save_pretrained(folder, config)
    assert not (folder / "stale.txt").exists()
    assert StudentConfig.from_pretrained(folder).training == {"steps": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(ValueError, match="multiples of 16"):
        student.save_pretrained(tmp_path / "bad", StudentConfig(width=60, height=48, num_frames=9))
    assert not (tmp_path / "bad").exists()


def test_a_failed_save_keeps_the_previous_checkpoint(
    tiny_student_checkpoint, tmp_path, monkeypatch
):
    student, config = LyraStudent.from_pretrained(tiny_student_checkpoint)
    folder = student.save_pretrained(tmp_path / "ckpt", config)
    before = (folder / "student.json").read_text()

    def disk_full(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(LyraDecoder, "save_pretrained", disk_full)
    with pytest.raises(OSError, match="disk full"):
        student.save_pretrained(folder, StudentConfig(width=64, height=48, num_frames=9))
    assert (folder / "student.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def _drop_a_vae_weight(folder):
    from safetensors.torch import load_file, save_file

    path = next((folder / "vae").glob("*.safetensors"))
    state = load_file(str(path))
    state.pop(sorted(state)[0])
    save_file(state, str(path))


def _other_decoder(folder):
    config = LyraDecoderConfig.tiny()
    config.latent_channels = 8
    LyraDecoder(config).save_pretrained(folder / "decoder")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


CORRUPTIONS = {
    "no folder": lambda f: shutil.rmtree(f),
    "no student.json": lambda f: (f / "student.json").unlink(),
    "student.json not JSON": lambda f: (f / "student.json").write_text("{oops"),
    "unknown field": lambda f: (f / "student.json").write_text(json.dumps({"fps": 3})),
    "newer format": lambda f: (f / "student.json").write_text(json.dumps({"format_version": 9})),
    "no vae": lambda f: shutil.rmtree(f / "vae"),
    "vae weights missing": lambda f: next((f / "vae").glob("*.safetensors")).unlink(),
    "vae weights truncated": lambda f: _truncate(next((f / "vae").glob("*.safetensors"))),
    "a vae weight missing": _drop_a_vae_weight,
    "decoder weights truncated": lambda f: _truncate(f / "decoder" / "model.safetensors"),
    "decoder of another VAE": _other_decoder,
    "size the model cannot read": lambda f: (f / "student.json").write_text(
        json.dumps(StudentConfig(width=72, height=48, num_frames=9).to_dict())
    ),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_broken_checkpoints_raise_checkpoint_error_naming_the_folder(
    tiny_student_checkpoint, tmp_path, corruption
):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_student_checkpoint, folder)
    CORRUPTIONS[corruption](folder)
    with pytest.raises(CheckpointError, match="ckpt") as info:
        LyraStudent.from_pretrained(folder)
    assert isinstance(info.value, ValueError)


def test_student_config_round_trip_and_validation():
    config = StudentConfig(
        width=32,
        height=32,
        num_frames=17,
        movement_scale=0.5,
        trajectory_names=("left", "up"),
        training={"steps": 3},
    )
    data = config.to_dict()
    assert data["format_version"] == 1 and data["trajectory_names"] == ["left", "up"]
    assert StudentConfig.from_dict(json.loads(json.dumps(data))) == config
    for bad in (
        {"width": 0},
        {"num_frames": 1},
        {"movement_scale": -1.0},
        {"trajectory_names": ["spiral"]},
        {"trajectory_names": ["up", "up"]},
    ):
        with pytest.raises(ValueError):
            StudentConfig(**bad)


# ---------------------------------------------------------------- the pipeline


def test_pipeline_cache_videos_equal_the_training_data(built, scene):
    """Train/inference parity: same input view -> the same 3D-cache videos and cameras."""
    sample, _ = scene
    views = [sample.trajectories[name] for name in LYRA_TRAJECTORY_NAMES]
    assert built.depth_source == "input"
    assert built.scene_depth == sample.meta["scene_depth"]
    assert torch.equal(built.videos, torch.stack([v.cache_rgb for v in views]))
    assert torch.equal(built.camtoworlds, torch.stack([v.camtoworlds for v in views]))
    assert torch.equal(built.Ks, torch.stack([v.Ks for v in views]))


def test_float32_input_pose_gives_the_same_videos_up_to_rounding(pipeline, scene, built):
    sample, _ = scene
    out = pipeline(
        sample.input_rgb, sample.input_depth, sample.input_K, sample.input_camtoworld, seed=SEED
    )
    diff = (out.videos.int() - built.videos.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3


def test_pipeline_builds_finite_pruned_gaussians_and_times_its_stages(built, pipeline):
    g = built.gaussians
    per_pixel = 6 * 2 * 48 * 64  # views x latent frames x pixels
    assert len(g) == round(per_pixel * (1 - pipeline.student.decoder.config.prune_ratio))
    for tensor in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh):
        assert torch.isfinite(tensor).all()
    assert set(built.timings) == {"cache", "encode", "decode", "total"}
    assert all(t > 0 for t in built.timings.values())
    assert built.timings["total"] >= built.timings["cache"] + built.timings["encode"]


def test_without_depth_the_image_lies_on_a_plane_in_the_world_frame(pipeline, scene):
    sample, _ = scene
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 3] = torch.tensor([1000.0, -200.0, 50.0])  # far from the origin
    out = pipeline(
        sample.input_rgb.numpy(), None, sample.input_K.numpy(), pose.numpy(), assumed_depth=2.5
    )
    assert out.depth_source == "plane" and out.scene_depth == 2.5
    covered = out.videos[:, 0].float().sum(-1) > 0
    assert float(covered.float().mean()) > 0.95  # frame 0 is the input view, all on the plane
    local = out.gaussians.means.double() - pose[:3, 3]  # camera frame (the rotation is identity)
    assert torch.isfinite(local).all()
    assert float((local[:, 2] > 0).double().mean()) > 0.9  # in front of the camera
    assert float(local.norm(dim=-1).max()) < 600.0  # within the decoder's far plane
    with pytest.raises(ValueError, match="assumed_depth"):
        pipeline(sample.input_rgb, None, sample.input_K, pose, assumed_depth=0.0)


def test_a_depth_estimator_fills_in_missing_depth(tiny_student_checkpoint, scene, built):
    sample, pose64 = scene
    calls = []

    def estimator(rgb: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
        calls.append((rgb.shape, intrinsics.width))
        return sample.input_depth.numpy()

    pipeline = LyraWorldPipeline.from_pretrained(tiny_student_checkpoint, depth_estimator=estimator)
    out = pipeline(sample.input_rgb, None, sample.input_K, pose64, seed=SEED)
    assert calls == [((48, 64, 3), 64)] and out.depth_source == "estimator"
    assert torch.equal(out.videos, built.videos)


def _pad_and_upscale(rgb, depth, K, pad_x: int, pad_y: int, factor: int):
    """The same view on a larger sensor: borders of pad pixels, then every pixel repeated."""
    rgb = np.pad(rgb, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), constant_values=255)
    depth = np.pad(depth, ((pad_y, pad_y), (pad_x, pad_x)), constant_values=7.0)
    rgb = rgb.repeat(factor, 0).repeat(factor, 1)
    depth = depth.repeat(factor, 0).repeat(factor, 1)
    intr = Intrinsics.from_matrix(K, 64, 48)
    big = Intrinsics(
        intr.fx, intr.fy, intr.cx + pad_x, intr.cy + pad_y, 64 + 2 * pad_x, 48 + 2 * pad_y
    ).resize(factor * (64 + 2 * pad_x), factor * (48 + 2 * pad_y))
    return rgb, depth, big


@pytest.mark.parametrize("pad_x, pad_y, factor", [(0, 0, 1), (0, 0, 2), (16, 0, 1), (0, 8, 3)])
def test_fit_view_crops_the_centre_and_resizes(scene, pad_x, pad_y, factor):
    sample, _ = scene
    rgb, depth, intr = _pad_and_upscale(
        sample.input_rgb.numpy(), sample.input_depth.numpy(), sample.input_K, pad_x, pad_y, factor
    )
    out_rgb, out_depth, out_intr = fit_view(
        torch.from_numpy(rgb), torch.from_numpy(depth), intr, 64, 48
    )
    assert torch.equal(out_rgb, sample.input_rgb)
    assert torch.equal(out_depth, sample.input_depth)
    torch.testing.assert_close(out_intr.matrix(), sample.input_K)


def test_a_larger_wider_image_gives_the_same_world_inputs(pipeline, scene, built):
    sample, pose64 = scene
    rgb, depth, intr = _pad_and_upscale(
        sample.input_rgb.numpy(), sample.input_depth.numpy(), sample.input_K, 16, 0, 2
    )
    assert rgb.shape == (96, 192, 3)
    out = pipeline(rgb, depth, intr.matrix(torch.float64), pose64, seed=SEED)
    assert torch.equal(out.videos, built.videos)
    torch.testing.assert_close(out.Ks, built.Ks)


def test_fit_view_resizes_other_sizes_and_aspects():
    intr = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    rgb = torch.zeros(480, 640, 3, dtype=torch.uint8)
    rgb[:, 320:] = 200  # right half bright
    out_rgb, out_depth, out_intr = fit_view(rgb, None, intr, 32, 32)  # 4:3 -> square
    assert out_rgb.shape == (32, 32, 3) and out_depth is None
    assert (out_intr.width, out_intr.height) == (32, 32)
    torch.testing.assert_close(out_intr.fx, 500.0 * 32 / 480)  # the crop keeps the height
    torch.testing.assert_close(out_intr.cx, (319.5 - 80 + 0.5) * 32 / 480 - 0.5)
    assert out_rgb[:, :16].max() == 0 and out_rgb[:, 16:].min() == 200


def test_bad_inputs_raise_value_errors(pipeline, scene):
    sample, pose64 = scene
    rgb, depth, K = sample.input_rgb, sample.input_depth, sample.input_K
    with pytest.raises(ValueError, match="uint8"):
        pipeline(rgb.float() / 255, depth, K, pose64)
    with pytest.raises(ValueError, match="shape"):
        pipeline(rgb, depth[:10], K, pose64)
    with pytest.raises(ValueError, match="no valid pixel"):
        pipeline(rgb, torch.zeros_like(depth), K, pose64)
    with pytest.raises(ValueError, match="camtoworld"):
        pipeline(rgb, depth, K, torch.full((4, 4), float("nan")))
