"""What `pagdemo eval` and `pagdemo audit` run and print. `eval` is the paper's PGD (EvalConfig) or, with
--attack autoattack, the standard AutoAttack on a fixed subset (AutoAttackConfig): one config, EvalCommand,
holds the flags of both, and its runner hands each attack the config it knows."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pagdemo.eval.audit import AuditConfig, run_audit
from pagdemo.eval.autoattack import AutoAttackConfig, format_autoattack, run_autoattack_eval
from pagdemo.eval.evaluate import EvalConfig, format_record, run_eval
from pagdemo.eval.masking import format_audit
from pagdemo.options import flag, flag_of

ATTACK_HELP = (
    "pgd (the paper's) or autoattack (APGD-CE, APGD-T, FAB-T, Square, and PGD-20; default --limit 1000)"
)


@dataclass(frozen=True)
class EvalCommand(EvalConfig):
    """`pagdemo eval`: the PGD settings, which attack runs, and AutoAttack's version and code."""

    attack: str = flag("pgd", ATTACK_HELP, choices=("pgd", "autoattack"))
    version: str = flag_of(AutoAttackConfig, "version")
    backend: str = flag_of(AutoAttackConfig, "backend")

    def __post_init__(self) -> None:
        """AutoAttack has no clean-only mode: say so before anything loads."""
        if self.attack == "autoattack" and self.norm is None:
            raise ValueError("--attack autoattack needs --norm linf or l2")

    def narrowed(self, cls: type) -> Any:
        """The fields `cls` has (an unset --limit leaves it its own default: AutoAttack's fixed subset)."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls) if f.name != "limit" or self.limit})


def eval_command(cfg: EvalCommand, command: str) -> str:
    """PGD: one line; AutoAttack: a few."""
    if cfg.attack == "autoattack":
        return format_autoattack(run_autoattack_eval(cfg.narrowed(AutoAttackConfig)))
    return format_record(run_eval(cfg.narrowed(EvalConfig)))


def audit_command(cfg: AuditConfig, command: str) -> str:
    """The audit's verdict with its evidence."""
    return format_audit(run_audit(cfg))
