"""Fast exact input gradients for the PAG loss (Eq. 1), registered in `pagdemo.pag.losses.IMPLS`.

The reference `loop` takes C double-differentiable backward passes, slow and refused by `torch.compile`. These
compute exactly what `loop` computes (and, with the "batch" coupling, what the authors' `batched` computes):
- `vmap`: one forward, then the C vector-Jacobian products in one `autograd.grad(is_grads_batched=True)` call.
- `explicit`: the model's backward-to-input written as ordinary ops (conv -> conv_transpose2d; BatchNorm, ReLU
  and pooling as formulas), run on all C one-hot seeds at once over one forward's activations: the PAG term is
  a first-order graph that autograd differentiates once and `torch.compile` can fuse.
- `compiled`: `explicit` under `torch.compile` (compiles once per model and shape; docs/bench/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.models import MLP, BasicBlock, Normalize, PAGClassifier, ResNet18, TinyCNN
from pagdemo.pag.inputgrads import batch_affine, check_grad_of

# Maps the gradient w.r.t. a layer's output, shaped (S, B, *out) for S seeds of the B images,
# to the gradient w.r.t. its input, shaped (S, B, *in).
Backward = Callable[[torch.Tensor], torch.Tensor]
Tracer = Callable[[nn.Module, torch.Tensor, str], tuple[torch.Tensor, Backward]]
_TRACERS: dict[type, Tracer] = {}


def _tracer(module_type: type):
    def deco(fn: Tracer) -> Tracer:
        _TRACERS[module_type] = fn
        return fn

    return deco


def trace(module: nn.Module, x: torch.Tensor, coupling: str = "classes") -> tuple[torch.Tensor, Backward]:
    """Run `module` on x (its own forward) and return its input-backward; a train-mode BatchNorm's backward
    averages over each seed's B images ("classes"), all S*B copies ("batch"), or nothing ("detached")."""
    if type(module) not in _TRACERS:
        names = sorted(t.__name__ for t in _TRACERS)
        raise ValueError(
            f"explicit PAG gradients do not support {type(module).__name__}; supported modules: {names}"
        )
    return _TRACERS[type(module)](module, x, coupling)


def _acc(t: torch.Tensor) -> torch.Tensor:
    """Batch statistics in at least fp32, as cuDNN's BatchNorm keeps them under bf16 autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _seeds_first(fn: Callable[[torch.Tensor], torch.Tensor]) -> Backward:
    """Lift a (N, ...) -> (N, ...) op to (S, B, ...) by folding the seeds into the batch (conv needs 4-D)."""
    return lambda g: fn(g.flatten(0, 1)).unflatten(0, g.shape[:2])


def _chain(*backs: Backward) -> Backward:
    """Compose input-backwards listed in forward order."""

    def backward(g: torch.Tensor) -> torch.Tensor:
        for back in reversed(backs):
            g = back(g)
        return g

    return backward


def _trace_layers(layers, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """Run layers in order; the backward runs them in reverse."""
    backs = []
    for layer in layers:
        x, back = trace(layer, x, coupling)
        backs.append(back)
    return x, _chain(*backs)


@_tracer(nn.Sequential)
def _trace_sequential(module: nn.Sequential, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """Layers in order."""
    return _trace_layers(module, x, coupling)


@_tracer(nn.ReLU)
def _trace_relu(module: nn.ReLU, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """ReLU: the gradient passes where the output is positive."""
    y = F.relu(x)
    mask = y > 0  # as autograd's threshold_backward: zero gradient where the output is 0
    return y, lambda g: g * mask


@_tracer(nn.GELU)
def _trace_gelu(module: nn.GELU, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """GELU: the gradient scaled by GELU's slope at x."""
    y = module(x)
    slope = torch.ops.aten.gelu_backward(torch.ones_like(x), x, approximate=module.approximate)  # GELU'(x)
    return y, lambda g: g * slope.to(g.dtype)


