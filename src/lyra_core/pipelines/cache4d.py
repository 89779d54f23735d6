"""The 4D cache (GEN3C's dynamic mode): every frame of an RGB-D input video unprojected with its
own depth (:func:`lyra_core.pipelines.cache3d.cache_gaussians`) and kept as the world at that
frame's time.

As a 4D world it is one time slice per input frame (:meth:`Gaussians.from_time_slices`): at a
world time ``t`` it shows the cache of the input frame nearest in time (``"step"`` mode, the
slices' durations tile time; before the first and after the last frame the end frames hold).
It is the baseline of Lyra's dynamic student and what the student reads: the cache rendered
along the six trajectories, trajectory frame ``i`` from the cache at the frame time ``t_i``
(:func:`render_cache_4d`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.pipelines.cache3d import (
    CACHE_BACKGROUND,
    DEFAULT_BATCH_SIZE,
    Renders,
    cache_gaussians,
    render_views,
)
from lyra_core.scene.gaussians import Gaussians

__all__ = ["cache_slices", "cache_world", "nearest_frame", "render_cache_4d", "render_world_at"]


def cache_slices(rgb: Tensor, depth: Tensor, intrinsics: Intrinsics, camtoworlds: Tensor) -> list:
    """The 3D cache of every input frame.

    Args:
        rgb: (T, H, W, 3) uint8 frames.
        depth: (T, H, W) float32 z-depth, meters; 0, NaN or inf where unknown.
        intrinsics: shared by the frames (W x H).
        camtoworlds: (T, 4, 4) float32 frame poses, OpenCV axes.

    Returns:
        T :class:`Gaussians` (world frame), frame ``i``'s cache at index ``i``.
    """
    if not (len(rgb) == len(depth) == len(camtoworlds)):
        raise ValueError(
            f"rgb, depth and camtoworlds need one entry per frame, got {len(rgb)}, "
            f"{len(depth)} and {len(camtoworlds)}"
        )
    return [
        cache_gaussians(rgb[i], depth[i], intrinsics, camtoworlds[i].to(torch.float32))
        for i in range(len(rgb))
    ]


def cache_world(
    rgb: Tensor,
    depth: Tensor,
    intrinsics: Intrinsics,
    camtoworlds: Tensor,
    frame_times: Sequence[float] | Tensor,
) -> Gaussians:
    """The 4D cache of an RGB-D video: frame ``i``'s cache as the time slice at
    ``frame_times[i]`` (seconds, strictly increasing); arguments as :func:`cache_slices`."""
    times = [float(t) for t in torch.as_tensor(frame_times).reshape(-1)]
    return Gaussians.from_time_slices(cache_slices(rgb, depth, intrinsics, camtoworlds), times)


def nearest_frame(frame_times: Sequence[float] | Tensor, time: float) -> int:
    """Index of the frame nearest in time to ``time`` (the earlier one on a tie), the slice a
    ``"step"`` 4D world shows at ``time`` up to that tie."""
    times = torch.as_tensor(frame_times, dtype=torch.float64).reshape(-1)
    return int(torch.argmin((times - float(time)).abs()))


def render_world_at(
    world: Gaussians,
    cameras: Cameras,
    times: Sequence[float] | Tensor,
    background: Sequence[float],
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output_type: str = "uint8",
) -> Renders:
    """Render a 4D (or 3D) world at N (camera, time) pairs, the cameras of one time together
    (:meth:`Gaussians.at_time`, ``"step"``; :func:`lyra_core.pipelines.cache3d.render_views`).

    Args:
        world: the world (a 3D world is the same at every time).
        cameras: N cameras; times: (N,) world times, seconds.
        background, device, batch_size, output_type: as :func:`render_views`.

    Returns:
        :class:`Renders` of the N pairs, in order.
    """
    stamps = [float(t) for t in torch.as_tensor(times).reshape(-1)]
    if len(stamps) != len(cameras):
        raise ValueError(f"need one time per camera, got {len(stamps)} for {len(cameras)}")
    groups: dict[float, list[int]] = {}
    for index, stamp in enumerate(stamps):
        groups.setdefault(stamp, []).append(index)
    parts: list[Renders | None] = [None] * len(stamps)
    for stamp, members in groups.items():
        renders = render_views(
            world.at_time(stamp), cameras[members], background, device, batch_size, output_type
        )
        for k, index in enumerate(members):
            parts[index] = Renders(renders.rgb[k], renders.depth[k], renders.mask[k])
    return Renders(*(torch.stack([getattr(p, f) for p in parts]) for f in ("rgb", "depth", "mask")))


def render_cache_4d(
    cache: Gaussians,
    camtoworlds: Tensor,
    times: Sequence[float] | Tensor,
    intrinsics: Intrinsics,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Renders:
    """Render the 4D cache at (N, 4, 4) float32 poses sharing ``intrinsics``, pose ``i`` at world
    time ``times[i]``, over :data:`~lyra_core.pipelines.cache3d.CACHE_BACKGROUND` (black): uint8
    colour, depth and mask on the CPU, as :func:`~lyra_core.pipelines.cache3d.render_cache`."""
    cameras = Cameras.from_intrinsics(camtoworlds, intrinsics)
    return render_world_at(cache, cameras, times, CACHE_BACKGROUND, device, batch_size)
