"""pagdemo.viz.compare: one untargeted attack per model, and the amplified perturbation."""

import numpy as np
import pytest
import torch
from pictures import CLASSES

from pagdemo.viz.compare import amplify, compare_untargeted, render_compare


def test_compare_untargeted(models, x):
    results = compare_untargeted(models, ["a", "b"], x, "l2", 0.5, steps=5)
    for r in results:
        assert r["l2"] <= 0.5 + 1e-5 and r["label"] == r["pred"] and not r["already_wrong"]
        assert r["fooled"] == (r["adv_pred"] != r["pred"])
        assert torch.allclose(r["x_adv"], x + r["delta"], atol=1e-6)
    again = compare_untargeted(models, ["a", "b"], x, "l2", 0.5, steps=5)
    assert all(torch.equal(r["x_adv"], s["x_adv"]) for r, s in zip(results, again))  # seeded random start
    image = render_compare(x, results, CLASSES, "caption")
    assert image.dtype == np.uint8 and image.shape[0] > 2 * 128


def test_compare_with_a_true_label_the_model_misses(models, x):
    pred = int(models[0](x[None]).argmax())
    r = compare_untargeted(models[:1], ["a"], x, "linf", 8 / 255, steps=3, label=(pred + 1) % 10)[0]
    assert r["already_wrong"] and not r["fooled"] and r["linf"] <= 8 / 255 + 1e-6


def test_amplify():
    vis, factor = amplify(torch.zeros(3, 4, 4))
    assert torch.all(vis == 0.5) and factor == 1.0
    d = torch.zeros(3, 4, 4)
    d[0, 0, 0], d[1, 1, 1] = 0.1, -0.05
    vis, factor = amplify(d)
    assert (
        vis[0, 0, 0] == pytest.approx(1.0)
        and vis[1, 1, 1] == pytest.approx(0.25)
        and factor == pytest.approx(5.0)
    )
