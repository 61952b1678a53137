"""The toy experiment's tables in docs/toy and the README, printed from docs/toy/results.json and
ablations.json (maintainer.docs puts them in place; no number in them is typed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pagdemo.records.files import read_json
from pagdemo.toy.stats import ci_text, results_table


def toy(root: Path) -> str:
    """The toy experiment's summary over seeds, from docs/toy/results.json."""
    return results_table(read_json(root / "docs/toy/results.json"))


def toy_seeds(root: Path) -> str:
    """docs/toy: every seed's PGD accuracy, vanilla against PAG."""
    results = read_json(root / "docs/toy/results.json")
    lines = [
        "| seed | vanilla PGD-10 % | PAG PGD-10 % | PAG - vanilla | vanilla / PAG boundary distance |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['seed']} | {r['vanilla']['pgd_acc']:.1f} | {r['pag']['pgd_acc']:.1f} | "
        f"{r['pag']['pgd_acc'] - r['vanilla']['pgd_acc']:+.1f} | {r['vanilla']['boundary_dist']:.2f} / "
        f"{r['pag']['boundary_dist']:.2f} |"
        for r in results["per_seed"]
    ]
    return "\n".join(lines)


def toy_vanilla(root: Path) -> str:
    """docs/toy: how far the vanilla row is from the paper's 0.0%, in one sentence from the results."""
    results = read_json(root / "docs/toy/results.json")
    s, runs = results["summary"]["vanilla"], results["per_seed"]
    zero = [r["seed"] for r in runs if r["vanilla"]["pgd_acc"] == 0.0]
    return (
        f"Vanilla's PGD-10 accuracy is {ci_text(s['pgd_acc'])}% over {len(runs)} seeds, against the paper's "
        f"{results['paper']['vanilla']['pgd_acc']:.1f}% from one run. It is exactly 0.0% on {len(zero)} of "
        f"the {len(runs)} seeds ({', '.join(map(str, zero)) or 'none'}) and reaches "
        f"{max(r['vanilla']['pgd_acc'] for r in runs):.1f}% on the luckiest; the near-exhaustive ray search "
        f"puts it at {ci_text(s['ray_search_acc'])}%."
    )


def _sweep_rows(rows: list[dict], keys: tuple[str, ...]) -> list[str]:
    """One line per swept setting: the setting, then clean, PGD, ray-search accuracy and boundary distance."""
    return [
        " | ".join(
            [""]
            + [str(r.get(k)) for k in keys]
            + [ci_text(r[m]) for m in ("clean_acc", "pgd_acc", "ray_search_acc")]
            + [ci_text(r["boundary_dist"], 2)]
        ).strip()
        + " |"
        for r in rows
    ]


def toy_sweep(root: Path) -> str:
    """docs/toy: PAG against lambda on the held-out seeds (lambda 0 is vanilla)."""
    rows = read_json(root / "docs/toy/results.json").get("sweep", [])
    head = ["| lambda | clean % | PGD-10 % | ray-search % | boundary distance |", "|---|---|---|---|---|"]
    return "\n".join(head + _sweep_rows(rows, ("lam",)))


def toy_ablation(part: str, keys: tuple[str, ...]) -> Callable[[Path], str]:
    """docs/toy: one part of docs/toy/ablations.json."""

    def table(root: Path) -> str:
        rows = (read_json(root / "docs/toy/ablations.json", {}) or {}).get(part)
        if not rows:
            return f"(not run yet: `python docs/toy/ablations.py {part}`)"
        head = [
            "| " + " | ".join(keys) + " | clean % | PGD-10 % | ray-search % | boundary distance |",
            "|" + "---|" * (len(keys) + 4),
        ]
        return "\n".join(head + _sweep_rows(rows, keys))

    return table
