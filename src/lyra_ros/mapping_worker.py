"""The mapping worker: posed camera frames fused into a growing Gaussian map in a thread of its own.

The world node hands every incoming camera frame to :meth:`MappingWorker.submit`. The worker
keeps at most one waiting frame (a newer one replaces it; the replaced one is counted as
dropped), so the map always works on the newest frame and no queue builds up. In its thread it

1. turns the frame into a :class:`~lyra_core.mapping.frames.PosedFrame` with the node's
   ``prepare`` callable (message conversion and the tf pose of the camera at the frame's stamp;
   :class:`FrameSkipError` or any other error skips the frame, counted);
2. integrates it into the :class:`~lyra_core.mapping.gaussian_map.GaussianMap` (Gaussians added
   from depth where the map is unobserved; a keyframe when the camera moved or turned enough),
   at most ``max_frames_per_second`` frames per second;
3. runs the refinement steps keyframes owe (``steps_per_keyframe`` each, at most
   :data:`STEP_BACKLOG_KEYFRAMES` keyframes' worth owed at a time), one step at a time and at most
   ``max_steps_per_second``: it sleeps to stay under that rate; frames and steps that are both
   due take turns;
4. after every integration or step it rests in proportion to the work's duration, so that it
   works at most ``max_load`` of the time (the cost bound that holds whatever the frame size);
5. every ``publish_period`` seconds, when the map changed, hands a detached snapshot of the map
   (:meth:`GaussianMap.gaussians`) and the counters (:class:`MappingStats`) to ``publish``. The
   node serves that snapshot by swapping one reference, so rendering never waits for mapping.

Each map operation runs under the map lock; :meth:`snapshot` takes it too, so it waits for at
most one step or one integration. :meth:`start_map` (a build that starts a new map) seeds the
new map in the caller's thread while the worker goes on with the current one, and swaps it in
under the lock. :meth:`reset` never waits: it bumps a generation number; whatever the worker
was doing for the old generation is dropped, and a snapshot already on its way is refused by the
receiver (:meth:`is_current`).

How a map starts: :func:`seed_with_frame` (``fusion``: the first frame's Gaussians from depth)
and :func:`seed_with_world` (``refine``: a single-frame world, its observations as observed
Gaussians and the rest as generated content; :func:`leading_observations` counts a ``lyra``
world's observations).

ROS-free: the node passes callables, so this module is testable without DDS.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.mapping.frames import PosedFrame
from lyra_core.mapping.gaussian_map import GaussianMap, MapConfig
from lyra_core.mapping.world_builder import BuildOptions, BuiltWorld
from lyra_core.scene.gaussians import Gaussians
from lyra_core.scene.rgbd import gaussians_from_rgbd
from lyra_core.utils.errors import LyraError, WorldBuildError

__all__ = [
    "STEP_BACKLOG_KEYFRAMES",
    "FrameSkipError",
    "MappingSettings",
    "MappingStats",
    "MappingWorker",
    "leading_observations",
    "scene_scale",
    "seed_with_frame",
    "seed_with_world",
]

STEP_BACKLOG_KEYFRAMES = 4
"""Refinement steps owed are capped at this many keyframes' worth (``steps_per_keyframe``
each): keyframes that come faster than the step rate allows do not pile up work."""


class FrameSkipError(LyraError, ValueError):
    """A frame the map cannot use (no pose at its stamp, bad data); the message says why."""


@dataclass(frozen=True)
class MappingSettings:
    """The map's configuration and the worker's cost bounds.

    Attributes:
        map_config: the :class:`GaussianMap` settings (``steps_per_keyframe`` there is unused:
            the worker runs the steps itself).
        steps_per_keyframe: refinement steps owed per keyframe (0: no refinement).
        max_steps_per_second: refinement steps per second at most.
        max_frames_per_second: frames integrated per second at most.
        publish_period: seconds between two snapshots handed to ``publish``.
        max_load: share of the time the worker may work, in (0, 1]: after an integration or a
            step that took ``t`` seconds it rests ``t (1 - max_load) / max_load`` seconds, so
            mapping costs at most this share of the (multi-threaded) CPU time whatever the
            frame size.
    """

    map_config: MapConfig
    steps_per_keyframe: int = 10
    max_steps_per_second: float = 2.0
    max_frames_per_second: float = 2.0
    publish_period: float = 1.0
    max_load: float = 0.5

    def __post_init__(self) -> None:
        if self.steps_per_keyframe < 0:
            raise ValueError(f"steps_per_keyframe must be >= 0, got {self.steps_per_keyframe}")
        for name in ("max_steps_per_second", "max_frames_per_second", "publish_period"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 < self.max_load <= 1.0:
            raise ValueError(f"max_load must be in (0, 1], got {self.max_load!r}")


@dataclass(frozen=True)
class MappingStats:
    """Counters of the map since it started (what ``~/status`` reports).

    Attributes:
        gaussians: Gaussians in the map.
        generated: of them, generated content (not from observations).
        keyframes: keyframes held.
        refine_steps: refinement steps run.
        refine_steps_owed: refinement steps keyframes still owe.
        last_loss: mean loss of the latest steps; NaN before the first.
        frames_integrated: frames added to the map.
        frames_skipped: frames not used (no pose at the stamp, bad data, no depth to start).
        frames_dropped: waiting frames replaced by newer ones.
    """

    gaussians: int = 0
    generated: int = 0
    keyframes: int = 0
    refine_steps: int = 0
    refine_steps_owed: int = 0
    last_loss: float = math.nan
    frames_integrated: int = 0
    frames_skipped: int = 0
    frames_dropped: int = 0


@dataclass(frozen=True)
class _MapCounts:
    gaussians: int = 0
    generated: int = 0
    keyframes: int = 0
    steps: int = 0
    last_loss: float = math.nan


PublishFn = Callable[[Gaussians | None, MappingStats, int], None]
"""``publish(snapshot, stats, generation)``: a new map snapshot (None: only the counters
changed) of map generation ``generation``; the receiver serves it only while
:meth:`MappingWorker.is_current` says that generation is still current (checked under the
receiver's own lock, which :meth:`MappingWorker.reset` callers hold too)."""


class MappingWorker:
    """Fuses submitted frames into a :class:`GaussianMap` in its own thread (module docstring).

    Args:
        settings: map configuration and cost bounds.
        prepare: ``prepare(item) -> PosedFrame`` for a submitted item (runs in the worker thread;
            may block, e.g. waiting for tf); raises :class:`FrameSkipError` for a frame to skip.
        publish: receives snapshots and counters (:data:`PublishFn`; runs in the worker thread,
            with no lock of the worker held).
        on_skip: ``on_skip(reason, skipped_so_far)`` for every skipped frame (log it throttled).
        device: where the map lives and refines.
    """

    def __init__(
        self,
        settings: MappingSettings,
        prepare: Callable[[Any], PosedFrame],
        publish: PublishFn,
        on_skip: Callable[[str, int], None] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self._prepare = prepare
        self._publish = publish
        self._on_skip = on_skip or (lambda reason, count: None)
        self._device = torch.device(device)
        self._map = GaussianMap(settings.map_config, device=self._device)
        self._map_lock = threading.Lock()  # every use of self._map
        self._cond = threading.Condition()  # the fields below
        self._pending: Any = None
        self._has_pending = False
        self._generation = 0
        self._needs_reset = False
        self._steps_owed = 0
        self._integrated = self._skipped = self._dropped = 0
        self._map_changed = self._stats_changed = False
        self._counts = _MapCounts()  # of the map after its latest operation
        self._next_frame = self._next_step = self._resume_at = 0.0
        self._last_work = ""
        self._last_publish = -math.inf
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="lyra_mapping", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread (after its current step); False if it still runs after ``timeout``."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        return not self._thread.is_alive()

    def submit(self, item: Any) -> bool:
        """Offer a frame; it replaces a frame still waiting (counted dropped). Never blocks.

        Returns:
            True when a waiting frame was replaced.
        """
        with self._cond:
            replaced = self._has_pending
            if replaced:
                self._dropped += 1
                self._stats_changed = True
            self._pending, self._has_pending = item, True
            self._cond.notify_all()
        return replaced

    def reset(self) -> None:
        """Forget the map and the waiting frame, at once (the worker clears the map itself)."""
        with self._cond:
            self._generation += 1
            self._needs_reset = True
            self._pending, self._has_pending = None, False
            self._steps_owed = 0
            self._integrated = self._skipped = self._dropped = 0
            self._map_changed = self._stats_changed = False
            self._counts = _MapCounts()
            self._cond.notify_all()

    def start_map(
        self, seed: Callable[[GaussianMap], None], frames: int = 0
    ) -> tuple[Gaussians, MappingStats, int]:
        """Start a new map in the caller's thread: ``seed(map)`` fills an empty map (adds
        Gaussians, integrates a first frame, registers keyframes), which then replaces the
        current one. Returns its first snapshot, counters and generation. Owes
        ``steps_per_keyframe`` refinement steps when it has keyframes; ``frames`` is the number
        of frames ``seed`` integrated (the count of integrated frames starts there).

        The worker keeps mapping the current map while ``seed`` runs; when ``seed`` raises,
        nothing changes.
        """
        new_map = GaussianMap(self.settings.map_config, device=self._device)
        seed(new_map)
        snapshot = new_map.gaussians()
        with self._map_lock:
            self._map = new_map
            self._count_map()
            with self._cond:
                self._generation += 1
                self._needs_reset = False
                self._steps_owed = self.settings.steps_per_keyframe if new_map.keyframes else 0
                self._integrated, self._skipped, self._dropped = frames, 0, 0
                self._map_changed = self._stats_changed = False
                self._last_publish = time.monotonic()
                stats = self._stats_locked()
                generation = self._generation
                self._cond.notify_all()
        return snapshot, stats, generation

    def snapshot(self, timeout: float = 5.0) -> tuple[Gaussians, MappingStats] | None:
        """The map now (waiting at most ``timeout`` s for the step in progress); None on timeout."""
        if not self._map_lock.acquire(timeout=timeout):
            return None
        try:
            snapshot = self._map.gaussians()
            with self._cond:
                stats = self._stats_locked()
        finally:
            self._map_lock.release()
        return snapshot, stats

    def is_current(self, generation: int) -> bool:
        """True while no :meth:`reset` or :meth:`start_map` came after ``generation``'s map."""
        with self._cond:
            return self._generation == generation

    @property
    def generation(self) -> int:
        """The current map's generation (changes with every :meth:`reset` and
        :meth:`start_map`)."""
        with self._cond:
            return self._generation

    def stats(self) -> MappingStats:
        """The counters as last seen (never waits for the map)."""
        with self._cond:
            return self._stats_locked()

    @property
    def idle(self) -> bool:
        """No frame waiting, none being worked on and no refinement step owed."""
        with self._cond:
            return not (self._has_pending or self._busy or self._steps_owed)

    # ------------------------------------------------------------------ the thread

    def _stats_locked(self) -> MappingStats:
        """Counters (call with ``self._cond`` held; map values as of its latest operation)."""
        counts = self._counts
        return MappingStats(
            gaussians=counts.gaussians,
            generated=counts.generated,
            keyframes=counts.keyframes,
            refine_steps=counts.steps,
            refine_steps_owed=self._steps_owed,
            last_loss=counts.last_loss,
            frames_integrated=self._integrated,
            frames_skipped=self._skipped,
            frames_dropped=self._dropped,
        )

    def _count_map(self) -> None:
        """Record the map's counts (call with the map lock held, not ``self._cond``)."""
        loss = self._map.last_loss
        counts = _MapCounts(
            gaussians=len(self._map),
            generated=int((~self._map.observed).sum()),
            keyframes=len(self._map.keyframes),
            steps=self._map.steps,
            last_loss=math.nan if loss is None else float(loss),
        )
        with self._cond:
            self._counts = counts

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                now = time.monotonic()
                job = self._next_job(now)
                if job is None:
                    self._cond.wait(self._wait_time(now))
                    continue
                generation = self._generation
                needs_reset, self._needs_reset = self._needs_reset, False
                item = None
                if job == "frame":
                    item, self._pending, self._has_pending = self._pending, None, False
                    self._next_frame = now + 1.0 / self.settings.max_frames_per_second
                elif job == "step":
                    self._next_step = now + 1.0 / self.settings.max_steps_per_second
                self._busy = True
            work = 0.0
            try:
                if needs_reset:
                    with self._map_lock:
                        if self._generation_is(generation):
                            self._map.reset()
                            self._count_map()
                if job == "frame":
                    work = self._integrate(item, generation)
                elif job == "step":
                    work = self._refine_step(generation)
                elif job == "publish":
                    self._publish_now(generation)
            finally:
                with self._cond:
                    self._busy = False
                    if job in ("frame", "step"):
                        self._last_work = job
                        load = self.settings.max_load
                        self._resume_at = time.monotonic() + work * (1.0 - load) / load

    def _next_job(self, now: float) -> str | None:
        """What to do now (call with ``self._cond`` held): a due publish, a frame, a step."""
        due = now - self._last_publish >= self.settings.publish_period
        if (self._map_changed or self._stats_changed) and due:
            return "publish"
        if self._needs_reset:
            return "reset"
        if now < self._resume_at:
            return None  # resting: max_load
        frame = self._has_pending and now >= self._next_frame
        step = self._steps_owed > 0 and now >= self._next_step
        if frame and step:  # both due: take turns, so neither starves the other
            return "step" if self._last_work == "frame" else "frame"
        return "frame" if frame else "step" if step else None

    def _wait_time(self, now: float) -> float:
        """Seconds until the next job may be due (``self._cond`` held); woken earlier by news."""
        times = [1.0]
        if self._map_changed or self._stats_changed:
            times.append(self._last_publish + self.settings.publish_period - now)
        if self._has_pending:
            times.append(max(self._next_frame, self._resume_at) - now)
        if self._steps_owed > 0:
            times.append(max(self._next_step, self._resume_at) - now)
        return max(min(times), 0.0)

    def _integrate(self, item: Any, generation: int) -> float:
        """Prepare and integrate one frame; the seconds of work (not waiting for a pose)."""
        work = 0.0
        try:
            frame = self._prepare(item)
            with self._map_lock:
                if not self._generation_is(generation):
                    return 0.0  # reset or restarted meanwhile: the frame belongs to the old map
                if len(self._map) == 0 and frame.depth is None:
                    raise FrameSkipError(f"{frame.label}: no depth, and the map starts from depth")
                start = time.perf_counter()
                result = self._map.integrate(frame, refine=False)
                self._count_map()
                work = time.perf_counter() - start
        except Exception as err:  # a bad frame must never stop the worker
            reason = str(err) if isinstance(err, FrameSkipError) else f"frame not used: {err!r}"
            with self._cond:
                if self._generation != generation:
                    return work
                self._skipped += 1
                self._stats_changed = True
                count = self._skipped
            self._on_skip(reason, count)
            return work
        with self._cond:
            if self._generation != generation:
                return work
            self._integrated += 1
            self._map_changed = True
            if result.keyframe:
                cap = STEP_BACKLOG_KEYFRAMES * self.settings.steps_per_keyframe
                self._steps_owed = min(self._steps_owed + self.settings.steps_per_keyframe, cap)
        return work

    def _refine_step(self, generation: int) -> float:
        """One refinement step; its seconds."""
        with self._map_lock:
            if not self._generation_is(generation):
                return 0.0
            start = time.perf_counter()
            self._map.refine(1)
            self._count_map()
            work = time.perf_counter() - start
        with self._cond:
            if self._generation == generation:
                self._steps_owed = max(self._steps_owed - 1, 0)
                self._map_changed = True
        return work

    def _generation_is(self, generation: int) -> bool:
        with self._cond:
            return self._generation == generation

    def _publish_now(self, generation: int) -> None:
        snapshot = None
        with self._map_lock:
            with self._cond:
                if self._generation != generation:
                    return
                map_changed = self._map_changed
                self._map_changed = self._stats_changed = False
                self._last_publish = time.monotonic()
                stats = self._stats_locked()
            if map_changed:
                snapshot = self._map.gaussians()
        # No lock held while calling out: the receiver may take its own lock and call back
        # (is_current), and a reset() meanwhile makes it drop this generation's snapshot.
        self._publish(snapshot, stats, generation)


# ---------------------------------------------------------------------- starting a map


def leading_observations(
    built: BuiltWorld,
    rgb: np.ndarray,
    depth_m: np.ndarray | None,
    intrinsics: Intrinsics,
    world_from_camera: np.ndarray,
    options: BuildOptions,
) -> int:
    """How many of a ``lyra`` world's first Gaussians are the input frame's observations.

    The builder (:func:`lyra_core.mapping.world_builder.anchor_to_observation`) puts the input
    view's own Gaussians from its measured depth first. They are rebuilt here the same way and
    compared with the world's first Gaussians; 0 when they differ or without measured depth
    (the assumed-plane Gaussians are no observation), so the map then treats the whole world as
    generated content. An adapter: a count kept by ``BuiltWorld`` would make it unnecessary.
    """
    if depth_m is None:
        return 0
    depth = depth_m
    max_depth = options.max_depth if options.max_depth > 0 else math.inf
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth >= options.min_depth) & (depth <= max_depth)
    try:
        observed = gaussians_from_rgbd(
            rgb,
            np.where(valid, depth, 0.0).astype(np.float32),
            intrinsics,
            torch.as_tensor(world_from_camera, dtype=torch.float32),
            stride=options.depth_stride,
            opacity=options.opacity,
            min_depth=options.min_depth,
            max_depth=max_depth,
        )
    except ValueError:
        return 0
    count = len(observed)
    if count == 0 or count > len(built.gaussians):
        return 0
    first = built.gaussians.means[:count].detach().float().cpu()
    return count if torch.allclose(first, observed.means, atol=1e-4) else 0


def scene_scale(depth_m: np.ndarray | None, assumed_depth: float) -> float:
    """Meters: the median valid depth of a frame (``assumed_depth`` without depth)."""
    if depth_m is not None:
        valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
        if valid.size:
            return float(np.median(valid))
    return float(assumed_depth)


def seed_with_frame(world_map: GaussianMap, frame: PosedFrame) -> None:
    """A map started from one frame (``fusion``): its Gaussians from depth, its first keyframe."""
    if frame.depth is None:
        raise WorldBuildError(
            "the fusion source needs a depth image registered to the colour image (none given)"
        )
    if world_map.integrate(frame, refine=False).added == 0:
        raise WorldBuildError("the depth image has no valid pixels in [min_depth, max_depth]")


def seed_with_world(
    world_map: GaussianMap, built: BuiltWorld, observed: int, frame: PosedFrame, scale: float
) -> None:
    """A map started from a single-frame world (``refine``): its first ``observed`` Gaussians
    as observations, the rest (a ``depth`` world's occlusion fill, a ``lyra`` world's generated
    content) as generated content that frames with depth replace where they see it; the input
    frame as the first keyframe (integrated when none of the world counts as observed: a
    ``lyra`` world without measured depth)."""
    world_map.scene_scale = world_map.scene_scale or scale
    gaussians = built.gaussians.detach().to("cpu")
    if observed:
        world_map.add_observed(gaussians[:observed])
    if observed < len(gaussians):
        world_map.add_generated(gaussians[observed:])
    if observed:
        world_map.add_keyframe(frame)
    else:
        world_map.integrate(frame, refine=False)
