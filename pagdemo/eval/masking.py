"""The gradient-masking checks: is a model's PGD robustness real? (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", Sec. 5.) A gradient penalty can make a model look robust to PGD only because its
gradients stop pointing anywhere useful. Each check compares attacks that agree on a model whose robustness is
real, and fails when the gap exceeds its tolerance (`Thresholds`; docs/robustness.md lists the checks).
`pagdemo.eval.audit` runs them on a checkpoint, adds AutoAttack and keeps the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from pagdemo.attacks import pgd
from pagdemo.eval.accuracy import correct, fraction, percent_text
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.eval.pagscore import format_pag_score
from pagdemo.threat import strong_step

NO_MASKING = "no sign of gradient masking"
# accuracies came from float32 means: 0.105 arrived as 0.10499999672, a gap of exactly 5 points as 5.0000003
TOL = 1e-6


def within(value: float, limit: float) -> bool:
    """value <= limit, for accuracies and their gaps: the one place that forgives float32 rounding."""
    return value <= limit + TOL


@dataclass(frozen=True)
class Thresholds:
    """Tolerances, in accuracy points (0.01 = 1 percentage point), for checks that share the same images."""

    zero_acc: float = 0.01  # at 16x eps, PGD must leave at most 1% of the images correctly classified
    monotone: float = 0.02  # accuracy may rise by at most 2 points from one eps to the next (attack noise)
    more_steps: float = 0.03  # PGD-100 x restarts may be at most 3 points below PGD-20
    random_start: float = 0.05  # PGD-20 from the clean point may be at most 5 points above a random start's
    transfer: float = 0.01  # black-box accuracy may be at most 1 point below white-box accuracy
    autoattack: float = 0.05  # AutoAttack may be at most 5 points below PGD-20 (adversarial training: ~1-4)


def check_result(passed: bool, reason: str, **evidence) -> dict:
    """One check's result: evidence numbers, and the reason only when it failed."""
    return {"passed": bool(passed), "reason": None if passed else reason, **evidence}


