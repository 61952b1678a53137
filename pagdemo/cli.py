"""`pagdemo` command line: the only place that reads argv. Each command builds its config
dataclass and calls the same function the app and the tests call; choices come from the
registries and defaults from the config dataclasses, so the help cannot drift from the code."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from fractions import Fraction

from pagdemo.commands import COMMANDS, CLIError, default

EXAMPLES = """\
examples:
  pagdemo train --method cm --dataset synthetic --epochs 1 --out runs/cm
  pagdemo eval --checkpoint runs/cm --norm l2 --eps 0.5 --limit 64 --json runs/cm.json
  pagdemo train --method oi --dataset cifar10 --recipe fast --pag-impl compiled --out runs/oi   # on a GPU
  torchrun --nproc_per_node=4 -m pagdemo train --method nn --recipe fast --out runs/nn
  pagdemo adv-train --norm linf --eps 8/255 --attack nfgsm --recipe fast --out runs/teacher-linf
  pagdemo train --method rigd --teacher runs/teacher-linf --out runs/rigd-linf
  pagdemo train --method cm --recipe finetune --init checkpoints/vanilla --out runs/cm-ft
  pagdemo train --method cm --dataset folder --data-dir data/pets --image-size 64 --out runs/pets-cm   # your images
  pagdemo attack --checkpoint runs/cm --image cat.png --target all --out grid.png
  pagdemo toy --seeds 20 --out docs/toy
  pagdemo app --checkpoints checkpoints
"""


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


def _escape(text: str) -> str:
    """argparse help strings treat % as a format character."""
    return text.replace("%", "%%")


FOLDER_HELP = ("folder: your own images in torchvision's ImageFolder layout, DIR/train/<class>/* and DIR/test/<class>/* "
               "(or val/), any number of classes from 2, any size and common format; each image is centre-cropped "
               "to a square and resized to --image-size")


def _add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    """--dataset, --data-dir and the image-folder options, shared by every command that reads data."""
    from pagdemo.data.datasets import DATASET_NAMES
    from pagdemo.data.folder import ON_BAD, SIDE_LIMITS
    p.add_argument("--dataset", default="cifar10" if train else None, choices=sorted(DATASET_NAMES),
                   help=("training data (default cifar10; synthetic is generated in code, for trying things out; "
                         if train else "default: the checkpoint's (") + FOLDER_HELP + ")")
    p.add_argument("--data-dir", help="the data: packed .npz files, cifar-10-batches-py, stl10_binary or an image folder "
                                      "(default: $PAGDEMO_DATA_DIR, else data/<dataset> or ../shared/data/<dataset>)")
    if train:
        p.add_argument("--image-size", type=positive_int,
                       help=f"folder: the side images are resized to, {SIDE_LIMITS[0]}-{SIDE_LIMITS[1]} (default: the most "
                            "common shorter side in the tree); up to 64 trains the CIFAR ResNet-18, larger sides the "
                            "strided-stem resnet18_stl")
    p.add_argument("--on-bad-image", default="skip", choices=list(ON_BAD),
                   help="folder: a file that cannot be read as an image is skipped and counted (skip, default) or "
                        "stops the run naming it (stop)")


def _add_training_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `adv-train`."""
    from pagdemo.models import MODELS
    from pagdemo.train.recipes import RECIPES, help_text
    from pagdemo.train.config import MONITORS, TrainConfig
    p.add_argument("--out", required=True, help="run folder (checkpoint + log); rerun the same command to resume")
    _add_data_args(p, train=True)
    p.add_argument("--limit", type=positive_int, help="train on a fixed class-balanced subset of N images")
    p.add_argument("--arch", choices=sorted(m for m in MODELS if m != "mlp"),
                   help="default resnet18 (resnet18_stl on stl10, tinycnn on synthetic: a few-thousand-parameter CNN "
                        "for quick CPU trials); resnet18_gelu is a smooth-activation deviation from the paper")
    p.add_argument("--recipe", default=default(TrainConfig, "recipe"), choices=list(RECIPES),
                   help=_escape(help_text()))
    p.add_argument("--init", help="start from this checkpoint's weights (same arch and classes; the finetune recipe)")
    p.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=positive_int, help="global batch size (override the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (override the recipe's)")
    p.add_argument("--weight-decay", type=float, default=default(TrainConfig, "weight_decay"))
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: the recipe's, on a GPU only)")
    p.add_argument("--seed", type=int, default=default(TrainConfig, "seed"))
    p.add_argument("--device", default=default(TrainConfig, "device"), help="auto (GPU if any), cpu or cuda")
    p.add_argument("--monitor-limit", type=int, default=default(TrainConfig, "monitor_limit"),
                   help="test images checked after each epoch (0: off)")
    p.add_argument("--monitor-robust", type=int, default=default(TrainConfig, "monitor_robust"),
                   help="of those, images given the per-epoch robustness check (0: off)")
    p.add_argument("--monitor-pgd", default=default(TrainConfig, "monitor_pgd"), choices=list(MONITORS),
                   help="the per-epoch check: the authors' L2 PGD-7 (eps 0.5), or the paper's PGD-20 in both norms")
    p.add_argument("--monitor-cos", type=int, default=default(TrainConfig, "monitor_cos"),
                   help="PAG: training images whose summed misalignment is logged after each epoch in the run's "
                        "train-mode coupling (cos_train) and in eval mode (cos_eval, what attacks see; 0: off)")
    p.add_argument("--keep-state", action="store_true", help="keep train_state/ (optimizer state) after the last epoch")


