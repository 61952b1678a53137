"""Gradient-masking audit: is a model's PGD robustness real? (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", Sec. 5: checks any evaluation of a defense should pass.)

A model trained with a gradient penalty can look robust to PGD only because its gradients stop
pointing anywhere useful. Each check below compares attacks that would agree on a model whose
robustness is real; a check fails when the gap exceeds a documented tolerance (`Thresholds`).
- eps sweep: accuracy must fall (roughly monotonically) to ~0% as eps grows 16-fold.
- more iterations: PGD-100 with restarts must not be much stronger than PGD-20.
- random start: PGD-20 started at the clean point must not be much weaker than from a random start.
- transfer: adversarial images made on the vanilla model (black box) must not do better than
  the white-box attack.
- AutoAttack (optional): the parameter-free ensemble must not be much stronger than PGD-20.
The PAG score (`pagdemo.eval.pagscore`) is reported beside the verdict when a judge is given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pagdemo.attacks import check_attack_args, eval_mode, pgd
from pagdemo.eval.autoattack import AutoAttackConfig, run_autoattack_eval
from pagdemo.records.checkpoints import append_metrics, load_checkpoint
from pagdemo.data.datasets import load_dataset
from pagdemo.eval.evaluate import load_model_and_testset, resolve_device, robust_accuracy, test_data_for
from pagdemo.records.files import read_json, write_json
from pagdemo.eval.pagscore import check_judge, format_pag_score, pag_score
from pagdemo.records.provenance import now
from pagdemo.threat import eval_eps, eval_step, picture_eps, strong_step

NO_MASKING = "no sign of gradient masking"
TOL = 1e-6  # accuracies come from float32 means: 0.105 arrives as 0.10499999672, so a gap of exactly 5 points read as 5.0000003


def _within(value: float, limit: float) -> bool:
    """value <= limit, for accuracies and their gaps: the one place that forgives float32 rounding."""
    return value <= limit + TOL


@dataclass(frozen=True)
class Thresholds:
    """Tolerances, in accuracy points (0.01 = 1 percentage point), for checks that share the same images."""

    zero_acc: float = 0.01  # at 16x eps, PGD must leave at most 1% of the images correctly classified
    monotone: float = 0.02  # accuracy may rise by at most 2 points from one eps to the next (attack noise)
    more_steps: float = 0.03  # PGD-100 x restarts may be at most 3 points below PGD-20
    random_start: float = 0.05  # PGD-20 from the clean point may be at most 5 points above PGD-20 from a random start
    transfer: float = 0.01  # black-box accuracy may be at most 1 point below white-box accuracy
    autoattack: float = 0.05  # AutoAttack may be at most 5 points below PGD-20 (~1-4 below for adversarial training)


def _batched_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
                 step_size: float, batch_size: int, device: torch.device, seed: int) -> torch.Tensor:
    """Adversarial images for every input (on the CPU), crafted on `model`: the transfer attack's source."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = [pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps, norm=norm, steps=steps,
               step_size=step_size, generator=gen).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Per-image correctness (CPU bools), in eval mode."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]
                          for i in range(0, len(x), batch_size)])


