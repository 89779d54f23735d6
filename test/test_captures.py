"""Tests of lyra_core.data.captures: transforms.json folders, COLMAP models and ROS 2 bags read
into posed frames, format detection, errors and the held-out split.

Every capture is written here: images with known content, poses with known values, and for
the distorted cameras bright dots drawn where a distorted camera sees known 3D points, so the
undistorted frames can be checked by projecting those points with the intrinsics and pose that
come back.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lyra_core.data.captures import (
    Capture,
    CaptureError,
    CaptureFrame,
    detect_capture_format,
    load_capture,
    read_colmap,
    read_rosbag,
    read_transforms_json,
    split_holdout,
)
from lyra_core.data.captures import rosbag as rosbag_module
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.utils.errors import LyraError

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _pose(rotvec=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = translation
    return T


# --------------------------------------------------------------------------------------------
# Dots: a distorted camera's view of known points, and where a pinhole camera finds them
# --------------------------------------------------------------------------------------------

DOT_SIGMA = 1.2


def _dot_image(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 black image with a Gaussian dot at each (u, v) (OpenCV pixel centres)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for pu, pv in pixels:
        image += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * DOT_SIGMA**2))
    grey = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _dot_grid(camtoworld: np.ndarray, depth: float = 4.0, n: int = 5) -> np.ndarray:
    """(n*n, 3) world points on a plane ``depth`` meters in front of the (OpenCV) camera."""
    s = np.linspace(-0.6, 0.6, n) * depth * 0.5
    x, y = np.meshgrid(s, s * 0.75)
    cam = np.stack([x.ravel(), y.ravel(), np.full(x.size, depth)], axis=1)
    return cam @ camtoworld[:3, :3].T + camtoworld[:3, 3]


def _project(points: np.ndarray, intrinsics: Intrinsics, camtoworld: np.ndarray) -> np.ndarray:
    """(N, 2) pinhole pixels (OpenCV centres) of world points."""
    worldtocam = np.linalg.inv(camtoworld)
    cam = points @ worldtocam[:3, :3].T + worldtocam[:3, 3]
    K = intrinsics.matrix().double().numpy()
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def _dot_errors(frame: CaptureFrame, points: np.ndarray, margin: int = 6) -> np.ndarray:
    """Distances (pixels) between each dot's centroid in ``frame`` and the projection of its
    point with the frame's intrinsics and pose (dots near the border are left out)."""
    expected = _project(points, frame.intrinsics, frame.camtoworld)
    grey = frame.rgb[..., 0].astype(np.float64)
    errors = []
    for u, v in expected:
        iu, iv = round(u), round(v)
        if not (margin <= iu < frame.width - margin and margin <= iv < frame.height - margin):
            continue
        win = grey[iv - 5 : iv + 6, iu - 5 : iu + 6]
        win = np.clip(win - 8.0, 0, None)
        dv, du = np.mgrid[-5:6, -5:6]
        total = win.sum()
        assert total > 100, f"no dot near ({u:.1f}, {v:.1f})"
        errors.append(
            math.hypot((win * du).sum() / total + iu - u, (win * dv).sum() / total + iv - v)
        )
    assert len(errors) >= 9, f"only {len(errors)} dots inside the image"
    return np.asarray(errors)


# --------------------------------------------------------------------------------------------
# transforms.json
# --------------------------------------------------------------------------------------------


