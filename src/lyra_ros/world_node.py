"""The Lyra world node: camera images in, a Gaussian world built, rendered robot views out.

Subscribes (sensor-data QoS, keep-last 1):
  ``image`` (sensor_msgs/Image, or CompressedImage on ``image/compressed`` when
  ``image_transport`` is ``compressed``), ``camera_info``, ``depth`` (registered to colour).
Publishes:
  ``~/status`` (lyra_ros/WorldStatus, latched), ``~/world_points`` (PointCloud2, latched) and,
  for every simulated camera (:mod:`lyra_ros.sim_camera`), ``<topic>`` (Image rgb8),
  ``<topic>/../camera_info`` and optionally ``<topic>/../depth`` (32FC1) at the camera's rate
  and tf pose.
Services:
  ``~/reset_world`` (std_srvs/Trigger), ``~/build_world`` (lyra_ros/BuildWorld),
  ``~/render_view`` (lyra_ros/RenderView), ``~/save_world`` and ``~/load_world``
  (lyra_ros/WorldFile), ``~/start_playback``, ``~/pause_playback``, ``~/start_recording`` and
  ``~/stop_recording`` (std_srvs/Trigger). ``~/build_world`` and ``~/render_view`` are served
  from threads of their own (:mod:`lyra_ros.service_thread`), so a long build or render never
  blocks the rest.

Mapping (``world_source: fusion``, or ``refine: true`` with the other sources): every image
(with the depth image nearest its stamp, within ``depth_sync_tolerance``) whose camera has a tf
pose in ``world_frame`` at the image's stamp is fused into a growing Gaussian map by
:class:`~lyra_ros.mapping_worker.MappingWorker` in a thread of its own (a queue of one frame:
the newest wins). ``fusion`` starts the map from the first such frame (or from
``~/build_world``); ``refine`` starts it from the single-frame world (observed Gaussians for
``depth``, generated content for ``lyra``, which frames with depth replace where they see it).
Every ``map_publish_period`` the served world is replaced by a snapshot of the map (one
reference swap), so rendering never waits for mapping.

4D worlds (Gaussians with times: a loaded 4D PLY, a recorded world) play on ROS time
(:mod:`lyra_ros.playback`): world time is ``(t - t_start) * time_scale`` from the start
(``playback_start``: ``build``, when the world is served; ``service``, at
``~/start_playback``), then ``playback`` ``loop`` (wraps), ``hold`` (keeps the last state) or
``once`` (then nothing: simulated cameras publish no more frames and ``~/render_view`` refuses,
until ``~/start_playback``). ``t`` is the node clock's time (``/clock`` with ``use_sim_time``,
which also paces the simulated cameras) of what is rendered: a simulated camera's pose stamp (a
static-only tf path: now), ``~/render_view``'s ``time`` (ROS time in seconds; 0: now; NaN,
infinite or negative: refused). A time before the start shows the first state (warned,
throttled). Services ``~/start_playback`` ((re)start from the first state, or resume after a
pause) and ``~/pause_playback`` (std_srvs/Trigger); ``~/status`` reports ``playback`` and
``world_time`` (every 0.5 s while playing). ``~/save_world`` writes the time columns; a loaded
4D world is served as is (never mapped) and plays per ``playback_start``.

Recording (:mod:`lyra_ros.recorder`): between ``~/start_recording`` and ``~/stop_recording``
(std_srvs/Trigger; needs ``use_depth``), every image paired with its depth image as for mapping
and posed by tf at its stamp as for mapping goes to a
:class:`~lyra_core.mapping.dynamic.DynamicMapper` (at most ``record_max_frames``, the newest).
``record_rate`` (Hz of the frames' stamps, 0: all) thins a fast feed.
``~/stop_recording`` answers at once and builds the 4D world in the build thread (state
BUILDING, source ``recording``; world time 0 is the first frame's stamp), then serves it like a
loaded one (any map stops).

Parameters: :mod:`lyra_ros.parameters` (declared with ranges, all checked at start-up; a bad one
ends ``lyra-world`` with one line naming it and exit code 2), documented in the README and
config/world.yaml.

Exposure (any DDS peer can call the services and publish inputs): ``~/save_world`` and
``~/load_world`` take a name inside ``world_dir`` (:mod:`lyra_ros.paths`; refused paths get a
clear ``message``, the node keeps running); input images, depth images and camera_info larger
than ``max_input_pixels`` are dropped on arrival with a throttled warning, and ``~/build_world``
refuses them; docs/security.md explains running under SROS2.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import rclpy
import torch
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.world_builder import (
    BuildOptions,
    BuiltWorld,
    WorldBuilder,
    occlusion_fill_gaussians,
    resolve_source,
)
from lyra_core.rendering import render
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.ply import read_ply, write_ply
from lyra_core.utils.errors import LyraError, WorldBuildError
from lyra_ros.config import ConfigError, ros_args_with_config, use_large_data_transport
from lyra_ros.conversions import (
    camera_info_to_intrinsics,
    depth_to_image,
    numpy_to_image,
    pointcloud2_from_points,
    pose_to_matrix,
)
from lyra_ros.inputs import InputFrame, input_frame, size_problem
from lyra_ros.mapping_worker import (
    FrameSkipError,
    MappingStats,
    MappingWorker,
    leading_observations,
    scene_scale,
    seed_with_frame,
    seed_with_world,
)
from lyra_ros.msg import WorldStatus
from lyra_ros.parameters import FUSION, ParameterError, declare_world_parameters
from lyra_ros.paths import PathRefusedError
from lyra_ros.playback import FINISHED, PLAYING, BadTimeError, Playback, seconds_to_ns
from lyra_ros.qos import LATCHED_QOS, SENSOR_QOS
from lyra_ros.recorder import FeedRecorder, Recording
from lyra_ros.service_thread import ServiceThread
from lyra_ros.sim_camera import SimCameraThread
from lyra_ros.srv import BuildWorld, RenderView, WorldFile
from lyra_ros.tf import TfError, TfExtrapolationError, TransformLookup

ERROR_LOG_PERIOD_S = 5.0
"""A build error repeated within this many seconds is not logged again (a bad camera stream
fails every auto-build retry the same way)."""

SKIP_LOG_PERIOD_S = 5.0
"""Seconds between two warnings about frames the map skipped (they repeat at the camera rate)."""

DROP_LOG_PERIOD_S = 5.0
"""Seconds between two warnings about input messages dropped as too large."""

DEPTH_BUFFER_SIZE = 8
"""Depth images kept to pair with images by stamp (``depth_sync_tolerance``)."""

SNAPSHOT_TIMEOUT_S = 5.0
"""~/save_world waits at most this long for the map's step in progress, then saves the served
snapshot instead."""

TIME_LOG_PERIOD_S = 5.0
"""Seconds between two warnings about render times (before the playback start, bad times)."""

PLAYBACK_STATUS_PERIOD_S = 0.5
"""Wall seconds between two ~/status messages while a 4D world plays or a recording runs."""

RECORDING_FINISH_TIMEOUT_S = 30.0
"""~/stop_recording's build waits at most this long for recorded frames still being posed."""


