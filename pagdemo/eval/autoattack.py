"""AutoAttack (Croce & Hein, ICML 2020), standard version: APGD-CE, APGD-T, FAB-T, Square, in sequence.

Each attack runs only on the points that every earlier attack left standing, and a point
counts as broken only if the returned image is misclassified *and* lies in the eps-ball and
in [0, 1] (checked here, so no attack's bug can make a model look less robust than it is).

Two backends run the same loop with the same settings:
- `pyautoattack` (the default, a requirement): the authors' reference code, packaged (logging and
  a resumable state file added); the faithful choice, also for l2 numbers.
- `torchattacks` (a requirement, for the cross-check): its components, configured as the authors' code.
  `torchattacks.AutoAttack(version="standard")` itself runs APGD and FAB with 10 iterations
  and Square with a rescaled p-schedule; the reference runs 100 iterations and no rescaling,
  so we build the four attacks ourselves. Cross-checked against the reference: APGD-CE, APGD-T,
  FAB-T and linf Square leave exactly the same images standing; l2 Square does not (torchattacks
  3.5.1 takes the norm of the new windows over all channels, the reference per channel) and was
  weaker (79% vs 71% robust on 48 images of a tiny CNN).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import check_attack_args, eval_mode
from pagdemo.eval.accuracy import correct, fraction, percent_text
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.eval.subset import (
    SubsetConfig,
    evaluation_record,
    keep_records,
    load_subject,
)
from pagdemo.models import class_count
from pagdemo.options import flag
from pagdemo.threat import NORMS, eval_step

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in the reference's order


@dataclass(frozen=True)
class AAVersion:
    steps: int  # iterations of APGD-CE, APGD-T (per target class) and FAB-T (per target class)
    n_queries: int  # Square attack's query budget


# "standard" is the reference's; "lite" is a cheaper variant for tests and quick looks, never a reported number.
VERSIONS = {"standard": AAVersion(steps=100, n_queries=5000), "lite": AAVersion(steps=20, n_queries=500)}
_TORCH_NORM = {"linf": "Linf", "l2": "L2"}
_TOL = 1e-5  # float slack when checking that an adversarial image is inside the ball and in [0, 1]


def _torchattacks(
    model: nn.Module, norm: str, eps: float, v: AAVersion, n_classes: int, seed: int
) -> dict[str, Callable]:
    """The four attacks from torchattacks with the reference's settings (Square: no p-schedule rescaling)."""
    import torchattacks as ta

    n, c = (
        _TORCH_NORM[norm],
        min(9, n_classes - 1) + 1,
    )  # torchattacks targets c - 1 classes: 9, as the reference
    return {
        "apgd-ce": ta.APGD(
            model, norm=n, eps=eps, steps=v.steps, n_restarts=1, loss="ce", seed=seed, rho=0.75
        ),
        "apgd-t": ta.APGDT(
            model, norm=n, eps=eps, steps=v.steps, n_restarts=1, n_classes=c, seed=seed, rho=0.75
        ),
        "fab-t": ta.FAB(
            model, norm=n, eps=eps, steps=v.steps, n_restarts=1, multi_targeted=True, n_classes=c, seed=seed
        ),
        "square": ta.Square(
            model,
            norm=n,
            eps=eps,
            n_queries=v.n_queries,
            n_restarts=1,
            p_init=0.8,
            resc_schedule=False,
            seed=seed,
        ),
    }


