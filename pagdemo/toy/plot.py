"""The toy experiment's figure (the paper's Figure 3): each model's decision regions with the test points."""

from __future__ import annotations

import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from torch import nn

from pagdemo.toy.experiment import ToyConfig, make_test_data, predict

CLASS_NAMES = ("class A", "class B")
LIMS = (-70.0, 70.0, -125.0, 125.0)  # x1 from, to; x2 from, to


def draw_boundaries(
    vanilla: nn.Module, pag: nn.Module, x: torch.Tensor, y: torch.Tensor, titles: tuple[str, str], eps: float
) -> Figure:
    """Figure 3 of the paper: test points over each model's predicted-class background, side by side."""
    x0, x1, y0, y1 = LIMS
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, 400), torch.linspace(y0, y1, 700), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    gx, gy = gx.numpy(), gy.numpy()
    fig = Figure(figsize=(10, 8.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors, light = ("#1f77b4", "#d62728"), ListedColormap(["#c6dbef", "#fcc5c0"])
    for ax, model, title in zip(axes, (vanilla, pag), titles):
        pred = predict(model, grid).view(gx.shape).numpy()
        ax.pcolormesh(gx, gy, pred, cmap=light, vmin=0, vmax=1, shading="auto", rasterized=True)
        ax.contour(gx, gy, pred, levels=[0.5], colors="k", linewidths=1.0)
        for c in (0, 1):
            pts = x[y == c].double().numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colors[c], zorder=3)
        ax.add_patch(Circle((x0 + 20, y1 - 20), eps, fill=False, ls="--", color="k", zorder=4))
        ax.text(x0 + 20, y1 - 20, f"eps={eps:g}", ha="center", va="center", fontsize=8)
        ax.set(title=title, xlim=(x0, x1), ylim=(y0, y1), xlabel="x1", aspect="equal")
    axes[0].set_ylabel("x2")
    handles = [
        Line2D([], [], ls="", marker="o", color=colors[c], label=f"test point, {CLASS_NAMES[c]}")
        for c in (0, 1)
    ]
    handles += [Patch(color=light(c), label=f"predicted {CLASS_NAMES[c]}") for c in (0, 1)]
    handles += [Line2D([], [], color="k", label="decision boundary")]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=9)
    return fig


def seed_figure(cfg: ToyConfig, vanilla: nn.Module, pag: nn.Module, metrics: dict) -> Figure:
    """The two panels of one seed, on its test set, titled with the seed and each model's accuracies."""
    v, p, s, lam = metrics["vanilla"], metrics["pag"], metrics["seed"], metrics["lam"]
    titles = (
        f"Vanilla (seed {s}): clean {v['clean_acc']:.1f}%, PGD {v['pgd_acc']:.1f}%",
        f"PAG (NN, lambda={lam:g}, seed {s}): clean {p['clean_acc']:.1f}%, PGD {p['pgd_acc']:.1f}%",
    )
    return draw_boundaries(vanilla, pag, *make_test_data(cfg, s), titles, cfg.eps)
