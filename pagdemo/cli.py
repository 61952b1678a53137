"""`pagdemo` command line: the only place that reads argv. Each command builds its config
dataclass and calls the same function the app and the tests call."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from fractions import Fraction
from pathlib import Path

EXAMPLES = """\
examples:
  pagdemo train --method cm --dataset synthetic --epochs 1 --out runs/cm
  pagdemo eval --checkpoint runs/cm --norm l2 --eps 0.5 --limit 64 --json runs/cm.json
  pagdemo train --method oi --dataset cifar10 --recipe fast --out runs/oi          # on a GPU
  torchrun --nproc_per_node=4 -m pagdemo train --method nn --recipe fast --out runs/nn
  pagdemo adv-train --norm linf --eps 8/255 --attack fgsm --recipe fast --out runs/teacher-linf
  pagdemo train --method rigd --teacher runs/teacher-linf --out runs/rigd-linf
  pagdemo attack --checkpoint runs/cm --image cat.png --target all --out grid.png
  pagdemo toy --seeds 5 --out docs/toy
"""


class CLIError(Exception):
    """A user mistake the CLI reports in one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag costs one line, not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def eps_value(text: str) -> float:
    """Accept 0.031, 8/255 or 1e-2: people write eps as a fraction of 255 more often than not."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"invalid eps {text!r}: write a number like 0.5 or a fraction like 8/255")
    if value < 0:
        raise argparse.ArgumentTypeError(f"eps must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """Counts (epochs, steps, limits) must be whole and positive."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def float_list(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, such as lambdas for a sweep."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")


