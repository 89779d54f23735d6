"""A scene of 3D (or 4D) Gaussian splats in the raw parameterisation of 3DGS.

The fields are stored exactly as 3DGS, gsplat's trainer and the standard splat PLY
format store them (log scales, opacity logits, SH coefficients), so that a PLY round trip
is bit-exact. The activated values (scales, opacities, RGB colours) are properties.

Time (4D worlds). A scene without ``times`` is a static 3D world. A 4D world gives every
Gaussian a time ``times[i]`` and a temporal extent ``durations[i]`` (seconds, ``> 0``,
``+inf`` for a static Gaussian, present at every time). World time runs over
:attr:`Gaussians.time_range`, the smallest and largest time of the Gaussians of finite
duration; a wanted time outside it is clamped into it, so the first and last states hold.
At world time ``t`` (:meth:`Gaussians.at_time`):

- ``"step"`` (default): Gaussian ``i`` is present iff ``-d/2 <= t - times[i] < d/2``
  (``d = durations[i]``), unchanged otherwise;
- ``"blend"``: Gaussian ``i``'s opacity is scaled by ``max(0, 1 - |t - times[i]| / d)``.

Lyra's bullet-time output, a complete Gaussian set per wanted time, is a stack of such
time slices (:meth:`Gaussians.from_time_slices`): with uniformly spaced slice times and
``d`` the spacing, "step" shows the nearest slice and "blend" cross-fades the two nearest
(their weights sum to one).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lyra_core.geometry.transforms import rotation_to_quaternion_wxyz
from lyra_core.utils.checks import check_shape

__all__ = [
    "LOG_SCALE_MAX",
    "MAX_SH_DEGREE",
    "OPACITY_EPS",
    "QUAT_MIN_NORM",
    "SH_C0",
    "Gaussians",
    "InvalidGaussians",
    "TimeMode",
    "num_sh_coeffs",
]

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical-harmonic constant, ``1 / (2 * sqrt(pi))``."""

OPACITY_EPS = 1e-6
"""``from_activated`` clamps opacities to ``[OPACITY_EPS, 1 - OPACITY_EPS]`` before the logit."""

QUAT_MIN_NORM = 1e-12
""":meth:`Gaussians.validate` refuses quaternions whose four components are all smaller than
this in magnitude: their norm underflows in float32, so renderers cannot normalise them (the
torch backend drops such a Gaussian, gsplat's kernel divides by zero)."""

LOG_SCALE_MAX = 0.5 * math.log(torch.finfo(torch.float32).max)
""":meth:`Gaussians.validate` refuses log scales above this (about 44.36, a scale of about
1.8e19 meters): the variance ``scale**2`` of the covariance overflows float32."""

MAX_SH_DEGREE = 3
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh", "times", "durations")
_TIME_FIELDS = ("times", "durations")
TimeMode = Literal["step", "blend"]

Index = int | slice | Tensor | Sequence[int]
BoxCorner = Tensor | Sequence[float]


def num_sh_coeffs(degree: int) -> int:
    """Number of SH coefficients per colour channel for ``degree``: ``(degree + 1) ** 2``."""
    return (degree + 1) ** 2


def _check_sh_degree(name: str, degree: int) -> None:
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"{name} must be an int in [0, {MAX_SH_DEGREE}], got {degree!r}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype to compute activations in: at least float32, so half inputs do not overflow."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class InvalidGaussians:
    """Where a scene first fails :meth:`Gaussians.validate`, from :meth:`Gaussians.find_invalid`.

    Attributes:
        field: the tensor field at fault, e.g. ``"quats"``.
        reason: what is wrong, e.g. ``"contains 2 non-finite value(s) (NaN or inf)"``.
        index: the first bad Gaussian.
        count: how many Gaussians are bad for this reason.
        column: the first bad component of Gaussian ``index`` in its flattened row of ``field``
            (``sh``: ``k * 3 + channel``; ``0`` for the 1-D fields); ``None`` when the row as a
            whole is at fault (a near-zero quaternion).
    """

    field: str
    reason: str
    index: int
    count: int
    column: int | None

    def __str__(self) -> str:
        return f"{self.field} {self.reason}: {self.count} Gaussian(s), first at index {self.index}"


