"""ST-LPIPS / LPIPS (lyra_core.models.perceptual): agreement with the reference
implementation shipped in
stlpips-pytorch, behaviour as a metric and a loss, weight loading and its errors."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom

from lyra_core.models.perceptual import (
    LPIPS_LINEAR_FILES,
    STLPIPS_FILES,
    TORCHVISION_FILES,
    PerceptualMetric,
    load_perceptual,
    lpips_state_dict,
    stlpips_weights_path,
)

HAVE_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
needs_stlpips = pytest.mark.skipif(
    not HAVE_STLPIPS,
    reason="stlpips-pytorch (ST-LPIPS weights) is not installed: "
    "pip install --no-deps stlpips-pytorch==0.0.2",
)


# --------------------------------------------------------------------------- images


def structured(n: int = 4, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, H, W, 3) float64 in [0, 1]: stripes, gradients, a disc and a checkerboard."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    out = []
    for _ in range(n):
        fx, fy, phase = (torch.rand(3, generator=gen, dtype=torch.float64) * 6).tolist()
        cx, cy = (torch.rand(2, generator=gen, dtype=torch.float64) * 0.6 + 0.2).tolist()
        stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * (fx * xx / width + fy * yy / height) + phase)
        disc = ((xx - cx * width) ** 2 + (yy - cy * height) ** 2 < (0.2 * height) ** 2).double()
        checker = ((xx // 6 + yy // 6) % 2).double()
        red = 0.7 * stripes + 0.3 * disc
        green = 0.5 * (xx / width) + 0.5 * checker * (1 - disc)
        blue = 0.2 + 0.6 * (yy / height) * (1 - 0.5 * disc)
        out.append(torch.stack([red, green, blue], dim=-1))
    return torch.stack(out).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, H, W, 3) blurred with a separable Gaussian (reflect padding)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(3, 1, 1, -1)
    x = images.permute(0, 3, 1, 2)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel, groups=3)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.transpose(2, 3), groups=3)
    return x.permute(0, 2, 3, 1)


def pairs(
    height: int = 48, width: int = 64, n: int = 2
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Named (a, b) batches of n image pairs, float64: random, and structured images changed in
    typical ways."""
    gen = torch.Generator().manual_seed(3)
    rand = torch.rand(n, height, width, 3, generator=gen, dtype=torch.float64)
    base = structured(n, height, width)
    noise = torch.randn(base.shape, generator=gen, dtype=torch.float64)
    return [
        ("random", rand, torch.rand(rand.shape, generator=gen, dtype=torch.float64)),
        ("noise", base, (base + 0.1 * noise).clamp(0, 1)),
        ("blur", base, gaussian_blur(base, 1.5)),
        ("shift", base, torch.roll(base, shifts=(1, 2), dims=(1, 2))),
        ("colour", base, (base * torch.tensor([0.8, 1.0, 1.1], dtype=torch.float64)).clamp(0, 1)),
        ("other", base, structured(n, height, width, seed=7)),
    ]


# --------------------------------------------------------------------------- the reference


