"""The native CPU backend (C++ extension) against the torch backend and the brute-force
reference: forward images, gradients of every parameter, edge cases, backend choice and the
fallback when the extension is missing.

float32 tolerances: the native kernels evaluate each pixel's Gaussian directly while the torch
backend expands it around the tile centre, and exp is a polynomial here and Sleef's there, so
values differ by a few float32 ulps per blended Gaussian: rgb and alpha within 2e-5 (absolute),
expected depth within 2e-4 m where alpha > 0.05 (divided by alpha, rounding grows where it is
small).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.testing import assert_close

from lyra_core.geometry.cameras import Cameras
from lyra_core.rendering import render
from lyra_core.rendering.backends import native
from lyra_core.rendering.projection import corner_based_Ks, project_gaussians
from lyra_core.scene.gaussians import Gaussians

F32 = torch.float32
BACKGROUND = (0.2, 0.5, 0.8)
PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")
RGB_TOL = dict(atol=2e-5, rtol=1e-5)
DEPTH_TOL = dict(atol=2e-4, rtol=1e-5)

pytestmark = pytest.mark.skipif(
    os.environ.get(native.DISABLE_VARIABLE) == "0", reason="LYRA_NATIVE=0 disables the backend"
)


def test_extension_is_built():
    """The set-up script builds it; every other test here needs it."""
    assert native.native_available(), (
        "the native CPU rasteriser is not built: run "
        "`python -c 'from lyra_core.rendering.backends.native import main; main()'`"
    )


def assert_same_render(out, ref):
    assert out.rgb.shape == ref.rgb.shape and out.rgb.dtype == ref.rgb.dtype
    assert_close(out.rgb, ref.rgb, **RGB_TOL)
    assert_close(out.alpha, ref.alpha, **RGB_TOL)
    covered = ref.alpha > 0.05
    assert_close(out.depth[covered], ref.depth[covered], **DEPTH_TOL)
    assert (out.depth[ref.alpha == 0] == 0).all()


def leaf_scene(scene: Gaussians) -> Gaussians:
    return Gaussians(**{k: getattr(scene, k).detach().clone().requires_grad_(True) for k in PARAMS})


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_forward_matches_torch_and_reference(sh_degree, make_scene, make_cameras):
    scene = make_scene(300, sh_degree=sh_degree, dtype=F32, seed=sh_degree)
    cameras = make_cameras(3, dtype=F32)
    out = render(scene, cameras, backend="native", background=BACKGROUND)
    assert out.backend == "native"
    assert_same_render(out, render(scene, cameras, backend="torch", background=BACKGROUND))
    assert_same_render(out, render(scene, cameras, backend="reference", background=BACKGROUND))
    coverage = (out.alpha > 0.5).float().mean()
    assert 0.1 < coverage < 0.95  # a meaningful scene, partly empty


@pytest.mark.parametrize("tile_size", [4, 8, 13, 16, 32])
@pytest.mark.parametrize("size", [(61, 45), (16, 16), (7, 30)])
def test_forward_on_sizes_that_tiles_do_not_divide(tile_size, size, make_scene, make_cameras):
    width, height = size
    scene = make_scene(200, sh_degree=1, dtype=F32, seed=7)
    cameras = make_cameras(2, width=width, height=height, dtype=F32)
    out = render(scene, cameras, backend="native", tile_size=tile_size, background=BACKGROUND)
    assert out.rgb.shape == (2, height, width, 3)
    assert_same_render(out, render(scene, cameras, backend="reference", background=BACKGROUND))


def test_edge_cases_behind_huge_tiny_and_off_image(make_cameras):
    """Gaussians behind the camera, beyond the far plane, far off-image, huge (covering the
    image), tiny (sub-pixel) and transparent ones, in one scene."""
    means = torch.tensor(
        [
            [0.0, 0.0, -2.0],  # behind the camera
            [0.0, 0.0, 0.005],  # in front of the near plane
            [50.0, 0.0, 3.0],  # far off-image
            [0.0, 0.0, 4.0],  # huge
            [0.1, 0.05, 2.5],  # tiny
            [-0.2, 0.1, 3.0],  # nearly transparent
            [0.3, -0.2, 2.0],  # ordinary
        ]
    )
    scales = torch.tensor([0.5, 0.5, 0.5, 30.0, 1e-4, 0.2, 0.15])[:, None].expand(7, 3)
    opacities = torch.tensor([0.9, 0.9, 0.9, 0.6, 0.9, 0.002, 0.8])
    colors = torch.rand(7, 3, generator=torch.Generator().manual_seed(0))
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(7, 4)
    scene = Gaussians.from_activated(means, quats, scales.contiguous(), opacities, colors)
    cameras = make_cameras(1, dtype=F32)
    out = render(scene, cameras, backend="native", background=BACKGROUND)
    ref = render(scene, cameras, backend="reference", background=BACKGROUND)
    assert_same_render(out, ref)
    assert (out.alpha > 0.5).all()  # the huge Gaussian covers every pixel
    assert out.means2d is not None


def test_empty_and_fully_culled_scenes(make_cameras):
    cameras = make_cameras(2, dtype=F32)
    empty = Gaussians.from_activated(
        torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)
    )
    out = render(empty, cameras, backend="native", background=BACKGROUND)
    assert_close(out.rgb, torch.tensor(BACKGROUND).expand(2, 48, 64, 3))
    behind = Gaussians.from_activated(
        torch.tensor([[0.0, 0.0, -3.0]]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), 0.5),
        torch.tensor([0.9]),
        torch.ones(1, 3),
    )
    out = render(behind, cameras[:1], backend="native", background=BACKGROUND)
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    assert_close(out.rgb, torch.tensor(BACKGROUND).expand(1, 48, 64, 3))


def opaque_wall(n: int = 600) -> Gaussians:
    """Many nearly opaque large Gaussians stacked in front of the camera: every pixel stops."""
    gen = torch.Generator().manual_seed(5)
    xy = (torch.rand(n, 2, generator=gen) - 0.5) * 2.4
    z = 2.0 + torch.rand(n, 1, generator=gen)
    return Gaussians.from_activated(
        torch.cat([xy, z], dim=1),
        torch.randn(n, 4, generator=gen),
        0.2 + 0.4 * torch.rand(n, 3, generator=gen),  # anisotropic: rotations matter
        torch.full((n,), 0.95),
        torch.rand(n, 3, generator=gen),
    )


def test_all_opaque_wall_stops_early_like_the_reference(make_cameras):
    scene = opaque_wall()
    cameras = make_cameras(1, dtype=F32)
    out = render(scene, cameras, backend="native", background=BACKGROUND)
    assert_same_render(out, render(scene, cameras, backend="reference", background=BACKGROUND))
    # Early stop leaves transmittance just above 1e-4, not at the product of all 600 factors.
    assert (1.0 - out.alpha).min() > 1e-4
    assert (out.alpha > 0.999).float().mean() > 0.5


def test_projection_matches_torch(make_scene, make_cameras):
    scene = make_scene(500, dtype=F32, seed=3)
    cameras = make_cameras(4, dtype=F32)
    args = (
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        cameras.viewmats,
        corner_based_Ks(cameras.Ks),
        cameras.width,
        cameras.height,
    )
    ours = native.project_gaussians_native(*args, near=0.5, far=4.5)
    theirs = project_gaussians(*args, near=0.5, far=4.5)
    visible = theirs.visible
    assert 0.2 < visible.float().mean() < 1.0  # the planes cull some
    assert torch.equal(ours.visible, visible)
    assert_close(ours.means2d[visible], theirs.means2d[visible], atol=1e-4, rtol=1e-5)
    assert_close(ours.conics[visible], theirs.conics[visible], atol=1e-5, rtol=1e-4)
    assert_close(ours.depths, theirs.depths)
    radii_gap = (ours.radii - theirs.radii).abs()
    assert radii_gap.max() <= 1 and (radii_gap > 0).float().mean() < 0.01  # ceil at rounding


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_gradients_match_torch_autograd(sh_degree, make_scene, make_cameras):
    scene = make_scene(120, sh_degree=sh_degree, dtype=F32, seed=11 + sh_degree)
    cameras = make_cameras(2, width=40, height=30, dtype=F32)
    weights = torch.rand(2, 30, 40, 5, generator=torch.Generator().manual_seed(1))
    grads, means2d_grads = {}, {}
    for backend in ("native", "torch"):
        leaves = leaf_scene(scene)
        out = render(leaves, cameras, backend=backend, background=BACKGROUND)
        out.means2d.retain_grad()
        stacked = torch.cat([out.rgb, out.alpha, out.depth], dim=-1)
        (stacked * weights).sum().backward()
        grads[backend] = {k: getattr(leaves, k).grad for k in PARAMS}
        means2d_grads[backend] = out.means2d.grad
    for name in PARAMS:
        ours, theirs = grads["native"][name], grads["torch"][name]
        scale = theirs.abs().max()
        assert scale > 0, name  # every parameter gets a gradient
        assert_close(ours, theirs, atol=2e-4 * scale, rtol=2e-3, msg=name)
    theirs = means2d_grads["torch"]
    assert_close(means2d_grads["native"], theirs, atol=2e-4 * theirs.abs().max(), rtol=2e-3)


def test_gradients_in_a_saturated_scene(make_cameras):
    """Opaque walls: the 0.999 cap, early stop and transmittance recovered by division."""
    scene = opaque_wall(150)
    cameras = make_cameras(1, width=32, height=24, dtype=F32)
    grads = {}
    for backend in ("native", "torch"):
        leaves = leaf_scene(scene)
        out = render(leaves, cameras, backend=backend)
        (out.rgb.square().sum() + out.depth.sum() * 0.1).backward()
        grads[backend] = {k: getattr(leaves, k).grad for k in PARAMS}
    for name in PARAMS:
        theirs = grads["torch"][name]
        assert_close(grads["native"][name], theirs, atol=1e-3 * theirs.abs().max(), rtol=1e-2)


def test_backward_is_deterministic_for_a_thread_count(make_scene, make_cameras):
    scene = make_scene(300, sh_degree=1, dtype=F32, seed=4)
    cameras = make_cameras(2, dtype=F32)

    def gradients() -> list[torch.Tensor]:
        leaves = leaf_scene(scene)
        out = render(leaves, cameras, backend="native")
        (out.rgb.sum() + out.depth.mean()).backward()
        return [getattr(leaves, k).grad for k in PARAMS]

    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            first, second = gradients(), gradients()
            assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        torch.set_num_threads(1)
        single = render(scene, cameras, backend="native").rgb
        torch.set_num_threads(2)
        assert torch.equal(render(scene, cameras, backend="native").rgb, single)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ choice and bad input


def test_auto_picks_native_for_float32_cpu_cameras(make_scene, make_cameras):
    scene = make_scene(50, dtype=F32)
    assert render(scene, make_cameras(1, dtype=F32)).backend == "native"
    # float64, and cameras whose pose requires grad, go to the torch backend.
    assert render(scene, make_cameras(1)).backend == "torch"
    cameras = make_cameras(1, dtype=F32)
    posed = Cameras(
        cameras.camtoworlds.clone().requires_grad_(True), cameras.Ks, cameras.width, cameras.height
    )
    assert render(scene, posed).backend == "torch"


def test_native_refuses_float64(make_scene, make_cameras):
    with pytest.raises(ValueError, match="float32 on the CPU"):
        render(make_scene(10), make_cameras(1), backend="native")


@pytest.mark.parametrize("field", PARAMS)
def test_bad_input_raises_the_same_errors(field, make_scene, make_cameras):
    scene = make_scene(20, dtype=F32)
    getattr(scene, field).view(-1)[3] = math.nan
    cameras = make_cameras(1, dtype=F32)
    messages = []
    for backend in ("native", "torch"):
        with pytest.raises(ValueError) as caught:
            render(scene, cameras, backend=backend)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and field in messages[0]
    good = make_scene(20, dtype=F32)
    for kwargs in (dict(near=0.0), dict(near=2.0, far=1.0), dict(background=(1.0, 2.0))):
        for backend in ("native", "torch"):
            with pytest.raises(ValueError):
                render(good, cameras, backend=backend, **kwargs)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


FALLBACK_SCRIPT = """
    import torch, warnings
    from lyra_core.geometry.cameras import Cameras, Intrinsics
    from lyra_core.rendering import render
    from lyra_core.scene.gaussians import Gaussians
    scene = Gaussians.from_activated(torch.tensor([[0.0, 0.0, 2.0]]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), 0.3), torch.tensor([0.9]),
        torch.ones(1, 3))
    cams = Cameras.from_intrinsics(torch.eye(4)[None], Intrinsics.from_fov(1.0, 32, 24))
    print([render(scene, cams).backend for _ in range(3)])
    try:
        render(scene, cams, backend="native")
    except ValueError as err:
        print("refused:", err)
