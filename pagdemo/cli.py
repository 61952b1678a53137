"""`pagdemo` command line: the only place that reads argv.

Every command's flags are the fields of its config dataclass (`pagdemo.options.flag`: help, choices, how a value is
read), so a setting is written once and the help cannot drift from the code. `parse` turns argv into that config;
`pagdemo.commands` runs it with the same functions the app and the tests call.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
import sys
import types
import typing
from fractions import Fraction
from typing import Any

from pagdemo.commands import COMMANDS, CLIError

EXAMPLES = """\
examples:
  pagdemo train --method cm --dataset synthetic --epochs 1 --out runs/cm
  pagdemo eval --checkpoint runs/cm --norm l2 --eps 0.5 --limit 64 --json runs/cm.json
  pagdemo train --method oi --dataset cifar10 --recipe fast --pag-impl compiled --out runs/oi   # on a GPU
  pagdemo train --method cm --pag-impl compiled --bn-coupling batch --pag-frame authors --out runs/cm  # their step
  torchrun --nproc_per_node=4 -m pagdemo train --method nn --recipe fast --out runs/nn
  pagdemo adv-train --norm linf --eps 8/255 --attack nfgsm --recipe fast --out runs/teacher-linf
  pagdemo train --method rigd --teacher runs/teacher-linf --out runs/rigd-linf
  pagdemo train --method cm --recipe finetune --init checkpoints/vanilla --out runs/cm-ft
  pagdemo train --method cm --dataset folder --data-dir data/pets --image-size 64 --out runs/pets-cm   # your images
  pagdemo attack --checkpoint runs/cm --image cat.png --target all --out grid.png
  pagdemo toy --seeds 20 --out runs/toy
  pagdemo app --checkpoints checkpoints
  pagdemo import-robustbench Engstrom2019Robustness --threat Linf --out checkpoints/engstrom-linf   # needs [zoo]
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
        raise argparse.ArgumentTypeError(
            f"invalid eps {text!r}: write a number like 0.5 or a fraction like 8/255"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"eps must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """Counts (epochs, steps, limits) must be whole and positive."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def float_list(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, such as lambdas for a sweep."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


READERS = {
    "eps": eps_value,
    "count": positive_int,
    "floats": float_list,
}  # the `read` words of pagdemo.options


def _shape(hint: Any) -> tuple[type, bool, bool]:
    """(value type, whether None is allowed, whether it is a tuple of values) of a field's type hint."""
    args = typing.get_args(hint)
    optional = type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _default(f: dataclasses.Field) -> Any:
    """A field's default, computed now when it comes from a factory (an environment variable, say)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _help(text: str, default: Any, value_type: type) -> str:
    """The field's help, saying its default unless the help does already; a True switch's flag turns it off."""
    if value_type is bool and default is True:
        text = f"turn off: {text}"
    elif (
        not (default is None or default is False or default == () or default is dataclasses.MISSING)
        and "default" not in text
    ):
        text += f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
    return text.replace("%", "%%")


def add_flag(p: argparse.ArgumentParser, f: dataclasses.Field, hint: Any, given_only: bool = False) -> None:
    """One flag for one config field, from its `pagdemo.options.flag` metadata (`given_only`: default None)."""
    m, default = f.metadata, _default(f)
    value_type, optional, many = _shape(hint)
    name = m["name"] or "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"dest": f.name, "help": _help(m["help"], default, value_type)}
    if value_type is bool and optional:
        kw.update(action=argparse.BooleanOptionalAction, default=default)
    elif value_type is bool:
        name = name if not default else "--no-" + name[2:]
        kw.update(action="store_false" if default else "store_true", default=None if given_only else default)
    else:
        kw.update(
            type=READERS[m["read"]] if m["read"] else value_type,
            nargs="+" if many and m["read"] != "floats" else None,
        )  # "floats" reads one "0,0.1,1" word
        if m["choices"] is not None:
            kw["choices"] = list(m["choices"]) + ([m["none"]] if m["none"] else [])
        if default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = None if given_only else m["none"] if default is None and m["none"] else default
    if m.get("positional"):
        name, kw = kw.pop("dest"), {k: v for k, v in kw.items() if k != "required"}
        kw["metavar"] = name.upper()
    p.add_argument(name, **kw)


def add_flags(
    p: argparse.ArgumentParser,
    cls: type,
    group: str | None = None,
    only: tuple[str, ...] = (),
    given_only: bool = False,
) -> None:
    """The flags of a config dataclass: its flag() fields, those of `group` and the ungrouped (or just `only`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") and f.metadata["group"] in (None, group) and (not only or f.name in only):
            add_flag(p, f, hints[f.name], given_only)


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed value of every field of `cls` the parser has: lists as tuples, the `none` word as None."""
    values = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = (
                None
                if f.metadata.get("none") and value == f.metadata["none"]
                else (tuple(value) if isinstance(value, list) else value)
            )
    return values


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """A config from parsed flags, with `fixed` settings the command line does not offer (adv-train's method)."""
    return cls(**{**flag_values(cls, args), **fixed})


def _train_parsers(sub) -> None:
    """`train` and `adv-train`: one TrainConfig, each showing its own group of flags."""
    from pagdemo.train.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="train vanilla or PAG (oi, cm, nn, rigd) classifiers",
        description="Train with Eq. 1: CE + lambda * sum over classes of (1 - cos(input gradient, "
        "g(x, t))), the targets g named by --method; the paper's settings are the defaults "
        "(docs/training.md says which choices the paper leaves open, and ours).",
    )
    add_flags(p, TrainConfig, group="pag")
    p = sub.add_parser(
        "adv-train",
        help="adversarially train a robust teacher (PGD-AT, FGSM-RS or N-FGSM)",
        description="Adversarial training (Madry et al. 2018) for the RIGD teachers: each batch is "
        "replaced by its adversarial examples.",
    )
    add_flags(p, TrainConfig, group="adv")


def _eval_parsers(sub) -> None:
    """`eval` (PGD or AutoAttack) and `audit` (gradient-masking checks, AutoAttack, the PAG score)."""
    from pagdemo.eval.audit import AuditConfig
    from pagdemo.eval.autoattack import AutoAttackConfig
    from pagdemo.eval.evaluate import EvalConfig

    p = sub.add_parser(
        "eval",
        help="clean and PGD robust accuracy of a checkpoint",
        description="PGD-k with random start and step 2*eps/k (the paper: k=20, linf eps 8/255, "
        "l2 eps 0.5). The result is appended to the checkpoint's metrics.json.",
    )
    p.add_argument(
        "--attack",
        default="pgd",
        choices=["pgd", "autoattack"],
        help="pgd (the paper's) or autoattack (standard: APGD-CE, APGD-T, FAB-T, Square; also reruns "
        "PGD-20 on the same subset; default --limit 1000)",
    )
    add_flags(p, EvalConfig)
    add_flags(p, AutoAttackConfig, only=("version", "backend"))
    p = sub.add_parser(
        "audit",
        help="gradient-masking checks and the PAG score of a checkpoint",
        description="Carlini et al. (2019) sanity checks: accuracy against growing eps must reach 0, "
        "PGD-100 with restarts must not beat PGD-20 by much, a transfer attack from the "
        "vanilla model must not beat the white-box one. Prints a verdict with the evidence.",
    )
    add_flags(p, AuditConfig)


def _other_parsers(sub) -> None:
    """`toy`, `attack`, `bench`, `app` and `docs`."""
    from pagdemo.app import AppConfig
    from pagdemo.bench import BenchConfig
    from pagdemo.docs import DocsConfig
    from pagdemo.records.zoo_import import ImportConfig
    from pagdemo.toy.experiment import ToyConfig
    from pagdemo.viz.picture import PictureConfig

    add_flags(
        sub.add_parser(
            "toy",
            help="the paper's 2-D experiment (Sec. 5.1): vanilla vs PAG decision boundaries",
            description="Two classes on the line x2 = 2*x1, an MLP 2-32-2, vanilla vs PAG with the "
            "Nearest Neighbor target, attacked with L2 PGD-10 (eps 15, step 2).",
        ),
        ToyConfig,
    )
    add_flags(
        sub.add_parser(
            "attack",
            help="the PAG picture: targeted PGD from one image toward each class",
            description="Large-eps targeted PGD from your image toward every class (or one): robust "
            "and PAG models paint class features, vanilla models add noise (the paper's "
            "Fig. 1).",
        ),
        PictureConfig,
    )
    p = sub.add_parser(
        "bench",
        help="training-step, PGD and app-grid speed and memory (JSON out)",
        description="Times every PAG implementation against vanilla and the reference loop, our PGD "
        "against torchattacks', and the app's grid; medians of round-robin runs.",
    )
    add_flags(p, BenchConfig, given_only=True)
    p.add_argument("--small", action="store_true", help="CPU-sized settings (a few minutes on 2 cores)")
    add_flags(
        sub.add_parser(
            "app",
            help="serve the Gradio app on the shipped (or your) checkpoints",
            description="Upload an image or pick a test image and watch class-targeted PGD change it, "
            "model by model; compare robustness; the toy experiment. "
            "http://127.0.0.1:7860 by default.",
        ),
        AppConfig,
    )
    add_flags(
        sub.add_parser(
            "import-robustbench",
            help="a RobustBench model (e.g. the paper's RIGD teachers) as a pagdemo checkpoint",
            description="Loads a model of RobustBench's zoo with RobustBench's "
            "own load_model (tensors only, never code from the file) and writes a checkpoint folder "
            "that eval, audit, attack, the app and train --method rigd --teacher use like any other. "
            "Needs the optional robustbench package: pip install -e '.[zoo]'.",
        ),
        ImportConfig,
    )
    add_flags(
        sub.add_parser(
            "docs",
            help="print every table of README.md and docs/ from the committed records",
            description="Rewrites each <!-- generated:NAME --> block of README.md, "
            "checkpoints/README.md and docs/**/*.md from the checkpoints' records and the "
            "committed JSON files; --check only compares (the test suite runs it).",
        ),
        DocsConfig,
    )


def build_parser() -> argparse.ArgumentParser:
    """All commands, with help that explains the paper's settings rather than just naming flags."""
    parser = Parser(
        prog="pagdemo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023): train ResNet-18s whose input "
        "gradients are pushed toward class images, attack them with PGD, and measure their robustness.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_parsers, _eval_parsers, _other_parsers):
        add(sub)
    return parser


def parse(argv: list[str]) -> tuple[str, Any]:
    """(command, its config) from a command line; a bad flag exits with one line."""
    args = build_parser().parse_args(argv)
    if args.command in ("train", "adv-train"):
        from pagdemo.train.config import TrainConfig

        return args.command, config_from_args(
            TrainConfig, args, **({"method": "adv"} if args.command == "adv-train" else {})
        )
    if args.command == "eval" and args.attack == "autoattack":
        from pagdemo.eval.autoattack import AutoAttackConfig

        if args.norm == "none":
            raise CLIError("--attack autoattack needs --norm linf or l2")
        if args.limit is None:
            del args.limit  # AutoAttack's own default subset
        return "eval", config_from_args(AutoAttackConfig, args)
    if args.command == "bench":
        from pagdemo.bench import BenchConfig, bench_config

        return "bench", bench_config(flag_values(BenchConfig, args), args.small)
    configs = {
        "eval": ("pagdemo.eval.evaluate", "EvalConfig"),
        "audit": ("pagdemo.eval.audit", "AuditConfig"),
        "toy": ("pagdemo.toy.experiment", "ToyConfig"),
        "attack": ("pagdemo.viz.picture", "PictureConfig"),
        "app": ("pagdemo.app", "AppConfig"),
        "docs": ("pagdemo.docs", "DocsConfig"),
        "import-robustbench": ("pagdemo.records.zoo_import", "ImportConfig"),
    }
    module, name = configs[args.command]
    return args.command, config_from_args(getattr(importlib.import_module(module), name), args)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors end in one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "pagdemo"
    try:
        command, cfg = parse(argv)
        COMMANDS[command](cfg, "pagdemo " + shlex.join(argv))
    except KeyboardInterrupt:
        if command in ("train", "adv-train"):
            print(
                "pagdemo: interrupted; run the same command again to resume from the last finished epoch",
                file=sys.stderr,
            )
        return 130
    except (
        ValueError,
        OSError,
        CLIError,
    ) as e:  # DataError, CheckpointError and bad settings are ValueErrors
        print(f"pagdemo {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def bench_main() -> int:
    """`python -m pagdemo.bench ARGS` is `pagdemo bench ARGS`."""
    return main(["bench", *sys.argv[1:]])


def app_main() -> int:
    """`python -m pagdemo.app ARGS` is `pagdemo app ARGS`."""
    return main(["app", *sys.argv[1:]])
