"""How the tabs' tables print numbers: fixed decimals, linf in /255, blanks for what was never measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pagdemo.records.report import data_label

RECORDED = ("clean %", "PGD linf %", "PGD l2 %", "paper clean %", "paper linf %", "paper l2 %")


def placeholder(text: str, columns: list[str]) -> pd.DataFrame:
    """What a result table says before its first run."""
    return pd.DataFrame([[text] + [""] * (len(columns) - 1)], columns=columns)


def probability_table(
    names: list[str], classes: list[str], targets: list[int], probs: np.ndarray
) -> pd.DataFrame:
    """p(target) per model and target, always with three decimals."""
    table = pd.DataFrame(
        [[f"{p:.3f}" for p in row] for row in probs.astype(np.float64)], columns=[classes[t] for t in targets]
    )
    table.insert(0, "model", names)
    return table


def compare_table(results: list[dict], classes: list[str]) -> pd.DataFrame:
    """One row per model: predictions and confidences before and after, the verdict, the perturbation's size."""
    return pd.DataFrame(
        [
            {
                "model": r["model"],
                "before": f"{classes[r['pred']]} {100 * r['conf']:.1f}%",
                "after": f"{classes[r['adv_pred']]} {100 * r['adv_conf']:.1f}%",
                "verdict": "already wrong"
                if r["already_wrong"]
                else "fooled"
                if r["fooled"]
                else "not fooled",
                "L2 of perturbation": f"{r['l2']:.3f}",
                "Linf x 255": f"{255 * r['linf']:.1f}",
            }
            for r in results
        ]
    )


def curve_table(curves: dict[str, list[tuple[float, float]]], norm: str, grid: list[float]) -> pd.DataFrame:
    """Accuracy (%) per radius and model, blank where not measured yet; linf radii in /255."""
    radii = (
        {"eps x 255": [f"{e * 255:.0f}" for e in grid]}
        if norm == "linf"
        else {"eps": [f"{e:.3g}" for e in grid]}
    )
    accuracy = {
        n: [f"{100 * a:.1f}" for _, a in pts] + [""] * (len(grid) - len(pts)) for n, pts in curves.items()
    }
    return pd.DataFrame({**radii, **accuracy})


def recorded_tables(rows: list[dict], audits: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The Robustness tab's tables: recorded accuracy beside the paper's, each record's settings, the audits."""
    table = pd.DataFrame(
        [
            {"model": r["model"], "method": r["method"], "lambda": r["lambda"]}
            | {k: percent_cell(r[k]) for k in RECORDED}
            | {"n": r["n clean"]}
            for r in rows
        ]
    )
    settings = pd.DataFrame(
        [
            {
                "model": r["model"],
                "linf settings": data_label(r["linf settings"]),
                "l2 settings": data_label(r["l2 settings"]),
                "paper source": r["paper source"],
            }
            for r in rows
        ]
    )
    checks = pd.DataFrame(
        [
            {
                "model": a["model"],
                "norm": a["norm"],
                "n": a.get("n"),
                "PGD-20 %": percent_cell(a.get("PGD-20 %")),
                "AutoAttack %": percent_cell(a.get("AutoAttack %")),
                "verdict": a["verdict"],
                "PAG score": num(a.get("PAG score")),
                "grad cos": num(a.get("gradient cosine")),
                "judge": Path(a["judge"]).name if a.get("judge") else "",
                "device": a.get("device") or "",
            }
            for a in audits
        ]
    )
    return table, settings, checks


def percent_cell(percent: Any) -> str:
    """A percentage already in % (46.36) as a table cell with one decimal, blank when missing."""
    return "" if percent is None else f"{float(percent):.1f}"


def num(value: Any) -> str:
    """A score with three decimals, blank when missing."""
    return "" if value is None else f"{float(value):.3f}"


def toy_cells(m: dict) -> dict[str, str]:
    """One toy model's numbers for the table."""
    return {
        "clean %": f"{m['clean_acc']:.1f}",
        "PGD-10 %": f"{m['pgd_acc']:.1f}",
        "ray-search %": f"{m['ray_search_acc']:.1f}",
        "distance to boundary": f"{m['boundary_dist']:.2f}",
    }
