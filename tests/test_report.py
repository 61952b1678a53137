"""pagdemo.records.report: which recorded number is shown, and the robustness and audit rows."""

from pagdemo.records.files import write_json
from pagdemo.records.report import audit_rows, best_record, robustness_rows, teacher_norm


def _record(norm, eps, n, clean, robust, date="2025"):
    return {
        "date": date,
        "n": n,
        "attack": "pgd-20",
        "norm": norm,
        "eps": eps,
        "steps": 20,
        "step_size": eps / 10,
        "restarts": 1,
        "random_start": True,
        "clean_acc": clean,
        "robust_acc": robust,
    }


def test_best_record_prefers_the_paper_radius_and_more_samples():
    evs = [
        _record("linf", 8 / 255, 10000, 0.8, 0.15),
        _record("linf", 8 / 255, 500, 0.81, 0.2, "2026"),
        _record("linf", 16 / 255, 10000, 0.8, 0.01),
        _record("l2", 0.5, 1000, 0.8, 0.5),
    ]
    assert best_record(evs, "cifar10", "linf")["robust_acc"] == 0.15
    assert best_record(evs, "cifar10", "l2")["robust_acc"] == 0.5
    assert best_record(evs, "stl10", "l2") is None  # STL-10's l2 radius is 1.5
    assert best_record(evs, "cifar10", None)["n"] == 10000


def test_robustness_rows_pair_our_numbers_with_the_papers():
    infos = [
        {
            "name": "cm",
            "run": {"method": "cm", "lam": 0.4, "dataset": "cifar10"},
            "evaluations": [_record("linf", 8 / 255, 10000, 0.8, 0.15)],
        },
        {"name": "mystery", "run": {"method": "other", "dataset": "cifar10"}, "evaluations": []},
    ]
    rows = robustness_rows(infos)
    assert rows[0]["clean %"] == 80.0 and rows[0]["PGD linf %"] == 15.0 and rows[0]["PGD l2 %"] is None
    assert rows[0]["n clean"] == 10000 and "n=10000" in rows[0]["linf settings"]
    assert rows[0]["l2 settings"] == "not evaluated"
    assert (rows[0]["paper clean %"], rows[0]["paper linf %"], rows[0]["paper l2 %"]) == (81.41, 15.65, 50.62)
    assert rows[1]["clean %"] is None and rows[1]["paper source"] == "no matching row"


def test_a_rigd_run_finds_its_row_by_its_teachers_record(tmp_path):
    """The teacher's config.json names its threat model; a folder without one is read by its name."""
    teacher = tmp_path / "teacher"
    write_json(teacher / "config.json", {"run": {"method": "adv", "adv_norm": "linf"}})
    run = {"method": "rigd", "lam": 0.4, "dataset": "cifar10", "teacher": str(teacher)}
    assert teacher_norm(run) == "linf"
    assert teacher_norm({**run, "teacher": "runs/adv-l2"}) == "l2" and teacher_norm({"method": "cm"}) is None
    (tmp_path / "broken-l2").mkdir()
    (tmp_path / "broken-l2" / "config.json").write_text("{not json")
    assert teacher_norm({**run, "teacher": str(tmp_path / "broken-l2")}) == "l2"
    row = robustness_rows([{"name": "rigd", "run": run, "evaluations": []}])[0]
    assert (row["paper clean %"], row["paper linf %"], row["paper l2 %"]) == (84.94, 40.69, 58.51)