def _write_transforms(folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def _simple_nerfstudio(folder: Path, count: int = 3, width: int = 32, height: int = 24):
    """A pinhole capture: random images, known GL poses. Returns (folder, images, gl poses)."""
    rng = _rng(1)
    images, poses, frames = [], [], []
    for i in range(count):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        _write_png(folder / "images" / f"frame_{i:05d}.png", rgb)
        pose = _pose(rng.normal(size=3) * 0.3, rng.normal(size=3))
        images.append(rgb)
        poses.append(pose)
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": pose.tolist()})
    meta = {"fl_x": 30.0, "fl_y": 31.0, "cx": 16.0, "cy": 12.0, "w": width, "h": height}
    meta["frames"] = frames[::-1]  # the reader sorts by name
    return _write_transforms(folder, meta), images, poses


def test_transforms_json_reads_images_poses_and_intrinsics(tmp_path):
    folder, images, poses = _simple_nerfstudio(tmp_path / "cap")
    capture = load_capture(folder)
    assert capture.source_format == "transforms_json"
    assert capture.skipped == 0 and capture.points is None
    assert [f.name for f in capture.frames] == [f"images/frame_{i:05d}.png" for i in range(3)]
    assert [f.stamp for f in capture.frames] == [0.0, 1.0, 2.0]
    for frame, rgb, pose in zip(capture.frames, images, poses, strict=True):
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_allclose(frame.camtoworld, pose @ GL_TO_CV, atol=1e-12)
        assert frame.depth is None
        # nerfstudio's cx, cy put pixel (0, 0)'s centre at (0.5, 0.5).
        assert frame.intrinsics == Intrinsics(30.0, 31.0, 15.5, 11.5, 32, 24)


def test_blender_camera_looking_down_becomes_opencv(tmp_path):
    """A Blender camera at z = 5 with identity rotation looks down -z: in OpenCV terms its
    forward (z) axis is world -z and image-down (y) is world -y."""
    rgb = np.full((16, 20, 4), (255, 0, 0, 128), dtype=np.uint8)  # half-transparent blue (BGRA)
    (tmp_path / "train").mkdir()
    assert cv2.imwrite(str(tmp_path / "train" / "r_0.png"), rgb)
    pose = _pose(translation=(0.0, 0.0, 5.0))
    meta = {
        "camera_angle_x": 0.8,
        "frames": [{"file_path": "./train/r_0", "transform_matrix": pose.tolist()}],
    }
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match=r"transforms_train.json"):
        detect_capture_format(tmp_path)
    capture = load_capture(tmp_path / "transforms_train.json")
    frame = capture.frames[0]
    np.testing.assert_allclose(frame.camtoworld[:3, 2], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(frame.camtoworld[:3, 1], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(frame.camtoworld[:3, 3], [0, 0, 5], atol=1e-12)
    fx = 0.5 * 20 / math.tan(0.4)
    assert frame.intrinsics == Intrinsics(fx, fx, 9.5, 7.5, 20, 16)
    # Alpha composited onto white: 0.5 blue + 0.5 white.
    np.testing.assert_allclose(frame.rgb[0, 0], [127, 127, 255], atol=1)


def test_transforms_json_per_frame_intrinsics_override(tmp_path):
    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=2)
    meta = json.loads((folder / "transforms.json").read_text())
    meta["frames"][0].update({"fl_x": 50.0, "cy": 10.0})  # frames[0] is frame_00001 (reversed)
    (folder / "transforms.json").write_text(json.dumps(meta))
    frames = read_transforms_json(folder).frames
    assert frames[0].intrinsics == Intrinsics(30.0, 31.0, 15.5, 11.5, 32, 24)
    assert frames[1].intrinsics == Intrinsics(50.0, 31.0, 15.5, 9.5, 32, 24)


def test_transforms_json_missing_images_are_skipped_with_a_warning(tmp_path):
    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=3)
    (folder / "images" / "frame_00001.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 image\(s\): image file missing"):
        capture = load_capture(folder)
    assert capture.skipped == 1
    assert [f.stamp for f in capture.frames] == [0.0, 2.0]
    for name in ("frame_00000.png", "frame_00002.png"):
        (folder / "images" / name).unlink()
    with (
        pytest.raises(CaptureError, match=r"no usable frame.*frame_00000.png"),
        pytest.warns(UserWarning),
    ):
        load_capture(folder)


def test_transforms_json_depth_png_and_npy(tmp_path):
    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=2)
    rng = _rng(2)
    mm = rng.integers(0, 5000, (24, 32)).astype(np.uint16)
    mm[0, 0] = 0
    assert cv2.imwrite(str(folder / "d0.png"), mm)
    meters = rng.uniform(0.5, 4.0, (24, 32)).astype(np.float32)
    meters[1, 1] = np.nan
    np.save(folder / "d1.npy", meters)
    meta = json.loads((folder / "transforms.json").read_text())
    meta["frames"][1]["depth_file_path"] = "d0.png"  # frame_00000
    meta["frames"][0]["depth_file_path"] = "d1.npy"  # frame_00001
    (folder / "transforms.json").write_text(json.dumps(meta))
    frames = load_capture(folder).frames
    np.testing.assert_allclose(frames[0].depth, mm.astype(np.float32) * 1e-3, rtol=1e-6)
    expected = np.where(np.isnan(meters), 0.0, meters)
    np.testing.assert_array_equal(frames[1].depth, expected)
    assert frames[0].depth.dtype == np.float32

    meta["depth_unit_scale_factor"] = 1e-4  # 0.1 mm per unit, applies to PNG and .npy
    (folder / "transforms.json").write_text(json.dumps(meta))
    frames = load_capture(folder).frames
    np.testing.assert_allclose(frames[0].depth, mm.astype(np.float32) * 1e-4, rtol=1e-6)
    np.testing.assert_allclose(frames[1].depth, expected * 1e-4, rtol=1e-6)
    assert load_capture(folder, depth=False).frames[0].depth is None
    (folder / "d1.npy").unlink()
    with pytest.warns(
        UserWarning, match=r"kept without depth 1 of 2 image\(s\): depth file missing"
    ):
        frames = load_capture(folder).frames
    assert frames[0].depth is not None and frames[1].depth is None


