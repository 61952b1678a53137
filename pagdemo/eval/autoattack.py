"""AutoAttack (Croce & Hein, ICML 2020), standard version: APGD-CE, APGD-T, FAB-T, Square, in sequence.

Each attack runs only on the points every earlier attack left standing; a point counts as broken only if the
returned image is misclassified *and* lies in the eps-ball and in [0, 1] (checked here, so no attack's bug can
make a model look less robust than it is). Backends: the authors' `pyautoattack` (the default) and, as a
cross-check, torchattacks' attacks set up as the reference's; they agree but for torchattacks' weaker l2
Square (79% vs 71% robust on 48 images of a tiny CNN, torchattacks 3.5.1; docs/robustness.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version

import torch
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import check_attack_args, eval_mode
from pagdemo.eval.accuracy import correct, fraction, percent_text
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.eval.subset import SubsetConfig, evaluation_record, keep_records, load_subject
from pagdemo.models import class_count
from pagdemo.options import flag
from pagdemo.threat import eval_step

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version, in the reference's order


@dataclass(frozen=True)
class AAVersion:
    """How long each attack of a version runs."""

    steps: int  # iterations of APGD-CE, APGD-T (per target class) and FAB-T (per target class)
    n_queries: int  # Square attack's query budget


# "standard" is the reference's; "lite" a cheaper variant for tests and quick looks, never a reported number
VERSIONS = {"standard": AAVersion(steps=100, n_queries=5000), "lite": AAVersion(steps=20, n_queries=500)}
_TORCH_NORM = {"linf": "Linf", "l2": "L2"}
_TOL = 1e-5  # float slack when checking that an adversarial image is inside the ball and in [0, 1]


def _torchattacks(model: nn.Module, norm: str, eps: float, v: AAVersion, targets: int, seed: int) -> dict:
    """torchattacks' four attacks with the reference's settings (its own AutoAttack runs 10 iterations)."""
    import torchattacks as ta

    common = dict(norm=_TORCH_NORM[norm], eps=eps, n_restarts=1, seed=seed)
    c = targets + 1  # torchattacks targets n_classes - 1 classes
    return {
        "apgd-ce": ta.APGD(model, steps=v.steps, loss="ce", rho=0.75, **common),
        "apgd-t": ta.APGDT(model, steps=v.steps, n_classes=c, rho=0.75, **common),
        "fab-t": ta.FAB(model, steps=v.steps, multi_targeted=True, n_classes=c, **common),
        "square": ta.Square(model, n_queries=v.n_queries, p_init=0.8, resc_schedule=False, **common),
    }


def _pyautoattack(model: nn.Module, norm: str, eps: float, v: AAVersion, targets: int, seed: int) -> dict:
    """The reference's own attack objects, set up by its `version="standard"`, iterations set from `v`."""
    from pyautoattack import AutoAttack

    device = next(model.parameters()).device
    aa = AutoAttack(model, norm=_TORCH_NORM[norm], eps=eps, version="standard", seed=seed, device=device)
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = v.steps
    aa.square.n_queries = v.n_queries
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = targets
    aa.fab.targeted = True  # its FAB object serves only FAB-T here
    return dict(zip(ATTACKS, (aa.apgd.perturb, aa.apgd_targeted.perturb, aa.fab.perturb, aa.square.perturb)))


BACKENDS: dict[str, Callable[..., dict]] = {"torchattacks": _torchattacks, "pyautoattack": _pyautoattack}


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

    `on_attack` gets the breakdown after each attack, so an hour-long run cut off keeps an upper bound. The
    breakdown's "rejected" counts adversarial images returned outside the threat model (0 for correct code).

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
        targets = min(9, class_count(model) - 1)  # the reference's 9, or every other class of a smaller model
        attacks = BACKENDS[backend](model, norm, eps, VERSIONS[version], targets, seed)
        robust = correct(model, x, y, batch_size, device)
        breakdown, rejected = {"clean": fraction(robust)}, 0
        bar = tqdm(ATTACKS, desc=f"autoattack {norm}", disable=not progress, leave=False)
        for name in bar:
            idx = robust.nonzero().squeeze(1)  # only the points still standing
            for i in range(0, len(idx), batch_size):
                b = idx[i : i + batch_size]
                xb, yb = x[b].to(device), y[b].to(device)
                x_adv = attacks[name](xb, yb).detach()
                wrong = ~correct(model, x_adv, yb, batch_size, device)
                legal = in_threat_model(x_adv, xb, norm, eps).cpu()
                rejected += int((wrong & ~legal).sum())
                robust[b[wrong & legal]] = False
            breakdown[name] = fraction(robust)
            bar.set_postfix_str(f"robust after {name}: {100 * breakdown[name]:.1f}%")
            if on_attack is not None:
                on_attack(dict(breakdown))
    breakdown["rejected"] = rejected
    return breakdown["clean"], breakdown[ATTACKS[-1]], breakdown


