"""Multi-frame fusion against one frame (issue 10 part 4): held-out views of procedural rooms, and
the right view of a real stereo pair rendered from the world built from its left RGB-D frame.

**Rooms.** ``--seeds`` random rooms (:func:`lyra_core.data.layouts.random_layout`, kind
``room``; ``--room-gaussians`` surface Gaussians are the ground truth, black background). A
camera drives a straight line through the room's free space (``--frames`` frames, 1.1-1.5 m
high, yaw sweeping +-40 degrees about the heading, pitched 10 degrees down); each frame is the
ground truth's colour and depth rendered at ``--width`` x ``--height`` (60 degrees vertical
field of view). ``--heldout`` views lie between the frames *off* the path: 0.4 m to the side
(alternating left and right), 0.3 m up, turned 20 degrees back across the path and pitched 15
degrees down; they are never used for mapping. Rows:

- ``single``: the first frame through the node's builder
  (:class:`lyra_core.mapping.world_builder.WorldBuilder`, source ``depth``, no fill) with
  camera-facing discs (``orient="camera"``, the builder's only kind before ``orient``);
- ``single_normal``: the same with discs along the depth normals (``orient="normal"``, now the
  builder's default);
- ``single_fill`` / ``single_fill_normal``: the same two with the occlusion fill
  (``BuildOptions(fill_occlusions=True)``, no border);
- ``single_fill_border``: ``single_fill_normal`` with the fill's border extension
  (``fill_border`` = :data:`lyra_core.mapping.world_builder.FILL_BORDER`, the measured choice);
- ``fused``: every frame integrated into a :class:`lyra_core.mapping.GaussianMap`
  (``steps_per_keyframe=0``: adds only);
- ``fused_refined``: the same with refinement, :data:`RECOMMENDED` settings;
- ``fused_fill_refined``: as ``fused_refined``, and every ``FILL_EVERY``-th frame's occlusion
  fill (:func:`lyra_core.mapping.world_builder.occlusion_fill_gaussians`, border ``FILL_BORDER``
  pixels) is added as *generated* content (:meth:`GaussianMap.add_generated`), which later
  frames replace where their depth sees it: the map's fill of what no frame observed.

The single frames use the map's ``pixel_stride`` as ``depth_stride``. Scores over every pixel of
the held-out views (mean over views): PSNR, SSIM, ST-LPIPS; PSNR over the covered pixels
(rendered alpha > 0.5, squared error pooled over the views) and the empty share; ``seconds`` is
the build (single frame) or the whole integration and refinement (fused), evaluation excluded.
Baseline measured in the same run: ``gain_db`` is PSNR minus the same room's ``single`` PSNR.

**Trade-off sweep** (``--sweep-seeds``, by default the first two rooms: the run stays under
15 minutes on 2 shared cores): :data:`RECOMMENDED` with one thing changed at a time
(:data:`SWEEP`: the shipped ``MapConfig()`` defaults, steps per keyframe, depth weight, pixel
stride, new Gaussians along the depth normals, a final refinement pass; ``--fill-sweep`` adds
:data:`FILL_SWEEP`, the fill's frequency and border); ``delta_db`` and ``seconds_ratio``
against ``fused_refined`` of the same room.

**Stereo pair.** The left image of the Middlebury 2014 motorcycle (scikit-image's 4x
down-sampled copy) with depth from its ground-truth disparity and the published calibration (as
the ROS demo's ``motorcycle_frame()``) is built into a world; the right camera (``baseline``
meters to the right, principal point ``doffs`` pixels further right) renders it, scored against
the real right image: PSNR over all pixels and over the covered ones (alpha > 0.5), the empty
share, SSIM and ST-LPIPS. Rows for ``depth_stride`` 1 and 2 (the node's default), all through
the builder: without fill, then with the fill at each
``BuildOptions(fill_band, fill_border)`` (:data:`STEREO_BANDS` x :data:`STEREO_BORDERS`), all with
camera-facing discs, then with discs along the depth normals (``orient="normal"``) without fill
and at band 24 with :data:`STEREO_NORMAL_BORDERS`. Baseline: ``gain_db`` against the builder
without fill, camera-facing, at the same stride.

A contact sheet (``fusion_cpu.png``) shows two held-out views of the first room (ground truth,
single, single + fill, fused, fused + refined, fused + fill + refined) and the stereo right view
(ground truth, the left input, no fill, fill, fill with normal discs and the recommended border,
the best row).

Threads: torch's default (one per core); on a shared CPU idle OpenMP threads spinning made steps
several times slower (benchmarks/fit.py), so the script re-executes itself with
``OMP_WAIT_POLICY=PASSIVE`` unless it is set. Times are wall clock on a shared machine; the
load average before and after is recorded.

Usage: python benchmarks/fusion.py [--seeds 0 1 2] [--frames 24] [--heldout 6]
    [--width 160 --height 120] [--sweep-seeds 0 1] [--no-sweep] [--fill-sweep] [--no-stereo]
    [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from lyra_core.data.layouts import layout_gaussians, random_layout
from lyra_core.evaluation.metrics import coverage_psnr, image_metrics
from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.mapping import GaussianMap, MapConfig, PosedFrame
from lyra_core.mapping.world_builder import FILL_BORDER as FILL_BORDER_RECOMMENDED
from lyra_core.mapping.world_builder import (
    BuildOptions,
    WorldBuilder,
    occlusion_fill_gaussians,
)
from lyra_core.models.perceptual import load_perceptual
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.utils.media import contact_sheet, to_uint8, write_png
from report import cpu_run_header, write_report

OMP_WAIT_POLICY = "PASSIVE"
FOV_Y_DEG = 60.0
PATH_PITCH_DEG = -10.0
PATH_YAW_SWEEP_DEG = 40.0
HELDOUT_SIDE_M = 0.4
HELDOUT_UP_M = 0.3
HELDOUT_TURN_DEG = 20.0
HELDOUT_PITCH_DEG = -15.0
CLEARANCE_M = 0.3
FILL_EVERY = 4
FILL_BORDER = 8

SINGLE_ROWS = (
    ("single", False, "camera", 0),
    ("single_normal", False, "normal", 0),
    ("single_fill", True, "camera", 0),
    ("single_fill_normal", True, "normal", 0),
    ("single_fill_border", True, "normal", FILL_BORDER_RECOMMENDED),
)
"""Single-frame rows: (name, fill_occlusions, orient, fill_border) of the builder."""

RECOMMENDED = {"refine_downscale": 1}
"""MapConfig overrides of the ``fused_refined`` row (the rest are MapConfig's defaults)."""

SWEEP: dict[str, dict] = {
    "defaults (refine_downscale=2)": {"config": {"refine_downscale": 2}},
    "steps_per_keyframe=10": {"config": {"steps_per_keyframe": 10}},
    "steps_per_keyframe=40": {"config": {"steps_per_keyframe": 40}},
    "depth_weight=0.1": {"config": {"depth_weight": 0.1}},
    "depth_weight=2.0": {"config": {"depth_weight": 2.0}},
    "pixel_stride=1": {"config": {"pixel_stride": 1}},
    "orient=normal": {"config": {"orient": "normal"}},
    "final refine 100 steps": {"final_steps": 100},
}
"""Variants of ``fused_refined``: MapConfig overrides on top of :data:`RECOMMENDED`, or a final
``GaussianMap.refine(final_steps)`` after the last frame."""

FILL_SWEEP: dict[str, dict] = {
    "fill every 4, border 0": {"fill_every": 4, "fill_border": 0},
    "fill every 2, border 8": {"fill_every": 2, "fill_border": 8},
}
"""Variants of the fill as generated content (``--fill-sweep``; ``fused_fill_refined`` is
every ``FILL_EVERY`` frames, border ``FILL_BORDER``)."""

# Calibration of skimage.data.stereo_motorcycle() (4x down-sampled Middlebury 2014 frame), as in
# lyra_ros.demo.demo_robot (not imported: that module needs ROS).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_PRINCIPAL_POINT = (311.193, 254.877)
MOTORCYCLE_DOFFS_PX = 31.086
MOTORCYCLE_BASELINE_M = 0.193001
STEREO_STRIDES = (1, 2)
STEREO_BANDS = {1: (12, 24, 48), 2: (24,)}
"""Fill bands composed per depth stride (the full grid at stride 1, the builder's band at 2)."""
STEREO_BORDERS = (0, 32, 64, 128)
STEREO_NORMAL_BORDERS = (0, FILL_BORDER_RECOMMENDED, 64)
TARGET_FUSION_GAIN_DB = 5.0
TARGET_STEREO_PSNR_DB = 20.0


# ------------------------------------------------------------------------------------ rooms


@dataclass
class Room:
    """A ground-truth room with its mapping frames and held-out views."""

    seed: int
    scene: Gaussians
    intrinsics: Intrinsics
    frames: list[PosedFrame]
    heldout_poses: torch.Tensor  # (V, 4, 4)
    heldout_rgb: torch.Tensor  # (V, H, W, 3)
    size_m: tuple[float, float, float]


def _pose(eye: np.ndarray, yaw: float, pitch: float) -> torch.Tensor:
    """Camera-to-world (OpenCV axes) at ``eye`` looking along yaw / pitch (radians), z up."""
    direction = np.array(
        [math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)]
    )
    eye_t = torch.tensor(eye, dtype=torch.float32)
    target = torch.tensor(eye + direction, dtype=torch.float32)
    return look_at(eye_t, target, up=torch.tensor([0.0, 0.0, 1.0]))


