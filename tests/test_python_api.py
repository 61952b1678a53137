"""The public Python API (pagdemo.load, PGD, input_gradients, PAGLoss) and the README's "Use it from Python"
block, run exactly as printed, offline, on the shipped checkpoints."""

import re
from pathlib import Path

import pytest
import torch

import pagdemo
from pagdemo.records.checkpoints import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def _readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use it from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_block_runs_as_printed(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(_readme_block(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "->" in printed and "PAG loss" in printed


def test_load_takes_a_shipped_name_or_a_folder_and_names_the_choices_otherwise():
    by_name, by_folder = pagdemo.load("vanilla"), pagdemo.load(REPO / "checkpoints" / "vanilla")
    assert not by_name.training and by_name.classes[3] == "cat"
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(by_name(x), by_folder(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="one of .*'pag-cm'.*'vanilla'"):
        pagdemo.load("no-such-model")


def test_pgd_takes_the_papers_radius_and_input_gradients_are_every_classs():
    model = pagdemo.load("vanilla")
    x = pagdemo.load_image(REPO / "pagdemo/app/examples/cat_3543.png")
    assert x.shape == (1, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    y = model(x).argmax(1)
    attack = pagdemo.PGD(model, norm="l2")
    assert attack.eps == 0.5 and pagdemo.PGD(model).eps == pytest.approx(8 / 255)
    adv = attack(x, y)
    assert (adv - x).norm() <= 0.5 + 1e-5 and model(adv).argmax(1) != y  # vanilla falls at l2 0.5
    grads = pagdemo.input_gradients(model, x)
    assert grads.shape == (1, 10, 3, 32, 32) and not model.training
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xr)[0, 3], xr)
    torch.testing.assert_close(grads[0, 3], ref[0])