def _train_parsers(sub) -> None:
    """`train` and `adv-train`."""
    from pagdemo.pag.inputgrads import COUPLINGS, GRAD_OF
    from pagdemo.pag.losses import PAG_IMPLS
    from pagdemo.pag.targets import CM_SCALINGS
    from pagdemo.threat import NORMS
    from pagdemo.train.config import ADV_ATTACKS, METHODS, PAG_FRAMES, TrainConfig
    p = sub.add_parser("train", help="train vanilla or PAG (oi, cm, nn, rigd) classifiers",
                       description="Train with Eq. 1: CE + lambda * sum over classes of (1 - cos(input gradient, g(x, t))). "
                                   "vanilla: lambda 0; oi: g toward One Image of class t; cm: toward the Class Mean; "
                                   "nn: toward the Nearest Neighbor among K class-t samples; rigd: the input gradients "
                                   "of a robust teacher (an upper bound, not a fair PAG source).")
    p.add_argument("--method", default=default(TrainConfig, "method"), choices=[m for m in METHODS if m != "adv"])
    p.add_argument("--lam", type=float, help="PAG weight lambda (default: the paper's Table 3 value)")
    p.add_argument("--grad-of", default=default(TrainConfig, "grad_of"), choices=list(GRAD_OF),
                   help="take the input gradient of the class logit (Eq. 1 as written) or of its log-softmax "
                        "(the authors' code; default)")
    p.add_argument("--pag-impl", default=default(TrainConfig, "pag_impl"), choices=sorted(PAG_IMPLS),
                   help="how the C input gradients are computed: loop (reference), batched (authors' repeat-the-batch, "
                        "default), vmap / explicit (exact like loop, faster), compiled (explicit under torch.compile: "
                        "exact and the fastest on a GPU, see docs/bench; about a minute of compiling first)")
    p.add_argument("--bn-coupling", choices=list(COUPLINGS),
                   help="BatchNorm while the C input gradients are taken: classes (train mode, each class's gradient "
                        "coupled over the B images: loop/vmap/explicit/compiled), batch (train mode, statistics over "
                        "the C*B repeated copies: the authors' code, batched/explicit/compiled), eval (running "
                        "statistics, per-image gradients, as attacks see them; the cross-entropy gets its own "
                        "train-mode forward). Default: what --pag-impl computes (docs/training.md)")
    p.add_argument("--pag-frame", default=default(TrainConfig, "pag_frame"), choices=list(PAG_FRAMES),
                   help="augmented: a crop and flip per image, targets for the augmented image; authors: one crop "
                        "and flip per batch (another for the cross-entropy), gradients taken w.r.t. the "
                        "un-augmented image, targets in its frame (the authors' TRAIN_CIFAR10.py)")
    p.add_argument("--cm-scaling", default=default(TrainConfig, "cm_scaling"), choices=list(CM_SCALINGS),
                   help="cm: each class mean rescaled to the class's mean image norm (default), or none (the raw mean)")
    p.add_argument("--nn-k", type=positive_int, default=default(TrainConfig, "nn_k"),
                   help="nn: sampled training images per class")
    p.add_argument("--teacher", help="rigd: checkpoint folder of an adversarially trained teacher")
    _add_training_args(p)

    p = sub.add_parser("adv-train", help="adversarially train a robust teacher (PGD-AT, FGSM-RS or N-FGSM)",
                       description="Adversarial training (Madry et al. 2018) for the RIGD teachers: each batch is "
                                   "replaced by its adversarial examples.")
    p.add_argument("--norm", default=default(TrainConfig, "adv_norm"), choices=list(NORMS))
    p.add_argument("--eps", type=eps_value, help="radius in [0, 1] pixel units (default: the dataset's evaluation "
                                                 "radius, 8/255 linf, 0.5 l2 on CIFAR-10)")
    p.add_argument("--attack", default=default(TrainConfig, "adv_attack"), choices=list(ADV_ATTACKS),
                   help="pgd: PGD-AT with --adv-steps steps of 2.5*eps/steps; fgsm: FGSM-RS (Wong et al. 2020), "
                        "one step of 1.25 eps; nfgsm: N-FGSM (de Jorge et al. 2022), one step of eps from 2-eps noise")
    p.add_argument("--adv-steps", type=positive_int, default=default(TrainConfig, "adv_steps"))
    _add_training_args(p)


