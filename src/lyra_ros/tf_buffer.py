"""Transform lookups for the Lyra node: tf2_ros where installed, a small tf buffer otherwise.

The node renders the view of a camera frame at a robot pose published on tf. It only needs one
question answered: "where is frame ``source`` in frame ``target`` at time ``t``?". On a full ROS 2
install ``tf2_ros`` answers it; pip-only environments have no ``tf2_ros`` / ``tf2_py``, so this
module carries a pure Python/NumPy replacement with the same semantics as tf2's ``BufferCore``:

* :class:`TfBuffer`: a tree of frames (each child has one parent) with a time-sorted cache of
  samples per dynamic link and timeless static links; lookups chain through the common ancestor
  and interpolate each dynamic link (linear translation, slerp rotation).
* :class:`TfListener`: feeds a :class:`TfBuffer` from ``/tf`` and ``/tf_static``.
* :class:`TransformLookup`: what the node uses; picks ``tf2_ros`` when importable and the
  :class:`TfBuffer` otherwise, and returns ``4x4`` NumPy matrices in both cases.

Conventions: ``T_target_source`` maps points given in ``source`` coordinates into ``target``
coordinates (``p_target = T_target_source @ p_source``), which is what tf2's
``lookupTransform(target, source, time)`` returns. Translations are in meters, times in seconds,
quaternions in ROS order ``(x, y, z, w)``.

Stamps are float seconds inside :class:`TfBuffer`. :class:`TransformLookup` counts them from an
epoch near the first stamp it sees (:class:`StampConverter`), so ROS stamps survive the round
trip to the nanosecond; absolute seconds since 1970 would resolve only ~0.2 microseconds.
"""

from __future__ import annotations

import bisect
import math
import threading
import time as _time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from geometry_msgs.msg import Transform, TransformStamped
    from rclpy.node import Node
    from rclpy.time import Time
    from tf2_msgs.msg import TFMessage

__all__ = [
    "StampConverter",
    "TfBuffer",
    "TfError",
    "TfExtrapolationError",
    "TfListener",
    "TfLookupError",
    "TransformLookup",
    "matrix_from_transform_msg",
]

DEFAULT_CACHE_TIME = 10.0
"""How long dynamic samples are kept behind the newest one of their link, seconds (tf2's
default)."""

_QUAT_MIN_NORM = 1e-9
"""Quaternions shorter than this are rejected as zero-norm."""

_SLERP_LINEAR_DOT = 0.9995
"""Above this ``|q0 . q1|`` slerp falls back to normalised linear interpolation (tiny angles)."""


class TfError(LookupError):
    """Base class of the errors raised by transform lookups (both backends)."""


class TfLookupError(TfError):
    """A frame is unknown, or the two frames are not connected in the tf tree."""


class TfExtrapolationError(TfError):
    """The requested time lies outside the cached samples of a link on the path."""


# --------------------------------------------------------------------------------------------
# Small rigid-transform helpers
# --------------------------------------------------------------------------------------------


