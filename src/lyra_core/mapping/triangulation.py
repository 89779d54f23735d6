"""Initial points from posed RGB images: triangulated features, or a plane when features fail.

Without depth and without a sparse model (COLMAP's ``points3D``), 3DGS still wants points to
start from. With the poses known (a robot's tf, a capture's cameras) the structure-from-motion
part that is left is small, and :func:`triangulate_views` does it with OpenCV:

1. **Features**: SIFT (``cv2.SIFT_create``) or ORB keypoints and descriptors per view, on the
   grey image.
2. **Pairs**: each view is matched with its ``neighbours`` nearest views (camera centres) among
   those whose optical axes differ by less than ``max_view_angle_deg``.
3. **Matches**: nearest neighbours in descriptor space with Lowe's ratio test, kept only when
   the match is mutual (cross-check: the ratio test holds in both directions), and only when
   the keypoints agree with the known poses: within ``max_epipolar_error`` pixels of each
   other's epipolar line (fundamental matrix ``F = K_j^-T [t]x R K_i^-1`` from the poses).
4. **Triangulation**: ``cv2.triangulatePoints`` with the known projection matrices
   ``P = K [R | t]`` (world to image). A point is kept when it lies in front of both cameras,
   reprojects within ``max_reprojection_error`` pixels in both, and the rays meet at an angle
   of at least ``min_parallax_deg`` (a smaller angle leaves depth undetermined).
5. **Tracks**: matches that share a keypoint are joined (union-find) into one track, one 3D
   point: the median of its pairs' points, kept when it reprojects within
   ``max_reprojection_error`` pixels in every view of the track and no view holds two of its
   keypoints (multi-view consistency removes most repeated-texture mismatches, which the
   epipolar test alone cannot: a wrong match along the epipolar line triangulates exactly).
   The colour is the mean of the track's pixels.

:func:`points_at_scene_depth` is the last resort when nothing triangulates (textureless
images): for every view, a grid of its pixels placed on the fronto-parallel plane at the
median scene depth (:func:`scene_depth_from_poses`, the distance from the cameras to the point
their optical axes pass closest to), coloured by the image. Optimisation then moves them.

Conventions as in the rest of the package: camera-to-world poses in the OpenCV camera
convention (x right, y down, z forward), meters; pixel centres at integer coordinates (OpenCV's
keypoint convention as well).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from lyra_core.geometry.cameras import Intrinsics
from lyra_core.mapping.frames import PosedFrame

__all__ = [
    "TriangulatedPoints",
    "TriangulationConfig",
    "points_at_scene_depth",
    "scene_depth_from_poses",
    "triangulate_frames",
    "triangulate_views",
]


@dataclass(frozen=True)
class TriangulationConfig:
    """Settings of :func:`triangulate_views` (pixels, degrees).

    Attributes:
        detector: ``"sift"`` (float descriptors, L2) or ``"orb"`` (binary, Hamming).
        max_features: keypoints kept per view (the strongest).
        neighbours: views each view is matched with (nearest camera centres).
        max_view_angle_deg: only views whose optical axes differ by less are matched.
        ratio: Lowe's ratio test: best distance below this times the second best.
        max_epipolar_error: pixels from the epipolar line of the known poses.
        max_reprojection_error: pixels, in every view of a point.
        min_parallax_deg: smallest angle between the two rays of a triangulated point.
        min_depth: meters; points closer to a camera are dropped.
    """

    detector: str = "sift"
    max_features: int = 4000
    neighbours: int = 4
    max_view_angle_deg: float = 60.0
    ratio: float = 0.75
    max_epipolar_error: float = 2.0
    max_reprojection_error: float = 2.0
    min_parallax_deg: float = 1.0
    min_depth: float = 1e-3

    def __post_init__(self) -> None:
        if self.detector not in ("sift", "orb"):
            raise ValueError(f"detector must be 'sift' or 'orb', got {self.detector!r}")
        for name in ("max_features", "neighbours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio!r}")
        for name in ("max_view_angle_deg", "max_epipolar_error", "max_reprojection_error"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.min_parallax_deg < 90.0:
            raise ValueError(f"min_parallax_deg must be in [0, 90), got {self.min_parallax_deg}")


@dataclass
class TriangulatedPoints:
    """What :func:`triangulate_views` found.

    Attributes:
        points: (N, 3) float32 world positions, meters.
        colors: (N, 3) uint8 RGB colours.
        views: (N,) int number of views each point was seen in (its track length).
        pairs: view pairs matched.
        matches: matches that passed the ratio, cross and epipolar tests (all pairs).
        triangulated: matches whose pair triangulation passed the depth, reprojection and
            parallax tests.
    """

    points: np.ndarray
    colors: np.ndarray
    views: np.ndarray
    pairs: int = 0
    matches: int = 0
    triangulated: int = 0

    def __len__(self) -> int:
        return len(self.points)

    def stats(self) -> dict[str, float | int]:
        """Counts for reports."""
        return {
            "points": len(self),
            "pairs": self.pairs,
            "matches": self.matches,
            "triangulated_matches": self.triangulated,
            "mean_track_length": float(self.views.mean()) if len(self) else 0.0,
        }


# --------------------------------------------------------------------------------------------
# Features and matches
# --------------------------------------------------------------------------------------------


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def _detect(
    images: Sequence[np.ndarray], config: TriangulationConfig
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(keypoint xy (K, 2) float64, descriptors (K, D) or None) per view."""
    if config.detector == "sift":
        detector = cv2.SIFT_create(nfeatures=config.max_features)
    else:
        detector = cv2.ORB_create(nfeatures=config.max_features)
    out = []
    for image in images:
        keypoints, descriptors = detector.detectAndCompute(_gray(image), None)
        xy = np.array([k.pt for k in keypoints], dtype=np.float64).reshape(-1, 2)
        out.append((xy, descriptors))
    return out


