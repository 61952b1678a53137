"""A model's input gradients for every class, the quantity the PAG loss aligns (Eq. 1).

Two plain autograd implementations, both differentiable (double backprop):
- `loop`: the reference. One forward of the batch, then one `autograd.grad(create_graph=True)`
  per class. Clear and exact, C backward passes.
- `batched`: the authors' code. The batch is repeated C times, copy t takes the gradient of
  class t, and one backward gives all C gradients.
The fast exact ones (`vmap`, `explicit`, `compiled`) live in `pagdemo.fastpag`; `pagdemo.losses`
registers all of them in one table.

What BatchNorm does while the input gradients are taken: in eval mode it is a fixed affine
map, and `loop` and `batched` agree to float precision. In train mode (the authors' choice,
and ours while training) each input gradient also flows through the batch statistics, so it
depends on the other images of the batch; `loop` couples the B images of the batch, while
`batched` computes the statistics over the C*B repeated copies and so mixes the classes'
coupling terms (the forward values are identical, since a repeated batch has the same mean
and variance). Both are legitimate regularizers; the checkpoint records which one trained it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GRAD_OF = ("logit", "logsoftmax")  # Eq. 1 as written / the authors' code


def check_grad_of(grad_of: str) -> None:
    """An unknown score name is a user error: name it and the choices."""
    if grad_of not in GRAD_OF:
        raise ValueError(f"unknown grad_of {grad_of!r}; choose one of {list(GRAD_OF)}")


def class_scores(logits: torch.Tensor, grad_of: str) -> torch.Tensor:
    """The per-class function whose input gradient must be perceptually aligned."""
    check_grad_of(grad_of)
    return logits if grad_of == "logit" else F.log_softmax(logits, dim=1)


def input_gradients_loop(model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True):
    """Reference: (logits (B, C), grads (B, C, *x)) with one backward per class."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    scores = class_scores(logits, grad_of)
    grads = [
        torch.autograd.grad(scores[:, t].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        for t in range(scores.shape[1])
    ]
    return logits, torch.stack(grads, dim=1)


def input_gradients_batched(model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True,
                            num_classes: int | None = None):
    """All C input gradients from one backward over the batch repeated C times (authors' code)."""
    b = x.shape[0]
    c = num_classes or num_outputs(model)
    x_rep = x.detach().repeat(c, *([1] * (x.dim() - 1))).requires_grad_(True)
    logits_rep = model(x_rep)
    scores = class_scores(logits_rep, grad_of).view(c, b, c)
    picked = scores.diagonal(dim1=0, dim2=2).sum()  # copy t keeps class t
    (g,) = torch.autograd.grad(picked, x_rep, create_graph=create_graph)
    return logits_rep[:b], g.view(c, b, *x.shape[1:]).transpose(0, 1)


def num_outputs(model: nn.Module) -> int:
    """Number of classes from the last Linear layer: a probe forward would move BatchNorm's statistics."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
