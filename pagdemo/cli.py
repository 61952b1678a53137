"""`pagdemo` command line, the only place that reads argv: the parser comes from `pagdemo.commands` and each
command's config fields (`pagdemo.options.flag`); `parse` makes the config, `main` runs the command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import sys
import textwrap
import typing
from fractions import Fraction
from pkgutil import resolve_name
from typing import Any

from pagdemo.commands import COMMANDS

EXAMPLES = """\
examples:
  pagdemo train --method cm --dataset synthetic --epochs 1 --out runs/cm
  pagdemo eval --checkpoint runs/cm --norm l2 --eps 0.5 --limit 64 --json runs/cm.json
  pagdemo train --method oi --dataset cifar10 --recipe fast --pag-impl compiled --out runs/oi   # on a GPU
  pagdemo train --method cm --pag-impl compiled --bn-coupling batch --pag-frame authors \
--out runs/cm  # their step
  torchrun --nproc_per_node=4 -m pagdemo train --method nn --recipe fast --out runs/nn
  pagdemo adv-train --norm linf --eps 8/255 --attack nfgsm --recipe fast --out runs/teacher-linf
  pagdemo train --method rigd --teacher runs/teacher-linf --out runs/rigd-linf
  pagdemo train --method cm --recipe finetune --init checkpoints/vanilla --out runs/cm-ft
  pagdemo train --method cm --dataset folder --data-dir data/pets --image-size 64 \
--out runs/pets-cm   # your images
  pagdemo attack --checkpoint runs/cm --image cat.png --target all --out grid.png
  pagdemo toy --seeds 20 --out runs/toy
  pagdemo app --checkpoints checkpoints
  pagdemo eval --checkpoint hf-hub:ORG/NAME --no-record --norm l2   # a checkpoint on the Hugging Face Hub
  pagdemo push-to-hub checkpoints/pag-cm --repo ORG/pag-cm          # yours, to the Hub (hf auth login first)
  pagdemo import-robustbench Engstrom2019Robustness --threat Linf \
--out checkpoints/engstrom-linf   # needs [zoo]
"""


class Formatter(argparse.HelpFormatter):
    """argparse's help, but never broken at a hyphen: --no-record and hf-hub:ORG/NAME stay whole to copy."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        """A flag's help."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """A command's description."""
        return "\n".join(indent + line for line in self._split_lines(text, width - len(indent)))


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag costs one line, not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def eps_value(text: str) -> float:
    """Accept 0.031, 8/255 or 1e-2: people write eps as a fraction of 255 more often than not."""
    with contextlib.suppress(ValueError, ZeroDivisionError):
        if (value := float(Fraction(text))) >= 0:
            return value
    raise argparse.ArgumentTypeError(f"invalid eps {text!r}: write a number >= 0, like 0.5 or 8/255")


def positive_int(text: str) -> int:
    """Counts (epochs, steps, limits) must be whole and positive."""
    with contextlib.suppress(ValueError):
        if (value := int(text)) >= 1:
            return value
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")


def float_list(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, such as lambdas for a sweep."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


READERS = {"eps": eps_value, "count": positive_int, "floats": float_list}  # `read` of pagdemo.options.flag


def _shape(hint: Any) -> tuple[type, bool, bool]:
    """(value type, whether None is allowed, whether it is a tuple of values) of a field's type hint."""
    optional = type(None) in typing.get_args(hint)  # X | None
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    many = typing.get_origin(hint) is tuple
    return (typing.get_args(hint)[0] if many else hint), optional, many


def _help(text: str, default: Any, value_type: type) -> str:
    """The field's help, saying its default unless it does already; a True switch's flag turns it off."""
    if value_type is bool and default is True:
        text = f"turn off: {text}"
    elif default is not False and default not in (None, (), dataclasses.MISSING) and "default" not in text:
        text += f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
    return text.replace("%", "%%")


def add_flag(p: argparse.ArgumentParser, f: dataclasses.Field, hint: Any, given_only: bool = False) -> None:
    """One flag for one config field, from its `pagdemo.options.flag` metadata (given_only: default None)."""
    m, default = f.metadata, f.default
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()  # computed now: from an environment variable, say
    value_type, optional, many = _shape(hint)
    name = m["name"] or "--" + f.name.replace("_", "-")
    kw: dict[str, Any] = {"dest": f.name, "help": _help(m["help"], default, value_type)}
    if value_type is bool and optional:
        kw.update(action=argparse.BooleanOptionalAction, default=default)
    elif value_type is bool:
        name = name if not default else "--no-" + name[2:]
        kw.update(action="store_false" if default else "store_true", default=None if given_only else default)
    else:
        kw["type"] = READERS[m["read"]] if m["read"] else value_type
        kw["nargs"] = "+" if many and m["read"] != "floats" else None  # "floats" reads one "0,0.1,1" word
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


def build_parser() -> argparse.ArgumentParser:
    """All commands of the table; each shows its config's flag() fields: its `group`'s and the ungrouped."""
    parser = Parser(
        prog="pagdemo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023): train ResNet-18s whose "
        "input gradients are pushed toward class images, attack them with PGD, and measure their robustness.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        p = sub.add_parser(name, help=c.help, description=c.description, formatter_class=Formatter)
        cls = resolve_name(c.config)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli") and f.metadata["group"] in (None, c.group):
                add_flag(p, f, hints[f.name], c.build is not None)
    return parser


def parse(argv: list[str]) -> tuple[str, Any]:
    """(command, its config) from argv; a bad flag exits with one line, a bad setting is a ValueError."""
    args = build_parser().parse_args(argv)
    c = COMMANDS[args.command]
    values = {}  # every field the parser has: lists as tuples, the `none` word as None
    for f in dataclasses.fields(resolve_name(c.config)):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            value = tuple(value) if isinstance(value, list) else value
            values[f.name] = None if f.metadata.get("none") and value == f.metadata["none"] else value
    return args.command, resolve_name(c.build or c.config)(**values, **c.fixed)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; user errors end in one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "pagdemo"
    try:
        command, cfg = parse(argv)
        said = resolve_name(COMMANDS[command].run)(cfg, "pagdemo " + shlex.join(argv))
        if said:
            print(said)
    except KeyboardInterrupt:
        if getattr(COMMANDS.get(command), "interrupted", ""):
            print(f"pagdemo: {COMMANDS[command].interrupted}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # DataError, CheckpointError, HubError, bad settings: ValueErrors
        print(f"pagdemo {command}: error: {e}", file=sys.stderr)
        return 2
    return 0