def _ratio_matches(
    matcher: cv2.DescriptorMatcher, query: np.ndarray, train: np.ndarray, ratio: float
) -> dict[int, int]:
    """query index -> train index for matches passing Lowe's ratio test."""
    found = {}
    for pair in matcher.knnMatch(query, train, k=2):
        if len(pair) == 1 or (len(pair) == 2 and pair[0].distance < ratio * pair[1].distance):
            found[pair[0].queryIdx] = pair[0].trainIdx
    return found


def _mutual_matches(
    matcher: cv2.DescriptorMatcher, a: np.ndarray, b: np.ndarray, ratio: float
) -> np.ndarray:
    """(M, 2) index pairs (into a, into b) passing the ratio test both ways."""
    forward = _ratio_matches(matcher, a, b, ratio)
    backward = _ratio_matches(matcher, b, a, ratio)
    pairs = [(i, j) for i, j in forward.items() if backward.get(j) == i]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _projection(K: np.ndarray, camtoworld: np.ndarray) -> np.ndarray:
    """(3, 4) world-to-image projection ``K [R | t]``."""
    worldtocam = np.linalg.inv(camtoworld)
    return K @ worldtocam[:3]


def _fundamental(
    K_i: np.ndarray, K_j: np.ndarray, pose_i: np.ndarray, pose_j: np.ndarray
) -> np.ndarray:
    """F with ``x_j^T F x_i = 0`` for pixels of one point in views i and j."""
    relative = np.linalg.inv(pose_j) @ pose_i  # camera i -> camera j
    R, t = relative[:3, :3], relative[:3, 3]
    t_cross = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(K_j).T @ t_cross @ R @ np.linalg.inv(K_i)


