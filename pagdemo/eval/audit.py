"""`pagdemo audit`: the gradient-masking checks (`pagdemo.eval.masking`), AutoAttack and the PAG score of one
checkpoint, kept in `audit-<norm>.json` beside it. An audit takes long: `AuditFile` keeps what it finished, so
a run cut off keeps its checks, and `--resume` adds only what an earlier run lacks (AutoAttack, a judge)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pagdemo.eval.autoattack import VERSIONS, AutoAttackConfig, run_autoattack_eval
from pagdemo.eval.masking import Thresholds, audit, check_result, verdict, within
from pagdemo.eval.pagscore import check_judge, pag_score
from pagdemo.eval.subset import Subject, SubsetConfig, data_for_eval, load_subject, test_data
from pagdemo.options import flag, flag_of
from pagdemo.records.checkpoints import append_metrics, load_checkpoint
from pagdemo.records.files import read_json, write_json
from pagdemo.records.provenance import now
from pagdemo.threat import picture_eps, strong_step

BOOKKEEPING = ("date", "finished", "not_run_yet", "autoattack_so_far")  # the file's own keys, not a report's


@dataclass(frozen=True)
class AuditConfig(SubsetConfig):
    """`pagdemo audit`: its subset is `eval --attack autoattack`'s (1,000 class-balanced test images)."""

    limit: int | None = flag(1000, "fixed class-balanced test subset (default 1000)", read="count")
    vanilla: str | None = flag(None, "vanilla checkpoint (or hf-hub:ORG/NAME): the transfer attack's source")
    judge: str | None = flag(None, "robust checkpoint judging the PAG score (not the model's RIGD teacher)")
    autoattack: str | None = flag(None, "also run this AutoAttack version", choices=tuple(VERSIONS))
    autoattack_backend: str = flag_of(AutoAttackConfig, "backend")
    pag_limit: int = flag(100, "test images for the PAG score (x 9 targets each)", read="count")
    pag_eps: float | None = flag(None, "L2 radius of the PAG score's attack (default 4 at 32x32)", read="eps")
    pag_steps: int = flag(100, "steps of the PAG score's attack", read="count")
    restarts: int = flag(5, "restarts of the PGD-100 check", read="count")
    thresholds: Thresholds = field(default_factory=Thresholds)
    json: str | None = flag(None, "also write the report here (it goes to <checkpoint>/audit-<norm>.json)")
    record: bool = flag(True, "write audit-<norm>.json and append the summary to metrics.json")
    resume: bool = flag(False, "run only what an earlier audit-<norm>.json with the same settings lacks")


class AuditFile:
    """audit-<norm>.json: a running audit's partial reports, then the final one; reused if settings match."""

    def __init__(self, cfg: AuditConfig, subset: dict) -> None:
        """`subset` and the checks' settings: what must match for an earlier report to be reused."""
        more = dict(vanilla=cfg.vanilla, restarts=cfg.restarts, thresholds=asdict(cfg.thresholds))
        self.cfg, self.settings = cfg, {**subset, **more}
        self.path = Path(cfg.checkpoint) / f"audit-{cfg.norm}.json"

    def earlier(self) -> dict | None:
        """The earlier file, if any; a ValueError if its settings differ (its checks would not be ours)."""
        previous = read_json(self.path)
        if previous is None:
            return None
        was = {k: previous.get(k) for k in self.settings}
        was["restarts"] = previous["checks"]["more_steps"]["restarts"]
        if differ := [f"{k} {was[k]!r} (now {v!r})" for k, v in self.settings.items() if was[k] != v]:
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
    """Load the checkpoint and its subset, run (or reuse) the masking checks, add AutoAttack and PAG score."""
    subject = load_subject(cfg)
    eps = cfg.radius(subject.data.name, subject.model.image_size)
    if cfg.judge:
        check_judge(cfg.checkpoint, getattr(subject.model, "run", {}), cfg.judge)
    subset = dict(data=subject.described, limit=cfg.limit, subset_seed=cfg.seed)
    file = AuditFile(cfg, dict(eps=eps, n=len(subject.data), **subset))
    previous = file.earlier() if cfg.resume else None
    report = _masking_checks(cfg, subject, eps, progress) if previous is None else _reused(previous)
    run_aa = bool(cfg.autoattack) and "autoattack" not in report["checks"]
    run_pag = bool(cfg.judge) and report.get("pag_score", {}).get("judge") != str(cfg.judge)
    if previous is not None and previous.get("finished") and not (run_aa or run_pag):
        if cfg.json:
            write_json(Path(cfg.json), previous)
        return previous  # nothing to add: the record stays as it is
    report.update(subset, device=str(subject.device), config=asdict(cfg), vanilla=cfg.vanilla)
    pending = [name for name, todo in (("autoattack", run_aa), ("pag_score", run_pag)) if todo]
    # a run cut short keeps what it (or the run it resumes) finished
    so_far = {k: v for k, v in (previous or {}).items() if k == "autoattack_so_far"}
    file.save_partial({**report, **so_far}, pending)
    if run_aa:
        save = lambda after: file.save_partial({**report, "autoattack_so_far": after}, pending)  # noqa: E731
        report["checks"]["autoattack"] = _autoattack_check(cfg, eps, subject, progress, save)
        report.update(verdict(report["checks"]))
        file.save_partial(report, pending[1:])
    if run_pag:
        report["pag_score"] = _pag_score(cfg, subject, progress)
    report.update(date=now(), finished=True)
    file.save_final(report)
    return report


