"""What one training step minimizes, by method: the cross-entropy (vanilla), Eq. 1 (PAG and RIGD, through
`pagdemo.pag.losses.PAGLoss`) or the cross-entropy of adversarial examples (adv, the RIGD teachers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagdemo.attacks import nfgsm, pgd
from pagdemo.data.augment import AuthorsFrame
from pagdemo.data.datasets import Dataset
from pagdemo.methods import METHODS
from pagdemo.pag.losses import PAGLoss
from pagdemo.pag.targets import TeacherGradientTarget, build_target
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.threat import FGSM_RS_STEP, strong_step
from pagdemo.train.config import TrainConfig


def adversarial_batch(
    cfg: TrainConfig, model: nn.Module, x: Tensor, y: Tensor, eps: float, generator: torch.Generator
) -> Tensor:
    """The batch adversarial training trains on, made by the configured attack on the unwrapped model."""
    if cfg.adv_attack == "fgsm":  # FGSM with random start: one PGD step of size 1.25 eps from a random point
        step = FGSM_RS_STEP * eps
        return pgd(model, x, y, eps, norm=cfg.adv_norm, steps=1, step_size=step, generator=generator)
    if cfg.adv_attack == "nfgsm":
        return nfgsm(model, x, y, eps, norm=cfg.adv_norm, generator=generator)
    step = strong_step(eps, cfg.adv_steps)
    return pgd(model, x, y, eps, norm=cfg.adv_norm, steps=cfg.adv_steps, step_size=step, generator=generator)


def teacher_target(cfg: TrainConfig, train: Dataset, device: torch.device) -> TeacherGradientTarget:
    """RIGD's g(x, t): the teacher's input gradients; a teacher of other classes or another image size is
    refused."""
    teacher = load_checkpoint(cfg.teacher, device)
    if list(teacher.classes) != list(train.classes) or teacher.image_size != train.side:
        raise ValueError(
            f"teacher {cfg.teacher} knows {teacher.classes} at {teacher.image_size}x{teacher.image_size}, "
            f"the training data {train.classes} at {train.side}x{train.side}: choose a teacher of this data"
        )
    return TeacherGradientTarget(teacher, cfg.grad_of, name=str(cfg.teacher))


def make_objective(
    cfg: TrainConfig, train: Dataset, device: torch.device, generator: torch.Generator
) -> PAGLoss | None:
    """The run's PAG loss (its target on the training device and its step), or None without a PAG term."""
    kind = METHODS[cfg.method].target
    if kind is None:
        return None
    if kind == "teacher":
        target = teacher_target(cfg, train, device)
    else:
        n = len(train.classes)
        options = {"seed": cfg.seed, "k": cfg.nn_k, "cm_scaling": cfg.cm_scaling}
        target = build_target(kind, train.images, train.labels, n, **options).to(device)
    frame = AuthorsFrame(generator) if cfg.pag_frame == "authors" else None
    return PAGLoss(
        target, lam=cfg.lam, coupling=cfg.bn_coupling, impl=cfg.pag_impl, grad_of=cfg.grad_of, frame=frame
    )


def step_loss(
    cfg: TrainConfig,
    model: nn.Module,
    objective: PAGLoss | None,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    generator: torch.Generator,
    lam: float,
    attacked: nn.Module | None = None,
    eps: float = 0.0,
) -> tuple[Tensor, Tensor, dict]:
    """The method's training loss for one batch: (loss, detached logits, logged parts).

    `attacked` is the unwrapped model that adversarial training attacks: attacking through DDP would leave its
    reducer waiting for a parameter backward that never comes.
    """
    if cfg.method == "adv":
        x = adversarial_batch(cfg, attacked or model, x, y, eps, generator)
        model.train()
    if objective is None:
        logits = model(x)
        return F.cross_entropy(logits, y), logits.detach(), {}
    loss = objective(model, x, y, idx, lam=lam)
    parts = objective.parts
    return loss, parts["logits"], {"ce": parts["ce"].item(), "cos": parts["cos"].item()}
