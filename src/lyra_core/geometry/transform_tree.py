"""A tf tree: frames with a time cache per link (pure Python/NumPy, no ROS), the core of the
node's tf buffer (:mod:`lyra_ros.tf`) and of the ROS 2 bag reader (:mod:`lyra_core.data.captures`).

On a full ROS 2 install ``tf2_ros`` answers lookups (:mod:`lyra_ros.tf.tf2_adapter`); pip-only
environments have no ``tf2_ros`` / ``tf2_py``, so :class:`TfBuffer` replaces tf2's
``BufferCore`` with the same semantics: a tree of frames (each child has one parent) with a
time-sorted cache of samples per dynamic link and timeless static links; lookups chain through
the common ancestor and interpolate each dynamic link (linear translation, slerp rotation).

Conventions: ``T_target_source`` maps points given in ``source`` coordinates into ``target``
coordinates (``p_target = T_target_source @ p_source``), which is what tf2's
``lookupTransform(target, source, time)`` returns. Translations are in meters, times in seconds,
quaternions in ROS order ``(x, y, z, w)``. The quaternion maths (normalising, matrices, slerp,
rigid inverse) is :mod:`lyra_core.geometry.transforms`, shared with the message conversions.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

import numpy as np

from lyra_core.geometry.transforms import (
    normalize_quaternion,
    pose_from_translation_quaternion,
    rigid_inverse,
    slerp,
)

__all__ = [
    "DEFAULT_CACHE_TIME",
    "DEFAULT_MAX_FRAMES",
    "TfBuffer",
    "TfError",
    "TfExtrapolationError",
    "TfLookupError",
]

DEFAULT_CACHE_TIME = 10.0
"""How long dynamic samples are kept behind the newest one of their link, seconds (tf2's
default)."""

DEFAULT_MAX_FRAMES = 4096
"""Most frames a buffer knows; a sample naming a further new frame is refused (a peer
publishing ever new frame names must not grow the tree without bound)."""


class TfError(LookupError):
    """Base class of the errors raised by transform lookups (both backends)."""


class TfLookupError(TfError):
    """A frame is unknown, or the two frames are not connected in the tf tree."""


class TfExtrapolationError(TfError):
    """The requested time lies outside the cached samples of a link on the path."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _checked_vector(name: str, value: Sequence[float] | np.ndarray, size: int) -> np.ndarray:
    """``value`` as a finite float64 vector of length ``size``, else ``ValueError``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {size} numbers, got {value!r}") from exc
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf): {arr.tolist()}")
    return arr


def _checked_frame(name: str, frame: str) -> str:
    """Raise ``ValueError`` unless ``frame`` is a non-empty string."""
    if not isinstance(frame, str) or not frame:
        raise ValueError(f"{name} must be a non-empty frame name, got {frame!r}")
    return frame


def _fmt_time(seconds: float) -> str:
    """Stamp for error messages, seconds with nanosecond digits."""
    return f"{seconds:.9f} s"


# --------------------------------------------------------------------------------------------
# TfBuffer
# --------------------------------------------------------------------------------------------


class _Link:
    """The transform ``T_parent_child`` of one child frame: static, or a time-sorted cache."""

    __slots__ = ("child", "parent", "quaternions", "static", "static_matrix", "times", "trans")

    def __init__(self, parent: str, child: str, static: bool) -> None:
        self.parent = parent
        self.child = child
        self.static = static
        self.times: list[float] = []
        self.trans: list[np.ndarray] = []
        self.quaternions: list[np.ndarray] = []
        self.static_matrix: np.ndarray | None = None

    @property
    def newest(self) -> float:
        """Stamp of the newest sample, seconds (dynamic links only)."""
        return self.times[-1]

    def insert(self, stamp: float, translation: np.ndarray, quat: np.ndarray, cache: float) -> bool:
        """Add a dynamic sample; drop samples older than ``newest - cache`` seconds.

        A sample with the stamp of a cached one replaces it. Returns False (nothing stored) when
        the sample is already older than the cache window.
        """
        if self.times and stamp < self.newest - cache:
            return False
        i = bisect.bisect_left(self.times, stamp)
        if i < len(self.times) and self.times[i] == stamp:
            self.trans[i], self.quaternions[i] = translation, quat
        else:
            self.times.insert(i, stamp)
            self.trans.insert(i, translation)
            self.quaternions.insert(i, quat)
        n_old = bisect.bisect_left(self.times, self.newest - cache)
        if n_old:
            del self.times[:n_old], self.trans[:n_old], self.quaternions[:n_old]
        return True

    def bracket(self, stamp: float) -> tuple[int, int, float]:
        """Samples ``i0, i1`` around ``stamp`` and its fraction ``alpha`` between them.

        At a sample stamp ``i0 == i1`` and ``alpha == 0``. Raises ``_OutOfRange`` outside the
        cache (dynamic links only).
        """
        times = self.times
        if stamp < times[0] or stamp > times[-1]:
            raise _OutOfRange(self, stamp)
        i = bisect.bisect_left(times, stamp)
        if times[i] == stamp:
            return i, i, 0.0
        return i - 1, i, (stamp - times[i - 1]) / (times[i] - times[i - 1])


class _OutOfRange(Exception):  # noqa: N818 (internal signal, turned into TfExtrapolationError)
    """A dynamic link has no data at the requested time."""

    def __init__(self, link: _Link, stamp: float) -> None:
        super().__init__(link.child)
        self.link = link
        self.stamp = stamp


class TfBuffer:
    """A tf2-style transform tree with a time cache per link (pure Python/NumPy, thread-safe).

    Every frame has at most one parent. Dynamic links keep time-sorted samples covering at most
    ``cache_time`` seconds behind their newest sample; static links hold one transform valid at
    all times. Lookups chain the links from both frames up to their common ancestor.

    Differences from tf2's ``BufferCore``, all deliberate:

    * Re-parenting: a sample naming a new parent for a child (or switching the child between
      static and dynamic) replaces the old link and its cached samples, silently. tf2 keeps a
      parent per sample instead.
    * A sample whose stamp equals a cached one overwrites it (tf2 ignores it with a warning).
    * Non-unit quaternions are normalised (tf2 rejects them); zero-norm ones are rejected.
    * A sample that would close a loop in the tree is rejected when set (tf2 fails at lookup).
    * Samples are not expired by wall-clock time, only relative to the newest sample of their link
      (as in tf2): check the returned stamp if data may have stopped arriving.
    * The tree holds at most ``max_frames`` frames (tf2: unbounded); frames are never forgotten
      (as in tf2), so a sample naming one more is refused. Samples per link are bounded by
      ``cache_time`` times the link's publishing rate, as in tf2.
    """

    def __init__(
        self, cache_time: float = DEFAULT_CACHE_TIME, max_frames: int = DEFAULT_MAX_FRAMES
    ) -> None:
        """Create an empty buffer.

        Args:
            cache_time: How far behind the newest sample of a link older samples are kept,
                seconds. Must be finite and > 0.
            max_frames: Most frames the tree holds (>= 2).
        """
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
            raise ValueError(f"max_frames must be an integer >= 2, got {max_frames!r}")
        self.max_frames = max_frames
        if isinstance(cache_time, bool) or not isinstance(cache_time, (int, float)):
            raise ValueError(f"cache_time must be a number of seconds, got {cache_time!r}")
        if not math.isfinite(cache_time) or cache_time <= 0:
            raise ValueError(f"cache_time must be a finite number of seconds > 0, got {cache_time}")
        self._cache_time = float(cache_time)
        self._links: dict[str, _Link] = {}  # child frame -> link to its parent
        self._frames: set[str] = set()
        self._lock = threading.Lock()

    @property
    def cache_time(self) -> float:
        """Length of the per-link sample cache, seconds."""
        return self._cache_time

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp: float,
        translation: Sequence[float] | np.ndarray,
        rotation_xyzw: Sequence[float] | np.ndarray,
        static: bool = False,
    ) -> bool:
        """Store the transform ``T_parent_child`` (child frame pose in the parent frame).

        Args:
            parent: Parent frame id.
            child: Child frame id. Each child has one parent: a new parent, or a switch between
                static and dynamic, replaces the child's previous link and all its samples.
            stamp: Time of the sample, seconds. Ignored for static transforms (valid at all
                times) but must still be finite.
            translation: ``(3,)`` child origin in the parent frame, meters.
            rotation_xyzw: ``(4,)`` rotation quaternion ``(x, y, z, w)``, normalised here.
            static: True for a static transform (``/tf_static``).

        Returns:
            True if stored; False if the sample is older than ``cache_time`` behind the newest
            sample of its link and was dropped (as tf2 does).

        Raises:
            ValueError: Empty frame names, ``parent == child``, non-finite stamp, translation or
                rotation, zero-norm quaternion, a link that would close a loop, or new frames
                beyond ``max_frames``. Nothing is stored then.
        """
        _checked_frame("parent", parent)
        _checked_frame("child", child)
        if parent == child:
            raise ValueError(f"a frame cannot be its own parent: {child!r}")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
            raise ValueError(f"stamp must be a number of seconds, got {stamp!r}")
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        t = _checked_vector("translation", translation, 3)
        q = _checked_vector("rotation_xyzw", rotation_xyzw, 4)
        q = normalize_quaternion(q, "rotation_xyzw")
        with self._lock:
            self._check_no_loop(parent, child)
            new = {parent, child} - self._frames
            if new and len(self._frames) + len(new) > self.max_frames:
                raise ValueError(
                    f"the tf tree already holds {len(self._frames)} frames (max_frames "
                    f"{self.max_frames}): new frame(s) {sorted(new)} refused"
                )
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = _Link(parent, child, static)
                self._links[child] = link
            self._frames.update((parent, child))
            if static:
                link.static_matrix = pose_from_translation_quaternion(t, q)
                return True
            return link.insert(float(stamp), t, q, self._cache_time)

    def lookup(self, target_frame: str, source_frame: str, time: float | None = None) -> np.ndarray:
        """``T_target_source``: maps points in ``source_frame`` coordinates into ``target_frame``.

        Args:
            target_frame: Frame to express the result in.
            source_frame: Frame whose pose is looked up.
            time: Time of the lookup, seconds; None for the latest time at which every link on
                the path has data (tf2's time 0).

        Returns:
            ``(4, 4)`` float64 rigid transform.

        Raises:
            TfLookupError: Unknown frame or frames not connected.
            TfExtrapolationError: ``time`` outside the cached samples of a link on the path.
            ValueError: ``time`` is NaN or infinite.
        """
        return self.lookup_stamped(target_frame, source_frame, time)[0]

    def lookup_stamped(
        self, target_frame: str, source_frame: str, time: float | None = None
    ) -> tuple[np.ndarray, float]:
        """Like :meth:`lookup`, also returning the time the result holds for, seconds.

        The time is ``time`` when given. For ``time=None`` it is the latest common time of the
        dynamic links on the path, or 0.0 when the path is static only (as in tf2).
        """
        if time is not None and not math.isfinite(time):
            raise ValueError(f"time must be finite seconds or None, got {time}")
        with self._lock:
            if target_frame == source_frame:
                return self._identity(target_frame, time)
            source_links, target_links = self._path(target_frame, source_frame)
            if time is None:
                stamp = self._latest_common_time(source_links + target_links)
            else:
                stamp = float(time)
            try:
                matrices = self._link_matrices(source_links + target_links, stamp)
            except _OutOfRange as exc:
                raise self._extrapolation_error(target_frame, source_frame, exc) from None
        T_anc_source = self._compose(matrices[: len(source_links)])
        T_anc_target = self._compose(matrices[len(source_links) :])
        return rigid_inverse(T_anc_target) @ T_anc_source, stamp

    def can_transform(
        self, target_frame: str, source_frame: str, time: float | None = None
    ) -> bool:
        """True if :meth:`lookup` with the same arguments would succeed."""
        try:
            self.lookup_stamped(target_frame, source_frame, time)
        except TfError:
            return False
        return True

    def all_frames(self) -> list[str]:
        """Sorted names of every frame seen so far (as parent or child)."""
        with self._lock:
            return sorted(self._frames)

    def clear(self) -> None:
        """Forget all frames and samples (e.g. after a jump back in sim time)."""
        with self._lock:
            self._links.clear()
            self._frames.clear()

    # -- internals (called with the lock held) ------------------------------------------------

    def _check_no_loop(self, parent: str, child: str) -> None:
        """Raise ``ValueError`` if ``child`` is ``parent`` or one of its ancestors."""
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                raise ValueError(
                    f"setting {parent!r} as parent of {child!r} would close a loop in the tf tree"
                )
            link = self._links.get(frame)
            frame = link.parent if link is not None else None

    def _identity(self, frame: str, time: float | None) -> tuple[np.ndarray, float]:
        """Lookup of a frame in itself: identity, stamped like tf2 does."""
        if not frame:
            raise TfLookupError("frame names must be non-empty")
        if time is not None:
            return np.eye(4), float(time)
        link = self._links.get(frame)
        stamp = link.newest if link is not None and not link.static else 0.0
        return np.eye(4), stamp

    def _check_known(self, frame: str) -> None:
        """Raise ``TfLookupError`` naming ``frame`` and the known frames if it is unknown."""
        if frame not in self._frames:
            known = ", ".join(sorted(self._frames)) or "none"
            raise TfLookupError(f'frame "{frame}" does not exist; known frames: [{known}]')

    def _chain(self, frame: str) -> list[_Link]:
        """Links from ``frame`` up to the root of its tree, child first."""
        links = []
        link = self._links.get(frame)
        while link is not None:
            links.append(link)
            link = self._links.get(link.parent)
        return links

    def _path(self, target: str, source: str) -> tuple[list[_Link], list[_Link]]:
        """Links from ``source`` and from ``target`` up to (excluding) their common ancestor."""
        self._check_known(target)
        self._check_known(source)
        source_chain = self._chain(source)
        target_chain = self._chain(target)
        source_frames = [source] + [link.parent for link in source_chain]
        target_frames = [target] + [link.parent for link in target_chain]
        target_depth = {frame: i for i, frame in enumerate(target_frames)}
        for i, frame in enumerate(source_frames):
            if frame in target_depth:
                return source_chain[:i], target_chain[: target_depth[frame]]
        raise TfLookupError(
            f'frames "{target}" and "{source}" are not connected: "{target}" is in the tree '
            f'rooted at "{target_frames[-1]}", "{source}" in the tree rooted at '
            f'"{source_frames[-1]}"'
        )

    @staticmethod
    def _latest_common_time(links: list[_Link]) -> float:
        """Oldest of the newest stamps of the dynamic links, seconds; 0.0 if all are static."""
        newest = [link.newest for link in links if not link.static]
        return min(newest) if newest else 0.0

    @staticmethod
    def _link_matrices(links: list[_Link], stamp: float) -> list[np.ndarray]:
        """``T_parent_child`` of every link at ``stamp``: the dynamic ones interpolated in one
        batched slerp and one batched matrix build."""
        matrices = [link.static_matrix for link in links]
        dynamic = [i for i, link in enumerate(links) if not link.static]
        if not dynamic:
            return matrices
        brackets = [links[i].bracket(stamp) for i in dynamic]
        alpha = np.array([b[2] for b in brackets])
        t0 = np.stack([links[i].trans[b[0]] for i, b in zip(dynamic, brackets, strict=True)])
        t1 = np.stack([links[i].trans[b[1]] for i, b in zip(dynamic, brackets, strict=True)])
        q0 = np.stack([links[i].quaternions[b[0]] for i, b in zip(dynamic, brackets, strict=True)])
        q1 = np.stack([links[i].quaternions[b[1]] for i, b in zip(dynamic, brackets, strict=True)])
        translations = t0 + alpha[:, None] * (t1 - t0)
        interpolated = pose_from_translation_quaternion(translations, slerp(q0, q1, alpha))
        for i, matrix in zip(dynamic, interpolated, strict=True):
            matrices[i] = matrix
        return matrices

    @staticmethod
    def _compose(matrices: list[np.ndarray]) -> np.ndarray:
        """``T_ancestor_frame`` from the matrices of a child-first chain starting at ``frame``."""
        T = np.eye(4)
        for matrix in matrices:
            T = matrix @ T
        return T

    @staticmethod
    def _extrapolation_error(target: str, source: str, exc: _OutOfRange) -> TfExtrapolationError:
        """The user-facing error for a link without data at the requested time."""
        link, stamp = exc.link, exc.stamp
        direction = "past" if stamp < link.times[0] else "future"
        return TfExtrapolationError(
            f'lookup "{target}" <- "{source}" would require extrapolation into the {direction}: '
            f"requested time {_fmt_time(stamp)}, but link "
            f'"{link.parent}" -> "{link.child}" has data from {_fmt_time(link.times[0])} '
            f"to {_fmt_time(link.times[-1])}"
        )