VERSION_HELP = "standard: 100 iterations, 5000 Square queries (report this); lite: a quick look"
BACKEND_HELP = "pyautoattack: the AutoAttack authors' code; torchattacks: same loop, weaker l2 Square"


@dataclass(frozen=True)
class AutoAttackConfig(SubsetConfig):
    """`pagdemo eval --attack autoattack`: the standard AutoAttack, and PGD-20 on the same fixed subset."""

    limit: int | None = flag(1000, "a class-balanced test subset, the same for every model", read="count")
    version: str = flag("standard", VERSION_HELP, choices=tuple(VERSIONS), name="--aa-version")
    backend: str = flag("pyautoattack", BACKEND_HELP, choices=tuple(BACKENDS), name="--aa-backend")


def run_autoattack_eval(
    cfg: AutoAttackConfig, progress: bool = True, on_attack: Callable[[dict[str, float]], None] | None = None
) -> dict:
    """AutoAttack and PGD-20 on the same fixed subset; both records go to metrics.json."""
    check_attack_args(cfg.norm, cfg.eps or 0.0, 1)  # fail before loading anything
    subject = load_subject(cfg)
    model, x, y = subject.model, subject.data.inputs(), subject.data.labels
    eps = cfg.radius(subject.data.name, model.image_size)
    kw = dict(batch_size=cfg.batch_size, device=subject.device, seed=cfg.seed, progress=progress)
    start = time.perf_counter()
    clean, rob, breakdown = autoattack_accuracy(
        model, x, y, cfg.norm, eps, cfg.version, cfg.backend, on_attack=on_attack, **kw
    )
    seconds = round(time.perf_counter() - start, 1)
    step = eval_step(eps, 20)  # the paper's PGD-20: random start, step 2 * eps / 20
    _, pgd20 = robust_accuracy(model, x, y, cfg.norm, eps, steps=20, step_size=step, **kw)
    same = dict(restarts=1, random_start=True, clean_acc=clean)
    pgd_record = evaluation_record(
        cfg, subject, attack="pgd-20", eps=eps, steps=20, step_size=step, **same, robust_acc=pgd20
    )
    # the attack library's name and version trace a number to the code that made it
    backend = f"{cfg.backend} {package_version(cfg.backend)}"
    aa = dict(robust_acc=rob, per_attack=breakdown, pgd20_robust_acc=pgd20, backend=backend, seconds=seconds)
    steps = VERSIONS[cfg.version].steps
    record = evaluation_record(
        cfg, subject, attack=f"autoattack-{cfg.version}", eps=eps, steps=steps, step_size=None, **same, **aa
    )
    keep_records(cfg, pgd_record, record)
    return record


def format_autoattack(record: dict) -> str:
    """Lines a person reads in a terminal: the headline, then what each attack left standing."""
    after, pc = record["per_attack"], lambda v: percent_text(v, 2)  # noqa: E731
    text = (
        f"clean {pc(record['clean_acc'])} | {record['attack']} {record['norm']} eps={record['eps']:.4g}: "
        f"{pc(record['robust_acc'])} | PGD-20 on the same images: {pc(record['pgd20_robust_acc'])} | "
        f"n={record['n']} ({record['data']})\n  after each attack: "
        + " -> ".join(f"{k} {pc(after[k])}" for k in ATTACKS)
    )
    rejected = f"\n  rejected {after['rejected']} illegal adversarial images" if after["rejected"] else ""
    return text + rejected