def _add_training_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `adv-train`."""
    p.add_argument("--out", required=True, help="run folder (checkpoint + log); rerun the same command to resume")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "stl10", "synthetic"],
                   help="training data (default cifar10; synthetic is generated in code, for trying things out)")
    p.add_argument("--data-dir", help="folder with the packed .npz files, cifar-10-batches-py or stl10_binary "
                                      "(default: $PAGDEMO_DATA_DIR or ../shared/data/cifar10)")
    p.add_argument("--limit", type=positive_int, help="train on a fixed class-balanced subset of N images")
    p.add_argument("--arch", choices=["resnet18", "resnet18_stl", "tinycnn"],
                   help="default resnet18 (resnet18_stl on stl10, tinycnn on synthetic: a few-thousand-parameter CNN for quick CPU trials)")
    p.add_argument("--recipe", default="paper", choices=["paper", "fast"],
                   help="paper: SGD 0.01, batch 64, 100 epochs, lr x0.1 at 50%%/75%%; "
                        "fast: batch 256, lr 0.04, warm-up + cosine, 30 epochs, bf16 on GPU")
    p.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=positive_int, help="global batch size (override the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (override the recipe's)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for --recipe fast on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument("--monitor-limit", type=int, default=1000, help="test images checked after each epoch (0: off)")
    p.add_argument("--monitor-robust", type=int, default=200,
                   help="of those, images given the authors' per-epoch L2 PGD-7 eps 0.5 check (0: off)")
    p.add_argument("--keep-state", action="store_true", help="keep train_state/ (optimizer state) after the last epoch")


def build_parser() -> argparse.ArgumentParser:
    """All commands, with help that explains the paper's settings rather than just naming flags."""
    from pagdemo.losses import PAG_IMPLS
    parser = Parser(
        prog="pagdemo", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023): train ResNet-18s whose input "
                    "gradients are pushed toward class images, attack them with PGD, and measure their robustness.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train vanilla or PAG (oi, cm, nn, rigd) classifiers",
                       description="Train with Eq. 1: CE + lambda * sum over classes of (1 - cos(input gradient, g(x, t))). "
                                   "vanilla: lambda 0; oi: g toward One Image of class t; cm: toward the Class Mean; "
                                   "nn: toward the Nearest Neighbor among K class-t samples; rigd: the input gradients "
                                   "of a robust teacher (an upper bound, not a fair PAG source).")
    p.add_argument("--method", default="vanilla", choices=["vanilla", "oi", "cm", "nn", "rigd"])
    p.add_argument("--lam", type=float, help="PAG weight lambda (default: the paper's Table 3 value)")
    p.add_argument("--grad-of", default="logsoftmax", choices=["logit", "logsoftmax"],
                   help="take the input gradient of the class logit (Eq. 1 as written) or of its log-softmax "
                        "(the authors' code; default)")
    p.add_argument("--pag-impl", default="batched", choices=sorted(PAG_IMPLS),
                   help="how the C input gradients are computed: loop (reference), batched (authors' repeat-the-batch, "
                        "default), vmap / explicit (exact like loop, faster), compiled (explicit under torch.compile: "
                        "exact and the fastest on a GPU, 11x loop on an H100; ~1 min of compiling first)")
    p.add_argument("--nn-k", type=positive_int, default=100, help="nn: sampled training images per class (default 100)")
    p.add_argument("--teacher", help="rigd: checkpoint folder of an adversarially trained teacher")
    _add_training_args(p)

    p = sub.add_parser("adv-train", help="adversarially train a robust teacher (PGD-AT or FGSM-RS)",
                       description="Adversarial training (Madry et al. 2018) for the RIGD teachers: each batch is "
                                   "replaced by its PGD (or FGSM with random start) adversarial examples.")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eps", type=eps_value, default=8 / 255, help="radius in [0, 1] pixel units (default 8/255)")
    p.add_argument("--attack", default="pgd", choices=["pgd", "fgsm"],
                   help="pgd: PGD-AT with --adv-steps steps of 2.5*eps/steps; fgsm: FGSM-RS (Wong et al. 2020), ~5x cheaper")
    p.add_argument("--adv-steps", type=positive_int, default=10)
    _add_training_args(p)

    p = sub.add_parser("eval", help="clean and PGD robust accuracy of a checkpoint",
                       description="PGD-k with random start and step 2*eps/k (the paper: k=20, linf eps 8/255, "
                                   "l2 eps 0.5). The result is appended to the checkpoint's metrics.json.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--attack", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd (the paper's) or autoattack (standard: APGD-CE, APGD-T, FAB-T, Square; also reruns "
                        "PGD-20 on the same subset; default --limit 1000)")
    p.add_argument("--aa-version", default="standard", choices=["standard", "lite"],
                   help="standard: 100 iterations, 5000 Square queries (report this); lite: a quick look")
    p.add_argument("--aa-backend", default="pyautoattack", choices=["pyautoattack", "torchattacks"],
                   help="pyautoattack: the AutoAttack authors' code (default); torchattacks: same loop, weaker l2 Square")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "none"], help="threat model (none: clean only)")
    p.add_argument("--eps", type=eps_value, help="radius in [0, 1] pixel units (default: 8/255 linf, 0.5 l2)")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--step-size", type=float, help="default 2*eps/steps")
    p.add_argument("--restarts", type=positive_int, default=1)
    p.add_argument("--no-random-start", action="store_true")
    p.add_argument("--limit", type=positive_int, help="a fixed class-balanced subset of N test images")
    p.add_argument("--dataset", choices=["cifar10", "stl10", "synthetic"], help="default: the checkpoint's")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the random start")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--no-record", action="store_true", help="do not append to the checkpoint's metrics.json")

    p = sub.add_parser("toy", help="the paper's 2-D experiment (Sec. 5.1): vanilla vs PAG decision boundaries",
                       description="Two classes on the line x2 = 2*x1, an MLP 2-32-2, vanilla vs PAG with the "
                                   "Nearest Neighbor target, attacked with L2 PGD-10 (eps 15, step 2).")
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (results as mean +- std)")
    p.add_argument("--lam", type=float, help="PAG weight (default: the value our sweep chose, see docs/toy)")
    p.add_argument("--out", default="runs/toy", help="folder for results.json and decision_boundary.png")
    p.add_argument("--sweep", type=float_list, default=(),
                   help="also sweep these lambdas on held-out seeds 100.. (e.g. 0,0.1,0.3,1,3,10; adds minutes)")
    p = sub.add_parser("attack", help="the PAG picture: targeted PGD from one image toward each class",
                       description="Large-eps targeted PGD from your image toward every class (or one): robust and "
                                   "PAG models paint class features, vanilla models add noise (the paper's Fig. 1).")
    p.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoint folders (one row each)")
    p.add_argument("--image", required=True, help="any image file; it is cropped to a square and resized")
    p.add_argument("--target", default="all", help="'all', a class name or a class index")
    p.add_argument("--norm", default="l2", choices=["linf", "l2"])
    p.add_argument("--eps", type=eps_value, default=4.0, help="radius in [0, 1] pixel units (default l2 4.0: large on purpose)")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="PNG file for the grid")

    p = sub.add_parser("audit", help="gradient-masking checks and the PAG score of a checkpoint",
                       description="Carlini et al. (2019) sanity checks: accuracy against growing eps must reach 0, "
                                   "PGD-100 with restarts must not beat PGD-20 by much, a transfer attack from the "
                                   "vanilla model must not beat the white-box one. Prints a verdict with the evidence.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eps", type=eps_value, help="default: the paper's (8/255 linf, 0.5 l2)")
    p.add_argument("--vanilla", help="vanilla checkpoint, source of the transfer attack")
    p.add_argument("--judge", help="robust checkpoint that judges the PAG score (never the model's own RIGD teacher)")
    p.add_argument("--autoattack", choices=["standard", "lite"], help="also run this AutoAttack version and compare it with PGD-20")
    p.add_argument("--aa-backend", default="pyautoattack", choices=["pyautoattack", "torchattacks"])
    p.add_argument("--limit", type=positive_int, default=1000, help="fixed class-balanced test subset (default 1000)")
    p.add_argument("--pag-limit", type=positive_int, default=100, help="test images for the PAG score")
    p.add_argument("--pag-eps", type=eps_value, help="L2 radius of the PAG score's targeted attack (default 4.0 at 32x32)")
    p.add_argument("--pag-steps", type=positive_int, default=100)
    p.add_argument("--restarts", type=positive_int, default=5, help="restarts of the PGD-100 check")
    p.add_argument("--dataset", choices=["cifar10", "stl10", "synthetic"])
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--no-record", action="store_true", help="write neither audit-<norm>.json nor metrics.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the checks of an earlier audit-<norm>.json run with the same settings (a cut-off run, or "
                        "one without AutoAttack) and run only what it lacks: AutoAttack, or the PAG score of a new judge")
    return parser


