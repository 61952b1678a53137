"""The PAG loss (Eq. 1, 2): cross-entropy plus lambda times the cosine misalignment between the
model's input gradient for every class t and the "ground-truth" gradient g(x, t).

Two implementations of the model's input gradients, both differentiable (double backprop):
- `loop`: the reference. One forward of the batch, then one `autograd.grad(create_graph=True)`
  per class. Clear and exact, C backward passes.
- `batched`: the authors' code. The batch is repeated C times, copy t takes the gradient of
  class t, and one backward gives all C gradients.

What BatchNorm does while the input gradients are taken: in eval mode it is a fixed affine
map, and `loop` and `batched` agree to float precision. In train mode (the authors' choice,
and ours while training) each input gradient also flows through the batch statistics, so it
depends on the other images of the batch; `loop` couples the B images of the batch, while
`batched` computes the statistics over the C*B repeated copies and so mixes the classes'
coupling terms (the forward values are identical, since a repeated batch has the same mean
and variance). Both are legitimate regularizers; the checkpoint records which one trained it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

GRAD_OF = ("logit", "logsoftmax")  # Eq. 1 as written / the authors' code
PAG_IMPLS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}


def _register(name: str):
    def deco(fn):
        PAG_IMPLS[name] = fn
        return fn
    return deco


def _class_scores(logits: torch.Tensor, grad_of: str) -> torch.Tensor:
    """The per-class function whose input gradient must be perceptually aligned."""
    if grad_of == "logit":
        return logits
    if grad_of == "logsoftmax":
        return F.log_softmax(logits, dim=1)
    raise ValueError(f"unknown grad_of {grad_of!r}; choose one of {list(GRAD_OF)}")


@_register("loop")
def input_gradients_loop(model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True):
    """Reference: (logits (B, C), grads (B, C, *x)) with one backward per class."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    scores = _class_scores(logits, grad_of)
    grads = [
        torch.autograd.grad(scores[:, t].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        for t in range(scores.shape[1])
    ]
    return logits, torch.stack(grads, dim=1)


@_register("batched")
def input_gradients_batched(model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True,
                            num_classes: int | None = None):
    """All C input gradients from one backward over the batch repeated C times (authors' code)."""
    b = x.shape[0]
    c = num_classes or _num_outputs(model)
    x_rep = x.detach().repeat(c, *([1] * (x.dim() - 1))).requires_grad_(True)
    logits_rep = model(x_rep)
    scores = _class_scores(logits_rep, grad_of).view(c, b, c)
    picked = scores.diagonal(dim1=0, dim2=2).sum()  # copy t keeps class t
    (g,) = torch.autograd.grad(picked, x_rep, create_graph=create_graph)
    return logits_rep[:b], g.view(c, b, *x.shape[1:]).transpose(0, 1)


def _num_outputs(model: nn.Module) -> int:
    """Number of classes from the last Linear layer: a probe forward would move BatchNorm's statistics."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


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
        impl: a key of PAG_IMPLS ("loop" is the reference; see the module docstring).
    """
    if impl not in PAG_IMPLS:
        raise ValueError(f"unknown PAG implementation {impl!r}; choose one of {sorted(PAG_IMPLS)}")
    assert targets.shape[:1] == x.shape[:1] and targets.shape[2:] == x.shape[1:], (
        f"targets must be (B, C, *x.shape[1:]), got {tuple(targets.shape)} for x {tuple(x.shape)}")
    logits, grads = PAG_IMPLS[impl](model, x, grad_of=grad_of, create_graph=True)
    ce = F.cross_entropy(logits, y)
    cos = cosine_misalignment(grads, targets)
    return ce + lam * cos, {"ce": ce.detach(), "cos": cos.detach(), "logits": logits.detach()}


from pagdemo import fastpag  # noqa: E402,F401  (registers the fast exact implementations: vmap, explicit, compiled)
