"""The PAG loss (Eq. 1, 2): cross-entropy plus lambda times the cosine misalignment between the
model's input gradient for every class t and the "ground-truth" gradient g(x, t).

`PAG_IMPLS` is the one table of ways to compute the C input gradients: `loop` (the reference)
and `batched` (the authors' trick) from `pagdemo.pag.inputgrads`; `vmap`, `explicit` and `compiled`
(exact like `loop` or like `batched`, faster) from `pagdemo.pag.fastpag`. What they compute in
train-mode BatchNorm is the *coupling* (`inputgrads.COUPLINGS`); the checkpoint records both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.pag.fastpag import EXACT_IMPLS, TRACED_IMPLS, sampled_input_gradients
from pagdemo.pag.inputgrads import (
    PER_IMAGE,
    batchnorm_detached,
    batchnorm_eval,
    check_coupling,
    default_coupling,
    input_gradients_batched,
    input_gradients_loop,
    running_stats_frozen,
)

InputGradients = Callable[..., tuple[torch.Tensor, torch.Tensor]]
PAG_IMPLS: dict[str, InputGradients] = {
    "loop": input_gradients_loop,
    "batched": input_gradients_batched,
    **EXACT_IMPLS,
}


def cosine_misalignment(grads: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2, summed over classes and averaged over the batch: sum_t 1 - cos(grad_t, g_t)."""
    v, u = grads.flatten(2), targets.flatten(2)
    cos = (v * u).sum(-1) / (v.norm(dim=-1) * u.norm(dim=-1)).clamp_min(eps)
    return (1 - cos).sum(1).mean()


def input_gradients(
    model: nn.Module,
    x: torch.Tensor,
    grad_of: str = "logit",
    impl: str = "batched",
    coupling: str | None = None,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), grads (B, C, *x)) by `impl`, BatchNorm coupled as `coupling` (None: the impl's own)."""
    if impl not in PAG_IMPLS:
        raise ValueError(f"unknown PAG implementation {impl!r}; choose one of {sorted(PAG_IMPLS)}")
    coupling = coupling or default_coupling(impl)
    check_coupling(impl, coupling)
    if (
        coupling == "eval"
    ):  # per-image gradients through the running statistics, as attacks and the app see them
        with batchnorm_eval(model):
            return PAG_IMPLS[impl](
                model, x, grad_of=grad_of, create_graph=create_graph, coupling=default_coupling(impl)
            )
    if coupling == "detached" and impl not in TRACED_IMPLS:  # the traced ones write this BatchNorm's backward
        with batchnorm_detached(model):
            return PAG_IMPLS[impl](
                model, x, grad_of=grad_of, create_graph=create_graph, coupling=default_coupling(impl)
            )
    return PAG_IMPLS[impl](model, x, grad_of=grad_of, create_graph=create_graph, coupling=coupling)


def pag_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    lam: float,
    grad_of: str = "logit",
    impl: str = "batched",
    coupling: str | None = None,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ce_x: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 1: CE(f(x), y) + lam * sum_t Lcos(grad_x f(x)_t, g(x, t)); returns (loss, parts).

    Args:
        x: (B, ...) clean (augmented) inputs; targets: (B, C, ...) the g(x, t) of every class, in x's frame.
        impl: a key of PAG_IMPLS ("loop" is the reference; see pagdemo.pag.inputgrads).
        coupling: BatchNorm during the PAG pass (inputgrads.COUPLINGS; None: the impl's own). With "eval"
            or "detached" the cross-entropy gets its own train-mode forward first.
        view: a linear map with an `adjoint` (augment.BatchCrop) that the PAG pass sees x through; the
            gradients are taken w.r.t. x through it (the authors' frame).
        ce_x: the batch the cross-entropy sees, when it is not x (the authors' frame: its own crop).
    """
    assert targets.shape[:1] == x.shape[:1] and targets.shape[2:] == x.shape[1:], (
        f"targets must be (B, C, *x.shape[1:]), got {tuple(targets.shape)} for x {tuple(x.shape)}"
    )
    separate = coupling in PER_IMAGE or view is not None or ce_x is not None
    logits = (
        model(x if ce_x is None else ce_x) if separate else None
    )  # train mode: BatchNorm's statistics move here
    with running_stats_frozen(model) if separate else nullcontext():  # the running statistics moved above
        pag_logits, grads = input_gradients(model, x if view is None else view(x), grad_of, impl, coupling)
    if view is not None:
        grads = view.adjoint(grads)
    logits = pag_logits if logits is None else logits
    ce = F.cross_entropy(logits, y)
    cos = cosine_misalignment(grads, targets)
    return ce + lam * cos, {"ce": ce.detach(), "cos": cos.detach(), "logits": logits.detach()}


def sampled_misalignment(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    k: int = 1,
    grad_of: str = "logit",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
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
