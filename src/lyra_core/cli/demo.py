"""Core demo: build a Gaussian world, fly the six Lyra camera trajectories through it, render.

Writes to ``--out`` (default ``outputs/demo``):

- ``world.ply``: the scene in the standard 3DGS PLY layout (opens in splat viewers);
- ``trajectories_rgb.png`` / ``trajectories_depth.png``: contact sheets, one row per trajectory;
- ``trajectories.gif`` and ``trajectories.mp4``: every rendered frame;
- ``summary.json``: sizes, timings and the render rate.

Run: ``lyra demo`` (options: ``lyra demo --help``); ``scripts/demo.sh`` runs the ROS demo instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.trajectories import lyra_trajectories, waypoint_trajectory
from lyra_core.geometry.transforms import look_at
from lyra_core.rendering import RenderOutput, render
from lyra_core.scene.ply import write_ply
from lyra_core.scene.procedural_room import procedural_room
from lyra_core.utils.media import (
    colorize_depth,
    contact_sheet,
    to_uint8,
    write_gif,
    write_mp4,
    write_png,
    write_text,
)

INPUT_EYE = (0.0, -2.4, 1.3)
INPUT_TARGET = (0.0, 1.0, 0.9)
WORLD_UP = (0.0, 0.0, 1.0)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lyra demo``."""
    parser = argparse.ArgumentParser(
        prog="lyra demo", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument(
        "--gaussians", type=int, default=100_000, help="number of Gaussians in the room"
    )
    parser.add_argument("--width", type=int, default=320, help="image width, pixels")
    parser.add_argument("--height", type=int, default=240, help="image height, pixels")
    parser.add_argument("--fov", type=float, default=1.1, help="vertical field of view, radians")
    parser.add_argument("--frames", type=int, default=25, help="frames per trajectory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the room and trajectories")
    parser.add_argument(
        "--backend", default="auto", help="renderer: auto, gsplat, torch or reference"
    )
    parser.add_argument("--batch", type=int, default=5, help="cameras rendered per call")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def render_path(
    scene, camtoworlds: torch.Tensor, intrinsics: Intrinsics, args, label: str
) -> RenderOutput:
    """Render (N, 4, 4) poses in batches with a progress bar; outputs concatenated on the CPU."""
    parts = []
    for start in tqdm(range(0, len(camtoworlds), args.batch), desc=f"render {label:>9}"):
        cams = Cameras.from_intrinsics(camtoworlds[start : start + args.batch], intrinsics)
        with torch.inference_mode():
            out = render(scene, cams.to(args.device), backend=args.backend, background=(1, 1, 1))
        parts.append(out)
    return RenderOutput(
        rgb=torch.cat([p.rgb.cpu() for p in parts]),
        alpha=torch.cat([p.alpha.cpu() for p in parts]),
        depth=torch.cat([p.depth.cpu() for p in parts]),
        backend=parts[0].backend,
    )


def tour_waypoints(input_pose: torch.Tensor) -> torch.Tensor:
    """A custom path through the room (waypoints for :func:`waypoint_trajectory`)."""
    stops = [
        (INPUT_EYE, INPUT_TARGET),
        ((-1.5, -1.2, 1.2), (0.5, 1.5, 0.8)),
        ((-0.5, 0.2, 1.6), (1.4, -0.5, 0.7)),
        ((1.0, -1.5, 1.0), (-1.2, 1.0, 0.5)),
    ]
    poses = [look_at(eye, target, up=WORLD_UP) for eye, target in stops]
    return torch.stack([input_pose, *poses[1:]])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    scene = procedural_room(args.gaussians, seed=args.seed).to(args.device)
    write_ply(args.out / "world.ply", scene)
    intrinsics = Intrinsics.from_fov(args.fov, args.width, args.height)
    input_pose = look_at(INPUT_EYE, INPUT_TARGET, up=WORLD_UP)

    input_view = render_path(scene, input_pose[None], intrinsics, args, "input")
    hit = input_view.alpha[0, ..., 0] > 0.5
    scene_depth = float(input_view.depth[0, ..., 0][hit].median())
    paths = lyra_trajectories(input_pose, scene_depth, num_frames=args.frames, seed=args.seed)
    paths["waypoints"] = waypoint_trajectory(tour_waypoints(input_pose), args.frames)

    render_start = time.perf_counter()
    renders = {
        name: render_path(scene, poses, intrinsics, args, name) for name, poses in paths.items()
    }
    render_seconds = time.perf_counter() - render_start
    num_frames = sum(len(p) for p in paths.values())

    columns = np.linspace(0, args.frames - 1, num=min(6, args.frames)).round().astype(int)
    rgb_rows = [[to_uint8(r.rgb[i]) for i in columns] for r in renders.values()]
    depth_rows = [
        [colorize_depth(r.depth[i], r.alpha[i]) for i in columns] for r in renders.values()
    ]
    all_frames = [to_uint8(frame) for r in renders.values() for frame in r.rgb]
    outputs = {
        "world_ply": args.out / "world.ply",
        "rgb_sheet": write_png(
            args.out / "trajectories_rgb.png", contact_sheet(rgb_rows, list(renders))
        ),
        "depth_sheet": write_png(
            args.out / "trajectories_depth.png", contact_sheet(depth_rows, list(renders))
        ),
        "gif": write_gif(args.out / "trajectories.gif", all_frames, fps=12),
    }
    try:
        outputs["mp4"] = write_mp4(args.out / "trajectories.mp4", all_frames, fps=24)
    except RuntimeError as err:  # an OpenCV build without an MPEG-4 encoder: GIF only
        print(f"note: no MP4 written ({err})")

    summary = {
        "gaussians": len(scene),
        "image_size": [args.width, args.height],
        "backend": input_view.backend,
        "device": args.device,
        "scene_depth_m": round(scene_depth, 3),
        "frames": num_frames,
        "render_seconds": round(render_seconds, 2),
        "frames_per_second": round(num_frames / render_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
    write_text(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"rendered {num_frames} frames of {len(scene):,} Gaussians at {args.width}x{args.height} "
        f"with {summary['backend']} in {render_seconds:.1f} s ({summary['frames_per_second']} fps)"
    )
    for name, path in outputs.items():
        print(f"  {name:>11}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