def _check(passed: bool, reason: str, **evidence) -> dict:
    """One check's result: evidence numbers, and the reason only when it failed."""
    return {"passed": bool(passed), "reason": None if passed else reason, **evidence}


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, multipliers: tuple[float, ...],
              th: Thresholds, **kw) -> dict:
    """PGD-20 accuracy at growing eps, stopping once it reaches ~0; fails if it never does or rises with eps."""
    radii, accs = [], []
    for m in multipliers:
        _, acc = robust_accuracy(model, x, y, norm, m * eps, 20, eval_step(m * eps, 20), **kw)
        radii.append(m * eps)
        accs.append(acc)
        if _within(acc, th.zero_acc):
            break
    rise = max([b - a for a, b in zip(accs, accs[1:])], default=0.0)
    if not _within(accs[-1], th.zero_acc):
        return _check(False, f"accuracy is still {100 * accs[-1]:.1f}% at eps={radii[-1]:.4g} "
                             f"({multipliers[-1]:g}x): a large enough attack must reach 0%", eps=radii, robust_acc=accs)
    return _check(_within(rise, th.monotone), f"accuracy rises by {100 * rise:.1f} points as eps grows",
                  eps=radii, robust_acc=accs)


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
          vanilla_model: nn.Module | None = None, multipliers: tuple[float, ...] = (0.25, 0.5, 1, 2, 4, 8, 16),
          restarts: int = 5, th: Thresholds = Thresholds(), batch_size: int = 256, device: torch.device | str = "cpu",
          seed: int = 0, progress: bool = True) -> dict:
    """Run the masking checks on (x, y) in [0, 1]; returns the evidence, `passed` and a one-line `verdict`.

    Raises:
        ValueError: unknown norm or eps < 0.
    """
    check_attack_args(norm, eps, 1)
    device = torch.device(device)
    kw = dict(batch_size=batch_size, device=device, seed=seed, progress=progress)
    clean, pgd20 = robust_accuracy(model, x, y, norm, eps, 20, eval_step(eps, 20), **kw)
    _, pgd20_fixed = robust_accuracy(model, x, y, norm, eps, 20, eval_step(eps, 20), random_start=False, **kw)
    _, pgd100 = robust_accuracy(model, x, y, norm, eps, 100, strong_step(eps, 100), restarts=restarts, **kw)
    checks = {
        "eps_sweep": eps_sweep(model, x, y, norm, eps, multipliers, th, **kw),
        "more_steps": _check(_within(pgd20 - pgd100, th.more_steps),
                             f"PGD-100 x{restarts} restarts is {100 * (pgd20 - pgd100):.1f} points below PGD-20",
                             pgd20=pgd20, pgd100_restarts=pgd100, restarts=restarts),
        "random_start": _check(_within(pgd20_fixed - pgd20, th.random_start),
                               f"PGD-20 from the clean image is {100 * (pgd20_fixed - pgd20):.1f} points weaker "
                               "than from a random start: the gradient at the data point misleads",
                               pgd20_random_start=pgd20, pgd20_clean_start=pgd20_fixed),
    }
    white = min(pgd20, pgd100)
    if vanilla_model is None:
        checks["transfer"] = {"passed": None, "reason": "skipped: no vanilla model given"}
    else:
        vanilla_model = vanilla_model.to(device)
        x_src = _batched_pgd(vanilla_model, x, y, norm, eps, 100, strong_step(eps, 100), batch_size, device, seed)
        survives = _correct(model, x, y, batch_size, device) & _correct(model, x_src, y, batch_size, device)
        black = survives.float().mean().item()
        src = (_correct(vanilla_model, x_src, y, batch_size, device)).float().mean().item()
        checks["transfer"] = _check(_within(white - black, th.transfer),
                                    f"black-box transfer from the vanilla model ({100 * black:.1f}%) beats the "
                                    f"white-box attack ({100 * white:.1f}%)",
                                    black_box=black, white_box=white, source_robust_acc=src)
    return {"norm": norm, "eps": eps, "n": len(x), "clean_acc": clean, "checks": checks,
            "thresholds": asdict(th), **verdict(checks)}


def verdict(checks: dict) -> dict:
    """'no sign of gradient masking', or 'possible gradient masking: <every failed check's reason>'."""
    reasons = [c["reason"] for c in checks.values() if c["passed"] is False]
    return {"passed": not reasons,
            "verdict": "possible gradient masking: " + "; ".join(reasons) if reasons else NO_MASKING}


@dataclass(frozen=True)
class AuditConfig:
    checkpoint: str
    norm: str = "linf"
    eps: float | None = None  # radius in [0, 1] pixel units; None: the dataset's (pagdemo.threat)
    vanilla: str | None = None  # checkpoint of the vanilla model, source of the transfer attack
    judge: str | None = None  # robust checkpoint that judges the PAG score; never the model's own RIGD teacher
    autoattack: str | None = None  # AutoAttack version ("standard") to run and compare with PGD-20; None: skip
    autoattack_backend: str = "pyautoattack"  # the reference; "torchattacks" is weaker in l2 (see autoattack.py)
    limit: int | None = 1000  # the fixed class-balanced test subset shared with `eval --attack autoattack`
    pag_limit: int = 100  # test images for the PAG score (x 9 targets each)
    pag_eps: float | None = None  # L2 radius of the PAG score's attack; None: the picture's (4.0 at 32x32, x side/32)
    pag_steps: int = 100
    restarts: int = 5  # restarts of the PGD-100 check
    thresholds: Thresholds = field(default_factory=Thresholds)
    dataset: str | None = None  # None: the dataset the checkpoint was trained on
    data_dir: str | None = None
    on_bad_image: str = "skip"  # an image folder's unreadable test file: "skip" or "stop"
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    json: str | None = None  # also write the report here (it always goes to <checkpoint>/audit-<norm>.json)
    record: bool = True  # write audit-<norm>.json and append the summary to metrics.json
    resume: bool = False  # reuse audit-<norm>.json's finished checks (same settings) and run only what it lacks


