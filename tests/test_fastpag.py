"""The fast PAG implementations equal the reference `loop`: loss, every parameter gradient and
the BatchNorm running statistics, in train- and eval-mode BatchNorm."""

import copy

import pytest
import torch
from torch import nn

from pagdemo.models import build_model
from pagdemo.pag.fastpag import EXACT_IMPLS, input_gradients_explicit, trace
from pagdemo.pag.losses import IMPLS, PAGStep, cosine_misalignment, pag_loss
from pagdemo.pag.sampled import sampled_misalignment


def _model(name: str, dtype: torch.dtype, train: bool, num_classes: int = 10) -> nn.Module:
    """A model whose eval-mode BatchNorm differs from its train-mode one (non-trivial running stats)."""
    model = build_model(name, num_classes).to(dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.train(train)


def _step(model: nn.Module, impl: str, x, y, targets, grad_of: str):
    """(loss, parameter gradients, buffers) after one PAG loss backward."""
    model.zero_grad(set_to_none=True)
    loss, _ = pag_loss(model, x, y, targets, 0.7, PAGStep(impl, grad_of=grad_of))
    loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return loss.detach(), grads, [b.clone() for b in model.buffers()]


def _assert_same_step(model: nn.Module, impl: str, x, y, targets, grad_of: str, rtol: float) -> None:
    ref = _step(copy.deepcopy(model), "loop", x, y, targets, grad_of)
    out = _step(copy.deepcopy(model), impl, x, y, targets, grad_of)
    torch.testing.assert_close(out[0], ref[0], rtol=rtol, atol=0)
    for g, g_ref in zip(out[1], ref[1]):
        torch.testing.assert_close(g, g_ref, rtol=rtol, atol=rtol * g_ref.abs().max().item())
    assert any(g.abs().sum() > 0 for g in out[1])
    for b, b_ref in zip(out[2], ref[2]):  # running statistics moved exactly once, as in `loop`
        torch.testing.assert_close(b, b_ref, rtol=rtol, atol=0)


def _data(shape: tuple[int, ...], num_classes: int, dtype: torch.dtype):
    x = torch.rand(shape, dtype=dtype)
    y = torch.randint(0, num_classes, (shape[0],))
    targets = torch.randn(shape[0], num_classes, *shape[1:], dtype=dtype)
    return x, y, targets


@pytest.mark.parametrize("impl", ["vmap", "explicit"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("grad_of", ["logit", "logsoftmax"])
def test_exact_impls_match_loop_in_double(impl, train, grad_of):
    model = _model("tinycnn", torch.float64, train)
    _assert_same_step(model, impl, *_data((5, 3, 12, 12), 10, torch.float64), grad_of, rtol=1e-9)


@pytest.mark.parametrize(
    "name,shape,classes",
    [
        ("tinycnn", (6, 3, 16, 16), 10),
        ("mlp", (7, 2), 2),
        ("resnet18", (2, 3, 8, 8), 10),
        ("resnet18_stl", (2, 3, 16, 16), 10),
        ("resnet18_gelu", (2, 3, 8, 8), 10),
    ],
)
@pytest.mark.parametrize("train", [True, False])
def test_explicit_matches_loop_in_fp32(name, shape, classes, train):
    model = _model(name, torch.float32, train, classes)
    _assert_same_step(model, "explicit", *_data(shape, classes, torch.float32), "logsoftmax", rtol=1e-4)


def test_batched_differs_from_loop_in_train_mode():
    """The authors' trick is not exact in train mode: the fast exact impls are needed (losses.py)."""
    model = _model("tinycnn", torch.float64, True)
    x, y, targets = _data((5, 3, 12, 12), 10, torch.float64)
    ref = _step(copy.deepcopy(model), "loop", x, y, targets, "logit")
    out = _step(copy.deepcopy(model), "batched", x, y, targets, "logit")
    assert (out[0] - ref[0]).abs() > 1e-6


def test_trace_backward_is_the_input_vjp_for_conv_variants():
    """Odd sizes, stride, dilation, groups and train-mode BatchNorm, against autograd, for several seeds at
    once."""
    layers = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
        nn.GELU(),
    ).double()
    x = torch.rand(3, 3, 15, 15, dtype=torch.float64, requires_grad=True)
    y, backward = trace(layers, x)
    seeds = torch.randn(4, *y.shape, dtype=torch.float64)
    expected = torch.stack([torch.autograd.grad(y, x, s, retain_graph=True)[0] for s in seeds])
    torch.testing.assert_close(backward(seeds), expected, rtol=1e-10, atol=1e-12)


def test_unsupported_modules_raise_with_their_name():
    with pytest.raises(ValueError, match="Tanh"):
        trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh()), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="same"):
        trace(nn.Conv2d(3, 4, 3, padding="same"), torch.rand(2, 3, 8, 8))


