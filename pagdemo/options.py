"""Each command's flags, declared once on its config dataclass: `flag(default, help, ...)` is a dataclass field
whose metadata says how the command line shows and reads it. `pagdemo.cli` builds the parser from these fields
and the config from the parsed flags, so a setting is written once (its field) and the help cannot drift."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

READS = (
    "eps",
    "count",
    "floats",
)  # how `pagdemo.cli` reads a value other than by its type: 8/255, >= 1, "0,0.1,1"


def flag(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Sequence[str] | None = None,
    read: str | None = None,
    name: str | None = None,
    none: str | None = None,
    group: str | None = None,
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
    positional: bool = False,
) -> Any:
    """A config field with its command-line flag.

    Args:
        choices: the allowed values (from the registry that checks them).
        read: one of READS, for values that their type alone does not read well.
        name: the flag, when not --<field-name> (e.g. --aa-backend).
        none: a word that stands for None on the command line (--norm none).
        group: commands that share a config show only their group's fields (train: "pag", adv-train: "adv").
        factory: a default computed when the parser is built (e.g. from the environment).
        cli: False keeps a field off the command line.
        positional: given without a flag name (`pagdemo import-robustbench NAME`).
    """
    assert read is None or read in READS, read
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "read": read,
        "name": name,
        "none": none,
        "group": group,
        "cli": cli,
        "positional": positional,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(cls: type, name: str) -> Any:
    """The same flag as `cls`'s field `name`, for a second config that shows it (`pagdemo eval`'s --aa-version)."""
    f = cls.__dataclass_fields__[name]
    return flag(f.default, **f.metadata)
