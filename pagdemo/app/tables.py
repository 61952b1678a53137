"""How the tabs' tables print numbers: fixed decimals, linf in /255, blanks for what was never measured."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pagdemo.threat import (
    eps_text as eps_text,
)  # its home is pagdemo.threat; the app's modules import it here


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
