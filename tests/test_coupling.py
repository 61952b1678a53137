"""BatchNorm coupling and the authors' frame (issue 23): `explicit` computes the authors' `batched` gradient
exactly; every coupling agrees in eval mode; the authors' frame equals their training step written out."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_fastpag import _data, _model
from torch import nn

from pagdemo.data.augment import AuthorsFrame, BatchCrop, augment, batch_crop
from pagdemo.pag.inputgrads import (
    COUPLINGS,
    TRAIN_COUPLINGS,
    batchnorm_detached,
    batchnorm_eval,
    default_coupling,
    running_stats_frozen,
    train_mode_coupling,
)
from pagdemo.pag.losses import IMPLS, PAGStep, cosine_misalignment, pag_loss


def _step(model, x, y, targets, impl=None, coupling=None, view=None, ce_x=None):
    """(loss, parameter gradients, buffers) after one PAG loss backward (view and ce_x: a fixed authors'
    frame)."""
    model.zero_grad(set_to_none=True)
    frame = (lambda batch: (ce_x, view)) if view is not None else None
    loss, parts = pag_loss(model, x, y, targets, 0.7, PAGStep(impl, coupling, "logsoftmax", frame))
    loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return loss.detach(), grads, dict(model.named_buffers()), parts


def _assert_close_steps(out, ref, rtol=1e-9):
    torch.testing.assert_close(out[0], ref[0], rtol=rtol, atol=0)
    for g, g_ref in zip(out[1], ref[1]):
        torch.testing.assert_close(g, g_ref, rtol=rtol, atol=rtol * g_ref.abs().max().item())
    assert any(g.abs().sum() > 0 for g in out[1])


@pytest.mark.parametrize("name,shape", [("tinycnn", (5, 3, 12, 12)), ("resnet18", (3, 3, 8, 8))])
def test_explicit_batch_coupling_is_the_authors_batched_step_in_double(name, shape):
    model = _model(name, torch.float64, train=True)
    x, y, targets = _data(shape, 10, torch.float64)
    ref = _step(copy.deepcopy(model), x, y, targets, impl="batched")
    out = _step(copy.deepcopy(model), x, y, targets, impl="explicit", coupling="batch")
    _assert_close_steps(out, ref)
    exact = _step(copy.deepcopy(model), x, y, targets, impl="explicit", coupling="classes")
    assert (exact[0] - ref[0]).abs() > 1e-6  # the two train couplings are different regularizers
    for key, b in out[2].items():  # one forward of B, not of C*B: the same mean, variance unbiased over B
        if key.endswith("running_mean"):
            torch.testing.assert_close(b, ref[2][key], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", ["loop", "batched", "vmap", "explicit"])
def test_every_coupling_agrees_in_eval_mode(impl):
    model = _model("tinycnn", torch.float64, train=False)
    x, y, targets = _data((5, 3, 12, 12), 10, torch.float64)
    ref = _step(copy.deepcopy(model), x, y, targets, impl="loop")
    for coupling in (*TRAIN_COUPLINGS[impl], "eval"):
        _assert_close_steps(_step(copy.deepcopy(model), x, y, targets, impl=impl, coupling=coupling), ref)


@pytest.mark.parametrize("impl", ["loop", "batched", "vmap", "explicit"])
def test_eval_coupling_takes_the_pag_pass_in_eval_mode_after_a_train_mode_forward(impl):
    """ "eval": the train-mode forward's cross-entropy + lambda * the eval-mode gradients' misalignment."""
    model = _model("tinycnn", torch.float64, train=True)
    x, y, targets = _data((5, 3, 12, 12), 10, torch.float64)
    out = _step(copy.deepcopy(model), x, y, targets, impl=impl, coupling="eval")
    ref_model = copy.deepcopy(model)
    ce = F.cross_entropy(ref_model(x), y)
    ref_model.eval()
    _, grads = IMPLS["loop"](ref_model, x, grad_of="logsoftmax")
    ref_loss = ce + 0.7 * cosine_misalignment(grads, targets)
    ref_model.zero_grad()
    ref_loss.backward()
    _assert_close_steps(out, (ref_loss.detach(), [p.grad for p in ref_model.parameters()]))
    assert all(m.training for m in model.modules())  # the pass leaves the model in train mode


def _with_batch_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy in eval mode whose running statistics are x's batch statistics, layer by layer (variance
    biased)."""
    ref = copy.deepcopy(model)
    inputs = {}
    hooks = [
        m.register_forward_hook(lambda m, a, out: inputs.__setitem__(m, a[0].detach()))
        for m in ref.modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        ref(x)  # train mode: each BatchNorm's input is what the detached pass sees
    for h in hooks:
        h.remove()
    for m, inp in inputs.items():
        var, mean = torch.var_mean(inp, dim=(0, 2, 3), unbiased=False)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return ref.eval()


@pytest.mark.parametrize("impl", ["loop", "batched", "vmap", "explicit"])
@pytest.mark.parametrize("name,shape", [("tinycnn", (5, 3, 12, 12)), ("resnet18", (3, 3, 8, 8))])
def test_detached_coupling_is_eval_mode_at_the_batch_statistics(impl, name, shape):
    """ "detached": the cross-entropy of the train-mode forward + lambda * the misalignment of the gradients
    that eval mode would give if the running statistics were the batch's; the running statistics move once."""
    model = _model(name, torch.float64, train=True)
    x, y, targets = _data(shape, 10, torch.float64)
    trained = copy.deepcopy(model)
    out = _step(trained, x, y, targets, impl=impl, coupling="detached")
    ref_model = copy.deepcopy(model)
    ce = F.cross_entropy(ref_model(x), y)
    stats = dict(ref_model.named_buffers())
    at_batch = _with_batch_statistics(model, x)
    _, grads = IMPLS["loop"](at_batch, x, grad_of="logsoftmax")
    ref_loss = ce + 0.7 * cosine_misalignment(grads, targets)
    ref_model.zero_grad()
    at_batch.zero_grad()
    ref_loss.backward()
    ref_grads = [a.grad + b.grad for a, b in zip(ref_model.parameters(), at_batch.parameters())]
    _assert_close_steps(out, (ref_loss.detach(), ref_grads))
    for key, b in out[2].items():  # moved by the cross-entropy's forward only
        torch.testing.assert_close(b, stats[key], rtol=1e-12, atol=0)
    train_coupled = _step(copy.deepcopy(model), x, y, targets, impl="loop", coupling="classes")
    assert (train_coupled[0] - out[0]).abs() > 1e-6  # a different regularizer from the train-mode one
    assert all(m.training for m in trained.modules())


def test_batchnorm_detached_restores_the_class_forward():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3).eval())
    x = torch.randn(4, 3, 5, 5)
    with batchnorm_detached(model):
        assert "forward" in vars(model[0]) and "forward" not in vars(model[1])
        y = model[0](x)
    assert "forward" not in vars(model[0])
    torch.testing.assert_close(y, model[0](x))  # the same values as train mode


