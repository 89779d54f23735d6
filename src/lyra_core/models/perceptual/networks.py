"""The perceptual networks: AlexNet / VGG-16 backbones (plain or anti-aliased with blur pools,
as ST-LPIPS), LPIPS' input scaling and its per-layer linear heads. Module names follow the
reference implementations so their state dicts load with ``strict=True``."""

from __future__ import annotations

from typing import Literal

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


def _check_net(net: str) -> None:
    if net not in _CHANNELS:
        raise ValueError(f"backbone must be one of {sorted(_CHANNELS)}, got {net!r}")
