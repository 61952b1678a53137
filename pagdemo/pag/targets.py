"""The "ground-truth" gradients g(x, t) of the PAG loss, for all C target classes of a batch.

Class representatives (Sec. 4.2): g(x, t) = r_t - x, pointing from the image toward class t.
- One Image (OI): r_t is one fixed training image of class t, drawn with the seed.
- Class Mean (CM): r_t is the mean training image of class t at an image-like norm (the paper's words): about
  black (`image-norm`, ours: the norm of the class's images, clamped to [0, 1]), about grey (`centred`, the
  authors' [-1, 1] space, where the 10 means differ far more), or raw (`none`).
- Nearest Neighbor (NN, Eq. 3): r(x, t) is the L2-nearest of a fixed sample of K class-t training images,
  never x's own source image (matched by dataset index: an augmented x is not its source pixel for pixel).
RIGD (Sec. 4.1): g(x, t) = grad_x f*(x)_t of a frozen robust teacher; an upper bound only.
Every target returns a detached (B, C, *x.shape[1:]) tensor for the batch the model sees; `describe()` is what
the checkpoint records.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pagdemo.pag.inputgrads import input_gradients_batched

_CHUNK = 4096  # images converted to float at a time, so 50k CIFAR images never sit in fp32 at once


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> [0, 1]; float inputs (the toy's coordinates) pass through unchanged."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def _per_class_sample(
    labels: torch.Tensor, num_classes: int, k: int, generator: torch.Generator
) -> torch.Tensor:
    """(C, k) dataset indices: k i.i.d. images of each class, drawn without replacement."""
    rows = []
    for t in range(num_classes):
        idx = (labels == t).nonzero().squeeze(1)
        if len(idx) < k:
            raise ValueError(f"class {t} has {len(idx)} training images, fewer than k={k}")
        rows.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.stack(rows)


class RepresentativeTarget(nn.Module):
    """g(x, t) = r_t - x with one fixed representative per class (OI and CM)."""

    def __init__(self, reps: torch.Tensor, info: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("reps", reps)  # (C, ...)
        self.info = info

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        return (self.reps.unsqueeze(0) - x.unsqueeze(1)).detach()

    def describe(self) -> dict[str, Any]:
        return self.info


def one_image(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0
) -> RepresentativeTarget:
    """OI: an arbitrary but recorded training image per class."""
    picks = _per_class_sample(labels, num_classes, 1, torch.Generator().manual_seed(seed))[:, 0]
    return RepresentativeTarget(
        _as_float(images[picks]), {"target": "oi", "indices": picks.tolist(), "seed": seed}
    )


CM_SCALINGS = ("image-norm", "none", "centred")  # the Class Mean's scalings (class_mean)
GREY = 0.5  # the centre of the authors' inputs (normalized by mean 0.5, std 0.5: [-1, 1]), in pixels
_CM_INFO = {
    "image-norm": "L2 norm of each class mean set to the class's mean image norm",
    "none": "none (the raw class mean)",
    "centred": "each class mean's departure from grey (0.5) scaled to the class's mean L2 distance "
    "from grey, as in the authors' [-1, 1] space; not clipped to [0, 1]",
}


def class_mean(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, scaling: str = "image-norm"
) -> RepresentativeTarget:
    """CM: the class's mean image at an image-like norm about black (image-norm) or grey (centred), or raw
    (none).

    About black, the 10 means are almost one image (a raw mean has 92% of an image's norm already); about
    grey, the authors' origin, a mean has 31% of an image's norm, and scaling it up amplifies each class's own
    departure.
    """
    if scaling not in CM_SCALINGS:
        raise ValueError(f"unknown Class Mean scaling {scaling!r}; choose one of {list(CM_SCALINGS)}")
    centre = GREY if scaling == "centred" else 0.0
    sums = torch.zeros(num_classes, *images.shape[1:])
    norm_sums, counts = torch.zeros(num_classes), torch.zeros(num_classes)
    for i in range(0, len(images), _CHUNK):
        xb, yb = _as_float(images[i : i + _CHUNK]), labels[i : i + _CHUNK]
        sums.index_add_(0, yb, xb)
        norm_sums.index_add_(0, yb, (xb - centre).flatten(1).norm(dim=1))
        counts.index_add_(0, yb, torch.ones(len(yb)))
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"class mean needs images of every class; none for {missing}")
    shape = (-1,) + (1,) * (images.dim() - 1)
    means = sums / counts.view(shape)
    if scaling == "none":  # the raw mean: a low-contrast image, already in [0, 1]
        return RepresentativeTarget(means, {"target": "cm", "scaling": _CM_INFO[scaling]})
    scale = (norm_sums / counts) / (means - centre).flatten(1).norm(dim=1).clamp_min(1e-12)
    reps = centre + (means - centre) * scale.view(shape)
    if scaling == "image-norm" and images.dtype == torch.uint8:
        reps = reps.clamp(0, 1)
    info = {"target": "cm", "scale": [round(s, 4) for s in scale.tolist()], "scaling": _CM_INFO[scaling]}
    return RepresentativeTarget(reps, info)


class NearestNeighborTarget(nn.Module):
    """NN (Eq. 3): r(x, t) = the nearest of K fixed class-t samples, never x's own source image."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 100, seed: int = 0
    ) -> None:
        super().__init__()
        bank_idx = _per_class_sample(labels, num_classes, k, torch.Generator().manual_seed(seed))  # (C, K)
        self.register_buffer("bank_idx", bank_idx)
        self.register_buffer(
            "bank", _as_float(images[bank_idx.flatten()]).view(num_classes, k, *images.shape[1:])
        )
        self.k, self.seed = k, seed

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        c, k = self.bank_idx.shape
        d = torch.cdist(x.flatten(1).float(), self.bank.flatten(2).flatten(0, 1).float()).view(len(x), c, k)
        if idx is not None:  # exclude x itself
            d = d.masked_fill(
                self.bank_idx.unsqueeze(0) == idx.view(-1, 1, 1).to(self.bank_idx.device), float("inf")
            )
        nearest = d.argmin(dim=2)  # (B, C)
        reps = self.bank[torch.arange(c, device=x.device).unsqueeze(0), nearest]  # (B, C, ...)
        return (reps.to(x.dtype) - x.unsqueeze(1)).detach()

    def describe(self) -> dict[str, Any]:
        return {"target": "nn", "k": self.k, "seed": self.seed, "metric": "L2 in pixel space"}


