"""The paper's 2-D toy experiment (Sec. 5.1, App. C.1): vanilla vs PAG (Nearest Neighbor) on a line.

Two classes, three Gaussian modes each, all on the line x2 = 2 * x1. A 2-32-2 ReLU MLP is trained
twice from the same seed (same data, initialization and batch order): with plain cross-entropy,
and with the PAG loss of Eq. 1 using the Nearest Neighbor target. Both reach 100% clean accuracy;
under an L2 PGD-10 attack (eps 15) the vanilla boundary, which hugs the data line, mostly fails,
while the PAG boundary stands across the line, far from the data (numbers: docs/toy/README.md).

The loss (`pagdemo.losses.pag_loss`), the NN target (`pagdemo.targets.NearestNeighborTarget`) and
the attack (`pagdemo.attacks.pgd`) are the image models' code. Coordinates are raw (no [0, 1] pixel range), so the attack runs with `bounds=None`.
"""
from __future__ import annotations

import copy
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import pgd
from pagdemo.inputgrads import check_grad_of
from pagdemo.losses import PAG_IMPLS, pag_loss
from pagdemo.models import build_model
from pagdemo.paper import TOY as PAPER
from pagdemo.targets import NearestNeighborTarget

MODE_CENTERS = ((-50.0, -10.0, 30.0), (-30.0, 10.0, 50.0))  # x1 centres of class A's and class B's modes
SLOPE = 2.0  # the data line: x2 = SLOPE * x1
CLASS_NAMES = ("class A", "class B")
TEST_SEED_OFFSET = 10_000  # test points come from their own generator: "fresh" samples, never the training ones
SWEEP_SEED0 = 100  # the lambda sweep runs on seeds 100, 101, ...: lambda is not chosen on the reported seeds


