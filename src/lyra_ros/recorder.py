"""Recording the camera feed into a 4D world (``~/start_recording``, ``~/stop_recording``).

Between start and stop, the world node hands every paired image and depth image (the pairing
of the mapping path) to :meth:`FeedRecorder.submit`. A thread of the recording turns each into
a :class:`~lyra_core.mapping.frames.PosedFrame` with the node's ``prepare`` callable (the
mapping path's conversion and tf pose at the frame's stamp; a frame it cannot use is skipped
and counted) and adds it to a :class:`~lyra_core.mapping.dynamic.DynamicMapper`, which keeps at
most ``max_frames`` frames (the newest; older ones are dropped and counted). With a
``min_interval`` (the node's ``1 / record_rate``), a frame whose stamp is closer than
``RATE_SLACK x min_interval`` after the last one taken is passed over at once (counted as
thinned), so a recording of ``max_frames`` spans ``max_frames x min_interval`` seconds of a fast
camera instead of its last few. Frames wait for
their pose in a queue of :data:`QUEUE_SIZE` (beyond it the oldest waiting frame is dropped,
counted), so a slow tf never blocks the node.

:meth:`FeedRecorder.stop` closes the recording and returns it; :meth:`Recording.finish` (run in
the node's build thread) waits for the frames still waiting, and
:meth:`~lyra_core.mapping.dynamic.DynamicMapper.build` then makes the 4D world: world time 0 is
the first recorded frame's stamp.

ROS-free: the node passes callables, so this module is testable without DDS.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lyra_core.mapping.dynamic import DynamicMapper, DynamicMapperConfig
from lyra_core.mapping.frames import PosedFrame
from lyra_ros.mapping_worker import FrameSkipError

__all__ = ["QUEUE_SIZE", "RATE_SLACK", "FeedRecorder", "Recording", "RecordingStats"]

QUEUE_SIZE = 8
"""Frames that may wait for their pose; beyond it the oldest waiting one is dropped."""

RATE_SLACK = 0.9
"""Share of ``min_interval`` two taken frames' stamps must be apart (slack for stamp jitter:
a 30 Hz camera recorded at 10 Hz keeps every third frame although its stamps wobble)."""


@dataclass(frozen=True)
class RecordingStats:
    """Counters of one recording.

    Attributes:
        frames: frames the mapper holds (at most ``max_frames``).
        skipped: frames not used (no pose at the stamp, bad data, a stamp not after the last).
        dropped: frames dropped: waiting in a full queue, or the oldest beyond ``max_frames``.
        thinned: frames passed over by the rate limit (``min_interval``).
    """

    frames: int = 0
    skipped: int = 0
    dropped: int = 0
    thinned: int = 0


class Recording:
    """One recording: its frames, the thread that poses them, its counters."""

    def __init__(
        self,
        mapper: DynamicMapper,
        prepare: Callable[[Any], PosedFrame],
        on_skip: Callable[[str, int], None],
        min_interval: float = 0.0,
    ) -> None:
        self.mapper = mapper
        self.min_interval = min_interval
        self._prepare = prepare
        self._on_skip = on_skip
        self._cond = threading.Condition()
        self._queue: deque[Any] = deque()
        self._closed = self._discarded = False
        self._skipped = self._queue_dropped = self._thinned = 0
        self._last_taken: float | None = None
        self._thread = threading.Thread(target=self._loop, name="lyra_recording", daemon=True)
        self._thread.start()

    def submit(self, item: Any, stamp: float | None = None) -> None:
        """Queue a frame (never blocks; ignored after :meth:`close`).

        Args:
            item: what ``prepare`` turns into a posed frame.
            stamp: the frame's stamp, seconds, for the rate limit (None: always taken). A stamp
                before the last taken one (a clock set back) is taken; the mapper decides.
        """
        with self._cond:
            if self._closed:
                return
            if stamp is not None and self.min_interval > 0:
                last = self._last_taken
                if last is not None and 0 <= stamp - last < RATE_SLACK * self.min_interval:
                    self._thinned += 1
                    return
                self._last_taken = stamp
            if len(self._queue) >= QUEUE_SIZE:
                self._queue.popleft()
                self._queue_dropped += 1
            self._queue.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        """Take no more frames; the ones waiting are still posed and added."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self, timeout: float = 5.0) -> bool:
        """Close, drop the waiting frames and stop the thread; False if it still runs."""
        with self._cond:
            self._closed = self._discarded = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self, timeout: float = 30.0) -> DynamicMapper:
        """Close and wait (at most ``timeout`` s) until the waiting frames are added; the mapper.

        Raises:
            TimeoutError: frames still being posed after ``timeout``.
        """
        self.close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"recorded frames still waiting for their pose after {timeout} s")
        return self.mapper

    def stats(self) -> RecordingStats:
        with self._cond:
            return RecordingStats(
                frames=len(self.mapper),
                skipped=self._skipped,
                dropped=self._queue_dropped + self.mapper.dropped,
                thinned=self._thinned,
            )

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue or self._discarded:
                    return
                item = self._queue.popleft()
            try:
                frame = self._prepare(item)
                with self._cond:
                    if self._discarded:
                        return
                    self.mapper.add(frame)
            except Exception as err:  # a bad frame must never stop the recording
                reason = str(err) if isinstance(err, (FrameSkipError, ValueError)) else repr(err)
                with self._cond:
                    self._skipped += 1
                    count = self._skipped
                self._on_skip(f"recording skipped a frame: {reason}", count)


