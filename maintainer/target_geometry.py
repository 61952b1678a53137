"""Issue 32's target geometry: how class-specific is each PAG target? For a fixed class-balanced subset of
CIFAR-10 training images (as they are, and augmented once as the augmented frame trains), the mean pairwise
cosine across the 10 classes of g(x, t), per image (1: every class's target points the same way, and aligning
to them says little about the class), for One Image, Class Mean (scaled about black, raw, and about grey: the
authors' [-1, 1] space), Nearest Neighbor (K = 100, never the image itself) and RIGD from the shipped
adversarially trained teachers.

    python -m maintainer.target_geometry --out docs/diagnosis/target-geometry.json   # minutes

The JSON holds the command, commit, machine and every number; `python -m maintainer.docs` prints its table
into docs/training.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from maintainer.coupling_diagnosis import spread
from maintainer.provenance import record_header
from pagdemo.data.augment import augment
from pagdemo.data.datasets import load_dataset, stratified_subset
from pagdemo.pag.alignment import target_cosines
from pagdemo.pag.targets import TeacherGradientTarget, build_target
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.records.files import write_json

KINDS = [  # (row, target kind, options)
    ("One Image", "oi", {}),
    ("Class Mean, image-norm (ours, the default)", "cm", {"cm_scaling": "image-norm"}),
    ("Class Mean, none (the raw mean)", "cm", {"cm_scaling": "none"}),
    ("Class Mean, centred (the authors' space)", "cm", {"cm_scaling": "centred"}),
    ("Nearest Neighbor, K = 100", "nn", {"k": 100}),
]


def main(argv: list[str] | None = None) -> None:
    """Measure every target and write the JSON (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/cifar10")
    p.add_argument("--teachers", nargs="+", default=["checkpoints/adv-linf", "checkpoints/adv-l2"])
    p.add_argument("--images", type=int, default=512, help="training images (a fixed class-balanced subset)")
    p.add_argument("--out", default="docs/diagnosis/target-geometry.json")
    args = p.parse_args(argv)
    t0 = time.time()
    train = load_dataset("cifar10", "train", data_dir=args.data_dir)
    idx = torch.from_numpy(stratified_subset(train.labels.numpy(), args.images, seed=0))
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))]
    plain, y = train.inputs(idx), train.labels[idx]
    views = {"augmented": augment(plain, torch.Generator().manual_seed(0)), "plain": plain}
    targets = {row: build_target(kind, train.images, train.labels, 10, **o) for row, kind, o in KINDS}
    for folder in args.teachers:
        teacher = load_checkpoint(folder).eval()
        targets[f"RIGD, teacher `{Path(folder).name}`"] = TeacherGradientTarget(teacher, "logsoftmax", folder)
    rows = []
    for (
        name,
        target,
    ) in targets.items():  # 64 images at a time: a teacher's 10 gradients of 512 images are GBs
        chunks = [
            slice(i, i + 64) for i in range(0, len(idx), 64)
        ]  # nn: idx keeps an image off its own candidates
        row = {"target": name, "describe": target.describe()}
        for view, x in views.items():
            cos = torch.cat([target_cosines(target(x[c], y[c], idx[c])) for c in chunks])
            row[f"pairwise_cos_{view}"] = spread(cos)
        rows.append(row)
        print(row, f"{time.time() - t0:.0f}s", flush=True)
    record = {
        **record_header(__doc__, __file__),
        "data": train.source,
        "images": len(idx),
        "views": "augmented: one random crop (pad 4) and flip per image (generator seed 0), as the augmented "
        "frame trains; plain: the images themselves, the authors' frame (their targets are computed before "
        "the crop)",
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    write_json(Path(args.out), record)
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
