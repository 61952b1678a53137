"""Issue 23's CPU diagnosis: where does the shipped Class Mean model's alignment live?

For a fixed class-balanced subset of CIFAR-10 training images (augmented once, as training saw
them) it measures: how much the 10 Class Mean targets of one image point the same way (scaled as we
train, and the raw class mean); the lowest summed misalignment per-image log-softmax gradients can
reach for those targets (`per_image_floor` below); and, for each checkpoint, the summed
misalignment of its log-softmax input gradients in train-mode BatchNorm (batches of 256, the two
train couplings, and "detached": the batch's statistics held constant, per-image gradients) and in
eval mode, the gradient that attacks and the app see.

    python -m maintainer.coupling_diagnosis --out docs/diagnosis/coupling.json   # ~10 min on 2 CPU cores

The JSON holds the command, commit, machine and every number; `python -m maintainer.docs` prints its table
into docs/training.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from maintainer.provenance import record_header
from pagdemo.data.augment import augment
from pagdemo.data.datasets import load_dataset, stratified_subset
from pagdemo.pag.alignment import misalignment, target_cosines
from pagdemo.pag.inputgrads import COUPLINGS
from pagdemo.pag.targets import class_mean
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.records.files import write_json


def spread(values: torch.Tensor) -> dict:
    """Mean, and the spread over images, of a per-image quantity."""
    v = values.double()
    return {
        "mean": round(v.mean().item(), 4),
        "p10": round(v.quantile(0.1).item(), 4),
        "p90": round(v.quantile(0.9).item(), 4),
    }


# ----------------------------------------------------------------------------- the per-image floor
# Per-image log-softmax gradients satisfy sum_t p_t grad log p_t = 0, so they cannot all point along targets
# that
# share one large component: the lowest summed misalignment they can reach is the "floor" of a target.


def _span_coordinates(targets: torch.Tensor) -> torch.Tensor:
    """(B, C, C): each image's unit targets in an orthonormal basis of their span (nothing else can raise a
    cosine)."""
    u = F.normalize(targets.flatten(2).double(), dim=2)
    q, _ = torch.linalg.qr(u.transpose(1, 2))  # (B, D, C)
    return u @ q


def flip_one_bound(targets: torch.Tensor) -> torch.Tensor:
    """(B,): a feasible per-image point: every gradient on its target but one, which points against the
    others' sum."""
    u = _span_coordinates(targets)
    others = u.sum(1, keepdim=True) - u  # for each class k: the sum of the other targets
    return (1 + (u * F.normalize(others, dim=2)).sum(2)).min(1).values


def _repaired_value(z: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The objective at an exactly feasible point near (z, w): subtract the residual r from every v_t,
    renormalize.

    sum_t a_t (v_t - r) = 0 with a on the simplex, so sum_t a_t |v_t - r| normalize(v_t - r) = 0: feasible.
    """
    v, a = F.normalize(z, dim=2), torch.softmax(w, dim=1)
    r = (a.unsqueeze(2) * v).sum(1, keepdim=True)
    return (1 - (F.normalize(v - r, dim=2) * u).sum(2)).sum(1)


def per_image_floor(targets: torch.Tensor, steps: int = 2000, starts: int = 4, seed: int = 0) -> torch.Tensor:
    """(B,): the lowest sum_t (1 - cos(v_t, g_t)) found over unit v_t with a positive combination equal to 0.

    Per-image log-softmax gradients meet that constraint (weights p_t |grad log p_t|), whatever the model.
    A penalty method in the span of the targets, from several starts, each result repaired to an exactly
    feasible point (`_repaired_value`); the `flip_one_bound` point is one candidate. A value reached, so an
    upper bound on the true minimum; a local search cannot prove that nothing lower exists.
    """
    u = _span_coordinates(targets)  # (B, C, C)
    g = torch.Generator().manual_seed(seed)
    best = flip_one_bound(targets)
    for start in range(starts):
        z = (u + (0.3 * start) * torch.randn(u.shape, generator=g, dtype=u.dtype)).requires_grad_(True)
        w = torch.zeros(u.shape[:2], dtype=u.dtype, requires_grad=True)
        opt = torch.optim.Adam([z, w], lr=0.02)
        for i in range(steps):
            mu = 10.0 ** (1 + 5 * i / steps)  # the penalty grows from 10 to 1e6
            v, a = F.normalize(z, dim=2), torch.softmax(w, dim=1)
            residual = (a.unsqueeze(2) * v).sum(1).norm(dim=1)
            opt.zero_grad()
            ((1 - (v * u).sum(2)).sum(1) + mu * residual**2).sum().backward()
            opt.step()
        with torch.no_grad():
            best = torch.minimum(best, _repaired_value(z, w, u))
    return best


def main(argv: list[str] | None = None) -> None:
    """Measure and write the JSON (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/cifar10")
    p.add_argument("--checkpoints", nargs="+", default=["checkpoints/pag-cm", "checkpoints/vanilla"])
    p.add_argument(
        "--images", type=int, default=512, help="training images measured (a fixed class-balanced subset)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="BatchNorm's batch in train mode")
    p.add_argument("--out", default="docs/diagnosis/coupling.json")
    args = p.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(0)
    train = load_dataset("cifar10", "train", data_dir=args.data_dir)
    idx = torch.from_numpy(stratified_subset(train.labels.numpy(), args.images, seed=0))
    idx = idx[
        torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))
    ]  # shuffled, as in training
    x = augment(train.inputs(idx), torch.Generator().manual_seed(0))
    record = {
        **record_header(__doc__, __file__),
        "data": train.source,
        "images": len(idx),
        "batch_size": args.batch_size,
        "grad_of": "logsoftmax",
        "augmented": "one random crop (pad 4) and flip per image, generator seed 0",
        "order": "the class-balanced subset in a fixed random order, so each batch mixes the classes",
        "targets": {},
        "checkpoints": {},
    }
    targets = {}
    for scaling in ("image-norm", "none"):
        targets[scaling] = class_mean(train.images, train.labels, 10, scaling)(x)
        record["targets"][scaling] = {
            "pairwise_cos": spread(target_cosines(targets[scaling])),
            "flip_one_bound": spread(flip_one_bound(targets[scaling])),
            "per_image_floor": spread(per_image_floor(targets[scaling])),
        }
        print(scaling, record["targets"][scaling], flush=True)
    for folder in args.checkpoints:
        model = load_checkpoint(folder).eval()
        with torch.no_grad():
            p_true = torch.softmax(model(x), 1)[torch.arange(len(x)), train.labels[idx]]
        row = {"p_true_class_eval": spread(p_true)}
        for coupling in COUPLINGS:
            row[coupling] = round(
                misalignment(
                    model, x, targets["image-norm"], "logsoftmax", coupling, batch_size=args.batch_size
                ),
                4,
            )
            print(folder, coupling, row[coupling], f"{time.time() - t0:.0f}s", flush=True)
        record["checkpoints"][Path(folder).name] = row
    record["seconds"] = round(time.time() - t0, 1)
    write_json(args.out, record)
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
