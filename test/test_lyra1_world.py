"""An imported Lyra-1 student as a world pipeline: a student folder (decoder + released-format
tokenizer) loaded by LyraWorldPipeline.from_pretrained, run at a reduced size on the CPU."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from tokenizer_files import write_cosmos_folder

pytest.importorskip("diffusers")

from lyra_core.cli import main as lyra
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.trajectories import LYRA_TRAJECTORY_NAMES, lyra_trajectories
from lyra_core.geometry.transforms import rigid_inverse
from lyra_core.mapping.world_builder import BuildOptions, WorldBuilder, depth_gaussians
from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
from lyra_core.models.lyra1 import Lyra1Decoder
from lyra_core.models.vae import VideoVAE
from lyra_core.pipelines.lyra1 import LYRA1_VIEW_ORDER
from lyra_core.pipelines.world import LyraWorldPipeline
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.ply import read_ply
from lyra_core.utils.errors import CheckpointError

W, H, N = 48, 32, 9  # the student's reduced size: 2 latent frames of 4 x 6 cells per view
IMAGE_W, IMAGE_H = 64, 40  # the input image: cropped and resized to W x H
INTR = Intrinsics(50.0, 50.0, 31.5, 19.5, IMAGE_W, IMAGE_H)
PER_WORLD = 6 * N * (H // 8) * (W // 8)  # one Gaussian per cell per frame per view


def write_student(folder, dynamic: bool = False, diffusers_tokenizer: bool = False, **fields):
    """A Lyra-1 student folder: random small decoder, tiny TorchScript (or diffusers)
    tokenizer."""
    base = LyraDecoderConfig.lyra1_dynamic() if dynamic else LyraDecoderConfig.lyra1()
    config = replace(
        base, width=64, num_layers=2, num_heads=1, transformer_layers=(1,), d_state=16, head_dim=16
    )
    torch.manual_seed(0)
    decoder = Lyra1Decoder(config)
    for embed in (decoder.plucker_embed, decoder.time_embed, decoder.target_time_embed):
        torch.nn.init.normal_(embed.proj.weight, std=0.1)  # make the conditioning matter
    decoder.save_pretrained(folder / "decoder")
    if diffusers_tokenizer:
        VideoVAE.tiny().save_pretrained(folder / "tokenizer")
    else:
        write_cosmos_folder(folder / "tokenizer")
    spec = {"model": "lyra1", "width": W, "height": H, "num_frames": N, **fields}
    (folder / "student.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory):
    return write_student(tmp_path_factory.mktemp("lyra1") / "student")


def frame():
    rows, cols = np.mgrid[0:IMAGE_H, 0:IMAGE_W]
    rgb = np.stack([cols * 3, rows * 5, np.full_like(rows, 90)], axis=-1).astype(np.uint8)
    depth = (2.0 + 0.02 * cols).astype(np.float32)
    return rgb, depth


def pose(yaw: float = 0.3, t=(0.5, -1.0, 1.2)) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    world_from_camera = np.eye(4)
    world_from_camera[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # optical axes: z forward, x right
    )
    world_from_camera[:3, 3] = t
    return world_from_camera


def test_a_lyra1_folder_builds_a_deterministic_world_at_its_size(student_folder):
    pipeline = LyraWorldPipeline.from_pretrained(student_folder)
    assert pipeline.is_lyra1 and pipeline.size == (W, H)
    rgb, depth = frame()
    out = pipeline(rgb, depth, INTR.matrix(), pose())
    again = pipeline(rgb, depth, INTR.matrix(), pose())
    assert out.videos.shape == (6, N, H, W, 3) and out.camtoworlds.shape == (6, N, 4, 4)
    assert len(out.gaussians) == round(0.2 * PER_WORLD)  # Lyra's 80 % pruning
    assert out.gaussians.find_invalid() is None
    assert set(out.timings) == {"cache", "encode", "decode", "total"}
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(out.gaussians, name), getattr(again.gaussians, name)), name
    everything = pipeline(rgb, depth, INTR.matrix(), pose(), prune_ratio=0.0).gaussians
    assert len(everything) == PER_WORLD


def test_the_views_reach_the_decoder_in_lyra1_order_relative_to_its_first_camera(
    student_folder,
):
    pipeline = LyraWorldPipeline.from_pretrained(student_folder)
    seen = []
    hook = pipeline.student.decoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[2].clone())
    )
    rgb, depth = frame()
    try:
        out = pipeline(rgb, depth, INTR.matrix(), pose())
    finally:
        hook.remove()
    (received,) = seen
    order = [LYRA_TRAJECTORY_NAMES[i] for i in LYRA1_VIEW_ORDER]
    assert order[0] == "clockwise" and order[1:] == list(LYRA_TRAJECTORY_NAMES[:5])
    paths = lyra_trajectories(torch.as_tensor(pose()), out.scene_depth, N)
    expected = torch.stack([paths[name] for name in order])
    assert_close(out.camtoworlds, expected.float())
    relative = rigid_inverse(expected[0, 0]) @ expected
    assert_close(received[0], relative.float(), atol=1e-5, rtol=0)
    assert not torch.allclose(received[0, 0], received[0, 1], atol=1e-3)  # views differ


def test_the_world_moves_rigidly_with_the_camera(student_folder):
    """The decoder sees only relative cameras, so a world built from a moved camera is the same
    world moved: means and rotations follow the rigid motion (about the up axis)."""
    pipeline = LyraWorldPipeline.from_pretrained(student_folder)
    rgb, depth = frame()
    a = pipeline(rgb, depth, INTR.matrix(), pose(), prune_ratio=0.0).gaussians
    motion = pose(yaw=1.1, t=(-2.0, 3.0, 0.4)) @ np.linalg.inv(pose())
    b = pipeline(rgb, depth, INTR.matrix(), motion @ pose(), prune_ratio=0.0).gaussians
    m = torch.as_tensor(motion, dtype=torch.float32)
    assert_close(b.means, a.means @ m[:3, :3].T + m[:3, 3], atol=2e-3, rtol=1e-4)
    assert_close(quat_to_rotmat(b.quats), m[:3, :3] @ quat_to_rotmat(a.quats), atol=1e-4, rtol=0)
    assert_close(b.sh, a.sh, atol=1e-4, rtol=0)


def test_a_dynamic_student_with_a_diffusers_tokenizer_builds_the_world(tmp_path):
    """Target time: the input frame (the tiny TorchScript tokenizer cannot encode one frame)."""
    folder = write_student(tmp_path / "s", dynamic=True, diffusers_tokenizer=True)
    pipeline = LyraWorldPipeline.from_pretrained(folder)
    rgb, depth = frame()
    out = pipeline(rgb, depth, INTR.matrix(), pose())
    assert len(out.gaussians) == round(0.2 * PER_WORLD) and out.gaussians.find_invalid() is None


def test_the_builder_anchors_a_lyra1_world_on_the_observation(student_folder):
    options = BuildOptions(source="lyra", lyra_checkpoint=str(student_folder), depth_stride=1)
    rgb, depth = frame()
    built = WorldBuilder("cpu").build(rgb, depth, INTR, pose(), options)
    observed = depth_gaussians(rgb, depth, INTR, pose(), options)
    assert built.source == "lyra" and len(observed) < len(built.gaussians)
    assert torch.equal(built.gaussians.means[: len(observed)], observed.means)  # kept exactly
    assert torch.equal(built.gaussians.sh[: len(observed)], observed.sh)


def test_lyra_world_cli_reads_a_lyra1_folder(student_folder, tmp_path, capsys):
    rgb, depth = frame()
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    np.save(tmp_path / "depth.npy", depth)
    common = ["world", "--image", str(tmp_path / "rgb.png"), "--depth", str(tmp_path / "depth.npy")]
    common += ["--intrinsics", "50,50,31.5,19.5", "--source", "lyra"]
    out = tmp_path / "world.ply"
    assert lyra([*common, "--lyra-checkpoint", str(student_folder), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip())["source"] == "lyra"
    assert len(read_ply(out)) > 0
    broken = tmp_path / "broken"
    shutil.copytree(student_folder, broken)
    shutil.rmtree(broken / "tokenizer")
    assert lyra([*common, "--lyra-checkpoint", str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tokenizer folder" in err


def _replace_decoder_with_the_tiny_one(folder):
    shutil.rmtree(folder / "decoder")
    LyraDecoder(LyraDecoderConfig.tiny()).save_pretrained(folder / "decoder")


def _rewrite_spec(**changes):
    def rewrite(folder):
        spec = json.loads((folder / "student.json").read_text())
        (folder / "student.json").write_text(json.dumps({**spec, **changes}))

    return rewrite


BROKEN = {
    "no student.json": (lambda f: (f / "student.json").unlink(), "student.json is missing"),
    "no decoder": (lambda f: shutil.rmtree(f / "decoder"), "decoder folder .* is missing"),
    "no tokenizer": (lambda f: shutil.rmtree(f / "tokenizer"), "tokenizer folder .* is missing"),
    "no encoder.jit": (lambda f: (f / "tokenizer/encoder.jit").unlink(), "encoder.jit is missing"),
    "no decoder weights": (
        lambda f: (f / "decoder/model.safetensors").unlink(),
        "model.safetensors",
    ),
    "not a Lyra-1 decoder": (_replace_decoder_with_the_tiny_one, "not a Lyra-1 decoder"),
    "five trajectories": (
        _rewrite_spec(trajectory_names=list(LYRA_TRAJECTORY_NAMES[:5])),
        "reads 6 trajectories",
    ),
    "a size off the grid": (_rewrite_spec(width=40), "multiples of 16"),
    "an unknown field": (_rewrite_spec(colour="red"), "unknown StudentConfig fields"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_folder_with_a_missing_or_wrong_part_is_refused(student_folder, tmp_path, case):
    breaks, message = BROKEN[case]
    folder = tmp_path / "student"
    shutil.copytree(student_folder, folder)
    breaks(folder)
    with pytest.raises(CheckpointError, match=message):
        LyraWorldPipeline.from_pretrained(folder)