def test_transforms_json_downscale_and_images_n_folder(tmp_path):
    folder, images, _ = _simple_nerfstudio(tmp_path / "cap", count=2)
    full = Intrinsics(30.0, 31.0, 15.5, 11.5, 32, 24)
    capture = load_capture(folder, downscale=2)
    frame = capture.frames[0]
    assert frame.intrinsics == full.resize(16, 12)
    expected = cv2.resize(images[0], (16, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(frame.rgb, expected)
    # nerfstudio's images_2 folder is preferred when it holds the image.
    small = np.full((12, 16, 3), 7, dtype=np.uint8)
    _write_png(folder / "images_2" / "frame_00000.png", small)
    frames = load_capture(folder, downscale=2).frames
    np.testing.assert_array_equal(frames[0].rgb, small)
    np.testing.assert_array_equal(
        frames[1].rgb, cv2.resize(images[1], (16, 12), interpolation=cv2.INTER_AREA)
    )
    assert frames[0].intrinsics == full.resize(16, 12)
    _write_png(folder / "images_2" / "frame_00000.png", np.zeros((10, 16, 3), np.uint8))
    with pytest.raises(CaptureError, match=r"images_2/frame_00000.png: image is 16x10"):
        load_capture(folder, downscale=2)


def test_transforms_json_undistorts_with_opencv(tmp_path):
    """Dots drawn where an OpenCV-distorted camera sees known points land, after reading,
    where the returned pinhole intrinsics and pose project those points."""
    width, height = 160, 120
    K = np.array([[110.0, 0, 81.3], [0, 112.0, 58.6], [0, 0, 1]])  # OpenCV pixel centres
    dist = np.array([-0.25, 0.07, 0.002, -0.003, 0.0])
    gl_pose = _pose((0.1, -0.2, 0.05), (0.3, 0.2, -1.0))
    cv_pose = gl_pose @ GL_TO_CV
    points = _dot_grid(cv_pose)
    worldtocam = np.linalg.inv(cv_pose)
    rvec, _ = cv2.Rodrigues(worldtocam[:3, :3])
    pixels, _ = cv2.projectPoints(points, rvec, worldtocam[:3, 3], K, dist)
    _write_png(tmp_path / "images" / "a.png", _dot_image(pixels[:, 0], width, height))
    meta = {
        "fl_x": K[0, 0],
        "fl_y": K[1, 1],
        "cx": K[0, 2] + 0.5,
        "cy": K[1, 2] + 0.5,
        "w": width,
        "h": height,
        "k1": dist[0],
        "k2": dist[1],
        "p1": dist[2],
        "p2": dist[3],
        "frames": [{"file_path": "images/a.png", "transform_matrix": gl_pose.tolist()}],
    }
    _write_transforms(tmp_path, meta)
    frame = load_capture(tmp_path).frames[0]
    assert (frame.width, frame.height) == (width, height)
    assert frame.intrinsics.fx != K[0, 0]  # the undistorted camera is another pinhole
    errors = _dot_errors(frame, points)
    assert errors.max() < 0.2, errors
    # Without undistortion the outer dots are far off: the test sees distortion.
    meta.update(k1=0.0, k2=0.0, p1=0.0, p2=0.0)
    _write_transforms(tmp_path, meta)
    with pytest.raises(AssertionError):
        assert _dot_errors(load_capture(tmp_path).frames[0], points).max() < 0.2


def test_transforms_json_points_from_ply(tmp_path):
    from plyfile import PlyData, PlyElement

    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=1)
    vertex = np.array(
        [(1.0, 2.0, 3.0, 10, 20, 30), (-1.0, 0.5, 2.0, 200, 100, 0)],
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
        ],
    )
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(folder / "sparse_pc.ply"))
    meta = json.loads((folder / "transforms.json").read_text())
    meta["ply_file_path"] = "sparse_pc.ply"
    (folder / "transforms.json").write_text(json.dumps(meta))
    capture = load_capture(folder)
    np.testing.assert_array_equal(capture.points, [[1, 2, 3], [-1, 0.5, 2]])
    np.testing.assert_array_equal(capture.colors, [[10, 20, 30], [200, 100, 0]])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m["frames"][0].update(transform_matrix=[[math.nan] * 4] * 4), "NaN"),
        (
            lambda m: m["frames"][0].update(transform_matrix=np.diag([2.0, 2, 2, 1]).tolist()),
            "rotation",
        ),
        (lambda m: m.update(w=40), r"frame_0000\d.png: image is 32x24 but w, h say 40x24"),
        (lambda m: m.update(frames=[]), "'frames' list is empty"),
        (lambda m: [m.pop(k) for k in ("fl_x", "fl_y")], "no focal length"),
        (lambda m: m.update(camera_model="OPENCV_FISHEYE"), "OPENCV_FISHEYE.*not supported"),
    ],
)
def test_transforms_json_errors_name_the_problem(tmp_path, change, match):
    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=2)
    meta = json.loads((folder / "transforms.json").read_text())
    change(meta)
    (folder / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match=match) as info:
        load_capture(folder)
    assert isinstance(info.value, LyraError) and isinstance(info.value, ValueError)


