"""APPROXIMATE, kept out of `losses.IMPLS` because it changes the loss: the misalignment of k random classes
per image, scaled by C/k, an unbiased estimate of Eq. 2's sum over classes in eval-mode BatchNorm only (in
train mode a seed row mixes classes across the batch). Short Class Mean runs with k = 1 plateaued at 30-40%
clean accuracy (issue 6): `pagdemo bench` times it; do not train with it without evidence."""

from __future__ import annotations

import torch
from torch import nn

from pagdemo.pag.fastpag import class_seeds, trace
from pagdemo.pag.losses import cosine_misalignment


def sampled_misalignment(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    k: int = 1,
    grad_of: str = "logit",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, C/k times the misalignment of k random classes per image, no repeats): one traced backward."""
    logits, backward = trace(model, x.detach())
    b, c = logits.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}], got {k}")
    classes = torch.rand(b, c, generator=generator).argsort(dim=1)[:, :k].to(x.device)  # (B, k)
    rows = torch.arange(b, device=x.device)
    grads = backward(class_seeds(logits, grad_of)[classes.T, rows]).transpose(0, 1)  # (B, k, *x)
    return logits, cosine_misalignment(grads, targets[rows[:, None], classes]) * (c / k)
