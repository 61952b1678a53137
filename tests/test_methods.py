"""pagdemo.methods: one registry of methods, and a checkpoint's run finds the paper's row (Table 1/2, or the
Figure 5 lambda ablation) through it."""

import pytest

from pagdemo.methods import METHODS, PAG_METHODS, TRAIN_METHODS, default_lambda, display_rank, paper_row
from pagdemo.methods import paper_row_name as row
from pagdemo.paper import LAMBDAS, TABLES
from pagdemo.train.config import TrainConfig, resolve


def test_paper_rows():
    assert row("vanilla", 0.0) == "Vanilla" and row("cm", 0.0) == "Vanilla"
    assert row("Class-Mean", 0.4) == "Class Mean" and row("adv", 0.0) is None and row("import") is None
    assert row("rigd") is None and row("rigd", rigd_norm="l2") == "RIGD l2" and row("rigd_l2") == "RIGD l2"
    assert paper_row({"method": "oi", "lam": 0.5, "dataset": "cifar10"})[1] == (79.46, 16.57, 49.68)
    assert paper_row({"method": "cm", "lam": 0.1, "dataset": "cifar10"}) == (
        "Figure 5, Class Mean, lambda=0.1",
        (88.40, 4.88, 36.43),
    )
    rigd = {"method": "rigd", "lam": 0.4, "dataset": "stl10", "teacher": "runs/teacher-l2"}
    assert paper_row(rigd, "l2")[1] == (75.18, 20.66, 48.46)
    assert paper_row(rigd) is None  # the teacher's threat model comes from the records (report.teacher_norm)
    assert paper_row({"method": "nn", "lam": 0.4, "dataset": "mnist"}) is None


def test_every_paper_row_has_a_method_and_every_pag_method_a_row():
    rows = {row(m, rigd_norm=n) for m in METHODS for n in ("linf", "l2")} - {None}
    assert rows == set(TABLES["cifar10"]) == set(TABLES["stl10"])
    assert PAG_METHODS == ("oi", "cm", "nn", "rigd") and TRAIN_METHODS == ("vanilla", *PAG_METHODS)


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
@pytest.mark.parametrize("method", ["oi", "cm", "nn", "rigd"])
def test_resolve_uses_table_3s_lambda(dataset, method):
    paper = LAMBDAS[dataset][row(method, rigd_norm="linf")]
    assert default_lambda(method, dataset) == paper == LAMBDAS[dataset][row(method, rigd_norm="l2")]
    cfg = TrainConfig(out="x", method=method, dataset=dataset, teacher="t" if method == "rigd" else None)
    assert resolve(cfg).lam == paper


def test_lambdas_are_table_3_and_an_explicit_one_is_kept():
    assert [default_lambda(m, "cifar10") for m in PAG_METHODS] == [0.5, 0.4, 0.4, 0.4]
    assert [default_lambda(m, "stl10") for m in PAG_METHODS] == [0.25, 0.2, 0.4, 0.4]
    assert resolve(TrainConfig(out="x", method="cm", dataset="synthetic")).lam == 0.4  # borrows CIFAR-10's
    assert resolve(TrainConfig(out="x", method="vanilla")).lam == 0.0
    assert resolve(TrainConfig(out="x", method="adv")).lam == 0.0
    assert resolve(TrainConfig(out="x", method="cm", lam=0.0)).lam == 0.0
    assert resolve(TrainConfig(out="x", method="cm", lam=1.5)).lam == 1.5


def test_display_order_is_the_papers_then_teachers_then_imports():
    ranks = [display_rank(m) for m in ("vanilla", "oi", "cm", "nn", "rigd", "adv", "import")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 7
    assert display_rank("Class Mean") == display_rank("cm") and display_rank("unknown") == display_rank(
        "rigd"
    )


def test_every_target_a_method_names_is_built_by_the_maths_layer():
    """pag/ cannot import the registry (it imports no vocabulary but the models): the two lists must agree."""
    from pagdemo.pag.targets import TARGET_KINDS

    assert {m.target for m in METHODS.values()} - {None, "teacher"} == set(TARGET_KINDS)
