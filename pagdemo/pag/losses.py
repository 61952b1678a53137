"""The PAG loss (Eq. 1, 2): cross-entropy plus lambda times the cosine misalignment between the model's input
gradient for every class t and the "ground-truth" gradient g(x, t) (`pagdemo.pag.targets`).

How the C input gradients are taken is one object, `PAGStep`, checked once when a run starts: the
implementation (`IMPLS`), the BatchNorm coupling, the score and the frame. `PAGLoss` is Eq. 1 as a module for
any training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.pag.fastpag import EXACT_IMPLS, TRACED_IMPLS
from pagdemo.pag.inputgrads import (
    PER_IMAGE,
    batchnorm_detached,
    batchnorm_eval,
    check_coupling,
    check_grad_of,
    default_coupling,
    input_gradients_batched,
    input_gradients_loop,
    running_stats_frozen,
)
from pagdemo.pag.targets import TARGET_KINDS, TeacherGradientTarget, build_target

# loop and batched (the authors' trick) by plain autograd; vmap, explicit and compiled: exact and faster
IMPLS: dict[str, Callable] = {"loop": input_gradients_loop, "batched": input_gradients_batched, **EXACT_IMPLS}
Frame = Callable[[torch.Tensor], tuple[torch.Tensor, Callable]]  # x -> (the cross-entropy's batch, PAG view)


@dataclass(frozen=True)
class PAGStep:
    """How the PAG term's input gradients are taken; the defaults are the authors' (batched, "batch"
    coupling).

    impl: a key of IMPLS (None: `batched` for the "batch" coupling, else `loop`: both run any model).
    coupling: BatchNorm during the PAG pass (inputgrads.COUPLINGS; None: what `impl` computes). With "eval" or
        "detached" the cross-entropy gets its own train-mode forward first.
    grad_of: "logsoftmax" (the authors' code) or "logit" (Eq. 1 as written).
    frame: None (the PAG pass sees the batch itself) or the authors' frame (`augment.AuthorsFrame`): x is
        un-augmented, the cross-entropy and the PAG pass each see one crop of it, gradients taken w.r.t. x.
    """

    impl: str | None = None
    coupling: str | None = None
    grad_of: str = "logsoftmax"
    frame: Frame | None = None

    def __post_init__(self) -> None:
        """Check the combination once, so that a run cannot fail on its first PAG step."""
        impl = self.impl or ("batched" if self.coupling in (None, "batch") else "loop")
        if impl not in IMPLS:
            raise ValueError(f"unknown PAG implementation {impl!r}; choose one of {sorted(IMPLS)}")
        object.__setattr__(self, "impl", impl)
        object.__setattr__(self, "coupling", self.coupling or default_coupling(impl))
        check_coupling(impl, self.coupling)
        check_grad_of(self.grad_of)

    def input_gradients(
        self, model: nn.Module, x: torch.Tensor, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), grads (B, C, *x)) by this step's implementation, BatchNorm coupled as asked."""
        fn = IMPLS[self.impl]
        if self.impl in TRACED_IMPLS:  # they write every coupling's BatchNorm backward themselves
            with batchnorm_eval(model) if self.coupling == "eval" else nullcontext():
                return fn(model, x, self.grad_of, create_graph, self.coupling)
        patch = {"eval": batchnorm_eval, "detached": batchnorm_detached}.get(self.coupling)
        with patch(model) if patch else nullcontext():
            return fn(model, x, self.grad_of, create_graph)


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
    step: PAGStep = PAGStep(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 1: CE(f(x), y) + lam * sum_t Lcos(grad_x f(x)_t, g(x, t)), and the detached ce, cos and logits.

    x: (B, ...) the batch in [0, 1]; targets: (B, C, ...) the g(x, t) of every class, in x's frame.
    """
    assert targets.shape[:1] == x.shape[:1] and targets.shape[2:] == x.shape[1:], (
        f"targets must be (B, C, *x.shape[1:]), got {tuple(targets.shape)} for x {tuple(x.shape)}"
    )
    ce_x, view = step.frame(x) if step.frame is not None else (x, None)
    separate = step.coupling in PER_IMAGE or step.frame is not None
    logits = model(ce_x) if separate else None  # train mode: BatchNorm's running statistics move here
    with running_stats_frozen(model) if separate else nullcontext():  # ...and only here
        pag_logits, grads = step.input_gradients(model, x if view is None else view(x))
    grads = grads if view is None else view.adjoint(grads)
    logits = pag_logits if logits is None else logits
    ce, cos = F.cross_entropy(logits, y), cosine_misalignment(grads, targets)
    return ce + lam * cos, {"ce": ce.detach(), "cos": cos.detach(), "logits": logits.detach()}


class PAGLoss(nn.Module):
    """Eq. 1 for any classifier of [0, 1] images in any loop: `loss = pag(model, x, y); loss.backward()`.

    target: "oi" | "cm" | "nn" (built from `images` and `labels`, the training set: uint8 or float in [0, 1];
    `seed`, `k` for nn, `cm_scaling` for cm as keyword options), or a robust teacher model (RIGD), or a target
    module of `pagdemo.pag.targets`. lam: the PAG weight (the paper's Table 3: 0.5 for oi, 0.4 for the
    others). coupling, impl, grad_of, frame: the `PAGStep` (default: the authors' step, "batch" coupling).
    After a call, `parts` holds the detached cross-entropy, misalignment and logits.
    """

    def __init__(
        self,
        target: str | nn.Module,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        lam: float,
        coupling: str | None = "batch",
        impl: str | None = None,
        grad_of: str = "logsoftmax",
        frame: Frame | None = None,
        **target_options,
    ) -> None:
        super().__init__()
        if isinstance(target, str):
            if target not in TARGET_KINDS or images is None or labels is None:
                raise ValueError(f"a target by name is one of {list(TARGET_KINDS)}, from images and labels")
            target = build_target(target, images, labels, int(labels.max()) + 1, **target_options)
        elif not hasattr(target, "describe"):  # a classifier: its input gradients are the targets (RIGD)
            target = TeacherGradientTarget(target, grad_of)
        self.target, self.lam = target, float(lam)
        self.step = PAGStep(impl, coupling, grad_of, frame)
        self.parts: dict[str, torch.Tensor] = {}

    def forward(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        idx: torch.Tensor | None = None,
        lam: float | None = None,
    ) -> torch.Tensor:
        """The loss of one batch (idx: its dataset indices, so the nn target never picks an image itself)."""
        targets = self.target(x.detach(), y, idx)
        loss, self.parts = pag_loss(model, x, y, targets, self.lam if lam is None else lam, self.step)
        return loss
