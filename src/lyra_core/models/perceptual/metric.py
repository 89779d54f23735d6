"""Learned perceptual image distances: ST-LPIPS (default) and the original LPIPS v0.1.

LPIPS (Zhang et al. 2018) compares two images through a frozen ImageNet backbone: the features
of five layers are normalised to unit length over channels, their squared difference is weighted
per channel by a learned 1x1 linear layer, averaged over space and summed over the layers. ST-LPIPS
(Ghildyal & Liu 2022, "Shift-tolerant perceptual similarity metric") uses an anti-aliased
backbone (stride-1 convolutions and max pools followed by reflect-padded 3x3 binomial blur-pool
downsampling), so a render that is off by a pixel or two is not punished like a wrong one. Lyra
trains its decoder with MSE + 0.5 ST-LPIPS.

The networks are defined here; only their weights come from elsewhere, read from local files
(nothing is downloaded):

- ST-LPIPS: the weight files shipped in the ``stlpips-pytorch`` wheel
  (``stlpips_pytorch/weights/vST0.0/{alex,vgg}_shift_tolerant.pth``: backbone, blur filters,
  input scaling and linear layers). The package is only *located*, never imported beyond its
  empty ``__init__``: its modules import torchvision, which cannot be installed beside the
  pinned torch build.
- LPIPS v0.1: the ``lpips`` package's linear layers (``weights/v0.1/{alex,vgg}.pth``) plus
  torchvision's ImageNet backbone state dict (``alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth``; only its ``features.*`` tensors are used).

Module names follow the reference implementations, so the shipped state dicts load with
``strict=True``: ST-LPIPS files as they are, LPIPS after renaming torchvision's ``features.<i>``
to ``net.slice<k>.<i>`` (:func:`lpips_state_dict`).

Images follow the renderer's layout, (..., H, W, 3) float in [0, 1]. The smallest image side is
:attr:`PerceptualMetric.min_size` (21 px for ST-LPIPS AlexNet, 18 for VGG, 31 and 16 for the
original LPIPS); smaller images are refused rather than resized.

Example::

    metric = PerceptualMetric.shift_tolerant().to(device)  # or load_perceptual("stlpips-alex")
    distances = metric(rendered, target)  # (N,)
    loss = metric.loss(rendered, target)  # scalar, for lyra_core.training.losses.lyra_loss
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch idiom
from torch import Tensor, nn

Backbone = Literal["alex", "vgg"]

STLPIPS_PACKAGE = "stlpips-pytorch==0.0.2"
"""The pip requirement that ships the ST-LPIPS weights."""

STLPIPS_FILES: dict[str, str] = {"alex": "alex_shift_tolerant.pth", "vgg": "vgg_shift_tolerant.pth"}
"""ST-LPIPS weight file per backbone, in ``stlpips_pytorch/weights/vST0.0/``."""

LPIPS_LINEAR_FILES: dict[str, str] = {"alex": "alex.pth", "vgg": "vgg.pth"}
"""LPIPS v0.1 linear layers per backbone, as the ``lpips`` package names them (weights/v0.1/)."""

TORCHVISION_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
"""torchvision's ImageNet state dict per backbone, under its download name."""

PERCEPTUAL_NAMES = ("stlpips-alex", "stlpips-vgg", "lpips-alex", "lpips-vgg", "none")
"""The names :func:`load_perceptual` accepts (``lpips-*`` and optionally ``stlpips-*`` take
``:<folder>``)."""

_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS' input scaling: ImageNet statistics in [-1, 1]
_SCALE = (0.458, 0.448, 0.450)
_CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
}
# First torchvision ``features`` index of each LPIPS slice, and the end (the original LPIPS).
_LPIPS_SLICE_STARTS = {"alex": (0, 2, 5, 8, 10, 12), "vgg": (0, 4, 9, 16, 23, 30)}