def _path(layout, rng: np.random.Generator, frames: int, heldout: int):
    """Eyes and yaws of the path and of the held-out views, all in free space."""
    lo, hi = layout.look_bounds
    for _ in range(10_000):
        a, b = rng.uniform(lo[:2], hi[:2]), rng.uniform(lo[:2], hi[:2])
        if np.linalg.norm(b - a) < 0.5 * np.linalg.norm(hi[:2] - lo[:2]):
            continue
        height = rng.uniform(1.1, 1.5)
        heading = math.atan2(b[1] - a[1], b[0] - a[0])
        side = np.array([-math.sin(heading), math.cos(heading), 0.0])
        t = np.linspace(0.0, 1.0, frames)
        eyes = np.c_[a + (b - a) * t[:, None], np.full(frames, height)]
        yaws = heading + math.radians(PATH_YAW_SWEEP_DEG) * np.sin(2 * math.pi * t)
        th = (np.arange(heldout) + 0.5) / heldout
        sign = np.where(np.arange(heldout) % 2 == 0, 1.0, -1.0)
        held_eyes = np.c_[a + (b - a) * th[:, None], np.full(heldout, height)]
        held_eyes += HELDOUT_SIDE_M * sign[:, None] * side + np.array([0.0, 0.0, HELDOUT_UP_M])
        held_yaws = heading + math.radians(PATH_YAW_SWEEP_DEG) * np.sin(2 * math.pi * th)
        held_yaws -= sign * math.radians(HELDOUT_TURN_DEG)
        if layout.is_free(eyes, CLEARANCE_M).all() and layout.is_free(held_eyes, CLEARANCE_M).all():
            return eyes, yaws, held_eyes, held_yaws
    raise RuntimeError("no free straight path found in this room")


