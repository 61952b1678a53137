"""Print the README's audit table from the checkpoints' records, so that no number in it is typed by hand.

    python scripts/audit_table.py [checkpoints]
"""
import sys
from pathlib import Path

from pagdemo.checkpoints import info
from pagdemo.report import audit_rows

ORDER = ["vanilla", "pag-cm", "adv-linf", "adv-l2"]  # the README's order: baseline, PAG, then the judges


def cell(value: object) -> str:
    """Blank for a missing number, like the app's table."""
    return "" if value is None else str(value)


def main(root: str = "checkpoints") -> None:
    """One markdown row per checkpoint and norm, from audit_rows (the app's audit table)."""
    folders = sorted((p for p in Path(root).iterdir() if (p / "config.json").exists()),
                     key=lambda p: (ORDER.index(p.name) if p.name in ORDER else len(ORDER), p.name))
    print("| checkpoint | norm | n | PGD-20 | AutoAttack | masking verdict | PAG score (judge) | gradient cosine | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in audit_rows([info(f) for f in folders]):
        judge = f" ({Path(r['judge']).name})" if r.get("judge") else ""
        pag = f"{r['PAG score']}{judge}" if r.get("PAG score") is not None else ""
        print(f"| `{r['model']}` | {r['norm']} | {cell(r.get('n'))} | {cell(r.get('PGD-20 %'))} | "
              f"{cell(r.get('AutoAttack %'))} | {r['verdict']} | {pag} | {cell(r.get('gradient cosine'))} | "
              f"{cell(r.get('device'))} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
