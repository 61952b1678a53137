"""Training augmentation, random crop (zero padding) and horizontal flip, on the device: per image (`augment`,
ours), or one for the whole batch (`BatchCrop`, the authors'), a linear map whose `adjoint` takes a gradient
back to the un-augmented frame. A run records which as `--pag-frame` (docs/training.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD = 4  # CIFAR's random-crop padding


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = PAD) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip (p=0.5) per image, as one gather on x's device."""
    n, c, h, w = x.shape
    # a CPU generator gives the same crops on GPU
    dev = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(n, 1, generator=generator, device=dev) < 0.5).to(x.device)
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    cols = torch.where(flip, cols.flip(1), cols)
    xp = F.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[batch, chan, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


@dataclass(frozen=True)
class BatchCrop:
    """One crop window (offsets into the zero-padded image) and flip for a whole batch: a linear map."""

    dy: int
    dx: int
    flip: bool
    pad: int = PAD

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Crop and flip the last two dimensions."""
        h, w = x.shape[-2:]
        out = F.pad(x, (self.pad,) * 4)[..., self.dy : self.dy + h, self.dx : self.dx + w]
        return out.flip(-1) if self.flip else out

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """The crop's transpose: a gradient w.r.t. the cropped image, as one w.r.t. the original."""
        h, w = g.shape[-2:]
        g = g.flip(-1) if self.flip else g
        full = F.pad(g, (self.dx, 2 * self.pad - self.dx, self.dy, 2 * self.pad - self.dy))
        return full[..., self.pad : self.pad + h, self.pad : self.pad + w]


def batch_crop(generator: torch.Generator | None = None, pad: int = PAD) -> BatchCrop:
    """Draw one crop and flip for a batch (the authors' augmentation), from the training generator."""
    dev = generator.device if generator is not None else "cpu"
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator, device=dev).tolist()
    return BatchCrop(dy, dx, bool(torch.rand(1, generator=generator, device=dev).item() < 0.5), pad)


class AuthorsFrame:
    """The authors' frame (TRAIN_CIFAR10.py): a batch crop for CE, one for PAG, grads w.r.t. uncropped x."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, BatchCrop]:
        """(the cross-entropy's batch, the PAG pass's crop: a linear map with an adjoint)."""
        return batch_crop(self.generator)(x), batch_crop(self.generator)