def render_views(
    gaussians: Gaussians, poses: torch.Tensor, intrinsics: Intrinsics, background=(0.0, 0.0, 0.0)
):
    """Inference-mode render of ``gaussians`` from camera-to-world ``poses`` (N, 4, 4)."""
    K = torch.as_tensor(intrinsics.matrix(), dtype=torch.float32)
    cams = Cameras(poses, K[None].expand(len(poses), 3, 3), intrinsics.width, intrinsics.height)
    with torch.inference_mode():
        return render(gaussians, cams, background=background)


def make_room(seed: int, args: argparse.Namespace) -> Room:
    """Room ``seed``: its ground truth, the path's RGB-D frames and the held-out views."""
    rng = np.random.default_rng(seed)
    layout = random_layout(rng, "room")
    scene = layout_gaussians(layout, args.room_gaussians, rng)
    intrinsics = Intrinsics.from_fov(math.radians(FOV_Y_DEG), args.width, args.height)
    eyes, yaws, held_eyes, held_yaws = _path(layout, rng, args.frames, args.heldout)
    pitch, held_pitch = math.radians(PATH_PITCH_DEG), math.radians(HELDOUT_PITCH_DEG)
    poses = torch.stack([_pose(e, y, pitch) for e, y in zip(eyes, yaws, strict=True)])
    held = torch.stack([_pose(e, y, held_pitch) for e, y in zip(held_eyes, held_yaws, strict=True)])
    out = render_views(scene, poses, intrinsics)
    depth = torch.where(out.alpha[..., 0] > 0.5, out.depth[..., 0], torch.zeros(()))
    frames = [
        PosedFrame(out.rgb[i], intrinsics, poses[i], depth[i], stamp=float(i), name=f"frame {i}")
        for i in range(len(poses))
    ]
    heldout_rgb = render_views(scene, held, intrinsics).rgb
    size = tuple(round(float(x), 2) for x in layout.bounds[1] - layout.bounds[0])
    return Room(seed, scene, intrinsics, frames, held, heldout_rgb, size)


