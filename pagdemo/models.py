"""Classifiers by name: CIFAR-style ResNet-18 (32x32), its STL-10 variant (96x96), the toy MLP.

Every model takes images in [0, 1] and normalizes them in its first layer, so attacks,
targets and the app never need to know a dataset's mean and std.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)


class Normalize(nn.Module):
    """First layer of every image model: keeps the outside world in [0, 1] pixel units."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18 (He et al. 2016), as in the TRADES code."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, global average pool (11.2M parameters).

    `stem_stride=2` is the 96x96 (STL-10) variant: the stem halves the resolution so the
    last stage sees 6x6 maps instead of 12x12, keeping the cost near 2.25x CIFAR's.
    """

    def __init__(self, num_classes: int = 10, mean=CIFAR10_MEAN, std=CIFAR10_STD, stem_stride: int = 1) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, 64, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, strides, layers, cin = (64, 128, 256, 512), (1, 2, 2, 2), [], 64
        for w, s in zip(widths, strides):
            layers.append(nn.Sequential(BasicBlock(cin, w, s), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class MLP(nn.Module):
    """The toy experiment's 2 -> 32 -> 2 ReLU network (App. C.1); inputs are raw coordinates."""

    def __init__(self, num_classes: int = 2, in_features: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    """A few-thousand-parameter convnet with BatchNorm, so CPU tests of the image pipeline run in seconds."""

    def __init__(self, num_classes: int = 10, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda num_classes: ResNet18(num_classes),
    "resnet18_stl": lambda num_classes: ResNet18(num_classes, STL10_MEAN, STL10_STD, stem_stride=2),
    "tinycnn": lambda num_classes: TinyCNN(num_classes),
    "mlp": lambda num_classes: MLP(num_classes),
}


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """The one way to make a model, so checkpoints can rebuild it from its name alone."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes)


def count_parameters(model: nn.Module) -> int:
    """Parameter count, to check the architecture against the paper's 11.2M."""
    return sum(p.numel() for p in model.parameters())