"""


@pytest.mark.parametrize("how", ["disabled", "not built"])
def test_without_the_extension_auto_falls_back_with_one_warning(how, tmp_path):
    env = {"LYRA_NATIVE": "0"} if how == "disabled" else {"LYRA_NATIVE_DIR": str(tmp_path)}
    result = _run_python(FALLBACK_SCRIPT, **env)
    assert result.returncode == 0, result.stderr
    assert "['torch', 'torch', 'torch']" in result.stdout
    assert "refused: backend 'native' requested" in result.stdout
    assert result.stderr.count("native CPU rasteriser unavailable") == 1
    assert ("LYRA_NATIVE=0" if how == "disabled" else "is not built") in result.stderr


def test_each_torch_installation_builds_in_its_own_folder(monkeypatch, tmp_path):
    """Two virtualenvs with the same torch version compile with different include paths: a
    shared folder would make each one's build recompile (and replace) the other's library."""
    here = native.build_directory()
    assert native.build_directory() == here  # stable
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other_venv" / "torch" / "__init__.py"))
    assert native.build_directory() != here
    assert native.build_directory().parent == here.parent


def test_build_removes_a_stale_lock_and_reuses_the_library():
    """A build killed mid-way leaves torch's lock behind, which would block every later build
    forever; one older than STALE_LOCK_SECONDS is removed. A built library is reused as is."""
    library = native.library_path()
    assert library.is_file()
    lock = library.parent / "lock"
    lock.touch()
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    built_at = library.stat().st_mtime
    start = time.perf_counter()
    assert native.build() == library
    assert time.perf_counter() - start < 20  # no recompilation
    assert not lock.exists()
    assert library.stat().st_mtime == built_at
