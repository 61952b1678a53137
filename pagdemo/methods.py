"""The methods a checkpoint can come from, in the paper's order: the one list that the CLI's choices, the
default lambda (Table 3), the paper's rows, the display order and the names people type for a method all read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pagdemo.paper import CM_LAMBDA_ABLATION, LAMBDAS, TABLE_NAMES, TABLES


@dataclass(frozen=True)
class Method:
    """One way to train a classifier; `target` is the g(x, t) it aligns the input gradients with (Eq. 1)."""

    name: str  # as `pagdemo train --method` takes it and a checkpoint's config records it
    summary: str  # one line for --help
    row: str | None = None  # its row of the paper's Tables 1-3 ("RIGD" gets its teacher's threat model)
    target: str | None = None  # "oi" | "cm" | "nn" (pagdemo.pag.targets), "teacher" (RIGD), None: no PAG term
    aliases: tuple[str, ...] = ()
    train: bool = True  # offered by `pagdemo train --method` (adv-train and import are commands of their own)


# aliases: what people type besides the name and the row ("class-mean", "Nearest Neighbor" match the row)
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("vanilla", "lambda 0, the cross-entropy alone", "Vanilla", None, ("none", "ce", "baseline")),
        Method("oi", "g toward One Image of class t", "One Image", "oi", ("oneimage",)),
        Method("cm", "toward the Class Mean", "Class Mean", "cm", ("classmean",)),
        Method("nn", "toward the Nearest Neighbor among K class-t images", "Nearest Neighbor", "nn"),
        Method("rigd", "a robust teacher's input gradients (an upper bound)", "RIGD", "teacher"),
        Method("adv", "adversarial training, the RIGD teachers (pagdemo adv-train)", train=False),
        Method("import", "a model trained elsewhere (pagdemo import-robustbench)", train=False),
    )
}
TRAIN_METHODS = tuple(name for name, m in METHODS.items() if m.train)
PAG_METHODS = tuple(name for name, m in METHODS.items() if m.target)


def help_text() -> str:
    """`--method`'s help: every trainable method and what it aligns to."""
    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values() if m.train)


def method(name: str | None) -> Method | None:
    """A method by its name or any alias people write ("Class Mean", "class-mean", "rigd_l2"), else None."""
    key = re.sub(r"_(linf|l2)$", "", re.sub(r"[\s\-]+", "_", str(name or "").strip().lower()))
    for m in METHODS.values():
        if key in (m.name, *m.aliases, (m.row or "").lower().replace(" ", "_")):
            return m
    return None


def paper_row_name(name: str | None, lam: float | None = None, rigd_norm: str | None = None) -> str | None:
    """The paper's row for a checkpoint's method (lambda 0 is the vanilla baseline; RIGD by its teacher), or
    None."""
    m = method(name)
    if m is None or m.row is None:
        return None
    if lam is not None and float(lam) == 0.0:
        return "Vanilla"
    if m.row == "RIGD":  # the row follows the teacher's threat model: None when nothing says which
        named = next((n for n in ("linf", "l2") if str(name).lower().endswith(n)), None)
        return f"RIGD {rigd_norm or named}" if rigd_norm or named else None
    return m.row


def paper_row(run: dict, rigd_norm: str | None = None) -> tuple[str, tuple[float, float, float]] | None:
    """(source, (clean, linf, l2)) the paper reports for a checkpoint's run (method, dataset, lambda), or
    None.

    The Class Mean lambda ablation (Figure 5) is used when its lambda matches; otherwise the Table 1 / 2 row,
    whose source names the paper's lambda so a mismatch is visible. `rigd_norm`: a RIGD run's teacher's threat
    model.
    """
    dataset, lam = run.get("dataset"), run.get("lam")
    row, table = paper_row_name(run.get("method"), lam, rigd_norm), TABLES.get(str(dataset))
    if row is None or table is None:
        return None
    paper_lam = LAMBDAS[dataset].get(row)
    if dataset == "cifar10" and row == "Class Mean" and lam is not None and float(lam) != paper_lam:
        for ablation_lam, numbers in CM_LAMBDA_ABLATION.items():
            if abs(float(lam) - ablation_lam) < 1e-9:
                return f"Figure 5, Class Mean, lambda={ablation_lam:g}", numbers
    return f"{TABLE_NAMES[dataset]}, {row}" + (f", lambda={paper_lam:g}" if paper_lam else ""), table[row]


def default_lambda(name: str, dataset: str) -> float:
    """Table 3's lambda for a method on a dataset (CIFAR-10's for any other data; 0 without a PAG term)."""
    row = paper_row_name(name, rigd_norm="linf")  # Table 3 gives both RIGD rows the same lambda
    lambdas = LAMBDAS.get(dataset, LAMBDAS["cifar10"])
    return lambdas.get(row, 0.0) if row and METHODS[method(name).name].target else 0.0


def display_rank(name: str | None) -> int:
    """Where a method's checkpoints sort: the paper's rows in order, then teachers, then imported models."""
    m = method(name)
    return list(METHODS).index(m.name) if m else list(METHODS).index("rigd")


assert all(m.row in (*TABLES["cifar10"], "RIGD", None) for m in METHODS.values()), (
    "a row the paper does not have"
)
