"""The PAG score's two anchors: ~1 with the model as its own judge, ~chance with a random judge; rules."""

import pytest
import torch
from tiny import train_tiny

from pagdemo.data.datasets import load_dataset
from pagdemo.eval.pagscore import check_judge, format_pag_score, grad_cosine, pag_score
from pagdemo.models import PAGClassifier

EPS, STEPS = 16.0, 30  # a radius at which a targeted attack reaches any class of the synthetic data


@pytest.fixture(scope="module")
def model() -> PAGClassifier:
    return train_tiny(0)


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", "test", limit=20)
    return ds.inputs(), ds.labels


def test_score_is_near_one_when_the_model_judges_itself(model, data):
    x, y = data
    s = pag_score(model, model, x, y, eps=EPS, steps=STEPS, progress=False)
    assert s["n_pairs"] == 20 * 9 and s["chance"] == 0.1
    assert s["score"] == s["attack_success"] >= 0.9
    assert s["grad_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert s["model_clean_acc"] == s["judge_clean_acc"] == 1.0


def test_score_is_near_chance_for_a_random_judge(model, data):
    x, y = data
    torch.manual_seed(1)
    judge = PAGClassifier("tinycnn", 10).eval()  # untrained
    s = pag_score(model, judge, x, y, eps=EPS, steps=STEPS, progress=False)
    assert s["attack_success"] >= 0.9  # the attack works; only the judge differs
    assert abs(s["score"] - s["chance"]) <= 0.07
    assert abs(s["grad_cosine"]) <= 0.3


def test_grad_cosine_is_one_per_image_for_identical_models_and_leaves_modes_alone(model, data):
    x, _ = data
    model.train()
    cos = grad_cosine(model, model, x[:3])
    assert cos.shape == (3,) and torch.allclose(cos, torch.ones(3), atol=1e-4) and model.training
    model.eval()


def test_check_judge_refuses_the_model_itself_and_its_rigd_teacher(tmp_path):
    model, teacher, other = tmp_path / "rigd", tmp_path / "teacher-linf", tmp_path / "teacher-l2"
    run = {"method": "rigd", "teacher": str(teacher)}
    with pytest.raises(ValueError, match="the model itself"):
        check_judge(model, run, model)
    with pytest.raises(ValueError, match="RIGD teacher"):
        check_judge(model, run, teacher)
    with pytest.raises(ValueError, match="RIGD teacher"):  # the same folder, moved to another machine
        check_judge(model, run, tmp_path / "elsewhere" / "teacher-linf")
    check_judge(model, run, other)
    check_judge(model, {"method": "cm"}, teacher)


def test_format_pag_score_names_score_chance_and_judge():
    s = {
        "score": 0.5,
        "chance": 0.1,
        "attack_success": 1.0,
        "judge_keeps_source": 0.2,
        "grad_cosine": 0.3,
        "eps": 4.0,
        "n_pairs": 90,
        "judge": "runs/teacher-l2",
    }
    line = format_pag_score(s)
    assert "PAG score 0.500" in line and "chance 0.100" in line and "runs/teacher-l2" in line
