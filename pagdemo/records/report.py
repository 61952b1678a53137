"""Which recorded number to show, and how, in the app's tables, the model cards and (maintainer/docs.py) the
README's: read from records (`checkpoints.info` dicts, metrics.json lines, audit reports), never a model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pagdemo.methods import display_rank, paper_row
from pagdemo.paper import TABLES
from pagdemo.records.files import read_json
from pagdemo.threat import is_eval_eps


def display_order(info: dict) -> tuple[int, int, str]:
    """Vanilla first, then the PAG targets and RIGD in the paper's order, then the adversarial teachers."""
    run = info.get("run", {})
    return display_rank(run.get("method")), {"linf": 0, "l2": 1}.get(run.get("adv_norm"), 2), info["name"]


_DATA_PATH = re.compile(
    r"(?<=[(`])[^()`|]*?\s\(((?:npz|cifar-10-batches-py|stl10_binary|image folder)[^()]*)\)"
)


def data_label(text: str) -> str:
    """Readers need the data's format, not another machine's path: "(x/cifar10 (npz), n)" -> "(npz, n)"."""
    return _DATA_PATH.sub(r"\1", text)


def fmt_number(value: Any) -> str:
    """Radii like 8/255 print as 0.03137, not 0.03137254901960784."""
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def table_cell(value: object, digits: int = 2) -> str:
    """A number as the docs' tables print it; blank when missing."""
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_percent(fraction: float | None) -> float | None:
    """A fraction (0.4636) as the percentage tables show (46.36), rounded to 2 decimals."""
    return None if fraction is None else round(100 * fraction, 2)


def paper_table(dataset: str) -> str:
    """The paper's table for a dataset (Table 1: CIFAR-10, Table 2: STL-10) in Markdown, for the page."""
    lines = ["| method | clean % | linf % | l2 % |", "|---|---|---|---|"]
    lines += [f"| {m} | {c:.2f} | {li:.2f} | {l2:.2f} |" for m, (c, li, l2) in TABLES[dataset].items()]
    return "\n".join(lines)


def best_record(
    evaluations: list[dict], dataset: str | None, norm: str | None, image_size: int | None = None
) -> dict | None:
    """The record to show: at the evaluation radius, the most samples (a full test set beats a spot check)."""
    if norm is None:
        pool = [ev for ev in evaluations if ev.get("clean_acc") is not None]
        if not pool:
            return next((ev for ev in reversed(evaluations) if "clean_acc" in ev), None)
    else:
        pool = [ev for ev in evaluations if ev.get("norm") == norm and ev.get("robust_acc") is not None]
        pool = [ev for ev in pool if is_eval_eps(ev.get("eps"), norm, dataset, image_size)]
    top = max((int(ev.get("n") or 0) for ev in pool), default=None)
    return next((ev for ev in reversed(pool) if int(ev.get("n") or 0) == top), None)


def settings_text(ev: dict | None) -> str:
    """An evaluation's attack settings in one cell, so a number is never shown without them."""
    if ev is None:
        return "not evaluated"
    start = "random start" if ev.get("random_start") else "no random start"
    return (
        f"{ev.get('attack', 'pgd')}, eps {float(ev['eps']):.4g}, step {float(ev.get('step_size') or 0):.4g}, "
        f"{ev.get('restarts')} restart(s), {start}, n={ev.get('n')} "
        f"({ev.get('data', '?')}, {ev.get('date', '?')})"
    )


def teacher_norm(run: dict) -> str | None:
    """A RIGD run's teacher's threat model (it picks the paper's row): its config.json, else its name."""
    teacher = run.get("teacher")
    if not teacher:
        return None
    try:
        norm = (read_json(Path(teacher) / "config.json") or {}).get("run", {}).get("adv_norm")
    except (OSError, ValueError):  # an unreadable teacher record: its name still says
        norm = None
    if norm in ("linf", "l2"):
        return norm
    name = Path(str(teacher)).name.lower()
    return "linf" if "linf" in name else "l2" if "l2" in name else None