def _epipolar_error(F: np.ndarray, x_i: np.ndarray, x_j: np.ndarray) -> np.ndarray:
    """(M,) larger of the two point-to-epipolar-line distances, pixels."""
    h_i = np.hstack([x_i, np.ones((len(x_i), 1))])
    h_j = np.hstack([x_j, np.ones((len(x_j), 1))])
    lines_j = h_i @ F.T  # lines in image j
    lines_i = h_j @ F  # lines in image i
    d_j = np.abs((lines_j * h_j).sum(1)) / np.linalg.norm(lines_j[:, :2], axis=1).clip(1e-12)
    d_i = np.abs((lines_i * h_i).sum(1)) / np.linalg.norm(lines_i[:, :2], axis=1).clip(1e-12)
    return np.maximum(d_i, d_j)


def _project(P: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) and depths (M,) of world points (M, 3) under projection P."""
    h = np.hstack([points, np.ones((len(points), 1))]) @ P.T
    depth = h[:, 2]
    return h[:, :2] / np.where(np.abs(depth) < 1e-12, 1e-12, depth)[:, None], depth


def _parallax_deg(points: np.ndarray, center_i: np.ndarray, center_j: np.ndarray) -> np.ndarray:
    a = points - center_i
    b = points - center_j
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _choose_pairs(camtoworlds: np.ndarray, config: TriangulationConfig) -> list[tuple[int, int]]:
    centers = camtoworlds[:, :3, 3]
    axes = camtoworlds[:, :3, 2]
    cos_limit = math.cos(math.radians(config.max_view_angle_deg))
    pairs = set()
    for i in range(len(camtoworlds)):
        distance = np.linalg.norm(centers - centers[i], axis=1)
        ok = (axes @ axes[i] > cos_limit) & (distance > 1e-9)
        candidates = np.flatnonzero(ok)
        nearest = candidates[np.argsort(distance[candidates], kind="stable")][: config.neighbours]
        pairs.update((min(i, int(j)), max(i, int(j))) for j in nearest)
    return sorted(pairs)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = np.arange(size)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# --------------------------------------------------------------------------------------------
# Triangulation
# --------------------------------------------------------------------------------------------


def triangulate_views(
    images: Sequence[np.ndarray],
    intrinsics: Sequence[Intrinsics],
    camtoworlds: Sequence[np.ndarray] | np.ndarray,
    config: TriangulationConfig | None = None,
) -> TriangulatedPoints:
    """Triangulate feature matches between neighbouring views with known poses (module
    docstring for the steps).

    Args:
        images: V images, (H, W, 3) uint8 RGB (sizes may differ between views).
        intrinsics: V pinhole intrinsics, one per image (no distortion).
        camtoworlds: V (4, 4) camera-to-world poses, OpenCV camera convention, meters.
        config: settings.

    Returns:
        The points (possibly none), one per consistent track, with colours and counts.
    """
    config = config or TriangulationConfig()
    poses = np.asarray(camtoworlds, dtype=np.float64).reshape(-1, 4, 4)
    if not len(images) == len(intrinsics) == len(poses):
        raise ValueError(
            f"need as many images ({len(images)}), intrinsics ({len(intrinsics)}) and poses "
            f"({len(poses)})"
        )
    Ks = [np.asarray(k.matrix(dtype=torch.float64).numpy()) for k in intrinsics]
    projections = [_projection(K, pose) for K, pose in zip(Ks, poses, strict=True)]
    features = _detect(images, config)
    offsets = np.cumsum([0] + [len(xy) for xy, _ in features])
    norm = cv2.NORM_L2 if config.detector == "sift" else cv2.NORM_HAMMING
    matcher = cv2.BFMatcher(norm)

    pairs = _choose_pairs(poses, config)
    tracks = _UnionFind(int(offsets[-1]))
    estimates: list[tuple[np.ndarray, np.ndarray]] = []  # (keypoint ids (M, 2), points (M, 3))
    total_matches = total_triangulated = 0
    for i, j in pairs:
        (xy_i, des_i), (xy_j, des_j) = features[i], features[j]
        if des_i is None or des_j is None or len(des_i) < 2 or len(des_j) < 2:
            continue
        index = _mutual_matches(matcher, des_i, des_j, config.ratio)
        if not len(index):
            continue
        x_i, x_j = xy_i[index[:, 0]], xy_j[index[:, 1]]
        F = _fundamental(Ks[i], Ks[j], poses[i], poses[j])
        good = _epipolar_error(F, x_i, x_j) <= config.max_epipolar_error
        index, x_i, x_j = index[good], x_i[good], x_j[good]
        total_matches += len(index)
        if not len(index):
            continue
        homogeneous = cv2.triangulatePoints(projections[i], projections[j], x_i.T, x_j.T)
        w = homogeneous[3]
        finite = np.abs(w) > 1e-12
        points = (homogeneous[:3] / np.where(finite, w, 1.0)).T
        keep = finite & np.isfinite(points).all(1)
        for P, x in ((projections[i], x_i), (projections[j], x_j)):
            pixels, depth = _project(P, points)
            error = np.linalg.norm(pixels - x, axis=1)
            keep &= (depth > config.min_depth) & (error <= config.max_reprojection_error)
        keep &= _parallax_deg(points, poses[i, :3, 3], poses[j, :3, 3]) >= config.min_parallax_deg
        if not bool(keep.any()):
            continue
        ids = np.stack([offsets[i] + index[keep, 0], offsets[j] + index[keep, 1]], axis=1)
        for a, b in ids:
            tracks.union(int(a), int(b))
        estimates.append((ids, points[keep]))
        total_triangulated += int(keep.sum())

    result = _merge_tracks(estimates, tracks, offsets, features, images, projections, config)
    result.pairs, result.matches, result.triangulated = (
        len(pairs),
        total_matches,
        total_triangulated,
    )
    return result


def _merge_tracks(
    estimates: list[tuple[np.ndarray, np.ndarray]],
    tracks: _UnionFind,
    offsets: np.ndarray,
    features: list[tuple[np.ndarray, np.ndarray | None]],
    images: Sequence[np.ndarray],
    projections: list[np.ndarray],
    config: TriangulationConfig,
) -> TriangulatedPoints:
    """One point per track: the median of its pair estimates, checked in all its views."""
    empty = TriangulatedPoints(
        np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
    )
    if not estimates:
        return empty
    ids = np.concatenate([ids for ids, _ in estimates])
    pair_points = np.concatenate([points for _, points in estimates])
    roots = np.array([tracks.find(int(k)) for k in ids[:, 0]])
    # The keypoints of every track (both ends of every kept match), by the track's root.
    members: dict[int, list[int]] = {}
    for key in np.unique(ids).tolist():
        members.setdefault(tracks.find(key), []).append(key)
    order = np.argsort(roots, kind="stable")
    roots, pair_points = roots[order], pair_points[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
    ends = np.r_[starts[1:], len(roots)]
    points, colors, views = [], [], []
    for start, end in zip(starts, ends, strict=True):
        keys = members[int(roots[start])]
        view_of = np.searchsorted(offsets, keys, side="right") - 1
        if len(set(view_of.tolist())) != len(keys):
            continue  # two keypoints of one view: an inconsistent track
        pixels = np.stack(
            [features[v][0][k - offsets[v]] for k, v in zip(keys, view_of, strict=True)]
        )
        if len(keys) == 2:
            point = np.median(pair_points[start:end], axis=0)
        else:
            point = _triangulate_track([projections[v] for v in view_of], pixels)
        ok, pixels_colors = True, []
        for xy, view in zip(pixels, view_of, strict=True):
            pixel, depth = _project(projections[view], point[None])
            error = np.linalg.norm(pixel[0] - xy)
            if not depth[0] > config.min_depth or not error <= config.max_reprojection_error:
                ok = False
                break
            image = images[view]
            u = int(np.clip(round(xy[0]), 0, image.shape[1] - 1))
            v = int(np.clip(round(xy[1]), 0, image.shape[0] - 1))
            pixels_colors.append(image[v, u].astype(np.float64))
        if ok:
            points.append(point)
            colors.append(np.mean(pixels_colors, axis=0))
            views.append(len(keys))
    if not points:
        return empty
    return TriangulatedPoints(
        np.asarray(points, np.float32),
        np.clip(np.asarray(colors) + 0.5, 0, 255).astype(np.uint8),
        np.asarray(views, np.int64),
    )


def _triangulate_track(projections: Sequence[np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """The linear (DLT) least-squares point (3,) seen at ``pixels`` (V, 2) under V projections,
    rows normalised so that every view weighs the same."""
    rows = []
    for P, (u, v) in zip(projections, pixels, strict=True):
        for row in (u * P[2] - P[0], v * P[2] - P[1]):
            rows.append(row / max(np.linalg.norm(row), 1e-12))
    _, _, vt = np.linalg.svd(np.asarray(rows))
    homogeneous = vt[-1]
    if abs(homogeneous[3]) < 1e-12:
        return np.full(3, np.nan)
    return homogeneous[:3] / homogeneous[3]


def triangulate_frames(
    frames: Sequence[PosedFrame], config: TriangulationConfig | None = None
) -> TriangulatedPoints:
    """:func:`triangulate_views` on posed frames (their colour as uint8, intrinsics, poses)."""
    images = [(frame.rgb.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8) for frame in frames]
    return triangulate_views(
        images,
        [frame.intrinsics for frame in frames],
        np.stack([frame.camtoworld.double().numpy() for frame in frames]),
        config,
    )


# --------------------------------------------------------------------------------------------
# Fallback: a plane per view at the scene depth
# --------------------------------------------------------------------------------------------


def scene_depth_from_poses(camtoworlds: np.ndarray | Tensor, default: float = 1.0) -> float:
    """Median distance (meters) from the cameras to the point their optical axes pass closest
    to (least squares); ``default`` when the axes are (nearly) parallel or that point lies
    behind most cameras.

    Args:
        camtoworlds: (V, 4, 4) camera-to-world poses, OpenCV convention (z: optical axis).
    """
    poses = np.asarray(camtoworlds, dtype=np.float64).reshape(-1, 4, 4)
    centers, axes = poses[:, :3, 3], poses[:, :3, 2]
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    # Sum over cameras of (I - d d^T) (x - c) = 0.
    projectors = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    A = projectors.sum(0)
    b = (projectors @ centers[:, :, None]).sum(0)[:, 0]
    if len(poses) < 2 or np.linalg.cond(A) > 1e6:
        return float(default)
    point = np.linalg.solve(A, b)
    depth = ((point - centers) * axes).sum(1)
    if np.median(depth) <= 0:
        return float(default)
    return float(np.median(depth))


def points_at_scene_depth(
    frames: Sequence[PosedFrame], depth: float | None = None, per_view: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of every view on its fronto-parallel plane at ``depth`` (the fallback start).

    Args:
        frames: posed frames.
        depth: meters along each optical axis; None: :func:`scene_depth_from_poses`.
        per_view: about this many points per view (a regular pixel grid).

    Returns:
        ``(points (N, 3) float32 meters, colors (N, 3) uint8)``.
    """
    if depth is None:
        depth = scene_depth_from_poses(np.stack([f.camtoworld.double().numpy() for f in frames]))
    points, colors = [], []
    for frame in frames:
        k = frame.intrinsics
        step = max(1, round(math.sqrt(k.width * k.height / max(per_view, 1))))
        v, u = np.mgrid[step // 2 : k.height : step, step // 2 : k.width : step]
        u, v = u.ravel().astype(np.float64), v.ravel().astype(np.float64)
        camera = np.stack([(u - k.cx) / k.fx * depth, (v - k.cy) / k.fy * depth], 1)
        camera = np.hstack([camera, np.full((len(u), 1), depth)])
        pose = frame.camtoworld.double().numpy()
        points.append(camera @ pose[:3, :3].T + pose[:3, 3])
        rgb = frame.rgb.numpy()[v.astype(int), u.astype(int)]
        colors.append((rgb * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
    return np.concatenate(points).astype(np.float32), np.concatenate(colors)
