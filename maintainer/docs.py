"""The README's and docs' tables, printed from the committed records: no number in them is typed.

A generated block sits between `<!-- generated:NAME -->` and `<!-- /generated -->` in a Markdown
file. `python -m maintainer.docs` rewrites every block (and the figures the blocks show); with `--check`
it fails when a block differs from what the records give, or when a Markdown table holding a digit
sits outside a block (tests/test_docs.py runs the check). Run it from the repository root.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from maintainer.bench_tables import step_table
from maintainer.toy_tables import toy, toy_ablation, toy_seeds, toy_sweep, toy_vanilla
from maintainer.train_tables import coupling, coupling_probe, probe, target_geometry
from pagdemo.bench.tables import format_tables
from pagdemo.records.checkpoints import list_checkpoints
from pagdemo.records.files import read_json, read_jsonl
from pagdemo.records.report import audit_rows, best_record, display_order, robustness_rows
from pagdemo.records.report import table_cell as _cell
from pagdemo.threat import eval_eps

BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)
DOC_FILES = ("README.md", "checkpoints/README.md", "docs/**/*.md")
COST_FIGURE = "docs/cost.png"


def _infos(root: Path) -> list[dict]:
    """The shipped checkpoints, in the paper's order."""
    return sorted(list_checkpoints(root / "checkpoints")[0], key=display_order)


def _training(run: dict) -> str:
    """What trained a checkpoint, in a few words: method, lambda, recipe, epochs (flagging a cut schedule)."""
    method = {
        "vanilla": "cross-entropy",
        "adv": f"{str(run.get('adv_attack', '')).upper()} {run.get('adv_norm')} {run.get('adv_eps', 0):.4g}",
    }.get(run.get("method"))
    if run.get("method") == "import":
        return f"imported: {run.get('source')}"
    method = method or f"PAG {run.get('method')}, lambda {run.get('lam')}"
    done, planned = run.get("epochs_done"), run.get("epochs")
    epochs = (
        f"{done} of {planned} epochs" if done is not None and planned and done < planned else f"{done} epochs"
    )
    return f"{method}, {run.get('recipe')} recipe, {'**' + epochs + '**' if done != planned else epochs}"


def _measured_on(info: dict) -> str:
    """Where Table 1's PGD numbers of a checkpoint were measured (a GPU window, or re-measured on the CPU)."""
    run, evs = info.get("run", {}), info.get("evaluations", [])
    records = [best_record(evs, run.get("dataset"), norm, info.get("image_size")) for norm in ("linf", "l2")]
    return " / ".join(dict.fromkeys(str(r.get("device")) for r in records if r)) or ""


