"""Clean and PGD robust accuracy (the paper's evaluation: PGD-20, random start, step 2*eps/20).

`robust_accuracy` is the batched core that the CLI, the app's eps curve, training's monitor and the audit
share; `run_eval` adds the checkpoint, the data and the record appended to metrics.json
(`pagdemo.eval.subset`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import check_attack_args, eval_mode, pgd
from pagdemo.eval.accuracy import correct, fraction
from pagdemo.eval.subset import SubsetConfig, evaluation_record, keep_records, load_subject
from pagdemo.options import flag
from pagdemo.threat import NORMS, eval_step


@dataclass(frozen=True)
class EvalConfig(SubsetConfig):
    """`pagdemo eval`: PGD-k with a random start, as the paper evaluates (k=20, step 2*eps/k)."""

    norm: str | None = flag("linf", "threat model (none: clean accuracy only)", choices=NORMS, none="none")
    steps: int = flag(20, "PGD steps", read="count")
    step_size: float | None = flag(None, "default 2*eps/steps, as in the paper")
    restarts: int = flag(1, "a sample counts as robust only if it survives every restart", read="count")
    random_start: bool = flag(True, "start each attack at a random point of the ball")


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str | None,
    eps: float,
    *,
    steps: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> tuple[float, float | None]:
    """(clean accuracy, robust accuracy) over (x, y) in [0, 1]; robust is None when norm is None.

    A sample counts as robust only if it survives every restart; only what still stands is attacked again.
    """
    if norm is not None:
        check_attack_args(norm, eps, steps)
    device = torch.device(device)
    with eval_mode(model.to(device)):
        ok = correct(model, x, y, batch_size, device)
        clean = fraction(ok)
        if norm is None:
            return clean, None
        gen = torch.Generator(device=device).manual_seed(seed)
        attack = dict(norm=norm, steps=steps, step_size=step_size, random_init=random_start, generator=gen)
        for i in tqdm(range(0, len(x), batch_size), desc=f"eval {norm}", disable=not progress, leave=False):
            b = slice(i, i + batch_size)
            xb, yb, okb = x[b].to(device), y[b].to(device), ok[b]  # okb: a view, written through to ok
            for _ in range(restarts):
                idx = okb.nonzero().squeeze(1).to(device)
                if len(idx) == 0:
                    break
                x_adv = pgd(model, xb[idx], yb[idx], eps, **attack)
                with torch.no_grad():
                    okb[idx.cpu()] = (model(x_adv).argmax(1) == yb[idx]).cpu()
    return clean, fraction(ok)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluate a checkpoint on its test set and record the result with its exact settings."""
    subject = load_subject(cfg)
    model, ds = subject.model, subject.data
    attacked = cfg.norm is not None
    eps = cfg.radius(ds.name, model.image_size) if attacked else 0.0
    step_size = eval_step(eps, cfg.steps) if cfg.step_size is None and attacked else cfg.step_size
    kw = dict(batch_size=cfg.batch_size, device=subject.device, seed=cfg.seed, progress=progress)
    settings = dict(
        steps=cfg.steps, step_size=step_size, restarts=cfg.restarts, random_start=cfg.random_start
    )
    clean, rob = robust_accuracy(model, ds.inputs(), ds.labels, cfg.norm, eps, **settings, **kw)
    record = evaluation_record(
        cfg,
        subject,
        attack=f"pgd-{cfg.steps}" if attacked else "none",
        eps=eps if attacked else None,
        steps=cfg.steps if attacked else None,
        step_size=step_size,
        restarts=cfg.restarts if attacked else None,
        random_start=cfg.random_start if attacked else None,
        clean_acc=clean,
        robust_acc=rob,
    )
    keep_records(cfg, record)
    return record


def accuracy_vs_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    steps: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> Iterator[tuple[float, float]]:
    """Yield (eps, robust accuracy) for each radius (eps 0: clean); PGD: random start, step 2*eps/steps."""
    device = next(model.parameters()).device
    kw = dict(steps=steps, batch_size=batch_size, device=device, seed=seed, progress=False)
    for eps in eps_list:
        clean, robust = robust_accuracy(model, x, y, None if eps == 0 else norm, eps, **kw)
        yield eps, clean if robust is None else robust


def format_record(record: dict) -> str:
    """One line a person reads in a terminal."""
    s = f"clean {100 * record['clean_acc']:.2f}%"
    if record["robust_acc"] is not None:
        s += f" | PGD-{record['steps']} {record['norm']} eps={record['eps']:.4g}: "
        s += f"{100 * record['robust_acc']:.2f}%"
    return s + f" | n={record['n']} ({record['data']})"
