"""``lyra world``: one camera frame to a Gaussian world, with the node's own builder.

    lyra world --image photo.png --depth depth.png --intrinsics 525,525,319.5,239.5 \\
        --out world.ply                                  # depth source, occlusion fill on
    lyra world --image photo.png --depth depth.png --intrinsics 525,525,319.5,239.5 \\
        --orient normal --fill-border 32 --out world.ply # surface discs, wider fill
    lyra world --image photo.png --intrinsics 525,525,319.5,239.5 --source lyra \\
        --lyra-checkpoint shipped --out world.ply        # the learned student, anchored

Depth is a 16-bit PNG in millimetres (0: unknown; the usual RGB-D camera format) or a ``.npy``
array in meters, registered to the image. The camera is the world origin (OpenCV axes: x right,
y down, z forward) unless ``--pose`` gives its camera-to-world pose. The builder is
:class:`lyra_core.mapping.world_builder.WorldBuilder`, the same as the ROS node's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.mapping.world_builder import (
    FILL_BORDER,
    WORLD_SOURCES,
    BuildOptions,
    WorldBuilder,
)
from lyra_core.scene.ply import write_ply
from lyra_core.scene.rgbd import ORIENTATIONS
from lyra_core.utils.errors import WorldBuildError

__all__ = ["build_parser", "main", "read_depth", "read_image"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra world``."""
    parser = argparse.ArgumentParser(
        prog="lyra world",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--image", type=Path, required=True, help="colour image (PNG, JPEG, ...)")
    parser.add_argument(
        "--depth",
        type=Path,
        help="registered depth: 16-bit PNG in millimetres or .npy in meters (needed by 'depth')",
    )
    parser.add_argument(
        "--intrinsics",
        required=True,
        help="fx,fy,cx,cy in pixels (OpenCV: the centre of pixel (u, v) is at (u, v))",
    )
    parser.add_argument(
        "--pose",
        type=Path,
        help="camera-to-world pose: a .npy or text file with a 4x4 matrix (default: identity)",
    )
    parser.add_argument(
        "--source", choices=WORLD_SOURCES, default="auto", help="world source (default: auto)"
    )
    parser.add_argument(
        "--fill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a background layer behind depth edges (depth source; default: on)",
    )
    parser.add_argument(
        "--fill-border",
        type=int,
        default=FILL_BORDER,
        help="pixels the fill extends the frame by on every side, replicating its edge, so "
        "views turned off the input pose show no empty margin (default %(default)s)",
    )
    parser.add_argument(
        "--orient",
        choices=ORIENTATIONS,
        default=BuildOptions.orient,
        help="depth Gaussians: discs facing the camera, or lying in the surface along the depth "
        "map's normals (default: %(default)s)",
    )
    parser.add_argument(
        "--stride", type=int, default=1, help="keep every n-th depth pixel per axis (default 1)"
    )
    parser.add_argument(
        "--max-depth", type=float, default=20.0, help="farthest valid depth, meters (0: no limit)"
    )
    parser.add_argument(
        "--lyra-checkpoint",
        default="",
        help="student folder for the lyra source, or 'shipped' for the packaged tiny student",
    )
    parser.add_argument(
        "--assumed-depth",
        type=float,
        default=3.0,
        help="lyra without depth: distance of the fronto-parallel plane, meters",
    )
    parser.add_argument("--out", type=Path, required=True, help="output PLY (written atomically)")
    return parser


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; raises WorldBuildError for a missing or unreadable file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise WorldBuildError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: Path) -> np.ndarray:
    """(H, W) float32 meters from a 16-bit PNG in millimetres or a .npy in meters."""
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise WorldBuildError(f"{path}: not a readable .npy depth array ({err})") from err
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise WorldBuildError(f"{path}: depth must be a 2D numeric array, got {depth.shape}")
        return depth.astype(np.float32)
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise WorldBuildError(f"{path}: not a readable depth image")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise WorldBuildError(
            f"{path}: depth PNG must be single-channel 16-bit millimetres, got {depth.dtype} "
            f"with shape {depth.shape}"
        )
    return depth.astype(np.float32) / 1000.0


def _intrinsics(text: str, width: int, height: int) -> Intrinsics:
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
        return Intrinsics(fx, fy, cx, cy, width, height)
    except ValueError as err:
        raise WorldBuildError(f"--intrinsics must be fx,fy,cx,cy with fx, fy > 0 ({err})") from err


def _pose(path: Path | None) -> np.ndarray:
    if path is None:
        return np.eye(4)
    try:
        pose = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
    except (OSError, ValueError) as err:
        raise WorldBuildError(f"{path}: not a readable 4x4 pose ({err})") from err
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise WorldBuildError(f"{path}: the pose must be a finite 4x4 matrix")
    return pose


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rgb = read_image(args.image)
    height, width = rgb.shape[:2]
    depth = read_depth(args.depth) if args.depth is not None else None
    options = BuildOptions(
        source=args.source,
        depth_stride=args.stride,
        max_depth=args.max_depth,
        lyra_checkpoint=args.lyra_checkpoint,
        lyra_assumed_depth=args.assumed_depth,
        fill_occlusions=args.fill,
        fill_border=args.fill_border,
        orient=args.orient,
    )
    built = WorldBuilder().build(
        rgb, depth, _intrinsics(args.intrinsics, width, height), _pose(args.pose), options
    )
    write_ply(args.out, built.gaussians)
    summary = {
        "out": str(args.out),
        "source": built.source,
        "gaussians": len(built.gaussians),
        "seconds": round(built.seconds, 3),
        "stages": {k: round(v, 3) for k, v in built.stages.items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
