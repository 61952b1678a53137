"""Classifiers by name: CIFAR-style ResNet-18 (32x32), its strided-stem variant (96x96 and up), a
GELU ResNet-18 (a stated deviation, for the recipe probe), a tiny CNN for CPU tests and the toy MLP.

Every image model takes images in [0, 1] and normalizes them in its first layer, so attacks,
targets and the app never need to know a dataset's mean and std. `PAGClassifier` is what a
checkpoint holds: a named architecture plus its class names, input size and normalization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.zoo import ZOO_PREFIX

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
Stats = tuple[Sequence[float], Sequence[float]]  # (mean, std) per RGB channel, in [0, 1] pixel units


class Normalize(nn.Module):
    """First layer of every image model: keeps the outside world in [0, 1] pixel units."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(tuple(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18 (He et al. 2016), as in the TRADES code."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, global average pool (11.2M parameters).

    `stem_stride=2` is the variant for 96x96 (STL-10) and larger inputs: the stem halves the
    resolution, so at 96x96 the last stage sees 6x6 maps and the cost stays near 2.25x CIFAR's.
    `act` is ReLU as in the paper; GELU is a deviation the recipe probe may test. `width` (64, the paper's)
    scales every stage; narrower copies are for CPU experiments (`resnet18_narrow`: maintainer/coupling_probe_cpu.py).
    """

    def __init__(
        self,
        num_classes: int = 10,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        stem_stride: int = 1,
        act: type[nn.Module] = nn.ReLU,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = act()
        widths, strides, layers, cin = (width, 2 * width, 4 * width, 8 * width), (1, 2, 2, 2), [], width
        for w, s in zip(widths, strides):
            layers.append(nn.Sequential(BasicBlock(cin, w, s, act), BasicBlock(w, w, 1, act)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(self.normalize(x))))
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

    def __init__(
        self, num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# name -> (constructor(num_classes, mean, std), default (mean, std)): the stats a checkpoint without its own used
MODELS: dict[str, tuple[Callable[..., nn.Module], Stats]] = {
    "resnet18": (lambda c, m, s: ResNet18(c, m, s), (CIFAR10_MEAN, CIFAR10_STD)),
    "resnet18_stl": (lambda c, m, s: ResNet18(c, m, s, stem_stride=2), (STL10_MEAN, STL10_STD)),
    "resnet18_gelu": (lambda c, m, s: ResNet18(c, m, s, act=nn.GELU), (CIFAR10_MEAN, CIFAR10_STD)),
    "resnet18_narrow": (
        lambda c, m, s: ResNet18(c, m, s, width=16),
        (CIFAR10_MEAN, CIFAR10_STD),
    ),  # CPU probes
    "tinycnn": (lambda c, m, s: TinyCNN(c, m, s), (CIFAR10_MEAN, CIFAR10_STD)),
    "mlp": (lambda c, m, s: MLP(c), ((), ())),
}


def _entry(name: str) -> tuple[Callable[..., nn.Module], Stats]:
    """A registered architecture, or a RobustBench one (`pagdemo.zoo`: it normalizes its own inputs, so no stats)."""
    if name.startswith(ZOO_PREFIX):
        from pagdemo.zoo import build_zoo_model

        return (lambda c, m, s: build_zoo_model(name)), ((), ())
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def known_arch(name: str) -> bool:
    """Whether a checkpoint's architecture can be rebuilt: a registered one, or a RobustBench one."""
    return name in MODELS or str(name).startswith(ZOO_PREFIX)


def build_model(name: str, num_classes: int = 10, stats: Stats | None = None) -> nn.Module:
    """The one way to make a model, so checkpoints can rebuild it from its name (and stats) alone."""
    make, default = _entry(name)
    mean, std = stats if stats is not None else default
    return make(num_classes, mean, std)


def default_stats(name: str) -> Stats:
    """The normalization an architecture uses when a checkpoint records none (CIFAR-10's or STL-10's)."""
    return _entry(name)[1]


def class_count(model: nn.Module) -> int:
    """How many classes a model tells apart: a checkpoint says so; a bare network, by its last Linear layer (a probe
    forward would move BatchNorm's running statistics)."""
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def resolve_device(device: str) -> torch.device:
    """'auto' means the GPU when there is one: the same code runs on an H100 and a laptop."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose one of ['auto', 'cpu', 'cuda']")
    return torch.device(device)


def count_parameters(model: nn.Module) -> int:
    """Parameter count, to check the architecture against the paper's 11.2M."""
    return sum(p.numel() for p in model.parameters())


class PAGClassifier(nn.Module):
    """What a checkpoint holds: a named architecture, its class names, input side and normalization.

    Rebuilt from `config()` alone (see `pagdemo.records.checkpoints`); `image_size` is the side of the
    square image the model was trained on (every loader resizes to it).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 10,
        classes: Sequence[str] | None = None,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        default_mean, default_std = default_stats(arch)
        self.arch, self.num_classes, self.image_size = arch, int(num_classes), int(image_size)
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        if len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {num_classes} classes")
        self.mean = [float(v) for v in (mean if mean is not None else default_mean)]
        self.std = [float(v) for v in (std if std is not None else default_std)]
        self.net = build_model(arch, num_classes, (self.mean, self.std))
        self.run: dict = {}  # the training run's record, filled by load_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict:
        """Everything needed to rebuild this model (config.json holds it beside the training run)."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
        }
