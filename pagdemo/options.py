"""Each command's flags, declared once on its config dataclass: `flag(default, help, ...)` is a dataclass
field whose metadata says how the command line shows and reads it. `pagdemo.cli` builds the parser from these
fields and the config from the parsed flags: a setting is written once (its field), the help cannot drift."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


def flag(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Sequence[str] | None = None,  # the allowed values (from the registry that checks them)
    read: str | None = None,  # for what a type reads badly: "eps" (8/255), "count" (>= 1), "floats" (0,0.1,1)
    name: str | None = None,  # the flag, when not --<field-name> (e.g. --aa-backend)
    none: str | None = None,  # a word that stands for None on the command line (--norm none)
    group: str | None = None,  # commands sharing a config show their group's (train: "pag", adv-train: "adv")
    factory: Callable[[], Any] | None = None,  # a default computed when the parser is built (from os.environ)
    cli: bool = True,  # False keeps a field off the command line
    positional: bool = False,  # given without a flag name (`pagdemo import-robustbench NAME`)
) -> Any:
    """A config field with its command-line flag: the field's metadata is every argument but the default."""
    meta = {k: v for k, v in locals().items() if k not in ("default", "factory")}
    return dataclasses.field(default=default, default_factory=factory or dataclasses.MISSING, metadata=meta)


def flag_of(cls: type, name: str) -> Any:
    """The same flag as `cls`'s field `name`, for a second config that shows it (eval's --aa-version)."""
    f = cls.__dataclass_fields__[name]
    return flag(f.default, **f.metadata)
