"""Two untrained tinycnns and one image: what the grid and compare tests draw with."""

import torch

from pagdemo.models import build_model

CLASSES = [f"class{i}" for i in range(10)]


def tiny_models() -> list[torch.nn.Module]:
    """Two tinycnns of different seeds, in eval mode, with class names."""
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model("tinycnn", 10)
        m.classes = CLASSES
        out.append(m.eval())
    return out


def one_image() -> torch.Tensor:
    """A fixed random (3, 32, 32) image in [0, 1]."""
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
