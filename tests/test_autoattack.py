"""AutoAttack on a tiny CNN trained for a second on the synthetic data: end to end, legal, no weaker than
PGD."""

import importlib.util
import json

import pytest
import torch
from tiny import train_tiny

from pagdemo.data.datasets import load_dataset
from pagdemo.eval.autoattack import (
    ATTACKS,
    AutoAttackConfig,
    autoattack_accuracy,
    format_autoattack,
    in_threat_model,
    run_autoattack_eval,
)
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.records.checkpoints import save_checkpoint

EPS = {"linf": 0.1, "l2": 3.0}  # radii at which PGD-20 breaks about half of this model's images


@pytest.fixture(scope="module")
def model():
    return train_tiny()


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", "test", limit=16)
    return ds.inputs(), ds.labels


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_autoattack_runs_end_to_end_and_is_at_least_as_strong_as_pgd(model, data, norm):
    x, y = data
    clean, robust, after = autoattack_accuracy(model, x, y, norm, EPS[norm], version="lite", progress=False)
    _, pgd20 = robust_accuracy(
        model, x, y, norm, EPS[norm], steps=20, step_size=2 * EPS[norm] / 20, progress=False
    )
    assert clean == after["clean"] == 1.0
    assert robust < clean and robust <= pgd20 + 1 / len(
        x
    )  # it breaks images, no fewer than PGD-20 (1 image slack)
    accs = [after[k] for k in ("clean", *ATTACKS)]
    assert (
        accs == sorted(accs, reverse=True) and after["square"] == robust
    )  # each attack only removes survivors
    assert after["rejected"] == 0


def test_autoattack_leaves_model_mode_and_global_rng_alone(model, data):
    x, y = data
    model.train()
    state = torch.random.get_rng_state()
    autoattack_accuracy(model, x[:4], y[:4], "linf", EPS["linf"], version="lite", progress=False)
    assert model.training and torch.equal(state, torch.random.get_rng_state())
    model.eval()


def test_in_threat_model_rejects_images_outside_the_ball_or_the_box():
    x = torch.full((4, 3, 2, 2), 0.5)
    x_adv = x.clone()
    x_adv[1, 0, 0, 0] += 0.2  # linf 0.2 > eps 0.1
    x_adv[2] += 0.04  # linf 0.04, but l2 = 0.04 * sqrt(12) = 0.139
    x_adv[3, 0, 0, 0] = 1.2  # outside [0, 1]
    assert in_threat_model(x_adv, x, "linf", 0.1).tolist() == [True, False, True, False]
    assert in_threat_model(x_adv, x, "l2", 0.1).tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    "kwargs, word",
    [({"version": "plus"}, "version"), ({"backend": "foolbox"}, "backend"), ({"norm": "l1"}, "norm")],
)
def test_bad_settings_name_the_value_and_the_choices(model, data, kwargs, word):
    x, y = data
    args = {"norm": "linf", **kwargs}
    with pytest.raises(ValueError, match=word):
        autoattack_accuracy(model, x, y, eps=0.1, progress=False, **args)


@pytest.mark.skipif(
    importlib.util.find_spec("pyautoattack") is None, reason="pyautoattack (reference) not installed"
)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_torchattacks_matches_the_reference_implementation(model, data, norm):
    x, y = data
    ours = autoattack_accuracy(
        model, x, y, norm, EPS[norm], version="lite", backend="torchattacks", progress=False
    )
    ref = autoattack_accuracy(
        model, x, y, norm, EPS[norm], version="lite", backend="pyautoattack", progress=False
    )
    assert ref[0] == ours[0] and ref[2]["rejected"] == 0
    assert abs(ref[1] - ours[1]) <= 1 / len(x)  # at most one image of 16 apart


def test_run_autoattack_eval_records_autoattack_and_pgd20_on_the_same_subset(model, tmp_path):
    folder = save_checkpoint(model, tmp_path / "ck", {"dataset": "synthetic", "method": "vanilla"})
    cfg = AutoAttackConfig(
        str(folder),
        norm="linf",
        eps=EPS["linf"],
        version="lite",
        backend="torchattacks",
        limit=10,
        device="cpu",
        json=str(tmp_path / "aa.json"),
    )
    record = run_autoattack_eval(cfg, progress=False)
    evals = json.loads((folder / "metrics.json").read_text())["evaluations"]
    assert [e["attack"] for e in evals] == ["pgd-20", "autoattack-lite"]
    assert {e["n"] for e in evals} == {10} and evals[1]["robust_acc"] == record["robust_acc"] <= record[
        "clean_acc"
    ]
    assert record["pgd20_robust_acc"] == evals[0]["robust_acc"] and record["backend"].startswith(
        "torchattacks "
    )
    assert json.loads((tmp_path / "aa.json").read_text())["per_attack"] == record["per_attack"]
    assert "autoattack-lite" in (folder / "README.md").read_text()  # the model card shows it
    assert "PGD-20 on the same images" in format_autoattack(record)
