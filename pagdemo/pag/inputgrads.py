"""A model's input gradients for every class, which the PAG loss aligns (Eq. 1), by double backprop: `loop`,
the reference (a backward per class), and `batched`, the authors' (the batch repeated C times, one backward).

The *coupling* (`COUPLINGS`) is what BatchNorm does meanwhile. "eval": a fixed affine map, every image's
gradient its own (what attacks and the app see). In train mode a gradient also flows through the batch
statistics: "classes" couples the B images of each class's pass (`loop`, `vmap`, `explicit`), "batch" takes
the statistics over the C*B repeated copies (`batched`, the authors'; `explicit`). "detached": the batch's own
statistics held constant, per-image gradients of the function the cross-entropy trains (eval mode with the
running statistics replaced by the batch's). docs/training.md has what each measured.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.models import class_count

GRAD_OF = ("logit", "logsoftmax")  # Eq. 1 as written / the authors' code
COUPLINGS = ("classes", "batch", "eval", "detached")  # BatchNorm while the C input gradients are taken
PER_IMAGE = ("eval", "detached")  # couplings with per-image gradients: every implementation computes them
# the train-mode couplings each implementation computes
TRAIN_COUPLINGS = {"loop": ("classes",), "vmap": ("classes",), "batched": ("batch",)}
TRAIN_COUPLINGS |= {"explicit": ("classes", "batch"), "compiled": ("classes", "batch")}


def default_coupling(impl: str) -> str:
    """The train-mode coupling an implementation computes without being asked: `batched` the authors', else
    `loop`'s."""
    return TRAIN_COUPLINGS.get(impl, ("classes",))[0]


def train_mode_coupling(coupling: str) -> str:
    """The train-mode coupling a run's alignment is monitored in: its own, or "classes" for an eval-mode pass
    (which has no batch statistics of its own); "detached" is a train mode of its own."""
    return "classes" if coupling == "eval" else coupling


def check_coupling(impl: str, coupling: str) -> None:
    """A coupling the implementation cannot compute is a user error: say which implementations can."""
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown BatchNorm coupling {coupling!r}; choose one of {list(COUPLINGS)}")
    if coupling not in PER_IMAGE and coupling not in TRAIN_COUPLINGS.get(impl, (coupling,)):
        able = sorted(i for i, c in TRAIN_COUPLINGS.items() if coupling in c)
        raise ValueError(
            f"--pag-impl {impl} cannot compute BatchNorm coupling {coupling!r}; use one of {able}"
        )


@contextmanager
def batchnorm_eval(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in eval mode (running statistics, per-image gradients) for the duration, then as they
    were."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


def batch_affine(
    module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), shaped to broadcast over x: the batch's BatchNorm as an affine map, its statistics
    constant.

    Statistics in at least fp32 (as cuDNN keeps them under bf16 autocast), taken without autograd: the
    "detached" coupling's BatchNorm, what eval mode would be if the running statistics were the batch's.
    """
    dims = [0, *range(2, x.dim())]
    with torch.no_grad():
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        var, mean = torch.var_mean(xs, dim=dims, unbiased=False)
    invstd = torch.rsqrt(var + module.eps)
    scale = invstd if module.weight is None else module.weight * invstd
    shift = -mean * scale if module.bias is None else module.bias - mean * scale
    shape = (1, -1, *([1] * (x.dim() - 2)))
    return scale.view(shape), shift.view(shape)


def _detached_forward(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm forward by the batch's statistics held constant; running statistics stay as they are."""
    scale, shift = batch_affine(module, x)
    return x * scale + shift


@contextmanager
def batchnorm_detached(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm layers normalize by the batch's statistics held constant for the duration (the
    "detached" coupling for implementations that run the model's own forward: `loop`, `vmap`, `batched`)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.forward = functools.partial(_detached_forward, m)
    try:
        yield
    finally:
        for m in bns:
            del m.forward  # the class's forward again


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm that leaves the running statistics alone: for a second forward in one step, so
    they move once per step and the first forward's saved tensors stay valid (torch.compile needs that)."""
    bns = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def check_grad_of(grad_of: str) -> None:
    """An unknown score name is a user error: name it and the choices."""
    if grad_of not in GRAD_OF:
        raise ValueError(f"unknown grad_of {grad_of!r}; choose one of {list(GRAD_OF)}")


def class_scores(logits: torch.Tensor, grad_of: str) -> torch.Tensor:
    """The per-class function whose input gradient must be perceptually aligned."""
    check_grad_of(grad_of)
    return logits if grad_of == "logit" else F.log_softmax(logits, dim=1)


def input_gradients_loop(
    model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: (logits (B, C), grads (B, C, *x)) with one backward per class ("classes" coupling)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    scores = class_scores(logits, grad_of)
    grads = [
        torch.autograd.grad(scores[:, t].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        for t in range(scores.shape[1])
    ]
    return logits, torch.stack(grads, dim=1)


def input_gradients_batched(
    model: nn.Module,
    x: torch.Tensor,
    grad_of: str = "logit",
    create_graph: bool = True,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All C input gradients from one backward over the batch repeated C times (authors' code: "batch")."""
    b = x.shape[0]
    c = num_classes or class_count(model)
    x_rep = x.detach().repeat(c, *([1] * (x.dim() - 1))).requires_grad_(True)
    logits_rep = model(x_rep)
    scores = class_scores(logits_rep, grad_of).view(c, b, c)
    picked = scores.diagonal(dim1=0, dim2=2).sum()  # copy t keeps class t
    (g,) = torch.autograd.grad(picked, x_rep, create_graph=create_graph)
    return logits_rep[:b], g.view(c, b, *x.shape[1:]).transpose(0, 1)
