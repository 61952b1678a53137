"""pagdemo.train.recipes: named recipes, their schedules, and what --help says of them."""

import math

import pytest

from pagdemo.train.recipes import RECIPES, Recipe, get_recipe, help_text, lam_at, lr_at


def test_every_recipe_is_complete_and_listed_in_the_help():
    text = help_text()
    for name, r in RECIPES.items():
        assert f"{name}: {r.summary}" in text
        assert r.epochs >= 1 and r.batch_size >= 1 and r.lr > 0
    assert RECIPES["paper"].settings() == {
        "summary": RECIPES["paper"].summary,
        "epochs": 100,
        "batch_size": 64,
        "lr": 0.01,
        "schedule": "multistep-50-75",
        "nesterov": False,
        "amp": False,
        "lam_schedule": "constant",
        "needs_init": False,
    }  # App. C.2
    with pytest.raises(ValueError, match="unknown recipe 'fastest'.*paper"):
        get_recipe("fastest")


def test_warmup_cosine_and_multistep():
    fast, paper = RECIPES["fast"], RECIPES["paper"]
    lrs = [lr_at(fast, 0.4, s, 50, 10) for s in range(50)]
    assert lrs[:10] == pytest.approx([0.04 * (s + 1) for s in range(10)]) and lrs[30] == pytest.approx(0.2)
    assert lrs[-1] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert [lr_at(paper, 0.1, s, 40, 10) for s in (19, 20, 29, 30)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_lambda_ramp_reaches_its_value_at_half_time_and_stays():
    ramp, const = RECIPES["ramp"], RECIPES["fast-lr01"]
    lams = [lam_at(ramp, 0.4, s, 100) for s in range(100)]
    assert lams[0] == pytest.approx(0.008) and lams[24] == pytest.approx(0.2) and lams[49:] == [0.4] * 51
    assert all(a < b for a, b in zip(lams[:49], lams[1:50]))
    assert {lam_at(const, 0.4, s, 100) for s in range(100)} == {0.4}


def test_late_lambda_is_off_for_a_third_then_ramps_over_a_third():
    lams = [lam_at(RECIPES["late"], 0.4, s, 90) for s in range(90)]
    assert lams[:29] == [0.0] * 29 and lams[44] == pytest.approx(0.2) and lams[59:] == [0.4] * 31
    assert all(a < b for a, b in zip(lams[29:59], lams[30:60]))


@pytest.mark.parametrize("field, value", [("schedule", "cosine"), ("lam_schedule", "ramp-up")])
def test_a_misspelled_schedule_is_refused_when_the_recipe_is_built(field, value):
    settings = {
        "summary": "x",
        "epochs": 1,
        "batch_size": 8,
        "lr": 0.1,
        "schedule": "warmup-cosine",
        field: value,
    }
    with pytest.raises(ValueError, match=f"unknown .*schedule '{value}'; choose one of"):
        Recipe(**settings)
