"""The world node's parameters: declared with descriptions and ranges, checked at start-up.

:func:`declare_world_parameters` declares every parameter of ``lyra_world`` on the node (ranges
as ROS ``ParameterDescriptor`` ranges, so ``ros2 param describe`` shows them and ROS refuses
out-of-range values on later sets too), then checks what ROS cannot (choices, lengths, relations
between parameters, the device, topic names) and returns them as :class:`WorldParameters`.
Every problem raises :class:`ParameterError` naming the parameter; the node turns it into one
line on stderr and exit code 2.

Parameters the node reads again while running (``build_on_first_image``, ``use_depth``,
``default_fov_deg``, ``point_cloud_max_points``, ``max_render_pixels``, ``playback``,
``time_mode``) may be changed at run time within their ranges (or choices: a set outside them
is refused); the others are read-only (they take effect at start-up only).

What a peer on the DDS domain may make the node touch is bounded here too (all read-only):
``world_dir`` (the only folder ``~/save_world`` and ``~/load_world`` use, :mod:`lyra_ros.paths`),
``checkpoint_dirs`` (the folders ``lyra_checkpoint`` may name), ``allow_any_path`` (turns both
confinements off) and ``max_input_pixels`` (larger input images, depth and camera_info are
dropped before conversion).
README.md, "Node parameters", documents them all; config/world.yaml lists their defaults.

The mapping parameters (``refine``, ``max_gaussians``, ``mapping_stride``, ``keyframe_*``,
``refine_steps_per_keyframe``, ``refine_downscale``, ``max_refine_steps_per_second``,
``max_frames_per_second``, ``max_mapping_load``, ``map_publish_period``, ``pose_timeout``) bound
what fusing the camera feed into the world may cost (:mod:`lyra_ros.mapping_worker`); they come
back as :class:`MappingParameters`.

4D worlds (:mod:`lyra_ros.playback`): ``playback``, ``time_scale``, ``playback_start`` and
``time_mode`` say how a world with time plays on ROS time (:class:`PlaybackParameters`);
``record_max_frames`` bounds a recording of the feed (``~/start_recording``) and
``record_rate`` thins it (``WorldParameters.record_interval``); its
:class:`~lyra_core.mapping.dynamic.DynamicMapper` settings come from the depth and mapping
parameters (``min_depth``, ``max_depth``, ``opacity``, ``orient``, ``mapping_stride``,
``max_gaussians``, ``background``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.expand_topic_name import expand_topic_name
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_full_topic_name import validate_full_topic_name

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.mapping.dynamic import DynamicMapperConfig, static_map_config
from lyra_core.mapping.gaussian_map import MapConfig
from lyra_core.mapping.world_builder import FILL_BORDER, WORLD_SOURCES, BuildOptions
from lyra_core.scene.rgbd import ORIENTATIONS
from lyra_core.utils.errors import LyraError
from lyra_ros.mapping_worker import MappingSettings
from lyra_ros.paths import PathRefusedError, WorldFiles, check_checkpoint
from lyra_ros.playback import PLAYBACK_MODES, PLAYBACK_STARTS, TIME_MODES
from lyra_ros.sim_camera import SimCamera

__all__ = [
    "DEFAULT_MAX_INPUT_PIXELS",
    "DEFAULT_MAX_RENDER_PIXELS",
    "FUSION",
    "NODE_WORLD_SOURCES",
    "MappingParameters",
    "ParameterError",
    "PlaybackParameters",
    "WorldParameters",
    "declare_world_parameters",
]

FUSION = "fusion"
"""``world_source`` that builds the world from the camera feed alone (a growing map)."""

NODE_WORLD_SOURCES = (*WORLD_SOURCES, FUSION)

UNLIMITED_DEPTH_M = 1e6
"""The map's largest valid depth when ``max_depth`` is 0 (no limit), meters."""

