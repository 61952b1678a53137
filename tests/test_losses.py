"""The PAG loss (Eq. 1, 2): reference loop vs batched implementation, and the loss's meaning."""

import pytest
import torch

from pagdemo.models import build_model
from pagdemo.pag.inputgrads import input_gradients_loop
from pagdemo.pag.losses import IMPLS, PAGStep, cosine_misalignment, pag_loss


def _loss_and_grads(model, impl, x, y, g, grad_of):
    model.zero_grad()
    loss, _ = pag_loss(model, x, y, g, 0.4, PAGStep(impl, grad_of=grad_of))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(6, 3, 32, 32, generator=g),
        torch.randint(0, 10, (6,), generator=g),
        torch.randn(6, 10, 3, 32, 32, generator=g),
    )


@pytest.mark.parametrize("grad_of", ["logit", "logsoftmax"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_batched_equals_loop_in_eval_mode(data, grad_of, dtype, tol):
    x, y, g = (t.to(dtype) if t.is_floating_point() else t for t in data)
    model = build_model("tinycnn").to(dtype).eval()
    loss_a, grads_a = _loss_and_grads(model, "loop", x, y, g, grad_of)
    loss_b, grads_b = _loss_and_grads(model, "batched", x, y, g, grad_of)
    assert torch.allclose(loss_a, loss_b, rtol=tol, atol=tol)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=tol * 10, atol=tol), (a - b).abs().max()


def test_train_mode_batchnorm_couples_the_batch(data):
    """Documented difference: in train mode an input gradient depends on the rest of the batch."""
    x, _, _ = data
    model = build_model("tinycnn").double().train()
    _, full = input_gradients_loop(model, x.double(), create_graph=False)
    _, alone = input_gradients_loop(model, x[:3].double(), create_graph=False)
    assert not torch.allclose(full[:3], alone, atol=1e-6)
    model.eval()
    _, full = input_gradients_loop(model, x.double(), create_graph=False)
    _, alone = input_gradients_loop(model, x[:3].double(), create_graph=False)
    assert torch.allclose(full[:3], alone, atol=1e-10)


def test_input_gradients_are_the_autograd_jacobian_rows(data):
    x, _, _ = data
    model = build_model("tinycnn").double().eval()
    x = x[:2].double()
    _, grads = input_gradients_loop(model, x, grad_of="logit", create_graph=False)
    jac = torch.autograd.functional.jacobian(lambda z: model(z).sum(0), x)  # (C, B, 3, H, W)
    assert torch.allclose(grads, jac.transpose(0, 1), atol=1e-10)


def test_cosine_misalignment_is_eq2_summed_over_classes():
    v = torch.randn(4, 10, 12)
    assert torch.allclose(cosine_misalignment(v, v), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(cosine_misalignment(v, -3 * v), torch.tensor(20.0), atol=1e-5)
    assert torch.isfinite(cosine_misalignment(torch.zeros(2, 10, 5), v[:2, :, :5]))


def test_lambda_zero_is_cross_entropy_and_the_penalty_is_trainable(data):
    x, y, g = data
    model = build_model("tinycnn").eval()
    loss, parts = pag_loss(model, x, y, g, 0.0)
    assert torch.allclose(loss, parts["ce"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = parts["cos"]
    for _ in range(15):
        opt.zero_grad()
        loss, parts = pag_loss(model, x, y, g, 10.0)
        loss.backward()
        opt.step()
    assert parts["cos"] < before  # double backprop reaches the parameters


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="unknown PAG implementation 'nope'"):
        PAGStep("nope")
    with pytest.raises(ValueError, match="unknown grad_of 'prob'"):
        PAGStep(grad_of="prob")
    assert {"loop", "batched"} <= set(IMPLS)
