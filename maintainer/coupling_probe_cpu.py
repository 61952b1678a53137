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

Every arm is a `pagdemo train` run through the package's own loop (`pagdemo.train.loop.train`, its `on_step`
hook logging every --log-every steps): the same narrow ResNet-18 (`resnet18_narrow`, width 16 instead of 64:
the CPU cannot afford the real one; the dynamics may differ, this is evidence for what the GPU window runs,
not a result) from the same initialization, on the same class-balanced training subset, batches, crops and
flips, with lambda 0.4 and log-softmax gradients, the `fast-lr01` recipe at --lr (Nesterov, momentum 0.9,
weight decay 1e-4, one epoch of linear warm-up, then cosine). It records per logging interval the
cross-entropy, the PAG term and train accuracy, and per epoch (the loop's monitor) the eval-mode test accuracy
and the summed misalignment in eval mode and in the arm's own coupling.

    python -m maintainer.coupling_probe_cpu --width 16 --batch-size 64 --images 2560 --epochs 4  # ~30 min

With --init-epochs the arms fine-tune a network trained by the cross-entropy alone (the start the
eval-mode methods use: CURE, Rodriguez-Munoz et al. 2024) instead of starting from scratch:

    python -m maintainer.coupling_probe_cpu ... --init-epochs 10 --couplings none eval detached batch \
        --out docs/diagnosis/finetune-probe.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from maintainer.provenance import command_line, record_header
from pagdemo.records.files import read_json, read_jsonl, write_json
from pagdemo.records.provenance import git_commit
from pagdemo.train.config import TrainConfig
from pagdemo.train.loop import train

ARCH = {16: "resnet18_narrow", 64: "resnet18"}  # --width: the registered architectures
COMMAND = command_line(__file__)


def arm_config(coupling: str, args, out: Path, init: str | None) -> TrainConfig:
    """One arm as a `pagdemo train` run: Class Mean, its coupling (none: lambda 0, the cross-entropy's
    gradient)."""
    return TrainConfig(
        out=str(out),
        method="cm",
        lam=0.0 if coupling == "none" else args.lam,
        grad_of="logsoftmax",
        pag_impl=args.impl,
        bn_coupling=None if coupling == "none" else coupling,
        cm_scaling=args.cm_scaling,
        dataset="cifar10",
        data_dir=args.data_dir,
        limit=args.images,
        arch=ARCH[args.width],
        recipe="fast-lr01",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        init=init,
        seed=args.seed,
        device="cpu",
        monitor_limit=args.test_images,
        monitor_robust=0,
        monitor_cos=args.cos_images,
    )


def run_arm(coupling: str, args, out: Path, init: str | None = None) -> dict:
    """Train one arm through pagdemo's own loop, from the shared initialization (or the fine-tuning start,
    init), logging the cross-entropy, the PAG term and train accuracy every --log-every steps; its trajectory.
    """
    rows, sums, t0 = [], [], time.time()

    def on_step(step: int, stats: dict) -> None:
        sums.append(stats)
        if step % args.log_every == 0:
            mean = {
                k: round(sum(s.get(k, float("nan")) for s in sums) / len(sums), 4)
                for k in ("ce", "cos", "acc")
            }
            rows.append({"step": step, **mean, "lr": round(stats["lr"], 5), "s": round(time.time() - t0, 1)})
            print(coupling, rows[-1], flush=True)
            sums.clear()

    train(arm_config(coupling, args, out, init), command=COMMAND, progress=False, on_step=on_step)
    epochs, s = [], 0.0
    for r in read_jsonl(out / "train_log.jsonl"):
        s += r["epoch_s"]
        epochs.append(
            {
                "epoch": r["epoch"],
                "test_acc": round(r["test_acc"], 4),
                "cos_eval": round(r["cos_eval"], 4),
                f"cos_{r['cos_train_coupling']}": round(r["cos_train"], 4),
                "s": round(s, 1),
            }
        )
    return {
        "coupling": coupling,
        "steps": rows,
        "epochs": epochs,
        "seconds": round(time.time() - t0, 1),
        "commit": git_commit(),
        "command": COMMAND,
    }


def _record(args) -> dict:
    """The JSON's header: what ran, where, with which code; the arms join it as they finish."""
    return {
        **record_header(__doc__, __file__),
        "data": f"{args.data_dir} (npz, png)",
        "settings": vars(args),
        "arms": [],
    }


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
    p.add_argument(
        "--cm-scaling", default="image-norm", help="the Class Mean target's scaling (pagdemo train's)"
    )
    p.add_argument(
        "--cos-images", type=int, default=128, help="training images the misalignment is measured on"
    )
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
    if args.width not in ARCH:
        sys.exit(f"error: --width must be one of {sorted(ARCH)} (the registered ResNet-18s)")
    t0, record = time.time(), _record(args)
    if args.append:
        old = read_json(Path(args.out))
        keep = ("couplings", "out", "append")
        other = {k: v for k, v in old["settings"].items() if k not in keep and v != vars(args).get(k)}
        if other:
            sys.exit(f"error: {args.out} was run with other settings: {other}")
        record = old
    base_s = record.get("seconds", 0) if args.append else 0
    runs = Path(tempfile.mkdtemp(prefix="coupling-probe-"))
    init = None
    # the fine-tuning arms' start: the cross-entropy alone for --init-epochs at --init-lr
    if args.init_epochs:
        pre = argparse.Namespace(**{**vars(args), "epochs": args.init_epochs, "lr": args.init_lr})
        print(
            f"pre-training (the arms' start): none for {args.init_epochs} epochs at lr {args.init_lr}",
            flush=True,
        )
        record["init"], init = run_arm("none", pre, runs / "init"), str(runs / "init")
    for coupling in args.couplings:
        record["arms"].append(run_arm(coupling, args, runs / coupling, init))
        # partial results after each arm
        write_json(Path(args.out), {**record, "seconds": round(base_s + time.time() - t0, 1)})
    shutil.rmtree(runs, ignore_errors=True)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