def fuse(
    frames: list[PosedFrame],
    config: MapConfig,
    final_steps: int = 0,
    fill_every: int = 0,
    fill_border: int = 0,
) -> tuple[GaussianMap, float]:
    """Integrate every frame (optionally adding every ``fill_every``-th frame's occlusion fill
    as generated content, and refining ``final_steps`` more at the end); (map, seconds)."""
    start = time.perf_counter()
    world = GaussianMap(config)
    for i, frame in enumerate(frames):
        world.integrate(frame)
        if fill_every and i % fill_every == 0:
            options = BuildOptions(depth_stride=config.pixel_stride, fill_border=fill_border)
            layer = occlusion_fill_gaussians(
                frame.rgb.numpy(),
                frame.depth.numpy(),
                frame.intrinsics,
                frame.camtoworld.numpy(),
                options,
            )
            if len(layer):
                world.add_generated(layer)
    if final_steps:
        world.refine(final_steps)
    return world, time.perf_counter() - start


def score(rendered, target: torch.Tensor, perceptual) -> dict:
    """Held-out scores: image_metrics (mean over views), covered PSNR and the empty share."""
    scores = image_metrics(rendered.rgb, target, perceptual)
    covered = coverage_psnr(rendered.rgb, target, rendered.alpha[..., 0] > 0.5)
    out = {
        "psnr": round(scores["psnr"], 2),
        "ssim": round(scores["ssim"], 4),
        "stlpips": round(scores[perceptual.name], 4) if perceptual is not None else None,
        "psnr_covered": round(covered.get("psnr_covered", float("nan")), 2),
        "empty_fraction": round(covered["uncovered_fraction"], 4),
    }
    return out


def room_rows(room: Room, args: argparse.Namespace, perceptual, keep: dict | None) -> list[dict]:
    """The main rows of one room; renders of the sheet's views go into ``keep`` if given."""
    config = MapConfig(**RECOMMENDED)
    first = room.frames[0]
    builder = WorldBuilder()
    rgb8 = to_uint8(first.rgb)
    rows = []

    def add(name: str, gaussians: Gaussians, seconds: float, extra: dict | None = None) -> None:
        rendered = render_views(gaussians, room.heldout_poses, room.intrinsics)
        row = {"room": room.seed, "row": name, **score(rendered, room.heldout_rgb, perceptual)}
        row |= {"seconds": round(seconds, 2), "gaussians": len(gaussians)} | (extra or {})
        rows.append(row)
        print(_format_room_row(row), flush=True)
        if keep is not None:
            keep[name] = rendered.rgb[list(args.sheet_views)]

    for name, fill, orient, border in SINGLE_ROWS:
        options = BuildOptions(
            source="depth",
            fill_occlusions=fill,
            depth_stride=config.pixel_stride,
            orient=orient,
            fill_border=border,
        )
        built = builder.build(
            rgb8, first.depth.numpy(), first.intrinsics, first.camtoworld.numpy(), options
        )
        add(name, built.gaussians, built.seconds)

    world, seconds = fuse(room.frames, replace(config, steps_per_keyframe=0))
    add("fused", world.gaussians(), seconds, {"keyframes": len(world.keyframes)})
    world, seconds = fuse(room.frames, config)
    add("fused_refined", world.gaussians(), seconds, _map_stats(world))
    world, seconds = fuse(room.frames, config, fill_every=FILL_EVERY, fill_border=FILL_BORDER)
    add("fused_fill_refined", world.gaussians(), seconds, _map_stats(world))
    single = rows[0]["psnr"]
    for row in rows:
        row["gain_db"] = round(row["psnr"] - single, 2)
    return rows


def sweep_rows(room: Room, perceptual, reference: dict, variants: dict) -> list[dict]:
    """``variants`` (:data:`SWEEP`) on one room; ``delta_db`` against its ``fused_refined``."""
    rows = []
    for name, variant in variants.items():
        config = MapConfig(**(RECOMMENDED | variant.get("config", {})))
        world, seconds = fuse(
            room.frames,
            config,
            final_steps=variant.get("final_steps", 0),
            fill_every=variant.get("fill_every", 0),
            fill_border=variant.get("fill_border", 0),
        )
        rendered = render_views(world.gaussians(), room.heldout_poses, room.intrinsics)
        row = {"room": room.seed, "variant": name, **score(rendered, room.heldout_rgb, perceptual)}
        row |= {"seconds": round(seconds, 2), "gaussians": len(world)} | _map_stats(world)
        row["delta_db"] = round(row["psnr"] - reference["psnr"], 2)
        row["seconds_ratio"] = round(seconds / reference["seconds"], 2)
        rows.append(row)
        print(_format_sweep_row(row), flush=True)
    return rows


