"""`pagdemo audit`: the gradient-masking checks (`pagdemo.eval.masking`), AutoAttack and the PAG score of one
checkpoint, kept in `audit-<norm>.json` beside it. An audit takes long; `AuditFile` keeps what it has finished, so a
run cut off keeps its checks and `--resume` adds only what an earlier run lacks (AutoAttack, a new judge's score)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pagdemo.data.datasets import load_dataset
from pagdemo.eval.autoattack import (
    BACKENDS,
    VERSIONS,
    AutoAttackConfig,
    run_autoattack_eval,
)
from pagdemo.eval.masking import Thresholds, audit, check_result, verdict, within
from pagdemo.eval.pagscore import check_judge, pag_score
from pagdemo.eval.subset import Subject, SubsetConfig, data_for_eval, load_subject
from pagdemo.options import flag
from pagdemo.records.checkpoints import append_metrics, load_checkpoint
from pagdemo.records.files import read_json, write_json
from pagdemo.records.provenance import now
from pagdemo.threat import NORMS, picture_eps, strong_step

BOOKKEEPING = (
    "date",
    "finished",
    "not_run_yet",
    "autoattack_so_far",
)  # the file's own keys, not part of a report


@dataclass(frozen=True)
class AuditConfig(SubsetConfig):
    """`pagdemo audit`: the subset is shared with `eval --attack autoattack` (1,000 class-balanced test images)."""

    norm: str = flag("linf", "threat model", choices=NORMS)
    limit: int | None = flag(1000, "fixed class-balanced test subset (default 1000)", read="count")
    vanilla: str | None = flag(
        None, "vanilla checkpoint (folder or hf-hub:ORG/NAME), source of the transfer attack"
    )
    judge: str | None = flag(
        None, "robust checkpoint that judges the PAG score (never the model's own RIGD teacher)"
    )
    autoattack: str | None = flag(
        None, "also run this AutoAttack version and compare it with PGD-20", choices=tuple(VERSIONS)
    )
    autoattack_backend: str = flag(
        "pyautoattack",
        "the reference; torchattacks is weaker in l2 (see autoattack.py)",
        choices=tuple(BACKENDS),
        name="--aa-backend",
    )
    pag_limit: int = flag(100, "test images for the PAG score (x 9 targets each)", read="count")
    pag_eps: float | None = flag(
        None,
        "L2 radius of the PAG score's targeted attack (default: the picture's, 4.0 at 32x32)",
        read="eps",
    )
    pag_steps: int = flag(100, "steps of the PAG score's attack", read="count")
    restarts: int = flag(5, "restarts of the PGD-100 check", read="count")
    thresholds: Thresholds = field(default_factory=Thresholds)
    json: str | None = flag(
        None, "also write the report here (it always goes to <checkpoint>/audit-<norm>.json)"
    )
    record: bool = flag(True, "write audit-<norm>.json and append the summary to metrics.json")
    resume: bool = flag(
        False,
        "keep the checks of an earlier audit-<norm>.json run with the same settings (a cut-off "
        "run, or one without AutoAttack) and run only what it lacks: AutoAttack, or the PAG score of a "
        "new judge",
    )


class AuditFile:
    """audit-<norm>.json: partial reports while an audit runs, the final one when it ends, and the check that an
    earlier one was made with this run's settings before its checks are reused."""

    def __init__(self, cfg: AuditConfig, settings: dict) -> None:
        self.cfg, self.settings = (
            cfg,
            settings,
        )  # settings: what must match for an earlier report to be reused
        self.path = Path(cfg.checkpoint) / f"audit-{cfg.norm}.json"

    def earlier(self) -> dict | None:
        """The earlier file, if any, checked to share this run's subset and settings.

        Raises:
            ValueError: the earlier audit used other settings, so its checks would not describe this run's.
        """
        previous = read_json(self.path)
        if previous is None:
            return None
        was = {
            **{k: previous.get(k) for k in self.settings},
            "restarts": previous["checks"]["more_steps"]["restarts"],
        }
        differ = [f"{k} {was[k]!r} (now {v!r})" for k, v in self.settings.items() if was[k] != v]
        if differ:
            raise ValueError(
                f"cannot resume {self.path}: it was run with other settings: {'; '.join(differ)}. "
                "Run without --resume to redo the audit."
            )
        return previous

    def save_partial(self, report: dict, pending: list[str]) -> None:
        """What is done so far, naming the parts still to run (metrics.json waits for the end)."""
        if self.cfg.record and pending:
            write_json(self.path, {**report, "date": now(), "finished": False, "not_run_yet": pending})

    def save_final(self, report: dict) -> None:
        """The finished report, and its summary line in metrics.json."""
        if self.cfg.record:
            write_json(self.path, report)
            append_metrics(self.cfg.checkpoint, _summary(report))
        if self.cfg.json:
            write_json(Path(self.cfg.json), report)


