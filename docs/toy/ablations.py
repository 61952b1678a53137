"""The choices App. C.1 leaves open, measured on held-out seeds 100-109: lambda x grad_of, K, PGD random
start.

Run from the repository root: `python docs/toy/ablations.py {lam,k,attack}`; each part merges its
rows into docs/toy/ablations.json. `k` and `attack` use ToyConfig's defaults (the chosen grad_of, lambda),
in float64 on 2 worker processes (the numbers do not depend on the number of workers).
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

from pagdemo.toy.experiment import SWEEP_SEED0, ToyConfig, evaluate_toy, make_test_data, sweep, train_toy
from pagdemo.toy.stats import describe

SEEDS = list(range(SWEEP_SEED0, SWEEP_SEED0 + 10))
BASE = ToyConfig(workers=2)
OUT = Path(__file__).with_name("ablations.json")


def lam_part() -> list[dict]:
    """PGD accuracy against lambda for both input-gradient conventions."""
    return sweep(
        [0.0, 0.03, 0.1, 0.3, 1.0, 3.0], SEEDS, replace(BASE, grad_of="logsoftmax"), progress=False
    ) + sweep([0.1, 0.3, 1.0, 3.0, 10.0], SEEDS, replace(BASE, grad_of="logit"), progress=False)


def k_part() -> list[dict]:
    """The Nearest Neighbor sample size K at the chosen lambda."""
    return [
        row
        for k in (3, 10, 30, 100, 300)
        for row in sweep([BASE.lam], SEEDS, replace(BASE, k=k), progress=False)
    ]


def attack_part() -> list[dict]:
    """The same trained models under PGD from the clean point and from a random start in the ball."""
    cfg, rows = BASE, []
    for lam in (0.0, cfg.lam):
        models = [train_toy(cfg, seed, lam) for seed in SEEDS]
        for random_init in (False, True):
            c = replace(cfg, random_init=random_init)
            runs = [evaluate_toy(m, *make_test_data(c, s), c) for m, s in zip(models, SEEDS)]
            rows.append(
                {
                    "lam": lam,
                    "random_init": random_init,
                    "seeds": SEEDS,
                    "per_seed": runs,
                    **{m: describe([r[m] for r in runs]) for m in runs[0]},
                }
            )
    return rows


if __name__ == "__main__":
    part = sys.argv[1]
    rows = {"lam": lam_part, "k": k_part, "attack": attack_part}[part]()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}  # read late: parts may run in parallel
    results[part] = rows
    OUT.write_text(json.dumps(results, indent=2))
    for row in results[part]:
        keys = {k: row[k] for k in ("lam", "grad_of", "k", "random_init") if k in row}
        print(
            keys,
            " ".join(
                f"{m} {row[m]['mean']:.1f} +- {row[m]['std']:.1f}"
                for m in ("clean_acc", "pgd_acc", "ray_search_acc", "boundary_dist")
            ),
            flush=True,
        )