@_tracer(Normalize)
def _trace_normalize(module: Normalize, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """(x - mean) / std: the gradient divided by std."""
    return module(x), lambda g: g / module.std


@_tracer(nn.Linear)
def _trace_linear(module: nn.Linear, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """A linear layer: the gradient times the weight."""
    return module(x), lambda g: g @ module.weight


@_tracer(nn.Conv2d)
def _trace_conv(module: nn.Conv2d, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """A convolution: its backward to the input is the transposed convolution."""
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError(
            "explicit PAG gradients need numeric zero padding, got "
            f"{module.padding!r}/{module.padding_mode!r}"
        )
    y = module(x)
    # The transposed conv maps the output size back to several input sizes; pick x's.
    k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
    output_padding = [
        x.shape[i + 2] - ((y.shape[i + 2] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1) for i in range(2)
    ]

    def conv_t(g):
        return F.conv_transpose2d(g, module.weight, None, s, p, output_padding, module.groups, d)

    return y, _seeds_first(conv_t)


@_tracer(nn.BatchNorm2d)
def _trace_batchnorm(module: nn.BatchNorm2d, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """BatchNorm: an affine map in eval mode and "detached"; through the batch statistics in train mode."""
    if module.training and coupling == "detached":  # the batch's statistics, held constant
        scale, shift = batch_affine(module, x)
        return x * scale + shift, lambda g: g * scale.to(g.dtype)
    y = module(x)  # updates the running statistics once, as in `loop` (not at all under running_stats_frozen)
    shape = (1, -1, 1, 1)
    gamma = module.weight.view(shape) if module.weight is not None else 1.0
    if not (module.training or module.running_mean is None):  # eval: a fixed affine map
        scale = gamma * torch.rsqrt(module.running_var + module.eps).view(shape)
        return y, lambda g: g * scale.to(g.dtype)
    var, mean = torch.var_mean(_acc(x), dim=(0, 2, 3), unbiased=False)
    invstd = torch.rsqrt(var + module.eps).view(shape)
    xhat = (_acc(x) - mean.view(shape)) * invstd
    scale = gamma * invstd

    def backward(g: torch.Tensor) -> torch.Tensor:
        # d xhat / d x through the batch mean and variance: scale * (g - mean(g) - xhat * mean(g * xhat)),
        # the means per seed over its own B images ("classes"), or over all S*B copies ("batch": the
        # statistics of the authors' repeated batch, whose forward values are the same). The (S, B, ...)
        # tensors stay in g's dtype (bf16 under autocast) and pass through two fused kernels; the means
        # accumulate in fp32.
        acc, dims = _acc(g).dtype, ((0, 1, 3, 4) if coupling == "batch" else (1, 3, 4))
        xh = xhat.to(g.dtype)
        g_mean = g.mean(dim=dims, keepdim=True, dtype=acc)
        gx_mean = (g * xh).mean(dim=dims, keepdim=True, dtype=acc)
        return torch.addcmul(
            torch.addcmul((-scale * g_mean).to(g.dtype), (-scale * gx_mean).to(g.dtype), xh),
            scale.to(g.dtype),
            g,
        )

    return y, backward


def _trace_pool_flatten(x: torch.Tensor) -> tuple[torch.Tensor, Backward]:
    """Global average pool + flatten, the head of both image models."""
    h, w = x.shape[-2:]
    spread = lambda g: (g[..., None, None] / (h * w)).expand(*g.shape, h, w)  # noqa: E731
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), spread


@_tracer(BasicBlock)
def _trace_block(module: BasicBlock, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """A residual block: main path and shortcut, summed before the last activation."""
    out, back_main = _trace_layers(
        (module.conv1, module.bn1, module.act1, module.conv2, module.bn2), x, coupling
    )
    short, back_short = trace(module.shortcut, x, coupling)
    out, back_act = trace(module.act2, out + short, coupling)
    return out, _chain(lambda g: back_main(g) + back_short(g), back_act)


@_tracer(ResNet18)
def _trace_resnet(module: ResNet18, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """ResNet-18: stem, stages, pool, linear."""
    stem_and_stages = ("normalize", "conv1", "bn1", "act", "layer1", "layer2", "layer3", "layer4")
    x, back_body = _trace_layers([getattr(module, name) for name in stem_and_stages], x, coupling)
    x, back_pool = _trace_pool_flatten(x)
    logits, back_linear = trace(module.linear, x, coupling)
    return logits, _chain(back_body, back_pool, back_linear)


@_tracer(PAGClassifier)
def _trace_classifier(module: PAGClassifier, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """The checkpoint wrapper: its network."""
    return trace(module.net, x, coupling)


@_tracer(TinyCNN)
def _trace_tinycnn(module: TinyCNN, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """The tiny CNN: features, pool, linear."""
    x, back_body = _trace_layers((module.normalize, module.features), x, coupling)
    x, back_pool = _trace_pool_flatten(x)
    logits, back_linear = trace(module.linear, x, coupling)
    return logits, _chain(back_body, back_pool, back_linear)


@_tracer(MLP)
def _trace_mlp(module: MLP, x: torch.Tensor, coupling: str) -> tuple[torch.Tensor, Backward]:
    """The toy MLP."""
    return trace(module.net, x, coupling)


def class_seeds(logits: torch.Tensor, grad_of: str) -> torch.Tensor:
    """(C, B, C): d score_t / d logits for every class t, the seeds of the C backward passes."""
    c = logits.shape[1]
    eye = torch.eye(c, device=logits.device, dtype=logits.dtype)[:, None, :]
    if grad_of == "logit":
        return eye.expand(c, logits.shape[0], c)
    check_grad_of(grad_of)  # "logsoftmax": d log p_t / d logits = e_t - p
    return eye - F.softmax(_acc(logits), dim=1).to(logits.dtype)[None]


def input_gradients_explicit(
    model: nn.Module,
    x: torch.Tensor,
    grad_of: str = "logit",
    create_graph: bool = True,
    coupling: str = "classes",
):
    """(logits (B, C), grads (B, C, *x)) from one forward and a first-order backward graph.

    Equal to `loop`'s with coupling "classes", to `batched`'s with "batch" (`trace` says what differs).
    """
    logits, backward = trace(model, x.detach(), coupling)
    grads = backward(class_seeds(logits, grad_of)).transpose(0, 1)
    return logits, grads if create_graph else grads.detach()


def input_gradients_vmap(
    model: nn.Module, x: torch.Tensor, grad_of: str = "logit", create_graph: bool = True
):
    """(logits (B, C), grads (B, C, *x)) equal to `loop`'s, the C backward passes vectorized by autograd."""
    check_grad_of(grad_of)
    x = x.detach().requires_grad_(True)
    logits = model(x)
    scores = F.log_softmax(logits, dim=1) if grad_of == "logsoftmax" else logits
    seeds = class_seeds(logits.detach(), "logit")  # one-hot rows: the scores' own Jacobian does the rest
    (grads,) = torch.autograd.grad(
        scores, x, grad_outputs=seeds, is_grads_batched=True, create_graph=create_graph
    )
    return logits, grads.transpose(0, 1)


@functools.cache
def _compiled_explicit() -> Callable:
    """Compile lazily: importing pagdemo must not start the compiler.

    Inductor's mix-order reduction fusion is off: in torch 2.11 on an H100 it fails to compile
    ResNet-18 at batch 64 ("AssertionError: 256 v.s. 2560", docs/bench/README.md).
    """
    return torch.compile(
        input_gradients_explicit, dynamic=False, options={"triton.mix_order_reduction": False}
    )


def input_gradients_compiled(
    model: nn.Module,
    x: torch.Tensor,
    grad_of: str = "logit",
    create_graph: bool = True,
    coupling: str = "classes",
):
    """`explicit` under torch.compile: the first call per model, shape and coupling compiles (slow on CPU)."""
    return _compiled_explicit()(model, x, grad_of=grad_of, create_graph=create_graph, coupling=coupling)


EXACT_IMPLS = {
    "vmap": input_gradients_vmap,
    "explicit": input_gradients_explicit,
    "compiled": input_gradients_compiled,
}
TRACED_IMPLS = ("explicit", "compiled")  # they write BatchNorm's backward themselves, every coupling included