def test_unreadable_image_and_json_are_errors(tmp_path):
    folder, _, _ = _simple_nerfstudio(tmp_path / "cap", count=1)
    (folder / "images" / "frame_00000.png").write_bytes(b"not a png")
    with pytest.raises(CaptureError, match=r"cannot read the image file .*frame_00000.png"):
        load_capture(folder)
    (folder / "transforms.json").write_text("{")
    with pytest.raises(CaptureError, match=r"transforms.json: cannot read the JSON"):
        load_capture(folder)


# --------------------------------------------------------------------------------------------
# COLMAP
# --------------------------------------------------------------------------------------------


def _write_colmap_text(
    model: Path, cameras: list[str], images: list[str], points: list[str]
) -> None:
    model.mkdir(parents=True, exist_ok=True)
    (model / "cameras.txt").write_text("# cameras\n" + "\n".join(cameras) + "\n")
    (model / "images.txt").write_text("# images\n" + "".join(f"{line}\n\n" for line in images))
    (model / "points3D.txt").write_text("# points\n" + "\n".join(points) + "\n")


def _colmap_project(tmp_path: Path):
    """project/sparse/0 (text) with a PINHOLE and an OPENCV camera; project/images.

    Returns (project, {name: (cam_from_world 4x4, camera id)}, pycolmap cameras)."""
    import pycolmap

    width, height = 160, 120
    cameras = [
        f"1 PINHOLE {width} {height} 100.0 102.0 80.0 60.0",
        f"2 OPENCV {width} {height} 110.0 112.0 81.8 59.1 -0.25 0.07 0.002 -0.003",
    ]
    rng = _rng(3)
    poses, image_lines = {}, []
    for image_id, (name, camera_id) in enumerate([("b.png", 2), ("a.png", 1), ("c.png", 1)], 1):
        cam_from_world = _pose(rng.normal(size=3) * 0.2, rng.normal(size=3))
        qx, qy, qz, qw = Rotation.from_matrix(cam_from_world[:3, :3]).as_quat()
        t = cam_from_world[:3, 3]
        image_lines.append(
            f"{image_id} {qw} {qx} {qy} {qz} {t[0]} {t[1]} {t[2]} {camera_id} {name}"
        )
        poses[name] = (cam_from_world, camera_id)
    points = ["1 0.5 0.25 3.0 255 128 0 0.5", "2 -0.5 0.25 4.0 10 20 30 0.5"]
    project = tmp_path / "project"
    _write_colmap_text(project / "sparse" / "0", cameras, image_lines, points)
    model = pycolmap.Reconstruction(str(project / "sparse" / "0"))
    for name, (cam_from_world, camera_id) in poses.items():
        camtoworld = np.linalg.inv(cam_from_world)
        world = _dot_grid(camtoworld)
        cam = world @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        pixels = model.cameras[camera_id].img_from_cam(cam) - 0.5  # COLMAP -> OpenCV centres
        _write_png(project / "images" / name, _dot_image(pixels, width, height))
    return project, poses