def run_audit(cfg: AuditConfig, progress: bool = True) -> dict:
    """Load the checkpoint(s) and the subset, run every check, write the report, return it."""
    check_attack_args(cfg.norm, cfg.eps or 0.0, 1)
    device = resolve_device(cfg.device)
    model, ds = load_model_and_testset(cfg.checkpoint, device, cfg.dataset, cfg.data_dir, cfg.limit, cfg.seed,
                                       cfg.on_bad_image)
    run = getattr(model, "run", {})
    dataset, data_dir = test_data_for(run, cfg.dataset, cfg.data_dir)
    eps = eval_eps(cfg.norm, dataset, model.image_size) if cfg.eps is None else cfg.eps
    if cfg.judge:
        check_judge(cfg.checkpoint, run, cfg.judge)
    data = f"{dataset}/test ({ds.source})"
    previous = _resumable(cfg, eps, len(ds), data) if cfg.resume else None
    if previous is None:
        vanilla = load_checkpoint(cfg.vanilla, device) if cfg.vanilla else None
        report = audit(model, ds.float(), ds.labels, cfg.norm, eps, vanilla, restarts=cfg.restarts, th=cfg.thresholds,
                       batch_size=cfg.batch_size, device=device, seed=cfg.seed, progress=progress)
    else:
        report = {k: v for k, v in previous.items() if k not in ("date", "finished", "not_run_yet", "autoattack_so_far")}
        report.setdefault("resumed_from", previous.get("date"))  # the date of the checks, over any number of resumes
    run_aa = bool(cfg.autoattack) and "autoattack" not in report["checks"]
    run_pag = bool(cfg.judge) and report.get("pag_score", {}).get("judge") != str(cfg.judge)
    if previous is not None and previous.get("finished") and not (run_aa or run_pag):
        if cfg.json:
            write_json(Path(cfg.json), previous)
        return previous  # nothing to add: the record stays as it is
    report.update(data=data, limit=cfg.limit, subset_seed=cfg.seed, device=str(device), config=asdict(cfg),
                  vanilla=cfg.vanilla)  # a resumed audit's vanilla is the same: _resumable checks it
    pending = [name for name, todo in (("autoattack", run_aa), ("pag_score", run_pag)) if todo]
    earlier = {"autoattack_so_far": previous["autoattack_so_far"]} if previous and "autoattack_so_far" in previous else {}
    _save_partial(cfg, {**report, **earlier}, pending)  # a run cut short keeps what it (or the run it resumes) finished
    if run_aa:
        def so_far(after: dict[str, float]) -> None:  # a run cut off mid-AutoAttack keeps the attacks it finished
            _save_partial(cfg, {**report, "autoattack_so_far": after}, pending)

        report["checks"]["autoattack"] = _autoattack_check(cfg, eps, dataset, data_dir, device, progress, so_far)
        report.update(verdict(report["checks"]))
        _save_partial(cfg, report, pending[1:])
    if run_pag:
        sub = load_dataset(dataset, "test", data_dir=data_dir, limit=cfg.pag_limit, seed=cfg.seed,
                           image_size=model.image_size, on_bad_image=cfg.on_bad_image)
        report["pag_score"] = pag_score(model, load_checkpoint(cfg.judge, device), sub.float(), sub.labels,
                                        eps=cfg.pag_eps or picture_eps("l2", model.image_size), steps=cfg.pag_steps,
                                        batch_size=cfg.batch_size, device=device, progress=progress)
        report["pag_score"]["judge"] = str(cfg.judge)
    report.update(date=now(), finished=True)
    if cfg.record:
        write_json(Path(cfg.checkpoint) / f"audit-{cfg.norm}.json", report)
        append_metrics(cfg.checkpoint, _summary(report))
    if cfg.json:
        write_json(Path(cfg.json), report)
    return report


def _resumable(cfg: AuditConfig, eps: float, n: int, data: str) -> dict | None:
    """The earlier audit-<norm>.json, if any, checked to share this run's subset and settings: its checks stay valid.

    Raises:
        ValueError: the earlier audit used other settings, so its checks would not describe this run's.
    """
    path = Path(cfg.checkpoint) / f"audit-{cfg.norm}.json"
    previous = read_json(path)
    if previous is None:
        return None
    now_ = {"eps": eps, "n": n, "limit": cfg.limit, "subset_seed": cfg.seed, "data": data, "vanilla": cfg.vanilla,
            "restarts": cfg.restarts, "thresholds": asdict(cfg.thresholds)}
    was = {**{k: previous.get(k) for k in now_}, "restarts": previous["checks"]["more_steps"]["restarts"]}
    differ = [f"{k} {was[k]!r} (now {now_[k]!r})" for k in now_ if was[k] != now_[k]]
    if differ:
        raise ValueError(f"cannot resume {path}: it was run with other settings: {'; '.join(differ)}. "
                         "Run without --resume to redo the audit.")
    return previous


