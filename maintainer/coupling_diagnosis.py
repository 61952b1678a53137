"""Issue 23's CPU diagnosis: where does the shipped Class Mean model's alignment live?

For a fixed class-balanced subset of CIFAR-10 training images (augmented once, as training saw
them) it measures: how much the 10 Class Mean targets of one image point the same way (scaled as we
train, and the raw class mean); the lowest summed misalignment per-image log-softmax gradients can
reach for those targets (`pagdemo.pag.alignment.per_image_floor`); and, for each checkpoint, the summed
misalignment of its log-softmax input gradients in train-mode BatchNorm (batches of 256, the two
train couplings, and "detached": the batch's statistics held constant, per-image gradients) and in
eval mode, the gradient that attacks and the app see.

    python -m maintainer.coupling_diagnosis --out docs/diagnosis/coupling.json   # ~10 min on 2 CPU cores

The JSON holds the command, commit, machine and every number; `python -m maintainer.docs` prints its table
into docs/training.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from pagdemo.data.augment import augment
from pagdemo.data.datasets import load_dataset, stratified_subset
from pagdemo.pag.alignment import flip_one_bound, misalignment, per_image_floor, target_cosines
from pagdemo.pag.inputgrads import COUPLINGS
from pagdemo.pag.targets import class_mean
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.records.files import write_json
from pagdemo.records.provenance import cpu_name, git_commit, now


def spread(values: torch.Tensor) -> dict:
    """Mean, and the spread over images, of a per-image quantity."""
    v = values.double()
    return {
        "mean": round(v.mean().item(), 4),
        "p10": round(v.quantile(0.1).item(), 4),
        "p90": round(v.quantile(0.9).item(), 4),
    }


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
    ]  # shuffled, as training's batches
    x = augment(train.inputs(idx), torch.Generator().manual_seed(0))
    record = {
        "about": __doc__.split("\n\n")[0],
        "command": " ".join(["python", "-m", f"maintainer.{Path(__file__).stem}", *sys.argv[1:]]),
        "commit": git_commit(),
        "date": now(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, {platform.system()}",
        "torch": torch.__version__,
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
