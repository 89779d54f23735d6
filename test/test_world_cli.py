"""``lyra world``: one frame to a world through the node's builder, files in and out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from lyra_core.cli import main as lyra
from lyra_core.rendering.projection import quat_to_rotmat
from lyra_core.scene.ply import read_ply


@pytest.fixture
def frame_files(tmp_path):
    depth = np.full((48, 64), 3000, np.uint16)  # millimetres: a wall at 3 m
    depth[14:34, 20:44] = 1000  # a box at 1 m
    depth[0, :] = 0  # no measurement
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 2] = 200  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    np.save(tmp_path / "depth.npy", depth.astype(np.float32) / 1000.0)
    return tmp_path


def test_world_from_png_depth_with_and_without_fill(frame_files, capsys):
    common = ["world", "--image", str(frame_files / "rgb.png"), "--intrinsics", "60,60,31.5,23.5"]
    assert (
        lyra(
            [
                *common,
                "--depth",
                str(frame_files / "depth.png"),
                "--no-fill",
                "--out",
                str(frame_files / "plain.ply"),
            ]
        )
        == 0
    )
    plain = read_ply(frame_files / "plain.ply")
    assert len(plain) == 47 * 64  # one Gaussian per pixel with depth
    assert json.loads(capsys.readouterr().out.strip())["source"] == "depth"
    np.testing.assert_allclose(sorted({round(float(z), 2) for z in plain.means[:, 2]}), [1.0, 3.0])
    assert float(plain.colors[:, 0].mean()) > 0.7  # RGB order kept: red

    assert (
        lyra(
            [
                *common,
                "--depth",
                str(frame_files / "depth.npy"),
                "--out",
                str(frame_files / "filled.ply"),
            ]
        )
        == 0
    )
    filled = read_ply(frame_files / "filled.ply")
    assert len(filled) > len(plain)  # the background layer behind the box


def test_world_fill_border_and_orientation(frame_files, capsys):
    common = ["world", "--image", str(frame_files / "rgb.png"), "--intrinsics", "60,60,31.5,23.5"]
    counts = {}
    for border in ("0", "16"):
        out = frame_files / f"border{border}.ply"
        argv = [*common, "--depth", str(frame_files / "depth.png"), "--fill-border", border]
        assert lyra([*argv, "--out", str(out)]) == 0
        counts[border] = len(read_ply(out))
    # The border is a ring of replicated edge pixels around the frame, one Gaussian each.
    assert counts["16"] - counts["0"] == (64 + 32) * (48 + 32) - 64 * 48
    capsys.readouterr()

    # A plane tilted about the vertical axis: x / 2 + z = 2 (normal along (1, 0, 2)).
    cols = np.arange(64, dtype=np.float32)
    depth = np.repeat((2.0 / (1.0 + 0.5 * (cols - 31.5) / 60.0))[None], 48, axis=0)
    np.save(frame_files / "tilted.npy", depth.astype(np.float32))
    normal = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 2.0]), dim=0)
    thin_axis = {}
    for orient in ("camera", "normal"):
        out = frame_files / f"{orient}.ply"
        argv = [*common, "--depth", str(frame_files / "tilted.npy"), "--no-fill"]
        assert lyra([*argv, "--orient", orient, "--out", str(out)]) == 0
        world = read_ply(out)
        thin_axis[orient] = quat_to_rotmat(world.quats)[:, :, 2]
    assert float((thin_axis["normal"] @ normal).abs().min()) > 0.999
    assert float((thin_axis["camera"] @ normal).abs().max()) < 0.9  # the optical axis instead


def test_world_bad_input_is_one_line_and_exit_2(frame_files, capsys):
    base = ["world", "--image", str(frame_files / "rgb.png"), "--out", str(frame_files / "w.ply")]
    with_depth = [
        *base,
        "--intrinsics",
        "60,60,31.5,23.5",
        "--depth",
        str(frame_files / "depth.png"),
    ]
    cases = [
        ([*base, "--intrinsics", "60,60,31.5"], "--intrinsics"),
        ([*base, "--intrinsics", "60,60,31.5,23.5"], "needs a depth image"),
        (
            [*base, "--intrinsics", "60,60,31.5,23.5", "--depth", str(frame_files / "rgb.png")],
            "16-bit",
        ),
        (
            [*with_depth, "--fill-border", "-4"],
            "fill_border must be an integer >= 0",
        ),
        (
            [
                "world",
                "--image",
                str(frame_files / "missing.png"),
                "--intrinsics",
                "1,1,0,0",
                "--out",
                "w.ply",
            ],
            "not a readable image",
        ),
    ]
    for argv, expected in cases:
        assert lyra(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert not (frame_files / "w.ply").exists()
