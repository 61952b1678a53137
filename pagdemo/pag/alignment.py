"""How well a model's input gradients align with its PAG targets, in each BatchNorm coupling: training can
fit the gradient of its train-mode coupling while attacks see the eval-mode one (`misalignment` measures
either), and how much the C targets of one image point the same way (`target_cosines`; docs/training.md's
diagnoses)."""

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
    """Mean over images of the summed misalignment (Eq. 2) in batches of `batch_size`; the model is left as it
    was.

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