@pytest.fixture(scope="module")
def reference():
    """stlpips-pytorch's own ``stlpips`` module, imported with stand-ins for the modules it
    imports at top level but must not need here: torchvision, torchsummary and IPython. Every
    stand-in raises when used; sys.modules is restored afterwards."""
    if not HAVE_STLPIPS:
        pytest.skip(
            "stlpips-pytorch is not installed (pip install --no-deps stlpips-pytorch==0.0.2)"
        )

    def unused(name: str):
        def fail(*args, **kwargs):
            raise AssertionError(f"the reference used {name}")

        return fail

    def stand_in(name: str, **attrs) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)

        def getattr_(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise AssertionError(f"the reference used {name}.{attr}")

        module.__getattr__ = getattr_
        return module

    models = stand_in("torchvision.models")
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torchvision", stand_in("torchvision", models=models))
        patch.setitem(sys.modules, "torchvision.models", models)
        summary = stand_in("torchsummary", summary=unused("torchsummary.summary"))
        patch.setitem(sys.modules, "torchsummary", summary)
        patch.setitem(sys.modules, "IPython", stand_in("IPython", embed=unused("IPython.embed")))
        module = importlib.import_module("stlpips_pytorch.stlpips")
        yield module
    for name in set(sys.modules) - before:  # the reference was imported with the stand-ins
        if name.split(".")[0] == "stlpips_pytorch":
            del sys.modules[name]


def nchw(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_matches_the_reference(reference, net):
    ref = reference.LPIPS(net=net, variant="shift_tolerant", verbose=False)
    ours = PerceptualMetric.shift_tolerant(net)
    assert ours.name == f"stlpips-{net}" and ours.min_size == {"alex": 21, "vgg": 18}[net]
    # Small images keep this quick on a CPU (VGG costs ~10x AlexNet per pixel).
    size, n = ((32, 48), 2) if net == "alex" else ((20, 24), 1)
    labels, first, second = zip(*pairs(*size, n=n), strict=True)
    a, b = torch.cat(first), torch.cat(second)  # all pairs in one batch
    with torch.no_grad():
        expected = ref(nchw(a).float(), nchw(b).float(), normalize=True).flatten()
        got = ours(a.float(), b.float())
    assert got.shape == (a.shape[0],)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7, msg=f"pairs {labels}")
    print(f"stlpips-{net}: max |ours - reference| {float((got - expected).abs().max()):.1e}")
    ref.double()
    ours.double()
    a, b = a[:: 2 * n, :, :24], b[:: 2 * n, :, :24]  # float64 convolutions are slow on CPU
    with torch.no_grad():
        expected = ref(nchw(a), nchw(b), normalize=True).flatten()
        torch.testing.assert_close(ours(a, b), expected, rtol=1e-12, atol=1e-15)


def test_min_size_is_where_the_reference_stops(reference):
    ours = PerceptualMetric.shift_tolerant("alex")
    ref = reference.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    side = ours.min_size
    big = torch.rand(1, side, 40, 3)
    with torch.no_grad():
        expected = ref(nchw(big), nchw(big.flip(2)), normalize=True).flatten()
        torch.testing.assert_close(ours(big, big.flip(2)), expected)
        with pytest.raises(RuntimeError):
            ref(nchw(big[:, 1:]), nchw(big[:, 1:]), normalize=True)
    with pytest.raises(ValueError, match=f"at least {side}x{side}"):
        ours(big[:, 1:], big[:, 1:])


def test_lpips_matches_the_reference_with_local_files(reference, tmp_path):
    linear, backbone = write_lpips_files(tmp_path, "alex")
    ours = PerceptualMetric.lpips(linear, backbone, net="alex")
    # The reference's own vanilla AlexNet (no torchvision), given the same weights.
    ref = reference.LPIPS(net="alex", variant="vanilla", pretrained=False, verbose=False)
    result = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(key.startswith("lins.") for key in result.missing_keys)  # aliases of lin0..4
    labels, first, second = zip(*pairs(32, 40, n=1), strict=True)
    a, b = torch.cat(first).float(), torch.cat(second).float()
    with torch.no_grad():
        expected = ref(nchw(a), nchw(b), normalize=True).flatten()
        torch.testing.assert_close(ours(a, b), expected, rtol=1e-5, atol=1e-7, msg=f"{labels}")


# --------------------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def metric() -> PerceptualMetric:
    if not HAVE_STLPIPS:
        pytest.skip(
            "stlpips-pytorch is not installed (pip install --no-deps stlpips-pytorch==0.0.2)"
        )
    return PerceptualMetric.shift_tolerant()


def test_identical_images_are_at_distance_zero(metric):
    images = structured().float()
    assert torch.equal(metric(images, images), torch.zeros(4))
    assert metric(images, structured(seed=5).float()).min() > 0.05


def test_distance_grows_with_blur_and_noise(metric):
    base = structured(2).float()
    with torch.no_grad():
        blurred = torch.stack([metric(gaussian_blur(base, s), base) for s in (0.5, 1, 2, 4)])
        noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
        noisy = torch.stack(
            [metric((base + s * noise).clamp(0, 1), base) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
        )
    for ladder in (blurred, noisy):  # (steps, images)
        assert (ladder[0] > 0).all()
        assert (ladder.diff(dim=0) > 0).all(), ladder


def test_gradient_reaches_the_images_not_the_weights(metric):
    target = structured(3).float()
    pred = gaussian_blur(target, 1.0).requires_grad_(True)
    loss = metric.loss(pred, target)
    assert loss.dim() == 0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in metric.parameters())
    assert not metric.training
    black = torch.zeros_like(target, requires_grad=True)  # features may vanish: no NaN
    metric.loss(black, target).backward()
    assert torch.isfinite(black.grad).all()


def test_lower_loss_after_gradient_steps(metric):
    target = structured(1, 32, 32).float()
    pred = gaussian_blur(target, 2.0).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pred], lr=0.02)
    first = metric.loss(pred, target).item()
    for _ in range(3):
        optimizer.zero_grad()
        metric.loss(pred, target).backward()
        optimizer.step()
    assert metric.loss(pred, target).item() < 0.5 * first


