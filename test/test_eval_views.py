"""``lyra eval-views``: RealEstate10K and transforms.json readers, the single-view protocol and the
report, on tiny exports of a procedural room rendered at known cameras."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lyra_core import cli
from lyra_core.data.captures.common import GL_TO_CV
from lyra_core.evaluation.eval_views import (
    LYRA_OFFSETS,
    Re10kSequence,
    ViewProtocol,
    cache_view_method,
    evaluate_views,
    find_sequences,
    parse_offsets,
    re10k_intrinsics,
    read_re10k_cameras,
)
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at, rigid_inverse
from lyra_core.pipelines.cache3d import render_views
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.utils.errors import CaptureError
from lyra_core.utils.media import write_png
from lyra_core.weights import shipped_student_path

WIDTH, HEIGHT = 64, 48
"""The shipped student's input size: the exports are rendered at it (no crop, no resize)."""

K = Intrinsics(fx=50.0, fy=52.0, cx=30.3, cy=24.6, width=WIDTH, height=HEIGHT)
"""Off-centre principal point and non-square pixels: a convention error shows."""

FRAMES = 7
OFFSETS = "0,2,4"


@pytest.fixture(scope="module")
def room():
    return procedural_room(20_000, seed=3)


def _poses(frames: int = FRAMES) -> torch.Tensor:
    """(N, 4, 4) float64 camera-to-world poses sliding sideways inside the room (z up)."""
    eyes = torch.tensor([[-0.4 + 0.1 * i, -1.6, 1.2] for i in range(frames)], dtype=torch.float64)
    targets = eyes + torch.tensor([0.3, 3.0, -0.2], dtype=torch.float64)
    return look_at(eyes, targets, up=(0.0, 0.0, 1.0))