SMALLEST_MAP_DEPTH_M = 1e-3
"""The map's smallest valid depth when ``min_depth`` is 0 (it needs a positive one), meters."""

DEFAULT_MAX_RENDER_PIXELS = 2048 * 2048
"""Largest image (width x height) rendered: ~4.2 MP; a render of this size of a world that covers
the view takes ~2.5 GB of memory with the torch backend on the CPU."""

DEFAULT_MAX_INPUT_PIXELS = 4096 * 2160
"""Largest input image, depth image or camera_info (width x height) taken: ~8.8 MP, 4K (DCI and
UHD) cameras fit; an rgb8 image of this size is 27 MB."""

DEFAULT_CHECKPOINT_DIRS = ("checkpoints",)
"""Folders ``lyra_checkpoint`` may name a student in by default (relative: to the working
directory); ``shipped`` is always allowed."""

MAX_IMAGE_SIDE = 16384
"""Largest simulated-camera width or height, pixels."""

IMAGE_TRANSPORTS = ("raw", "compressed")

RUNTIME_CHOICES = {"playback": PLAYBACK_MODES, "time_mode": TIME_MODES}
"""String parameters that may change at run time, and their choices."""


class ParameterError(LyraError, ValueError):
    """A node parameter has a bad value; the message starts with the parameter's name.

    Attributes:
        name: The parameter, e.g. ``camera.front.width``.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter {name}: {problem}")
        self.name = name


@dataclass(frozen=True)
class WorldParameters:
    """The node's parameters as read and checked at start-up."""

    world_frame: str
    build: BuildOptions
    image_transport: str
    device: torch.device
    background: tuple[float, float, float]
    tf_cache_time: float
    cameras: tuple[SimCamera, ...]
    mapping: MappingParameters
    files: WorldFiles
    max_input_pixels: int
    depth_sync_tolerance: float
    playback: PlaybackParameters
    recording: DynamicMapperConfig
    record_interval: float
    """Seconds between recorded frames by stamp (``1 / record_rate``; 0: every frame)."""


@dataclass(frozen=True)
class PlaybackParameters:
    """How 4D worlds play on ROS time (:mod:`lyra_ros.playback`); ``playback`` and
    ``time_mode`` are read again at every render (they may change at run time).

    Attributes:
        time_scale: world seconds per ROS second.
        start_on_serve: world time starts when a world is served (``playback_start: build``);
            False: at ``~/start_playback``.
    """

    time_scale: float
    start_on_serve: bool


@dataclass(frozen=True)
class MappingParameters:
    """How the node fuses its camera feed into the world (:mod:`lyra_ros.mapping_worker`).

    Attributes:
        refine: the ``depth`` and ``lyra`` sources keep mapping after their single-frame build
            (the built world is the map's start); ``fusion`` always maps.
        pose_timeout: seconds a frame waits for its camera's tf pose at the frame's stamp.
        settings: the map's configuration and the worker's cost bounds.
    """

    refine: bool
    pose_timeout: float
    settings: MappingSettings


