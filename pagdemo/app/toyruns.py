"""The Toy tab's handler: the paper's 2-D experiment (Sec. 5.1) trained now for one lambda and seed, beside what
`pagdemo toy` saved (its figure and summary are shown before anyone trains). Toy runs are cached in
pagdemo.toy.experiment (8 settings)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from pagdemo.app.errors import InputError
from pagdemo.app.tables import toy_cells
from pagdemo.records.files import read_json
from pagdemo.toy.experiment import ToyConfig
from pagdemo.toy.plot import seed_figure
from pagdemo.toy.run import toy_seed
from pagdemo.toy.stats import results_table
from pagdemo.viz.plots import figure_to_array


class ToyRuns:
    """The toy experiment's settings and where `pagdemo toy --out` saved its results."""

    def __init__(self, config: ToyConfig = ToyConfig(), saved: str | Path = "docs/toy") -> None:
        self.config, self.saved = config, Path(saved)

    def toy(self, lam: Any, seed: Any) -> Iterator[tuple[Any, pd.DataFrame, str]]:
        """The 2-D experiment (Sec. 5.1) for one lambda and seed; the saved run's numbers beside it when it has them."""
        try:
            lam, seed = float(lam), int(seed)
        except (TypeError, ValueError):
            raise InputError(f"lambda and seed must be numbers, got {lam!r} and {seed!r}") from None
        if not 0 <= lam <= 10 or not 0 <= seed <= 999:
            raise InputError(f"choose 0 <= lambda <= 10 and a seed from 0 to 999, got {lam:g} and {seed}")
        yield (
            gr.skip(),
            gr.skip(),
            f"training vanilla and PAG for seed {seed}, lambda {lam:g} ({self.train_time()})...",
        )
        vanilla, pag, metrics = toy_seed(seed, lam, self.config)
        rows = [
            {"model": f"vanilla (seed {seed})", **toy_cells(metrics["vanilla"])},
            {"model": f"PAG lambda={lam:g} (seed {seed})", **toy_cells(metrics["pag"])},
        ]
        saved = self._saved_seed(seed, lam)
        if not saved:
            note = "not in the saved run (another seed or lambda)"
        else:
            rows += [
                {"model": f"vanilla, saved run (seed {seed})", **toy_cells(saved["vanilla"])},
                {"model": f"PAG, saved run (seed {seed})", **toy_cells(saved["pag"])},
            ]
            same = all(abs(saved[m]["pgd_acc"] - metrics[m]["pgd_acc"]) < 1e-9 for m in ("vanilla", "pag"))
            note = (
                "the saved run (`pagdemo toy`) gave the same numbers for this seed"
                if same
                else "the saved run gave other numbers for this seed: it ran on another CPU, whose rounding "
                "changes a chaotic 2-D training"
            )
        fig = seed_figure(self.config, vanilla, pag, metrics)
        yield figure_to_array(fig), pd.DataFrame(rows), f"Trained now: seed {seed}, lambda {lam:g}; {note}."

    def _saved_seed(self, seed: int, lam: float) -> dict | None:
        """The saved run's record of one seed, when it ran this lambda with the app's settings."""
        saved = read_json(self.saved / "results.json", {}) or {}
        config = saved.get("config", {})
        if config.get("lam") != lam or config.get("epochs") != self.config.epochs:
            return None
        return next((r for r in saved.get("per_seed", []) if r["seed"] == seed), None)

    def train_time(self) -> str:
        """How long one seed trains, from the saved run's own record (never a number typed into the code)."""
        saved = read_json(self.saved / "results.json", {}) or {}
        times = [
            r["vanilla"].get("train_s", 0) + r["pag"].get("train_s", 0) for r in saved.get("per_seed", [])
        ]
        return (
            f"the saved run trained each seed in {sum(times) / len(times):.0f} s"
            if times
            else "seconds to a minute"
        )

    def saved_result(self) -> tuple[str | None, str]:
        """The figure and summary `pagdemo toy` saved, shown before anyone trains, and what they show."""
        figure, results = self.saved / "decision_boundary.png", read_json(self.saved / "results.json")
        if not figure.exists() or not results:
            return None, "Press *Train and draw* to train both models and draw their decision boundaries."
        try:
            cfg = results["config"]
            text = (
                f"**The saved result of `pagdemo toy`** ({len(results['per_seed'])} seeds, lambda {cfg['lam']:g}, "
                f"{cfg['dtype']}; the figure shows seed 0). A single seed is a chaotic training's outcome: the "
                "claim is in the summary.\n\n" + results_table(results)
            )
        except (KeyError, TypeError, IndexError):
            text = f"The saved result in `{self.saved}` is in an older format: rerun `pagdemo toy --out {self.saved}`."
        return str(figure), text