def _render(room, poses: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    cameras = Cameras.from_intrinsics(poses.float(), K)
    renders = render_views(room, cameras, (0.0, 0.0, 0.0))
    return renders.rgb.numpy(), renders.depth.numpy()


def _write_re10k(room, root, name: str, frames: int = FRAMES) -> torch.Tensor:
    """``root/<name>.txt`` + ``root/<name>/<timestamp>.png``; returns the poses."""
    poses = _poses(frames)
    rgb, _ = _render(room, poses)
    normalised = [K.fx / WIDTH, K.fy / HEIGHT, (K.cx + 0.5) / WIDTH, (K.cy + 0.5) / HEIGHT]
    lines = [f"https://www.youtube.com/watch?v={name}"]
    for i, pose in enumerate(poses):
        stamp = 33366 * (i + 1)
        worldtocam = rigid_inverse(pose)[:3].reshape(-1).tolist()
        values = [*normalised, 0.0, 0.0, *worldtocam]
        lines.append(" ".join([str(stamp), *(repr(float(v)) for v in values)]))
        write_png(root / name / f"{stamp}.png", rgb[i])
    (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return poses


def _write_transforms(room, folder) -> torch.Tensor:
    """A nerfstudio capture with depth (.npy, meters); returns the poses."""
    poses = _poses()
    rgb, depth = _render(room, poses)
    frames = []
    for i, pose in enumerate(poses):
        write_png(folder / "images" / f"frame_{i:05d}.png", rgb[i])
        np.save(folder / "images" / f"depth_{i:05d}.npy", depth[i])
        frames.append(
            {
                "file_path": f"images/frame_{i:05d}.png",
                "depth_file_path": f"images/depth_{i:05d}.npy",
                "transform_matrix": (pose.numpy() @ GL_TO_CV).tolist(),
            }
        )
    meta = {"fl_x": K.fx, "fl_y": K.fy, "cx": K.cx + 0.5, "cy": K.cy + 0.5}
    meta |= {"w": WIDTH, "h": HEIGHT, "camera_model": "PINHOLE", "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return poses


@pytest.fixture(scope="module")
def exports(room, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_views")
    re10k = root / "re10k"
    poses = _write_re10k(room, re10k, "seq_a")
    _write_re10k(room, re10k, "seq_b")
    capture = root / "dl3dv" / "scene_1" / "nerfstudio"
    _write_transforms(room, capture)
    return {"re10k": re10k, "poses": poses, "dl3dv": root / "dl3dv", "capture": capture}


@pytest.fixture(scope="module")
def student():
    path = shipped_student_path()
    if path is None:
        pytest.skip("this install has no shipped student")
    return path


# --------------------------------------------------------------------------------------------
# Readers and protocol
# --------------------------------------------------------------------------------------------


def test_re10k_intrinsics_to_pixels():
    intrinsics = re10k_intrinsics([0.5, 0.9, 0.5, 0.5], 640, 360)
    assert (intrinsics.fx, intrinsics.fy) == (320.0, 324.0)
    assert (intrinsics.cx, intrinsics.cy) == (319.5, 179.5)  # the centre, OpenCV pixel centres
    assert (intrinsics.width, intrinsics.height) == (640, 360)


def test_re10k_reader_recovers_the_cameras(exports):
    cameras = read_re10k_cameras(exports["re10k"] / "seq_a.txt")
    assert cameras.url.endswith("seq_a") and len(cameras.timestamps) == FRAMES
    assert cameras.timestamps[2] == 3 * 33366
    expected = exports["poses"].numpy()
    np.testing.assert_allclose(cameras.camtoworlds, expected, atol=1e-12)
    np.testing.assert_allclose(
        cameras.worldtocams @ expected, np.eye(4)[None].repeat(7, 0), atol=1e-12
    )

    sequence = Re10kSequence(exports["re10k"] / "seq_a.txt")
    frame = sequence.frame(3)
    assert frame.intrinsics.width == WIDTH and frame.depth is None
    for field in ("fx", "fy", "cx", "cy"):
        assert getattr(frame.intrinsics, field) == pytest.approx(getattr(K, field), abs=1e-9)
    np.testing.assert_allclose(frame.camtoworld, expected[3], atol=1e-12)
    # downscaled: the image is shrunk and the intrinsics follow (scaled about pixel corners)
    half = Re10kSequence(exports["re10k"] / "seq_a.txt", downscale=2).frame(3)
    assert half.rgb.shape == (HEIGHT // 2, WIDTH // 2, 3)
    small = K.resize(WIDTH // 2, HEIGHT // 2)
    assert half.intrinsics.cx == pytest.approx(small.cx) and half.intrinsics.fy == pytest.approx(
        small.fy
    )
    assert half.intrinsics.cx == pytest.approx((K.cx + 0.5) / 2 - 0.5)


def test_transforms_sequences_reuse_the_capture_reader(exports):
    found = find_sequences(exports["dl3dv"], "dl3dv")
    assert [name for name, _ in found] == ["scene_1"]
    sequence = found[0][1]()
    assert len(sequence) == FRAMES
    frame = sequence.frame(4)
    np.testing.assert_allclose(frame.camtoworld, exports["poses"][4].numpy(), atol=1e-9)
    assert frame.intrinsics.cx == pytest.approx(K.cx) and frame.depth is not None
    [(name, load)] = find_sequences(exports["capture"] / "transforms.json", "transforms")
    assert name == "nerfstudio" and len(load()) == FRAMES


def test_protocol_offsets():
    assert tuple(range(121)) == LYRA_OFFSETS
    assert ViewProtocol().targets(121) == list(range(121))
    with pytest.raises(CaptureError, match=r"needs frames 0\.\.120"):
        ViewProtocol().targets(120)
    assert ViewProtocol(2, (1, 3)).targets(6) == [3, 5]
    with pytest.raises(CaptureError):
        ViewProtocol(1, (-2, 1)).targets(10)  # before frame 0
    assert parse_offsets("0:121") == LYRA_OFFSETS
    assert parse_offsets("1:9:4") == (1, 5) and parse_offsets("5,10,20") == (5, 10, 20)
    for bad in ("a", "3:3", "1:2:3:4", ""):
        with pytest.raises(ValueError):
            parse_offsets(bad)
    with pytest.raises(ValueError):
        ViewProtocol(0, (1, 1))


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_ground_truth_world_scores_near_perfect(room, exports):
    """The scene itself as the "student": the renders at the read cameras equal the exported
    frames up to their uint8 quantisation, so any camera convention error would show."""
    protocol = ViewProtocol(1, (0, 2, 5))
    methods = {"oracle": lambda frame: room, "3d_cache": cache_view_method(WIDTH, HEIGHT)}
    for data, fmt in ((exports["re10k"], "re10k"), (exports["dl3dv"], "dl3dv")):
        result = evaluate_views(
            find_sequences(data, fmt), methods, protocol, (WIDTH, HEIGHT), None, progress=False
        )
        for views in result["per_view"]["oracle"].values():
            assert all(v["psnr"] > 45.0 and v["ssim"] > 0.99 for v in views)
        shown = len(result["per_sequence"]["oracle"]) * (1 + len(result["per_view"]))
        assert len(result["rows"]) == len(result["labels"]) == shown
    # re10k has no depth: no cache row; the capture has depth: the cache reproduces its own
    # view best and degrades as the camera moves away
    cache = result["per_view"]["3d_cache"]
    assert cache[0][0]["psnr"] > 18.0 and cache[0][0]["psnr"] > cache[5][0]["psnr"]
    assert result["per_sequence"]["3d_cache"][0]["gaussians"] <= WIDTH * HEIGHT


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_cli_re10k_with_the_shipped_student(exports, student, tmp_path, room):
    data = tmp_path / "re10k"
    for name in ("seq_a", "seq_b"):
        (data / name).mkdir(parents=True)
        for src in (exports["re10k"] / name).iterdir():
            (data / name / src.name).write_bytes(src.read_bytes())
        (data / f"{name}.txt").write_bytes((exports["re10k"] / f"{name}.txt").read_bytes())
    _write_re10k(room, data, "seq_c_short", frames=3)  # too short for offset 4: skipped
    out = tmp_path / "out"
    args = ["eval-views", "--format", "re10k", str(data), "--student", f"tiny={student}"]
    args += ["--out", str(out), "--offsets", OFFSETS, "--perceptual", "stlpips-alex"]
    with pytest.warns(UserWarning, match="seq_c_short"):
        assert cli.main([*args, "--no-progress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["offsets"] == [0, 2, 4]
    assert (report["protocol"]["width"], report["protocol"]["height"]) == (WIDTH, HEIGHT)
    assert report["data"]["sequences"] == 2
    assert [s["sequence"] for s in report["skipped"]] == ["seq_c_short"]
    assert "needs frames 0..4" in report["skipped"][0]["reason"]
    assert "skipped" in report["methods"]["3d_cache"]  # RealEstate10K has no depth
    assert set(report["summary"]) == {"tiny"}
    summary = report["summary"]["tiny"]
    assert 5.0 < summary["psnr"] < 60.0 and -1.0 < summary["ssim"] <= 1.0
    assert 0.0 < summary["stlpips-alex"] < 1.0
    assert set(report["per_offset"]["tiny"]) == {"0", "2", "4"}
    rows = report["per_sequence"]["tiny"]
    assert [r["sequence"] for r in rows] == ["seq_a", "seq_b"]
    # the mean over sequences of per-sequence means is the mean over offsets of per-offset means
    by_offset = np.mean([v["psnr"] for v in report["per_offset"]["tiny"].values()])
    assert summary["psnr"] == pytest.approx(by_offset, rel=1e-6)
    assert rows[0]["psnr"] == pytest.approx(rows[1]["psnr"], rel=1e-6)  # the same frames
    table = (out / "metrics.md").read_text()
    assert "| tiny |" in table and "## psnr per offset" in table and "seq_c_short" in table
    from PIL import Image

    grid = Image.open(out / "views.png")
    assert grid.size == (4 + 3 * (WIDTH + 4), 4 + 4 * (HEIGHT + 4))  # 2 x (target, tiny) rows


def test_cli_capture_with_depth_has_the_cache_baseline(exports, student, tmp_path):
    out = tmp_path / "out"
    args = ["eval-views", "--format", "dl3dv", str(exports["dl3dv"]), "--student", str(student)]
    args += ["--out", str(out), "--offsets", "1:4", "--perceptual", "none", "--no-progress"]
    assert cli.main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["summary"]) == {"student_tiny", "3d_cache"}
    assert report["methods"]["3d_cache"] == {"sequences": 1}
    for scores in report["summary"].values():
        assert math.isfinite(scores["psnr"]) and scores["psnr"] > 5.0


def _fails(args: list[str], capsys) -> str:
    assert cli.main(["eval-views", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lyra eval-views: error:")
    return err


def test_bad_input_exits_2_with_one_line(exports, student, tmp_path, capsys):
    common = ["--student", str(student), "--out", str(tmp_path / "out"), "--perceptual", "none"]
    assert "no such file" in _fails(["--format", "re10k", str(tmp_path / "nope"), *common], capsys)
    assert "*.txt" in _fails(["--format", "re10k", str(tmp_path), *common], capsys)
    seq = exports["re10k"] / "seq_a.txt"
    lines = seq.read_text().splitlines()
    cases = {
        "short_line": ([*lines[:2], " ".join(lines[2].split()[:10])], "expected 19 numbers"),
        "word": ([*lines[:2], lines[2].replace(lines[2].split()[3], "abc", 1)], "not a number"),
        "nan_pose": ([*lines[:2], " ".join([*lines[2].split()[:-1], "nan"])], "NaN"),
        "url_only": (lines[:1], "at least one frame"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.txt"
        bad.write_text("\n".join(content) + "\n")
        err = _fails(["--format", "re10k", str(bad), *common], capsys)
        assert message in err and f"{name}.txt" in err
    # a sequence too short for the protocol, and missing frames
    err = _fails(["--format", "re10k", str(seq), *common, "--offsets", "0:121"], capsys)
    assert "needs frames 0..120" in err
    missing = ["--format", "re10k", str(seq), "--frames", str(tmp_path), "--offsets", OFFSETS]
    err = _fails([*missing, *common], capsys)
    assert "no image for frame 0" in err
    # bad options
    err = _fails(["--format", "re10k", str(seq), *common, "--offsets", "1,1"], capsys)
    assert "distinct" in err
    with pytest.raises(SystemExit):
        cli.main(["eval-views", "--format", "re10k", str(seq), *common, "--offsets", "x"])