def _map_stats(world: GaussianMap) -> dict:
    stats = world.stats()
    return {
        "keyframes": stats["keyframes"],
        "steps": stats["steps"],
        "generated": stats["generated"],
    }


def _mean_rows(rows: list[dict], key: str) -> list[dict]:
    """Means over rooms of the numeric fields, one row per value of ``key``."""
    names = list(dict.fromkeys(row[key] for row in rows))
    means = []
    for name in names:
        group = [row for row in rows if row[key] == name]
        mean = {key: name, "rooms": len(group)}
        for field in group[0]:
            values = [row[field] for row in group]
            if field in (key, "room") or not all(isinstance(v, int | float) for v in values):
                continue
            mean[field] = round(
                float(np.mean(values)), 4 if field in ("ssim", "stlpips", "empty_fraction") else 2
            )
        means.append(mean)
    return means


# ------------------------------------------------------------------------------------ stereo


def motorcycle() -> dict:
    """The left RGB-D frame, the right image and both cameras of the Middlebury motorcycle."""
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_M / (disparity + MOTORCYCLE_DOFFS_PX)
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    height, width = depth.shape
    f = MOTORCYCLE_FOCAL_PX
    cx, cy = MOTORCYCLE_PRINCIPAL_POINT
    right_pose = np.eye(4)
    right_pose[0, 3] = MOTORCYCLE_BASELINE_M
    return {
        "left": left,
        "right": right,
        "depth": depth,
        "intrinsics": Intrinsics(f, f, cx, cy, width, height),
        "right_intrinsics": Intrinsics(f, f, cx + MOTORCYCLE_DOFFS_PX, cy, width, height),
        "left_pose": np.eye(4),
        "right_pose": right_pose,
    }


def stereo_variants(stride: int) -> list[tuple[str, bool, int, int]]:
    """(orient, fill, band, border) of the stereo rows at ``stride``, baseline first."""
    variants = [("camera", False, 0, 0), ("normal", False, 0, 0)]
    variants += [("camera", True, b, r) for b in STEREO_BANDS[stride] for r in STEREO_BORDERS]
    return variants + [("normal", True, 24, r) for r in STEREO_NORMAL_BORDERS]


def stereo_name(stride: int, orient: str, fill: bool, band: int, border: int) -> str:
    fill_text = f"band {band} border {border}" if fill else "no fill"
    return f"stride {stride}, {orient}, {fill_text}"


def stereo_rows(perceptual, keep: dict) -> list[dict]:
    """The builder's rows (:func:`stereo_variants`) per stride; renders for the sheet in keep."""
    pair = motorcycle()
    target = torch.from_numpy(pair["right"]).float()[None] / 255.0
    right_pose = torch.as_tensor(pair["right_pose"], dtype=torch.float32)[None]
    builder = WorldBuilder()
    rows = []
    for stride in STEREO_STRIDES:
        for orient, fill, band, border in stereo_variants(stride):
            options = BuildOptions(
                source="depth",
                fill_occlusions=fill,
                depth_stride=stride,
                orient=orient,
                fill_band=band or BuildOptions.fill_band,
                fill_border=border,
            )
            built = builder.build(
                pair["left"], pair["depth"], pair["intrinsics"], pair["left_pose"], options
            )
            rendered = render_views(built.gaussians, right_pose, pair["right_intrinsics"])
            name = stereo_name(stride, orient, fill, band, border)
            row = {"name": name, "stride": stride, "orient": orient, "fill": fill}
            row |= {"band": band if fill else None, "border": border}
            row |= score(rendered, target, perceptual)
            row |= {"seconds": round(built.seconds, 2), "gaussians": len(built.gaussians)}
            rows.append(row)
            print(_format_stereo_row(row), flush=True)
            keep[name] = rendered.rgb[0]
        base = next(r["psnr"] for r in rows if r["stride"] == stride)
        for row in rows:
            if row["stride"] == stride:
                row["gain_db"] = round(row["psnr"] - base, 2)
    keep["ground truth"] = target[0]
    keep["left input"] = torch.from_numpy(pair["left"]).float() / 255.0
    return rows


# ------------------------------------------------------------------------------------ output


def _format_room_row(row: dict) -> str:
    lpips = f"{row['stlpips']:.3f}" if row["stlpips"] is not None else "-"
    return (
        f"room {row['room']} {row['row']:>19} {row['psnr']:>6.2f} {row['ssim']:>6.3f} "
        f"{lpips:>7} {row['psnr_covered']:>7.2f} {row['empty_fraction']:>6.3f} "
        f"{row['seconds']:>7.1f} {row['gaussians']:>8}"
    )


