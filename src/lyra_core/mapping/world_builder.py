"""World sources: from one camera frame (colour, optional depth, intrinsics) to a Gaussian world.

The builder of the ROS node (``lyra_ros``) and of ``lyra world``: the node converts messages,
this module builds, so builds are testable without DDS.

Sources:

- ``depth``: every pixel of an RGB-D frame becomes a Gaussian
  (:func:`lyra_core.scene.rgbd.gaussians_from_rgbd`), a disc lying in the surface along the
  depth map's normal (``orient``); with ``fill_occlusions`` (default) a background layer behind
  the depth edges is added (:mod:`lyra_core.mapping.occlusion`), and with ``fill_border`` the
  frame's edge extended outwards, so views a short way off the input pose show plausible
  background instead of holes and empty margins.
- ``lyra``: the learned Lyra student (image -> 3D cache -> six trajectory latents -> Gaussians,
  :class:`lyra_core.pipelines.world.LyraWorldPipeline`) from the checkpoint folder
  ``lyra_checkpoint``; ``shipped`` names the tiny student installed with the package
  (:func:`lyra_core.weights.shipped_student_path`). Depth is optional: without it the pipeline
  assumes a fronto-parallel plane at ``lyra_assumed_depth`` meters. The result is *anchored*:
  the input view's own Gaussians (the 3D cache at the input resolution: exact on what the
  camera saw) are kept, and the student's Gaussians only where the input camera saw nothing
  (:func:`lyra_core.scene.visibility.seen_by_depth`), so the learned world is never worse than
  the observation on what was observed.
- ``auto``: ``lyra`` when ``lyra_checkpoint`` names a folder with a ``student.json``, otherwise
  ``depth`` when a depth image is given.

:class:`WorldBuilder` keeps the loaded Lyra pipeline between builds (the node owns one);
:func:`build_world` is a one-off build.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.mapping.occlusion import (
    OcclusionFillConfig,
    background_layer,
    near_side_of_depth_edges,
)
from lyra_core.pipelines.student import STUDENT_CONFIG_NAME
from lyra_core.pipelines.world import DEFAULT_ASSUMED_DEPTH, LyraWorldPipeline
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import ORIENTATIONS, gaussians_from_rgbd
from lyra_core.scene.visibility import lookup_depth
from lyra_core.utils.errors import CheckpointError, WorldBuildError
from lyra_core.weights import shipped_student_path

WORLD_SOURCES = ("auto", "depth", "lyra")

FILL_BORDER = 32
"""Recommended ``fill_border`` in pixels (benchmarks/fusion.py, stride 2: the stereo pair's right
view +0.40 dB for +15 % Gaussians, procedural rooms' held-out views +0.46 dB; 64 gives +0.70 and
+0.54 dB for twice the extra Gaussians)."""

SHIPPED_CHECKPOINT = "shipped"
"""``lyra_checkpoint`` value naming the student shipped with the package."""


@dataclass
class BuildOptions:
    """Parameters of a build (node parameters of the same names).

    Attributes:
        source: ``auto``, ``depth`` or ``lyra`` (module docstring).
        depth_stride: keep every n-th depth pixel per axis.
        min_depth, max_depth: valid depth range, meters (``max_depth`` <= 0: no limit).
        opacity: opacity of the depth Gaussians.
        lyra_checkpoint: student folder of the ``lyra`` source, or ``shipped``.
        lyra_assumed_depth: ``lyra`` without depth: distance of the assumed plane, meters.
        fill_occlusions: add the background layer behind depth edges (``depth`` source).
        fill_band: width of that layer behind each edge, pixels.
        fill_border: pixels the layer extends the frame by on every side, replicating its edge
            (colour and depth), so views turned or moved a little off the input pose show no
            empty margin (0: none; only with ``fill_occlusions``). :data:`FILL_BORDER` is the
            measured choice (``lyra world``'s default); the default here stays 0 until the
            node has a parameter for it, so the node's worlds do not change unasked.
        orient: orientation of the depth Gaussians, ``normal`` (discs in the surface along the
            depth map's normals) or ``camera`` (discs facing the camera;
            :func:`lyra_core.scene.rgbd.gaussians_from_rgbd`). The fill's discs always face the
            camera.
        anchor_tolerance: ``lyra``: relative depth behind the observed surface within which a
            generated Gaussian counts as that surface (:func:`anchor_to_observation`).
    """

    source: str = "auto"
    depth_stride: int = 2
    min_depth: float = 0.05
    max_depth: float = 20.0
    opacity: float = 0.95
    lyra_checkpoint: str = ""
    lyra_assumed_depth: float = DEFAULT_ASSUMED_DEPTH
    fill_occlusions: bool = True
    fill_band: int = 24
    fill_border: int = 0
    orient: str = "normal"
    anchor_tolerance: float = 0.25


@dataclass
class BuiltWorld:
    """A world and how it was made (``stages``: seconds per stage of a ``lyra`` build)."""

    gaussians: Gaussians
    source: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)


def lyra_checkpoint_folder(checkpoint: str) -> Path:
    """The folder a ``lyra_checkpoint`` value names (``shipped``: the packaged student).

    Raises:
        WorldBuildError: the value is empty, or ``shipped`` while this install ships none.
    """
    if not checkpoint:
        raise WorldBuildError(
            "the 'lyra' world source needs lyra_checkpoint: a student checkpoint folder, or "
            f"'{SHIPPED_CHECKPOINT}' for the student installed with the package"
        )
    if checkpoint == SHIPPED_CHECKPOINT:
        folder = shipped_student_path()
        if folder is None:
            raise WorldBuildError(
                f"lyra_checkpoint '{SHIPPED_CHECKPOINT}': this installation ships no trained "
                "student (lyra_core/weights/student_tiny has no student.json)"
            )
        return folder
    return Path(checkpoint).expanduser()


def lyra_available(options: BuildOptions) -> bool:
    """True when ``options.lyra_checkpoint`` names a folder holding a ``student.json``."""
    try:
        folder = lyra_checkpoint_folder(options.lyra_checkpoint)
    except WorldBuildError:
        return False
    return (folder / STUDENT_CONFIG_NAME).is_file()


def check_options(options: BuildOptions) -> None:
    """Raise WorldBuildError naming the first option of ``options`` out of its range (the
    options checked here are the depth source's; a source checks its own on use)."""
    if options.orient not in ORIENTATIONS:
        raise WorldBuildError(
            f"orient must be one of {', '.join(ORIENTATIONS)}, got {options.orient!r}"
        )
    for name in ("depth_stride", "fill_band", "fill_border"):
        value = getattr(options, name)
        low = 0 if name == "fill_border" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise WorldBuildError(f"{name} must be an integer >= {low}, got {value!r}")


def resolve_source(options: BuildOptions, has_depth: bool) -> str:
    """The concrete source ``auto`` stands for, or the requested one if it can run."""
    if options.source not in WORLD_SOURCES:
        raise WorldBuildError(
            f"unknown world source {options.source!r}; use one of {', '.join(WORLD_SOURCES)}"
        )
    if options.source == "lyra":
        lyra_checkpoint_folder(options.lyra_checkpoint)  # a clear error when it names nothing
        return "lyra"
    if options.source == "auto" and lyra_available(options):
        return "lyra"
    if not has_depth:
        raise WorldBuildError(
            f"world source {options.source!r} needs a depth image registered to the colour image "
            "(no depth received), or lyra_checkpoint set to a trained Lyra student"
        )
    return "depth"


class WorldBuilder:
    """Builds worlds, keeping the Lyra pipeline of the checkpoint last used in memory.

    The pipeline is reloaded when ``lyra_checkpoint`` names another folder or its
    ``student.json`` changed. Not thread-safe: the node runs its builds one at a time.

    Args:
        device: where the Lyra pipeline runs (the ``depth`` source runs on the CPU).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._pipeline: LyraWorldPipeline | None = None
        self._pipeline_key: tuple | None = None

    def pipeline(self, checkpoint: str) -> LyraWorldPipeline:
        """The loaded pipeline of ``checkpoint`` (loading it on first use).

        Raises:
            WorldBuildError: the checkpoint is unset, missing, corrupt or inconsistent.
        """
        folder = lyra_checkpoint_folder(checkpoint)
        key = (folder.resolve(), _modified_ns(folder / STUDENT_CONFIG_NAME))
        if key != self._pipeline_key:
            self._pipeline = self._pipeline_key = None  # free the old model first
            try:
                self._pipeline = LyraWorldPipeline.from_pretrained(folder, device=self.device)
            except CheckpointError as err:
                raise WorldBuildError(f"lyra_checkpoint {checkpoint!r}: {err}") from err
            self._pipeline_key = key
        return self._pipeline

    def build(
        self,
        rgb: np.ndarray,
        depth_m: np.ndarray | None,
        intrinsics: Intrinsics,
        world_from_camera: np.ndarray,
        options: BuildOptions,
    ) -> BuiltWorld:
        """Build a world in the world frame.

        Args:
            rgb: (H, W, 3) uint8 colour image.
            depth_m: (H, W) float32 depth in meters registered to ``rgb``, or None.
            intrinsics: intrinsics of ``rgb`` (and ``depth_m``).
            world_from_camera: (4, 4) pose of the camera optical frame in the world frame.
            options: source and its parameters.

        Raises:
            WorldBuildError: the source cannot run on these inputs (sizes, missing depth, a bad
                checkpoint, ...).
        """
        start = time.perf_counter()
        check_options(options)
        source = resolve_source(options, depth_m is not None)
        _check_inputs(rgb, depth_m, world_from_camera)
        if source == "lyra":
            gaussians, stages = self._build_lyra(
                rgb, depth_m, intrinsics, world_from_camera, options
            )
        else:
            gaussians, stages = _build_depth(rgb, depth_m, intrinsics, world_from_camera, options)
        return BuiltWorld(gaussians, source, time.perf_counter() - start, stages)

    def _build_lyra(
        self,
        rgb: np.ndarray,
        depth_m: np.ndarray | None,
        intrinsics: Intrinsics,
        world_from_camera: np.ndarray,
        options: BuildOptions,
    ) -> tuple[Gaussians, dict[str, float]]:
        pipeline = self.pipeline(options.lyra_checkpoint)
        if depth_m is not None:
            depth_m = np.where(_in_range(depth_m, options), depth_m, np.nan).astype(np.float32)
        try:
            out = pipeline(
                rgb,
                depth_m,
                intrinsics.matrix(),
                world_from_camera,
                assumed_depth=options.lyra_assumed_depth,
            )
        except ValueError as err:
            raise WorldBuildError(f"lyra: {err}") from err
        if len(out.gaussians) == 0:
            raise WorldBuildError("lyra: the student produced no Gaussians")
        observed_depth = depth_m
        if observed_depth is None or not np.isfinite(observed_depth).any():
            observed_depth = np.full(rgb.shape[:2], options.lyra_assumed_depth, np.float32)
        observed_depth = np.nan_to_num(observed_depth, nan=0.0, posinf=0.0).astype(np.float32)
        gaussians = anchor_to_observation(
            out.gaussians, rgb, observed_depth, intrinsics, world_from_camera, options
        )
        return gaussians, out.timings


def build_world(
    rgb: np.ndarray,
    depth_m: np.ndarray | None,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> BuiltWorld:
    """One build with a fresh :class:`WorldBuilder` on the CPU (see :meth:`WorldBuilder.build`;
    a ``lyra`` build loads its checkpoint every time)."""
    return WorldBuilder().build(rgb, depth_m, intrinsics, world_from_camera, options)


def _check_inputs(
    rgb: np.ndarray, depth_m: np.ndarray | None, world_from_camera: np.ndarray
) -> None:
    if depth_m is not None and depth_m.shape != rgb.shape[:2]:
        raise WorldBuildError(
            f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]} but the colour image is "
            f"{rgb.shape[1]}x{rgb.shape[0]}: depth must be registered to colour"
        )
    if not np.isfinite(world_from_camera).all():
        raise WorldBuildError("the camera pose in the world frame contains NaN or inf")


def _build_depth(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> tuple[Gaussians, dict[str, float]]:
    stages: dict[str, float] = {}
    try:
        gaussians = depth_gaussians(rgb, depth_m, intrinsics, world_from_camera, options)
        if len(gaussians) == 0:
            raise WorldBuildError("the depth image has no valid pixels in [min_depth, max_depth]")
        if options.fill_occlusions:
            start = time.perf_counter()
            background = occlusion_fill_gaussians(
                rgb, depth_m, intrinsics, world_from_camera, options
            )
            gaussians = Gaussians.cat([gaussians, background])
            stages["fill"] = time.perf_counter() - start
    except ValueError as err:
        raise WorldBuildError(str(err)) from err
    return gaussians, stages


def occlusion_fill_gaussians(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> Gaussians:
    """The background layer behind the frame's depth edges, and around its border when
    ``options.fill_border`` > 0, as Gaussians (possibly none). Its discs face the camera: the
    layer's depth is extended, not measured, so it has no reliable normals."""
    depth = np.where(_in_range(depth_m, options), depth_m, 0.0).astype(np.float32)
    config = OcclusionFillConfig(band=options.fill_band, border=options.fill_border)
    layer = background_layer(rgb, depth, config)
    if not layer.mask.any():
        return Gaussians.empty()
    return depth_gaussians(
        layer.rgb,
        layer.depth,
        layer.intrinsics(intrinsics),
        world_from_camera,
        replace(options, orient="camera"),
        mask=layer.mask,
    )


def anchor_to_observation(
    generated: Gaussians,
    rgb: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> Gaussians:
    """The input view's own Gaussians plus the generated ones the input camera did not see.

    A generated Gaussian is dropped when it lies on a ray the camera measured (its pixel has
    depth), unless it is more than ``anchor_tolerance`` behind the surface *and* near a depth
    edge, where views off the input pose look behind the foreground (the disocclusions of
    :mod:`lyra_core.mapping.occlusion`). Outside the frustum and on pixels without depth it is
    kept: that is what the camera did not see.

    Args:
        generated: a learned world in the world frame.
        rgb, depth_m, intrinsics, world_from_camera: the observation (depth in meters; 0 where
            unknown).
        options: stride, opacity and depth range of the observed Gaussians; generated ones up to
            ``anchor_tolerance`` (relative depth) behind the observed surface count as that
            surface and are dropped (the student's depth is rough), those farther behind are
            hidden content and stay.
    """
    pose = torch.as_tensor(world_from_camera, dtype=torch.float32)
    observed = depth_gaussians(rgb, depth_m, intrinsics, world_from_camera, options)
    measured = np.where(_in_range(depth_m, options), depth_m, 0.0).astype(np.float32)
    hit = lookup_depth(generated.means.float().cpu(), torch.from_numpy(measured), intrinsics, pose)
    # Pixels a nearby view sees behind: the near side of depth edges (the disocclusions).
    behind_edges = near_side_of_depth_edges(
        measured, measured > 0, options.fill_band, OcclusionFillConfig().edge_ratio
    )
    observed_ray = hit.inside & (hit.measured > 0)
    hidden = hit.z > hit.measured * (1.0 + options.anchor_tolerance)
    at_edge = torch.zeros_like(observed_ray)
    rows, cols = hit.v[observed_ray], hit.u[observed_ray]
    at_edge[observed_ray] = torch.from_numpy(behind_edges)[rows, cols]
    keep = ~observed_ray | (hidden & at_edge)
    unseen = generated[keep.to(generated.means.device)].to(device="cpu", dtype=torch.float32)
    return Gaussians.cat([observed, unseen.with_sh_degree(observed.sh_degree)])


def depth_gaussians(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
    mask: np.ndarray | None = None,
) -> Gaussians:
    """One Gaussian per valid depth pixel (:func:`gaussians_from_rgbd`) with the options' stride,
    opacity, depth range and orientation, in the world frame."""
    return gaussians_from_rgbd(
        rgb,
        depth_m,
        intrinsics,
        torch.as_tensor(world_from_camera, dtype=torch.float32),
        stride=options.depth_stride,
        opacity=options.opacity,
        min_depth=options.min_depth,
        max_depth=_max_depth(options),
        mask=mask,
        orient=options.orient,
    )


def _in_range(depth_m: np.ndarray, options: BuildOptions) -> np.ndarray:
    """(H, W) bool: finite depths in [min_depth, max_depth] (max_depth <= 0: no limit)."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(depth_m) & (depth_m >= options.min_depth) & (depth_m <= _max_depth(options))
        )


def _max_depth(options: BuildOptions) -> float:
    """``max_depth`` in meters, infinite when the option is <= 0."""
    return options.max_depth if options.max_depth > 0 else math.inf


def _modified_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