def _masking_checks(cfg: AuditConfig, subject: Subject, eps: float, progress: bool) -> dict:
    """The masking checks on the subset, against the vanilla model if one is given."""
    vanilla = load_checkpoint(cfg.vanilla, subject.device) if cfg.vanilla else None
    x, y = subject.data.inputs(), subject.data.labels
    kw = dict(batch_size=cfg.batch_size, device=subject.device, seed=cfg.seed, progress=progress)
    return audit(subject.model, x, y, cfg.norm, eps, vanilla, restarts=cfg.restarts, th=cfg.thresholds, **kw)


def _reused(previous: dict) -> dict:
    """An earlier report's checks without the file's bookkeeping, remembering when they were run."""
    report = {k: v for k, v in previous.items() if k not in BOOKKEEPING}
    report.setdefault("resumed_from", previous.get("date"))  # when the checks ran, over any number of resumes
    return report


def _autoattack_check(
    cfg: AuditConfig, eps: float, subject: Subject, progress: bool, on_attack: Callable | None = None
) -> dict:
    """AutoAttack vs PGD-20 on the audit's subset; both go to metrics.json as `eval --attack autoattack`'s."""
    dataset, data_dir = data_for_eval(getattr(subject.model, "run", {}), cfg.dataset, cfg.data_dir)
    # the subset's settings, resolved here (json: the audit writes its own file, not AutoAttack's record)
    mine = dict(eps=eps, dataset=dataset, data_dir=data_dir, device=str(subject.device), json=None)
    shared = {**{f.name: getattr(cfg, f.name) for f in fields(SubsetConfig)}, **mine}
    aa_cfg = AutoAttackConfig(**shared, version=cfg.autoattack, backend=cfg.autoattack_backend)
    aa = run_autoattack_eval(aa_cfg, progress, on_attack)
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
    sub = test_data(cfg, subject.model, cfg.pag_limit)
    judge = load_checkpoint(cfg.judge, subject.device)
    eps = cfg.pag_eps or picture_eps("l2", subject.model.image_size)
    kw = dict(steps=cfg.pag_steps, batch_size=cfg.batch_size, device=subject.device, progress=progress)
    score = pag_score(subject.model, judge, sub.inputs(), sub.labels, eps=eps, **kw)
    return {**score, "judge": str(cfg.judge)}


def _summary(report: dict) -> dict:
    """The metrics.json line of an audit: its strongest white-box number, the verdict and the PAG score."""
    more, pag = report["checks"]["more_steps"], report.get("pag_score", {})
    return {
        **{k: report[k] for k in ("date", "data", "n", "limit", "subset_seed")},
        "attack": f"audit (pgd-100 x{more['restarts']})",
        "norm": report["norm"],
        "eps": report["eps"],
        "steps": 100,
        "step_size": strong_step(report["eps"], 100),
        "restarts": more["restarts"],
        "random_start": True,
        "clean_acc": report["clean_acc"],
        "robust_acc": more["pgd100_restarts"],
        **{k: report[k] for k in ("device", "config", "verdict")},
        "masking_checks_passed": report["passed"],
        "pag_score": pag.get("score"),
        "pag_grad_cosine": pag.get("grad_cosine"),
        "pag_judge": pag.get("judge"),
    }
