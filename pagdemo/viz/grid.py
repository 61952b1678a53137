"""The PAG picture (the paper's Figures 1, 4 and 5): large-eps targeted PGD from one image toward each class,
one row per model, streamed as it forms (the pixel helpers, nearest-neighbour, are `pagdemo.viz.draw`'s)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from pagdemo.attacks import pgd_steps
from pagdemo.viz.draw import BLACK, GREEN, GREY, label_lines, load_font, model_device, probabilities, to_uint8


@dataclass(frozen=True)
class GridFrame:
    """One streamed state of the PAG grid."""

    image: np.ndarray  # (H, W, 3) uint8, the labelled grid
    probs: np.ndarray  # (models, targets): each model's probability of the target, on its own images
    step: int  # PGD steps done so far (0: the clean image)
    steps: int
    images: torch.Tensor  # (models, targets, 3, h, w) the current iterates, in [0, 1], on the CPU


@dataclass(frozen=True)
class GridSpec:
    """Labels of the grid, fixed while PGD runs."""

    names: list[str]  # one per row (model)
    classes: list[str]  # class names of the models
    targets: list[int]  # one per column
    caption: str  # threat model and settings, printed under the grid
    scale: int = 3  # each model pixel becomes scale x scale screen pixels (32 -> 96)


def _draw_grid(
    spec: GridSpec,
    x: torch.Tensor,
    clean_probs: torch.Tensor,
    cells: torch.Tensor,
    probs: torch.Tensor,
    step: int,
    steps: int,
) -> np.ndarray:
    """Rows = models, columns = [input, target 1, ...]: the cells (rows, targets, 3, h, w), each with p(t)."""
    c, pad, label_w, head_h, foot_h = x.shape[-1] * spec.scale, 6, 170, 24, 20
    rows, cols = cells.shape[0], cells.shape[1] + 1
    # a blank right edge: Gradio's download and fullscreen buttons sit over the image's top-right corner
    margin = 60
    width, height = label_w + cols * (c + pad) + margin, head_h + rows * (c + foot_h + pad) + 26
    canvas = np.full((height, width, 3), 255, np.uint8)
    # (rows, cols, c, c, 3): the input, then the cells
    pixels = to_uint8(torch.cat([x.expand(rows, 1, *x.shape), cells], dim=1), spec.scale)
    xs = [label_w + pad + j * (c + pad) for j in range(cols)]
    ys = [head_h + i * (c + foot_h + pad) for i in range(rows)]
    for i in range(rows):
        for j in range(cols):
            canvas[ys[i] : ys[i] + c, xs[j] : xs[j] + c] = pixels[i, j]
    img = Image.fromarray(canvas)
    draw, font, small = ImageDraw.Draw(img), load_font(14), load_font(12)
    for j, title in enumerate(["input"] + [spec.classes[t] for t in spec.targets]):
        draw.text((xs[j] + c // 2, 4), title, fill=GREY if j == 0 else BLACK, font=font, anchor="ma")
    for i, name in enumerate(spec.names):
        pred = int(clean_probs[i].argmax())
        lines = label_lines(name, 20)
        top = ys[i] + c // 2 - 9 * len(lines) - 9
        for k, line in enumerate(lines):
            draw.text((pad, top + 18 * k), line, fill=BLACK, font=font)
        sees = f"sees: {spec.classes[pred]} {100 * clean_probs[i, pred]:.0f}%"
        draw.text((pad, top + 18 * len(lines) + 2), sees, fill=GREY, font=small)
        for j in range(1, cols):
            p, at = float(probs[i, j - 1]), (xs[j] + c // 2, ys[i] + c + 2)
            draw.text(at, f"p={p:.2f}", fill=GREEN if p >= 0.5 else BLACK, font=small, anchor="ma")
    draw.text((pad, height - 20), f"{spec.caption} | step {step}/{steps}", fill=GREY, font=small)
    return np.asarray(img)


def pag_grid_steps(
    models: list[nn.Module],
    x: torch.Tensor,
    spec: GridSpec,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    min_interval: float = 0.5,
) -> Iterator[GridFrame]:
    """Large-eps targeted PGD from one (3, H, W) image in [0, 1] toward each target, per model: the PAG test.

    A model's targets form one batch (no random start: the picture is deterministic); the models step in turn,
    so the rows form together. Yields the clean grid, then at most one frame per `min_interval` seconds (a
    frame costs a forward pass per model), and always the last step. eps, step_size: as in `pgd_steps`.
    """
    assert x.dim() == 3, f"expected one (3, H, W) image, got shape {tuple(x.shape)}"
    assert len(models) == len(spec.names), "one name per model"
    batch = x.unsqueeze(0).repeat(len(spec.targets), 1, 1, 1)
    y = torch.tensor(spec.targets)
    clean_probs = torch.cat([probabilities(m, x.unsqueeze(0)) for m in models])
    attack = dict(norm=norm, steps=steps, step_size=step_size, targeted=True, random_init=False)
    runs = [pgd_steps(m, batch.to(model_device(m)), y.to(model_device(m)), eps, **attack) for m in models]
    current = [batch] * len(models)

    def frame(step: int) -> GridFrame:
        probs = torch.stack([probabilities(m, xa)[torch.arange(len(y)), y] for m, xa in zip(models, current)])
        images = torch.stack([xa.cpu() for xa in current])
        image = _draw_grid(spec, x.cpu(), clean_probs, images, probs, step, steps)
        return GridFrame(image, probs.numpy(), step, steps, images)

    yield frame(0)
    last = time.monotonic()
    for step in range(1, steps + 1):
        current = [next(run) for run in runs]
        if step == steps or time.monotonic() - last >= min_interval:
            yield frame(step)
            last = time.monotonic()