def test_audit_rows_pair_autoattack_with_pgd_on_the_same_subset():
    pgd_full = _record("linf", 8 / 255, 10000, 0.8, 0.30)
    pgd_sub = {**_record("linf", 8 / 255, 500, 0.8, 0.32), "subset_seed": 0}
    aa = {
        **_record("linf", 8 / 255, 500, 0.8, 0.25),
        "attack": "autoattack-standard",
        "subset_seed": 0,
        "device": "cuda",
    }
    audit = {
        **_record("linf", 8 / 255, 500, 0.8, 0.31),
        "attack": "audit (pgd-100 x2)",
        "verdict": "no sign of gradient masking",
        "pag_score": 0.61234,
        "pag_grad_cosine": 0.4,
        "pag_judge": "adv-l2",
    }
    rows = audit_rows([{"name": "m", "evaluations": [pgd_full, pgd_sub, aa, audit]}])
    linf, l2 = rows
    assert (linf["PGD-20 %"], linf["AutoAttack %"], linf["n"]) == (
        32.0,
        25.0,
        500,
    )  # not the full-test-set 30%
    assert (
        linf["verdict"] == "no sign of gradient masking"
        and linf["PAG score"] == 0.612
        and linf["judge"] == "adv-l2"
    )
    assert l2 == {"model": "m", "norm": "l2", "verdict": "not audited"}


def test_audit_rows_say_what_an_unfinished_audit_checked():
    cut = {
        "norm": "l2",
        "n": 200,
        "finished": False,
        "not_run_yet": ["autoattack", "pag_score"],
        "verdict": "no sign of gradient masking",
        "device": "cpu",
        "checks": {"more_steps": {"pgd20": 0.53}},
        "autoattack_so_far": {"clean": 0.685, "apgd-ce": 0.515},
    }
    scored = {
        "attack": "audit (pgd-100 x2)",
        "verdict": "no sign of gradient masking",
        "norm": "linf",
        "pag_score": 0.8,
    }
    linf, l2 = audit_rows([{"name": "m", "evaluations": [], "audits": {"l2": cut}}])
    assert linf["verdict"] == "not audited"
    assert audit_rows([{"name": "m", "evaluations": [scored], "audits": {"l2": cut}}])[1]["PAG score"] == 0.8
    assert (
        l2["n"] == 200
        and l2["PGD-20 %"] == 53.0
        and l2["verdict"]
        == (
            "unfinished (autoattack, pag_score not run); checks so far: no sign of gradient masking; "
            "AutoAttack cut off after apgd-ce: 51.5% (an upper bound)"
        )
    )


def test_audit_rows_take_pgd20_from_an_audit_that_ran_no_autoattack():
    line = {
        "attack": "audit (pgd-100 x2)",
        "verdict": "no sign of gradient masking",
        "n": 200,
        "norm": "linf",
    }
    record = {"norm": "linf", "finished": True, "checks": {"more_steps": {"pgd20": 0.225}}}
    linf, _ = audit_rows([{"name": "m", "evaluations": [line], "audits": {"linf": record}}])
    assert (linf["PGD-20 %"], linf["AutoAttack %"], linf["n"]) == (22.5, None, 200)
    aa = {"attack": "autoattack-standard", "norm": "linf", "n": 200, "subset_seed": 0, "robust_acc": 0.2}
    linf, _ = audit_rows([{"name": "m", "evaluations": [line, aa], "audits": {"linf": record}}])
    assert linf["PGD-20 %"] is None  # beside AutoAttack only a PGD-20 line on AutoAttack's own subset counts


def test_audit_rows_show_the_models_pag_score_in_both_norms():
    audit = {
        "attack": "audit (pgd-100 x2)",
        "verdict": "no sign of gradient masking",
        "n": 200,
        "subset_seed": 0,
    }
    linf = {**audit, "norm": "linf", "pag_score": 0.5, "pag_grad_cosine": 0.3, "pag_judge": "adv-l2"}
    l2 = {
        **audit,
        "norm": "l2",
        "pag_score": None,
    }  # audited without a judge: the l2-attack score is the model's, not the norm's
    rows = audit_rows([{"name": "m", "evaluations": [linf, l2]}])
    assert [(r["norm"], r["PAG score"], r["judge"]) for r in rows] == [
        ("linf", 0.5, "adv-l2"),
        ("l2", 0.5, "adv-l2"),
    ]