def _authors_step(model, x, y, targets, lam, crop_ce, crop_pag):
    """The authors' TRAIN_CIFAR10.py train step for all C classes, with autograd (float64 here)."""
    b, c = len(x), targets.shape[1]
    loss_ce = F.cross_entropy(model(crop_ce(x)), y)
    ims = x.repeat_interleave(c, dim=0).requires_grad_(
        True
    )  # each image repeated C times, one copy per class
    target_new = torch.arange(c).repeat(b)
    dummy = F.cross_entropy(model(crop_pag(ims)), target_new)
    (grad,) = torch.autograd.grad(-dummy, [ims], create_graph=True)
    cos = F.cosine_similarity(grad.view(b * c, -1), targets.reshape(b * c, -1), dim=1)
    return loss_ce + lam * c * (1 - cos.mean())


def test_authors_frame_and_coupling_equal_their_training_step():
    model = _model("tinycnn", torch.float64, train=True)
    x, y, targets = _data((4, 3, 12, 12), 10, torch.float64)
    crop_ce, crop_pag = BatchCrop(1, 6, True), BatchCrop(7, 2, False)
    out = _step(
        copy.deepcopy(model), x, y, targets, impl="explicit", coupling="batch", view=crop_pag, ce_x=crop_ce(x)
    )
    ref_model = copy.deepcopy(model)
    ref_loss = _authors_step(ref_model, x, y, targets, 0.7, crop_ce, crop_pag)
    ref_loss.backward()
    _assert_close_steps(out, (ref_loss.detach(), [p.grad for p in ref_model.parameters()]))
    moved = _step(
        copy.deepcopy(model),
        x,
        y,
        targets,
        impl="explicit",
        coupling="batch",
        view=BatchCrop(7, 3, False),
        ce_x=crop_ce(x),
    )
    assert (moved[0] - out[0]).abs() > 1e-6  # the crop matters: the test would see a view that was ignored