@dataclass(frozen=True)
class ToyConfig:
    """App. C.1 defaults; `lam`, `k`, `grad_of` and `random_init` are our choices (the paper gives none)."""

    seeds: int = 5  # number of seeds: 0, 1, ..., seeds - 1 (same seed for the vanilla and the PAG run)
    lam: float = 1.0  # PAG weight lambda of Eq. 1 (chosen by a sweep on held-out seeds, docs/toy/README.md)
    k: int = 30  # Nearest Neighbor sample size: class-t candidates drawn once per class
    grad_of: str = "logit"  # input gradient of "logit" (Eq. 1, chosen) or "logsoftmax" (authors' code)
    impl: str = "batched"  # PAG_IMPLS key; the MLP has no BatchNorm, so "loop" gives the same numbers
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01  # Adam
    n_per_mode: int = 1000  # training samples per mode (6 modes: 6000 in all)
    n_test: int = 600  # fresh test samples, split evenly over the 6 modes
    sigma: float = 1.0  # std of x1 within a mode
    eps: float = 15.0  # L2 attack radius, in coordinate units
    steps: int = 10
    step_size: float = 2.0
    random_init: bool = False  # the paper's "simple PGD": start at the clean point
    sweep_lams: tuple[float, ...] = ()  # lambdas to sweep on `seeds` held-out seeds (SWEEP_SEED0...); empty: no sweep
    out: str = "docs/toy"

    def __post_init__(self) -> None:
        """Reject bad settings when the config is made (from argv or the app), not minutes into a run."""
        n_modes = sum(len(c) for c in MODE_CENTERS)
        check_grad_of(self.grad_of)
        if self.impl not in PAG_IMPLS:
            raise ValueError(f"unknown PAG implementation {self.impl!r}; choose one of {sorted(PAG_IMPLS)}")
        if self.n_test % n_modes:
            raise ValueError(f"n_test must be a multiple of {n_modes} (one share per mode), got {self.n_test}")
        for name in ("seeds", "k", "epochs", "batch_size", "n_per_mode", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lam < 0 or any(lam < 0 for lam in self.sweep_lams):
            raise ValueError(f"lambda must be >= 0, got lam={self.lam}, sweep_lams={self.sweep_lams}")


# ----------------------------------------------------------------------------- data and targets

def make_toy_data(n_per_mode: int, generator: torch.Generator, sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """App. C.1 data: x1 ~ N(c, sigma^2) for each mode centre c, x2 = 2 * x1; returns (x (N, 2), y (N,))."""
    xs, ys = [], []
    for label, centers in enumerate(MODE_CENTERS):
        for c in centers:
            x1 = c + sigma * torch.randn(n_per_mode, generator=generator)
            xs.append(torch.stack([x1, SLOPE * x1], dim=1))
            ys.append(torch.full((n_per_mode,), label, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def make_test_data(cfg: ToyConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_test` fresh points from the training distribution, from a generator the training never touches."""
    gen = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    return make_toy_data(cfg.n_test // sum(len(c) for c in MODE_CENTERS), gen, cfg.sigma)


def nn_targets(x: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Nearest Neighbor g(x, t) = r(x, t) - x of every training point and class, computed once: (N, C, 2).

    `pagdemo.targets.NearestNeighborTarget` (the image models' NN target): r(x, t) is the
    L2-nearest of k class-t points drawn once with `seed`, never x itself (matched by index).
    The toy has no augmentation, so precomputing, as the paper did, is exact.
    """
    target = NearestNeighborTarget(x, y, int(y.max()) + 1, k=k, seed=seed)
    return target(x, y, idx=torch.arange(len(x)))


# ----------------------------------------------------------------------------- training

def train_toy(cfg: ToyConfig, seed: int, lam: float, progress: bool = False) -> nn.Module:
    """Train the 2-32-2 MLP with Adam; lam = 0 is the vanilla (cross-entropy only) run.

    The seed fixes the data, the initialization and the batch order, so the vanilla and PAG runs
    of one seed differ only in the loss (the NN candidates are drawn from a generator of their own).
    Runs single-threaded: a 2-32-2 MLP's ops are far too small to gain from more threads, and
    on 2 shared cores a second thread made the PAG run about 4x slower.
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = make_toy_data(cfg.n_per_mode, gen, cfg.sigma)
    targets = nn_targets(x, y, cfg.k, seed) if lam > 0 else None
    torch.manual_seed(seed)
    model = build_model("mlp", 2)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    with _single_thread():
        for _ in tqdm(range(cfg.epochs), desc=f"seed {seed} lam {lam:g}", leave=False, disable=not progress):
            for idx in torch.randperm(x.shape[0], generator=gen).split(cfg.batch_size):
                if targets is None:
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                else:
                    loss, _ = pag_loss(model, x[idx], y[idx], targets[idx], lam, grad_of=cfg.grad_of, impl=cfg.impl)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()
    return model


@contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread for the tiny training steps, then the caller's setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Predicted class of many 2-D points, in chunks to bound memory."""
    return torch.cat([model(c).argmax(dim=1) for c in x.split(chunk)])


def boundary_distance(model: nn.Module, x: torch.Tensor, n_rays: int = 120, r_max: float = 40.0,
                      step: float = 0.5, bisect: int = 12) -> torch.Tensor:
    """Minimal L2 distance from each point to the decision boundary: (N,).

    Along `n_rays` directions (3 degrees apart) from each point we march outwards in `step`
    increments to the first point whose predicted class differs from the point's own, then
    bisect that last interval; the minimum over rays is the distance. A point whose prediction
    never changes within `r_max` gets `r_max`; a boundary region thinner than `step` can be missed.
    """
    angles = torch.arange(n_rays) * (2 * math.pi / n_rays)
    dirs = torch.stack([angles.cos(), angles.sin()], dim=1)  # (R, 2)
    radii = torch.arange(1, int(r_max / step) + 1) * step  # (S,)
    own = _predict(model, x)
    pts = x[:, None, None, :] + radii[None, None, :, None] * dirs[None, :, None, :]  # (N, R, S, 2)
    flipped = (_predict(model, pts.reshape(-1, 2)).view(pts.shape[:3]) != own[:, None, None])
    hit = flipped.any(dim=2)
    first = flipped.float().argmax(dim=2)  # index of the first flipped radius (0 if none)
    hi = torch.where(hit, radii[first], torch.full_like(first, r_max, dtype=x.dtype))
    lo = (hi - step).clamp_min(0)
    for _ in range(bisect):
        mid = (lo + hi) / 2
        mid_pts = (x[:, None, :] + mid[..., None] * dirs[None]).reshape(-1, 2)
        moved = _predict(model, mid_pts).view(mid.shape) != own[:, None]
        hi, lo = torch.where(moved, mid, hi), torch.where(moved, lo, mid)
    return hi.min(dim=1).values


def attack_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ToyConfig, seed: int = 0) -> torch.Tensor:
    """App. C.1 attack: L2 PGD, eps 15, 10 steps of size 2, unbounded coordinates."""
    gen = torch.Generator().manual_seed(seed)
    return pgd(model, x, y, eps=cfg.eps, norm="l2", steps=cfg.steps, step_size=cfg.step_size,
               random_init=cfg.random_init, bounds=None, generator=gen)


def evaluate_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ToyConfig) -> dict[str, float]:
    """Accuracies (%) and the mean distance from the points to the decision boundary.

    `ray_search_acc` counts a point as robust when it is classified correctly and no class
    change lies within eps along any of the rays of `boundary_distance`: a near-exhaustive
    attack in 2-D, so `pgd_acc` (a local search) is normally >= `ray_search_acc`.
    """
    correct = _predict(model, x) == y
    dist = boundary_distance(model, x)
    return {
        "clean_acc": _percent(correct),
        "pgd_acc": _percent(_predict(model, attack_toy(model, x, y, cfg)) == y),
        "ray_search_acc": _percent(correct & (dist >= cfg.eps)),
        "boundary_dist": dist.mean().item(),
    }


def _percent(hits: torch.Tensor) -> float:
    """Share of True entries, in percent."""
    return 100 * hits.float().mean().item()


def run_seed(cfg: ToyConfig, seed: int, lam: float, progress: bool = False) -> tuple[nn.Module, nn.Module, dict]:
    """Train vanilla and PAG for one seed; evaluate both on the seed's fresh test set."""
    x_test, y_test = make_test_data(cfg, seed)
    metrics: dict = {"seed": seed, "lam": lam}
    models = []
    for name, weight in (("vanilla", 0.0), ("pag", lam)):
        t0 = time.perf_counter()
        models.append(train_toy(cfg, seed, weight, progress))
        train_s = time.perf_counter() - t0
        metrics[name] = {**evaluate_toy(models[-1], x_test, y_test, cfg), "train_s": train_s}
    return models[0], models[1], metrics


def _mean_std(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample std over seeds of every metric in a list of metric dicts."""
    out = {}
    for m in runs[0]:
        v = torch.tensor([r[m] for r in runs], dtype=torch.float64)
        out[m] = {"mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0}
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean +- std over seeds of both models' metrics, from `run_seed`'s metric dicts."""
    return {name: _mean_std([r[name] for r in runs]) for name in ("vanilla", "pag")}


def sweep(lams: list[float], seeds: list[int], cfg: ToyConfig = ToyConfig(), progress: bool = True) -> list[dict]:
    """To choose lambda: PAG's metrics per seed and mean +- std for each lambda (lambda = 0 is vanilla)."""
    rows = []
    for lam in tqdm(lams, desc="lambda sweep", disable=not progress):
        runs = [evaluate_toy(train_toy(cfg, seed, lam), *make_test_data(cfg, seed), cfg) for seed in seeds]
        rows.append({"lam": lam, "grad_of": cfg.grad_of, "k": cfg.k, "seeds": list(seeds),
                     "per_seed": runs, **_mean_std(runs)})
    return rows


# ----------------------------------------------------------------------------- figure

def draw_boundaries(vanilla: nn.Module, pag: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor,
                    titles: tuple[str, str] = ("Vanilla", "PAG (Nearest Neighbor)"), eps: float = 15.0,
                    lims: tuple[float, float, float, float] = (-70.0, 70.0, -125.0, 125.0)) -> Figure:
    """Figure 3 of the paper: test points over each model's predicted-class background, side by side."""
    x0, x1, y0, y1 = lims
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, 400), torch.linspace(y0, y1, 700), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    fig = Figure(figsize=(10, 8.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors, light = ("#1f77b4", "#d62728"), ListedColormap(["#c6dbef", "#fcc5c0"])
    for ax, model, title in zip(axes, (vanilla, pag), titles):
        pred = _predict(model, grid).view(gx.shape).numpy()
        ax.pcolormesh(gx.numpy(), gy.numpy(), pred, cmap=light, vmin=0, vmax=1, shading="auto", rasterized=True)
        ax.contour(gx.numpy(), gy.numpy(), pred, levels=[0.5], colors="k", linewidths=1.0)
        for c in (0, 1):
            pts = x_test[y_test == c].numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colors[c], zorder=3)
        ax.add_patch(Circle((x0 + 20, y1 - 20), eps, fill=False, ls="--", color="k", zorder=4))
        ax.text(x0 + 20, y1 - 20, f"eps={eps:g}", ha="center", va="center", fontsize=8)
        ax.set(title=title, xlim=(x0, x1), ylim=(y0, y1), xlabel="x1", aspect="equal")
    axes[0].set_ylabel("x2")
    handles = [Line2D([], [], ls="", marker="o", color=colors[c], label=f"test point, {CLASS_NAMES[c]}") for c in (0, 1)]
    handles += [Patch(color=light(c), label=f"predicted {CLASS_NAMES[c]}") for c in (0, 1)]
    handles += [Line2D([], [], color="k", label="decision boundary")]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=9)
    return fig


def _titles(lam: float, metrics: dict) -> tuple[str, str]:
    """Panel titles carrying each model's clean and PGD accuracy."""
    v, p = metrics["vanilla"], metrics["pag"]
    return (f"Vanilla: clean {v['clean_acc']:.1f}%, PGD {v['pgd_acc']:.1f}%",
            f"PAG (NN, lambda={lam:g}): clean {p['clean_acc']:.1f}%, PGD {p['pgd_acc']:.1f}%")


def _seed_figure(cfg: ToyConfig, vanilla: nn.Module, pag: nn.Module, metrics: dict) -> Figure:
    """The two panels of one seed, on that seed's test set."""
    x_test, y_test = make_test_data(cfg, metrics["seed"])
    return draw_boundaries(vanilla, pag, x_test, y_test, _titles(metrics["lam"], metrics), cfg.eps)


@lru_cache(maxsize=16)
def _cached_seed(cfg: ToyConfig, seed: int, lam: float) -> tuple[nn.Module, nn.Module, dict]:
    """`run_seed`, remembered per (config, seed, lambda) so the app redraws a seen setting instantly."""
    return run_seed(cfg, seed, lam)


def toy_figure(seed: int, lam: float, cfg: ToyConfig = ToyConfig()) -> tuple[Figure, dict]:
    """For the app: train (or reuse) both models of one seed and lambda; return (figure, metrics)."""
    vanilla, pag, metrics = _cached_seed(cfg, seed, lam)
    return _seed_figure(cfg, vanilla, pag, metrics), copy.deepcopy(metrics)


# ----------------------------------------------------------------------------- the command

def run_toy(cfg: ToyConfig, progress: bool = True) -> dict:
    """`pagdemo toy`: vanilla and PAG for each seed; writes results.json and decision_boundary.png to cfg.out.

    The figure shows seed 0. With `cfg.sweep_lams`, results.json also holds the lambda sweep.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in tqdm(range(cfg.seeds), desc="seeds", disable=not progress):
        vanilla, pag, metrics = run_seed(cfg, seed, cfg.lam, progress)
        runs.append(metrics)
        if seed == 0:
            fig = _seed_figure(cfg, vanilla, pag, metrics)
            fig.savefig(out / "decision_boundary.png", dpi=110)
    results = {"config": asdict(cfg), "paper": PAPER, "per_seed": runs, "summary": summarize(runs)}
    if cfg.sweep_lams:
        held_out = list(range(SWEEP_SEED0, SWEEP_SEED0 + cfg.seeds))
        results["sweep"] = sweep(list(cfg.sweep_lams), held_out, cfg, progress)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def results_table(results: dict) -> str:
    """Markdown table of mean +- std over seeds next to the paper's single run, for the CLI and README."""
    n = len(results["per_seed"])
    lines = ["| model | clean acc % | PGD acc % | ray-search acc % | boundary dist | paper clean / PGD % |",
             "|---|---|---|---|---|---|"]
    for name, label in (("vanilla", "Vanilla"), ("pag", f"PAG NN (lambda={results['config']['lam']:g})")):
        s, p = results["summary"][name], PAPER[name]
        cells = [f"{s[m]['mean']:.1f} +- {s[m]['std']:.1f}" for m in ("clean_acc", "pgd_acc", "ray_search_acc")]
        cells.append(f"{s['boundary_dist']['mean']:.2f} +- {s['boundary_dist']['std']:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {p['clean_acc']:.1f} / {p['pgd_acc']:.1f} |")
    return "\n".join(lines) + f"\n\n(mean +- std over {n} seeds)"
