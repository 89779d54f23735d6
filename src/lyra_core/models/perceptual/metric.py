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

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

import torch
from torch import Tensor, nn

from lyra_core.models.perceptual.networks import (
    _CHANNELS,
    LPIPS_LINEAR_FILES,
    PERCEPTUAL_NAMES,
    TORCHVISION_FILES,
    Backbone,
    LinearHead,
    PerceptualBackbone,
    ScalingLayer,
    _check_net,
)
from lyra_core.models.perceptual.weights import (
    STLPIPS_FILES,
    load_state_dict_file,
    lpips_state_dict,
    stlpips_weights_path,
)


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
        return cls(net, "stlpips").load_weights(load_state_dict_file(path), source=str(path))

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
        state = lpips_state_dict(
            load_state_dict_file(weights_path), load_state_dict_file(backbone_path), net
        )
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