def eps_sweep(attack: Callable, eps: float, multipliers: tuple[float, ...], th: Thresholds) -> dict:
    """PGD-20 accuracy at growing eps until it reaches ~0; fails if it never does or rises with eps."""
    radii, accs = [], []
    for m in multipliers:
        radii.append(m * eps)
        accs.append(attack(m * eps, steps=20)[1])  # step 2 * eps / 20
        if within(accs[-1], th.zero_acc):
            break
    rise = max([b - a for a, b in zip(accs, accs[1:])], default=0.0)
    passed, reason = within(rise, th.monotone), f"accuracy rises by {100 * rise:.1f} points as eps grows"
    if not within(accs[-1], th.zero_acc):
        passed = False
        reason = (
            f"accuracy is still {100 * accs[-1]:.1f}% at eps={radii[-1]:.4g} "
            f"({multipliers[-1]:g}x): a large enough attack must reach 0%"
        )
    return check_result(passed, reason, eps=radii, robust_acc=accs)


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    vanilla_model: nn.Module | None = None,
    multipliers: tuple[float, ...] = (0.25, 0.5, 1, 2, 4, 8, 16),
    restarts: int = 5,
    th: Thresholds = Thresholds(),
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the masking checks on (x, y) in [0, 1]; returns the evidence, `passed` and a one-line `verdict`.

    Raises:
        ValueError: unknown norm or eps < 0.
    """
    device = torch.device(device)
    kw = dict(batch_size=batch_size, device=device, seed=seed, progress=progress)
    attack = partial(robust_accuracy, model, x, y, norm, **kw)  # (clean, robust accuracy) at a radius
    # the paper's PGD-20 (step 2 * eps / 20) from a random start and from the clean image; PGD-100, restarts
    clean, pgd20 = attack(eps, steps=20)
    pgd20_fixed = attack(eps, steps=20, random_start=False)[1]
    pgd100 = attack(eps, steps=100, step_size=strong_step(eps, 100), restarts=restarts)[1]
    checks = {
        "eps_sweep": eps_sweep(attack, eps, multipliers, th),
        "more_steps": check_result(
            within(pgd20 - pgd100, th.more_steps),
            f"PGD-100 x{restarts} restarts is {100 * (pgd20 - pgd100):.1f} points below PGD-20",
            pgd20=pgd20,
            pgd100_restarts=pgd100,
            restarts=restarts,
        ),
        "random_start": check_result(
            within(pgd20_fixed - pgd20, th.random_start),
            f"PGD-20 from the clean image is {100 * (pgd20_fixed - pgd20):.1f} points weaker "
            "than from a random start: the gradient at the data point misleads",
            pgd20_random_start=pgd20,
            pgd20_clean_start=pgd20_fixed,
        ),
        "transfer": transfer_check(
            model, vanilla_model, x, y, norm, eps, min(pgd20, pgd100), th.transfer, batch_size, device, seed
        ),
    }
    report = dict(norm=norm, eps=eps, n=len(x), clean_acc=clean, checks=checks, thresholds=asdict(th))
    return {**report, **verdict(checks)}


def transfer_check(
    model: nn.Module,
    vanilla: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    white: float,
    limit: float,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> dict:
    """PGD-100 made on the vanilla model (a black box to `model`) must not beat the white-box accuracy."""
    if vanilla is None:
        return {"passed": None, "reason": "skipped: no vanilla model given"}
    vanilla, gen = vanilla.to(device), torch.Generator(device=device).manual_seed(seed)
    attack = dict(norm=norm, steps=100, step_size=strong_step(eps, 100), generator=gen)
    batches = [slice(i, i + batch_size) for i in range(0, len(x), batch_size)]
    x_src = torch.cat([pgd(vanilla, x[b].to(device), y[b].to(device), eps, **attack).cpu() for b in batches])
    black = fraction(correct(model, x, y, batch_size, device) & correct(model, x_src, y, batch_size, device))
    return check_result(
        within(white - black, limit),
        f"black-box transfer from the vanilla model ({100 * black:.1f}%) beats the "
        f"white-box attack ({100 * white:.1f}%)",
        black_box=black,
        white_box=white,
        source_robust_acc=fraction(correct(vanilla, x_src, y, batch_size, device)),
    )


def verdict(checks: dict) -> dict:
    """'no sign of gradient masking', or 'possible gradient masking: <every failed check's reason>'."""
    reasons = [c["reason"] for c in checks.values() if c["passed"] is False]
    text = "possible gradient masking: " + "; ".join(reasons) if reasons else NO_MASKING
    return {"passed": not reasons, "verdict": text}


def format_audit(report: dict) -> str:
    """The verdict first, then one line of evidence per check, for the terminal."""
    c, pc = report["checks"], percent_text
    mark = lambda k: {True: "ok  ", False: "FAIL", None: "skip"}[c[k]["passed"]]  # noqa: E731
    sweep = ", ".join(
        f"{e:.3g}: {pc(a)}" for e, a in zip(c["eps_sweep"]["eps"], c["eps_sweep"]["robust_acc"])
    )
    lines = [
        f"verdict: {report['verdict']}",
        f"  {report['norm']} eps={report['eps']:.4g}, n={report['n']}, clean {pc(report['clean_acc'])}",
        f"  [{mark('eps_sweep')}] eps sweep (PGD-20): {sweep}",
        f"  [{mark('more_steps')}] PGD-20 {pc(c['more_steps']['pgd20'])} vs PGD-100 "
        f"x{c['more_steps']['restarts']} restarts {pc(c['more_steps']['pgd100_restarts'])}",
        f"  [{mark('random_start')}] PGD-20 from the clean image "
        f"{pc(c['random_start']['pgd20_clean_start'])} vs from a random start "
        f"{pc(c['random_start']['pgd20_random_start'])}",
    ]
    t = c["transfer"]
    if t["passed"] is None:
        transfer = t["reason"]
    else:
        transfer = f"transfer from vanilla (black box) {pc(t['black_box'])} vs white box {pc(t['white_box'])}"
    lines.append(f"  [{mark('transfer')}] {transfer}")
    if "autoattack" in c:
        lines.append(
            f"  [{mark('autoattack')}] AutoAttack {pc(c['autoattack']['autoattack'])} vs PGD-20 "
            f"{pc(c['autoattack']['pgd20'])}"
        )
    if "pag_score" in report:
        lines.append("  " + format_pag_score(report["pag_score"]))
    return "\n".join(lines)