def _stamp_ns(stamp) -> int:
    """A header stamp in nanoseconds; unlike ``rclpy.time.Time.from_msg`` it takes the negative
    seconds a bad publisher may send (such a frame then fails its conversion, counted)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class WorldNode(Node):
    """Builds a Gaussian world from camera input and serves rendered views of it.

    Raises:
        ParameterError: A bad parameter (the node is destroyed again before this is raised).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("lyra_world", **kwargs)
        # What destroy_node() tears down, in case construction stops half-way.
        self._service_threads: list[ServiceThread] = []
        self._cameras: list[SimCameraThread] = []
        self._builder: ThreadPoolExecutor | None = None
        self._worker: MappingWorker | None = None
        self.stopped_cleanly = True
        """False after :meth:`destroy_node` left a worker thread running (see :func:`main`)."""
        try:
            params = declare_world_parameters(self)
        except ParameterError:
            self.destroy_node()
            raise
        self.world_frame = params.world_frame
        self.options = params.build
        self.device = params.device
        self.background = params.background
        self.mapping = params.mapping
        self.files = params.files
        self.max_input_pixels = params.max_input_pixels
        self.depth_sync_tolerance = params.depth_sync_tolerance
        self.playback = params.playback
        self.inputs_dropped = 0
        """Input messages dropped as larger than ``max_input_pixels`` since start-up."""
        self._last_drop_warning: dict[str, float] = {}  # topic -> time of its last warning
        self.world_builder = WorldBuilder(self.device)  # keeps the Lyra model between builds

        self._lock = threading.Lock()
        self._world: Gaussians | None = None
        self._status = self._new_status()
        self._latest_image: Image | CompressedImage | None = None
        # The latest depth images, newest last: an image pairs with the one nearest its stamp.
        self._depths: deque[Image] = deque(maxlen=DEPTH_BUFFER_SIZE)
        self._latest_info: CameraInfo | None = None
        self._attempted: tuple[object, object] | None = None  # inputs of the last build
        self._last_error: tuple[str, float] = ("", -math.inf)
        self._warned_no_info = False
        # Mapping: the worker's map generation the served world comes from (None: not a map),
        # and the image waiting for its depth image.
        self._map_generation: int | None = None
        self._unpaired_image: Image | CompressedImage | None = None
        self._last_skip_warning = -math.inf
        # 4D worlds: the served world and its playback (None: a 3D world or none).
        self._timeline: tuple[Gaussians, Playback] | None = None
        self._last_time_warning: dict[str, float] = {}  # kind -> time of its last warning
        self._last_record_warning = -math.inf
        self._status_playback = ""  # playback state in the last status published
        self._recorder = FeedRecorder(
            params.recording,
            self._prepare_frame,
            self._on_record_skip,
            device=self.device,
            min_interval=params.record_interval,
        )
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lyra_build")
        self._worker = MappingWorker(
            self.mapping.settings,
            self._prepare_frame,
            self._on_map,
            self._on_skip,
            device=self.device,
        )

        self.tf = TransformLookup(self, cache_time=params.tf_cache_time)
        self._create_interfaces(params.image_transport)
        for camera in params.cameras:
            self._cameras.append(
                SimCameraThread(
                    self, camera, self.world_frame, self.tf, self._current_world, self._render_at
                )
            )
        self._publish_status()
        self._worker.start()
        for camera in self._cameras:
            camera.start()
        if self.files.allow_any_path:
            self.get_logger().warning(
                "allow_any_path is true: ~/save_world and ~/load_world accept any path this "
                "process may write or read, and lyra_checkpoint any folder; every participant "
                "on the DDS domain can call them (see docs/security.md)"
            )
        mapping = "fusion" if self._maps_every_world() else "off"
        self.get_logger().info(
            f"lyra_world ready: world_frame={self.world_frame}, source={self.options.source}, "
            f"mapping {mapping}, {len(self._cameras)} simulated camera(s), "
            f"tf via {self.tf.backend}, render device {self.device}"
        )

    def _new_status(self) -> WorldStatus:
        return WorldStatus(
            state=WorldStatus.STATE_WAITING,
            world_frame=self.world_frame,
            last_loss=math.nan,
            world_time=math.nan,
            world_time_start=math.nan,
            world_time_end=math.nan,
        )

    def _maps_every_world(self) -> bool:
        """Whether every world (built, loaded) starts a map that the camera feed grows."""
        return self.mapping.refine or self.options.source == FUSION

    # ------------------------------------------------------------------ interfaces

    def _create_interfaces(self, image_transport: str) -> None:
        if image_transport == "compressed":
            self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, SENSOR_QOS
            )
        else:
            self.create_subscription(Image, "image", self._on_image, SENSOR_QOS)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, SENSOR_QOS)
        if self.get_parameter("use_depth").value:
            self.create_subscription(Image, "depth", self._on_depth, SENSOR_QOS)
        self._status_pub = self.create_publisher(WorldStatus, "~/status", LATCHED_QOS)
        self._points_pub = self.create_publisher(PointCloud2, "~/world_points", LATCHED_QOS)
        self.create_service(Trigger, "~/reset_world", self._on_reset)
        self.create_service(WorldFile, "~/save_world", self._on_save)
        self.create_service(WorldFile, "~/load_world", self._on_load)
        # A build_world call waits for its build: two threads, so that a second call meanwhile
        # is answered "busy" at once instead of waiting and then replacing the world.
        self._service_threads.append(
            ServiceThread(self, "build", BuildWorld, "build_world", self._on_build, threads=2)
        )
        self._service_threads.append(
            ServiceThread(self, "render", RenderView, "render_view", self._on_render)
        )
        self.create_service(Trigger, "~/start_playback", self._on_start_playback)
        self.create_service(Trigger, "~/pause_playback", self._on_pause_playback)
        self.create_service(Trigger, "~/start_recording", self._on_start_recording)
        self.create_service(Trigger, "~/stop_recording", self._on_stop_recording)
        # Wall time: world time and recording counters move on even while /clock stands still.
        self.create_timer(
            PLAYBACK_STATUS_PERIOD_S,
            self._on_status_timer,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    # ------------------------------------------------------------------ inputs

    def _too_large(self, msg: Image | CompressedImage | CameraInfo, topic: str) -> bool:
        """Drop ``msg`` (True) when it declares more than ``max_input_pixels``; warns at most
        every :data:`DROP_LOG_PERIOD_S` seconds per topic."""
        problem = size_problem(msg, self.max_input_pixels)
        if problem is None:
            return False
        self.inputs_dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning.get(topic, -math.inf) >= DROP_LOG_PERIOD_S:
            self._last_drop_warning[topic] = now
            self.get_logger().warning(
                f"dropped a message on '{topic}' ({self.inputs_dropped} so far): {problem}"
            )
        return True

    def _on_image(self, msg: Image | CompressedImage) -> None:
        if self._too_large(
            msg, "image/compressed" if isinstance(msg, CompressedImage) else "image"
        ):
            return
        with self._lock:
            self._latest_image = msg
            self._unpaired_image = msg
        self._offer_frame()
        self._maybe_auto_build()

    def _on_depth(self, msg: Image) -> None:
        if self._too_large(msg, "depth"):
            return
        with self._lock:
            self._depths.append(msg)
        self._offer_frame()
        self._maybe_auto_build()

    def _offer_frame(self) -> None:
        """Hand the newest complete frame to the map and to a recording: the image, and with
        ``use_depth`` the depth image nearest its stamp within ``depth_sync_tolerance``
        (whichever of the two arrived last completes it)."""
        use_depth = self.get_parameter("use_depth").value
        with self._lock:
            to_map, to_record = self._accepts_frames_locked(), self._recorder.active
            if not (to_map or to_record):
                return
            image, depth = self._unpaired_image, None
            if image is None:
                return
            if use_depth:
                depth = self._depth_for_locked(image)
                if depth is None:
                    return  # its depth is still on the way
            self._unpaired_image = None
            item = (image, depth, self._latest_info)
            if to_map:
                self._worker.submit(item)
            if to_record:
                self._recorder.submit(item, _stamp_ns(image.header.stamp) * 1e-9)

    def _depth_for_locked(self, image: Image | CompressedImage) -> Image | None:
        """The buffered depth image whose stamp is nearest ``image``'s, if within
        ``depth_sync_tolerance`` (the newest of equally near ones), else ``None``."""
        want = _stamp_ns(image.header.stamp)
        best, best_gap = None, None
        for depth in self._depths:
            gap = abs(_stamp_ns(depth.header.stamp) - want)
            if best_gap is None or gap <= best_gap:
                best, best_gap = depth, gap
        if best_gap is None or best_gap > self.depth_sync_tolerance * 1e9:
            return None
        return best

    def _accepts_frames_locked(self) -> bool:
        """Frames go to the map while it maps the served world, or (``fusion`` with
        ``build_on_first_image``) while there is no world yet: the first frame starts it."""
        if self._map_generation is not None:
            return True
        return (
            self.options.source == FUSION
            and self._world is None
            and self._status.state != WorldStatus.STATE_BUILDING
            and self.get_parameter("build_on_first_image").value
        )

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if self._too_large(msg, "camera_info"):
            return
        with self._lock:
            self._latest_info = msg

    def _maybe_auto_build(self) -> None:
        """Build from the latest input while there is no world (``build_on_first_image``).

        After a failed build (state ERROR, no world) the next new image or depth image is tried
        again, also one that arrived while the failing build ran; the inputs that failed are
        not.
        """
        if not self.get_parameter("build_on_first_image").value or self.options.source == FUSION:
            return  # fusion: frames start the map in the mapping worker
        use_depth = self.get_parameter("use_depth").value
        with self._lock:
            state = self._status.state
            waiting = self._world is None and state in (
                WorldStatus.STATE_WAITING,
                WorldStatus.STATE_ERROR,
            )
            image = self._latest_image
            depth = self._depth_for_locked(image) if use_depth and image is not None else None
            ready = image is not None and (depth is not None or not use_depth)
            latest = (image, depth)
            tried = self._attempted is not None and all(
                a is b for a, b in zip(latest, self._attempted, strict=True)
            )
        if waiting and ready and not (state == WorldStatus.STATE_ERROR and tried):
            self._start_build(self._latest_inputs)

    def _latest_inputs(self) -> InputFrame:
        """Convert the latest image, depth and camera_info (called in the build worker)."""
        with self._lock:
            image, info = self._latest_image, self._latest_info
            use_depth = self.get_parameter("use_depth").value
            depth = self._depth_for_locked(image) if use_depth and image is not None else None
            self._attempted = (image, depth)
        if image is None:
            raise WorldBuildError("no image received yet on 'image'")
        return self._to_input_frame(image, depth, info)

    def _to_input_frame(
        self, image: Image | CompressedImage, depth: Image | None, info: CameraInfo | None
    ) -> InputFrame:
        fov = self.get_parameter("default_fov_deg").value
        frame = input_frame(image, depth, info, fov, self.max_input_pixels)
        if frame.default_intrinsics and not self._warned_no_info:
            self._warned_no_info = True
            self.get_logger().warning(
                "no camera_info received: using default intrinsics "
                f"(default_fov_deg={self.get_parameter('default_fov_deg').value})"
            )
        return frame

    # ------------------------------------------------------------------ building

    def _start_build(self, make_inputs, options: BuildOptions | None = None) -> Future | None:
        """Start a build in the worker thread (``make_inputs()`` runs there too).

        Returns None, starting nothing, when a build is already running. The state goes to
        BUILDING here and leaves it only when the build has finished, so "busy" answers are
        exact.
        """
        return self._start_job(self._build, make_inputs, options or self.options)

    def _start_job(self, job, *args) -> Future | None:
        """Run ``job(*args)`` in the build thread, state BUILDING until it ends (it serves its
        world or fails); None, starting nothing, when a build is already running."""
        with self._lock:
            if self._status.state == WorldStatus.STATE_BUILDING:
                return None
            self._status.state = WorldStatus.STATE_BUILDING
            future = self._builder.submit(job, *args)
        self._publish_status()
        return future

    def _build(self, make_inputs, options: BuildOptions) -> tuple[bool, str]:
        start = time.perf_counter()
        try:
            frame = make_inputs()
            world_from_camera = self._anchor(frame)
            if options.source == FUSION:
                posed = self._posed_frame(frame, world_from_camera)
                gaussians, stats, generation = self._worker.start_map(
                    lambda world_map: seed_with_frame(world_map, posed), frames=1
                )
                source, map_state = FUSION, (stats, generation)
                seconds = time.perf_counter() - start
            else:
                maps = self._maps_every_world()
                built, observed = self._build_single(frame, world_from_camera, options, maps)
                if built.stages:
                    stages = ", ".join(f"{k} {v:.2f} s" for k, v in built.stages.items())
                    self.get_logger().info(f"{built.source} build stages: {stages}")
                gaussians, source, map_state = built.gaussians, built.source, None
                seconds = built.seconds
                if maps:
                    posed = self._posed_frame(frame, world_from_camera)
                    scale = scene_scale(frame.depth_m, options.lyra_assumed_depth)
                    gaussians, stats, generation = self._worker.start_map(
                        lambda world_map: seed_with_world(world_map, built, observed, posed, scale),
                        frames=1,
                    )
                    map_state = (stats, generation)
                    seconds = time.perf_counter() - start
        except Exception as err:  # never let a build kill the node
            message = str(err) if isinstance(err, WorldBuildError) else f"build failed: {err!r}"
            self._fail(message)
            self._maybe_auto_build()  # input that arrived during this build gets its try
            return False, message
        self._set_world(gaussians.to(self.device), source, seconds, map_state)
        return True, f"built {len(gaussians)} Gaussians from {source}"

    def _build_single(
        self, frame: InputFrame, world_from_camera: np.ndarray, options: BuildOptions, maps: bool
    ) -> tuple[BuiltWorld, int]:
        """A single-frame world, and how many of its first Gaussians are observations.

        For a map (``maps``), a ``depth`` world's occlusion fill is built apart, so the map
        knows it as generated content that later frames replace where they see it.
        """
        rgb, depth, intrinsics = frame.rgb, frame.depth_m, frame.intrinsics
        split = maps and options.fill_occlusions and depth is not None
        if split and resolve_source(options, has_depth=True) == "depth":
            no_fill = replace(options, fill_occlusions=False)
            built = self.world_builder.build(rgb, depth, intrinsics, world_from_camera, no_fill)
            start = time.perf_counter()
            fill = occlusion_fill_gaussians(rgb, depth, intrinsics, world_from_camera, options)
            observed = len(built.gaussians)
            built.gaussians = Gaussians.cat([built.gaussians, fill.to(built.gaussians.device)])
            built.stages["fill"] = time.perf_counter() - start
            built.seconds += built.stages["fill"]
            return built, observed
        built = self.world_builder.build(rgb, depth, intrinsics, world_from_camera, options)
        if built.source == "depth":
            return built, len(built.gaussians)
        if not maps:
            return built, 0
        return built, leading_observations(
            built, rgb, depth, intrinsics, world_from_camera, options
        )

    def _posed_frame(self, frame: InputFrame, world_from_camera: np.ndarray) -> PosedFrame:
        stamp = frame.stamp.nanoseconds * 1e-9
        try:
            return PosedFrame(
                frame.rgb,
                frame.intrinsics,
                world_from_camera,
                frame.depth_m,
                stamp=stamp,
                name=f"{frame.frame_id or 'image'} at {stamp:.3f} s",
            )
        except ValueError as err:
            raise WorldBuildError(f"bad frame for the map: {err}") from err

    def _anchor(self, frame: InputFrame) -> np.ndarray:
        """Pose of the input camera in the world frame at the image stamp.

        Falls back to the latest transform when tf has nothing at the stamp, and to the
        identity (with a warning) when the frame is not on tf at all.
        """
        if not frame.frame_id or frame.frame_id == self.world_frame:
            return np.eye(4)
        try:
            return self.tf.lookup_matrix(self.world_frame, frame.frame_id, frame.stamp, 0.5)[0]
        except TfExtrapolationError as err:
            self.get_logger().warning(f"{err}; anchoring the world with the latest transform")
        except TfError:
            pass
        try:
            return self.tf.lookup_matrix(self.world_frame, frame.frame_id)[0]
        except TfError as err:
            self.get_logger().warning(
                f"no tf {self.world_frame} <- {frame.frame_id} ({err}); "
                "anchoring the world at the identity"
            )
            return np.eye(4)

    def _set_world(
        self,
        gaussians: Gaussians,
        source: str,
        seconds: float,
        map_state: tuple[MappingStats, int] | None = None,
    ) -> None:
        """Serve a new world; ``map_state`` (its map's counters and generation) when a map
        starts with it, None for a world no frames are fused into (any map is dropped). A 4D
        world gets its playback (started now with ``playback_start: build``)."""
        timeline = None
        time_range = gaussians.time_range
        if time_range is not None:
            playback = Playback(time_range, self.playback.time_scale, self._clock_ns)
            if self.playback.start_on_serve:
                playback.start()
            timeline = (gaussians, playback)
        with self._lock:
            self._world = gaussians
            self._timeline = timeline
            self._status.source = source
            self._status.gaussian_count = len(gaussians)
            self._status.build_seconds = float(seconds)
            self._status.error = ""
            if map_state is None:
                self._worker.reset()
                self._map_generation = None
                self._apply_stats_locked(MappingStats())
            else:
                self._map_generation = map_state[1]
                self._apply_stats_locked(map_state[0])
        self._set_state(WorldStatus.STATE_READY)
        self._publish_points(gaussians)
        mapping = ", mapping" if map_state is not None else ""
        if time_range is not None:
            first, last = time_range
            start = "now" if self.playback.start_on_serve else "at ~/start_playback"
            mapping += f", 4D: world time {first:.3f}..{last:.3f} s, playback starts {start}"
        self.get_logger().info(
            f"world ready: {len(gaussians)} Gaussians ({source}, {seconds:.2f} s{mapping})"
        )

    # ------------------------------------------------------------------ mapping

    def _prepare_frame(self, item) -> PosedFrame:
        """A submitted (image, depth, camera_info) as a posed frame (in the mapping worker)."""
        image, depth, info = item
        try:
            frame = self._to_input_frame(image, depth, info)
        except WorldBuildError as err:
            raise FrameSkipError(str(err)) from err
        try:
            return self._posed_frame(frame, self._pose_at_stamp(frame))
        except WorldBuildError as err:
            raise FrameSkipError(str(err)) from err

    def _pose_at_stamp(self, frame: InputFrame) -> np.ndarray:
        """The camera's pose in the world frame at the image stamp, waiting up to
        ``pose_timeout`` for tf; no fallback: a frame without one is skipped."""
        stamp = frame.stamp.nanoseconds * 1e-9
        where = f"{frame.frame_id or '(no frame_id)'} at {stamp:.3f} s"
        if frame.frame_id == self.world_frame:
            return np.eye(4)
        if not frame.frame_id:
            raise FrameSkipError("the image has no frame_id, so no pose")
        if frame.stamp.nanoseconds == 0:
            raise FrameSkipError(f"{where}: the image has no stamp, so no pose at its time")
        try:
            matrix, _ = self.tf.lookup_matrix(
                self.world_frame, frame.frame_id, frame.stamp, self.mapping.pose_timeout
            )
        except TfError as err:
            raise FrameSkipError(f"{where}: no pose in {self.world_frame}: {err}") from err
        if not np.isfinite(matrix).all():
            raise FrameSkipError(f"{where}: the pose has NaN or inf")
        return matrix

    def _on_skip(self, reason: str, count: int) -> None:
        now = time.monotonic()
        if now - self._last_skip_warning >= SKIP_LOG_PERIOD_S:
            self._last_skip_warning = now
            self.get_logger().warning(f"mapping skipped a frame ({count} so far): {reason}")

    def _on_map(self, gaussians: Gaussians | None, stats: MappingStats, generation: int) -> None:
        """A new map snapshot (or new counters) from the worker: swap the served world."""
        started = False
        with self._lock:
            if not self._worker.is_current(generation):
                return  # reset or replaced since
            if self._map_generation != generation:
                # Only a map the feed starts may come unannounced (its counters while it waits
                # for its first frame, then its first snapshot); a build's or load's map is
                # served from its start (_set_world).
                if self._map_generation is not None or not self._accepts_frames_locked():
                    return
                if gaussians is not None:
                    started = True
                    self._map_generation = generation
                    self._status.source = FUSION
                    self._status.build_seconds = 0.0
                    self._status.error = ""
            if gaussians is not None:
                self._world = gaussians
                self._timeline = None  # a map is 3D
                self._status.gaussian_count = len(gaussians)
                if self._status.state != WorldStatus.STATE_BUILDING:
                    self._status.state = WorldStatus.STATE_READY
            self._apply_stats_locked(stats)
        self._publish_status()
        if gaussians is not None:
            self._publish_points(gaussians)
        if started:
            self.get_logger().info(f"map started from the camera feed: {len(gaussians)} Gaussians")

    def _apply_stats_locked(self, stats: MappingStats) -> None:
        status = self._status
        status.keyframes = stats.keyframes
        status.refine_steps = stats.refine_steps
        status.refine_steps_owed = stats.refine_steps_owed
        status.last_loss = stats.last_loss
        status.frames_integrated = stats.frames_integrated
        status.frames_skipped = stats.frames_skipped
        status.frames_dropped = stats.frames_dropped

    def _fail(self, text: str) -> None:
        with self._lock:
            self._status.error = text
            state = WorldStatus.STATE_READY if self._world is not None else WorldStatus.STATE_ERROR
        self._set_state(state)
        now = time.monotonic()
        if text != self._last_error[0] or now - self._last_error[1] >= ERROR_LOG_PERIOD_S:
            self._last_error = (text, now)
            self.get_logger().error(text)

    def _set_state(self, state: int) -> None:
        with self._lock:
            self._status.state = state
        self._publish_status()

    def _publish_status(self) -> None:
        with self._lock:
            self._status.header.stamp = self.get_clock().now().to_msg()
            self._status.header.frame_id = self.world_frame
            self._status.mapping = self._accepts_frames_locked()
            self._fill_time_locked(self._status)
            self._status.recording = self._recorder.active
            self._status.frames_recorded = self._recorder.stats().frames
            self._status_playback = self._status.playback
            msg = WorldStatus()
            for name in msg.get_fields_and_field_types():
                setattr(msg, name, getattr(self._status, name))
        self._status_pub.publish(msg)

    def _fill_time_locked(self, status: WorldStatus) -> None:
        """The playback fields of ``status``, at its header stamp (call with the lock held)."""
        timeline, nan = self._timeline, math.nan
        if timeline is None:
            status.playback, status.world_time = "", nan
            status.world_time_start = status.world_time_end = nan
            return
        playback = timeline[1]
        shown = playback.at(None, self.get_parameter("playback").value)
        status.playback = shown.state
        status.world_time = playback.time_range[1] if shown.time is None else shown.time
        status.world_time_start, status.world_time_end = playback.time_range

    def _on_status_timer(self) -> None:
        """Republish ~/status while a 4D world plays (its world time moves) or a recording runs,
        and once when playback changes state (logged when it finishes)."""
        with self._lock:
            timeline, last = self._timeline, self._status_playback
        if timeline is None and not self._recorder.active and last == "":
            return
        state = ""
        if timeline is not None:
            state = timeline[1].at(None, self.get_parameter("playback").value).state
        if state == last and state != PLAYING and not self._recorder.active:
            return
        if state == FINISHED and last != FINISHED:
            mode = self.get_parameter("playback").value
            what = "shows nothing more" if mode == "once" else "holds its last state"
            self.get_logger().info(
                f"playback finished ({mode}): the world {what}; ~/start_playback plays it again"
            )
        self._publish_status()

    def _publish_points(self, gaussians: Gaussians) -> None:
        """``~/world_points``: at most ``point_cloud_max_points`` centres of ``gaussians``; of a
        4D world, those of its first state (its time slices superposed would smear what moves)."""
        cap = self.get_parameter("point_cloud_max_points").value
        if cap <= 0:
            return
        span = gaussians.time_range
        if span is not None:
            gaussians = gaussians.at_time(span[0])
        keep = torch.randperm(len(gaussians), generator=torch.Generator().manual_seed(0))[:cap]
        means = gaussians.means.detach().cpu()[keep].numpy().astype(np.float32)
        colors = gaussians.colors.detach().cpu()[keep].clamp(0, 1).numpy()
        msg = pointcloud2_from_points(means, colors)
        msg.header.frame_id = self.world_frame
        msg.header.stamp = self.get_clock().now().to_msg()
        self._points_pub.publish(msg)

    # ------------------------------------------------------------------ rendering

    def _current_world(self) -> Gaussians | None:
        return self._world

    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _time_for(self, world: Gaussians, stamp_ns: int) -> tuple[bool, float | None]:
        """Whether ``world`` shows anything at ROS time ``stamp_ns`` (0: now), and the world
        time to render it at (None: a 3D world, rendered without one).

        Raises:
            BadTimeError: a negative ``stamp_ns``.
        """
        if world.times is None:
            return True, None
        timeline = self._timeline
        if timeline is None or timeline[0] is not world:  # no finite times, or just replaced
            time_range = world.time_range
            return True, 0.0 if time_range is None else time_range[0]
        playback = timeline[1]
        shown = playback.at(stamp_ns, self.get_parameter("playback").value)
        if shown.early:
            start = playback.start_time_ns() or 0
            when = f"{stamp_ns * 1e-9:.3f} s" if stamp_ns else "now"
            self._warn_time(
                "early",
                f"a render at ROS time {when} is before the playback start "
                f"({start * 1e-9:.3f} s): showing the world's first state",
            )
        return shown.time is not None, shown.time

    def _warn_time(self, kind: str, text: str) -> None:
        """Warn about a render time, at most every :data:`TIME_LOG_PERIOD_S` s per ``kind``."""
        now = time.monotonic()
        if now - self._last_time_warning.get(kind, -math.inf) >= TIME_LOG_PERIOD_S:
            self._last_time_warning[kind] = now
            self.get_logger().warning(text)

    def _render_at(
        self, world: Gaussians, world_from_camera: np.ndarray, intrinsics: Intrinsics, stamp: Time
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A simulated camera's view at ROS time ``stamp`` (its pose's stamp; 0: now); None
        when the world shows nothing then (``once`` is over)."""
        try:
            shown, world_time = self._time_for(world, stamp.nanoseconds)
        except BadTimeError as err:
            self._warn_time("camera", f"simulated camera frame skipped: {err}")
            return None
        if not shown:
            return None
        return self._render(world, world_from_camera, intrinsics, world_time)

    def _render(
        self,
        world: Gaussians,
        world_from_camera: np.ndarray,
        intrinsics: Intrinsics,
        world_time: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render one view (a 4D world at ``world_time``, seconds): rgb (H, W, 3) uint8 and
        depth (H, W) float32 meters."""
        pose = torch.as_tensor(world_from_camera, dtype=torch.float32)[None]
        cameras = Cameras.from_intrinsics(pose, intrinsics).to(self.device)
        with torch.inference_mode():
            out = render(
                world,
                cameras,
                background=self.background,
                time=world_time,
                time_mode=self.get_parameter("time_mode").value,
            )
        rgb = (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return rgb, out.depth[0, ..., 0].float().cpu().numpy()

    # ------------------------------------------------------------------ services

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            if self._status.state == WorldStatus.STATE_BUILDING:
                response.success, response.message = False, "busy: a build is running"
                return response
            self._worker.reset()
            self._map_generation = None
            self._world = None
            self._timeline = None
            self._status = self._new_status()
            self._latest_image = self._unpaired_image = None
            self._depths.clear()
            self._attempted = None
        self._publish_status()
        response.success, response.message = True, "world dropped; waiting for the next image"
        return response

    def _on_build(self, request: BuildWorld.Request, response: BuildWorld.Response):
        """Runs in the build service's threads: waiting here blocks nothing else."""
        if request.use_latest:
            make_inputs = self._latest_inputs
        else:
            depth = request.depth if request.depth.width > 0 else None
            info = request.camera_info if request.camera_info.width > 0 else None

            def make_inputs() -> InputFrame:
                return self._to_input_frame(request.image, depth, info)

        options = replace(self.options, source=request.source or self.options.source)
        build = self._start_build(make_inputs, options)
        if build is None:
            response.success, response.message = False, "busy: a build is running"
            return response
        success, message = build.result()
        response.success, response.message = success, message
        with self._lock:
            response.gaussian_count = self._status.gaussian_count if success else 0
            response.build_seconds = self._status.build_seconds if success else 0.0
        return response

    def _on_render(self, request: RenderView.Request, response: RenderView.Response):
        """Runs in the render service's thread, so a large render blocks no other service.

        A 4D world is rendered as it is at ROS time ``request.time`` (seconds; 0: now), the
        image stamped with that time."""
        world = self._world
        if world is None:
            response.success, response.message = False, "no world yet"
            return response
        try:
            matrix = pose_to_matrix(request.pose)
            intrinsics = camera_info_to_intrinsics(request.camera_info)
        except ValueError as err:
            response.success, response.message = False, f"bad request: {err}"
            return response
        pixels, limit = intrinsics.width * intrinsics.height, self._max_render_pixels()
        if pixels > limit:
            response.success = False
            response.message = (
                f"refused: {intrinsics.width}x{intrinsics.height} = {pixels} pixels is more than "
                f"max_render_pixels ({limit})"
            )
            return response
        world_time, stamp_ns = None, 0
        if world.times is not None:  # a 3D world ignores the time
            try:
                stamp_ns = seconds_to_ns(request.time)
                shown, world_time = self._time_for(world, stamp_ns)
            except BadTimeError as err:
                self._warn_time("request", f"~/render_view refused: {err}")
                response.success, response.message = False, f"bad request: {err}"
                return response
            if not shown:
                response.success = False
                response.message = (
                    "nothing to show: playback once is over (~/start_playback plays it again)"
                )
                return response
        try:
            rgb, depth = self._render(world, matrix, intrinsics, world_time)
        except ValueError as err:
            response.success, response.message = False, f"bad request: {err}"
            return response
        header = response.image.header
        header.stamp = (
            Time(nanoseconds=stamp_ns).to_msg() if stamp_ns else self.get_clock().now().to_msg()
        )
        header.frame_id = self.world_frame
        response.image = numpy_to_image(rgb, "rgb8", header)
        response.depth = depth_to_image(depth, header)
        response.success, response.message = True, f"rendered {rgb.shape[1]}x{rgb.shape[0]}"
        if world_time is not None:
            response.message += f" at world time {world_time:.3f} s"
        return response

    def _max_render_pixels(self) -> int:
        return self.get_parameter("max_render_pixels").value

    def _on_save(self, request: WorldFile.Request, response: WorldFile.Response):
        """Write the world as a PLY named ``request.path`` inside ``world_dir``, atomically;
        :func:`write_ply` also removes temporary files that killed writers (kill -9, power cut)
        left in the folder. A world being mapped is saved as the map is now (after the step in
        progress), not as last served."""
        with self._lock:
            world, generation = self._world, self._map_generation
        if generation is not None:
            current = self._worker.snapshot(SNAPSHOT_TIMEOUT_S)
            if current is not None and self._worker.is_current(generation):
                world = current[0]
        if world is None:
            response.success, response.message = False, "no world to save"
            return response
        try:
            path = self.files.resolve(request.path, for_writing=True)
            write_ply(path, world)
        except PathRefusedError as err:
            response.success, response.message = False, f"save {err}"
            return response
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"save failed: {err}"
            return response
        response.success, response.message = True, f"saved to {path}"
        response.gaussian_count = len(world)
        return response

    def _on_load(self, request: WorldFile.Request, response: WorldFile.Response):
        with self._lock:
            busy = self._status.state == WorldStatus.STATE_BUILDING
        if busy:
            response.success, response.message = False, "busy: a build is running"
            return response
        start = time.perf_counter()
        try:
            path = self.files.resolve(request.path)
        except PathRefusedError as err:
            response.success, response.message = False, f"load {err}"
            return response
        try:
            gaussians = read_ply(path)
        except (OSError, LyraError, ValueError) as err:
            response.success, response.message = False, f"load failed: {err}"
            return response
        map_state = None
        if self._maps_every_world() and gaussians.times is not None:
            self.get_logger().info(f"{path} is a 4D world: served as is, not mapped")
        elif self._maps_every_world():
            loaded = gaussians
            gaussians, stats, generation = self._worker.start_map(
                lambda world_map: world_map.add_observed(loaded)
            )
            map_state = (stats, generation)
        self._set_world(gaussians.to(self.device), "ply", time.perf_counter() - start, map_state)
        response.success, response.message = True, f"loaded {path}"
        response.gaussian_count = len(gaussians)
        return response

    # ------------------------------------------------------------------ playback, recording

    def _on_start_playback(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            world, timeline = self._world, self._timeline
        if timeline is None:
            response.success = False
            response.message = "no world with time to play" + (
                " (the world is 3D)" if world is not None else ""
            )
            return response
        response.success, response.message = True, timeline[1].start()
        self._publish_status()
        return response

    def _on_pause_playback(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            timeline = self._timeline
        if timeline is None:
            response.success, response.message = False, "no world with time to pause"
            return response
        mode = self.get_parameter("playback").value
        response.success, response.message = timeline[1].pause(mode)
        self._publish_status()
        return response

    def _on_start_recording(self, request: Trigger.Request, response: Trigger.Response):
        if not self.get_parameter("use_depth").value:
            response.success = False
            response.message = "recording needs depth images: use_depth is false"
            return response
        if not self._recorder.start():
            frames = self._recorder.stats().frames
            response.success, response.message = False, f"already recording ({frames} frames)"
            return response
        response.success = True
        interval = self._recorder.min_interval
        rate = f", at most {1.0 / interval:g} per second of their stamps" if interval > 0 else ""
        response.message = (
            f"recording posed RGB-D frames (the newest {self._recorder.config.max_frames} kept"
            f"{rate})"
        )
        self._publish_status()
        return response

    def _on_stop_recording(self, request: Trigger.Request, response: Trigger.Response):
        """Answers at once; the 4D world builds in the build thread (state BUILDING)."""
        with self._lock:
            busy = self._status.state == WorldStatus.STATE_BUILDING
        if not self._recorder.active:
            response.success, response.message = False, "not recording"
            return response
        if busy:
            response.success = False
            response.message = "busy: a build is running (still recording; stop again later)"
            return response
        recording = self._recorder.stop()
        assert recording is not None
        frames = recording.stats().frames
        if self._start_job(self._build_recording, recording) is None:
            recording.discard()
            response.success = False
            response.message = "busy: a build started meanwhile; the recording is dropped"
            return response
        response.success = True
        response.message = f"building a 4D world from {frames} recorded frame(s)"
        return response

    def _build_recording(self, recording: Recording) -> tuple[bool, str]:
        """The build thread's job for ``~/stop_recording``: the recorded 4D world, served."""
        start = time.perf_counter()
        try:
            mapper = recording.finish(RECORDING_FINISH_TIMEOUT_S)
            if len(mapper) == 0:
                raise WorldBuildError(
                    "the recording holds no frames (none had a depth image and a tf pose at its "
                    "stamp)"
                )
            gaussians = mapper.build()
        except Exception as err:  # never let a build kill the node
            message = str(err) if isinstance(err, WorldBuildError) else f"recording failed: {err!r}"
            self._fail(message)
            return False, message
        stats = mapper.stats
        self.get_logger().info(
            f"recorded {stats['frames']} frames ({stats['dropped_frames']} dropped): "
            f"{stats['static_gaussians']} static and {stats['dynamic_gaussians']} dynamic "
            "Gaussians"
        )
        self._set_world(gaussians.to(self.device), "recording", time.perf_counter() - start)
        return True, f"built a 4D world of {len(gaussians)} Gaussians from the recording"

    def _on_record_skip(self, reason: str, count: int) -> None:
        now = time.monotonic()
        if now - self._last_record_warning >= SKIP_LOG_PERIOD_S:
            self._last_record_warning = now
            self.get_logger().warning(f"{reason} ({count} so far)")

    def destroy_node(self) -> None:
        """Stop the service threads, cameras and build worker (whatever was created), then the
        node; safe to call on a node whose construction failed, and twice."""
        stopped = all([helper.shutdown() for helper in self._service_threads])
        stopped &= all([camera.stop() for camera in self._cameras])
        if getattr(self, "_recorder", None) is not None:
            stopped &= self._recorder.discard()
        if self._worker is not None:
            stopped &= self._worker.stop()
        if self._builder is not None:
            self._builder.shutdown(wait=False, cancel_futures=True)
        self._service_threads, self._cameras, self._builder = [], [], None
        self._worker = None
        self.stopped_cleanly = self.stopped_cleanly and stopped
        if not stopped:
            # A thread still inside rcl (e.g. publishing): destroying the node under it could
            # crash the process; its resources go with the process instead.
            self.get_logger().warning("a worker thread did not stop in time; exiting without it")
            return
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown (console script ``lyra-world``).

    ``lyra-world [--config FILE] [--ros-args ...]``: FILE (default: the package's
    config/world.yaml; ``none``: no file) is passed to ROS as ``--params-file``; ROS arguments
    follow as usual. A bad parameter or config file ends it with one line on stderr naming the
    problem and exit code 2.
    """
    use_large_data_transport()  # images over 512 KB would leave Fast DDS shared memory
    try:
        ros_args = ros_args_with_config(sys.argv if args is None else args)
    except ConfigError as err:
        print(f"lyra-world: {err}", file=sys.stderr)
        return 2
    rclpy.init(args=ros_args)
    node = None
    try:
        node = WorldNode()
        # One executor thread: long work (rendering, building) runs in the node's own threads.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ParameterError as err:
        print(f"lyra-world: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if node is not None and not node.stopped_cleanly:
        # A worker thread still inside a long step (a render, a map step of a large world):
        # tearing the interpreter down under it can crash the process (SIGSEGV or SIGABRT in
        # native code). Its work is moot now; leave without the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
