"""pagdemo from Python, in a few names (re-exported by `pagdemo`): load a checkpoint, attack it, look at its
input gradients, and train with the PAG loss in any loop. The CLI and the app call the same functions
underneath."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pagdemo.attacks import pgd
from pagdemo.data.images import load_image as _load_image
from pagdemo.models import PAGClassifier
from pagdemo.pag.losses import PAGStep
from pagdemo.records.checkpoints import CheckpointError, load_checkpoint
from pagdemo.threat import eval_eps

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"  # the repository's trained models


def load(name: str | Path, device: str | torch.device = "cpu") -> PAGClassifier:
    """A checkpoint in eval mode: a folder, a shipped name ("vanilla", "pag-cm"), or "hf-hub:ORG/NAME[@REV]".

    Its input is (B, 3, H, W) in [0, 1] (normalization is its first layer); `.classes` names its outputs.
    """
    spec = str(name)
    shipped = (
        sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").exists()) if SHIPPED.is_dir() else []
    )
    if spec in shipped and not Path(spec).exists():
        spec = str(SHIPPED / spec)
    elif not (Path(spec).exists() or spec.startswith("hf-hub:") or "/" in spec):
        names = f"one of {shipped}" if shipped else "a shipped name (from a checkout of the repository)"
        raise CheckpointError(f"no checkpoint {spec!r}: give a folder, hf-hub:ORG/NAME, or {names}")
    return load_checkpoint(spec, device).eval()


def load_image(path: str | Path, size: int = 32) -> torch.Tensor:
    """An image file as a model's input: (1, 3, size, size) in [0, 1], centre-cropped to a square."""
    return _load_image(path, size).unsqueeze(0)


class PGD:
    """Projected gradient descent (Madry et al. 2018) with the paper's settings: `PGD(model)(images, labels)`.

    norm: "linf" or "l2"; eps: the radius in [0, 1] pixel units (default: the paper's, linf 8/255 and l2 0.5
    at 32x32, l2 scaled with the side); steps 20 of 2 eps / steps from a random start. targeted=True moves the
    images toward `labels` instead of away. Returns detached images in [0, 1]; the model's mode and grads are
    left alone.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 20,
        targeted: bool = False,
        random_start: bool = True,
    ) -> None:
        self.model, self.norm, self.steps, self.targeted, self.random_start = (
            model,
            norm,
            steps,
            targeted,
            random_start,
        )
        self.eps = eval_eps(norm, image_size=getattr(model, "image_size", None)) if eps is None else eps

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial examples of `images` (N, C, H, W) for `labels` (N,)."""
        return pgd(
            self.model,
            images,
            labels,
            self.eps,
            norm=self.norm,
            steps=self.steps,
            targeted=self.targeted,
            random_init=self.random_start,
        )


def input_gradients(model: nn.Module, images: torch.Tensor, grad_of: str = "logit") -> torch.Tensor:
    """(B, C, *image): the gradient of every class's logit (or log-softmax) w.r.t. the images, in eval mode,
    as attacks see it; PAG asks these to point toward images of each class."""
    with torch.enable_grad():  # the eval coupling puts BatchNorm in eval mode for the pass
        return PAGStep("loop", "eval", grad_of).input_gradients(model, images, create_graph=False)[1].detach()