# --------------------------------------------------------------------------- network pieces


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect padding by 2, then a depthwise 3x3 binomial
    ([1, 2, 1] x [1, 2, 1] / 16) filter with stride 2 (Zhang 2019, ST-LPIPS' ``pad_more``).

    (N, C, H, W) -> (N, C, floor((H + 1) / 2) + 1, floor((W + 1) / 2) + 1); needs H, W >= 3.
    The filter is a buffer named ``filt`` because the ST-LPIPS files store it.
    """

    pad = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(padded, self.filt, stride=2, groups=x.shape[1])

    def extra_repr(self) -> str:
        return f"channels={self.filt.shape[0]}"

    @staticmethod
    def output_size(size: int) -> int | None:
        """Output side for an input side, ``None`` where reflect padding is impossible."""
        return (size + 2 * BlurPool.pad - 3) // 2 + 1 if size > BlurPool.pad else None


class ScalingLayer(nn.Module):
    """[-1, 1] RGB -> (x - shift) / scale per channel (LPIPS' fixed input normalisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).reshape(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class LinearHead(nn.Module):
    """LPIPS' per-layer channel weighting: a 1x1 convolution to one channel, no bias.

    ``model.0`` stands where the reference has dropout (a no-op in evaluation) so that the
    weight keeps its key ``model.1.weight``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)


def _alexnet_slices(shift_tolerant: bool) -> list[list[nn.Module]]:
    """AlexNet up to relu5 in LPIPS' five slices (torchvision's ``features`` numbering)."""
    if not shift_tolerant:  # torchvision's alexnet().features[:12]
        return [
            [_conv(3, 64, 11, stride=4, padding=2), nn.ReLU()],
            [nn.MaxPool2d(3, 2), _conv(64, 192, 5, padding=2), nn.ReLU()],
            [nn.MaxPool2d(3, 2), _conv(192, 384, 3), nn.ReLU()],
            [_conv(384, 256, 3), nn.ReLU()],
            [_conv(256, 256, 3), nn.ReLU()],
        ]
    # ST-LPIPS: the stride-4 convolution and stride-2 pools become stride 1 + blur-pool.
    return [
        [_conv(3, 64, 11, padding=2), BlurPool(64), nn.ReLU()],
        [nn.MaxPool2d(3, 1), BlurPool(64), _conv(64, 192, 5, padding=2), nn.ReLU()],
        [nn.MaxPool2d(3, 1), BlurPool(192), _conv(192, 384, 3), nn.ReLU()],
        [_conv(384, 256, 3), nn.ReLU()],
        [_conv(256, 256, 3), nn.ReLU()],
    ]


def _vgg16_slices(shift_tolerant: bool) -> list[list[nn.Module]]:
    """VGG16 up to relu5_3 in LPIPS' five slices; every stage after the first starts with its
    2x2 max pool (stride 2, or stride 1 + blur-pool for ST-LPIPS)."""
    stages = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
    slices = []
    for index, (cin, cout, convs) in enumerate(stages):
        layers: list[nn.Module] = []
        if index:
            layers += (
                [nn.MaxPool2d(2, 1), BlurPool(cin)] if shift_tolerant else [nn.MaxPool2d(2, 2)]
            )
        for k in range(convs):
            layers += [_conv(cin if k == 0 else cout, cout, 3), nn.ReLU()]
        slices.append(layers)
    return slices


class PerceptualBackbone(nn.Module):
    """The frozen feature extractor: ``slice1`` .. ``slice5`` (nn.Sequential), whose layers keep
    their index in the full feature stack as module names (``slice2.5`` is layer 5)."""

    def __init__(self, net: Backbone, shift_tolerant: bool) -> None:
        super().__init__()
        build = {"alex": _alexnet_slices, "vgg": _vgg16_slices}[net]
        index = 0
        for number, layers in enumerate(build(shift_tolerant), start=1):
            stage = nn.Sequential()
            for layer in layers:
                stage.add_module(str(index), layer)
                index += 1
            self.add_module(f"slice{number}", stage)
        self.num_slices = number

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) scaled images -> the five slices' outputs (N, C_k, H_k, W_k)."""
        features = []
        for k in range(1, self.num_slices + 1):
            x = getattr(self, f"slice{k}")(x)
            features.append(x)
        return features

    def min_input_size(self, limit: int = 1024) -> int:
        """The smallest image side every layer accepts (each side is checked on its own)."""
        for size in range(1, limit + 1):
            current: int | None = size
            for layer in self.modules():
                if current is None:
                    break
                current = _output_size(layer, current)
            if current is not None and current >= 1:
                return size
        raise RuntimeError(f"no input size up to {limit} fits the backbone")


def _output_size(layer: nn.Module, size: int) -> int | None:
    """Spatial size after ``layer`` (None: the layer cannot run); other modules keep it."""
    if isinstance(layer, BlurPool):
        return BlurPool.output_size(size)
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        kernel, stride, padding = (
            v if isinstance(v, int) else v[0]
            for v in (layer.kernel_size, layer.stride, layer.padding)
        )
        out = (size + 2 * padding - kernel) // stride + 1
        return out if out >= 1 else None
    return size


# --------------------------------------------------------------------------- weight files


def stlpips_weights_path(net: Backbone = "alex") -> Path:
    """The ST-LPIPS weight file of the installed ``stlpips-pytorch`` package.

    The package is located with :func:`importlib.util.find_spec`; none of its modules is
    imported.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: it is, but without the weight file.
    """
    _check_net(net)
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"ST-LPIPS weights come with the stlpips-pytorch package: "
            f"pip install --no-deps {STLPIPS_PACKAGE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "weights" / "vST0.0" / STLPIPS_FILES[net]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall the package: "
            f"pip install --no-deps --force-reinstall {STLPIPS_PACKAGE}"
        )
    return path


