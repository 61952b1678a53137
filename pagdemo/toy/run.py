"""The toy experiment as a whole: `pagdemo toy` writes every seed's results and seed 0's figure to a folder;
the app trains (or remembers) one seed at a time."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

from torch import nn

from pagdemo.paper import TOY as PAPER
from pagdemo.records.files import write_json
from pagdemo.toy.experiment import SWEEP_SEED0, ToyConfig, run_seed, run_seeds, sweep
from pagdemo.toy.plot import seed_figure
from pagdemo.toy.stats import results_table, summarize


def run_toy(cfg: ToyConfig, progress: bool = True) -> dict:
    """`pagdemo toy`: every seed's two runs (and the sweep) in cfg.out/results.json, and seed 0's figure."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = run_seeds(cfg, list(range(cfg.seeds)), cfg.lam, progress)
    vanilla, pag, metrics = _cached_seed(cfg, 0, cfg.lam)  # seed 0 again, for its figure
    seed_figure(cfg, vanilla, pag, metrics).savefig(out / "decision_boundary.png", dpi=110)
    results = {
        "config": asdict(cfg),
        "paper": PAPER,
        "per_seed": runs,
        "summary": summarize(runs),
        "seed_0_repeats_exactly": _without_times(metrics) == _without_times(runs[0]),
    }
    if cfg.sweep_lams:
        held_out = list(range(SWEEP_SEED0, SWEEP_SEED0 + cfg.seeds))
        results["sweep"] = sweep(list(cfg.sweep_lams), held_out, cfg, progress)
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "results.json", results)
    return results


def toy_command(cfg: ToyConfig, command: str) -> str:
    """`pagdemo toy`: the results table, and where the files went."""
    table = results_table(run_toy(cfg))
    return f"{table}\nresults in {cfg.out}/results.json, figure in {cfg.out}/decision_boundary.png"


def _without_times(metrics: dict) -> dict:
    """A seed's model metrics without the training times (which vary from run to run)."""
    return {name: {m: v for m, v in metrics[name].items() if m != "train_s"} for name in ("vanilla", "pag")}


@lru_cache(maxsize=8)
def _cached_seed(cfg: ToyConfig, seed: int, lam: float) -> tuple[nn.Module, nn.Module, dict]:
    """`run_seed`, remembered per (config, seed, lambda): the app redraws a seen setting at once (8 kept)."""
    return run_seed(replace(cfg, workers=1), seed, lam)


def toy_seed(seed: int, lam: float, cfg: ToyConfig = ToyConfig()) -> tuple[nn.Module, nn.Module, dict]:
    """For the app: both models of one seed and lambda (trained, or remembered) and their metrics."""
    vanilla, pag, metrics = _cached_seed(cfg, seed, lam)
    return vanilla, pag, json.loads(json.dumps(metrics))