def _first_bad(field: str, reason: str, bad: Tensor, whole_row: bool = False) -> InvalidGaussians:
    """Describe the bad entries of ``bad``, an ``(N, C)`` bool mask with at least one True."""
    rows = bad.any(dim=1)
    index = int(torch.argmax(rows.to(torch.uint8)))  # argmax returns the first maximum
    column = None if whole_row else int(torch.argmax(bad[index].to(torch.uint8)))
    return InvalidGaussians(field, reason, index, int(rows.sum()), column)


@dataclass(eq=False, repr=False)
class Gaussians:
    """A set of ``N`` Gaussians in the raw (pre-activation) parameterisation.

    All tensors share one device and one floating dtype (float32, float64, bfloat16 or
    float16). Construction only checks shapes, devices and dtypes; call :meth:`validate`
    to check for NaN/inf (renderers and writers do).

    Attributes:
        means: ``(N, 3)`` world positions, meters.
        quats: ``(N, 4)`` rotations as ``(w, x, y, z)`` quaternions (gsplat order); they need
            not be normalised.
        log_scales: ``(N, 3)`` natural log of the per-axis standard deviations (meters).
        opacity_logits: ``(N,)`` logit of the opacity in ``(0, 1)``.
        sh: ``(N, K, 3)`` spherical-harmonic colour coefficients with ``K = (degree + 1)**2``
            and ``degree <= 3``; ``sh[:, 0]`` is the DC term, ``rgb = 0.5 + SH_C0 * sh[:, 0]``.
        times: optional ``(N,)`` per-Gaussian time for 4D worlds, seconds (finite).
        durations: ``(N,)`` temporal extent of each Gaussian, seconds, ``> 0`` or ``+inf``
            (static); set exactly when ``times`` is (module docstring: the semantics).
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor
    times: Tensor | None = None
    durations: Tensor | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Tensor) and not (name in _TIME_FIELDS and value is None):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        check_shape("means", self.means, (None, 3))
        n = self.means.shape[0]
        check_shape("quats", self.quats, (n, 4))
        check_shape("log_scales", self.log_scales, (n, 3))
        check_shape("opacity_logits", self.opacity_logits, (n,))
        check_shape("sh", self.sh, (n, None, 3))
        k = self.sh.shape[1]
        if k not in [num_sh_coeffs(d) for d in range(MAX_SH_DEGREE + 1)]:
            raise ValueError(
                "sh must have K = (degree + 1)**2 coefficients with degree <= "
                f"{MAX_SH_DEGREE} (K in 1, 4, 9, 16), got K={k}"
            )
        if (self.times is None) != (self.durations is None):
            raise ValueError(
                "times and durations must be given together (a 4D world) or not at all"
            )
        if self.times is not None:
            check_shape("times", self.times, (n,))
            check_shape("durations", self.durations, (n,))
        if self.means.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"means must have a floating dtype in {_FLOAT_DTYPES}, got {self.means.dtype}"
            )
        for name, value in self._tensors().items():
            if value.dtype != self.means.dtype:
                raise ValueError(
                    f"{name} has dtype {value.dtype}, expected {self.means.dtype} like means"
                )
            if value.device != self.means.device:
                raise ValueError(
                    f"{name} is on device {value.device}, expected {self.means.device} like means"
                )

    # ------------------------------------------------------------------ helpers

    def _tensors(self) -> dict[str, Tensor]:
        """The non-``None`` tensor fields by name, in declaration order."""
        out = {name: getattr(self, name) for name in _FIELDS}
        return {name: value for name, value in out.items() if value is not None}

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Gaussians:
        """A new scene with ``fn`` applied to every tensor field."""
        return type(self)(**{name: fn(value) for name, value in self._tensors().items()})

    # ------------------------------------------------------------------ checks

    def find_invalid(self) -> InvalidGaussians | None:
        """The first reason this scene cannot be rendered, or ``None`` if it is valid.

        The one definition of a valid scene (:meth:`validate`, the renderers, and the PLY
        reader and writer use it). Checked field by field in declaration order:

        - every value is finite (no NaN or inf);
        - every quaternion has a component of magnitude ``>= QUAT_MIN_NORM`` (1e-12), so it
          can be normalised into a rotation;
        - every log scale is ``<= LOG_SCALE_MAX`` (about 44.36), so the variance ``scale**2``
          is finite in float32.

        Other values (huge means, opacity logits or SH coefficients) render: such Gaussians
        fall outside the view or saturate.
        """
        n = self.num_gaussians
        if n == 0:
            return None
        for name, value in self._tensors().items():
            rows = value.detach().reshape(n, -1)
            if name == "durations":
                # +inf is a static Gaussian; NaN, -inf and non-positive extents are not.
                bad = torch.isnan(rows) | (rows <= 0)
                if bool(bad.any()):
                    reason = f"contains {int(bad.sum())} value(s) that are NaN or <= 0"
                    return _first_bad(name, reason, bad)
                continue
            # Fast path (renders check every call): one reduction, no temporaries. A NaN or inf
            # makes the sum non-finite; so may an overflow of finite values, then the exact
            # test decides.
            if not bool(torch.isfinite(rows.sum(dtype=torch.float64))):
                finite = torch.isfinite(rows)
                if not bool(finite.all()):
                    bad = ~finite
                    reason = f"contains {int(bad.sum())} non-finite value(s) (NaN or inf)"
                    return _first_bad(name, reason, bad)
            if name == "quats":
                largest = rows.float().abs().amax(dim=1)
                if bool(largest.min() >= QUAT_MIN_NORM):
                    continue
                small = (largest < QUAT_MIN_NORM)[:, None]
                if bool(small.any()):
                    reason = (
                        f"contains {int(small.sum())} zero-norm quaternion(s) (every component "
                        f"below {QUAT_MIN_NORM:g}); every rotation needs a non-zero (w, x, y, z)"
                    )
                    return _first_bad(name, reason, small, whole_row=True)
            if name == "log_scales" and bool(rows.max() > LOG_SCALE_MAX):
                big = rows > LOG_SCALE_MAX
                if bool(big.any()):
                    reason = (
                        f"contains {int(big.sum())} value(s) above {LOG_SCALE_MAX:.2f}, whose "
                        "squared scale overflows float32"
                    )
                    return _first_bad(name, reason, big)
        return None

    def validate(self) -> None:
        """Raise ``ValueError`` for the first problem :meth:`find_invalid` reports.

        The message starts with the field and the problem and ends with the number of bad
        Gaussians and the first one's index, e.g. ``"quats contains 1 non-finite value(s)
        (NaN or inf): 1 Gaussian(s), first at index 7"``.
        """
        invalid = self.find_invalid()
        if invalid is not None:
            raise ValueError(str(invalid))

    # ------------------------------------------------------------------ properties

    @property
    def num_gaussians(self) -> int:
        """Number of Gaussians ``N``."""
        return self.means.shape[0]

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def sh_degree(self) -> int:
        """SH degree ``d`` in ``[0, 3]``, from ``K = (d + 1)**2``."""
        return math.isqrt(self.sh.shape[1]) - 1

    @property
    def scales(self) -> Tensor:
        """``(N, 3)`` per-axis standard deviations, meters (``exp(log_scales)``)."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        """``(N,)`` opacities in ``[0, 1]`` (``sigmoid(opacity_logits)``)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> Tensor:
        """``(N, 3)`` view-independent RGB ``0.5 + SH_C0 * sh[:, 0]``, not clamped."""
        return 0.5 + SH_C0 * self.sh[:, 0]

    @property
    def device(self) -> torch.device:
        """Device of all tensors."""
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of all tensors."""
        return self.means.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensor elements (``numel * element_size`` summed over fields).

        Views count their logical size, not the size of the storage they share.
        """
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_activated(
        cls,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        colors: Tensor,
        times: Tensor | None = None,
        durations: Tensor | None = None,
    ) -> Gaussians:
        """Build a scene from activated values.

        Args:
            means: ``(N, 3)`` world positions, meters.
            quats: ``(N, 4)`` ``(w, x, y, z)`` rotations, stored as given.
            scales: ``(N, 3)`` standard deviations, meters; every value must be ``> 0``.
            opacities: ``(N,)`` (or ``(N, 1)``) opacities in ``[0, 1]``; clamped to
                ``[OPACITY_EPS, 1 - OPACITY_EPS]`` (``OPACITY_EPS = 1e-6``) so the logit
                stays finite.
            colors: ``(N, 3)`` RGB in ``[0, 1]`` (stored as the SH DC term, degree 0) or
                ``(N, K, 3)`` SH coefficients stored as given.
            times: optional ``(N,)`` per-Gaussian time, seconds.
            durations: ``(N,)`` temporal extents, seconds; given exactly when ``times`` is.

        Raises:
            ValueError: on bad shapes or non-positive scales.
        """
        check_shape("scales", scales, (None, 3))
        if not bool((scales > 0).all()):
            raise ValueError("scales must be > 0 (and not NaN) to take their log")
        if opacities.dim() == 2 and opacities.shape[1] == 1:
            opacities = opacities[:, 0]
        check_shape("opacities", opacities, (None,))
        work = _compute_dtype(opacities.dtype)
        eps = OPACITY_EPS
        opacity_logits = torch.logit(opacities.to(work).clamp(eps, 1.0 - eps))
        if colors.dim() == 2:
            check_shape("colors", colors, (None, 3))
            sh = ((colors.to(_compute_dtype(colors.dtype)) - 0.5) / SH_C0)[:, None, :]
        elif colors.dim() == 3:
            sh = colors
        else:
            raise ValueError(
                f"colors must have shape (N, 3) or (N, K, 3), got {tuple(colors.shape)}"
            )
        return cls(
            means=means,
            quats=quats,
            log_scales=scales.log(),
            opacity_logits=opacity_logits.to(opacities.dtype),
            sh=sh.to(colors.dtype),
            times=times,
            durations=durations,
        )

    @classmethod
    def empty(
        cls,
        sh_degree: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        with_times: bool = False,
    ) -> Gaussians:
        """A scene with ``N = 0`` Gaussians of the given SH degree, device and dtype
        (with empty ``times`` and ``durations`` when ``with_times``)."""
        _check_sh_degree("sh_degree", sh_degree)

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        return cls(
            means=zeros(0, 3),
            quats=zeros(0, 4),
            log_scales=zeros(0, 3),
            opacity_logits=zeros(0),
            sh=zeros(0, num_sh_coeffs(sh_degree), 3),
            times=zeros(0) if with_times else None,
            durations=zeros(0) if with_times else None,
        )

    @classmethod
    def cat(cls, scenes: Sequence[Gaussians]) -> Gaussians:
        """Concatenate scenes along ``N``.

        Scenes of lower SH degree are zero-padded to the highest degree. All scenes must
        share device and dtype, and either all or none must have ``times`` (4D).

        Raises:
            ValueError: for an empty sequence, mixed ``times``, or mixed device/dtype.
        """
        scenes = list(scenes)
        if not scenes:
            raise ValueError("scenes must hold at least one Gaussians to concatenate")
        first = scenes[0]
        has_times = [s.times is not None for s in scenes]
        if any(has_times) and not all(has_times):
            raise ValueError("times must be set on all scenes or on none of them")
        for i, scene in enumerate(scenes):
            if scene.device != first.device or scene.dtype != first.dtype:
                raise ValueError(
                    f"all scenes must share dtype and device: scenes[{i}] is {scene.dtype} on "
                    f"{scene.device}, scenes[0] is {first.dtype} on {first.device}"
                )
        degree = max(s.sh_degree for s in scenes)
        scenes = [s.with_sh_degree(degree) for s in scenes]
        fields = first._tensors().keys()
        return cls(**{name: torch.cat([getattr(s, name) for s in scenes]) for name in fields})

    @classmethod
    def from_time_slices(
        cls,
        slices: Sequence[Gaussians],
        times: Sequence[float],
        static: Gaussians | None = None,
    ) -> Gaussians:
        """A 4D world from time slices (a complete Gaussian set per time, Lyra's bullet-time
        output) and optional static Gaussians present at every time.

        Args:
            slices: ``S >= 1`` 3D scenes; slice ``k`` is the world at ``times[k]``.
            times: ``(S,)`` strictly increasing finite times, seconds.
            static: optional 3D scene present at every time (``durations = +inf``).

        Slice ``k`` spans the times nearer to ``times[k]`` than to its neighbours,
        ``[(times[k-1] + times[k]) / 2, (times[k] + times[k+1]) / 2)`` (mirrored about
        ``times[k]`` at the ends): its Gaussians get that span's centre as ``times`` and its
        width as ``durations``, so "step" shows the nearest slice at every time and the spans
        tile time without gaps or overlaps. For uniformly spaced slices the centres are the
        slice times and the widths the spacing; for uneven ones a middle slice's centre moves
        by half the difference of its two gaps. A single slice lasts ``+inf``.

        Raises:
            ValueError: on an empty or mismatched list, unsorted or non-finite times, or a
                slice or static scene that already has ``times``.
        """
        slices = list(slices)
        stamps = [float(t) for t in times]
        if not slices or len(slices) != len(stamps):
            raise ValueError(
                f"from_time_slices needs one time per slice and at least one slice, got "
                f"{len(slices)} slice(s) and {len(stamps)} time(s)"
            )
        if not all(math.isfinite(t) for t in stamps) or any(
            b <= a for a, b in itertools.pairwise(stamps)
        ):
            raise ValueError(f"slice times must be finite and strictly increasing, got {stamps}")
        parts = [*slices, *([] if static is None else [static])]
        if any(part.times is not None for part in parts):
            raise ValueError("from_time_slices takes 3D scenes (without times)")
        if len(stamps) == 1:
            spans = [(stamps[0], math.inf)]
        else:
            middles = [(a + b) / 2 for a, b in itertools.pairwise(stamps)]
            lower = [2 * stamps[0] - middles[0], *middles]
            upper = [*middles, 2 * stamps[-1] - middles[-1]]
            spans = [((lo + hi) / 2, hi - lo) for lo, hi in zip(lower, upper, strict=True)]
        if static is not None:
            spans.append((stamps[0], math.inf))
        timed = []
        for part, (t, d) in zip(parts, spans, strict=True):
            fields = part._tensors()
            fields["times"] = torch.full_like(part.opacity_logits, t)
            fields["durations"] = torch.full_like(part.opacity_logits, d)
            timed.append(cls(**fields))
        return cls.cat(timed)

    # ------------------------------------------------------------------ transforms

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Gaussians:
        """A copy on ``device`` and/or in floating ``dtype`` (``None`` keeps the current one)."""
        if dtype is not None and dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype}")
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def transformed(self, pose: Tensor) -> Gaussians:
        """The Gaussians moved by the rigid ``(4, 4)`` transform ``pose`` (new frame from old):
        means mapped, quaternions (w, x, y, z) composed with its rotation (Hamilton product),
        in float64 and cast back to the scene's dtype. Scales, opacities, times and durations
        are unchanged, and so is the SH colour (exact for degree 0; higher bands are not
        rotated).

        Args:
            pose: ``(4, 4)`` rigid transform (rotation and translation in meters), any
                device or dtype.
        """
        pose = torch.as_tensor(pose).to(self.device, torch.float64)
        check_shape("pose", pose, (4, 4))
        means = self.means.double() @ pose[:3, :3].T + pose[:3, 3]
        w1, x1, y1, z1 = rotation_to_quaternion_wxyz(pose[:3, :3]).unbind(-1)
        w2, x2, y2, z2 = self.quats.double().unbind(-1)
        quats = torch.stack(
            [
                w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            ],
            dim=-1,
        )
        fields = self._tensors()
        fields["means"] = means.to(self.dtype)
        fields["quats"] = quats.to(self.dtype)
        return type(self)(**fields)

    def detach(self) -> Gaussians:
        """A scene whose tensors are detached from the autograd graph (shared storage)."""
        return self._map(Tensor.detach)

    def clone(self) -> Gaussians:
        """A deep copy with its own storage."""
        return self._map(Tensor.clone)

    def __getitem__(self, index: Index) -> Gaussians:
        """Select Gaussians; always returns a :class:`Gaussians`.

        Args:
            index: a slice, a ``(N,)`` bool mask, a 1-D integer tensor or sequence of indices,
                or an ``int`` (selects one Gaussian and keeps the leading dimension, ``N = 1``).
        """
        if isinstance(index, int) and not isinstance(index, bool):
            n = self.num_gaussians
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of range for {n} Gaussians")
            index = slice(index, index + 1 or None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.device)
            if index.numel() == 0 and index.dtype != torch.bool:
                index = index.long()  # e.g. [] becomes an empty float tensor
            if index.dtype == torch.bool:
                if index.shape != (self.num_gaussians,):
                    raise IndexError(
                        f"bool mask must have shape ({self.num_gaussians},), "
                        f"got {tuple(index.shape)}"
                    )
            elif index.dim() != 1 or index.is_floating_point() or index.is_complex():
                raise IndexError(
                    "index must be an int, a slice, a (N,) bool mask or a 1-D integer index, "
                    f"got a {index.dtype} tensor of shape {tuple(index.shape)}"
                )
        return self._map(lambda t: t[index])

    @property
    def time_range(self) -> tuple[float, float] | None:
        """``(first, last)`` time of the Gaussians of finite duration, seconds; ``None`` for a
        3D world or one whose Gaussians are all static."""
        if self.times is None:
            return None
        timed = torch.isfinite(self.durations)
        if not bool(timed.any()):
            return None
        times = self.times.detach()[timed]
        return float(times.min()), float(times.max())

    def at_time(self, time: float, mode: TimeMode = "step") -> Gaussians:
        """The 3D world at world time ``time`` (seconds), without ``times``/``durations``.

        ``time`` is clamped into :attr:`time_range`. ``"step"`` keeps the Gaussians present
        at that time; ``"blend"`` keeps those of non-zero weight and scales their opacities
        by the weight (differentiable in every field). A 3D world is returned unchanged.
        See the module docstring for the semantics.

        Raises:
            ValueError: for a non-finite ``time`` or an unknown ``mode``.
        """
        if mode not in ("step", "blend"):
            raise ValueError(f"time mode must be 'step' or 'blend', got {mode!r}")
        if isinstance(time, bool) or not isinstance(time, numbers.Real) or not math.isfinite(time):
            raise ValueError(f"time must be a finite number of seconds, got {time!r}")
        if self.times is None:
            return self
        span = self.time_range
        t = float(time) if span is None else min(max(float(time), span[0]), span[1])
        offset = t - self.times
        fields = {name: v for name, v in self._tensors().items() if name not in _TIME_FIELDS}
        if mode == "step":
            half = 0.5 * self.durations
            keep = (offset >= -half) & (offset < half)
            return type(self)(**{name: v[keep] for name, v in fields.items()})
        weight = (1.0 - offset.abs() / self.durations).clamp_min(0.0)
        keep = weight > 0
        fields = {name: v[keep] for name, v in fields.items()}
        work = _compute_dtype(self.dtype)
        opacity = torch.sigmoid(fields["opacity_logits"].to(work)) * weight[keep].to(work)
        eps = OPACITY_EPS
        fields["opacity_logits"] = torch.logit(opacity.clamp(eps, 1 - eps)).to(self.dtype)
        return type(self)(**fields)

    def prune_by_opacity(self, ratio: float) -> Gaussians:
        """Drop the least opaque fraction ``ratio`` of the Gaussians.

        Keeps the ``round((1 - ratio) * N)`` most opaque Gaussians (Lyra prunes with
        ``ratio = 0.8``), in their original order. Ties are broken towards lower indices.
        Ranking uses the logits, which is monotonic in opacity and does not saturate.
        Does not call :meth:`validate`; NaN logits would rank as most opaque.

        Raises:
            ValueError: unless ``0 <= ratio < 1``.
        """
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 <= ratio < 1:
            raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
        keep = round((1.0 - ratio) * self.num_gaussians)
        order = torch.sort(self.opacity_logits, descending=True, stable=True).indices
        kept = torch.sort(order[:keep]).values
        return self[kept]

    def crop(self, box_min: BoxCorner, box_max: BoxCorner) -> Gaussians:
        """Keep the Gaussians whose means lie in the axis-aligned box (bounds inclusive).

        Args:
            box_min: ``(3,)`` lower corner, meters.
            box_max: ``(3,)`` upper corner, meters; must be ``>= box_min``.
        """
        lo = torch.as_tensor(box_min, device=self.device)
        hi = torch.as_tensor(box_max, device=self.device)
        check_shape("box_min", lo, (3,))
        check_shape("box_max", hi, (3,))
        if not bool((lo <= hi).all()):
            raise ValueError(f"box_min must be <= box_max per axis, got {lo} and {hi}")
        inside = ((self.means >= lo) & (self.means <= hi)).all(dim=-1)
        return self[inside]

    def with_sh_degree(self, degree: int) -> Gaussians:
        """A scene whose SH is truncated or zero-padded to ``degree`` (other fields shared)."""
        _check_sh_degree("degree", degree)
        k = num_sh_coeffs(degree)
        sh = self.sh[:, :k]
        if k > sh.shape[1]:
            pad = sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)
            sh = torch.cat([sh, pad], dim=1)
        fields = self._tensors()
        fields["sh"] = sh
        return type(self)(**fields)

    def __repr__(self) -> str:
        return (
            f"Gaussians(num_gaussians={self.num_gaussians}, sh_degree={self.sh_degree}, "
            f"times={self.times is not None}, dtype={self.dtype}, device={self.device})"
        )