def test_registered_and_bad_grad_of_raises():
    assert set(EXACT_IMPLS) <= set(IMPLS)
    model, x = build_model("tinycnn"), torch.rand(2, 3, 8, 8)
    for impl in ("explicit", "vmap"):
        with pytest.raises(ValueError, match="logsoftmax"):
            IMPLS[impl](model, x, grad_of="prob")


def test_explicit_graph_compiles_whole():
    """The point of `explicit`: one first-order graph that torch.compile captures without breaks."""
    model = _model("tinycnn", torch.float32, True)
    x, _, targets = _data((4, 3, 8, 8), 10, torch.float32)
    compiled = torch.compile(input_gradients_explicit, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (compiled, IMPLS["loop"]):
        m = copy.deepcopy(model)
        _, grads = fn(m, x, grad_of="logsoftmax")
        cosine_misalignment(grads, targets).backward()
        results.append(m.features[0].weight.grad)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-6)


def test_explicit_under_bf16_autocast_is_as_accurate_as_loop():
    """explicit keeps its big tensors in bf16 under autocast: its error must stay that of bf16 itself."""
    model = _model("tinycnn", torch.float32, True)
    x, y, targets = _data((8, 3, 16, 16), 10, torch.float32)
    exact = torch.cat(
        [g.flatten() for g in _step(copy.deepcopy(model), "loop", x, y, targets, "logsoftmax")[1]]
    )
    errors = {}
    for impl in ("loop", "explicit"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads = _step(copy.deepcopy(model), impl, x, y, targets, "logsoftmax")[1]
        errors[impl] = (
            (torch.cat([g.flatten().float() for g in grads]) - exact).norm() / exact.norm()
        ).item()
    assert 0 < errors["explicit"] < max(1.5 * errors["loop"], 0.02), errors


def test_compiled_impl_equals_loop():
    """The shipped `compiled` (Inductor, with its config) on CPU: ~15 s of compiling for the tiny model."""
    model = _model("tinycnn", torch.float32, True)
    x, y, targets = _data((4, 3, 8, 8), 10, torch.float32)
    _assert_same_step(model, "compiled", x, y, targets, "logsoftmax", rtol=1e-4)
    logits = [IMPLS[impl](copy.deepcopy(model), x, grad_of="logsoftmax")[0] for impl in ("compiled", "loop")]
    torch.testing.assert_close(*logits, rtol=1e-4, atol=1e-6)


def _sampled_cos(model, x, targets, k, generator=None):
    """The misalignment term of the approximate loss."""
    return sampled_misalignment(model, x, targets, k=k, generator=generator)[1]


def test_sampled_is_the_scaled_cosine_of_the_drawn_classes():
    """k=1 in eval mode: C times the misalignment of one class per image, drawn as documented."""
    model = _model("tinycnn", torch.float64, False)
    x, _, targets = _data((6, 3, 8, 8), 10, torch.float64)
    cos = _sampled_cos(model, x, targets, 1, torch.Generator().manual_seed(3))
    classes = torch.rand(6, 10, generator=torch.Generator().manual_seed(3)).argsort(dim=1)[:, 0]
    _, grads = input_gradients_explicit(model, x)
    rows = torch.arange(6)
    expected = 10 * cosine_misalignment(grads[rows, classes][:, None], targets[rows, classes][:, None])
    torch.testing.assert_close(cos, expected)


def test_sampled_with_all_classes_is_exact_in_eval_mode():
    model = _model("tinycnn", torch.float64, False)
    x, _, targets = _data((4, 3, 8, 8), 10, torch.float64)
    cos = _sampled_cos(model, x, targets, 10)
    torch.testing.assert_close(cos, cosine_misalignment(input_gradients_explicit(model, x)[1], targets))
    with pytest.raises(ValueError, match="k must be"):
        _sampled_cos(model, x, targets, 11)