def _load_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} cannot be read as a torch state dict ({err})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return dict(state)


def lpips_state_dict(
    linear: Mapping[str, Tensor], backbone: Mapping[str, Tensor], net: Backbone = "alex"
) -> dict[str, Tensor]:
    """Combine LPIPS v0.1 linear layers and a torchvision backbone into our state dict.

    ``linear`` keeps its keys (``lin0.model.1.weight`` ..); torchvision's ``features.<i>.*``
    becomes ``net.slice<k>.<i>.*`` with the slice that holds layer i, its ``classifier.*``
    (unused by LPIPS) is dropped, and the input scaling gets LPIPS' constants. Other keys pass
    through unchanged, so that :meth:`PerceptualMetric.load_weights` reports them.
    """
    _check_net(net)
    starts = _LPIPS_SLICE_STARTS[net]
    where = {str(i): f"slice{k}" for k in range(1, 6) for i in range(starts[k - 1], starts[k])}
    state: dict[str, Tensor] = {
        "scaling_layer.shift": torch.tensor(_SHIFT).reshape(1, 3, 1, 1),
        "scaling_layer.scale": torch.tensor(_SCALE).reshape(1, 3, 1, 1),
    }
    state |= dict(linear)
    for key, value in backbone.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            continue
        if parts[0] == "features" and len(parts) == 3 and parts[1] in where:
            key = f"net.{where[parts[1]]}.{parts[1]}.{parts[2]}"
        state[key] = value
    return state


# --------------------------------------------------------------------------- the metric


