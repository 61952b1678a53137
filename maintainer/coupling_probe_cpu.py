"""Issue 23's CPU probe of the BatchNorm coupling: does a Class Mean run keep learning to classify when
its PAG pass takes per-image gradients, and does the answer depend on *which* statistics normalize them?

The first GPU window's eval-coupled arm collapsed to chance in its first epoch. Two explanations
predict different things here. (1) The running statistics lag the network early on, so the eval-mode
pass aligns the gradient of a different function from the one the cross-entropy trains: then the
"detached" coupling (the batch's own statistics, held constant: per-image gradients of the trained
function) trains where "eval" collapses. (2) Per-image gradients cannot reach these targets (the
diagnosis's floor) and the cheapest way to lower the PAG term is a network at chance: then both
collapse, and "classes" (which fits the term through the batch statistics) does not. The arm "none"
(lambda 0) is the baseline: what the same network learns in the same steps without PAG.

Every arm trains the same narrow ResNet-18 (width 16 instead of 64: the CPU cannot afford the real
one; the dynamics may differ, this is evidence for what the GPU window runs, not a result) from the
same initialization, on the same class-balanced training subset, batches, crops and flips, with
lambda 0.4 and log-softmax gradients, SGD as `fast-lr01` (Nesterov, momentum 0.9, weight decay 1e-4,
one epoch of linear warm-up, then cosine), and records per logging interval the cross-entropy, the
PAG term and train accuracy, and per epoch the eval-mode test accuracy and the summed misalignment in
eval mode and in the arm's own coupling.

    python -m maintainer.coupling_probe_cpu --width 16 --batch-size 64 --images 2560 --epochs 4  # ~30 min, 2 CPU cores

With --init-epochs the arms fine-tune a network trained by the cross-entropy alone (the start the
eval-mode methods use: CURE, Rodriguez-Munoz et al. 2024) instead of starting from scratch:

    python -m maintainer.coupling_probe_cpu ... --init-epochs 10 --couplings none eval detached batch \
        --out docs/diagnosis/finetune-probe.json
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
from pagdemo.eval.accuracy import correct, fraction
from pagdemo.models import ResNet18
from pagdemo.pag.alignment import misalignment
from pagdemo.pag.inputgrads import train_mode_coupling
from pagdemo.pag.losses import pag_loss
from pagdemo.pag.targets import class_mean
from pagdemo.records.files import read_json, write_json
from pagdemo.records.provenance import cpu_name, git_commit, now
from pagdemo.train.recipes import get_recipe, lr_at

FAST_LR01 = get_recipe("fast-lr01")  # its learning-rate shape (warm-up over one epoch, then cosine), at --lr


def run_arm(coupling: str, args, data: dict, target, init: dict | None = None) -> tuple[dict, dict]:
    """Train one arm from the shared initialization (or the fine-tuning start, init); return its
    trajectory and its weights (the weights: the start of the fine-tuning arms, when this is the pre-training)."""
    torch.manual_seed(args.seed)
    model = ResNet18(width=args.width).train()
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x_all, y_all = data["x"], data["y"]
    steps_per_epoch = len(x_all) // args.batch_size
    total, step, rows, epochs = steps_per_epoch * args.epochs, 0, [], []
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_all), generator=gen)
        sums = {"ce": 0.0, "cos": 0.0, "acc": 0.0, "n": 0}
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            x, y = augment(x_all[idx], gen), y_all[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(FAST_LR01, args.lr, step, total, steps_per_epoch)
            if coupling == "none":  # the baseline: cross-entropy alone, what the network learns without PAG
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits, y)
                parts = {"ce": loss.detach(), "cos": torch.tensor(float("nan")), "logits": logits.detach()}
            else:
                loss, parts = pag_loss(model, x, y, target(x), args.lam, "logsoftmax", args.impl, coupling)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            for k, v in (
                ("ce", parts["ce"].item()),
                ("cos", parts["cos"].item()),
                ("acc", (parts["logits"].argmax(1) == y).float().mean().item()),
            ):
                sums[k] += v
            sums["n"] += 1
            if step % args.log_every == 0:
                row = {
                    "step": step,
                    **{k: round(sums[k] / sums["n"], 4) for k in ("ce", "cos", "acc")},
                    "lr": round(opt.param_groups[0]["lr"], 5),
                    "s": round(time.time() - t0, 1),
                }
                rows.append(row)
                print(coupling, row, flush=True)
                sums = {"ce": 0.0, "cos": 0.0, "acc": 0.0, "n": 0}
        own = train_mode_coupling(coupling) if coupling != "none" else "classes"
        ep = {
            "epoch": epoch,
            "test_acc": round(fraction(correct(model, data["x_test"], data["y_test"])), 4),
            "cos_eval": round(misalignment(model, data["x_cos"], data["t_cos"], "logsoftmax", "eval"), 4),
            f"cos_{own}": round(
                misalignment(
                    model, data["x_cos"], data["t_cos"], "logsoftmax", own, batch_size=args.batch_size
                ),
                4,
            ),
            "s": round(time.time() - t0, 1),
        }
        epochs.append(ep)
        print(coupling, ep, flush=True)
    return (
        {
            "coupling": coupling,
            "steps": rows,
            "epochs": epochs,
            "seconds": round(time.time() - t0, 1),
            "commit": git_commit(),
            "command": " ".join(["python", "-m", f"maintainer.{Path(__file__).stem}", *sys.argv[1:]]),
        },
        model.state_dict(),
    )


def pretrain(args, data: dict, target) -> tuple[dict, dict]:
    """The fine-tuning arms' start: the cross-entropy alone for --init-epochs at --init-lr."""
    pre_args = argparse.Namespace(**{**vars(args), "epochs": args.init_epochs, "lr": args.init_lr})
    print(
        f"pre-training (the arms' start): none for {args.init_epochs} epochs at lr {args.init_lr}", flush=True
    )
    return run_arm("none", pre_args, data, target)


