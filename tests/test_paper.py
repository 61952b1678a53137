"""pagdemo.paper: a checkpoint's run finds the paper's row (Table 1/2, or the Figure 5 lambda ablation)."""

from pagdemo.paper import paper_method, paper_row


def test_paper_rows():
    assert paper_method("vanilla", 0.0) == "Vanilla" and paper_method("cm", 0.0) == "Vanilla"
    assert paper_method("Class-Mean", 0.4) == "Class Mean" and paper_method("adv", 0.0) is None
    assert paper_row({"method": "oi", "lam": 0.5, "dataset": "cifar10"})[1] == (79.46, 16.57, 49.68)
    assert paper_row({"method": "cm", "lam": 0.1, "dataset": "cifar10"}) == (
        "Figure 5, Class Mean, lambda=0.1",
        (88.40, 4.88, 36.43),
    )
    rigd = {"method": "rigd", "lam": 0.4, "dataset": "stl10", "teacher": "runs/teacher-l2"}
    assert paper_row(rigd, rigd_norm="l2")[1] == (75.18, 20.66, 48.46)
    assert paper_row(rigd) is None  # the teacher's threat model comes from the records, not from here
    assert paper_row({"method": "nn", "lam": 0.4, "dataset": "mnist"}) is None
