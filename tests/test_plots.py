"""pagdemo.viz.plots: figures render to RGB arrays without pyplot (no global state left behind)."""
from pagdemo.viz.plots import curve_plot, figure_to_array, robustness_plot


def test_figures_render_without_pyplot():
    rows = [{"model": "m", "clean %": 80.0, "PGD linf %": 15.0, "PGD l2 %": None, "paper clean %": 81.41,
             "paper linf %": 15.65, "paper l2 %": 50.62}]
    assert figure_to_array(robustness_plot(rows)).ndim == 3
    curve = figure_to_array(curve_plot({"a": [(0.0, 0.9), (8 / 255, 0.1)]}, "linf", "caption"))
    assert curve.shape[2] == 3 and curve.dtype.name == "uint8"