def test_colmap_text_model_reads_poses_points_and_undistorts(tmp_path):
    project, poses = _colmap_project(tmp_path)
    capture = load_capture(project)
    assert capture.source_format == "colmap"
    assert capture.path == project / "sparse" / "0"
    assert [f.name for f in capture.frames] == ["a.png", "b.png", "c.png"]
    np.testing.assert_allclose(capture.points, [[0.5, 0.25, 3.0], [-0.5, 0.25, 4.0]])
    np.testing.assert_array_equal(capture.colors, [[255, 128, 0], [10, 20, 30]])
    assert capture.colors.dtype == np.uint8
    for frame in capture.frames:
        cam_from_world, camera_id = poses[frame.name]
        np.testing.assert_allclose(frame.camtoworld, np.linalg.inv(cam_from_world), atol=1e-6)
        if camera_id == 1:  # COLMAP's principal point is shifted by half a pixel
            assert frame.intrinsics == Intrinsics(100.0, 102.0, 79.5, 59.5, 160, 120)
        errors = _dot_errors(frame, _dot_grid(np.linalg.inv(cam_from_world)))
        assert errors.max() < 0.2, (frame.name, errors)


def test_colmap_binary_model_and_image_dir(tmp_path):
    import pycolmap

    project, poses = _colmap_project(tmp_path)
    binary = tmp_path / "bin"
    binary.mkdir()
    pycolmap.Reconstruction(str(project / "sparse" / "0")).write_binary(str(binary))
    with pytest.raises(CaptureError, match="image folder"):
        read_colmap(binary)
    capture = load_capture(binary, image_dir=project / "images", downscale=2)
    assert len(capture.frames) == 3 and capture.points.shape == (2, 3)
    frame = capture.frames[0]
    assert frame.intrinsics == Intrinsics(100.0, 102.0, 79.5, 59.5, 160, 120).resize(80, 60)
    np.testing.assert_allclose(frame.camtoworld, np.linalg.inv(poses["a.png"][0]), atol=1e-6)


def test_colmap_missing_image_wrong_size_and_unsupported_model(tmp_path):
    project, _ = _colmap_project(tmp_path)
    (project / "images" / "c.png").unlink()
    with pytest.warns(UserWarning, match="skipped 1 of 3 .*image file missing.*c.png"):
        capture = read_colmap(project)
    assert capture.skipped == 1 and len(capture.frames) == 2
    _write_png(project / "images" / "c.png", np.zeros((100, 160, 3), np.uint8))
    with pytest.raises(
        CaptureError, match=r"c.png: image is 160x100 but COLMAP camera 1 is 160x120"
    ):
        read_colmap(project)
    cameras = (project / "sparse" / "0" / "cameras.txt").read_text()
    cameras = cameras.replace(
        "2 OPENCV 160 120 110.0 112.0", "2 OPENCV_FISHEYE 160 120 110.0 112.0"
    )
    (project / "sparse" / "0" / "cameras.txt").write_text(cameras)
    with pytest.raises(
        CaptureError, match="camera 2: camera model OPENCV_FISHEYE is not supported"
    ):
        read_colmap(project)


# --------------------------------------------------------------------------------------------
# ROS 2 bags
# --------------------------------------------------------------------------------------------