# (name, default, description, (low, high) or None, read-only)
_WORLD_PARAMETERS: tuple[tuple[str, Any, str, tuple[float, float] | None, bool], ...] = (
    ("world_frame", "map", "Fixed frame the world is anchored in.", None, True),
    (
        "world_source",
        "auto",
        "auto, depth, lyra (one frame) or fusion (a map grown from the camera feed).",
        None,
        True,
    ),
    ("build_on_first_image", True, "Build as soon as input arrives.", None, False),
    ("image_transport", "raw", "raw (Image) or compressed (CompressedImage).", None, True),
    ("use_depth", True, "Subscribe to the depth image.", None, False),
    (
        "depth_sync_tolerance",
        0.02,
        "Seconds an image and a depth image's stamps may differ and still pair (0: exact).",
        (0.0, 1.0),
        True,
    ),
    ("depth_stride", 2, "Keep every n-th depth pixel per axis.", (1, 64), True),
    ("min_depth", 0.05, "Depth below this (m) is invalid.", (0.0, 1000.0), True),
    ("max_depth", 20.0, "Depth above this (m) is invalid; 0 = no limit.", (0.0, 1000.0), True),
    ("opacity", 0.95, "Opacity of Gaussians built from depth, in (0, 1).", (0.0, 1.0), True),
    (
        "fill_occlusions",
        True,
        "depth source: add a background layer behind depth edges (seen from off the input pose).",
        None,
        True,
    ),
    ("fill_band", 24, "Width (pixels) of the background layer behind an edge.", (1, 512), True),
    (
        "fill_border",
        FILL_BORDER,
        "Pixels the background layer extends the frame by on every side (0: none).",
        (0, 512),
        True,
    ),
    (
        "orient",
        "normal",
        "Depth Gaussians: normal (discs in the surface along the depth normals) or camera.",
        None,
        True,
    ),
    (
        "lyra_checkpoint",
        "",
        "Lyra student checkpoint folder, 'shipped' (packaged student) or '' (none).",
        None,
        True,
    ),
    (
        "lyra_assumed_depth",
        3.0,
        "lyra without depth: distance (m) of the assumed fronto-parallel plane.",
        (0.01, 1000.0),
        True,
    ),
    (
        "world_dir",
        "worlds",
        "Folder of ~/save_world and ~/load_world files (relative: to the working directory; "
        "created on the first save). Requests name files inside it.",
        None,
        True,
    ),
    (
        "allow_any_path",
        False,
        "Let ~/save_world, ~/load_world and lyra_checkpoint use any path (unsafe where others "
        "share the DDS domain).",
        None,
        True,
    ),
    (
        "max_input_pixels",
        DEFAULT_MAX_INPUT_PIXELS,
        "Largest width x height of input images, depth images and camera_info (topics and "
        "~/build_world); larger ones are dropped before conversion.",
        (1, MAX_IMAGE_SIDE * MAX_IMAGE_SIDE),
        True,
    ),
    ("default_fov_deg", 60.0, "Horizontal FOV used without camera_info.", (1.0, 179.0), False),
    ("tf_cache_time", 10.0, "Seconds of tf history kept.", (0.1, 3600.0), True),
    ("device", "auto", "Render and Lyra device: auto, cpu, cuda or cuda:<index>.", None, True),
    ("background", [0.0, 0.0, 0.0], "RGB in [0, 1] behind the world.", None, True),
    ("point_cloud_max_points", 50000, "Cap of ~/world_points (0: off).", (0, 10**7), False),
    (
        "max_render_pixels",
        DEFAULT_MAX_RENDER_PIXELS,
        "Largest width x height rendered (~/render_view and simulated cameras).",
        (1, MAX_IMAGE_SIDE * MAX_IMAGE_SIDE),
        False,
    ),
    (
        "refine",
        False,
        "depth/lyra sources: keep fusing posed frames into the built world (fusion always does).",
        None,
        True,
    ),
    ("max_gaussians", 300_000, "Mapping: most Gaussians the map holds.", (1, 10**8), True),
    ("mapping_stride", 2, "Mapping: new Gaussians from every n-th pixel per axis.", (1, 64), True),
    (
        "keyframe_translation",
        0.25,
        "Mapping: camera motion (m) since the last keyframe that makes a keyframe.",
        (0.0, 1000.0),
        True,
    ),
    (
        "keyframe_rotation_deg",
        15.0,
        "Mapping: camera rotation (degrees) since the last keyframe that makes a keyframe.",
        (0.0, 180.0),
        True,
    ),
    (
        "refine_steps_per_keyframe",
        10,
        "Mapping: refinement steps owed per keyframe (0: no refinement).",
        (0, 10_000),
        True,
    ),
    (
        "refine_downscale",
        1,
        "Mapping: refinement renders keyframes at 1/n resolution (larger: cheaper steps).",
        (1, 16),
        True,
    ),
    (
        "max_refine_steps_per_second",
        2.0,
        "Mapping: refinement steps per second at most (the worker sleeps to stay under it).",
        (0.01, 10_000.0),
        True,
    ),
    (
        "max_frames_per_second",
        2.0,
        "Mapping: frames added to the map per second at most (newer ones replace waiting ones).",
        (0.01, 1000.0),
        True,
    ),
    (
        "max_mapping_load",
        0.5,
        "Mapping: share of the time the mapping worker may work (it rests in proportion).",
        (0.01, 1.0),
        True,
    ),
    (
        "map_publish_period",
        1.0,
        "Mapping: seconds between replacements of the served world (and status).",
        (0.01, 3600.0),
        True,
    ),
    (
        "pose_timeout",
        0.2,
        "Mapping: seconds a frame waits for its tf pose at its stamp before it is skipped.",
        (0.0, 10.0),
        True,
    ),
    (
        "playback",
        "loop",
        "4D worlds at their end: loop (start over), hold (keep the last state) or once (then "
        "show nothing until ~/start_playback).",
        None,
        False,
    ),
    (
        "time_scale",
        1.0,
        "4D worlds: world seconds per ROS second (the node clock; /clock with use_sim_time).",
        (0.001, 1000.0),
        True,
    ),
    (
        "playback_start",
        "build",
        "4D worlds: world time starts when the world is served (build) or at ~/start_playback "
        "(service).",
        None,
        True,
    ),
    (
        "time_mode",
        "step",
        "4D worlds between their times: step (the nearest) or blend (cross-fade).",
        None,
        False,
    ),
    (
        "record_max_frames",
        64,
        "~/start_recording: most frames a recording keeps for its 4D world (the newest).",
        (1, 4096),
        True,
    ),
    (
        "record_rate",
        0.0,
        "~/start_recording: frames recorded per second of their stamps, at most (0: every "
        "paired frame).",
        (0.0, 1000.0),
        True,
    ),
)

