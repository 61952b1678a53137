"""What each `pagdemo` command does with its config: call the function the app and the tests call, and print what a
person reads in a terminal (`pagdemo.cli` parses argv into the config and dispatches here)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user mistake the CLI reports in one line."""


def cmd_train(cfg: Any, command: str) -> None:
    """train and adv-train share one loop."""
    from pagdemo.train.loop import train

    out = train(cfg, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm l2")


def cmd_eval(cfg: Any, command: str) -> None:
    """PGD (one line) or AutoAttack (a few lines)."""
    from pagdemo.eval.autoattack import AutoAttackConfig, format_autoattack, run_autoattack_eval
    from pagdemo.eval.evaluate import format_record, run_eval

    if isinstance(cfg, AutoAttackConfig):
        print(format_autoattack(run_autoattack_eval(cfg)))
    else:
        print(format_record(run_eval(cfg)))


def cmd_audit(cfg: Any, command: str) -> None:
    """Run the gradient-masking audit and print its verdict."""
    from pagdemo.eval.audit import run_audit
    from pagdemo.eval.masking import format_audit

    print(format_audit(run_audit(cfg)))


def cmd_toy(cfg: Any, command: str) -> None:
    """Run the toy experiment and say where its files went."""
    from pagdemo.toy.run import run_toy
    from pagdemo.toy.stats import results_table

    print(results_table(run_toy(cfg)))
    print(f"results in {cfg.out}/results.json, figure in {cfg.out}/decision_boundary.png")


def cmd_attack(cfg: Any, command: str) -> None:
    """Render the PAG grid for one image and the given checkpoints."""
    from pagdemo.viz.picture import render_picture

    print(f"grid written to {render_picture(cfg)}")


def cmd_bench(cfg: Any, command: str) -> None:
    """Run the benchmark, write its JSON, print its tables."""
    from pagdemo.bench import format_tables, run_bench
    from pagdemo.records.files import write_json

    result = run_bench(cfg)
    if cfg.json:
        write_json(cfg.json, result)
    print(format_tables(result))


def cmd_app(cfg: Any, command: str) -> None:
    """Build the app and serve it until interrupted."""
    from pagdemo.app import serve

    serve(cfg)


def cmd_docs(cfg: Any, command: str) -> None:
    """Rewrite (or check) the generated tables; problems are one line each."""
    from pagdemo.docs import update

    problems = update(Path(cfg.root), check=cfg.check)
    if problems:
        raise CLIError(f"{len(problems)} problem(s): " + " | ".join(problems))
    print("every generated table matches the records" if cfg.check else "generated tables rewritten")


def cmd_import(cfg: Any, command: str) -> None:
    """Write the checkpoint of a RobustBench model and say what to run next."""
    from pagdemo.records.zoo_import import import_robustbench

    out = import_robustbench(cfg, command)
    print(
        f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm {cfg.threat.lower()}"
    )


COMMANDS: dict[str, Callable[[Any, str], None]] = {
    "train": cmd_train,
    "adv-train": cmd_train,
    "eval": cmd_eval,
    "toy": cmd_toy,
    "attack": cmd_attack,
    "audit": cmd_audit,
    "bench": cmd_bench,
    "app": cmd_app,
    "docs": cmd_docs,
    "import-robustbench": cmd_import,
}
