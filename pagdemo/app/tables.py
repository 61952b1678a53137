"""How the tabs' tables print numbers: fixed decimals, linf in /255, blanks for what was never measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pagdemo.records.report import data_label

RECORDED = ("clean %", "PGD linf %", "PGD l2 %", "paper clean %", "paper linf %", "paper l2 %")


def cell(value: Any, digits: int = 1) -> str:
    """A number (a percentage already in %, a score) with fixed decimals, blank when missing."""
    return "" if value is None else f"{float(value):.{digits}f}"


def probability_table(names: list[str], targets: list[str], probs: np.ndarray) -> pd.DataFrame:
    """p(target) per model and target, always with three decimals."""
    rows = [[name] + [f"{p:.3f}" for p in row] for name, row in zip(names, probs.astype(np.float64))]
    return pd.DataFrame(rows, columns=["model"] + targets)


def compare_table(results: list[dict], classes: list[str]) -> pd.DataFrame:
    """One row per model: prediction and confidence before and after, the verdict, the perturbation's size."""
    verdicts = [
        "already wrong" if r["already_wrong"] else "fooled" if r["fooled"] else "not fooled" for r in results
    ]
    return pd.DataFrame(
        [
            {
                "model": r["model"],
                "before": f"{classes[r['pred']]} {100 * r['conf']:.1f}%",
                "after": f"{classes[r['adv_pred']]} {100 * r['adv_conf']:.1f}%",
                "verdict": verdict,
                "L2 of perturbation": f"{r['l2']:.3f}",
                "Linf x 255": f"{255 * r['linf']:.1f}",
            }
            for r, verdict in zip(results, verdicts)
        ]
    )


def curve_table(curves: dict[str, list[tuple[float, float]]], norm: str, grid: list[float]) -> pd.DataFrame:
    """Accuracy (%) per radius and model, blank where not measured yet; linf radii in /255."""
    radii = [f"{e * 255:.0f}" if norm == "linf" else f"{e:.3g}" for e in grid]
    accuracy = {
        n: [f"{100 * a:.1f}" for _, a in pts] + [""] * (len(grid) - len(pts)) for n, pts in curves.items()
    }
    return pd.DataFrame({"eps x 255" if norm == "linf" else "eps": radii, **accuracy})


def recorded_tables(rows: list[dict], audits: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The Robustness tab: recorded accuracy beside the paper's, each record's settings, the audits."""
    table = [
        {k: r[k] for k in ("model", "method", "lambda")}
        | {k: cell(r[k]) for k in RECORDED}
        | {"n": r["n clean"]}
        for r in rows
    ]
    settings = [
        {"model": r["model"]}
        | {k: data_label(r[k]) for k in ("linf settings", "l2 settings")}
        | {"paper source": r["paper source"]}
        for r in rows
    ]
    checks = [
        {
            "model": a["model"],
            "norm": a["norm"],
            "n": a.get("n"),
            "PGD-20 %": cell(a.get("PGD-20 %")),
            "AutoAttack %": cell(a.get("AutoAttack %")),
            "verdict": a["verdict"],
            "PAG score": cell(a.get("PAG score"), 3),
            "grad cos": cell(a.get("gradient cosine"), 3),
            "judge": Path(a["judge"]).name if a.get("judge") else "",
            "device": a.get("device") or "",
        }
        for a in audits
    ]
    return pd.DataFrame(table), pd.DataFrame(settings), pd.DataFrame(checks)


def toy_cells(m: dict) -> dict[str, str]:
    """One toy model's numbers for the table."""
    return {
        "clean %": f"{m['clean_acc']:.1f}",
        "PGD-10 %": f"{m['pgd_acc']:.1f}",
        "ray-search %": f"{m['ray_search_acc']:.1f}",
        "distance to boundary": f"{m['boundary_dist']:.2f}",
    }
