"""The toy experiment over seeds: 95% bootstrap intervals, the paired PAG - vanilla difference with a sign
test, and the results table that the CLI, the docs and the app print from the same records."""

from __future__ import annotations

import math

import torch

from pagdemo.paper import TOY as PAPER

BOOTSTRAP = 10_000  # resamples of the seeds for a 95% interval


def bootstrap_ci(values: list[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (resamples drawn from a fixed seed)."""
    v = torch.tensor(values, dtype=torch.float64)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    idx = torch.randint(0, len(v), (BOOTSTRAP, len(v)), generator=torch.Generator().manual_seed(seed))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return tuple(torch.quantile(v[idx].mean(dim=1), q).tolist())


def describe(values: list[float]) -> dict[str, float]:
    """Mean, sample std and 95% bootstrap interval of one metric over seeds."""
    v = torch.tensor(values, dtype=torch.float64)
    std = v.std().item() if len(v) > 1 else 0.0
    return {"mean": v.mean().item(), "std": std, "ci95": list(bootstrap_ci(values)), "n": len(v)}


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value of at least `wins` wins in wins + losses fair coin flips (ties left out)."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0


def summarize(runs: list[dict]) -> dict:
    """Per model, every metric's mean / std / 95% interval; and the paired PAG - vanilla PGD difference."""
    out = {
        name: {m: describe([r[name][m] for r in runs]) for m in runs[0][name] if m != "train_s"}
        for name in ("vanilla", "pag")
    }
    diffs = [r["pag"]["pgd_acc"] - r["vanilla"]["pgd_acc"] for r in runs]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    counts = {"wins": wins, "losses": losses, "ties": len(diffs) - wins - losses}
    out["pag_minus_vanilla_pgd"] = {**describe(diffs), **counts, "sign_test_p": sign_test(wins, losses)}
    return out


def ci_text(s: dict, digits: int = 1) -> str:
    """mean [95% interval] of a summarized metric."""
    return f"{s['mean']:.{digits}f} [{s['ci95'][0]:.{digits}f}, {s['ci95'][1]:.{digits}f}]"


def results_table(results: dict) -> str:
    """Markdown table of the summary over seeds next to the paper's single run, for the CLI, docs and app."""
    cfg, s = results["config"], results["summary"]
    n = len(results["per_seed"])
    head = "model | clean acc % | PGD-10 acc % | ray-search acc % | boundary distance | paper: clean / PGD %"
    lines = [f"| {head} |", "|---|---|---|---|---|---|"]
    for name, label in (("vanilla", "Vanilla"), ("pag", f"PAG NN (lambda={cfg['lam']:g})")):
        m, p = s[name], PAPER[name]
        cells = [ci_text(m[k]) for k in ("clean_acc", "pgd_acc", "ray_search_acc")]
        cells.append(ci_text(m["boundary_dist"], 2))
        lines.append(f"| {label} | {' | '.join(cells)} | {p['clean_acc']:.1f} / {p['pgd_acc']:.1f} |")
    d = s["pag_minus_vanilla_pgd"]
    lines += [
        "",
        f"Mean over {n} seeds [95% bootstrap interval], {cfg['dtype']}. PAG - vanilla under PGD-10, paired "
        f"by seed: {ci_text(d)} points; PAG ahead on {d['wins']} of {n} seeds, behind on {d['losses']} "
        f"(sign test p = {d['sign_test_p']:.2g}).",
    ]
    return "\n".join(lines)