def _pyautoattack(
    model: nn.Module, norm: str, eps: float, v: AAVersion, n_classes: int, seed: int
) -> dict[str, Callable]:
    """The reference's own attack objects, set up by its `version="standard"`, iterations set from `v`."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ValueError("backend 'pyautoattack' needs `pip install pyautoattack`") from None
    device = next(model.parameters()).device
    aa = AutoAttack(model, norm=_TORCH_NORM[norm], eps=eps, version="standard", seed=seed, device=device)
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = v.steps
    aa.square.n_queries = v.n_queries
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = min(9, n_classes - 1)
    aa.fab.targeted = True  # its FAB object serves only FAB-T here
    return {
        "apgd-ce": aa.apgd.perturb,
        "apgd-t": aa.apgd_targeted.perturb,
        "fab-t": aa.fab.perturb,
        "square": aa.square.perturb,
    }


BACKENDS: dict[str, Callable[..., dict[str, Callable]]] = {
    "torchattacks": _torchattacks,
    "pyautoattack": _pyautoattack,
}


def in_threat_model(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Per sample: is x_adv a legal attack (inside the eps-ball around x, pixels in [0, 1])?"""
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    in_box = (x_adv.flatten(1).amin(1) >= -_TOL) & (x_adv.flatten(1).amax(1) <= 1 + _TOL)
    return (size <= eps * (1 + _TOL) + _TOL) & in_box


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    version: str = "standard",
    backend: str = "pyautoattack",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    on_attack: Callable[[dict[str, float]], None] | None = None,
) -> tuple[float, float, dict[str, float]]:
    """(clean accuracy, AutoAttack robust accuracy, robust accuracy after each attack) over (x, y) in [0, 1].

    `on_attack` gets the breakdown so far after each attack, so an hour-long run that is cut off
    keeps an upper bound on its robust accuracy.

    The breakdown also holds "rejected": adversarial images an attack returned outside the threat
    model, which are not counted as successes (0 for a correct implementation).

    Raises:
        ValueError: unknown norm, version or backend; eps < 0.
    """
    check_attack_args(norm, eps, 1)
    if version not in VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r}; choose one of {sorted(VERSIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown AutoAttack backend {backend!r}; choose one of {sorted(BACKENDS)}")
    device = torch.device(device)
    model = model.to(device)
    with eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        attacks = BACKENDS[backend](model, norm, eps, VERSIONS[version], class_count(model), seed)
        robust = correct(model, x, y, batch_size, device)
        breakdown, rejected = {"clean": fraction(robust)}, 0
        bar = tqdm(ATTACKS, desc=f"autoattack {norm}", disable=not progress, leave=False)
        for name in bar:
            rejected += _run_one(attacks[name], model, x, y, robust, norm, eps, batch_size, device)
            breakdown[name] = fraction(robust)
            bar.set_postfix_str(
                f"robust after {name}: {100 * breakdown[name]:.1f}%"
            )  # a long run shows its progress
            if on_attack is not None:
                on_attack(dict(breakdown))
    breakdown["rejected"] = rejected
    return breakdown["clean"], breakdown[ATTACKS[-1]], breakdown


def _run_one(
    attack: Callable,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    robust: torch.Tensor,
    norm: str,
    eps: float,
    batch_size: int,
    device: torch.device,
) -> int:
    """Attack the points still standing, in place on `robust`; returns how many results were illegal."""
    idx, rejected = robust.nonzero().squeeze(1), 0
    for i in range(0, len(idx), batch_size):
        b = idx[i : i + batch_size]
        xb, yb = x[b].to(device), y[b].to(device)
        x_adv = attack(xb, yb).detach()
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != yb
        legal = in_threat_model(x_adv, xb, norm, eps)
        rejected += int((wrong & ~legal).sum())
        robust[b[(wrong & legal).cpu()]] = False
    return rejected


@dataclass(frozen=True)
class AutoAttackConfig(SubsetConfig):
    """`pagdemo eval --attack autoattack`: the standard AutoAttack, and PGD-20 on the same fixed subset."""

    norm: str = flag("linf", "threat model", choices=NORMS)
    limit: int | None = flag(
        1000, "a fixed, class-balanced test subset, the same for every model (default 1000)", read="count"
    )
    version: str = flag(
        "standard",
        "standard: 100 iterations, 5000 Square queries (report this); lite: a quick look",
        choices=tuple(VERSIONS),
        name="--aa-version",
    )
    backend: str = flag(
        "pyautoattack",
        "pyautoattack: the AutoAttack authors' code (default); torchattacks: same loop, weaker l2 Square",
        choices=tuple(BACKENDS),
        name="--aa-backend",
    )


def run_autoattack_eval(
    cfg: AutoAttackConfig, progress: bool = True, on_attack: Callable[[dict[str, float]], None] | None = None
) -> dict:
    """AutoAttack and PGD-20 on the same fixed subset; both records go to metrics.json."""
    check_attack_args(cfg.norm, cfg.eps or 0.0, 1)  # fail before loading anything
    subject = load_subject(cfg)
    model, x, y, device = subject.model, subject.data.inputs(), subject.data.labels, subject.device
    eps = cfg.radius(subject.data.name, model.image_size)
    start = time.perf_counter()
    clean, rob, breakdown = autoattack_accuracy(
        model,
        x,
        y,
        cfg.norm,
        eps,
        cfg.version,
        cfg.backend,
        cfg.batch_size,
        device,
        cfg.seed,
        progress,
        on_attack,
    )
    seconds = time.perf_counter() - start
    _, pgd20 = robust_accuracy(
        model,
        x,
        y,
        cfg.norm,
        eps,
        steps=20,
        step_size=eval_step(eps, 20),
        batch_size=cfg.batch_size,
        device=device,
        seed=cfg.seed,
        progress=progress,
    )
    pgd_record = evaluation_record(
        cfg,
        subject,
        attack="pgd-20",
        eps=eps,
        steps=20,
        step_size=eval_step(eps, 20),
        restarts=1,
        random_start=True,
        clean_acc=clean,
        robust_acc=pgd20,
    )
    record = evaluation_record(
        cfg,
        subject,
        attack=f"autoattack-{cfg.version}",
        eps=eps,
        steps=VERSIONS[cfg.version].steps,
        step_size=None,
        restarts=1,
        random_start=True,
        clean_acc=clean,
        robust_acc=rob,
        per_attack=breakdown,
        pgd20_robust_acc=pgd20,
        backend=_backend_version(cfg.backend),
        seconds=round(seconds, 1),
    )
    keep_records(cfg, pgd_record, record)
    return record


def _backend_version(backend: str) -> str:
    """Name and version of the attack library, so a number can be traced to the code that made it."""
    from importlib.metadata import version

    return f"{backend} {version(backend)}"


def format_autoattack(record: dict) -> str:
    """Lines a person reads in a terminal: the headline, then what each attack left standing."""
    after, pc = record["per_attack"], lambda v: percent_text(v, 2)  # noqa: E731
    text = (
        f"clean {pc(record['clean_acc'])} | {record['attack']} {record['norm']} eps={record['eps']:.4g}: "
        f"{pc(record['robust_acc'])} | PGD-20 on the same images: {pc(record['pgd20_robust_acc'])} | "
        f"n={record['n']} ({record['data']})\n  after each attack: "
        + " -> ".join(f"{k} {pc(after[k])}" for k in ATTACKS)
    )
    return text + (
        f"\n  rejected {after['rejected']} illegal adversarial images" if after["rejected"] else ""
    )
