"""Media writers, the procedural room and the core demo end to end."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lyra_core.cli import demo
from lyra_core.rendering.backends.native import native_available
from lyra_core.scene.ply import read_ply
from lyra_core.scene.procedural_room import ROOM_HALF_SIZE, ROOM_HEIGHT, procedural_room
from lyra_core.utils.media import (
    colorize_depth,
    contact_sheet,
    to_uint8,
    write_gif,
    write_mp4,
    write_png,
    write_text,
)


def test_to_uint8_clips_and_rounds():
    image = torch.tensor([[[-0.5, 0.5, 1.5]]])
    assert to_uint8(image).tolist() == [[[0, 128, 255]]]


def test_colorize_depth_masks_empty_pixels():
    depth = torch.linspace(1.0, 5.0, 12).reshape(3, 4, 1)
    alpha = torch.ones(3, 4, 1)
    alpha[0, 0] = 0.0
    colours = colorize_depth(depth, alpha)
    assert colours.shape == (3, 4, 3) and colours.dtype == np.uint8
    assert colours[0, 0].tolist() == [0, 0, 0]
    assert colours[1:].reshape(-1, 3).any(axis=1).all()
    assert not np.array_equal(colours[1, 0], colours[2, 3])  # near and far differ


def test_contact_sheet_places_images_in_a_grid():
    red = np.zeros((8, 10, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 10, 3), np.uint8)
    blue[..., 2] = 255
    sheet = contact_sheet([[red, blue], [blue]], gap=2)
    assert sheet.shape == (2 * 10 + 2, 2 * 12 + 2, 3)
    assert sheet[2, 2].tolist() == [255, 0, 0]
    assert sheet[2, 14].tolist() == [0, 0, 255]
    assert sheet[12, 2].tolist() == [0, 0, 255]
    assert sheet[12, 14].tolist() == [255, 255, 255]  # missing cell stays white


def test_writers_are_atomic_and_readable(tmp_path):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 128, 255)]
    png = write_png(tmp_path / "a.png", frames[1])
    gif = write_gif(tmp_path / "a.gif", frames, fps=10)
    assert np.asarray(Image.open(png)).tolist() == frames[1].tolist()
    assert Image.open(gif).n_frames == 3
    try:
        mp4 = write_mp4(tmp_path / "a.mp4", frames, fps=10)
    except RuntimeError:
        pytest.skip("this OpenCV build has no MPEG-4 encoder")
    video = cv2.VideoCapture(str(mp4))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "a.png"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "clip.gif"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_gif(target, [], fps=10)
    bad = [np.zeros((4, 4, 3), np.uint8), "not an image"]
    with pytest.raises(Exception):  # noqa: B017 - Pillow's own error type
        write_gif(target, bad, fps=10)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]


def test_mp4_replaces_atomically_and_keeps_mode(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    target.chmod(0o640)
    frames = [np.full((16, 16, 3), 128, np.uint8)] * 2
    with pytest.raises(TypeError):  # fails after OpenCV has opened and written its file
        write_mp4(target, [frames[0], None], fps=10)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    try:
        write_mp4(target, frames, fps=10)
    except RuntimeError:
        pytest.skip("this OpenCV build has no MPEG-4 encoder")
    assert target.read_bytes() != b"old" and target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_writers_create_missing_parent_folders(tmp_path):
    path = write_text(tmp_path / "a" / "b" / "notes.md", "# hi\n")
    assert path.read_text() == "# hi\n"
    assert write_png(tmp_path / "c" / "x.png", np.zeros((2, 2, 3), np.uint8)).is_file()


def test_procedural_room_is_seeded_and_inside_the_room():
    a, b = procedural_room(5000, seed=3), procedural_room(5000, seed=3)
    c = procedural_room(5000, seed=4)
    assert len(a) == 5000
    torch.testing.assert_close(a.means, b.means)
    assert not torch.equal(a.means, c.means)
    a.validate()
    assert (a.means[:, :2].abs() <= ROOM_HALF_SIZE + 1e-4).all()
    assert (a.means[:, 2] >= -1e-4).all() and (a.means[:, 2] <= ROOM_HEIGHT + 1e-4).all()
    assert ((a.colors >= 0) & (a.colors <= 1)).all()


def test_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--gaussians", "3000", "--frames", "3", "--width", "48"]
    assert demo.main([*args, "--height", "36", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 7 * 3  # six Lyra trajectories + the waypoint tour
    cpu_backend = "native" if native_available() else "torch"
    assert summary["gaussians"] == 3000 and summary["backend"] == cpu_backend
    assert summary["scene_depth_m"] > 0.5
    for key in ("world_ply", "rgb_sheet", "depth_sheet", "gif"):
        assert (out / summary["outputs"][key].split("/")[-1]).stat().st_size > 0
    sheet = np.asarray(Image.open(out / "trajectories_rgb.png"))
    assert sheet.shape[0] > 7 * 36  # seven rows of frames
    assert sheet.std() > 10  # not a blank image
    torch.testing.assert_close(read_ply(out / "world.ply").means, procedural_room(3000).means)
    assert "trajectories_rgb.png" in capsys.readouterr().out