def run_audit(cfg: AuditConfig, progress: bool = True) -> dict:
    """Load the checkpoint and its subset, run (or reuse) the masking checks, add AutoAttack and the PAG score."""
    subject = load_subject(cfg)
    eps = cfg.radius(subject.data.name, subject.model.image_size)
    if cfg.judge:
        check_judge(cfg.checkpoint, getattr(subject.model, "run", {}), cfg.judge)
    file = AuditFile(
        cfg,
        {
            "eps": eps,
            "n": len(subject.data),
            "limit": cfg.limit,
            "subset_seed": cfg.seed,
            "data": subject.described,
            "vanilla": cfg.vanilla,
            "restarts": cfg.restarts,
            "thresholds": asdict(cfg.thresholds),
        },
    )
    previous = file.earlier() if cfg.resume else None
    report = _masking_checks(cfg, subject, eps, progress) if previous is None else _reused(previous)
    run_aa = bool(cfg.autoattack) and "autoattack" not in report["checks"]
    run_pag = bool(cfg.judge) and report.get("pag_score", {}).get("judge") != str(cfg.judge)
    if previous is not None and previous.get("finished") and not (run_aa or run_pag):
        if cfg.json:
            write_json(Path(cfg.json), previous)
        return previous  # nothing to add: the record stays as it is
    report.update(
        data=subject.described,
        limit=cfg.limit,
        subset_seed=cfg.seed,
        device=str(subject.device),
        config=asdict(cfg),
        vanilla=cfg.vanilla,
    )
    pending = [name for name, todo in (("autoattack", run_aa), ("pag_score", run_pag)) if todo]
    so_far = (
        {"autoattack_so_far": previous["autoattack_so_far"]}
        if previous and "autoattack_so_far" in previous
        else {}
    )
    file.save_partial(
        {**report, **so_far}, pending
    )  # a run cut short keeps what it (or the run it resumes) finished
    if run_aa:
        report["checks"]["autoattack"] = _autoattack_check(
            cfg,
            eps,
            subject,
            progress,
            lambda after: file.save_partial({**report, "autoattack_so_far": after}, pending),
        )
        report.update(verdict(report["checks"]))
        file.save_partial(report, pending[1:])
    if run_pag:
        report["pag_score"] = _pag_score(cfg, subject, progress)
    report.update(date=now(), finished=True)
    file.save_final(report)
    return report


def _masking_checks(cfg: AuditConfig, subject: Subject, eps: float, progress: bool) -> dict:
    """The masking checks of `pagdemo.eval.masking` on the subset, against the vanilla model if one is given."""
    vanilla = load_checkpoint(cfg.vanilla, subject.device) if cfg.vanilla else None
    return audit(
        subject.model,
        subject.data.inputs(),
        subject.data.labels,
        cfg.norm,
        eps,
        vanilla,
        restarts=cfg.restarts,
        th=cfg.thresholds,
        batch_size=cfg.batch_size,
        device=subject.device,
        seed=cfg.seed,
        progress=progress,
    )


def _reused(previous: dict) -> dict:
    """An earlier report's checks without the file's bookkeeping, remembering when they were run."""
    report = {k: v for k, v in previous.items() if k not in BOOKKEEPING}
    report.setdefault(
        "resumed_from", previous.get("date")
    )  # the date of the checks, over any number of resumes
    return report


def _autoattack_check(
    cfg: AuditConfig,
    eps: float,
    subject: Subject,
    progress: bool,
    on_attack: Callable[[dict[str, float]], None] | None = None,
) -> dict:
    """AutoAttack vs PGD-20 on the audit's subset; both land in metrics.json like `eval --attack autoattack`."""
    dataset, data_dir = data_for_eval(getattr(subject.model, "run", {}), cfg.dataset, cfg.data_dir)
    aa = run_autoattack_eval(
        AutoAttackConfig(
            cfg.checkpoint,
            norm=cfg.norm,
            eps=eps,
            version=cfg.autoattack,
            backend=cfg.autoattack_backend,
            limit=cfg.limit,
            dataset=dataset,
            data_dir=data_dir,
            on_bad_image=cfg.on_bad_image,
            batch_size=cfg.batch_size,
            device=str(subject.device),
            seed=cfg.seed,
            record=cfg.record,
        ),
        progress,
        on_attack,
    )
    gap = aa["pgd20_robust_acc"] - aa["robust_acc"]
    return check_result(
        within(gap, cfg.thresholds.autoattack),
        f"AutoAttack is {100 * gap:.1f} points below PGD-20",
        autoattack=aa["robust_acc"],
        pgd20=aa["pgd20_robust_acc"],
        per_attack=aa["per_attack"],
    )


def _pag_score(cfg: AuditConfig, subject: Subject, progress: bool) -> dict:
    """The PAG score on the first `pag_limit` images of the subset's kind, judged by `cfg.judge`."""
    dataset, data_dir = data_for_eval(getattr(subject.model, "run", {}), cfg.dataset, cfg.data_dir)
    sub = load_dataset(
        dataset,
        "test",
        data_dir=data_dir,
        limit=cfg.pag_limit,
        seed=cfg.seed,
        image_size=subject.model.image_size,
        on_bad_image=cfg.on_bad_image,
    )
    score = pag_score(
        subject.model,
        load_checkpoint(cfg.judge, subject.device),
        sub.inputs(),
        sub.labels,
        eps=cfg.pag_eps or picture_eps("l2", subject.model.image_size),
        steps=cfg.pag_steps,
        batch_size=cfg.batch_size,
        device=subject.device,
        progress=progress,
    )
    return {**score, "judge": str(cfg.judge)}


def _summary(report: dict) -> dict:
    """The metrics.json line of an audit: its strongest white-box number, the verdict and the PAG score."""
    more = report["checks"]["more_steps"]
    pag = report.get("pag_score", {})
    return {
        "date": report["date"],
        "data": report["data"],
        "n": report["n"],
        "limit": report["limit"],
        "subset_seed": report["subset_seed"],
        "attack": f"audit (pgd-100 x{more['restarts']})",
        "norm": report["norm"],
        "eps": report["eps"],
        "steps": 100,
        "step_size": strong_step(report["eps"], 100),
        "restarts": more["restarts"],
        "random_start": True,
        "clean_acc": report["clean_acc"],
        "robust_acc": more["pgd100_restarts"],
        "device": report["device"],
        "config": report["config"],
        "verdict": report["verdict"],
        "masking_checks_passed": report["passed"],
        "pag_score": pag.get("score"),
        "pag_grad_cosine": pag.get("grad_cosine"),
        "pag_judge": pag.get("judge"),
    }