def _save_partial(cfg: AuditConfig, report: dict, pending: list[str]) -> None:
    """Write what is done so far to audit-<norm>.json, naming the parts still to run (metrics.json waits for the end)."""
    if cfg.record and pending:
        write_json(Path(cfg.checkpoint) / f"audit-{cfg.norm}.json",
                   {**report, "date": now(), "finished": False, "not_run_yet": pending})


def _autoattack_check(cfg: AuditConfig, eps: float, dataset: str, data_dir: str | None, device: torch.device,
                      progress: bool, on_attack: Callable[[dict[str, float]], None] | None = None) -> dict:
    """AutoAttack vs PGD-20 on the audit's subset; both land in metrics.json like `eval --attack autoattack`."""
    aa = run_autoattack_eval(AutoAttackConfig(
        cfg.checkpoint, norm=cfg.norm, eps=eps, version=cfg.autoattack, backend=cfg.autoattack_backend,
        limit=cfg.limit, dataset=dataset, data_dir=data_dir, on_bad_image=cfg.on_bad_image, batch_size=cfg.batch_size,
        device=str(device), seed=cfg.seed, record=cfg.record), progress, on_attack)
    gap = aa["pgd20_robust_acc"] - aa["robust_acc"]
    return _check(_within(gap, cfg.thresholds.autoattack), f"AutoAttack is {100 * gap:.1f} points below PGD-20",
                  autoattack=aa["robust_acc"], pgd20=aa["pgd20_robust_acc"], per_attack=aa["per_attack"])


def _summary(report: dict) -> dict:
    """The metrics.json line of an audit: its strongest white-box number, the verdict and the PAG score."""
    more = report["checks"]["more_steps"]
    pag = report.get("pag_score", {})
    return {"date": report["date"], "data": report["data"], "n": report["n"], "limit": report["limit"],
            "subset_seed": report["subset_seed"], "attack": f"audit (pgd-100 x{more['restarts']})",
            "norm": report["norm"], "eps": report["eps"], "steps": 100, "step_size": strong_step(report["eps"], 100),
            "restarts": more["restarts"], "random_start": True, "clean_acc": report["clean_acc"],
            "robust_acc": more["pgd100_restarts"], "device": report["device"], "config": report["config"],
            "verdict": report["verdict"], "masking_checks_passed": report["passed"],
            "pag_score": pag.get("score"), "pag_grad_cosine": pag.get("grad_cosine"), "pag_judge": pag.get("judge")}


def format_audit(report: dict) -> str:
    """The verdict first, then one line of evidence per check, for the terminal."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    c = report["checks"]
    mark = lambda k: {True: "ok  ", False: "FAIL", None: "skip"}[c[k]["passed"]]  # noqa: E731
    sweep = ", ".join(f"{e:.3g}: {pct(a)}" for e, a in zip(c["eps_sweep"]["eps"], c["eps_sweep"]["robust_acc"]))
    lines = [f"verdict: {report['verdict']}",
             f"  {report['norm']} eps={report['eps']:.4g}, n={report['n']}, clean {pct(report['clean_acc'])}",
             f"  [{mark('eps_sweep')}] eps sweep (PGD-20): {sweep}",
             f"  [{mark('more_steps')}] PGD-20 {pct(c['more_steps']['pgd20'])} vs PGD-100 "
             f"x{c['more_steps']['restarts']} restarts {pct(c['more_steps']['pgd100_restarts'])}",
             f"  [{mark('random_start')}] PGD-20 from the clean image {pct(c['random_start']['pgd20_clean_start'])} "
             f"vs from a random start {pct(c['random_start']['pgd20_random_start'])}"]
    t = c["transfer"]
    lines.append(f"  [{mark('transfer')}] " + (t["reason"] if t["passed"] is None else
                 f"transfer from vanilla (black box) {pct(t['black_box'])} vs white box {pct(t['white_box'])}"))
    if "autoattack" in c:
        lines.append(f"  [{mark('autoattack')}] AutoAttack {pct(c['autoattack']['autoattack'])} vs PGD-20 "
                     f"{pct(c['autoattack']['pgd20'])}")
    if "pag_score" in report:
        lines.append("  " + format_pag_score(report["pag_score"]))
    return "\n".join(lines)
