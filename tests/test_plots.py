"""pagdemo.viz.plots: each figure draws the numbers it is given, and renders to RGB without pyplot."""

import numpy as np
import pytest

from pagdemo.viz.plots import cost_plot, curve_plot, figure_to_array, robustness_plot

ROWS = [
    {
        "model": "m",
        "clean %": 80.0,
        "PGD linf %": 15.0,
        "PGD l2 %": None,
        "paper clean %": 81.41,
        "paper linf %": 15.65,
        "paper l2 %": 50.62,
    }
]


def _rendered(fig) -> np.ndarray:
    """The figure as pixels: RGB, and not blank."""
    image = figure_to_array(fig)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.std() > 10
    return image


def test_robustness_plot_draws_ours_beside_the_papers():
    fig = robustness_plot(ROWS)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx(
        [80.0, 81.41, 15.0, 15.65, 0.0, 50.62]
    )  # ours, paper; per metric (missing: 0)
    _rendered(fig)


def test_curve_plot_draws_accuracy_against_eps_in_the_units_people_use():
    fig = curve_plot({"a": [(0.0, 0.9), (8 / 255, 0.1)], "b": []}, "linf", "caption")
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == pytest.approx([0.0, 8.0]) and list(line.get_ydata()) == pytest.approx(
        [90, 10]
    )
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    _rendered(fig)


def test_cost_plot_puts_each_checkpoint_at_its_seconds_and_robustness():
    fig = cost_plot(
        [
            {"model": "m", "seconds": 200.0, "linf": 13.0, "l2": 29.7},
            {"model": "untimed", "seconds": None, "linf": 1.0, "l2": 1.0},
        ]
    )
    points = [tuple(p) for c in fig.axes[0].collections for p in c.get_offsets()]
    assert points == [(200.0, 13.0), (200.0, 29.7)]
    _rendered(fig)
