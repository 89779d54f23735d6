"""COLMAP sparse models (text or binary), read with ``pycolmap``.

* Cameras: ``SIMPLE_PINHOLE``, ``PINHOLE``, ``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV`` and
  ``FULL_OPENCV``. COLMAP puts pixel ``(0, 0)``'s centre at ``(0.5, 0.5)``; the principal point
  is shifted by ``-0.5`` into the OpenCV convention of
  :class:`~lyra_core.geometry.cameras.Intrinsics`. Distorted models are undistorted with OpenCV
  (same distortion polynomials as COLMAP) onto a pinhole camera of the same size. Fisheye and
  other models are rejected.
* Images: COLMAP stores world-to-camera ``(q, t)`` in its camera frame, which is OpenCV's
  (x right, y down, z forward); ``camtoworld`` is its rigid inverse. Images without a pose or
  without a file on disk are skipped with a warning.
* ``points3D``: ``(N, 3)`` positions and their colours, the initial points of a world.

Layouts: ``path`` is the model folder itself (``cameras.bin``/``cameras.txt`` ...) or a project
folder holding ``sparse/0``, ``sparse`` or ``colmap/sparse/0`` (nerfstudio). Images are looked up
in ``image_dir`` when given, else in the first existing ``images/`` folder beside the model
(``<project>/images`` for ``<project>/sparse/0``). With ``downscale=N`` a sibling ``images_N``
folder holding the image is used when it exists (nerfstudio's convention), else the full image
is shrunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lyra_core.data.captures.common import (
    Capture,
    CaptureFrame,
    SkipLog,
    check_downscale,
    check_pose,
    finish_frame,
    intrinsics_or_error,
    read_rgb_file,
    shrunk_intrinsics,
)
from lyra_core.geometry.cameras import Intrinsics
from lyra_core.geometry.transforms import rigid_inverse
from lyra_core.utils.errors import CaptureError

__all__ = ["SUPPORTED_MODELS", "find_colmap_model", "read_colmap"]

_MODEL_FILES = ("cameras", "images", "points3D")

#: Parameter order of each supported COLMAP camera model:
#: ``(fx, fy, cx, cy, distortion)`` indices into ``camera.params``, distortion in OpenCV order.
SUPPORTED_MODELS: dict[str, tuple[int, int, int, int, tuple[int, ...]]] = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2, ()),
    "PINHOLE": (0, 1, 2, 3, ()),
    "SIMPLE_RADIAL": (0, 0, 1, 2, (3,)),
    "RADIAL": (0, 0, 1, 2, (3, 4)),
    "OPENCV": (0, 1, 2, 3, (4, 5, 6, 7)),
    "FULL_OPENCV": (0, 1, 2, 3, (4, 5, 6, 7, 8, 9, 10, 11)),
}


def _is_model(folder: Path) -> bool:
    return all(
        (folder / f"{name}.bin").is_file() or (folder / f"{name}.txt").is_file()
        for name in _MODEL_FILES
    )


def find_colmap_model(path: Path) -> Path | None:
    """The sparse-model folder for ``path`` (itself, ``sparse/0``, ``sparse`` or
    ``colmap/sparse/0``), or None."""
    if path.is_file() and path.parent.name and _is_model(path.parent):
        return path.parent
    for folder in (path, path / "sparse" / "0", path / "sparse", path / "colmap" / "sparse" / "0"):
        if folder.is_dir() and _is_model(folder):
            return folder
    return None


def _image_dir(model: Path) -> Path | None:
    """The usual image folder of a model: ``<project>/images`` for ``<project>/sparse/0`` (or
    nerfstudio's ``<project>/colmap/sparse/0``), else ``images/`` beside or inside the model."""
    candidates = []
    if model.parent.name == "sparse":
        candidates.append(model.parent.parent / "images")
        if model.parent.parent.name == "colmap":
            candidates.append(model.parents[2] / "images")
    candidates += [model.parent / "images", model / "images"]
    return next((folder for folder in candidates if folder.is_dir()), None)


def read_colmap(
    path: str | Path, *, image_dir: str | Path | None = None, downscale: int = 1
) -> Capture:
    """Read a COLMAP sparse model and its images (module docstring for the conventions).

    Args:
        path: the model folder or a project folder (module docstring).
        image_dir: the folder the model's image names are relative to; default: ``images/``
            beside the model.
        downscale: integer factor to shrink the images by (1: full size).

    Returns:
        The :class:`Capture`, frames sorted by image name (``stamp`` = index in that order),
        ``points``/``colors`` from ``points3D`` (None when the model has no points).

    Raises:
        CaptureError: no model at ``path``, a model pycolmap cannot read, an unsupported camera
            model, no image folder, an image whose size differs from its camera, or no image
            with both a pose and a file.
    """
    import pycolmap

    downscale = check_downscale(downscale)
    path = Path(path)
    model = find_colmap_model(path)
    if model is None:
        raise CaptureError(
            f"{path}: no COLMAP model found (cameras, images and points3D .bin/.txt in the "
            "folder itself, sparse/0, sparse or colmap/sparse/0)"
        )
    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # pycolmap raises ValueError/RuntimeError from its C++ checks
        raise CaptureError(f"{model}: pycolmap cannot read the COLMAP model: {exc}") from None
    images_root = Path(image_dir) if image_dir is not None else _image_dir(model)
    if images_root is None or not images_root.is_dir():
        tried = images_root or model.parent.parent / "images"
        raise CaptureError(f"{model}: image folder {tried} not found (pass image_dir)")

    cameras = {
        camera_id: _camera(camera, f"{model}: camera {camera_id}")
        for camera_id, camera in reconstruction.cameras.items()
    }
    images = sorted(reconstruction.images.values(), key=lambda image: image.name)
    if not images:
        raise CaptureError(f"{model}: the model holds no images")
    small_root = images_root.parent / f"{images_root.name}_{downscale}"
    skips = SkipLog(str(model))
    frames: list[CaptureFrame] = []
    for index, image in enumerate(images):
        name = image.name
        if not image.has_pose:
            skips.add("no pose in the model", name)
            continue
        file = images_root / name
        if not file.is_file():
            skips.add(f"image file missing in {images_root}", name)
            continue
        intrinsics, distortion = cameras[image.camera_id]
        small = small_root / name if downscale > 1 else None
        use_small = small is not None and small.is_file()
        rgb = read_rgb_file(small if use_small else file, label=f"{model}: {name}")
        if use_small:
            intrinsics = shrunk_intrinsics(intrinsics, rgb, downscale, small)
        elif rgb.shape[:2] != (intrinsics.height, intrinsics.width):
            raise CaptureError(
                f"{file}: image is {rgb.shape[1]}x{rgb.shape[0]} but COLMAP camera "
                f"{image.camera_id} is {intrinsics.width}x{intrinsics.height}"
            )
        cam_from_world = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])
        camtoworld = rigid_inverse(check_pose(f"{model}: {name}", cam_from_world))
        rgb, _, intrinsics = finish_frame(
            rgb, None, intrinsics, distortion, 1 if use_small else downscale, name
        )
        frames.append(CaptureFrame(rgb, intrinsics, camtoworld, None, float(index), name))
    skips.warn(len(images))
    if not frames:
        raise CaptureError(
            f"{model}: no usable frame: none of the {len(images)} image(s) has both a pose and "
            f"a file in {images_root}"
        )
    points = colors = None
    if reconstruction.num_points3D():
        values = [point for _, point in sorted(reconstruction.points3D.items())]
        points = np.array([p.xyz for p in values], dtype=np.float32).reshape(-1, 3)
        colors = np.array([p.color for p in values], dtype=np.uint8).reshape(-1, 3)
        if not np.isfinite(points).all():
            raise CaptureError(f"{model}: points3D contain NaN or inf")
    return Capture(frames, points, colors, "colmap", skips.count, model)


def _camera(camera: object, label: str) -> tuple[Intrinsics, tuple[float, ...]]:
    """OpenCV-convention intrinsics and distortion of a ``pycolmap.Camera``."""
    model = camera.model.name  # type: ignore[attr-defined]
    if model not in SUPPORTED_MODELS:
        raise CaptureError(
            f"{label}: camera model {model} is not supported "
            f"(supported: {', '.join(SUPPORTED_MODELS)})"
        )
    fx, fy, cx, cy, dist = SUPPORTED_MODELS[model]
    params = np.asarray(camera.params, dtype=np.float64)  # type: ignore[attr-defined]
    intrinsics = intrinsics_or_error(
        label,
        params[fx],
        params[fy],
        params[cx] - 0.5,
        params[cy] - 0.5,
        camera.width,  # type: ignore[attr-defined]
        camera.height,  # type: ignore[attr-defined]
    )
    coeffs = [float(params[i]) for i in dist]
    if model in ("SIMPLE_RADIAL", "RADIAL"):
        k1, k2 = (*coeffs, 0.0)[:2]
        coeffs = [k1, k2, 0.0, 0.0]  # no tangential terms
    return intrinsics, tuple(coeffs)
