"""Which images a model gets right, and exact fractions of them: what every evaluation starts from. No I/O."""

from __future__ import annotations

import torch
from torch import nn

from pagdemo.attacks import eval_mode


def correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(N,) CPU bools: which images the model gets right, in eval mode (the only ones worth attacking)."""
    with eval_mode(model), torch.no_grad():
        flags = [
            model(x[i : i + batch_size].to(device)).argmax(1).cpu() == y[i : i + batch_size].cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)


def fraction(flags: torch.Tensor) -> float:
    """The share of True flags, exact (a float32 mean would turn 0.6 into 0.6000000238)."""
    return int(flags.sum()) / len(flags) if len(flags) else 0.0


def percent_text(fraction: float, digits: int = 1) -> str:
    """A fraction (0.4636) as a terminal line shows it: '46.4%'."""
    return f"{100 * fraction:.{digits}f}%"
