"""pagdemo.eval.evaluate: robust accuracy invariants, the record run_eval writes, device resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pagdemo.data.datasets import load_dataset
from pagdemo.eval.evaluate import EvalConfig, accuracy_vs_eps, format_record, robust_accuracy, run_eval
from pagdemo.eval.subset import data_for_eval
from pagdemo.models import resolve_device
from pagdemo.records.provenance import git_commit
from pagdemo.threat import eps_grid
from pagdemo.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tinycnn that learned the synthetic classes (~70% clean), so attacks have something to break."""
    cfg = TrainConfig(
        out=str(tmp_path_factory.mktemp("eval") / "vanilla"),
        dataset="synthetic",
        limit=256,
        batch_size=32,
        epochs=3,
        lr=0.05,
        monitor_limit=0,
    )
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def model_and_data(checkpoint) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from pagdemo.records.checkpoints import load_checkpoint

    ds = load_dataset("synthetic", "test", limit=128)
    return load_checkpoint(checkpoint), ds.inputs(), ds.labels


class Constant(nn.Module):
    """Ignores its input: no perturbation can change its answer."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0 * x.flatten(1).sum(1, keepdim=True)  # keeps x in the graph for the attack


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("linf", 32 / 255), ("l2", 2.0)])
def test_robust_never_exceeds_clean(model_and_data, norm, eps):
    model, x, y = model_and_data
    clean, rob = robust_accuracy(model, x, y, norm, eps, steps=5, progress=False)
    assert clean > 0.3  # the model learned something, so the check below is not 0 <= 0
    assert 0 <= rob <= clean


def test_a_large_eps_breaks_the_model(model_and_data):
    model, x, y = model_and_data
    clean, rob = robust_accuracy(model, x, y, "linf", 32 / 255, steps=5, progress=False)
    assert rob < clean - 0.1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_gives_clean_accuracy(model_and_data, norm):
    model, x, y = model_and_data
    clean, rob = robust_accuracy(model, x, y, norm, 0.0, steps=3, batch_size=50, progress=False)
    assert rob == clean
    assert clean == (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 10.0)])
def test_a_constant_model_cannot_be_attacked(norm, eps):
    y = torch.tensor([0, 1, 2, 1, 1, 0, 2, 1, 1, 1])  # the constant answer, class 1, is right 6 times
    x = torch.rand(len(y), 3, 8, 8, generator=torch.Generator().manual_seed(0))
    clean, rob = robust_accuracy(
        Constant([0.0, 1.0, 0.5]), x, y, norm, eps, steps=5, batch_size=4, progress=False
    )
    assert clean == rob == 0.6


def test_restarts_never_increase_robust_accuracy(model_and_data):
    model, x, y = model_and_data
    results = [
        robust_accuracy(model, x, y, "linf", 0.05, steps=3, restarts=r, seed=1, progress=False)
        for r in (1, 2, 4)
    ]
    assert len({clean for clean, _ in results}) == 1
    robs = [rob for _, rob in results]
    assert robs[0] < results[0][0]  # the attack bites, so restarts have something to add
    assert robs[0] >= robs[1] >= robs[2], robs


def test_robust_accuracy_is_seeded_and_leaves_inputs_alone(model_and_data):
    model, x, y = model_and_data
    x0 = x.clone()
    first = robust_accuracy(model, x, y, "l2", 2.0, steps=3, seed=3, progress=False)
    assert robust_accuracy(model, x, y, "l2", 2.0, steps=3, seed=3, progress=False) == first
    assert torch.equal(x, x0)


def test_clean_only_has_no_robust_accuracy(model_and_data):
    model, x, y = model_and_data
    clean, rob = robust_accuracy(model, x, y, None, 0.0, progress=False)
    assert rob is None and clean == (model(x).argmax(1) == y).float().mean().item()


def test_bad_attack_settings_are_value_errors(model_and_data):
    model, x, y = model_and_data
    with pytest.raises(ValueError, match="'l1'"):
        robust_accuracy(model, x, y, "l1", 0.1, progress=False)
    with pytest.raises(ValueError, match="eps"):
        robust_accuracy(model, x, y, "linf", -0.1, progress=False)


def test_run_eval_records_the_exact_settings(checkpoint, tmp_path):
    out_json = tmp_path / "results" / "cm.json"
    record = run_eval(
        EvalConfig(checkpoint=str(checkpoint), norm="l2", eps=0.5, steps=4, limit=40, json=str(out_json)),
        progress=False,
    )
    assert (record["norm"], record["eps"], record["steps"], record["restarts"], record["random_start"]) == (
        "l2",
        0.5,
        4,
        1,
        True,
    )
    assert record["step_size"] == 2 * 0.5 / 4
    assert (record["n"], record["limit"], record["subset_seed"], record["attack"]) == (40, 40, 0, "pgd-4")
    assert record["data"].startswith("synthetic/test")  # the checkpoint's own dataset
    assert 0 <= record["robust_acc"] <= record["clean_acc"] and record["clean_acc"] > 0.3
    assert record["device"] == "cpu" and record["config"]["checkpoint"] == str(checkpoint)
    assert record["commit"] == git_commit()  # which code measured it
    evaluations = json.loads((checkpoint / "metrics.json").read_text())["evaluations"]
    assert evaluations[-1] == json.loads(out_json.read_text())
    assert json.loads(out_json.read_text())["step_size"] == 0.25
    assert "| l2 | 0.5 | 4 | 0.25 |" in (checkpoint / "README.md").read_text()


def test_run_eval_appends_and_uses_paper_defaults(checkpoint):
    before = (
        json.loads((checkpoint / "metrics.json").read_text())["evaluations"]
        if (checkpoint / "metrics.json").exists()
        else []
    )
    linf = run_eval(EvalConfig(checkpoint=str(checkpoint), steps=2, limit=20), progress=False)
    assert (linf["norm"], linf["eps"], linf["step_size"]) == ("linf", 8 / 255, 2 * (8 / 255) / 2)
    clean = run_eval(EvalConfig(checkpoint=str(checkpoint), norm=None, limit=20), progress=False)
    assert (clean["robust_acc"], clean["eps"], clean["steps"], clean["attack"]) == (None, None, None, "none")
    custom = run_eval(
        EvalConfig(checkpoint=str(checkpoint), norm="l2", eps=0.25, steps=2, step_size=0.2, limit=20),
        progress=False,
    )
    assert custom["step_size"] == 0.2
    after = json.loads((checkpoint / "metrics.json").read_text())["evaluations"]
    assert after[: len(before)] == before and len(after) == len(before) + 3
    assert [e["norm"] for e in after[-3:]] == ["linf", None, "l2"]


def test_run_eval_without_record_leaves_metrics_alone(checkpoint, tmp_path):
    metrics = checkpoint / "metrics.json"
    before = metrics.read_text() if metrics.exists() else None
    run_eval(EvalConfig(checkpoint=str(checkpoint), norm=None, limit=10, record=False), progress=False)
    assert (metrics.read_text() if metrics.exists() else None) == before


def test_run_eval_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint folder"):
        run_eval(EvalConfig(checkpoint=str(tmp_path / "nope")), progress=False)


def test_data_for_eval_uses_the_run_folder_only_where_it_exists(tmp_path):
    here = {"dataset": "cifar10", "data_dir": str(tmp_path)}
    assert data_for_eval(here, None, None) == ("cifar10", str(tmp_path))
    assert data_for_eval(here, None, "mine") == ("cifar10", "mine")
    gpu = {
        "dataset": "cifar10",
        "data_dir": ".stage/cifar10-on-the-gpu-machine",
    }  # as the shipped checkpoints say
    assert data_for_eval(gpu, None, None) == ("cifar10", None)  # the default location, not a missing folder
    assert data_for_eval(here, "synthetic", None) == ("synthetic", None)


def test_format_record_is_one_readable_line():
    rec = {
        "clean_acc": 0.5,
        "robust_acc": 0.25,
        "steps": 20,
        "norm": "l2",
        "eps": 0.5,
        "n": 64,
        "data": "synthetic/test",
    }
    line = format_record(rec)
    assert (
        "\n" not in line and "clean 50.00%" in line and "PGD-20 l2 eps=0.5: 25.00%" in line and "n=64" in line
    )
    assert "PGD" not in format_record({**rec, "robust_acc": None})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_resolve_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device_names_the_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu'.*auto"):
        resolve_device("tpu")


def test_accuracy_vs_eps_starts_clean_and_never_beats_it(model_and_data):
    model, x, y = model_and_data
    grid = eps_grid("linf")
    points = list(accuracy_vs_eps(model, x[:24], y[:24], "linf", grid, steps=3))
    assert [e for e, _ in points] == grid
    clean = (model(x[:24]).argmax(1) == y[:24]).float().mean().item()
    assert points[0][1] == pytest.approx(clean)
    assert all(a <= clean + 1e-6 for _, a in points) and points[-1][1] < clean