_CAMERA_PARAMETERS: tuple[tuple[str, Any, str, tuple[float, float] | None], ...] = (
    ("frame_id", None, "tf frame to render (optical axes).", None),
    ("width", 320, "Image width, pixels.", (1, MAX_IMAGE_SIDE)),
    ("height", 240, "Image height, pixels.", (1, MAX_IMAGE_SIDE)),
    ("fx", 0.0, "fx in pixels; 0: from fov_deg.", (0.0, 1e6)),
    ("fy", 0.0, "fy in pixels; 0: equal to fx.", (0.0, 1e6)),
    ("cx", 0.0, "cx in pixels; 0: the image centre.", (0.0, 1e6)),
    ("cy", 0.0, "cy in pixels; 0: the image centre.", (0.0, 1e6)),
    ("fov_deg", 60.0, "Horizontal FOV when fx is 0, degrees.", (1.0, 179.0)),
    ("rate", 10.0, "Render rate, Hz.", (0.01, 1000.0)),
    ("topic", None, "Image topic; camera_info and depth go beside it.", None),
    ("publish_depth", False, "Also publish 32FC1 depth.", None),
)


def _descriptor(
    name: str, default: Any, description: str, bounds: tuple[float, float] | None, read_only: bool
) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if bounds is not None and isinstance(default, int) and not isinstance(default, bool):
        descriptor.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=0)]
    elif bounds is not None:
        low, high = float(bounds[0]), float(bounds[1])
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=low, to_value=high, step=0.0)
        ]
    return descriptor