class TeacherGradientTarget(nn.Module):
    """RIGD: the frozen robust teacher's input gradients for every class (Sec. 4.1)."""

    def __init__(self, teacher: nn.Module, grad_of: str = "logit", name: str = "") -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.grad_of, self.name = grad_of, name

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.teacher.eval()  # a parent's .train() must not switch the teacher's BatchNorm to batch statistics
        with torch.enable_grad():
            _, g = input_gradients_batched(self.teacher, x.float(), self.grad_of, create_graph=False)
        return g.to(x.dtype).detach()

    def describe(self) -> dict[str, Any]:
        return {"target": "rigd", "teacher": self.name, "grad_of": self.grad_of}


TARGET_KINDS = ("oi", "cm", "nn")  # the class-representative targets; RIGD's is a teacher model


def build_target(
    kind: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seed: int = 0,
    k: int = 100,
    cm_scaling: str = "image-norm",
) -> nn.Module:
    """A class-representative target by name, from the training images (RIGD's is built from its teacher)."""
    if kind == "oi":
        return one_image(images, labels, num_classes, seed)
    if kind == "cm":
        return class_mean(images, labels, num_classes, cm_scaling)
    if kind == "nn":
        return NearestNeighborTarget(images, labels, num_classes, k, seed)
    raise ValueError(
        f"unknown target {kind!r}; choose one of {list(TARGET_KINDS)} (or a teacher model: RIGD)"
    )
