"""The gradient-masking audit: end to end on checkpoints, and it catches a model whose gradients are
shattered."""

import json
from dataclasses import replace

import pytest
import torch
from tiny import train_tiny
from torch import nn

from pagdemo.data.datasets import load_dataset
from pagdemo.eval.audit import AuditConfig, _autoattack_check, run_audit
from pagdemo.eval.autoattack import BACKENDS
from pagdemo.eval.masking import NO_MASKING, audit, format_audit, verdict
from pagdemo.eval.subset import Subject
from pagdemo.records.checkpoints import save_checkpoint

EPS = 0.1  # linf radius at which PGD-20 breaks about half of the tiny model's images


class Quantized(nn.Module):
    """Shattered gradients (Athalye et al. 2018): rounding the input has zero gradient, so PGD cannot move."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


@pytest.fixture(scope="module")
def models():
    return {"model": train_tiny(0), "vanilla": train_tiny(1), "judge": train_tiny(2)}


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", "test", limit=20)
    return ds.inputs(), ds.labels


def test_audit_flags_shattered_gradients(models, data):
    x, y = data
    report = audit(
        Quantized(models["model"]),
        x,
        y,
        "linf",
        EPS,
        vanilla_model=models["vanilla"],
        multipliers=(1, 4, 16),
        restarts=2,
        progress=False,
    )
    checks = report["checks"]
    assert report["clean_acc"] == 1.0 and not report["passed"]
    assert checks["eps_sweep"]["passed"] is False
    assert checks["eps_sweep"]["robust_acc"][-1] > 0.2  # only PGD's random start moves the images
    assert (
        checks["transfer"]["passed"] is False
        and checks["transfer"]["black_box"] < checks["transfer"]["white_box"]
    )
    assert report["verdict"].startswith("possible gradient masking: ") and "transfer" in report["verdict"]


def test_run_audit_end_to_end_on_checkpoints(models, tmp_path):
    run = {"dataset": "synthetic", "method": "vanilla"}
    folders = {k: save_checkpoint(m, tmp_path / k, run) for k, m in models.items()}
    cfg = AuditConfig(
        str(folders["model"]),
        norm="linf",
        eps=EPS,
        vanilla=str(folders["vanilla"]),
        judge=str(folders["judge"]),
        autoattack="lite",
        limit=20,
        pag_limit=10,
        pag_eps=16.0,
        pag_steps=10,
        restarts=2,
        device="cpu",
        json=str(tmp_path / "audit.json"),
    )
    report = run_audit(cfg, progress=False)
    c = report["checks"]
    assert set(c) == {"eps_sweep", "more_steps", "random_start", "transfer", "autoattack"}
    assert c["eps_sweep"]["passed"] and c["eps_sweep"]["robust_acc"][-1] <= 0.01  # a real model reaches 0%
    assert c["transfer"]["passed"] and c["transfer"]["black_box"] >= c["transfer"]["white_box"]
    assert c["more_steps"]["pgd100_restarts"] <= c["more_steps"]["pgd20"] + 0.05
    assert report["passed"] == (report["verdict"] == NO_MASKING) == all(v["passed"] for v in c.values())
    assert 0 <= report["pag_score"]["score"] <= 1 and report["pag_score"]["n_pairs"] == 90
    assert json.loads((tmp_path / "audit.json").read_text())["verdict"] == report["verdict"]
    assert json.loads((folders["model"] / "audit-linf.json").read_text())["finished"] is True
    assert (folders["model"] / "audit-linf.json").exists()
    evals = json.loads((folders["model"] / "metrics.json").read_text())["evaluations"]
    assert [e["attack"] for e in evals] == ["pgd-20", "autoattack-lite", "audit (pgd-100 x2)"]
    assert (
        evals[-1]["verdict"] == report["verdict"] and evals[-1]["pag_score"] == report["pag_score"]["score"]
    )
    text = format_audit(report)
    assert text.startswith(f"verdict: {report['verdict']}") and "AutoAttack" in text and "PAG score" in text


def test_an_audit_cut_short_keeps_the_checks_it_finished(models, tmp_path, monkeypatch):
    folders = {
        k: save_checkpoint(m, tmp_path / k, {"dataset": "synthetic", "method": "vanilla"})
        for k, m in models.items()
    }

    def slot_ends(*args, **kwargs):
        raise KeyboardInterrupt  # what a timeout's signal does mid-AutoAttack

    monkeypatch.setattr("pagdemo.eval.audit.run_autoattack_eval", slot_ends)
    cfg = AuditConfig(
        str(folders["model"]),
        norm="linf",
        eps=EPS,
        vanilla=str(folders["vanilla"]),
        judge=str(folders["judge"]),
        autoattack="standard",
        limit=20,
        restarts=1,
        device="cpu",
    )
    with pytest.raises(KeyboardInterrupt):
        run_audit(cfg, progress=False)
    saved = json.loads((folders["model"] / "audit-linf.json").read_text())
    assert saved["finished"] is False and saved["not_run_yet"] == ["autoattack", "pag_score"]
    assert {"eps_sweep", "more_steps", "random_start", "transfer"} == set(saved["checks"])
    assert not (folders["model"] / "metrics.json").exists()  # only a finished audit becomes a metrics line


def test_an_audit_cut_short_in_autoattack_keeps_the_attacks_it_finished(models, tmp_path, monkeypatch):
    folders = {
        k: save_checkpoint(m, tmp_path / k, {"dataset": "synthetic", "method": "vanilla"})
        for k, m in models.items()
    }

    def slot_ends(*args, **kwargs):
        raise KeyboardInterrupt

    def backend(*args, **kwargs):  # APGD-CE finds nothing, then the slot ends during APGD-T
        return {"apgd-ce": lambda x, y: x, "apgd-t": slot_ends}

    monkeypatch.setitem(BACKENDS, "pyautoattack", backend)
    cfg = AuditConfig(
        str(folders["model"]),
        norm="linf",
        eps=EPS,
        vanilla=str(folders["vanilla"]),
        autoattack="standard",
        limit=20,
        restarts=1,
        device="cpu",
    )
    with pytest.raises(KeyboardInterrupt):
        run_audit(cfg, progress=False)
    saved = json.loads((folders["model"] / "audit-linf.json").read_text())
    assert saved["finished"] is False and saved["not_run_yet"] == ["autoattack"]
    so_far = saved["autoattack_so_far"]
    assert set(so_far) == {"clean", "apgd-ce"} and so_far["apgd-ce"] == so_far["clean"] == saved["clean_acc"]
    monkeypatch.setitem(BACKENDS, "pyautoattack", lambda *a, **k: {"apgd-ce": slot_ends})
    with pytest.raises(
        KeyboardInterrupt
    ):  # a resume cut off before its first attack ends keeps the earlier bound
        run_audit(replace(cfg, resume=True), progress=False)
    resaved = json.loads((folders["model"] / "audit-linf.json").read_text())
    assert resaved["autoattack_so_far"] == so_far and resaved["resumed_from"] == saved["date"]


def test_resume_adds_autoattack_to_an_audit_without_redoing_its_checks(models, tmp_path, monkeypatch):
    folders = {
        k: save_checkpoint(m, tmp_path / k, {"dataset": "synthetic", "method": "vanilla"})
        for k, m in models.items()
    }
    cfg = AuditConfig(
        str(folders["model"]),
        norm="linf",
        eps=EPS,
        vanilla=str(folders["vanilla"]),
        judge=str(folders["judge"]),
        limit=20,
        pag_limit=5,
        pag_eps=16.0,
        pag_steps=5,
        restarts=1,
        device="cpu",
    )
    first = run_audit(cfg, progress=False)
    assert "autoattack" not in first["checks"]

    def redone(*args, **kwargs):
        raise AssertionError("--resume must not rerun the finished checks")

    monkeypatch.setattr("pagdemo.eval.audit.audit", redone)
    monkeypatch.setattr("pagdemo.eval.audit.pag_score", redone)
    second = run_audit(replace(cfg, judge=None, autoattack="lite", resume=True), progress=False)
    assert {k: v for k, v in second["checks"].items() if k != "autoattack"} == first["checks"]
    assert second["checks"]["autoattack"]["pgd20"] >= second["checks"]["autoattack"]["autoattack"]
    assert second["pag_score"] == first["pag_score"] and second["resumed_from"] == first["date"]
    saved = json.loads((folders["model"] / "audit-linf.json").read_text())
    assert saved["finished"] is True and saved["checks"]["autoattack"] == second["checks"]["autoattack"]
    evals = json.loads((folders["model"] / "metrics.json").read_text())["evaluations"]
    assert [e["attack"] for e in evals] == [
        "audit (pgd-100 x1)",
        "pgd-20",
        "autoattack-lite",
        "audit (pgd-100 x1)",
    ]
    assert evals[-1]["pag_score"] == first["pag_score"]["score"]
    assert (
        run_audit(replace(cfg, judge=None, autoattack="lite", resume=True), progress=False) == saved
    )  # nothing to add
    monkeypatch.undo()
    third = run_audit(replace(cfg, judge=str(folders["vanilla"]), resume=True), progress=False)  # a new judge
    assert third["pag_score"]["judge"] == str(folders["vanilla"]) and third["checks"] == second["checks"]
    assert third["resumed_from"] == first["date"]  # the checks' date, however many resumes later
    with pytest.raises(ValueError, match=r"other settings: restarts 1 \(now 3\)"):
        run_audit(replace(cfg, restarts=3, autoattack="lite", resume=True), progress=False)


def test_run_audit_refuses_the_rigd_teacher_as_judge(models, tmp_path):
    teacher = save_checkpoint(
        models["judge"], tmp_path / "teacher", {"dataset": "synthetic", "method": "adv"}
    )
    rigd = save_checkpoint(
        models["model"],
        tmp_path / "rigd",
        {"dataset": "synthetic", "method": "rigd", "teacher": str(teacher)},
    )
    with pytest.raises(ValueError, match="RIGD teacher"):
        run_audit(AuditConfig(str(rigd), judge=str(teacher), limit=10, device="cpu"), progress=False)


def test_verdict_lists_every_failed_check_and_ignores_skipped_ones():
    checks = {
        "a": {"passed": True, "reason": None},
        "b": {"passed": False, "reason": "gap b"},
        "c": {"passed": None, "reason": "skipped: no vanilla model given"},
        "d": {"passed": False, "reason": "gap d"},
    }
    assert verdict(checks) == {"passed": False, "verdict": "possible gradient masking: gap b; gap d"}
    assert verdict({"c": checks["c"]}) == {"passed": True, "verdict": NO_MASKING}


def test_a_gap_exactly_at_the_threshold_passes(monkeypatch, models, tmp_path):
    """AutoAttack 10.5% (a float32 mean: 0.10499999672) vs PGD-20 15.5% is 5 points: allowed, not flagged."""
    folder = save_checkpoint(models["model"], tmp_path / "m", {"dataset": "synthetic", "method": "vanilla"})
    result = {"robust_acc": 0.10499999672174454, "pgd20_robust_acc": 0.155, "per_attack": {}}
    monkeypatch.setattr("pagdemo.eval.audit.run_autoattack_eval", lambda *a, **k: result)
    cfg = AuditConfig(str(folder), autoattack="standard")
    subject = Subject(models["model"], None, torch.device("cpu"))
    assert _autoattack_check(cfg, 8 / 255, subject, False)["passed"] is True
    result["robust_acc"] = 0.10
    assert _autoattack_check(cfg, 8 / 255, subject, False)["passed"] is False