def _type_word(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a floating-point number (write 10.0, not 10)"
    if isinstance(default, str):
        return "a string"
    if default and isinstance(default[0], str):
        return "a list of strings"
    return "a list of floating-point numbers"


def _declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    bounds: tuple[float, float] | None,
    read_only: bool = True,
) -> Any:
    """Declare one parameter and return its value; ROS's refusals become :class:`ParameterError`."""
    descriptor = _descriptor(name, default, description, bounds, read_only)
    try:
        return node.declare_parameter(name, default, descriptor).value
    except InvalidParameterTypeException:
        given = _override(node, name)
        raise ParameterError(name, f"must be {_type_word(default)}, got {given!r}") from None
    except InvalidParameterValueException:
        assert bounds is not None  # ROS refuses values only of parameters with a range
        low, high = bounds
        given = _override(node, name)
        raise ParameterError(name, f"must be in [{low}, {high}], got {given!r}") from None


def _override(node: Node, name: str) -> Any:
    """The value the command line or parameter file gave ``name`` (for error messages)."""
    parameter = node._parameter_overrides.get(name)  # rclpy keeps no public accessor
    return parameter.value if parameter is not None else None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParameterError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_frame(name: str, value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ParameterError(name, f"must be a non-empty tf frame name, got {value!r}")
    return value


def _resolve_device(value: str) -> torch.device:
    """``device`` as a torch device; ``auto`` is CUDA when available, else the CPU."""
    name = "device"
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        device = None
    if device is not None and device.type == "cpu":
        return device
    if device is None or device.type != "cuda":
        raise ParameterError(name, f"must be auto, cpu, cuda or cuda:<index>, got {value!r}")
    if not torch.cuda.is_available():
        raise ParameterError(name, f"{value!r} but no CUDA GPU is available here (use auto or cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ParameterError(name, f"{value!r} but this machine has {count} CUDA device(s)")
    return device


def _check_background(value: list[float]) -> tuple[float, float, float]:
    if len(value) != 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in value):
        raise ParameterError("background", f"must be 3 numbers in [0, 1] (RGB), got {list(value)}")
    red, green, blue = (float(v) for v in value)
    return red, green, blue


def _check_topic(node: Node, name: str, topic: str) -> str:
    try:
        validate_full_topic_name(
            expand_topic_name(topic, node.get_name(), node.get_namespace()), is_service=False
        )
    except Exception as err:  # rclpy raises ValueError or InvalidTopicNameException
        raise ParameterError(name, f"{topic!r} is not a valid topic name ({err})") from None
    return topic


def _checkpoint_dirs(node: Node) -> list[str]:
    """``checkpoint_dirs``: folders ``lyra_checkpoint`` may name (an empty list: none)."""
    name = "checkpoint_dirs"
    descriptor = ParameterDescriptor(
        name=name,
        description="Folders lyra_checkpoint may name a student in ('shipped' is always "
        "allowed; relative: to the working directory).",
        read_only=True,
    )
    try:
        value = node.declare_parameter(name, list(DEFAULT_CHECKPOINT_DIRS), descriptor).value
    except InvalidParameterTypeException:
        given = _override(node, name)
        if isinstance(given, (list, tuple)) and not given:
            return []  # [] in a parameter file: ROS cannot type an empty list
        raise ParameterError(name, f"must be a list of folders, got {given!r}") from None
    folders = list(value or [])
    if not all(folder.strip() for folder in folders):
        raise ParameterError(name, f"folders must be non-empty, got {folders}")
    return folders


def _camera_names(node: Node) -> list[str]:
    name = "cameras"
    descriptor = ParameterDescriptor(
        name=name,
        description="Names of simulated cameras, each configured by camera.<name>.*.",
        read_only=True,
    )
    try:
        value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor).value
    except ParameterUninitializedException:  # not given, or [] (ROS cannot type an empty list)
        return []
    except InvalidParameterTypeException:
        given = _override(node, name)
        raise ParameterError(name, f"must be a list of names, got {given!r}") from None
    names = list(value or [])
    for camera in names:
        if not camera or not all(c.isalnum() or c == "_" for c in camera):
            raise ParameterError(
                name, f"camera names must be letters, digits and '_', got {camera!r}"
            )
    duplicates = sorted({camera for camera in names if names.count(camera) > 1})
    if duplicates:
        raise ParameterError(name, f"camera names must be unique, repeated: {duplicates}")
    return names


