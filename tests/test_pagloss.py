"""pagdemo.pag.losses.PAGLoss: Eq. 1 as a module for any training loop; the same loss as `pagdemo train`'s
step."""

import copy

import pytest
import torch
import torchvision

from pagdemo.data.datasets import load_dataset
from pagdemo.models import build_model
from pagdemo.pag.losses import PAGLoss
from pagdemo.train.config import TrainConfig, resolve
from pagdemo.train.objective import make_objective, step_loss


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_the_module_with_its_defaults_is_the_training_loops_step_in_double():
    """Built from raw images with no option but lambda, it is what `pagdemo train --method cm` computes."""
    train = load_dataset("synthetic", "train", limit=40)
    cfg = resolve(TrainConfig(out="x", method="cm", dataset="synthetic", limit=40))
    model = build_model("tinycnn").double().train()
    x, y, idx = train.inputs(torch.arange(8)).double(), train.labels[:8], torch.arange(8)
    loop_model, api_model = copy.deepcopy(model), copy.deepcopy(model)
    objective = make_objective(cfg, train, torch.device("cpu"), torch.Generator())
    loop_loss = step_loss(cfg, loop_model, objective, x, y, idx, None, cfg.lam)[0]
    loop_loss.backward()
    pag = PAGLoss("cm", train.images, train.labels, lam=0.4)
    api_loss = pag(api_model, x, y)
    api_loss.backward()
    torch.testing.assert_close(api_loss, loop_loss, rtol=1e-12, atol=0)
    for a, b in zip(_grads(api_model), _grads(loop_model)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert (pag.step.impl, pag.step.coupling, pag.step.grad_of) == ("batched", "batch", "logsoftmax")
    assert pag.parts["cos"] > 0 and set(pag.parts) == {"ce", "cos", "logits"}


def test_a_torchvision_resnet18_trains_one_step():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    images, labels = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8), torch.arange(30) % 10
    x, y = images[:4].float() / 255, labels[:4]
    pag = PAGLoss("oi", images, labels, lam=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = copy.deepcopy(net)
    loss = pag(net, x, y)
    loss.backward()
    with_pag = _grads(net)
    opt.step()
    assert torch.isfinite(loss) and 0 < pag.parts["cos"] <= 20
    assert not torch.equal(net.conv1.weight, before.conv1.weight)
    net.zero_grad()
    pag(before, x, y, lam=0.0).backward()  # the cross-entropy alone: the PAG term moved the gradient
    assert not torch.allclose(with_pag[0], before.conv1.weight.grad)


def test_a_teacher_model_makes_rigd_and_bad_targets_are_refused():
    teacher = build_model("tinycnn").eval()
    pag = PAGLoss(teacher, lam=0.4, coupling="eval")
    assert pag.target.describe()["target"] == "rigd" and pag.step.impl == "loop"
    model, x, y = build_model("tinycnn").train(), torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    assert torch.isfinite(pag(model, x, y))
    with pytest.raises(ValueError, match="one of \\['oi', 'cm', 'nn'\\]"):
        PAGLoss("mean", torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), lam=0.4)
    with pytest.raises(ValueError, match="cannot compute BatchNorm coupling 'classes'"):
        PAGLoss(teacher, lam=0.4, coupling="classes", impl="batched")