def _eval_parser(sub) -> None:
    """`eval`: PGD or AutoAttack, appended to metrics.json."""
    from pagdemo.eval.autoattack import BACKENDS, VERSIONS, AutoAttackConfig
    from pagdemo.eval.evaluate import EvalConfig
    from pagdemo.threat import NORMS
    p = sub.add_parser("eval", help="clean and PGD robust accuracy of a checkpoint",
                       description="PGD-k with random start and step 2*eps/k (the paper: k=20, linf eps 8/255, "
                                   "l2 eps 0.5). The result is appended to the checkpoint's metrics.json.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--attack", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd (the paper's) or autoattack (standard: APGD-CE, APGD-T, FAB-T, Square; also reruns "
                        "PGD-20 on the same subset; default --limit 1000)")
    p.add_argument("--aa-version", default=default(AutoAttackConfig, "version"), choices=list(VERSIONS),
                   help="standard: 100 iterations, 5000 Square queries (report this); lite: a quick look")
    p.add_argument("--aa-backend", default=default(AutoAttackConfig, "backend"), choices=sorted(BACKENDS),
                   help="pyautoattack: the AutoAttack authors' code (default); torchattacks: same loop, weaker l2 Square")
    p.add_argument("--norm", default=default(EvalConfig, "norm"), choices=[*NORMS, "none"],
                   help="threat model (none: clean only)")
    p.add_argument("--eps", type=eps_value, help="radius in [0, 1] pixel units (default: the dataset's, 8/255 linf, "
                                                 "0.5 l2 on CIFAR-10)")
    p.add_argument("--steps", type=positive_int, default=default(EvalConfig, "steps"))
    p.add_argument("--step-size", type=float, help="default 2*eps/steps")
    p.add_argument("--restarts", type=positive_int, default=default(EvalConfig, "restarts"))
    p.add_argument("--no-random-start", action="store_true")
    p.add_argument("--limit", type=positive_int, help="a fixed class-balanced subset of N test images")
    _add_data_args(p, train=False)
    p.add_argument("--batch-size", type=positive_int, default=default(EvalConfig, "batch_size"))
    p.add_argument("--device", default=default(EvalConfig, "device"))
    p.add_argument("--seed", type=int, default=default(EvalConfig, "seed"), help="seed of the subset and of the random start")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--no-record", action="store_true", help="do not append to the checkpoint's metrics.json")


def _toy_and_attack_parsers(sub) -> None:
    """`toy` (Sec. 5.1) and `attack` (the PAG picture)."""
    from pagdemo.threat import NORMS, picture_eps
    from pagdemo.toy.experiment import DTYPES, SWEEP_SEED0, ToyConfig
    p = sub.add_parser("toy", help="the paper's 2-D experiment (Sec. 5.1): vanilla vs PAG decision boundaries",
                       description="Two classes on the line x2 = 2*x1, an MLP 2-32-2, vanilla vs PAG with the "
                                   "Nearest Neighbor target, attacked with L2 PGD-10 (eps 15, step 2).")
    p.add_argument("--seeds", type=positive_int, default=default(ToyConfig, "seeds"),
                   help="number of seeds (results as mean with a 95%% confidence interval)")
    p.add_argument("--lam", type=float, default=default(ToyConfig, "lam"),
                   help="PAG weight (default: the value our sweep chose, see docs/toy)")
    p.add_argument("--out", default="runs/toy", help="folder for results.json and decision_boundary.png")
    p.add_argument("--sweep", type=float_list, default=(),
                   help=f"also sweep these lambdas on held-out seeds {SWEEP_SEED0}.. (e.g. 0,0.1,0.3,1,3,10; adds minutes)")
    p.add_argument("--workers", type=positive_int, default=default(ToyConfig, "workers"),
                   help="processes to spread the seeds over (each trains on one thread; the numbers do not change)")
    p.add_argument("--dtype", default=default(ToyConfig, "dtype"), choices=list(DTYPES),
                   help="float64 (default): a seed's outcome barely depends on the CPU's rounding")
    p = sub.add_parser("attack", help="the PAG picture: targeted PGD from one image toward each class",
                       description="Large-eps targeted PGD from your image toward every class (or one): robust and "
                                   "PAG models paint class features, vanilla models add noise (the paper's Fig. 1).")
    p.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoint folders (one row each)")
    p.add_argument("--image", required=True, help="any image file; it is cropped to a square and resized")
    p.add_argument("--target", default="all", help="'all', a class name or a class index")
    p.add_argument("--norm", default="l2", choices=list(NORMS))
    p.add_argument("--eps", type=eps_value, help=f"radius in [0, 1] pixel units (default: l2 {picture_eps('l2')} at 32x32, "
                                                 "scaled with the image side; linf 16/255: large on purpose)")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="PNG file for the grid")


