"""The PAG loss (Eq. 1, 2): cross-entropy plus lambda times the cosine misalignment between the
model's input gradient for every class t and the "ground-truth" gradient g(x, t).

`PAG_IMPLS` is the one table of ways to compute the C input gradients: `loop` (the reference)
and `batched` (the authors' trick) from `pagdemo.inputgrads`; `vmap`, `explicit` and `compiled`
(exact like `loop`, faster) from `pagdemo.fastpag`. The checkpoint records which one trained it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.fastpag import EXACT_IMPLS, sampled_input_gradients
from pagdemo.inputgrads import input_gradients_batched, input_gradients_loop

InputGradients = Callable[..., tuple[torch.Tensor, torch.Tensor]]
PAG_IMPLS: dict[str, InputGradients] = {"loop": input_gradients_loop, "batched": input_gradients_batched,
                                        **EXACT_IMPLS}


def cosine_misalignment(grads: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2, summed over classes and averaged over the batch: sum_t 1 - cos(grad_t, g_t)."""
    v, u = grads.flatten(2), targets.flatten(2)
    cos = (v * u).sum(-1) / (v.norm(dim=-1) * u.norm(dim=-1)).clamp_min(eps)
    return (1 - cos).sum(1).mean()


def pag_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    lam: float,
    grad_of: str = "logit",
    impl: str = "batched",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 1: CE(f(x), y) + lam * sum_t Lcos(grad_x f(x)_t, g(x, t)); returns (loss, parts).

    Args:
        x: (B, ...) clean (augmented) inputs; targets: (B, C, ...) the g(x, t) of every class.
        impl: a key of PAG_IMPLS ("loop" is the reference; see pagdemo.inputgrads).
    """
    if impl not in PAG_IMPLS:
        raise ValueError(f"unknown PAG implementation {impl!r}; choose one of {sorted(PAG_IMPLS)}")
    assert targets.shape[:1] == x.shape[:1] and targets.shape[2:] == x.shape[1:], (
        f"targets must be (B, C, *x.shape[1:]), got {tuple(targets.shape)} for x {tuple(x.shape)}")
    logits, grads = PAG_IMPLS[impl](model, x, grad_of=grad_of, create_graph=True)
    ce = F.cross_entropy(logits, y)
    cos = cosine_misalignment(grads, targets)
    return ce + lam * cos, {"ce": ce.detach(), "cos": cos.detach(), "logits": logits.detach()}


def sampled_misalignment(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, k: int = 1, grad_of: str = "logit",
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """APPROXIMATE Eq. 2 term: (logits, C/k times the misalignment of k random classes per image).

    Unbiased for the sum over all C classes when BatchNorm is in eval mode (see fastpag).
    """
    logits, grads, classes = sampled_input_gradients(model, x, k, grad_of, generator)
    rows = torch.arange(len(x), device=x.device)[:, None]
    return logits, cosine_misalignment(grads, targets[rows, classes]) * (logits.shape[1] / k)


def sampled_pag_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    lam: float,
    k: int = 1,
    grad_of: str = "logit",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APPROXIMATE Eq. 1: the misalignment of k random classes per image, scaled by C/k; same return as `pag_loss`."""
    logits, cos = sampled_misalignment(model, x, targets, k, grad_of, generator)
    ce = F.cross_entropy(logits, y)
    return ce + lam * cos, {"ce": ce.detach(), "cos": cos.detach(), "logits": logits.detach()}
