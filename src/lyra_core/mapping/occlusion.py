"""Occlusion fill for one RGB-D frame: a background layer behind depth discontinuities.

One frame's Gaussians show nothing behind its foreground objects: a camera a short way off the
input pose sees holes where the background was hidden. :func:`background_layer` builds the
missing layer the way layered-depth-image methods do, from the far side of each discontinuity:

1. *Depth edges*: a pixel is on the near side of a discontinuity when a pixel within ``band``
   pixels lies farther by more than ``edge_ratio`` (relative depth). These near-side pixels form
   the region ``hidden`` whose background the input camera could not see.
2. *Background depth*: the far side's depth, extended into ``hidden``: each hidden pixel takes
   the depth of the nearest far-side pixel (a distance transform over the visible background
   boundary), then is smoothed by OpenCV's Telea inpainting so it varies continuously.
3. *Background colour*: inpainted from the far side only (the foreground's own colour is masked
   out of the inpainting source, so it does not bleed into the background).

The layer lies behind the foreground, so the input view is unchanged: only views from off the
input pose, where the foreground no longer covers it, see it. Optionally the frame's border is
extended too (``border`` pixels replicated outwards at the edge depth), so small camera moves do
not open empty margins.

Units: depth in meters along the optical axis (z), 0 or non-finite where unknown; images
(H, W, 3) uint8 or float in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lyra_core.geometry.cameras import Intrinsics

__all__ = [
    "BackgroundLayer",
    "OcclusionFillConfig",
    "background_layer",
    "near_side_of_depth_edges",
]


@dataclass(frozen=True)
class OcclusionFillConfig:
    """Settings of :func:`background_layer`.

    Attributes:
        band: width in pixels of the background strip built behind each depth edge; views whose
            parallax stays below it see no hole.
        edge_ratio: relative depth jump that makes an edge (0.05: 5 % farther).
        border: pixels added around the frame by replicating its edge (0: none).
        inpaint_radius: OpenCV inpainting radius, pixels.
    """

    band: int = 24
    edge_ratio: float = 0.05
    border: int = 0
    inpaint_radius: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.band, bool) or not isinstance(self.band, int) or self.band < 1:
            raise ValueError(f"band must be a positive integer, got {self.band!r}")
        if not 0.0 < float(self.edge_ratio) < 10.0:
            raise ValueError(f"edge_ratio must be in (0, 10), got {self.edge_ratio!r}")
        if isinstance(self.border, bool) or not isinstance(self.border, int) or self.border < 0:
            raise ValueError(f"border must be an integer >= 0, got {self.border!r}")
        if self.inpaint_radius < 1:
            raise ValueError(f"inpaint_radius must be >= 1, got {self.inpaint_radius!r}")


@dataclass
class BackgroundLayer:
    """The background behind a frame's depth edges (and around its border).

    Attributes:
        rgb: (H', W', 3) uint8 colour of the layer.
        depth: (H', W') float32 meters; 0 outside the layer.
        mask: (H', W') bool, the pixels that belong to the layer.
        offset: pixels added on each side (the config's ``border``): pixel (u, v) of the layer
            is pixel (u - offset, v - offset) of the frame, so ``cx, cy`` shift by ``offset``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    offset: int

    def intrinsics(self, frame: Intrinsics) -> Intrinsics:
        """The layer's intrinsics from the frame's: principal point and size grow by the offset."""
        pad = self.offset
        return Intrinsics(
            frame.fx,
            frame.fy,
            frame.cx + pad,
            frame.cy + pad,
            frame.width + 2 * pad,
            frame.height + 2 * pad,
        )


def background_layer(
    rgb: np.ndarray, depth: np.ndarray, config: OcclusionFillConfig | None = None
) -> BackgroundLayer:
    """Build the background layer of one RGB-D frame (see the module docstring).

    Args:
        rgb: (H, W, 3) uint8, or float in [0, 1].
        depth: (H, W) meters; 0 / NaN / inf where unknown.
        config: settings; defaults if None.

    Returns:
        The layer; its mask is empty when the frame has no depth edges and no border.
    """
    config = config or OcclusionFillConfig()
    rgb8 = _as_uint8(rgb)
    z = np.asarray(depth, dtype=np.float32)
    if z.shape != rgb8.shape[:2]:
        raise ValueError(f"depth must have shape {rgb8.shape[:2]} like rgb, got {z.shape}")
    z = np.where(np.isfinite(z) & (z > 0), z, 0.0).astype(np.float32)
    valid = z > 0

    hidden = near_side_of_depth_edges(z, valid, config.band, config.edge_ratio)
    # Sources of the fill: valid pixels outside twice the band, so a hidden pixel (at most
    # `band` from its edge) is always nearer to the far side than to its own object's interior.
    occluder = near_side_of_depth_edges(z, valid, 2 * config.band, config.edge_ratio)
    source = valid & ~occluder

    layer_depth = np.zeros_like(z)
    layer_rgb = np.zeros_like(rgb8)
    if hidden.any() and source.any():
        # Depth: the nearest source pixel's (labels of a distance transform index its zeros).
        not_source = (~source).astype(np.uint8)
        _, labels = cv2.distanceTransformWithLabels(
            not_source, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        rows, cols = np.nonzero(source)
        flat_index = np.zeros(int(labels.max()) + 1, dtype=np.int64)
        flat_index[labels[rows, cols]] = rows * z.shape[1] + cols
        layer_depth[hidden] = z.reshape(-1)[flat_index[labels[hidden]]]
        # Colour: inpainted with every occluder pixel masked, so only the far side feeds it.
        filled = cv2.inpaint(
            rgb8, (~source).astype(np.uint8), config.inpaint_radius, cv2.INPAINT_TELEA
        )
        layer_rgb[hidden] = filled[hidden]
        # A hidden pixel whose nearest source is not farther than itself is no occlusion.
        keep = layer_depth > z * (1.0 + config.edge_ratio)
        layer_depth[~keep] = 0.0
        layer_rgb[~keep] = 0

    layer_mask = layer_depth > 0
    if config.border:
        layer_rgb, layer_depth, layer_mask = _extend_border(
            rgb8, z, layer_rgb, layer_depth, layer_mask, config.border
        )
    return BackgroundLayer(layer_rgb, layer_depth, layer_mask, config.border)


def near_side_of_depth_edges(
    z: np.ndarray, valid: np.ndarray, radius: int, edge_ratio: float
) -> np.ndarray:
    """Valid pixels with a valid pixel farther by more than ``edge_ratio`` within ``radius``."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    farthest = cv2.dilate(z, kernel)  # invalid pixels hold 0, i.e. never the farthest
    return valid & (farthest > z * (1.0 + edge_ratio))


def _extend_border(
    rgb8: np.ndarray,
    z: np.ndarray,
    layer_rgb: np.ndarray,
    layer_depth: np.ndarray,
    layer_mask: np.ndarray,
    border: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad the layer by ``border`` pixels replicated from the frame's edge (colour and depth)."""
    pad = (border, border, border, border)
    edge_rgb = cv2.copyMakeBorder(rgb8, *pad, cv2.BORDER_REPLICATE)
    # Unknown depth at the edge takes the nearest known one along the edge (inpainted).
    known = z > 0
    z_edge = z
    if (~known).any() and known.any():
        z_edge = cv2.inpaint(z, (~known).astype(np.uint8), 3, cv2.INPAINT_NS)
    edge_depth = cv2.copyMakeBorder(z_edge, *pad, cv2.BORDER_REPLICATE)
    out_rgb = cv2.copyMakeBorder(layer_rgb, *pad, cv2.BORDER_CONSTANT, value=0)
    out_depth = cv2.copyMakeBorder(layer_depth, *pad, cv2.BORDER_CONSTANT, value=0)
    ring = np.ones(out_depth.shape, dtype=bool)
    ring[border:-border, border:-border] = False
    ring &= edge_depth > 0
    out_rgb[ring] = edge_rgb[ring]
    out_depth[ring] = edge_depth[ring]
    out_mask = cv2.copyMakeBorder(layer_mask.astype(np.uint8), *pad, cv2.BORDER_CONSTANT, value=0)
    return out_rgb, out_depth, out_mask.astype(bool) | ring


def _as_uint8(rgb: np.ndarray) -> np.ndarray:
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