class PerceptualMetric(nn.Module):
    """A frozen LPIPS-style distance between images, differentiable in the images.

    Build it with :meth:`shift_tolerant` (ST-LPIPS, the default) or :meth:`lpips` (LPIPS v0.1);
    the constructor alone makes the architecture with untrained weights. The parameters never
    require gradients and the module is in evaluation mode (it has no dropout or normalisation
    layers, so ``train()`` changes nothing); gradients flow to the inputs, so ``loss`` is a
    training loss.

    The computation runs in the parameters' dtype (float32 unless converted) with autocast
    disabled, so bf16 mixed precision does not degrade it; inputs must be on the module's device.

    Attributes:
        net_name: backbone, "alex" or "vgg".
        variant: "stlpips" (shift-tolerant backbone) or "lpips" (the original one).
        min_size: smallest accepted image height and width in pixels.
        name: ``"<variant>-<net_name>"``, as :func:`load_perceptual` takes it.
    """

    def __init__(
        self, net: Backbone = "alex", variant: Literal["stlpips", "lpips"] = "stlpips"
    ) -> None:
        super().__init__()
        _check_net(net)
        if variant not in ("stlpips", "lpips"):
            raise ValueError(f"variant must be 'stlpips' or 'lpips', got {variant!r}")
        self.net_name = net
        self.variant = variant
        self.scaling_layer = ScalingLayer()
        self.net = PerceptualBackbone(net, shift_tolerant=variant == "stlpips")
        for index, channels in enumerate(_CHANNELS[net]):
            self.add_module(f"lin{index}", LinearHead(channels))
        self.min_size = self.net.min_input_size()
        self.requires_grad_(False)
        self.eval()

    @property
    def name(self) -> str:
        """The :func:`load_perceptual` name, e.g. ``"stlpips-alex"``."""
        return f"{self.variant}-{self.net_name}"

    def extra_repr(self) -> str:
        return f"name={self.name!r}, min_size={self.min_size}"

    @classmethod
    def shift_tolerant(
        cls, net: Backbone = "alex", weights_path: str | os.PathLike[str] | None = None
    ) -> PerceptualMetric:
        """ST-LPIPS with the weights shipped in ``stlpips-pytorch`` (or ``weights_path``, a
        copy of ``{net}_shift_tolerant.pth``).

        Raises:
            ImportError: no ``weights_path`` and the package is not installed.
            FileNotFoundError: the weight file is missing.
            ValueError: the file does not match the network (names the keys and shapes).
        """
        path = Path(weights_path) if weights_path is not None else stlpips_weights_path(net)
        return cls(net, "stlpips").load_weights(_load_file(path), source=str(path))

    @classmethod
    def lpips(
        cls,
        weights_path: str | os.PathLike[str],
        backbone_path: str | os.PathLike[str],
        net: Backbone = "alex",
    ) -> PerceptualMetric:
        """The original LPIPS v0.1 from local files: the ``lpips`` package's linear layers
        (``weights/v0.1/{net}.pth``) and torchvision's ImageNet state dict of the backbone
        (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``). Nothing is downloaded.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: the files do not match the network (names the keys and shapes).
        """
        state = lpips_state_dict(_load_file(weights_path), _load_file(backbone_path), net)
        return cls(net, "lpips").load_weights(state, source=f"{weights_path} + {backbone_path}")

    def load_weights(self, state: Mapping[str, Tensor], source: str = "state dict") -> Self:
        """Load a full state dict strictly; a mismatch raises ``ValueError`` naming ``source``
        and the missing, unexpected and wrongly shaped keys."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [
            f"{key} {tuple(state[key].shape)} (expected {tuple(own[key].shape)})"
            for key in own
            if key in state and state[key].shape != own[key].shape
        ]
        if missing or unexpected or shapes:
            problems = [
                f"{label}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                for label, items in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("wrong shapes", shapes),
                )
                if items
            ]
            raise ValueError(
                f"{source} does not fit the {self.name} network; " + "; ".join(problems)
            )
        self.load_state_dict(state, strict=True)
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Perceptual distance per image (0 for identical images, larger is more different).

        Args:
            pred, target: (..., H, W, 3) float in [0, 1], e.g. (N, H, W, 3); H and W at least
                :attr:`min_size`.

        Returns:
            (...) distances, e.g. (N,), in the parameters' dtype.

        Raises:
            ValueError: shapes differ, are not channels-last RGB, are too small, or the images
                are not floating point.
        """
        self._check_images(pred, target)
        lead = pred.shape[:-3]
        height, width = pred.shape[-3:-1]
        dtype = self.lin0.model[1].weight.dtype
        with torch.autocast(device_type=pred.device.type, enabled=False):
            images = torch.cat(
                [pred.reshape(-1, height, width, 3), target.reshape(-1, height, width, 3)]
            )
            x = images.permute(0, 3, 1, 2).to(dtype) * 2.0 - 1.0  # [0, 1] -> [-1, 1], NCHW
            features = self.net(self.scaling_layer(x))
            total = x.new_zeros(())
            for index, feature in enumerate(features):
                first, second = _unit_channels(feature).chunk(2)
                # The 1x1 linear layer commutes with the spatial mean: average first.
                diff = (first - second).square().mean(dim=(2, 3), keepdim=True)
                total = total + getattr(self, f"lin{index}")(diff)
        return total.reshape(lead)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean distance over the images: a scalar, the ``perceptual`` callable of
        :func:`lyra_core.training.losses.lyra_loss`."""
        return self(pred, target).mean()

    def _check_images(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if pred.dim() < 3 or pred.shape[-1] != 3:
            raise ValueError(f"images must be (..., H, W, 3) RGB, got {tuple(pred.shape)}")
        if not (pred.is_floating_point() and target.is_floating_point()):
            raise ValueError(f"images must be floating point in [0, 1], got {pred.dtype}")
        height, width = pred.shape[-3:-1]
        if min(height, width) < self.min_size:
            raise ValueError(
                f"{self.name} needs images of at least {self.min_size}x{self.min_size} pixels, "
                f"got {width}x{height} (W x H)"
            )


def _unit_channels(feature: Tensor, eps: float = 1e-10) -> Tensor:
    """Features divided by their length over channels (+ eps, as LPIPS). ``vector_norm`` has
    a zero gradient where a feature vector is all zero, where sqrt(sum of squares) gives NaN."""
    return feature / (torch.linalg.vector_norm(feature, dim=1, keepdim=True) + eps)


def _check_net(net: str) -> None:
    if net not in _CHANNELS:
        raise ValueError(f"backbone must be one of {sorted(_CHANNELS)}, got {net!r}")


# --------------------------------------------------------------------------- by name


def load_perceptual(name: str) -> PerceptualMetric | None:
    """A metric by name, for configs (``TrainConfig.perceptual``); ``None`` for ``"none"``.

    Names (:data:`PERCEPTUAL_NAMES`):

    - ``stlpips-alex`` (default), ``stlpips-vgg``: ST-LPIPS, weights from the installed
      ``stlpips-pytorch``; ``stlpips-alex:<folder>`` reads ``<folder>/alex_shift_tolerant.pth``
      instead.
    - ``lpips-alex:<folder>``, ``lpips-vgg:<folder>``: the original LPIPS v0.1 from a local
      folder holding the ``lpips`` package's linear layers under their name there (``alex.pth``,
      ``vgg.pth``) and torchvision's backbone under its download name
      (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``).
    - ``none``: no perceptual metric.

    Raises:
        ValueError: an unknown name, or ``lpips-*`` without a folder.
        ImportError, FileNotFoundError: weights are missing (the message says how to get them).
    """
    kind, _, folder = name.strip().partition(":")
    if kind == "none" and not folder:
        return None
    variant, _, net = kind.partition("-")
    if variant not in ("stlpips", "lpips") or net not in _CHANNELS:
        raise ValueError(
            f"unknown perceptual metric {name!r}; use one of {', '.join(PERCEPTUAL_NAMES)} "
            "(lpips-* as lpips-<net>:<folder>)"
        )
    if variant == "stlpips":
        path = Path(folder) / STLPIPS_FILES[net] if folder else None
        return PerceptualMetric.shift_tolerant(net, path)  # type: ignore[arg-type]
    if not folder:
        raise ValueError(
            f"{kind} needs local weights: '{kind}:<folder>' with {LPIPS_LINEAR_FILES[net]} (the "
            f"lpips package's weights/v0.1/{LPIPS_LINEAR_FILES[net]}) and "
            f"{TORCHVISION_FILES[net]} (torchvision's ImageNet weights)"
        )
    linear, backbone = Path(folder) / LPIPS_LINEAR_FILES[net], Path(folder) / TORCHVISION_FILES[net]
    absent = [str(p) for p in (linear, backbone) if not p.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{kind}: missing {', '.join(absent)} ({LPIPS_LINEAR_FILES[net]}: the lpips "
            f"package's weights/v0.1/{LPIPS_LINEAR_FILES[net]}; {TORCHVISION_FILES[net]}: "
            "torchvision's ImageNet weights)"
        )
    return PerceptualMetric.lpips(linear, backbone, net)  # type: ignore[arg-type]
