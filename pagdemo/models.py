"""Classifiers by name: CIFAR-style ResNet-18 (32x32), its strided-stem (96x96 and up), GELU (a stated
deviation, for the recipe probe) and narrow variants, a tiny CNN for CPU tests, the toy MLP. Image models take
[0, 1] images and normalize in their first layer (no one else needs a dataset's mean and std); a checkpoint
holds a `PAGClassifier`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.zoo import ZOO_PREFIX, build_zoo_model

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
Stats = tuple[Sequence[float], Sequence[float]]  # (mean, std) per RGB channel, in [0, 1] pixel units
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))
MODEL_KEYS = ("arch", "num_classes", "classes", "image_size", "mean", "std")  # what rebuilds a model


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
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, global average pool (11.2M parameters)."""

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        stem_stride: int = 1,  # 2 for 96x96 (STL-10) and up: 6x6 maps in the last stage, ~2.25x CIFAR's cost
        act: type[nn.Module] = nn.ReLU,
        width: int = 64,  # the paper's; narrower for CPU experiments (maintainer/coupling_probe_cpu.py)
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

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    """A few-thousand-parameter convnet with BatchNorm, so CPU tests of the image pipeline run in seconds."""

    def __init__(self, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        block1 = (nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        block2 = (nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.features = nn.Sequential(*block1, *block2)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# name -> (constructor(num_classes, mean, std), the (mean, std) of a checkpoint that records none)
MODELS: dict[str, tuple[Callable[..., nn.Module], Stats]] = {
    "resnet18": (ResNet18, CIFAR10_STATS),
    "resnet18_stl": (partial(ResNet18, stem_stride=2), STL10_STATS),
    "resnet18_gelu": (partial(ResNet18, act=nn.GELU), CIFAR10_STATS),
    "resnet18_narrow": (partial(ResNet18, width=16), CIFAR10_STATS),  # CPU probes
    "tinycnn": (TinyCNN, CIFAR10_STATS),
    "mlp": (lambda c, m, s: MLP(c), ((), ())),
}


def _entry(name: str) -> tuple[Callable[..., nn.Module], Stats]:
    """A registered architecture, or a RobustBench one (it normalizes its own inputs: no stats)."""
    if str(name).startswith(ZOO_PREFIX):
        return (lambda c, m, s: build_zoo_model(name)), ((), ())
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or {ZOO_PREFIX}...")
    return MODELS[name]


def build_model(name: str, num_classes: int = 10, stats: Stats | None = None) -> nn.Module:
    """The one way to make a model, so checkpoints can rebuild it from its name (and stats) alone."""
    make, default = _entry(name)
    mean, std = stats if stats is not None else default
    return make(num_classes, mean, std)


def class_count(model: nn.Module) -> int:
    """How many classes a model tells apart, without a forward (that would move BatchNorm's statistics)."""
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


class PAGClassifier(nn.Module):
    """What a checkpoint holds, rebuilt from `config()`: architecture, classes, input side, normalization."""

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 10,
        classes: Sequence[str] | None = None,
        image_size: int = 32,  # the side of the square images it was trained on (every loader resizes to it)
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        default_mean, default_std = _entry(arch)[1]
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
        return {k: getattr(self, k) for k in MODEL_KEYS}