EPOCH = 1_700_000_000  # seconds: realistic ROS stamps
T_BASE_CAM = _pose((0.0, 0.0, 0.0), (0.1, 0.0, 0.2))
T_BASE_CAM[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # REP 103 optical
IMAGE_TIMES = (-0.5, 0.5, 1.0, 1.5, 2.5)  # seconds after EPOCH; tf covers [0, 3]
TF_TIMES = (0.0, 1.0, 2.0, 3.0)
CAMERA_K = (40.0, 41.0, 15.5, 11.5)


def _map_base(t: float) -> np.ndarray:
    return _pose((0.0, 0.0, 0.1 * t), (t, 0.2 * t, 0.0))


def _write_bag(
    path: Path,
    storage: str,
    *,
    colour: str = "rgb8",
    with_info: bool = True,
    d=(0.0,) * 5,
    info_width: int = 32,
):
    """A bag with rgb images, registered 16UC1 depth, camera_info, /tf and /tf_static.

    Returns {time: (rgb, depth meters)} of the images written."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]

    def header(t: float, frame: str):
        ns = EPOCH * 10**9 + round(t * 1e9)
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame)

    def transform(t: float, parent: str, child: str, matrix: np.ndarray):
        qx, qy, qz, qw = Rotation.from_matrix(matrix[:3, :3]).as_quat()
        x, y, z = matrix[:3, 3]
        return T["geometry_msgs/msg/TransformStamped"](
            header=header(t, parent),
            child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
            ),
        )

    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    rng = _rng(4)
    written = {}
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {
            topic: writer.add_connection(topic, msgtype, typestore=ts)
            for topic, msgtype in [
                ("/tf_static", "tf2_msgs/msg/TFMessage"),
                ("/tf", "tf2_msgs/msg/TFMessage"),
                ("/cam/image_raw", "sensor_msgs/msg/Image"),
                ("/cam/depth", "sensor_msgs/msg/Image"),
                ("/cam/camera_info", "sensor_msgs/msg/CameraInfo"),
            ]
        }

        def write(topic: str, t: float, msg) -> None:
            stamp = EPOCH * 10**9 + round(t * 1e9)
            writer.write(conns[topic], stamp, ts.serialize_cdr(msg, msg.__msgtype__))

        tf_static = T["tf2_msgs/msg/TFMessage"](
            transforms=[transform(-1.0, "base_link", "cam_optical", T_BASE_CAM)]
        )
        write("/tf_static", -1.0, tf_static)
        events = [(t, "tf") for t in TF_TIMES] + [(t, "image") for t in IMAGE_TIMES]
        for t, kind in sorted(events):
            if kind == "tf":
                msg = T["tf2_msgs/msg/TFMessage"](
                    transforms=[transform(t, "map", "base_link", _map_base(t))]
                )
                write("/tf", t, msg)
                continue
            rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            mm = rng.integers(300, 6000, (24, 32)).astype(np.uint16)
            data = rgb if colour == "rgb8" else rgb[..., ::-1]
            write(
                "/cam/image_raw",
                t,
                T["sensor_msgs/msg/Image"](
                    header=header(t, "cam_optical"),
                    height=24,
                    width=32,
                    encoding=colour,
                    is_bigendian=0,
                    step=96,
                    data=np.ascontiguousarray(data).reshape(-1),
                ),
            )
            write(
                "/cam/depth",
                t + 0.004,  # depth a few ms after the colour image
                T["sensor_msgs/msg/Image"](
                    header=header(t + 0.004, "cam_optical"),
                    height=24,
                    width=32,
                    encoding="16UC1",
                    is_bigendian=0,
                    step=64,
                    data=mm.astype("<u2").view(np.uint8).reshape(-1),
                ),
            )
            if with_info:
                fx, fy, cx, cy = CAMERA_K
                info = T["sensor_msgs/msg/CameraInfo"](
                    header=header(t, "cam_optical"),
                    height=24,
                    width=info_width,
                    distortion_model="plumb_bob",
                    d=np.array(d, dtype=np.float64),
                    k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]),
                    r=np.eye(3).reshape(-1),
                    p=np.array([38.0, 0, 15.0, 0, 0, 39.0, 11.0, 0, 0, 0, 1.0, 0]),
                    binning_x=0,
                    binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](
                        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                    ),
                )
                write("/cam/camera_info", t, info)
            written[t] = (rgb, mm.astype(np.float32) * np.float32(1e-3))
    return written


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag_reads_images_depth_and_tf_poses(tmp_path, storage):
    bag = tmp_path / "bag"
    written = _write_bag(bag, storage)
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 image\(s\): no pose of 'cam_optical'"):
        capture = load_capture(bag, depth_topic="/cam/depth")
    assert capture.source_format == "rosbag" and capture.skipped == 1
    times = [t for t in IMAGE_TIMES if t >= 0]
    assert [f.stamp for f in capture.frames] == pytest.approx([EPOCH + t for t in times], abs=1e-6)
    assert capture.frames[0].name == "/cam/image_raw@1700000000.500000000"
    for frame, t in zip(capture.frames, times, strict=True):
        rgb, depth = written[t]
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_array_equal(frame.depth, depth)
        assert frame.intrinsics == Intrinsics(*CAMERA_K, 32, 24)
        # tf interpolation: translation linear, yaw 0.1 rad/s slerped; world = tf root "map".
        np.testing.assert_allclose(frame.camtoworld, _map_base(t) @ T_BASE_CAM, atol=1e-9)


def test_rosbag_single_mcap_file_bgr_stride_and_options(tmp_path):
    bag = tmp_path / "bag"
    written = _write_bag(bag, "mcap", colour="bgr8")
    (mcap,) = bag.glob("*.mcap")
    assert detect_capture_format(mcap) == "rosbag"
    capture = load_capture(mcap, world_frame="base_link", stride=2, downscale=2)
    # images 0, 2, 4 of the topic: -0.5 s, 1.0 s, 2.5 s; base_link -> camera is static.
    assert [round(f.stamp - EPOCH, 3) for f in capture.frames] == [-0.5, 1.0, 2.5]
    for frame in capture.frames:
        np.testing.assert_allclose(frame.camtoworld, T_BASE_CAM, atol=1e-12)
        assert frame.depth is None
        assert frame.intrinsics == Intrinsics(*CAMERA_K, 32, 24).resize(16, 12)
        rgb = written[round(frame.stamp - EPOCH, 3)][0]
        np.testing.assert_array_equal(
            frame.rgb, cv2.resize(rgb, (16, 12), interpolation=cv2.INTER_AREA)
        )
    # A REP 103 body frame as the camera frame: the optical axes are applied on top.
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        body = load_capture(mcap, camera_frame="base_link", camera_frame_is_optical=False)
    body_to_optical = T_BASE_CAM.copy()
    body_to_optical[:3, 3] = 0.0
    np.testing.assert_allclose(
        body.frames[0].camtoworld, _map_base(0.5) @ body_to_optical, atol=1e-9
    )


def test_rosbag_camera_info_distortion_and_rectified(tmp_path):
    bag = tmp_path / "bag"
    d = (-0.2, 0.05, 0.001, 0.002, 0.0)
    _write_bag(bag, "mcap", d=d)
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        frame = load_capture(bag).frames[0]
    fx, fy, cx, cy = CAMERA_K
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    new_K, _ = cv2.getOptimalNewCameraMatrix(K, np.array(d), (32, 24), 0.0, (32, 24))
    assert frame.intrinsics == Intrinsics.from_matrix(new_K, 32, 24)
    assert frame.intrinsics != Intrinsics(*CAMERA_K, 32, 24)
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        rect = load_capture(bag, rectified=True).frames[0]
    assert rect.intrinsics == Intrinsics(38.0, 39.0, 15.0, 11.0, 32, 24)


def test_rosbag_injected_lookup(tmp_path):
    bag = tmp_path / "bag"
    _write_bag(bag, "sqlite3")
    calls = []
    options = {"depth_topic": "/cam/depth", "max_depth_offset": 0.001}  # depth comes 4 ms late

    def lookup(target: str, source: str, stamp: float) -> np.ndarray:
        calls.append((target, source, stamp))
        if stamp < EPOCH:
            raise LookupError("before the trajectory")
        return _pose(translation=(stamp - EPOCH, 0.0, 0.0))

    with pytest.raises(CaptureError, match="world_frame is required"):
        read_rosbag(bag, lookup=lookup)
    with (
        pytest.warns(UserWarning, match="skipped 1 of 5"),
        pytest.warns(UserWarning, match="/cam/depth: kept without depth 4 of 5 .* within 0.001 s"),
    ):
        capture = read_rosbag(bag, lookup=lookup, world_frame="odom", **options)
    assert all(frame.depth is None for frame in capture.frames)
    assert calls[0] == ("odom", "cam_optical", pytest.approx(EPOCH - 0.5))
    np.testing.assert_allclose(
        [f.camtoworld[0, 3] for f in capture.frames], [0.5, 1, 1.5, 2.5], atol=1e-6
    )


def test_rosbag_errors_name_topics_and_frames(tmp_path):
    bag = tmp_path / "bag"
    _write_bag(bag, "mcap")
    with pytest.raises(
        CaptureError, match=r"no image topic '/cam/colour' \(topics: /cam/camera_info"
    ):
        load_capture(bag, image_topic="/cam/colour")
    with pytest.raises(CaptureError, match="no depth topic '/cam/aligned'"):
        load_capture(bag, depth_topic="/cam/aligned")
    with pytest.raises(CaptureError, match="image topic '/tf' has type tf2_msgs/msg/TFMessage"):
        load_capture(bag, image_topic="/tf")
    with pytest.raises(CaptureError, match="frame 'odom' is not on /tf or /tf_static"):
        load_capture(bag, world_frame="odom")
    with pytest.raises(CaptureError, match=r"option.*image_dir do not apply to a rosbag capture"):
        load_capture(bag, image_dir="x")
    bag2 = tmp_path / "no_info"
    _write_bag(bag2, "mcap", with_info=False)
    with pytest.raises(CaptureError, match="no message on /cam/camera_info"):
        load_capture(bag2)
    bag3 = tmp_path / "wide_info"
    _write_bag(bag3, "mcap", info_width=40)
    match = r"@1700000000.500000000 \(/cam/camera_info\): image is 32x24 but the camera is 40x24"
    with pytest.raises(CaptureError, match=match):
        load_capture(bag3)


def _image_msg(encoding: str, array: np.ndarray, step: int | None = None, bigendian: bool = False):
    height, width = array.shape[:2]
    rows = array.reshape(height, -1).view(np.uint8)
    step = step or rows.shape[1]
    data = np.zeros((height, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return types.SimpleNamespace(
        encoding=encoding,
        height=height,
        width=width,
        step=step,
        is_bigendian=int(bigendian),
        data=data.reshape(-1),
    )


def test_image_decoding_padding_bayer_and_depth_encodings():
    decode, decode_depth = rosbag_module._decode_colour, rosbag_module._decode_depth
    rgb = _rng(5).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    padded = _image_msg("rgb8", rgb, step=24)  # 21 bytes of pixels + 3 of padding per row
    np.testing.assert_array_equal(decode(padded, "sensor_msgs/msg/Image", "/c"), rgb)
    mosaic = np.empty((8, 8), np.uint8)  # RGGB: R at (0, 0), B at (1, 1)
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = 200, 50
    mosaic[0::2, 1::2] = mosaic[1::2, 0::2] = 100
    out = decode(_image_msg("bayer_rggb8", mosaic), "sensor_msgs/msg/Image", "/c")
    np.testing.assert_array_equal(out[3:5, 3:5].reshape(-1, 3), [[200, 100, 50]] * 4)
    mm = np.array([[0, 1000], [2500, 65535]], dtype=">u2")
    depth = decode_depth(_image_msg("16UC1", mm, bigendian=True), "sensor_msgs/msg/Image", "/d")
    np.testing.assert_allclose(depth, [[0, 1.0], [2.5, 65.535]], rtol=1e-6)
    meters = np.array([[np.nan, 1.25], [-1.0, 3.0]], dtype="<f4")
    depth = decode_depth(_image_msg("32FC1", meters), "sensor_msgs/msg/Image", "/d")
    np.testing.assert_array_equal(depth, [[0, 1.25], [0, 3.0]])
    # compressed_depth_image_transport: 12-byte header, then a 16-bit PNG in millimetres.
    _, png = cv2.imencode(".png", np.array([[0, 1500]], dtype=np.uint16))
    msg = types.SimpleNamespace(
        format="16UC1; compressedDepth png",
        data=np.concatenate([np.zeros(12, np.uint8), png.reshape(-1)]),
    )
    np.testing.assert_allclose(
        decode_depth(msg, "sensor_msgs/msg/CompressedImage", "/d"), [[0, 1.5]]
    )
    _, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = types.SimpleNamespace(format="png", data=png.reshape(-1))
    np.testing.assert_array_equal(decode(msg, "sensor_msgs/msg/CompressedImage", "/c"), rgb)
    with pytest.raises(CaptureError, match="/c: unsupported image encoding 'yuv422'"):
        decode(_image_msg("yuv422", rgb[..., :2].copy()), "sensor_msgs/msg/Image", "/c")
    with pytest.raises(CaptureError, match="/d: unsupported depth encoding 'rgb8'"):
        decode_depth(_image_msg("rgb8", rgb), "sensor_msgs/msg/Image", "/d")


# --------------------------------------------------------------------------------------------
# Detection, split
# --------------------------------------------------------------------------------------------


def test_detect_capture_format_and_unknown_inputs(tmp_path):
    with pytest.raises(CaptureError, match="no such file or folder"):
        detect_capture_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptureError, match="empty: unknown capture format"):
        load_capture(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CaptureError, match="unknown capture format"):
        load_capture(tmp_path / "notes.txt")
    with pytest.raises(CaptureError, match="unknown capture format 'ply'"):
        load_capture(tmp_path, format="ply")
    project, _ = _colmap_project(tmp_path / "c")
    assert detect_capture_format(project) == "colmap"
    assert detect_capture_format(project / "sparse" / "0") == "colmap"
    folder, _, _ = _simple_nerfstudio(tmp_path / "n")
    assert detect_capture_format(folder) == "transforms_json"
    with pytest.raises(CaptureError, match="image_topic do not apply to a transforms_json"):
        load_capture(folder, image_topic="/x")


def test_split_holdout_every_eighth():
    frames = [types.SimpleNamespace(name=f"f{i:02d}", stamp=float(20 - i)) for i in range(20)]
    train, heldout = split_holdout(frames)
    assert [f.name for f in heldout] == ["f00", "f08", "f16"]
    assert len(train) == 17 and not {f.name for f in train} & {"f00", "f08", "f16"}
    train, heldout = split_holdout(frames, every=8, sort_by="stamp")
    assert [f.name for f in heldout] == ["f19", "f11", "f03"]
    with pytest.raises(ValueError, match="every"):
        split_holdout(frames, every=1)
    capture = Capture(frames=frames[:9])  # type: ignore[arg-type]
    assert [f.name for f in capture.split()[1]] == ["f00", "f08"]