def cmd_train(args: argparse.Namespace, command: str) -> None:
    """train and adv-train share one loop; adv-train is method 'adv'."""
    from pagdemo.train import TrainConfig, train

    common = dict(out=args.out, dataset=args.dataset, data_dir=args.data_dir, limit=args.limit, arch=args.arch,
                  recipe=args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, amp=args.amp, seed=args.seed, device=args.device,
                  monitor_limit=args.monitor_limit, monitor_robust=args.monitor_robust, keep_state=args.keep_state)
    if args.command == "adv-train":
        cfg = TrainConfig(method="adv", adv_norm=args.norm, adv_eps=args.eps, adv_attack=args.attack,
                          adv_steps=args.adv_steps, **common)
    else:
        cfg = TrainConfig(method=args.method, lam=args.lam, grad_of=args.grad_of, pag_impl=args.pag_impl,
                          nn_k=args.nn_k, teacher=args.teacher, **common)
    out = train(cfg, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm l2")


def cmd_eval(args: argparse.Namespace, command: str) -> None:
    """Evaluate and print one line."""
    from pagdemo.evaluate import EvalConfig, format_record, run_eval

    if args.attack == "autoattack":
        from pagdemo.autoattack import AutoAttackConfig, format_autoattack, run_autoattack_eval

        if args.norm == "none":
            raise CLIError("--attack autoattack needs --norm linf or l2")
        cfg = AutoAttackConfig(checkpoint=args.checkpoint, norm=args.norm, eps=args.eps, version=args.aa_version,
                               backend=args.aa_backend, limit=args.limit or 1000,
                               dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size,
                               device=args.device, seed=args.seed, json=args.json, record=not args.no_record)
        print(format_autoattack(run_autoattack_eval(cfg)))
        return
    cfg = EvalConfig(checkpoint=args.checkpoint, norm=None if args.norm == "none" else args.norm, eps=args.eps,
                     steps=args.steps, step_size=args.step_size, restarts=args.restarts,
                     random_start=not args.no_random_start, limit=args.limit, dataset=args.dataset,
                     data_dir=args.data_dir, batch_size=args.batch_size, device=args.device, seed=args.seed,
                     json=args.json, record=not args.no_record)
    print(format_record(run_eval(cfg)))


def cmd_toy(args: argparse.Namespace, command: str) -> None:
    """Run the toy experiment and say where its files went."""
    from pagdemo.toy import ToyConfig, results_table, run_toy

    kwargs = {"seeds": args.seeds, "out": args.out, "sweep_lams": args.sweep}
    if args.lam is not None:
        kwargs["lam"] = args.lam
    print(results_table(run_toy(ToyConfig(**kwargs))))
    print(f"results in {args.out}/results.json, figure in {args.out}/decision_boundary.png")


def cmd_attack(args: argparse.Namespace, command: str) -> None:
    """Render the PAG grid for one image and the given checkpoints."""
    from PIL import Image

    from pagdemo.checkpoints import load_checkpoint
    from pagdemo.evaluate import resolve_device
    from pagdemo.images import load_image
    from pagdemo.grid import GridSpec, pag_grid_steps

    device = resolve_device(args.device)
    models = [load_checkpoint(c, device) for c in args.checkpoint]
    classes = models[0].classes
    if any(m.classes != classes for m in models):
        raise CLIError("the checkpoints do not share the same classes; give checkpoints of one dataset")
    if args.target == "all":
        targets = list(range(len(classes)))
    elif args.target in classes:
        targets = [classes.index(args.target)]
    elif args.target.isdigit() and int(args.target) < len(classes):
        targets = [int(args.target)]
    else:
        raise CLIError(f"unknown target {args.target!r}; choose 'all', one of {classes} or an index below {len(classes)}")
    x = load_image(args.image, models[0].image_size)
    names = [Path(c).name for c in args.checkpoint]
    spec = GridSpec(names, classes, targets, f"targeted PGD-{args.steps}, {args.norm} eps={args.eps:.4g}")
    frame = None
    for frame in pag_grid_steps(models, x, spec, args.norm, args.eps, args.steps, min_interval=float("inf")):
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame.image).save(args.out)
    print(f"grid written to {args.out}")


def cmd_audit(args: argparse.Namespace, command: str) -> None:
    """Run the gradient-masking audit and print its verdict."""
    from pagdemo.audit import AuditConfig, format_audit, run_audit

    cfg = AuditConfig(checkpoint=args.checkpoint, norm=args.norm, eps=args.eps, vanilla=args.vanilla, judge=args.judge,
                      autoattack=args.autoattack, autoattack_backend=args.aa_backend, limit=args.limit,
                      pag_limit=args.pag_limit, pag_eps=args.pag_eps, pag_steps=args.pag_steps, restarts=args.restarts,
                      dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size, device=args.device,
                      seed=args.seed, json=args.json, record=not args.no_record, resume=args.resume)
    print(format_audit(run_audit(cfg)))


COMMANDS = {"train": cmd_train, "adv-train": cmd_train, "eval": cmd_eval, "toy": cmd_toy, "attack": cmd_attack,
            "audit": cmd_audit}


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors end in one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args, "pagdemo " + shlex.join(argv))
    except KeyboardInterrupt:
        print("pagdemo: interrupted; run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    except (ValueError, OSError, CLIError) as e:  # DataError, CheckpointError and bad settings are ValueErrors
        print(f"pagdemo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