def test_batch_crop_adjoint_is_its_transpose_and_the_crop_is_the_per_image_one():
    x, g = torch.rand(2, 3, 10, 10, dtype=torch.float64), torch.rand(2, 3, 10, 10, dtype=torch.float64)
    for crop in (BatchCrop(0, 8, True), BatchCrop(3, 5, False), BatchCrop(8, 0, True)):
        torch.testing.assert_close((crop(x) * g).sum(), (x * crop.adjoint(g)).sum())
    # The per-image augmentation with a generator that draws the same window for both images:
    crop = BatchCrop(2, 5, True)
    padded = F.pad(x, (4,) * 4)
    torch.testing.assert_close(crop(x), padded[..., 2:12, 5:15].flip(-1))
    draws = {batch_crop(torch.Generator().manual_seed(s)) for s in range(40)}
    assert len(draws) > 20 and all(0 <= d.dy <= 8 and 0 <= d.dx <= 8 for d in draws)
    assert {d.flip for d in draws} == {True, False}
    assert augment(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_couplings_an_impl_cannot_compute_are_refused_in_one_line():
    assert default_coupling("batched") == "batch" and default_coupling("compiled") == "classes"
    with pytest.raises(ValueError, match="cannot compute BatchNorm coupling 'batch'; use one of.*explicit"):
        PAGStep("loop", "batch")
    with pytest.raises(ValueError, match="cannot compute BatchNorm coupling 'classes'"):
        PAGStep("batched", "classes")
    with pytest.raises(ValueError, match="unknown BatchNorm coupling 'bn'"):
        PAGStep("explicit", "bn")
    for impl in IMPLS:
        assert PAGStep(impl, "eval").coupling == "eval" and PAGStep(impl, "detached").impl == impl
    assert (PAGStep().impl, PAGStep().coupling) == ("batched", "batch")  # the authors' step, for any model
    assert (PAGStep(coupling="classes").impl, PAGStep("compiled").coupling) == ("loop", "classes")
    assert set(COUPLINGS) == {"classes", "batch", "eval", "detached"}


def test_batchnorm_eval_restores_only_what_was_in_train_mode():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3).eval())
    with batchnorm_eval(model):
        assert not any(m.training for m in model)
    assert [m.training for m in model] == [True, False]


@pytest.mark.parametrize("coupling,ref_impl", [("batch", "batched"), ("detached", "loop")])
def test_explicit_train_couplings_compile_whole(coupling, ref_impl):
    model = _model("tinycnn", torch.float32, train=True)
    x, _, _ = _data((4, 3, 8, 8), 10, torch.float32)
    compiled = torch.compile(IMPLS["explicit"], backend="aot_eager", fullgraph=True)
    got = compiled(copy.deepcopy(model), x, grad_of="logsoftmax", coupling=coupling)[1]
    want = PAGStep(ref_impl, coupling, "logsoftmax").input_gradients(copy.deepcopy(model), x)[1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_step_with_its_own_cross_entropy_forward_moves_the_running_statistics_once():
    """The authors' frame and the eval coupling forward twice per step; BatchNorm's running statistics move
    once."""
    model = _model("tinycnn", torch.float64, train=True)
    x, y, targets = _data((4, 3, 12, 12), 10, torch.float64)
    once = copy.deepcopy(model)
    once(x)
    for kwargs in ({"coupling": "batch", "view": BatchCrop(4, 4, False), "ce_x": x}, {"coupling": "eval"}):
        moved = _step(copy.deepcopy(model), x, y, targets, impl="explicit", **kwargs)[2]
        for name, buf in once.named_buffers():
            torch.testing.assert_close(moved[name], buf, rtol=0, atol=0, msg=f"{name} after {kwargs}")


def test_compiled_step_in_the_authors_frame_trains():
    """The shipped `compiled` (Inductor) through a whole training step in the authors' frame and coupling: the
    cross-entropy's own forward must survive the PAG pass (issue 23's first window failed here)."""
    model = _model("tinycnn", torch.float32, train=True)
    x, y, targets = _data((4, 3, 12, 12), 10, torch.float32)
    crop = BatchCrop(1, 6, True)
    out = _step(
        copy.deepcopy(model), x, y, targets, impl="compiled", coupling="batch", view=crop, ce_x=crop(x)
    )
    ref = _step(
        copy.deepcopy(model), x, y, targets, impl="explicit", coupling="batch", view=crop, ce_x=crop(x)
    )
    _assert_close_steps(out, ref, rtol=1e-4)


def test_running_stats_frozen_restores_the_flag_after_an_error_and_leaves_untracked_batchnorms_alone():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(RuntimeError, match="boom"), running_stats_frozen(model):
        assert [m.track_running_stats for m in model] == [False, False]
        raise RuntimeError("boom")
    assert [m.track_running_stats for m in model] == [True, False]


def test_an_eval_mode_run_is_monitored_in_train_mode_as_classes_every_other_in_its_own():
    assert train_mode_coupling("eval") == "classes"
    assert [train_mode_coupling(c) for c in COUPLINGS if c != "eval"] == [c for c in COUPLINGS if c != "eval"]


def test_the_authors_frame_draws_the_cross_entropys_crop_then_the_pag_passs():
    x = torch.rand(3, 3, 8, 8)
    ce_x, view = AuthorsFrame(torch.Generator().manual_seed(5))(x)
    g = torch.Generator().manual_seed(5)
    first, second = batch_crop(g), batch_crop(g)
    torch.testing.assert_close(ce_x, first(x), rtol=0, atol=0)
    assert view == second and view != first
