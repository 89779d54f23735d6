"""The lyra world source of lyra_ros.world_builder (no DDS needed)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from lyra_core.evaluation.metrics import psnr
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.mapping import world_builder
from lyra_core.mapping.world_builder import (
    BuildOptions,
    WorldBuilder,
    lyra_available,
    resolve_source,
)
from lyra_core.rendering import render
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_core.utils.errors import WorldBuildError
from lyra_core.weights import shipped_student_path

W, H = 80, 60  # not the student's 64x48: the pipeline resizes
INTR = Intrinsics(70.0, 70.0, 39.5, 29.5, W, H)


def rgbd(depth: float = 2.0):
    rows, cols = np.mgrid[0:H, 0:W]
    rgb = np.stack([cols * 3, rows * 4, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    return rgb, np.full((H, W), depth, np.float32)


def camera_pose() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = [0.0, 0.0, 1.0]
    return pose


@pytest.fixture
def builder():
    return WorldBuilder("cpu")


def test_lyra_builds_from_a_checkpoint_and_keeps_it_loaded(builder, tiny_student_checkpoint):
    options = BuildOptions(source="lyra", lyra_checkpoint=str(tiny_student_checkpoint))
    rgb, depth = rgbd()
    built = builder.build(rgb, depth, INTR, camera_pose(), options)
    assert built.source == "lyra" and len(built.gaussians) > 0
    assert torch.isfinite(built.gaussians.means).all()
    assert set(built.stages) == {"cache", "encode", "decode", "total"}
    loaded = builder.pipeline(options.lyra_checkpoint)
    assert builder.pipeline(str(tiny_student_checkpoint)) is loaded  # cached, not reloaded

    no_depth = builder.build(rgb, None, INTR, camera_pose(), options)  # a plane at 3 m
    assert no_depth.source == "lyra" and builder.pipeline(options.lyra_checkpoint) is loaded


def test_a_rewritten_checkpoint_is_reloaded(builder, tiny_student_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_student_checkpoint, folder)
    first = builder.pipeline(str(folder))
    config = folder / "student.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert builder.pipeline(str(folder)) is not first


def test_auto_picks_lyra_when_a_checkpoint_is_there_else_depth(tiny_student_checkpoint, tmp_path):
    present = BuildOptions(lyra_checkpoint=str(tiny_student_checkpoint))
    assert lyra_available(present)
    assert resolve_source(present, has_depth=True) == "lyra"
    assert resolve_source(present, has_depth=False) == "lyra"
    for checkpoint in ("", str(tmp_path / "missing"), str(tmp_path)):
        options = BuildOptions(lyra_checkpoint=checkpoint)
        assert not lyra_available(options)
        assert resolve_source(options, has_depth=True) == "depth"
        with pytest.raises(WorldBuildError, match="depth image"):
            resolve_source(options, has_depth=False)


def test_bad_checkpoints_give_world_build_errors(builder, tiny_student_checkpoint, tmp_path):
    rgb, depth = rgbd()
    with pytest.raises(WorldBuildError, match="needs lyra_checkpoint"):
        builder.build(rgb, depth, INTR, camera_pose(), BuildOptions(source="lyra"))
    missing = tmp_path / "nowhere"
    with pytest.raises(WorldBuildError, match=r"nowhere.*not a folder"):
        builder.build(
            rgb,
            depth,
            INTR,
            camera_pose(),
            BuildOptions(source="lyra", lyra_checkpoint=str(missing)),
        )
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_student_checkpoint, corrupt)
    (corrupt / "student.json").write_text(json.dumps({"width": "wide"}))
    with pytest.raises(WorldBuildError, match="corrupt"):
        builder.build(
            rgb,
            depth,
            INTR,
            camera_pose(),
            BuildOptions(source="auto", lyra_checkpoint=str(corrupt)),
        )


def test_lyra_input_errors_are_world_build_errors(builder, tiny_student_checkpoint):
    options = BuildOptions(source="lyra", lyra_checkpoint=str(tiny_student_checkpoint))
    rgb, depth = rgbd(depth=50.0)  # beyond max_depth: no valid pixel
    with pytest.raises(WorldBuildError, match="no valid pixel"):
        builder.build(rgb, depth, INTR, camera_pose(), options)
    with pytest.raises(WorldBuildError, match="registered"):
        builder.build(rgb, depth[:10], INTR, camera_pose(), options)


def test_shipped_names_the_packaged_student(monkeypatch, tiny_student_checkpoint):
    shipped = shipped_student_path()
    assert shipped is None or (shipped / "student.json").is_file()
    options = BuildOptions(source="lyra", lyra_checkpoint="shipped")
    monkeypatch.setattr(world_builder, "shipped_student_path", lambda: None)
    with pytest.raises(WorldBuildError, match="ships no trained student"):
        resolve_source(options, has_depth=True)
    assert resolve_source(BuildOptions(lyra_checkpoint="shipped"), has_depth=True) == "depth"
    monkeypatch.setattr(world_builder, "shipped_student_path", lambda: tiny_student_checkpoint)
    assert resolve_source(BuildOptions(lyra_checkpoint="shipped"), has_depth=True) == "lyra"
    rgb, _ = rgbd()
    built = WorldBuilder().build(rgb, None, INTR, camera_pose(), options)
    assert built.source == "lyra"


def _psnr_at_input(gaussians) -> float:
    camera = Cameras.from_intrinsics(
        torch.as_tensor(camera_pose(), dtype=torch.float32)[None], INTR
    )
    with torch.no_grad():
        out = render(gaussians, camera)
    rgb, _ = rgbd()
    return float(psnr(out.rgb[0], torch.from_numpy(rgb).float() / 255.0))


def test_lyra_world_is_anchored_to_the_observation(builder, tiny_student_checkpoint):
    options = BuildOptions(
        source="lyra", lyra_checkpoint=str(tiny_student_checkpoint), depth_stride=1
    )
    rgb, depth = rgbd()
    anchored = builder.build(rgb, depth, INTR, camera_pose(), options).gaussians
    raw = builder.pipeline(options.lyra_checkpoint)(
        rgb, depth, INTR.matrix(), camera_pose()
    ).gaussians
    observed = gaussians_from_rgbd(
        rgb, depth, INTR, torch.as_tensor(camera_pose(), dtype=torch.float32)
    )
    # The input view's Gaussians are all there, the student fills only what they do not cover.
    assert len(observed) < len(anchored) < len(observed) + len(raw)
    assert _psnr_at_input(anchored) >= _psnr_at_input(observed) - 0.5
    assert _psnr_at_input(anchored) > _psnr_at_input(raw) + 5.0
