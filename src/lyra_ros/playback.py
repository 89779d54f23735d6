"""Playing a 4D world on ROS time: which world time a render at a given ROS time shows.

A 4D world (:class:`~lyra_core.scene.gaussians.Gaussians` with ``times``) runs over its
``time_range`` ``[t0, t1]`` (seconds; ``span = t1 - t0``). :class:`Playback` maps a ROS time
``t`` (nanoseconds on the node's clock: the stamp of a simulated camera's pose, the time of a
``~/render_view`` request; with ``use_sim_time`` that clock follows ``/clock``) to a world time:

- the elapsed world time is ``e = (t - t_start) * time_scale`` seconds, ``t_start`` the ROS time
  playback started (``playback_start``: ``build``, when the world is served; ``service``, at
  ``~/start_playback``);
- ``loop``: ``t0 + (e mod span)``, forever;
- ``hold``: ``t0 + e`` up to the end, then ``t1`` (the last state) forever (state ``finished``);
- ``once``: ``t0 + e`` up to the end; after it the world is over (state ``finished``): there is
  no world time (``None``) and the node renders nothing (simulated cameras publish nothing more,
  ``~/render_view`` refuses) until playback starts again.

A time before the start (``e < 0``: a pose older than the start, a clock that jumped back) shows
the first state ``t0`` in every mode and is flagged ``early`` (the node warns, throttled). Before
playback starts (``service``, state ``waiting``) the world shows its first state; while paused
(``~/pause_playback``) it shows the state it was paused at, whatever the time asked, and
:meth:`Playback.start` resumes from there. A time that is NaN, infinite or negative is refused
(:class:`BadTimeError`, :func:`seconds_to_ns`).

A start requested while the clock still reads 0 (``use_sim_time`` before the first ``/clock``
message) is held back: it happens at the first query that finds the clock running, so world
time starts with the simulation's clock, not at its epoch.

ROS-free and thread-safe: the node's camera threads, render thread and executor share one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "FINISHED",
    "PAUSED",
    "PLAYBACK_MODES",
    "PLAYBACK_STARTS",
    "PLAYING",
    "TIME_MODES",
    "WAITING",
    "BadTimeError",
    "Playback",
    "WorldTime",
    "seconds_to_ns",
]

PLAYBACK_MODES = ("loop", "once", "hold")
"""What a 4D world does at its end (module docstring)."""

PLAYBACK_STARTS = ("build", "service")
"""When playback starts: when the world is served (``build``), or at ``~/start_playback``."""

TIME_MODES = ("step", "blend")
"""How a 4D world is rendered between its times (:meth:`Gaussians.at_time`)."""

WAITING, PLAYING, PAUSED, FINISHED = "waiting", "playing", "paused", "finished"
"""Playback states (``WorldStatus.playback``)."""

MAX_TIME_S = 2.0**31
"""ROS times (``builtin_interfaces/Time``: int32 seconds) are below this, seconds."""


class BadTimeError(ValueError):
    """A time that cannot be played (NaN, infinite, negative); the message says which."""


def seconds_to_ns(seconds: float) -> int:
    """A ROS time given in seconds (a request's ``time``) as nanoseconds.

    Raises:
        BadTimeError: NaN, infinite, negative or beyond the range of a ROS time.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise BadTimeError(f"time must be a number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise BadTimeError(f"time must be a finite number of seconds >= 0, got {seconds!r}")
    if seconds >= MAX_TIME_S:
        raise BadTimeError(f"time must be below {MAX_TIME_S:.0f} s (a ROS time), got {seconds!r}")
    return round(seconds * 1e9)


@dataclass(frozen=True)
class WorldTime:
    """The world time shown at one ROS time.

    Attributes:
        time: world time to render at, seconds; None when nothing is shown (``once`` after its
            end).
        state: ``waiting``, ``playing``, ``paused`` or ``finished``.
        early: the ROS time asked was before the start (the first state is shown).
    """

    time: float | None
    state: str
    early: bool = False


class Playback:
    """The playback of one 4D world (module docstring).

    Args:
        time_range: the world's ``(t0, t1)``, seconds (``Gaussians.time_range``).
        time_scale: world seconds per ROS second, ``> 0``.
        clock: the node's clock now, nanoseconds (0: not running yet).
    """

    def __init__(
        self, time_range: tuple[float, float], time_scale: float, clock: Callable[[], int]
    ) -> None:
        first, last = (float(t) for t in time_range)
        if not (math.isfinite(first) and math.isfinite(last) and first <= last):
            raise ValueError(f"time_range must be finite with first <= last, got {time_range}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got {time_scale!r}")
        self.time_range = (first, last)
        self.time_scale = float(time_scale)
        self._clock = clock
        self._lock = threading.Lock()
        self._start_ns: int | None = None  # ROS time of world time t0 (elapsed 0)
        self._paused_elapsed: float | None = None  # elapsed world seconds frozen by pause()
        self._start_pending = False  # start() came while the clock read 0

    @property
    def span(self) -> float:
        """``t1 - t0``, seconds."""
        return self.time_range[1] - self.time_range[0]

    # ------------------------------------------------------------------ control

    def start(self) -> str:
        """Play: resume from the paused state, else (re)start from ``t0`` now. What it did."""
        with self._lock:
            now = self._clock()
            if self._paused_elapsed is not None and self._start_ns is not None:
                elapsed, self._paused_elapsed = self._paused_elapsed, None
                self._start_ns = now - round(elapsed / self.time_scale * 1e9)
                return f"resumed at elapsed world time {elapsed:.3f} s"
            self._paused_elapsed = None
            if now <= 0:
                self._start_ns, self._start_pending = None, True
                return "playback starts with the clock (it reads 0: no /clock yet)"
            self._start_ns, self._start_pending = now, False
            first = self.time_range[0]
            return f"playing from world time {first:.3f} s at ROS time {now * 1e-9:.3f} s"

    def pause(self, mode: str) -> tuple[bool, str]:
        """Freeze the world at its state now; ``(done, message)`` (only a playing world pauses)."""
        with self._lock:
            now = self._clock()
            state = self._at_locked(now, mode).state
            if state != PLAYING:
                return False, f"not playing ({state})"
            assert self._start_ns is not None
            self._paused_elapsed = max((now - self._start_ns) * 1e-9 * self.time_scale, 0.0)
            return True, f"paused at elapsed world time {self._paused_elapsed:.3f} s"

    # ------------------------------------------------------------------ queries

    def at(self, stamp_ns: int | None, mode: str) -> WorldTime:
        """The world time shown at ROS time ``stamp_ns`` (None or 0: the clock now) in playback
        ``mode`` (:data:`PLAYBACK_MODES`).

        Raises:
            BadTimeError: a negative ``stamp_ns``.
            ValueError: an unknown ``mode``.
        """
        if mode not in PLAYBACK_MODES:
            raise ValueError(f"playback must be one of {', '.join(PLAYBACK_MODES)}, got {mode!r}")
        if stamp_ns is not None and stamp_ns < 0:
            raise BadTimeError(f"time must not be negative, got {stamp_ns * 1e-9:.3f} s")
        with self._lock:
            now = self._clock()
            return self._at_locked(now if not stamp_ns else int(stamp_ns), mode)

    def start_time_ns(self) -> int | None:
        """ROS time at which world time was ``t0`` (None: not started)."""
        with self._lock:
            self._maybe_start_locked(self._clock())
            return self._start_ns

    def _maybe_start_locked(self, now: int) -> None:
        if self._start_pending and now > 0:
            self._start_ns, self._start_pending = now, False

    def _at_locked(self, stamp_ns: int, mode: str) -> WorldTime:
        self._maybe_start_locked(self._clock())
        first = self.time_range[0]
        if self._start_ns is None:
            return WorldTime(first, WAITING)
        if self._paused_elapsed is not None:
            return self._mapped(self._paused_elapsed, mode, PAUSED, early=False)
        elapsed = (stamp_ns - self._start_ns) * 1e-9 * self.time_scale
        if elapsed < 0:
            return WorldTime(first, PLAYING, early=True)
        return self._mapped(elapsed, mode, PLAYING, early=False)

    def _mapped(self, elapsed: float, mode: str, state: str, early: bool) -> WorldTime:
        first, last = self.time_range
        span = last - first
        if mode == "loop":
            return WorldTime(first + (math.fmod(elapsed, span) if span > 0 else 0.0), state, early)
        if elapsed <= span:
            return WorldTime(first + elapsed, state, early)
        return WorldTime(last if mode == "hold" else None, FINISHED, early)
