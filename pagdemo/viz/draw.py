"""What every panel shares: colours, the bundled font, row labels, probabilities of the deployed model, and
images in [0, 1] as pixels, enlarged nearest-neighbour (every pixel the model sees stays visible)."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import ImageFont
from torch import nn

from pagdemo.attacks import eval_mode

BLACK, GREY, RED, GREEN = (20, 20, 20), (110, 110, 110), (200, 30, 30), (20, 130, 40)


def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same labels on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


def label_lines(name: str, width: int) -> list[str]:
    """A row label in at most three lines (long checkpoint names break at hyphens)."""
    lines = textwrap.wrap(name, width) or [""]
    return lines if len(lines) <= 3 else lines[:2] + [lines[2][: width - 3] + "..."]


def model_device(model: nn.Module) -> torch.device:
    """Where a model's weights live, so inputs follow them."""
    return next(model.parameters()).device


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, C) of the deployed (eval-mode) model, on the CPU."""
    with eval_mode(model):
        return torch.softmax(model(x.to(model_device(model))), dim=1).cpu()


def to_uint8(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(..., 3, h, w) in [0, 1] to (..., h*scale, w*scale, 3) uint8 by pixel repetition, a whole batch at once
    (a streamed frame stays cheap)."""
    a = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()
    return a.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else a
