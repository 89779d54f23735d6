"""Shared helpers for the renderer tests: small random scenes and cameras, the ``cuda`` marker.

Scenes are built in float64 from a seeded generator and cast afterwards, so the float32 and
float64 versions of a scene hold the same Gaussians.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest
import torch

from lyra_core.geometry.cameras import Cameras, Intrinsics
from lyra_core.geometry.transforms import look_at
from lyra_core.scene.gaussians import SH_C0, Gaussians

# ROS 2 tests talk over DDS between real processes: keep discovery on this machine, give every
# test run its own domain (parallel runs must not see each other) and its own log folder.
# Child processes inherit these.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lyra-ros-log-"))
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE",
    str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_data.xml"),
)

WIDTH, HEIGHT = 64, 48
"""Default image size of the test cameras (small: the reference backend is brute force)."""

SCENE_CENTRE = (0.0, 0.0, 3.5)
"""All test cameras look at this point; random scenes are spread around it."""


def gsplat_importable() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def cuda_ready() -> bool:
    """True when the CUDA comparisons can run: a GPU and an importable gsplat."""
    return torch.cuda.is_available() and gsplat_importable()


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and an importable gsplat")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def random_scene(
    n: int = 200,
    *,
    sh_degree: int = 0,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    depth_range: tuple[float, float] = (2.0, 5.0),
    spread: tuple[float, float] = (0.9, 0.7),
    scale_range: tuple[float, float] = (0.01, 0.3),
    opacity_range: tuple[float, float] = (0.05, 1.0),
) -> Gaussians:
    """N random Gaussians in front of the camera at the origin looking down +z.

    Means have z in ``depth_range`` and |x| <= spread[0] z, |y| <= spread[1] z (a little wider
    than the default 60 degree test frustum, so some Gaussians straddle the image border).
    Rotations are random, scales log-uniform in ``scale_range`` per axis (anisotropic),
    opacities uniform in ``opacity_range``, DC colours uniform in [0, 1] and higher SH
    coefficients normal with std 0.3.
    """
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=f64)

    lo, hi = depth_range
    z = lo + (hi - lo) * rand(n)
    xy = (2.0 * rand(n, 2) - 1.0) * torch.tensor(spread, dtype=f64) * z[:, None]
    means = torch.cat([xy, z[:, None]], dim=1)
    quats = torch.randn(n, 4, generator=gen, dtype=f64)
    s_lo, s_hi = scale_range
    scales = s_lo * torch.exp(rand(n, 3) * math.log(s_hi / s_lo))
    o_lo, o_hi = opacity_range
    opacities = o_lo + (o_hi - o_lo) * rand(n)
    sh = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen, dtype=f64)
    sh[:, 0] = (rand(n, 3) - 0.5) / SH_C0
    scene = Gaussians.from_activated(means, quats, scales, opacities, sh)
    return scene.to(dtype=dtype)


def build_cameras(
    num: int = 3, *, width: int = WIDTH, height: int = HEIGHT, dtype: torch.dtype = torch.float64
) -> Cameras:
    """Up to 4 cameras looking at :data:`SCENE_CENTRE` with different poses and intrinsics.

    Camera 0 sits at the origin with the identity pose and a centred principal point. Cameras
    2 and 3 have non-square pixels and off-centre principal points.
    """
    if not 1 <= num <= 4:
        raise ValueError("1 to 4 test cameras")
    f64 = torch.float64
    eyes = torch.tensor(
        [[0.0, 0.0, 0.0], [0.4, -0.2, 0.1], [-0.3, 0.25, -0.2], [0.2, 0.3, 0.4]], dtype=f64
    )[:num]
    camtoworlds = look_at(eyes, torch.tensor(SCENE_CENTRE, dtype=f64).expand(num, 3))
    K = Intrinsics.from_fov(math.radians(60.0), width, height).matrix(f64)
    Ks = K.expand(4, 3, 3).clone()
    w, h = width, height
    Ks[2] = torch.tensor([[0.8 * w, 0, 0.45 * w], [0, 0.9 * w, 0.4 * h], [0, 0, 1]])
    Ks[3] = torch.tensor([[0.7 * w, 0, 0.55 * w], [0, 0.6 * w, 0.6 * h], [0, 0, 1]])
    return Cameras(camtoworlds.to(dtype), Ks[:num].to(dtype), width, height)


@pytest.fixture(scope="session")
def make_scene():
    """Factory of random scenes, see :func:`random_scene`."""
    return random_scene


@pytest.fixture(scope="session")
def make_cameras():
    """Factory of test cameras, see :func:`build_cameras`."""
    return build_cameras


@pytest.fixture(scope="session")
def tiny_student_checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained Lyra student saved as a checkpoint folder (64x48 videos, 9 frames)."""
    pytest.importorskip("diffusers")
    from lyra_core.models.decoder import LyraDecoder, LyraDecoderConfig
    from lyra_core.models.vae import VideoVAE
    from lyra_core.pipelines.student import LyraStudent, StudentConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        student = LyraStudent(VideoVAE.tiny(), LyraDecoder(LyraDecoderConfig.tiny()))
    config = StudentConfig(width=64, height=48, num_frames=9, training={"note": "untrained"})
    return student.save_pretrained(tmp_path_factory.mktemp("student") / "tiny", config)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A procedural data root with 2 train, 1 val and 2 test scenes (32x32, 9 frames, 2 held-out
    views): big enough for real training steps and evaluation, small enough for seconds."""
    from lyra_core.data.generator import GeneratorConfig, write_generated_scene

    config = GeneratorConfig(width=32, height=32, num_frames=9, num_heldout=2, num_gaussians=3000)
    root = tmp_path_factory.mktemp("data")
    for split, seeds in {"train": (1, 2), "val": (900_001,), "test": (950_001, 950_002)}.items():
        for seed in seeds:
            write_generated_scene(root / split, seed, config, split=split)
    return root
