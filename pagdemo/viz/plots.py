"""Figures (matplotlib, without pyplot: no global backend, nothing kept alive between calls)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def curve_plot(curves: dict[str, list[tuple[float, float]]], norm: str, caption: str) -> Figure:
    """Accuracy against eps, one line per model; linf radii in /255, as people write them."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, points in curves.items():
        eps, acc = zip(*points) if points else ((), ())
        x = [e * 255 if norm == "linf" else e for e in eps]
        ax.plot(x, [100 * a for a in acc], marker="o", label=name)
    xlabel = "eps x 255 (linf)" if norm == "linf" else "eps (l2)"
    ax.set(xlabel=xlabel, ylabel="accuracy (%)", ylim=(-2, 102), title=caption)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return fig


def robustness_plot(rows: list[dict[str, Any]]) -> Figure:
    """Grouped bars per checkpoint: our clean / linf / l2 (solid) beside the paper's (hatched)."""
    fig = Figure(figsize=(max(6.0, 1.8 * len(rows) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    metrics = (  # (label, our column, the paper's column)
        ("clean", "clean %", "paper clean %"),
        ("PGD-20 linf", "PGD linf %", "paper linf %"),
        ("PGD-20 l2", "PGD l2 %", "paper l2 %"),
    )
    width = 0.13
    for k, (label, ours, theirs) in enumerate(metrics):
        colour = f"C{k}"
        xs = np.arange(len(rows)) + (2 * k - 2.5) * width
        ax.bar(xs, [r[ours] or 0 for r in rows], width, color=colour, label=f"{label} (ours)")
        paper = [r[theirs] or 0 for r in rows]
        ax.bar(
            xs + width, paper, width, color="white", edgecolor=colour, hatch="//", label=f"{label} (paper)"
        )
    ax.set_xticks(np.arange(len(rows)), [r["model"] for r in rows], rotation=15, fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="Recorded accuracy (metrics.json) vs the paper")
    fig.legend(fontsize=8, ncol=3, loc="outside lower center")
    ax.grid(axis="y", alpha=0.3)
    return fig


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a figure to an RGB array (the app shows arrays); the figure is garbage once this returns."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def cost_plot(rows: list[dict[str, Any]]) -> Figure:
    """Robust accuracy (PGD-20, both norms) against training seconds, one point per checkpoint and norm."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for norm, marker in (("linf", "o"), ("l2", "s")):
        pts = [r for r in rows if r["seconds"] is not None and r[norm] is not None]
        ax.scatter([r["seconds"] for r in pts], [r[norm] for r in pts], marker=marker, label=f"PGD-20 {norm}")
        for r in pts:
            at = (r["seconds"], r[norm])
            ax.annotate(r["model"], at, textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set(
        xlabel="training seconds (one GPU; shared with other runs where its log says so)",
        ylabel="robust accuracy (%)",
        ylim=(-2, 100),
        title="What robustness cost, by route (recorded)",
    )
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
