"""``lyra fit``: a world fitted to a procedural capture on disk (transforms.json, 64x48 images of
the procedural room), its outputs, resuming, the time limit, the initialisations and bad input."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree
from torch.testing import assert_close

from lyra_core.cli import main as lyra
from lyra_core.data.captures import load_capture
from lyra_core.geometry.transforms import look_at
from lyra_core.mapping import PosedFrame
from lyra_core.mapping.triangulation import (
    points_at_scene_depth,
    scene_depth_from_poses,
    triangulate_frames,
)
from lyra_core.scene.ply import read_ply
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.training import fit
from lyra_core.training.fit import build_parser, run_fit, write_procedural_capture

VIEWS, WIDTH, HEIGHT = 16, 64, 48
THREADS = ["--threads", "1"]
"""One torch thread: on the shared, busy CPU of the test machines spinning OpenMP threads make a
step 10-20 times slower; the fixture below restores the thread count for other tests."""


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    """16 RGB views of the room at 64x48 (views 0 and 8 are held out)."""
    folder = tmp_path_factory.mktemp("room_rgb")
    write_procedural_capture(folder, VIEWS, WIDTH, HEIGHT)
    return folder


@pytest.fixture(scope="module")
def depth_capture(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("room_rgbd")
    write_procedural_capture(folder, VIEWS, WIDTH, HEIGHT, depth=True)
    return folder


def _fit(*argv: str) -> dict:
    """Run ``lyra fit`` through the dispatcher; the metrics it wrote."""
    args = [str(a) for a in argv]
    assert lyra(["fit", *args, "--no-progress", *THREADS]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------- the command


def test_fit_improves_held_out_views_and_writes_its_outputs(capture, tmp_path):
    run = tmp_path / "run"
    metrics = _fit(capture, "--out", run, "--max-steps", 150, "--eval-every", 50)
    for name in ("world.ply", "metrics.json", "heldout.png", "checkpoint/state.pt"):
        assert (run / name).is_file(), name
    assert metrics["init"]["method"] == "triangulated"  # no depth, no sparse points
    assert metrics["capture"] == metrics["capture"] | {
        "format": "transforms_json",
        "frames": 16,
        "train_views": 14,
        "heldout_views": 2,
        "width": WIDTH,
        "height": HEIGHT,
        "depth": False,
    }
    heldout = metrics["heldout"]
    assert heldout["views"] == 2
    assert set(heldout) == {"psnr", "ssim", "lpips", "views"}
    assert 0.0 < heldout["lpips"] < 1.0
    assert "ST-LPIPS" in metrics["lpips_metric"]
    assert metrics["steps"] == 150 and metrics["gaussians"] == len(read_ply(run / "world.ply"))
    assert metrics["train_seconds"] > 0 and metrics["seconds_per_step"] > 0
    assert metrics["device"] == "cpu"
    # Held-out PSNR: the optimisation helps views it never saw, clearly.
    assert heldout["psnr"] > metrics["init"]["heldout_psnr"] + 2.0
    steps = [h["step"] for h in metrics["history"]]
    assert steps == [0, 50, 100, 150]
    # The contact sheet: ground truth above the render for both held-out views.
    sheet = np.asarray(Image.open(run / "heldout.png"))
    assert sheet.shape == (2 * (HEIGHT + 4) + 4, 2 * (WIDTH + 4) + 4, 3)
    truth = np.asarray(Image.open(capture / "images" / "frame_00008.png"))
    np.testing.assert_array_equal(sheet[4 : 4 + HEIGHT, 72 : 72 + WIDTH][20:], truth[20:])


def test_resumed_run_equals_an_uninterrupted_one(capture, tmp_path):
    argv = [str(capture), "--max-steps", "120", "--eval-every", "0", "--no-progress", *THREADS]
    whole = run_fit(build_parser().parse_args([*argv, "--out", str(tmp_path / "whole")]))

    def interrupt(world):
        if world.steps == 70:  # after a prune (every 50), before a densification (100)
            raise KeyboardInterrupt

    parts = build_parser().parse_args([*argv, "--out", str(tmp_path / "parts")])
    with pytest.raises(fit.FitInterrupted, match="step 70"):
        run_fit(parts, on_step=interrupt)
    saved = json.loads((tmp_path / "parts" / "checkpoint" / "progress.json").read_text())
    assert saved["step"] == 70
    resumed = run_fit(parts)
    assert resumed["steps"] == 120 and resumed["resumes"] == 1
    a, b = read_ply(tmp_path / "whole" / "world.ply"), read_ply(tmp_path / "parts" / "world.ply")
    assert len(a) == len(b)
    for name in ("means", "log_scales", "opacity_logits", "sh"):
        assert_close(getattr(b, name), getattr(a, name), atol=1e-5, rtol=1e-4)
    assert resumed["heldout"]["psnr"] == pytest.approx(whole["heldout"]["psnr"], abs=1e-3)
    # The training time adds up across the two parts.
    assert resumed["train_seconds"] > saved["train_seconds"]


def test_ctrl_c_finishes_the_step_saves_and_exits_130(capture, tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "lyra_core.cli", "fit", str(capture), "--out", str(run)]
    argv += ["--max-steps", "1000000", "--checkpoint-every", "0.2", "--no-progress", *THREADS]
    child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoint" / "progress.json").is_file():  # training is under way
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    saved = json.loads((run / "checkpoint" / "progress.json").read_text())
    assert saved["step"] > 0
    assert f"interrupted: stopped at step {saved['step']}" in err


def test_max_seconds_stops_the_run_and_counts_across_resumes(capture, tmp_path):
    run = tmp_path / "run"
    argv = (capture, "--out", run, "--max-steps", 1_000_000, "--max-seconds", 2.0)
    first = _fit(*argv, "--eval-every", 0)
    assert 0 < first["steps"] < 1_000_000
    assert 2.0 <= first["train_seconds"] < 2.0 + 5.0  # one step or so past the limit
    again = _fit(*argv, "--eval-every", 0)  # the same limit: nothing left to do
    assert again["steps"] == first["steps"] and again["resumes"] == 1
    longer = _fit(capture, "--out", run, "--max-steps", 1_000_000, "--max-seconds", 3.0)
    assert longer["steps"] > first["steps"] and longer["train_seconds"] >= 3.0


def test_depth_capture_starts_from_its_depth(depth_capture, capture, tmp_path):
    rgbd = _fit(depth_capture, "--out", tmp_path / "rgbd", "--max-steps", 0)
    assert rgbd["init"]["method"] == "depth" and rgbd["capture"]["depth"]
    assert rgbd["gaussians"] > 1000 and rgbd["steps"] == 0
    rgb = _fit(depth_capture, "--out", tmp_path / "rgb", "--max-steps", 0, "--no-depth")
    assert rgb["init"]["method"] == "triangulated"
    # Depth puts a surface everywhere the views saw one; sparse features do not.
    assert rgbd["heldout"]["psnr"] > rgb["heldout"]["psnr"] + 3.0
    plane = _fit(capture, "--out", tmp_path / "plane", "--max-steps", 0, "--init", "plane")
    assert plane["init"]["method"] == "plane" and plane["gaussians"] > 1000


def test_triangulated_points_lie_on_the_room_surfaces(tmp_path):
    # 160x120: at 64x48 one pixel spans 8 cm at the room's 3.4 m, too coarse to check 5 cm.
    write_procedural_capture(tmp_path / "capture", 16, 160, 120)
    metrics = _fit(tmp_path / "capture", "--out", tmp_path / "run", "--max-steps", 0)
    assert metrics["init"]["method"] == "triangulated"
    points = read_ply(tmp_path / "run" / "world.ply").means.numpy()
    assert len(points) > 100
    # The same room densely sampled (the surfaces; its Gaussians lie 1 cm apart).
    surface = cKDTree(procedural_room(300_000, seed=0).means.numpy())
    distance, _ = surface.query(points)
    assert np.median(distance) < 0.05
    assert np.mean(distance < 0.25) > 0.8


# ---------------------------------------------------------------------------- bad input


def _write(folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or folder"),
        ("unknown", "unknown capture format"),
        ("nan_pose", "NaN"),
        ("no_images", "no usable frame"),
        ("one_frame", "none to train on"),
        ("bag_option_on_files", "do not apply"),
        ("other_settings", "made with other settings"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, message, capture, tmp_path, capsys):
    data = tmp_path / "data"
    extra: list[str] = []
    if case == "unknown":
        data.mkdir()
        (data / "notes.txt").write_text("hello")
    elif case in ("nan_pose", "no_images", "one_frame"):
        meta = json.loads((capture / "transforms.json").read_text())
        meta["frames"] = meta["frames"][:1] if case == "one_frame" else meta["frames"][:3]
        if case == "nan_pose":
            meta["frames"][1]["transform_matrix"][0][3] = math.nan
        if case == "no_images":
            for frame in meta["frames"]:
                frame["file_path"] = "missing/" + frame["file_path"]
        else:
            (data / "images").mkdir(parents=True)
            for frame in meta["frames"]:
                (data / frame["file_path"]).write_bytes((capture / frame["file_path"]).read_bytes())
        _write(data, meta)
    elif case == "bag_option_on_files":
        data = capture
        extra = ["--image-topic", "/camera/image"]
    elif case == "other_settings":
        data = capture
        argv = ["fit", str(data), "--out", str(tmp_path / "run"), "--max-steps", "0", *THREADS]
        assert lyra(argv) == 0
        capsys.readouterr()
        extra = ["--downscale", "2"]
    argv = ["fit", str(data), "--out", str(tmp_path / "run"), "--max-steps", "5", *extra]
    with pytest.warns(UserWarning) if case == "no_images" else contextlib.nullcontext():
        status = lyra([*argv, "--no-progress", *THREADS])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("lyra fit: error:"), err
    assert message in err[0]


# ---------------------------------------------------------------------------- triangulation


def test_triangulation_pieces(capture):
    frames = [PosedFrame(**vars(f)) for f in load_capture(capture).frames]
    # The optical axes meet near the room's middle: the median depth is that of the room.
    poses = torch.stack(
        [
            look_at((4.0 * math.cos(a), 4.0 * math.sin(a), 0.0), (0, 0, 0), up=(0, 0, 1))
            for a in np.linspace(0, math.pi, 5)
        ]
    )
    assert scene_depth_from_poses(poses) == pytest.approx(4.0, rel=1e-6)
    parallel = poses.clone()
    parallel[:, :3, :3] = poses[0, :3, :3]
    assert scene_depth_from_poses(parallel, default=2.5) == 2.5
    points, colors = points_at_scene_depth(frames[:2], depth=2.0, per_view=48)
    camera = torch.linalg.inv(frames[0].camtoworld.double())
    z = (camera[:3, :3] @ torch.from_numpy(points[: len(points) // 2]).double().T).T + camera[:3, 3]
    assert_close(z[:, 2], torch.full_like(z[:, 2], 2.0), atol=1e-4, rtol=0)
    assert colors.dtype == np.uint8 and len(colors) == len(points)
    # Identical poses give no parallax: nothing triangulates.
    same = [PosedFrame(f.rgb, f.intrinsics, frames[0].camtoworld) for f in frames[:3]]
    assert len(triangulate_frames(same)) == 0