def main(argv: list[str] | None = None) -> None:
    """Train every arm and write the JSON (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data/cifar10")
    p.add_argument(
        "--couplings",
        nargs="+",
        default=["none", "eval", "detached", "classes", "batch"],
        help="arms: a --bn-coupling, or none (lambda 0: the cross-entropy alone, the baseline)",
    )
    p.add_argument("--images", type=int, default=2560, help="training images (a fixed class-balanced subset)")
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16, help="ResNet-18's first stage width (64: the real one)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lam", type=float, default=0.4)
    p.add_argument("--impl", default="explicit")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init-epochs",
        type=int,
        default=0,
        help="fine-tuning: train the cross-entropy alone this long first, and start every arm there",
    )
    p.add_argument("--init-lr", type=float, default=0.04, help="the pre-training's peak lr (same shape)")
    p.add_argument("--out", default="docs/diagnosis/coupling-probe.json")
    p.add_argument("--append", action="store_true", help="add the arms to --out's, refusing other settings")
    args = p.parse_args(argv)
    t0 = time.time()
    train = load_dataset("cifar10", "train", data_dir=args.data_dir)
    test = load_dataset("cifar10", "test", data_dir=args.data_dir)
    idx = torch.from_numpy(stratified_subset(train.labels.numpy(), args.images, seed=0))
    tidx = torch.from_numpy(stratified_subset(test.labels.numpy(), args.test_images, seed=0))
    target = class_mean(train.images, train.labels, 10, "image-norm")
    x_cos = augment(
        train.inputs(idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(1))[:128]]),
        torch.Generator().manual_seed(1),
    )
    data = {
        "x": train.inputs(idx),
        "y": train.labels[idx],
        "x_test": test.inputs(tidx),
        "y_test": test.labels[tidx],
        "x_cos": x_cos,
        "t_cos": target(x_cos),
    }
    record = {
        "about": __doc__.split("\n\n")[0],
        "command": " ".join(["python", "-m", f"maintainer.{Path(__file__).stem}", *sys.argv[1:]]),
        "commit": git_commit(),
        "date": now(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, {platform.system()}",
        "torch": torch.__version__,
        "data": train.source,
        "settings": vars(args),
        "arms": [],
    }
    if args.append:
        old = read_json(Path(args.out))
        other = {
            k: v
            for k, v in old["settings"].items()
            if k not in ("couplings", "out", "append") and v != vars(args).get(k)
        }
        if other:
            sys.exit(f"error: {args.out} was run with other settings: {other}")
        record = old
    base_s = record.get("seconds", 0) if args.append else 0
    init = None
    if args.init_epochs:
        record["init"], init = pretrain(args, data, target)
    for coupling in args.couplings:
        record["arms"].append(run_arm(coupling, args, data, target, init)[0])
        write_json(
            Path(args.out), {**record, "seconds": round(base_s + time.time() - t0, 1)}
        )  # partial results survive a stop
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