def table1(root: Path) -> str:
    """README: every shipped checkpoint's recorded clean / PGD-20 accuracy beside the paper's row."""
    linf, l2 = eval_eps("linf", "cifar10"), eval_eps("l2", "cifar10")
    lines = [
        f"| checkpoint | training | clean | PGD-20 linf {linf * 255:.0f}/255 | PGD-20 l2 {l2:g} | n | "
        "trained on | PGD-20 on | paper: clean / linf / l2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    infos = _infos(root)
    for i, row in zip(infos, robustness_rows(infos)):
        paper = (
            f"{row['paper clean %']:.2f} / {row['paper linf %']:.2f} / {row['paper l2 %']:.2f}"
            if row["paper clean %"] is not None
            else "(a teacher: not in Table 1)"
        )
        numbers = f"{_cell(row['clean %'])} | {_cell(row['PGD linf %'])} | {_cell(row['PGD l2 %'])}"
        lines.append(
            f"| `{row['model']}` | {_training(i['run'])} | {numbers} | {row['n clean']} | "
            f"{i['run'].get('device')} | {_measured_on(i)} | {paper} |"
        )
    return "\n".join(lines)


def recipes(root: Path) -> str:
    """docs/training.md: every named recipe's settings, from pagdemo.train.recipes."""
    from pagdemo.train.recipes import RECIPES

    lines = [
        "| recipe | epochs | batch | lr | schedule | Nesterov | bf16 on a GPU | lambda | start | what |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {r.epochs} | {r.batch_size} | {r.lr} | {r.schedule} | "
        f"{'yes' if r.nesterov else 'no'} | {'yes' if r.amp else 'no'} | {r.lam_schedule} | "
        f"{'--init' if r.needs_init else 'scratch'} | "
        f"{r.summary} |"
        for name, r in RECIPES.items()
    ]
    return "\n".join(lines)


def audits(root: Path) -> str:
    """The audit table: AutoAttack beside PGD-20 on the same subset, the masking verdict, the PAG score."""
    lines = [
        "| checkpoint | norm | n | PGD-20 | AutoAttack | masking verdict | PAG score (judge) | "
        "gradient cosine | device |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in audit_rows(_infos(root)):
        judge = f" ({Path(r['judge']).name})" if r.get("judge") else ""
        pag = f"{r['PAG score']}{judge}" if r.get("PAG score") is not None else ""
        lines.append(
            f"| `{r['model']}` | {r['norm']} | {_cell(r.get('n'))} | {_cell(r.get('PGD-20 %'), 1)} | "
            f"{_cell(r.get('AutoAttack %'), 1)} | {r['verdict']} | {pag} | "
            f"{_cell(r.get('gradient cosine'), 3)} | "
            f"{_cell(r.get('device'))} |"
        )
    return "\n".join(lines)


def autoattack_runs(root: Path) -> str:
    """docs/cpu-audits: each recorded AutoAttack run, with how long it took and where."""
    lines = [
        "| checkpoint | norm | n | backend | PGD-20 | AutoAttack | after APGD-CE / APGD-T / FAB-T | minutes "
        "| device | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in _infos(root):
        for ev in i["evaluations"]:
            if not str(ev.get("attack", "")).startswith("autoattack"):
                continue
            after = ev.get("per_attack", {})
            steps = " / ".join(_cell(100 * after[k], 1) for k in ("apgd-ce", "apgd-t", "fab-t") if k in after)
            lines.append(
                f"| `{i['name']}` | {ev['norm']} | {ev['n']} | {ev.get('backend', '')} | "
                f"{_cell(100 * ev['pgd20_robust_acc'], 1)} | {_cell(100 * ev['robust_acc'], 1)} | {steps} | "
                f"{_cell(ev.get('seconds', 0) / 60, 1)} | {ev.get('device')} | {str(ev.get('date'))[:10]} |"
            )
    return "\n".join(lines)


def gpu_seconds(i: dict) -> float | None:
    """Training seconds of a checkpoint, its start's included (a fine-tuned model's price has both)."""
    run = i["run"]
    if run.get("train_time_s") is None:
        return None
    return run["train_time_s"] + (run.get("init_train_time_s") or 0)


def cost_rows(root: Path) -> list[dict]:
    """Per checkpoint: training seconds and the recorded robust accuracies (the cost figure's points)."""
    rows = []
    infos = _infos(root)
    for i, r in zip(infos, robustness_rows(infos)):
        log = read_jsonl(Path(i["path"]) / "train_log.jsonl")
        rows.append(
            {
                "model": i["name"],
                "method": i["run"].get("method"),
                "device": i["run"].get("device"),
                "seconds": gpu_seconds(i),
                "epochs": len(log),
                "clean": r["clean %"],
                "linf": r["PGD linf %"],
                "l2": r["PGD l2 %"],
            }
        )
    return rows


def cost(root: Path) -> str:
    """The cost table beside docs/cost.png: what each route to robustness cost in training time."""
    rows = cost_rows(root)
    lines = [
        "| checkpoint | route | device | training seconds | epochs | clean | PGD-20 linf | PGD-20 l2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['model']}` | {r['method']} | {r['device']} | {_cell(r['seconds'], 0)} | {r['epochs']} | "
        f"{_cell(r['clean'])} | {_cell(r['linf'])} | {_cell(r['l2'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def _bench(path: str) -> Callable[[Path], str]:
    """A benchmark JSON's full tables (docs/bench)."""
    # the profiles are in the session logs
    return lambda root: format_tables(read_json(root / path), profiles=False)


def _steps(path: str) -> Callable[[Path], str]:
    """A benchmark JSON's training-step table, compact (README, GPU session notes)."""
    return lambda root: step_table(read_json(root / path), path)


def app_load(root: Path) -> str:
    """docs/app.md: the server's memory over 50 mixed requests, and how soon a closed page's run stops."""
    data = read_json(root / "docs/app-load.json")
    if not data:
        return "(not measured yet: `python -m maintainer.app_load`)"
    trace = data["trace"]
    at = {t["after"]: t for t in trace}
    kinds: dict[str, int] = {}
    for t in trace[1:]:
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
    peak = max(t["rss_mb"] for t in trace)
    lines = [
        "| after request | 0 (started) | 10 | 20 | 30 | 40 | 50 | peak |",
        "|---|---|---|---|---|---|---|---|",
        "| server memory (RSS, MiB) | "
        + " | ".join(f"{at[n]['rss_mb']:.0f}" for n in (0, 10, 20, 30, 40, 50))
        + f" | {peak:.0f} |",
        "",
        f"{data['date']}, {data['cpu']}, the checkpoints {', '.join(data['checkpoints'])}; requests: "
        + ", ".join(f"{n} {k}" for k, n in kinds.items())
        + f"; {trace[-1]['s']:.0f} s in all. "
        f"Growth from request 10 to 50: {at[50]['rss_mb'] - at[10]['rss_mb']:+.0f} MiB. A page closed "
        f"during a run ({data['abandoned_run']['abandoned']}): the next visitor's request took "
        f"{data['abandoned_run']['next_request_s']:.1f} s.",
    ]
    mistakes = data.get("user_mistakes")
    if mistakes:
        lines[-1] += (
            f" {mistakes['sent']} user mistakes sent through the API: {mistakes['refused']} refused, "
            f"{mistakes['log_lines']} line(s) in the server's log, {mistakes['tracebacks']} traceback(s)."
        )
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[Path], str]] = {
    "coupling": coupling,
    "coupling-probe": coupling_probe("coupling-probe"),
    "finetune-probe": coupling_probe("finetune-probe"),
    "target-geometry": target_geometry,
    "table1": table1,
    "recipes": recipes,
    "audits": audits,
    "autoattack-runs": autoattack_runs,
    "cost": cost,
    "toy": toy,
    "toy-seeds": toy_seeds,
    "toy-vanilla": toy_vanilla,
    "toy-sweep": toy_sweep,
    "toy-lam": toy_ablation("lam", ("grad_of", "lam")),
    "toy-k": toy_ablation("k", ("k",)),
    "toy-attack": toy_ablation("attack", ("lam", "random_init")),
    "probe": probe,
    "app-load": app_load,
    "bench-cpu": _bench("docs/bench/cpu.json"),
    "bench-h100": _bench("docs/gpu/2026-11-26-h100/bench.json"),
    "bench-h200": _bench("docs/gpu/2026-11-26-h200/bench.json"),
    "steps-h100": _steps("docs/gpu/2026-11-26-h100/bench.json"),
}


def doc_files(root: Path) -> list[Path]:
    """Every Markdown file whose tables must come from the records."""
    return sorted({p for pattern in DOC_FILES for p in root.glob(pattern)})


def render(text: str, root: Path) -> str:
    """The file with every generated block printed afresh from the records."""

    def fill(m: re.Match) -> str:
        if m.group(2) not in GENERATORS:
            raise ValueError(f"unknown generated block {m.group(2)!r}; known: {sorted(GENERATORS)}")
        return f"{m.group(1)}{GENERATORS[m.group(2)](root).rstrip()}\n{m.group(4)}"

    return BLOCK.sub(fill, text)


def typed_tables(text: str) -> list[str]:
    """Table rows with a digit outside every generated block: numbers someone typed."""
    outside = BLOCK.sub("", text)
    return [
        ln
        for ln in outside.splitlines()
        if ln.startswith("|") and not ln.startswith("|--") and re.search(r"\d", ln)
    ]


def write_figures(root: Path) -> None:
    """The figures the generated blocks sit beside (--check skips them: PNG bytes vary with matplotlib)."""
    from pagdemo.viz.plots import cost_plot

    cost_plot(cost_rows(root)).savefig(root / COST_FIGURE, dpi=100)


def update(root: Path = Path("."), check: bool = False) -> list[str]:
    """Rewrite (or, with check, compare) every generated block; returns the problems found."""
    if not check:
        write_figures(root)
    problems = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        new = render(text, root)
        problems += [
            f"{path}: a table with numbers outside a generated block: {row[:80]}"
            for row in typed_tables(text)
        ]
        if check and new != text:
            problems.append(
                f"{path}: a generated block differs from the records (run `python -m maintainer.docs`)"
            )
        elif not check and new != text:
            path.write_text(new, encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or check) the generated tables; each problem is one line on stderr, exit status 2."""
    p = argparse.ArgumentParser(
        prog="python -m maintainer.docs",
        description="Rewrites each <!-- generated:NAME --> block of README.md, checkpoints/README.md and "
        "docs/**/*.md from the checkpoints' records and the committed JSON files; --check only compares "
        "(the test suite runs it).",
    )
    p.add_argument(
        "--check", action="store_true", help="change nothing; fail if a block differs from the records"
    )
    p.add_argument("--root", default=".", help="the repository (default: the working directory)")
    args = p.parse_args(argv)
    try:
        problems = update(Path(args.root), check=args.check)
    except (ValueError, OSError) as e:  # an unknown block, an unreadable record
        problems = [str(e)]
    if problems:
        print(f"{p.prog}: error: {len(problems)} problem(s): " + " | ".join(problems), file=sys.stderr)
        return 2
    print("every generated table matches the records" if args.check else "generated tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