def _matrix(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """``4x4`` rigid transform from a translation (meters) and a unit quaternion (x, y, z, w)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    T[:3, 3] = translation
    return T


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a ``4x4`` rigid transform (``R^T``, ``-R^T t``)."""
    inv = np.eye(4)
    R_t = T[:3, :3].T
    inv[:3, :3] = R_t
    inv[:3, 3] = -R_t @ T[:3, 3]
    return inv


def _slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions along the shorter arc.

    Args:
        q0: Quaternion at ``alpha = 0``.
        q1: Quaternion at ``alpha = 1``.
        alpha: Interpolation parameter in ``[0, 1]``.

    Returns:
        The interpolated unit quaternion.
    """
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are the same rotation: take the short way round.
        q1 = -q1
        dot = -dot
    if dot > _SLERP_LINEAR_DOT:
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    w0 = math.sin((1.0 - alpha) * theta) / sin_theta
    w1 = math.sin(alpha * theta) / sin_theta
    return w0 * q0 + w1 * q1


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


def _checked_quaternion(quat_xyzw: Sequence[float] | np.ndarray) -> np.ndarray:
    """Finite, non-zero quaternion ``(x, y, z, w)`` normalised to unit length."""
    q = _checked_vector("rotation_xyzw", quat_xyzw, 4)
    norm = float(np.linalg.norm(q))
    if norm < _QUAT_MIN_NORM:
        raise ValueError(f"rotation_xyzw must have non-zero norm, got {q.tolist()}")
    return q / norm


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

    def matrix_at(self, stamp: float) -> np.ndarray:
        """``T_parent_child`` at ``stamp`` seconds; raises ``_OutOfRange`` outside the cache."""
        if self.static:
            assert self.static_matrix is not None
            return self.static_matrix
        times = self.times
        if stamp < times[0] or stamp > times[-1]:
            raise _OutOfRange(self, stamp)
        i = bisect.bisect_left(times, stamp)
        if times[i] == stamp:
            return _matrix(self.trans[i], self.quaternions[i])
        t0, t1 = times[i - 1], times[i]
        alpha = (stamp - t0) / (t1 - t0)
        translation = self.trans[i - 1] + alpha * (self.trans[i] - self.trans[i - 1])
        quat = _slerp(self.quaternions[i - 1], self.quaternions[i], alpha)
        return _matrix(translation, quat)


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
    """

    def __init__(self, cache_time: float = DEFAULT_CACHE_TIME) -> None:
        """Create an empty buffer.

        Args:
            cache_time: How far behind the newest sample of a link older samples are kept,
                seconds. Must be finite and > 0.
        """
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
                rotation, zero-norm quaternion, or a link that would close a loop. Nothing is
                stored then.
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
        q = _checked_quaternion(rotation_xyzw)
        with self._lock:
            self._check_no_loop(parent, child)
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = _Link(parent, child, static)
                self._links[child] = link
            self._frames.update((parent, child))
            if static:
                link.static_matrix = _matrix(t, q)
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
                T_anc_source = self._compose(source_links, stamp)
                T_anc_target = self._compose(target_links, stamp)
            except _OutOfRange as exc:
                raise self._extrapolation_error(target_frame, source_frame, exc) from None
        return _rigid_inverse(T_anc_target) @ T_anc_source, stamp

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
    def _compose(links: list[_Link], stamp: float) -> np.ndarray:
        """``T_ancestor_frame`` for a child-first chain of links starting at ``frame``."""
        T = np.eye(4)
        for link in links:
            T = link.matrix_at(stamp) @ T
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


# --------------------------------------------------------------------------------------------
# ROS message helpers and the listener
# --------------------------------------------------------------------------------------------


class StampConverter:
    """ROS times (integer nanoseconds) <-> the float seconds :class:`TfBuffer` works in.

    ``epoch="first"`` measures seconds from the whole second before the first time converted:
    float64 seconds since 1970 resolve only ~0.2 us, seconds from a nearby epoch keep every
    nanosecond, so a stamp read back from the buffer equals the stamp that went in (images are
    stamped with the tf stamp they were rendered at). ``epoch=0`` gives absolute seconds.
    """

    def __init__(self, epoch: int | str = 0) -> None:
        self._epoch_ns: int | None = None if epoch == "first" else int(epoch)

    def to_seconds(self, nanoseconds: int) -> float:
        if self._epoch_ns is None:
            self._epoch_ns = nanoseconds - nanoseconds % 1_000_000_000
        return (nanoseconds - self._epoch_ns) * 1e-9

    def to_nanoseconds(self, seconds: float) -> int:
        return (self._epoch_ns or 0) + round(seconds * 1e9)


def matrix_from_transform_msg(transform: Transform) -> np.ndarray:
    """``4x4`` matrix of a ``geometry_msgs/Transform``; ``ValueError`` if NaN/inf or zero quat."""
    tr, rot = transform.translation, transform.rotation
    t = _checked_vector("translation", (tr.x, tr.y, tr.z), 3)
    q = _checked_quaternion((rot.x, rot.y, rot.z, rot.w))
    return _matrix(t, q)


class TfListener:
    """Feeds a :class:`TfBuffer` from ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``).

    QoS as tf2_ros: ``/tf`` reliable, volatile, depth 100; ``/tf_static`` reliable, transient
    local, depth 100 (late joiners still get the static transforms). Malformed transforms (NaN,
    zero quaternion, empty frame ids, loops) are skipped with a throttled warning; the callbacks
    never raise. Callbacks run in a reentrant group, so a multi-threaded executor keeps feeding
    the buffer while another callback waits on a lookup.
    """

    def __init__(
        self,
        node: Node,
        buffer: TfBuffer,
        *,
        tf_topic: str = "/tf",
        tf_static_topic: str = "/tf_static",
        warn_period: float = 5.0,
        stamps: StampConverter | None = None,
    ) -> None:
        """Create both subscriptions on ``node``.

        Args:
            node: The rclpy node to subscribe with.
            buffer: The buffer to fill.
            tf_topic: Topic of dynamic transforms.
            tf_static_topic: Topic of static transforms.
            warn_period: Minimum time between two warnings about rejected transforms, seconds.
            stamps: How message stamps become buffer seconds; default absolute seconds.
        """
        self._stamps = stamps or StampConverter()
        from rclpy.callback_groups import ReentrantCallbackGroup
        from tf2_msgs.msg import TFMessage

        from lyra_ros.qos import TF_QOS, TF_STATIC_QOS

        self.buffer = buffer
        self.num_rejected = 0
        """Transforms skipped as malformed since creation."""
        self._node = node
        self._warn_period = warn_period
        group = ReentrantCallbackGroup()
        self._subscriptions = [
            node.create_subscription(
                TFMessage,
                tf_topic,
                self._on_tf,
                TF_QOS,
                callback_group=group,
            ),
            node.create_subscription(
                TFMessage,
                tf_static_topic,
                self._on_tf_static,
                TF_STATIC_QOS,
                callback_group=group,
            ),
        ]

    def _on_tf(self, msg: TFMessage) -> None:
        self._ingest(msg, static=False)

    def _on_tf_static(self, msg: TFMessage) -> None:
        self._ingest(msg, static=True)

    def _ingest(self, msg: TFMessage, static: bool) -> None:
        """Store every transform of ``msg``; count and warn about the ones rejected."""
        for tf in msg.transforms:
            try:
                self._store(tf, static)
            except Exception as exc:  # a bad sample must never take the node down
                self.num_rejected += 1
                self._node.get_logger().warning(
                    f"ignoring transform ({self.num_rejected} so far): {exc}",
                    throttle_duration_sec=self._warn_period,
                )

    def _store(self, tf: TransformStamped, static: bool) -> None:
        """Validate one ``TransformStamped`` and put it into the buffer."""
        tr, rot = tf.transform.translation, tf.transform.rotation
        self.buffer.set_transform(
            tf.header.frame_id,
            tf.child_frame_id,
            self._stamps.to_seconds(tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec),
            (tr.x, tr.y, tr.z),
            (rot.x, rot.y, rot.z, rot.w),
            static=static,
        )

    def unregister(self) -> None:
        """Destroy both subscriptions (the buffer keeps its data)."""
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []


# --------------------------------------------------------------------------------------------
# TransformLookup: the node's interface
# --------------------------------------------------------------------------------------------


def _import_tf2_ros() -> Any | None:
    """The ``tf2_ros`` module, or None when it cannot be imported."""
    try:
        import tf2_ros
    except Exception:  # not installed, or a broken install: fall back to TfBuffer
        return None
    return tf2_ros


def _tf2_exceptions(tf2_ros: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes that ``tf2_ros`` exports (missing names are skipped)."""
    found = (getattr(tf2_ros, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException))


class TransformLookup:
    """``T_target_source`` lookups for the node, via ``tf2_ros`` or the built-in :class:`TfBuffer`.

    Backends: ``"tf2_ros"`` (``tf2_ros.Buffer`` + ``tf2_ros.TransformListener``) when
    ``import tf2_ros`` works, ``"lyra"`` (:class:`TfBuffer` + :class:`TfListener`) otherwise. Both
    raise :class:`TfLookupError` / :class:`TfExtrapolationError`; tf2_ros exceptions are wrapped
    (the original is the ``__cause__``).

    The node must be spun for data to arrive. A lookup with ``timeout > 0`` blocks the calling
    thread, so it only helps when another thread spins the node (multi-threaded executor).

    Attributes:
        backend: ``"tf2_ros"`` or ``"lyra"``.
        buffer: The underlying ``tf2_ros.Buffer`` or :class:`TfBuffer`.
    """

    def __init__(
        self, node: Node, cache_time: float = DEFAULT_CACHE_TIME, *, backend: str | None = None
    ) -> None:
        """Subscribe to tf on ``node``.

        Args:
            node: The rclpy node (its clock type is used for the returned stamps).
            cache_time: Length of the per-link sample cache, seconds.
            backend: ``"tf2_ros"`` or ``"lyra"`` to force one; None picks tf2_ros when importable.

        Raises:
            ValueError: Unknown ``backend`` or invalid ``cache_time``.
            ImportError: ``backend="tf2_ros"`` without an importable tf2_ros.
        """
        if backend not in (None, "tf2_ros", "lyra"):
            raise ValueError(f'backend must be None, "tf2_ros" or "lyra", got {backend!r}')
        tf2_ros = _import_tf2_ros() if backend != "lyra" else None
        if backend == "tf2_ros" and tf2_ros is None:
            raise ImportError('backend="tf2_ros" requested but tf2_ros cannot be imported')
        self._node = node
        self._clock_type = node.get_clock().clock_type
        self._tf2_ros = tf2_ros
        if tf2_ros is not None:
            from rclpy.duration import Duration

            self.backend = "tf2_ros"
            self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time), node=node)
            self._listener = tf2_ros.TransformListener(self.buffer, node)
        else:
            self.backend = "lyra"
            self.buffer = TfBuffer(cache_time)
            self._stamps = StampConverter(epoch="first")
            self._listener = TfListener(node, self.buffer, stamps=self._stamps)
        node.get_logger().info(f"tf lookups via {self.backend}")

    def lookup_matrix(
        self,
        target_frame: str,
        source_frame: str,
        time: Time | None = None,
        timeout: float = 0.0,
    ) -> tuple[np.ndarray, Time]:
        """``T_target_source`` (maps ``source_frame`` points into ``target_frame``) and its stamp.

        Args:
            target_frame: Frame to express the result in.
            source_frame: Frame whose pose is looked up.
            time: Lookup time; None (or a zero time) for the latest common time, as tf2.
            timeout: How long to wait for the data, seconds (0: fail at once).

        Returns:
            ``(4, 4)`` float64 matrix and the ``rclpy.time.Time`` of the data used: ``time`` when
            given, else the latest common time (zero if the path is static only).

        Raises:
            TfLookupError: Unknown or unconnected frames (after ``timeout``).
            TfExtrapolationError: ``time`` outside the cached data (after ``timeout``).
        """
        if self._tf2_ros is not None:
            return self._lookup_tf2_ros(target_frame, source_frame, time, timeout)
        return self._lookup_lyra(target_frame, source_frame, time, timeout)

    def can_transform(self, target_frame: str, source_frame: str, time: Time | None = None) -> bool:
        """True if :meth:`lookup_matrix` would succeed now."""
        try:
            self.lookup_matrix(target_frame, source_frame, time)
        except TfError:
            return False
        return True

    def unregister(self) -> None:
        """Destroy the tf subscriptions (call before destroying the node, or let it go with it)."""
        self._listener.unregister()

    def _lookup_lyra(
        self, target: str, source: str, time: Time | None, timeout: float
    ) -> tuple[np.ndarray, Time]:
        """Lookup in the :class:`TfBuffer`, polling every 10 ms until ``timeout`` seconds."""
        query = (
            None
            if time is None or time.nanoseconds == 0
            else (self._stamps.to_seconds(time.nanoseconds))
        )
        deadline = _time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                matrix, stamp = self.buffer.lookup_stamped(target, source, query)
                break
            except TfError:
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    raise
                _time.sleep(min(0.01, remaining))
        if query is not None:
            return matrix, time
        from rclpy.time import Time

        return matrix, Time(
            nanoseconds=self._stamps.to_nanoseconds(stamp), clock_type=self._clock_type
        )

    def _lookup_tf2_ros(
        self, target: str, source: str, time: Time | None, timeout: float
    ) -> tuple[np.ndarray, Time]:
        """Lookup in the ``tf2_ros.Buffer``, its exceptions wrapped as :class:`TfError`."""
        from rclpy.duration import Duration
        from rclpy.time import Time

        tf2_ros = self._tf2_ros
        query = Time(clock_type=self._clock_type) if time is None else time
        extrapolation = _tf2_exceptions(tf2_ros, "ExtrapolationException")
        other = _tf2_exceptions(
            tf2_ros, "LookupException", "ConnectivityException", "TransformException"
        )
        try:
            msg = self.buffer.lookup_transform(
                target, source, query, timeout=Duration(seconds=max(timeout, 0.0))
            )
        except extrapolation as exc:
            raise TfExtrapolationError(str(exc)) from exc
        except other as exc:
            raise TfLookupError(str(exc)) from exc
        try:
            matrix = matrix_from_transform_msg(msg.transform)
        except ValueError as exc:
            raise TfLookupError(f'invalid transform "{target}" <- "{source}": {exc}') from exc
        return matrix, Time.from_msg(msg.header.stamp, clock_type=self._clock_type)
