"""pagdemo.visualize and pagdemo.paper: the PAG grid, the untargeted compare, curves and the robustness table."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pagdemo.models import build_model
from pagdemo.paper import paper_method, paper_row
from pagdemo.visualize import (GridSpec, accuracy_vs_eps, amplify, audit_rows, best_record, compare_untargeted, curve_plot,
                               eps_grid, figure_to_array, input_size, pag_grid_steps, render_compare, robustness_plot,
                               robustness_rows, to_uint8)

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def models():
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model("tinycnn", 10)
        m.classes = CLASSES
        out.append(m.eval())
    return out


@pytest.fixture
def x():
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


def _grid(models, x, targets=None, norm="l2", eps=4.0, steps=6, min_interval=0.0):
    spec = GridSpec(["a", "b"], CLASSES, targets or list(range(10)), "test")
    return list(pag_grid_steps(models, x, spec, norm, eps, steps, min_interval=min_interval))


@pytest.mark.parametrize("norm, eps", [("l2", 4.0), ("linf", 16 / 255)])
def test_grid_streams_every_step_and_stays_in_the_ball(models, x, norm, eps):
    frames = _grid(models, x, norm=norm, eps=eps)
    assert [f.step for f in frames] == list(range(7))
    last = frames[-1]
    assert last.images.shape == (2, 10, 3, 32, 32) and last.probs.shape == (2, 10)
    delta = last.images - x
    size = delta.flatten(2).norm(dim=2) if norm == "l2" else delta.flatten(2).abs().amax(dim=2)
    assert size.max() <= eps + 1e-5
    assert last.images.min() >= 0 and last.images.max() <= 1
    assert torch.equal(frames[0].images, x.expand(2, 10, 3, 32, 32))


def test_targeted_pgd_raises_the_target_probability(models, x):
    frames = _grid(models, x)
    assert (frames[-1].probs > frames[0].probs).all()  # an untrained model barely moves, but always upwards
    assert np.all(np.diff([f.probs.mean() for f in frames]) > 0)


def test_grid_is_deterministic_and_labelled(models, x):
    a, b = _grid(models, x)[-1], _grid(models, x)[-1]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.probs, b.probs)
    assert a.image.dtype == np.uint8 and a.image.ndim == 3 and a.image.shape[2] == 3
    assert a.image.shape[1] > 11 * 96 and a.image.shape[0] > 2 * 96  # 11 columns (input + 10 targets), 2 rows


def test_grid_shows_the_input_pixel_for_pixel(models, x):
    image = _grid(models, x, steps=1)[-1].image
    cell = to_uint8(x, 3)
    hits = [(i, j) for i in range(image.shape[0] - 95) for j in range(0, 400)
            if image[i, j, 0] == cell[0, 0, 0] and np.array_equal(image[i:i + 96, j:j + 96], cell)]
    assert len(hits) == 2  # the input column, once per model row


def test_single_target_and_throttled_stream(models, x):
    frames = _grid(models, x, targets=[3], min_interval=math.inf)
    assert [f.step for f in frames] == [0, 6]  # the clean grid and the last step only
    assert frames[-1].probs.shape == (2, 1)
    assert frames[-1].image.shape[1] < _grid(models, x, steps=1)[-1].image.shape[1]


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
    assert vis[0, 0, 0] == pytest.approx(1.0) and vis[1, 1, 1] == pytest.approx(0.25) and factor == pytest.approx(5.0)


def test_accuracy_vs_eps_starts_clean_and_never_beats_it(models):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 3, 32, 32, generator=g), torch.randint(0, 10, (24,), generator=g)
    grid = eps_grid("linf")
    points = list(accuracy_vs_eps(models[0], x, y, "linf", grid, steps=3))
    assert [e for e, _ in points] == grid
    clean = (models[0](x).argmax(1) == y).float().mean().item()
    assert points[0][1] == pytest.approx(clean)
    assert all(a <= clean + 1e-9 for _, a in points)
    assert figure_to_array(curve_plot({"a": points}, "linf", "caption")).shape[2] == 3


def _record(norm, eps, n, clean, robust, date="2025"):
    return {"date": date, "n": n, "attack": "pgd-20", "norm": norm, "eps": eps, "steps": 20, "step_size": eps / 10,
            "restarts": 1, "random_start": True, "clean_acc": clean, "robust_acc": robust}


def test_best_record_prefers_the_paper_radius_and_more_samples():
    evs = [_record("linf", 8 / 255, 10000, 0.8, 0.15), _record("linf", 8 / 255, 500, 0.81, 0.2, "2026"),
           _record("linf", 16 / 255, 10000, 0.8, 0.01), _record("l2", 0.5, 1000, 0.8, 0.5)]
    assert best_record(evs, "cifar10", "linf")["robust_acc"] == 0.15
    assert best_record(evs, "cifar10", "l2")["robust_acc"] == 0.5
    assert best_record(evs, "stl10", "l2") is None  # STL-10's l2 radius is 1.5
    assert best_record(evs, "cifar10", None)["n"] == 10000


def test_robustness_rows_and_plot():
    plt.close("all")  # figures other tests left open are not ours to count
    infos = [{"name": "cm", "run": {"method": "cm", "lam": 0.4, "dataset": "cifar10"},
              "evaluations": [_record("linf", 8 / 255, 10000, 0.8, 0.15)]},
             {"name": "mystery", "run": {"method": "other", "dataset": "cifar10"}, "evaluations": []}]
    rows = robustness_rows(infos)
    assert rows[0]["clean %"] == 80.0 and rows[0]["PGD linf %"] == 15.0 and rows[0]["PGD l2 %"] is None
    assert rows[0]["n clean"] == 10000 and "n=10000" in rows[0]["linf settings"]
    assert rows[0]["l2 settings"] == "not evaluated"
    assert (rows[0]["paper clean %"], rows[0]["paper linf %"], rows[0]["paper l2 %"]) == (81.41, 15.65, 50.62)
    assert rows[1]["clean %"] is None and rows[1]["paper source"] == "no matching row"
    assert figure_to_array(robustness_plot(rows)).ndim == 3
    assert not plt.get_fignums()  # figures are closed after rendering


def test_audit_rows_pair_autoattack_with_pgd_on_the_same_subset():
    pgd_full = _record("linf", 8 / 255, 10000, 0.8, 0.30)
    pgd_sub = {**_record("linf", 8 / 255, 500, 0.8, 0.32), "subset_seed": 0}
    aa = {**_record("linf", 8 / 255, 500, 0.8, 0.25), "attack": "autoattack-standard", "subset_seed": 0, "device": "cuda"}
    audit = {**_record("linf", 8 / 255, 500, 0.8, 0.31), "attack": "audit (pgd-100 x2)", "verdict": "no sign of gradient masking",
             "pag_score": 0.61234, "pag_grad_cosine": 0.4, "pag_judge": "adv-l2"}
    rows = audit_rows([{"name": "m", "evaluations": [pgd_full, pgd_sub, aa, audit]}])
    linf, l2 = rows
    assert (linf["PGD-20 %"], linf["AutoAttack %"], linf["n"]) == (32.0, 25.0, 500)  # not the full-test-set 30%
    assert linf["verdict"] == "no sign of gradient masking" and linf["PAG score"] == 0.612 and linf["judge"] == "adv-l2"
    assert l2 == {"model": "m", "norm": "l2", "verdict": "not audited"}


def test_audit_rows_say_what_an_unfinished_audit_checked():
    cut = {"norm": "l2", "n": 200, "finished": False, "not_run_yet": ["autoattack", "pag_score"],
           "verdict": "no sign of gradient masking", "device": "cpu", "checks": {"more_steps": {"pgd20": 0.53}},
           "autoattack_so_far": {"clean": 0.685, "apgd-ce": 0.515}}
    scored = {"attack": "audit (pgd-100 x2)", "verdict": "no sign of gradient masking", "norm": "linf", "pag_score": 0.8}
    linf, l2 = audit_rows([{"name": "m", "evaluations": [], "audits": {"l2": cut}}])
    assert linf["verdict"] == "not audited"
    assert audit_rows([{"name": "m", "evaluations": [scored], "audits": {"l2": cut}}])[1]["PAG score"] == 0.8
    assert l2["n"] == 200 and l2["PGD-20 %"] == 53.0 and l2["verdict"] == (
        "unfinished (autoattack, pag_score not run); checks so far: no sign of gradient masking; "
        "AutoAttack cut off after apgd-ce: 51.5% (an upper bound)")


def test_audit_rows_take_pgd20_from_an_audit_that_ran_no_autoattack():
    line = {"attack": "audit (pgd-100 x2)", "verdict": "no sign of gradient masking", "n": 200, "norm": "linf"}
    record = {"norm": "linf", "finished": True, "checks": {"more_steps": {"pgd20": 0.225}}}
    linf, _ = audit_rows([{"name": "m", "evaluations": [line], "audits": {"linf": record}}])
    assert (linf["PGD-20 %"], linf["AutoAttack %"], linf["n"]) == (22.5, None, 200)
    aa = {"attack": "autoattack-standard", "norm": "linf", "n": 200, "subset_seed": 0, "robust_acc": 0.2}
    linf, _ = audit_rows([{"name": "m", "evaluations": [line, aa], "audits": {"linf": record}}])
    assert linf["PGD-20 %"] is None  # beside AutoAttack only a PGD-20 line on AutoAttack's own subset counts


def test_audit_rows_show_the_models_pag_score_in_both_norms():
    audit = {"attack": "audit (pgd-100 x2)", "verdict": "no sign of gradient masking", "n": 200, "subset_seed": 0}
    linf = {**audit, "norm": "linf", "pag_score": 0.5, "pag_grad_cosine": 0.3, "pag_judge": "adv-l2"}
    l2 = {**audit, "norm": "l2", "pag_score": None}  # audited without a judge: the l2-attack score is the model's, not the norm's
    rows = audit_rows([{"name": "m", "evaluations": [linf, l2]}])
    assert [(r["norm"], r["PAG score"], r["judge"]) for r in rows] == [("linf", 0.5, "adv-l2"), ("l2", 0.5, "adv-l2")]


def test_paper_rows():
    assert paper_method("vanilla", 0.0) == "Vanilla" and paper_method("cm", 0.0) == "Vanilla"
    assert paper_method("Class-Mean", 0.4) == "Class Mean" and paper_method("adv", 0.0) is None
    assert paper_row({"method": "oi", "lam": 0.5, "dataset": "cifar10"})[1] == (79.46, 16.57, 49.68)
    assert paper_row({"method": "cm", "lam": 0.1, "dataset": "cifar10"}) == ("Figure 5, Class Mean, lambda=0.1",
                                                                            (88.40, 4.88, 36.43))
    assert paper_row({"method": "rigd", "lam": 0.4, "dataset": "stl10", "teacher": "runs/teacher-l2"})[1] == (75.18, 20.66, 48.46)
    assert paper_row({"method": "nn", "lam": 0.4, "dataset": "mnist"}) is None


def test_input_size_and_to_uint8():
    assert input_size("cifar10") == 32 and input_size("stl10") == 96 and input_size(None) == 32
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    a = to_uint8(x, 3)
    assert a.shape == (6, 6, 3) and a.dtype == np.uint8 and tuple(a[5, 5]) == (0, 128, 255)