def _audit_parser(sub) -> None:
    """`audit`: gradient-masking checks, AutoAttack and the PAG score."""
    from pagdemo.eval.audit import AuditConfig
    from pagdemo.eval.autoattack import BACKENDS, VERSIONS
    from pagdemo.threat import NORMS
    p = sub.add_parser("audit", help="gradient-masking checks and the PAG score of a checkpoint",
                       description="Carlini et al. (2019) sanity checks: accuracy against growing eps must reach 0, "
                                   "PGD-100 with restarts must not beat PGD-20 by much, a transfer attack from the "
                                   "vanilla model must not beat the white-box one. Prints a verdict with the evidence.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--norm", default=default(AuditConfig, "norm"), choices=list(NORMS))
    p.add_argument("--eps", type=eps_value, help="default: the dataset's (8/255 linf, 0.5 l2 on CIFAR-10)")
    p.add_argument("--vanilla", help="vanilla checkpoint, source of the transfer attack")
    p.add_argument("--judge", help="robust checkpoint that judges the PAG score (never the model's own RIGD teacher)")
    p.add_argument("--autoattack", choices=list(VERSIONS), help="also run this AutoAttack version and compare it with PGD-20")
    p.add_argument("--aa-backend", default=default(AuditConfig, "autoattack_backend"), choices=sorted(BACKENDS))
    p.add_argument("--limit", type=positive_int, default=default(AuditConfig, "limit"),
                   help="fixed class-balanced test subset")
    p.add_argument("--pag-limit", type=positive_int, default=default(AuditConfig, "pag_limit"),
                   help="test images for the PAG score")
    p.add_argument("--pag-eps", type=eps_value, help="L2 radius of the PAG score's targeted attack (default: the "
                                                     "picture's, 4.0 at 32x32)")
    p.add_argument("--pag-steps", type=positive_int, default=default(AuditConfig, "pag_steps"))
    p.add_argument("--restarts", type=positive_int, default=default(AuditConfig, "restarts"),
                   help="restarts of the PGD-100 check")
    _add_data_args(p, train=False)
    p.add_argument("--batch-size", type=positive_int, default=default(AuditConfig, "batch_size"))
    p.add_argument("--device", default=default(AuditConfig, "device"))
    p.add_argument("--seed", type=int, default=default(AuditConfig, "seed"))
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--no-record", action="store_true", help="write neither audit-<norm>.json nor metrics.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the checks of an earlier audit-<norm>.json run with the same settings (a cut-off run, or "
                        "one without AutoAttack) and run only what it lacks: AutoAttack, or the PAG score of a new judge")