class FeedRecorder:
    """Starts and stops :class:`Recording` s of the feed (module docstring).

    Args:
        config: the mapper's settings (``max_frames`` bounds a recording).
        prepare: ``prepare(item) -> PosedFrame`` for a submitted item (runs in the recording's
            thread; may block waiting for tf); raises for a frame to skip.
        on_skip: ``on_skip(reason, skipped_so_far)`` for every skipped frame (log it throttled).
        device: where the mapper builds.
        min_interval: seconds (by stamp) between the frames a recording takes (0: every frame).
    """

    def __init__(
        self,
        config: DynamicMapperConfig,
        prepare: Callable[[Any], PosedFrame],
        on_skip: Callable[[str, int], None] | None = None,
        device: torch.device | str = "cpu",
        min_interval: float = 0.0,
    ) -> None:
        if not (math.isfinite(min_interval) and min_interval >= 0):
            raise ValueError(f"min_interval must be finite and >= 0, got {min_interval}")
        self.config = config
        self.min_interval = min_interval
        self.device = torch.device(device)
        self._prepare = prepare
        self._on_skip = on_skip or (lambda reason, count: None)
        self._lock = threading.Lock()
        self._recording: Recording | None = None

    @property
    def active(self) -> bool:
        """A recording takes frames now."""
        return self._recording is not None

    def start(self) -> bool:
        """Start a recording; False (nothing changes) when one is running."""
        with self._lock:
            if self._recording is not None:
                return False
            mapper = DynamicMapper(self.config, device=self.device)
            self._recording = Recording(mapper, self._prepare, self._on_skip, self.min_interval)
            return True

    def submit(self, item: Any, stamp: float | None = None) -> None:
        """Offer a frame (its stamp in seconds, for the rate limit) to the running recording
        (none: ignored). Never blocks."""
        recording = self._recording
        if recording is not None:
            recording.submit(item, stamp)

    def stop(self) -> Recording | None:
        """End the running recording (None: none ran) and return it, closed; finish it with
        :meth:`Recording.finish`."""
        with self._lock:
            recording, self._recording = self._recording, None
        if recording is not None:
            recording.close()
        return recording

    def stats(self) -> RecordingStats:
        """Counters of the running recording (zero when none runs)."""
        recording = self._recording
        return recording.stats() if recording is not None else RecordingStats()

    def discard(self, timeout: float = 5.0) -> bool:
        """Drop the running recording, if any; False if its thread did not stop in time."""
        with self._lock:
            recording, self._recording = self._recording, None
        return recording.discard(timeout) if recording is not None else True