def _format_sweep_row(row: dict) -> str:
    return (
        f"room {row['room']} {row['variant']:>30} {row['psnr']:>6.2f} {row['ssim']:>6.3f} "
        f"{row['psnr_covered']:>7.2f} {row['empty_fraction']:>6.3f} {row['seconds']:>7.1f} "
        f"{row['gaussians']:>8} {row['delta_db']:>+6.2f}"
    )


def _format_stereo_row(row: dict) -> str:
    return (
        f"{row['name']:>42} {row['psnr']:>6.2f} {row['psnr_covered']:>7.2f} "
        f"{row['empty_fraction']:>6.3f} {row['ssim']:>6.3f} {row['stlpips']:>7.3f} "
        f"{row['seconds']:>6.2f} {row['gaussians']:>8}"
    )


def _titled_sheet(
    rows: list[list[np.ndarray]], labels: list[str], titles: list[str], gap: int = 4
) -> np.ndarray:
    """:func:`contact_sheet` with a white strip above naming each column."""
    sheet = contact_sheet(rows, labels, gap=gap)
    width = rows[0][0].shape[1]
    strip = np.full((22, sheet.shape[1], 3), 255, dtype=np.uint8)
    for j, title in enumerate(titles):
        x = gap + j * (width + gap) + 4
        cv2.putText(
            strip, title, (x, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return np.concatenate([strip, sheet])


ROOM_SHEET_COLUMNS = {
    "single": "single frame",
    "single_fill": "single + fill",
    "single_fill_border": "+ normals, border",
    "fused": "fused",
    "fused_refined": "fused + refined",
    "fused_fill_refined": "fused + fill + refined",
}


def write_sheet(
    path: Path, room: dict, room_gt: torch.Tensor, stereo: dict, stereo_columns: dict
) -> Path:
    """Room views (upscaled 2x) over the stereo right view (resized to the same height)."""
    rows = []
    for i in range(len(room_gt)):
        images = [room_gt[i]] + [room[name][i] for name in ROOM_SHEET_COLUMNS]
        rows.append([_resize(to_uint8(image), 2.0, cv2.INTER_NEAREST) for image in images])
    labels = [f"room view {i}" for i in range(len(rows))]
    room_sheet = _titled_sheet(rows, labels, ["ground truth", *ROOM_SHEET_COLUMNS.values()])
    scale = rows[0][0].shape[0] / stereo["ground truth"].shape[0]
    images = [_resize(to_uint8(stereo[name]), scale, cv2.INTER_AREA) for name in stereo_columns]
    stereo_sheet = _titled_sheet([images], ["stereo right view"], list(stereo_columns.values()))
    width = max(room_sheet.shape[1], stereo_sheet.shape[1])
    sheet = np.concatenate([_pad(room_sheet, width), _pad(stereo_sheet, width)])
    return write_png(path, sheet)


def _resize(image: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=interpolation)


def _pad(image: np.ndarray, width: int) -> np.ndarray:
    pad = np.full((image.shape[0], width - image.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([image, pad], axis=1)


# ------------------------------------------------------------------------------------ main


ROOM_HEADER = (
    f"{'':6} {'row':>19} {'PSNR':>6} {'SSIM':>6} {'STLPIPS':>7} {'PSNRcov':>7} {'empty':>6} "
    f"{'seconds':>7} {'Gaussians':>8}"
)
SWEEP_HEADER = (
    f"{'':6} {'variant':>30} {'PSNR':>6} {'SSIM':>6} {'PSNRcov':>7} {'empty':>6} {'seconds':>7} "
    f"{'Gaussians':>8} {'delta':>6}"
)
STEREO_HEADER = (
    f"{'right view of the motorcycle':>42} {'PSNR':>6} {'PSNRcov':>7} {'empty':>6} {'SSIM':>6} "
    f"{'STLPIPS':>7} {'sec':>6} {'Gaussians':>8}"
)


def _print_means(title: str, means: list[dict], key: str) -> None:
    print(f"\n{title}")
    print(
        f"{key:>30} {'PSNR':>6} {'SSIM':>6} {'STLPIPS':>7} {'PSNRcov':>7} {'empty':>6} "
        f"{'seconds':>7} {'Gaussians':>9} {'gain/delta':>10}"
    )
    for m in means:
        change = m.get("gain_db", m.get("delta_db"))
        lpips = f"{m['stlpips']:.3f}" if m.get("stlpips") is not None else "-"
        print(
            f"{m[key]:>30} {m['psnr']:>6.2f} {m['ssim']:>6.3f} {lpips:>7} "
            f"{m['psnr_covered']:>7.2f} {m['empty_fraction']:>6.3f} {m['seconds']:>7.1f} "
            f"{m['gaussians']:>9.0f} "
            f"{change:>+10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="rooms")
    parser.add_argument(
        "--sweep-seeds",
        type=int,
        nargs="*",
        default=None,
        help="rooms of the sweep (default: the first two of --seeds)",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the trade-off sweep")
    parser.add_argument("--fill-sweep", action="store_true", help="sweep the fill's settings too")
    parser.add_argument("--no-stereo", action="store_true", help="skip the stereo pair")
    parser.add_argument("--frames", type=int, default=24, help="frames along the path")
    parser.add_argument("--heldout", type=int, default=6, help="held-out views per room")
    parser.add_argument("--width", type=int, default=160, help="frame width, pixels")
    parser.add_argument("--height", type=int, default=120, help="frame height, pixels")
    parser.add_argument("--room-gaussians", type=int, default=100_000, help="ground truth size")
    parser.add_argument(
        "--sheet-views", type=int, nargs="+", default=[1, 4], help="held-out views on the sheet"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not all(0 <= view < args.heldout for view in args.sheet_views):
        parser.error(f"--sheet-views {args.sheet_views} must lie in 0 .. --heldout - 1")
    if os.environ.get("OMP_WAIT_POLICY") is None:  # must be set before OpenMP starts
        env = os.environ | {"OMP_WAIT_POLICY": OMP_WAIT_POLICY}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    started = time.perf_counter()
    load_before = os.getloadavg()
    perceptual = load_perceptual("stlpips-alex")
    sweep_seeds = args.seeds[:2] if args.sweep_seeds is None else args.sweep_seeds
    rows, sweep, room_setup, keep_room, room_gt = [], [], [], {}, None
    for seed in args.seeds:
        print(ROOM_HEADER)
        start = time.perf_counter()
        room = make_room(seed, args)
        room_setup.append(
            {"room": seed, "size_m": room.size_m, "seconds": round(time.perf_counter() - start, 2)}
        )
        keep = keep_room if seed == args.seeds[0] else None
        if keep is not None:
            room_gt = room.heldout_rgb[list(args.sheet_views)]
        rows += room_rows(room, args, perceptual, keep)
        if not args.no_sweep and seed in sweep_seeds:
            print(SWEEP_HEADER)
            reference = next(r for r in rows if r["room"] == seed and r["row"] == "fused_refined")
            variants = SWEEP | (FILL_SWEEP if args.fill_sweep else {})
            sweep += sweep_rows(room, perceptual, reference, variants)

    stereo, keep_stereo = [], {}
    if not args.no_stereo:
        print(f"\n{STEREO_HEADER}")
        stereo = stereo_rows(perceptual, keep_stereo)

    means = _mean_rows(rows, "row")
    _print_means(f"rooms {args.seeds}, mean over rooms (gain: dB over single)", means, "row")
    sweep_means = _mean_rows(sweep, "variant") if sweep else []
    if sweep_means:
        reference = next(m for m in means if m["row"] == "fused_refined")
        print(
            f"\nreference fused_refined: {reference['psnr']:.2f} dB, {reference['seconds']:.1f} s"
        )
        _print_means(
            f"sweep rooms {sweep_seeds} (delta: dB over fused_refined)", sweep_means, "variant"
        )

    single = next(m for m in means if m["row"] == "single")
    refined = next(m for m in means if m["row"] == "fused_refined")
    gains = [r["gain_db"] for r in rows if r["row"] == "fused_refined"]
    checks = {
        "fused_refined_gain_db_mean": refined["gain_db"],
        "fused_refined_gain_db_min_room": min(gains),
        "fusion_target_met": min(gains) >= TARGET_FUSION_GAIN_DB,
        "single_psnr_mean": single["psnr"],
    }
    stereo_best = {}
    for stride in STEREO_STRIDES if stereo else ():
        best = max((r for r in stereo if r["stride"] == stride), key=lambda r: r["psnr"])
        by_name = {r["name"]: r for r in stereo if r["stride"] == stride}
        builder_fill = by_name[stereo_name(stride, "normal", True, 24, 0)]
        recommended = by_name[stereo_name(stride, "normal", True, 24, FILL_BORDER_RECOMMENDED)]
        stereo_best[f"stride_{stride}"] = {
            "best": best["name"],
            "psnr": best["psnr"],
            "builder_fill_psnr": builder_fill["psnr"],
            "recommended_psnr": recommended["psnr"],
            "recommended": recommended["name"],
            "target_met_by_builder_fill": builder_fill["psnr"] >= TARGET_STEREO_PSNR_DB,
            "target_met_by_recommended": recommended["psnr"] >= TARGET_STEREO_PSNR_DB,
            "target_met_by_best": best["psnr"] >= TARGET_STEREO_PSNR_DB,
        }
    checks["stereo"] = stereo_best

    sheet_path = None
    if keep_room and keep_stereo:
        best = stereo_best["stride_1"]["best"]
        columns = {
            "ground truth": "right ground truth",
            "left input": "left input",
            stereo_name(1, "camera", False, 0, 0): "no fill",
            stereo_name(1, "camera", True, 24, 0): "fill",
            stereo_best["stride_1"]["recommended"]: f"normals, border {FILL_BORDER_RECOMMENDED}",
            best: "best: " + best.split(", ", 1)[1],
        }
        sheet_path = write_sheet(
            args.out / "fusion_cpu.png", keep_room, room_gt, keep_stereo, columns
        )
        print(f"wrote {sheet_path}")

    report = {
        **cpu_run_header("fusion", load_before, os.environ.get("OMP_WAIT_POLICY")),
        "rooms": {
            "seeds": args.seeds,
            "scene": f"random_layout(default_rng(seed), 'room'), {args.room_gaussians} surface "
            "Gaussians, black background",
            "frames": args.frames,
            "width": args.width,
            "height": args.height,
            "fov_y_deg": FOV_Y_DEG,
            "path": f"straight line in free space (clearance {CLEARANCE_M} m), 1.1-1.5 m high, "
            f"yaw +-{PATH_YAW_SWEEP_DEG} deg about the heading, pitch {PATH_PITCH_DEG} deg",
            "heldout": f"{args.heldout} views between the frames, {HELDOUT_SIDE_M} m to the side "
            f"(alternating), {HELDOUT_UP_M} m up, turned {HELDOUT_TURN_DEG} deg, pitch "
            f"{HELDOUT_PITCH_DEG} deg; never used for mapping",
            "setup": room_setup,
            "map_config": asdict(MapConfig(**RECOMMENDED)) | {"learning_rates": None},
            "recommended_overrides": RECOMMENDED,
            "fill_as_generated": {"every_n_frames": FILL_EVERY, "border": FILL_BORDER},
        },
        "metrics": "held-out views, all pixels: psnr / ssim / stlpips (alex) = mean over views; "
        "psnr_covered over pixels with rendered alpha > 0.5 (squared error pooled over views); "
        "empty_fraction = share of pixels with alpha <= 0.5",
        "timing": "seconds: single-frame build, or integration + refinement of all frames "
        "(evaluation excluded); wall clock on a shared CPU",
        "baselines": {
            "gain_db": "rooms: PSNR minus the same room's single-frame PSNR; stereo: minus the "
            "builder without fill at the same stride",
            "delta_db": "sweep: PSNR minus the same room's fused_refined PSNR",
            "seconds_ratio": "sweep: seconds over the same room's fused_refined seconds",
        },
        "targets": {
            "fused_refined_over_single_db": TARGET_FUSION_GAIN_DB,
            "stereo_right_view_psnr_all_pixels_db": TARGET_STEREO_PSNR_DB,
        },
        "checks": checks,
        "room_means": means,
        "room_rows": rows,
        "sweep_seeds": sweep_seeds if sweep else [],
        "sweep_means": sweep_means,
        "sweep_rows": sweep,
        "stereo": {
            "pair": "skimage.data.stereo_motorcycle() (Middlebury 2014, 4x down-sampled), left "
            "RGB-D (depth = f * baseline / (disparity + doffs)) -> right view",
            "calibration": {
                "focal_px": MOTORCYCLE_FOCAL_PX,
                "principal_point_left": MOTORCYCLE_PRINCIPAL_POINT,
                "doffs_px": MOTORCYCLE_DOFFS_PX,
                "baseline_m": MOTORCYCLE_BASELINE_M,
            },
            "rows": stereo,
        },
        "contact_sheet": str(sheet_path) if sheet_path else None,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, "fusion_cpu.json", report)


if __name__ == "__main__":
    main()