def robustness_rows(infos: list[dict]) -> list[dict[str, Any]]:
    """Per checkpoint: recorded clean / PGD linf / l2 accuracy with n and settings, and the paper's."""
    rows = []
    for i in infos:
        run, evs = i.get("run", {}), i.get("evaluations", [])
        clean, linf, l2 = (
            best_record(evs, run.get("dataset"), n, i.get("image_size")) for n in (None, "linf", "l2")
        )
        paper = paper_row(run, teacher_norm(run))
        rows.append(
            {
                "model": i["name"],
                "method": run.get("method"),
                "lambda": run.get("lam"),
                "dataset": run.get("dataset"),
                "clean %": to_percent(clean and clean["clean_acc"]),
                "PGD linf %": to_percent(linf and linf["robust_acc"]),
                "PGD l2 %": to_percent(l2 and l2["robust_acc"]),
                "paper clean %": paper and paper[1][0],
                "paper linf %": paper and paper[1][1],
                "paper l2 %": paper and paper[1][2],
                "n clean": clean and clean.get("n"),
                "n linf": linf and linf.get("n"),
                "n l2": l2 and l2.get("n"),
                "linf settings": settings_text(linf),
                "l2 settings": settings_text(l2),
                "paper source": paper[0] if paper else "no matching row",
            }
        )
    return rows


def unfinished_verdict(audit: dict[str, Any]) -> str:
    """What a cut-off audit-<norm>.json can claim: the checks it finished, and what it never ran."""
    text = f"unfinished ({', '.join(audit.get('not_run_yet', []))} not run)"
    text += f"; checks so far: {audit.get('verdict')}"
    so_far = audit.get("autoattack_so_far", {})
    done = [k for k in so_far if k != "clean"]
    if done:  # AutoAttack only lowers accuracy attack by attack, so a cut-off run still bounds it from above
        text += f"; AutoAttack cut off after {done[-1]}: {100 * so_far[done[-1]]:.1f}% (an upper bound)"
    return text


def _audit_row(i: dict, norm: str) -> dict[str, Any]:
    """One checkpoint and threat model: AutoAttack beside PGD-20 on one subset, or what an audit got to."""
    evs = [ev for ev in i.get("evaluations", []) if ev.get("norm") == norm]
    aa = [ev for ev in evs if str(ev.get("attack", "")).startswith("autoattack")]
    audits = [ev for ev in evs if "verdict" in ev]
    record = i.get("audits", {}).get(norm, {})  # audit-<norm>.json
    if not aa and not audits:
        if record.get("finished") is not False:
            return {"model": i["name"], "norm": norm, "verdict": "not audited"}
        cut = {k: record.get(k) for k in ("n", "device", "date")}  # cut off, so not in metrics.json
        audits = [cut | {"verdict": unfinished_verdict(record)}]
    a, audit = (aa or [{}])[-1], audits[-1] if audits else {}
    # PGD-20: the audit's own where no AutoAttack ran; beside AutoAttack, only a line on AutoAttack's subset
    pgd = record.get("checks", {}).get("more_steps", {}).get("pgd20")
    if a:
        same = [ev for ev in evs if ev.get("attack") == "pgd-20" and ev.get("n") == a.get("n")]
        same = [ev["robust_acc"] for ev in same if ev.get("subset_seed") == a.get("subset_seed")]
        pgd = same[-1] if same else None
    # the model's latest PAG score: its attack is l2 whatever the audit's norm, so both rows show it
    pag = ([ev for ev in i.get("evaluations", []) if ev.get("pag_score") is not None] or [{}])[-1]
    cosine = pag.get("pag_grad_cosine")
    return {
        "model": i["name"],
        "norm": norm,
        "n": a.get("n") or audit.get("n"),
        "PGD-20 %": to_percent(pgd),
        "AutoAttack %": to_percent(a.get("robust_acc")),
        "AutoAttack": a.get("attack"),
        "verdict": audit.get("verdict", "masking checks not run"),
        "PAG score": round(pag["pag_score"], 3) if pag else None,
        "gradient cosine": None if cosine is None else round(cosine, 3),
        "judge": pag.get("pag_judge"),
        "device": a.get("device") or audit.get("device"),
        "date": audit.get("date") or a.get("date"),
    }


def audit_rows(infos: list[dict]) -> list[dict[str, Any]]:
    """Per checkpoint and norm, whether `pagdemo audit` agrees with PGD alone (masking could inflate it)."""
    return [_audit_row(i, norm) for i in infos for norm in ("linf", "l2")]
