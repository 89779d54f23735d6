"""``lyra world``: one frame to a world through the node's builder, files in and out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lyra_core.cli import main as lyra
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


def test_world_bad_input_is_one_line_and_exit_2(frame_files, capsys):
    base = ["world", "--image", str(frame_files / "rgb.png"), "--out", str(frame_files / "w.ply")]
    cases = [
        ([*base, "--intrinsics", "60,60,31.5"], "--intrinsics"),
        ([*base, "--intrinsics", "60,60,31.5,23.5"], "needs a depth image"),
        (
            [*base, "--intrinsics", "60,60,31.5,23.5", "--depth", str(frame_files / "rgb.png")],
            "16-bit",
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