def _read_camera(node: Node, camera: str, max_pixels: int) -> SimCamera:
    prefix = f"camera.{camera}."
    defaults = {"frame_id": f"{camera}_optical_frame", "topic": f"{camera}/image"}
    value = {
        key: _declare(node, prefix + key, defaults.get(key, default), description, bounds)
        for key, default, description, bounds in _CAMERA_PARAMETERS
    }
    _check_frame(prefix + "frame_id", value["frame_id"])
    _check_topic(node, prefix + "topic", value["topic"])
    width, height = value["width"], value["height"]
    if width * height > max_pixels:
        raise ParameterError(
            prefix + "width",
            f"{width}x{height} = {width * height} pixels is more than max_render_pixels "
            f"({max_pixels})",
        )
    fx = value["fx"] or 0.5 * width / math.tan(0.5 * math.radians(value["fov_deg"]))
    intrinsics = Intrinsics(
        fx,
        value["fy"] or fx,
        value["cx"] or (width - 1) / 2,
        value["cy"] or (height - 1) / 2,
        width,
        height,
    )
    return SimCamera(
        camera,
        value["frame_id"],
        intrinsics,
        float(value["rate"]),
        value["topic"],
        bool(value["publish_depth"]),
    )


def declare_world_parameters(node: Node) -> WorldParameters:
    """Declare and check every parameter of the world node (see the module docstring).

    Raises:
        ParameterError: The first bad parameter found, named in the message.
    """
    value = {spec[0]: _declare(node, *spec) for spec in _WORLD_PARAMETERS}
    _check_frame("world_frame", value["world_frame"])
    _check_choice("world_source", value["world_source"], NODE_WORLD_SOURCES)
    _check_choice("image_transport", value["image_transport"], IMAGE_TRANSPORTS)
    _check_choice("orient", value["orient"], ORIENTATIONS)
    _check_choice("playback_start", value["playback_start"], PLAYBACK_STARTS)
    for name, choices in RUNTIME_CHOICES.items():
        _check_choice(name, value[name], choices)
    node.add_on_set_parameters_callback(_refuse_bad_choices)
    if not 0.0 < value["opacity"] < 1.0:
        raise ParameterError("opacity", f"must be in (0, 1), got {value['opacity']}")
    if 0.0 < value["max_depth"] <= value["min_depth"]:
        raise ParameterError(
            "max_depth",
            f"must be 0 (no limit) or larger than min_depth ({value['min_depth']}), "
            f"got {value['max_depth']}",
        )
    if value["world_source"] == FUSION and not value["use_depth"]:
        raise ParameterError(
            "use_depth", "must be true with world_source fusion (the map grows from depth)"
        )
    if not value["world_dir"].strip():
        raise ParameterError("world_dir", "must name a folder, got ''")
    try:
        check_checkpoint(value["lyra_checkpoint"], _checkpoint_dirs(node), value["allow_any_path"])
    except PathRefusedError as err:
        raise ParameterError("lyra_checkpoint", str(err)) from None
    device = _resolve_device(value["device"])
    background = _check_background(value["background"])
    cameras = tuple(
        _read_camera(node, camera, value["max_render_pixels"]) for camera in _camera_names(node)
    )
    build = BuildOptions(
        source=value["world_source"],
        depth_stride=value["depth_stride"],
        min_depth=value["min_depth"],
        max_depth=value["max_depth"],
        opacity=value["opacity"],
        lyra_checkpoint=value["lyra_checkpoint"],
        lyra_assumed_depth=value["lyra_assumed_depth"],
        fill_occlusions=value["fill_occlusions"],
        fill_band=value["fill_band"],
        fill_border=value["fill_border"],
        orient=value["orient"],
    )
    return WorldParameters(
        world_frame=value["world_frame"],
        build=build,
        image_transport=value["image_transport"],
        device=device,
        background=background,
        tf_cache_time=value["tf_cache_time"],
        cameras=cameras,
        mapping=_mapping_parameters(value, background),
        files=WorldFiles(value["world_dir"], value["allow_any_path"]),
        max_input_pixels=value["max_input_pixels"],
        depth_sync_tolerance=value["depth_sync_tolerance"],
        playback=PlaybackParameters(
            time_scale=value["time_scale"], start_on_serve=value["playback_start"] == "build"
        ),
        recording=_recording_config(value, background),
        record_interval=1.0 / value["record_rate"] if value["record_rate"] > 0 else 0.0,
    )


