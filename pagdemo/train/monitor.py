"""The per-epoch checks a training run logs: clean and robust accuracy on a fixed test subset, and how well
its input gradients meet their targets in the coupling it trains in and in eval mode, the one attacks see."""

from __future__ import annotations

import torch

from pagdemo.data.datasets import Dataset
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.pag.alignment import misalignment
from pagdemo.pag.inputgrads import train_mode_coupling
from pagdemo.threat import eval_eps
from pagdemo.train.config import TrainConfig


def monitor(cfg: TrainConfig, model, test: Dataset | None, device: torch.device) -> dict:
    """Clean accuracy, then the chosen robustness check, on the same test images (so robust <= clean in the
    log)."""
    if test is None:
        return {}
    x, y = test.inputs(), test.labels
    clean, _ = robust_accuracy(model, x, y, None, 0.0, device=device, progress=False)
    out, n = {"test_acc": clean, "test_n": len(x)}, cfg.monitor_robust
    if not n:
        return out
    out["test_robust_n"] = len(x[:n])
    checks = {"l2-pgd7": (("l2", 7),), "pgd20": (("linf", 20), ("l2", 20))}[cfg.monitor_pgd]
    for norm, steps in checks:  # l2-pgd7: the authors' own per-epoch check, eps 0.5 on CIFAR-10
        eps = eval_eps(norm, test.name, model.image_size)
        subset_clean, robust = robust_accuracy(
            model, x[:n], y[:n], norm, eps, steps=steps, device=device, progress=False
        )
        out[f"test_{norm}_pgd{steps}"] = robust
    if cfg.monitor_pgd == "l2-pgd7":
        out["test_acc_robust_subset"] = subset_clean
    return out


def monitor_alignment(
    cfg: TrainConfig, model, target, train: Dataset, device: torch.device, batch: int
) -> dict:
    """The PAG term on fixed training images in the run's train-mode coupling (cos_train) and in eval mode
    (cos_eval): training can fit the first through BatchNorm's batch statistics, attacks see the second."""
    n = min(cfg.monitor_cos, len(train)) if target is not None else 0
    if not n:
        return {}
    # random order, as training's batches: the packed files are sorted by class, and train-mode BatchNorm's
    # coupling depends on which classes share a batch
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    x, y = train.inputs(idx).to(device), train.labels[idx].to(device)
    targets = target(x, y, idx.to(device))
    coupling = train_mode_coupling(cfg.bn_coupling)
    return {
        "cos_train": misalignment(model, x, targets, cfg.grad_of, coupling, batch_size=min(n, batch)),
        "cos_train_coupling": coupling,
        "cos_eval": misalignment(model, x, targets, cfg.grad_of, "eval"),
        "cos_n": n,
    }
