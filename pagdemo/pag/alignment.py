"""How well a model's input gradients align with its PAG targets, in each BatchNorm coupling.

Training aligns the gradient it computes: in train-mode BatchNorm that gradient also flows through
the batch statistics ("classes" or "batch" coupling, `pagdemo.pag.inputgrads`), while attacks and the app
see the eval-mode, per-image gradient. `misalignment` measures a model in any coupling on the same
images; `target_cosines` says how much the C targets of one image point the same way; and
`per_image_floor` estimates the lowest summed misalignment that per-image log-softmax gradients can
reach for given targets: they satisfy sum_t p_t grad log p_t = 0, so they cannot all point along
targets that share one large component. Issue 23's diagnosis (docs/training.md) is built from these.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.pag.fastpag import trace
from pagdemo.pag.inputgrads import batchnorm_eval
from pagdemo.pag.losses import PAGStep, cosine_misalignment


def _traceable(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether `explicit` knows every layer of the model (probed in eval mode: no running statistic moves)."""
    try:
        with torch.no_grad(), batchnorm_eval(model):
            trace(model, x)
        return True
    except ValueError:
        return False


def misalignment(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    grad_of: str = "logsoftmax",
    coupling: str = "eval",
    batch_size: int = 256,
) -> float:
    """Mean over images of the summed misalignment (Eq. 2) in batches of `batch_size`; the model is left as it was.

    Train couplings run on a copy in train mode (its running statistics move). `explicit` runs without
    autograd (a model it cannot trace takes `loop`, or `batched` for the "batch" coupling).
    """
    net = model if coupling == "eval" else copy.deepcopy(model).train()
    impl = "explicit" if _traceable(net, x[:1]) else None  # None: PAGStep's choice for any model
    step = PAGStep(impl, coupling, grad_of)
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, tb = x[i : i + batch_size], targets[i : i + batch_size]
        with torch.no_grad() if impl == "explicit" else contextlib.nullcontext():
            _, grads = step.input_gradients(net, xb, create_graph=False)
        total += cosine_misalignment(grads.detach(), tb).item() * len(xb)
    return total / len(x)


def target_cosines(targets: torch.Tensor) -> torch.Tensor:
    """(B,): the mean pairwise cosine between the C targets of each image (1: all point the same way)."""
    u = F.normalize(targets.flatten(2).double(), dim=2)
    gram = u @ u.transpose(1, 2)
    c = gram.shape[1]
    return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (c * (c - 1))


def _span_coordinates(targets: torch.Tensor) -> torch.Tensor:
    """(B, C, C): each image's unit targets in an orthonormal basis of their span (nothing else can raise a cosine)."""
    u = F.normalize(targets.flatten(2).double(), dim=2)
    q, _ = torch.linalg.qr(u.transpose(1, 2))  # (B, D, C)
    return u @ q


def flip_one_bound(targets: torch.Tensor) -> torch.Tensor:
    """(B,): a feasible per-image point: every gradient on its target but one, which points against the others' sum."""
    u = _span_coordinates(targets)
    others = u.sum(1, keepdim=True) - u  # for each class k: the sum of the other targets
    return (1 + (u * F.normalize(others, dim=2)).sum(2)).min(1).values


def _repaired_value(z: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The objective at an exactly feasible point near (z, w): subtract the residual r from every v_t, renormalize.

    sum_t a_t (v_t - r) = 0 with a on the simplex, so sum_t a_t |v_t - r| normalize(v_t - r) = 0: feasible.
    """
    v, a = F.normalize(z, dim=2), torch.softmax(w, dim=1)
    r = (a.unsqueeze(2) * v).sum(1, keepdim=True)
    return (1 - (F.normalize(v - r, dim=2) * u).sum(2)).sum(1)


def per_image_floor(targets: torch.Tensor, steps: int = 2000, starts: int = 4, seed: int = 0) -> torch.Tensor:
    """(B,): the lowest sum_t (1 - cos(v_t, g_t)) found over unit v_t with a positive combination equal to 0.

    Per-image log-softmax gradients meet that constraint (weights p_t |grad log p_t|), whatever the model.
    A penalty method in the span of the targets, from several starts, each result repaired to an exactly
    feasible point (`_repaired_value`); the `flip_one_bound` point is one candidate. A value reached, so an
    upper bound on the true minimum; a local search cannot prove that nothing lower exists.
    """
    u = _span_coordinates(targets)  # (B, C, C)
    g = torch.Generator().manual_seed(seed)
    best = flip_one_bound(targets)
    for start in range(starts):
        z = (u + (0.3 * start) * torch.randn(u.shape, generator=g, dtype=u.dtype)).requires_grad_(True)
        w = torch.zeros(u.shape[:2], dtype=u.dtype, requires_grad=True)
        opt = torch.optim.Adam([z, w], lr=0.02)
        for i in range(steps):
            mu = 10.0 ** (1 + 5 * i / steps)  # the penalty grows from 10 to 1e6
            v, a = F.normalize(z, dim=2), torch.softmax(w, dim=1)
            residual = (a.unsqueeze(2) * v).sum(1).norm(dim=1)
            opt.zero_grad()
            ((1 - (v * u).sum(2)).sum(1) + mu * residual**2).sum().backward()
            opt.step()
        with torch.no_grad():
            best = torch.minimum(best, _repaired_value(z, w, u))
    return best