def test_shapes_dtypes_and_leading_dims(metric):
    images = structured(4).float()
    other = structured(4, seed=9).float()
    batched = metric(images.reshape(2, 2, 48, 64, 3), other.reshape(2, 2, 48, 64, 3))
    torch.testing.assert_close(batched, metric(images, other).reshape(2, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        metric(nchw(images), nchw(other))  # channels first
    with pytest.raises(ValueError, match="differ"):
        metric(images, other[:, :40])
    with pytest.raises(ValueError, match="floating point"):
        metric((images * 255).to(torch.uint8), (other * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="at least 21x21"):
        metric(images[:, :, :20], other[:, :, :20])
    assert metric(images[:, :21, :21], other[:, :21, :21]).shape == (4,)
    assert metric.train().training is True
    torch.testing.assert_close(metric(images, other), metric.eval()(images, other))  # no dropout


@pytest.mark.parametrize("net", ["alex", "vgg"])
@pytest.mark.parametrize("variant", ["stlpips", "lpips"])
def test_min_size_fits_the_architecture(net, variant):
    untrained = PerceptualMetric(net, variant)
    side = untrained.min_size
    assert (
        side
        == {
            ("alex", "stlpips"): 21,
            ("vgg", "stlpips"): 18,
            ("alex", "lpips"): 31,
            ("vgg", "lpips"): 16,
        }[net, variant]
    )
    with torch.no_grad():
        features = untrained.net(torch.zeros(1, 3, side, side + 7))
        assert [f.shape[1] for f in features] == [
            m.model[1].in_channels
            for m in (
                untrained.lin0,
                untrained.lin1,
                untrained.lin2,
                untrained.lin3,
                untrained.lin4,
            )
        ]
        with pytest.raises(RuntimeError):
            untrained.net(torch.zeros(1, 3, side - 1, side + 7))


# --------------------------------------------------------------------------- weight files


def write_lpips_files(folder, net: str = "alex", seed: int = 0):
    """Random LPIPS v0.1 linear layers and a torchvision-style backbone state dict, under the
    names load_perceptual expects; returns the two paths."""
    gen = torch.Generator().manual_seed(seed)
    shapes = PerceptualMetric(net, "lpips").state_dict()
    linear = {
        k: torch.rand(v.shape, generator=gen) * 0.1
        for k, v in shapes.items()
        if k.startswith("lin")
    }
    backbone = {}
    for key, value in shapes.items():
        if key.startswith("net."):
            _, _, index, param = key.split(".")
            backbone[f"features.{index}.{param}"] = torch.randn(value.shape, generator=gen) * 0.05
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # in torchvision's files, unused
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / LPIPS_LINEAR_FILES[net], folder / TORCHVISION_FILES[net]
    torch.save(linear, paths[0])
    torch.save(backbone, paths[1])
    return paths


def test_lpips_from_a_local_folder(tmp_path):
    linear, backbone = write_lpips_files(tmp_path / "lpips")
    metric = load_perceptual(f"lpips-alex:{tmp_path / 'lpips'}")
    assert metric.name == "lpips-alex" and metric.min_size == 31
    torch.testing.assert_close(
        metric.lin2.model[1].weight, torch.load(linear)["lin2.model.1.weight"]
    )
    torch.testing.assert_close(
        getattr(metric.net.slice3, "6").weight, torch.load(backbone)["features.6.weight"]
    )
    images = structured(2).float()
    assert torch.equal(metric(images, images), torch.zeros(2))
    assert (metric(images, gaussian_blur(images, 2.0)) > 0).all()


def test_lpips_vgg_keys_map_to_the_network():
    untrained = PerceptualMetric("vgg", "lpips")
    state = untrained.state_dict()
    torchvision_style = {
        f"features.{k.split('.')[2]}.{k.split('.')[3]}": v
        for k, v in state.items()
        if k.startswith("net.")
    }
    linear = {k: v for k, v in state.items() if k.startswith("lin")}
    assert sorted(torchvision_style) == sorted(
        f"features.{i}.{p}"
        for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
        for p in ("weight", "bias")
    )  # torchvision's vgg16 numbering
    mapped = lpips_state_dict(
        linear, torchvision_style | {"classifier.0.bias": torch.zeros(1)}, net="vgg"
    )
    PerceptualMetric("vgg", "lpips").load_weights(mapped)


def test_mismatched_weight_files_are_refused_clearly(tmp_path):
    linear, backbone = write_lpips_files(tmp_path)
    state = torch.load(backbone)
    del state["features.10.bias"]
    state["features.3.weight"] = state["features.3.weight"][:, :32]
    state["features.99.weight"] = torch.zeros(1)
    torch.save(state, backbone)
    with pytest.raises(ValueError) as error:
        PerceptualMetric.lpips(linear, backbone)
    message = str(error.value)
    assert "does not fit the lpips-alex network" in message and str(backbone) in message
    assert "missing keys: net.slice5.10.bias" in message
    assert "unexpected keys: features.99.weight" in message
    assert "wrong shapes: net.slice2.3.weight (192, 32, 5, 5) (expected (192, 64, 5, 5))" in message
    with pytest.raises(ValueError, match=r"missing keys: lin0\.model\.1\.weight"):
        PerceptualMetric.shift_tolerant(weights_path=backbone)  # not an ST-LPIPS file
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        PerceptualMetric.shift_tolerant(weights_path=tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a torch state dict"):
        PerceptualMetric.shift_tolerant(weights_path=tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        PerceptualMetric.lpips(tmp_path / "nowhere.pth", backbone)


def test_load_perceptual_names(tmp_path):
    assert load_perceptual("none") is None
    with pytest.raises(ValueError, match="unknown perceptual metric 'lpips-squeeze'"):
        load_perceptual("lpips-squeeze")
    with pytest.raises(ValueError, match=r"lpips-alex:<folder>.*alexnet-owt-7be5be79\.pth"):
        load_perceptual("lpips-alex")
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth"):
        load_perceptual(f"lpips-vgg:{tmp_path}")
    untrained = PerceptualMetric("alex", "stlpips")
    torch.save(untrained.state_dict(), tmp_path / STLPIPS_FILES["alex"])
    copy = load_perceptual(f"stlpips-alex:{tmp_path}")  # a local copy of the weights
    torch.testing.assert_close(copy.lin0.model[1].weight, untrained.lin0.model[1].weight)


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "stlpips_pytorch" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"pip install --no-deps stlpips-pytorch==0\.0\.2"):
        stlpips_weights_path("alex")
    with pytest.raises(ImportError, match="stlpips-pytorch"):
        load_perceptual("stlpips-alex")


@needs_stlpips
def test_shipped_weights_hold_lpips_constants():
    path = stlpips_weights_path("alex")
    assert path.name == "alex_shift_tolerant.pth" and path.parent.name == "vST0.0"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == len(PerceptualMetric().state_dict())  # strict, no aliases or extras
    fresh = PerceptualMetric()  # our constants: the blur filters and the input scaling
    for key in (
        "scaling_layer.shift",
        "scaling_layer.scale",
        "net.slice1.1.filt",
        "net.slice3.8.filt",
    ):
        torch.testing.assert_close(state[key], fresh.state_dict()[key], msg=key)