def _refuse_bad_choices(parameters: list[Parameter]) -> SetParametersResult:
    """Refuse a run-time set of :data:`RUNTIME_CHOICES` outside their choices."""
    for parameter in parameters:
        choices = RUNTIME_CHOICES.get(parameter.name)
        if choices is not None and parameter.value not in choices:
            return SetParametersResult(
                successful=False,
                reason=f"{parameter.name} must be one of {', '.join(choices)}, "
                f"got {parameter.value!r}",
            )
    return SetParametersResult(successful=True)


def _depth_limits(value: dict[str, Any]) -> tuple[float, float]:
    """The map's valid depth range, meters: ``min_depth`` (at least
    :data:`SMALLEST_MAP_DEPTH_M`) and ``max_depth`` (0: :data:`UNLIMITED_DEPTH_M`)."""
    max_depth = value["max_depth"] if value["max_depth"] > 0 else UNLIMITED_DEPTH_M
    return max(value["min_depth"], SMALLEST_MAP_DEPTH_M), max_depth


def _recording_config(
    value: dict[str, Any], background: tuple[float, float, float]
) -> DynamicMapperConfig:
    """The :class:`DynamicMapper` settings of ``~/start_recording`` (the map's depth, opacity,
    stride and budget; no refinement, so that stopping a recording builds in seconds)."""
    min_depth, max_depth = _depth_limits(value)
    static = static_map_config(
        max_gaussians=value["max_gaussians"],
        pixel_stride=value["mapping_stride"],
        new_opacity=value["opacity"],
        min_depth=min_depth,
        max_depth=max_depth,
        orient=value["orient"],
        background=background,
    )
    return DynamicMapperConfig(
        max_frames=value["record_max_frames"],
        map=static,
        pixel_stride=value["mapping_stride"],
        opacity=value["opacity"],
        show_progress=False,
    )


def _mapping_parameters(value: dict[str, Any], background: tuple[float, float, float]):
    """The mapping parameters as :class:`MappingParameters` (ranges already checked by ROS)."""
    min_depth, max_depth = _depth_limits(value)
    config = MapConfig(
        max_gaussians=value["max_gaussians"],
        pixel_stride=value["mapping_stride"],
        new_opacity=value["opacity"],
        min_depth=min_depth,
        max_depth=max_depth,
        keyframe_translation=value["keyframe_translation"],
        keyframe_rotation_deg=value["keyframe_rotation_deg"],
        refine_downscale=value["refine_downscale"],
        orient=value["orient"],
        steps_per_keyframe=0,  # the worker runs the steps itself, rate-limited
        background=background,
    )
    settings = MappingSettings(
        map_config=config,
        steps_per_keyframe=value["refine_steps_per_keyframe"],
        max_steps_per_second=value["max_refine_steps_per_second"],
        max_frames_per_second=value["max_frames_per_second"],
        publish_period=value["map_publish_period"],
        max_load=value["max_mapping_load"],
    )
    return MappingParameters(value["refine"], value["pose_timeout"], settings)
