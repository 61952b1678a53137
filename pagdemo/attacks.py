"""PGD (Madry et al. 2018) in the linf and l2 threat models, untargeted and targeted, and N-FGSM; they leave
the model's mode and its parameters' `.grad` as they found them.

A confident model's gradient can be tiny (a vanilla ResNet-18 with a logit margin near 30: input gradients
near 1e-14). So the loss is summed over images (an image's gradient does not shrink with the batch), its
logits are taken in float64 (in float32 the true class's term of the gradient rounds to zero once the margin
passes about 17), and an l2 step divides by the gradient's norm however small (torchattacks adds 1e-10, which
shrank these steps to nothing: PGD-20 l2 left 5 of 200 vanilla images standing that AutoAttack broke)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.threat import NFGSM_NOISE, check_norm, eval_step

_TINY = 1e-10  # guards the norms of perturbations (about eps) against division by zero, as torchattacks does


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Attack the deployed model (BatchNorm running statistics), then restore the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast back over (C, H, W)."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def _unit(grad: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient at unit L2 norm, however small its norm (a zero gradient stays zero)."""
    return grad / _per_sample_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)


def attack_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cross-entropy PGD ascends: summed over images, in float64 (see the module docstring)."""
    return F.cross_entropy(logits.double(), y, reduction="sum")


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Pull a perturbation back into the eps-ball of its threat model."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / (_per_sample_norm(delta) + _TINY)).clamp(max=1.0)


def random_start(
    x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniform point of the linf cube, or a uniform direction at a uniform radius in the l2 ball."""
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device, dtype=x.dtype)
    return d / (_per_sample_norm(d) + _TINY) * r * eps


def check_attack_args(norm: str, eps: float, steps: int) -> None:
    """Bad attack settings are user errors: name the value and the valid choices."""
    check_norm(norm)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def pgd_steps(
    model: nn.Module,
    x: torch.Tensor,  # (N, ...), in `bounds` (pixels: [0, 1]; the toy experiment's coordinates: None)
    y: torch.Tensor,  # the true labels, or the target classes if `targeted` (descend the loss toward them)
    eps: float,  # per pixel (linf) or per image (l2), in x's units
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,  # default: the paper's (and TRADES') 2 eps / steps
    targeted: bool = False,
    random_init: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each PGD iterate (detached), so that a caller can show the image as it changes."""
    check_attack_args(norm, eps, steps)
    alpha = eval_step(eps, steps) if step_size is None else step_size
    x = x.detach()
    x_adv = x + random_start(x, norm, eps, generator) if random_init else x.clone()
    if bounds is not None:
        x_adv = x_adv.clamp(*bounds)
    with eval_mode(model):
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            loss = attack_loss(model(x_adv), y)
            (grad,) = torch.autograd.grad(-loss if targeted else loss, x_adv)
            with torch.no_grad():
                x_adv = x_adv + alpha * (grad.sign() if norm == "linf" else _unit(grad))
                x_adv = x + project(x_adv - x, norm, eps)
                if bounds is not None:
                    x_adv = x_adv.clamp(*bounds)
            yield x_adv.detach()


def nfgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N-FGSM (de Jorge et al. 2022) for adversarial training: one step of size eps from a random point of the
    2-eps ball, not projected back (the noise is what prevents catastrophic overfitting)."""
    check_attack_args(norm, eps, 1)
    x = x.detach()
    x_noisy = (x + random_start(x, norm, NFGSM_NOISE * eps, generator)).clamp(0, 1).requires_grad_(True)
    with eval_mode(model):
        (grad,) = torch.autograd.grad(attack_loss(model(x_noisy), y), x_noisy)
    step = grad.sign() if norm == "linf" else _unit(grad)
    return (x_noisy.detach() + eps * step).clamp(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
    """Run PGD to its last step; see `pgd_steps` for the arguments."""
    return deque(pgd_steps(model, x, y, eps, **kwargs), maxlen=1).pop()  # the last iterate
