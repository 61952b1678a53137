"""pagdemo.threat: the one table of radii and step sizes, and how it extends to other image sizes."""

import pytest

from pagdemo.threat import (
    EPS_TOLERANCE,
    eps_grid,
    eval_eps,
    eval_step,
    is_eval_eps,
    picture_eps,
    picture_eps_max,
    strong_step,
)


def test_the_papers_radii_by_dataset():
    assert eval_eps("linf", "cifar10") == 8 / 255 and eval_eps("l2", "cifar10") == 0.5
    assert eval_eps("l2", "stl10") == 1.5 and eval_eps("linf", "stl10") == 8 / 255
    assert abs(8 / 255 - 0.031) < EPS_TOLERANCE  # the paper writes 0.031: the same threat model
    assert is_eval_eps(0.031, "linf", "cifar10") and not is_eval_eps(0.5, "l2", "stl10")


def test_other_sizes_keep_the_per_pixel_l2_size():
    assert eval_eps("l2", "folder", 96) == pytest.approx(eval_eps("l2", "stl10"))  # the paper's own rule
    assert eval_eps("l2", None, 64) == pytest.approx(1.0) and eval_eps("linf", None, 64) == 8 / 255
    assert picture_eps("l2", 32) == 4.0 and picture_eps("l2", 96) == pytest.approx(12.0)
    assert picture_eps("linf", 96) == 16 / 255 and picture_eps_max("l2", 64) == pytest.approx(40.0)


def test_step_rules_and_curve_radii():
    assert eval_step(0.5, 20) == pytest.approx(0.05) and strong_step(0.5, 100) == pytest.approx(0.0125)
    assert (
        eps_grid("linf")[4] == pytest.approx(8 / 255)
        and eps_grid("l2")[3] == 0.5
        and eps_grid("l2")[0] == 0.0
    )


def test_unknown_norm_names_the_choices():
    with pytest.raises(ValueError, match="unknown norm 'l1'.*linf"):
        eval_eps("l1", "cifar10")