def _bench_parser(sub) -> None:
    """`bench`: speed and memory, JSON out."""
    from pagdemo.bench import BenchConfig
    p = sub.add_parser("bench", help="training-step, PGD and app-grid speed and memory (JSON out)",
                       description="Times every PAG implementation against vanilla and the reference loop, our PGD "
                                   "against torchattacks', and the app's grid; medians of round-robin runs.")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if there is a GPU")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--model", help=f"a pagdemo model name (default {default(BenchConfig, 'model')})")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+")
    p.add_argument("--impls", nargs="+", help="PAG implementations (default: all)")
    p.add_argument("--repeats", type=positive_int)
    p.add_argument("--warmup", type=positive_int)
    p.add_argument("--pgd-batch", type=positive_int)
    p.add_argument("--pgd-repeats", type=positive_int,
                   help=f"timed PGD-20 runs per attack (default {default(BenchConfig, 'pgd_repeats')})")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--profile", nargs="+", metavar="IMPL",
                   help="also profile one training step of these implementations (e.g. explicit) at the largest batch")
    p.add_argument("--small", action="store_true", help="CPU-sized settings (a few minutes on 2 cores)")


def _app_parser(sub) -> None:
    """`app`: the Gradio app (also `python -m pagdemo.app`)."""
    p = sub.add_parser("app", help="serve the Gradio app on the shipped (or your) checkpoints",
                       description="Upload an image or pick a test image and watch class-targeted PGD change it, model "
                                   "by model; compare robustness; the toy experiment. http://127.0.0.1:7860 by default.")
    p.add_argument("--checkpoints", default=os.environ.get("PAGDEMO_CHECKPOINTS", "checkpoints"),
                   help="folder of checkpoint folders (default: $PAGDEMO_CHECKPOINTS or ./checkpoints)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve a network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument("--concurrency", type=positive_int, default=1, help="model runs at once; more visitors wait in the queue")
    p.add_argument("--data-dir", help="test data for the accuracy-vs-eps curve and the example gallery "
                                      "(default: the checkpoints' own, else pagdemo's default location)")
    p.add_argument("--toy-dir", default="docs/toy", help="where `pagdemo toy` saved the results the Toy tab shows")


def _docs_parser(sub) -> None:
    """`docs`: the README's and docs' tables from the records."""
    p = sub.add_parser("docs", help="print every table of README.md and docs/ from the committed records",
                       description="Rewrites each <!-- generated:NAME --> block of README.md, checkpoints/README.md and "
                                   "docs/**/*.md from the checkpoints' records and the committed JSON files; --check "
                                   "only compares (the test suite runs it).")
    p.add_argument("--check", action="store_true", help="change nothing; fail if a block differs from the records")
    p.add_argument("--root", default=".", help="the repository (default: the working directory)")


def build_parser() -> argparse.ArgumentParser:
    """All commands, with help that explains the paper's settings rather than just naming flags."""
    parser = Parser(
        prog="pagdemo", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023): train ResNet-18s whose input "
                    "gradients are pushed toward class images, attack them with PGD, and measure their robustness.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_parsers, _eval_parser, _toy_and_attack_parsers, _audit_parser, _bench_parser, _app_parser,
                _docs_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors end in one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args, "pagdemo " + shlex.join(argv))
    except KeyboardInterrupt:
        if args.command in ("train", "adv-train"):
            print("pagdemo: interrupted; run the same command again to resume from the last finished epoch",
                  file=sys.stderr)
        return 130
    except (ValueError, OSError, CLIError) as e:  # DataError, CheckpointError and bad settings are ValueErrors
        print(f"pagdemo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def bench_main() -> int:
    """`python -m pagdemo.bench ARGS` is `pagdemo bench ARGS`."""
    return main(["bench", *sys.argv[1:]])


def app_main() -> int:
    """`python -m pagdemo.app ARGS` is `pagdemo app ARGS`."""
    return main(["app", *sys.argv[1:]])
