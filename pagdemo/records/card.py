"""The model card (a checkpoint's README.md), rendered from its records: no number in it is typed."""

from __future__ import annotations

from typing import Any

from pagdemo.records.report import fmt_number, unfinished_verdict

_COMMON = [
    ("dataset", "dataset"),
    ("data_source", "data"),
    ("train_size", "training images"),
    ("image_size", "image size"),
    ("recipe", "recipe"),
    ("recipe_settings", "recipe settings"),
    ("init", "initialized from"),
    ("epochs", "epochs"),
    ("batch_size", "batch size"),
    ("lr", "learning rate"),
    ("schedule", "schedule"),
    ("lam_schedule", "lambda schedule"),
    ("momentum", "momentum"),
    ("weight_decay", "weight decay"),
    ("amp", "autocast"),
    ("seed", "seed"),
    ("device", "device"),
    ("world_size", "processes"),
    ("train_time_s", "training time (s)"),
    ("command", "command"),
    ("commit", "commit"),
    ("date", "finished"),
]


def _settings(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings that shaped this model: an adversarial run's attack, a PAG run's lambda and target."""
    method = run.get("method")
    if method == "adv":
        specific = [
            ("adv_attack", "adversarial attack"),
            ("adv_norm", "threat model"),
            ("adv_eps", "eps"),
            *([("adv_steps", "attack steps")] if run.get("adv_attack") == "pgd" else []),
        ]
    elif method == "vanilla":
        specific = []
    elif (
        method == "import"
    ):  # a model trained elsewhere: where it comes from, how to cite it, under which licence
        return [
            ("method", "method"),
            ("source", "source"),
            ("citation", "citation"),
            ("licence", "licence"),
            ("adv_norm", "threat model"),
            ("adv_eps", "eps"),
            ("dataset", "dataset"),
            ("file", "file"),
            ("file_sha256", "file SHA-256"),
            ("command", "command"),
            ("commit", "commit"),
            ("date", "imported"),
        ]
    else:
        specific = [
            ("lam", "lambda"),
            ("grad_of", "input gradient of"),
            ("pag_impl", "PAG implementation"),
            ("bn_coupling", "BatchNorm in the PAG pass"),
            ("pag_frame", "PAG frame"),
            *([("cm_scaling", "Class Mean scaling")] if method == "cm" else []),
            ("target_info", "target details"),
            ("teacher", "teacher"),
        ]
    return [("method", "method"), *specific, *_COMMON]


def _value(value: Any) -> str:
    """A setting as the card's table shows it: a dict (a recipe's settings) as its fields, not Python's repr."""
    if isinstance(value, dict):
        value = "; ".join(f"{k}: {v}" for k, v in value.items())
    return f"`{value}`"  # one code span: the app's table cells wrap code, not text


def _evaluations(evaluations: list[dict]) -> list[str]:
    """One table row per evaluation, with every setting that produced the number."""
    if not evaluations:
        return ["Not evaluated yet: run `pagdemo eval --checkpoint <this folder> ...`."]
    lines = [
        "| date | data | n | attack | norm | eps | steps | step size | restarts | clean acc | robust acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        rob = ev.get("robust_acc")
        lines.append(
            f"| {ev.get('date', '')} | {ev.get('data', '')} | {ev.get('n', '')} | {ev.get('attack', '')} | "
            f"{ev.get('norm', '')} | {fmt_number(ev.get('eps'))} | {ev.get('steps', '')} | "
            f"{fmt_number(ev.get('step_size'))} | {ev.get('restarts', '')} | {100 * ev['clean_acc']:.2f}% | "
            f"{'' if rob is None else f'{100 * rob:.2f}%'} |"
        )
    return lines


def _audits(i: dict[str, Any]) -> list[str]:
    """Finished audits from metrics.json, then any cut-off audit-<norm>.json."""
    audits = [ev for ev in i["evaluations"] if "verdict" in ev]
    if not (audits or i["unfinished_audits"]):
        return []
    lines = ["", "## Audits", ""]
    lines += [
        f"- {ev.get('date', '')}, {ev.get('norm', '')}: {ev['verdict']}"
        + (
            f"; PAG score {ev['pag_score']:.3f} (judge {ev.get('pag_judge')})"
            if ev.get("pag_score") is not None
            else ""
        )
        for ev in audits
    ]
    lines += [
        f"- {a.get('date', '')}, {norm}: {unfinished_verdict(a)} (`audit-{norm}.json`)"
        for norm, a in i["unfinished_audits"].items()
    ]
    return lines


def render_card(i: dict[str, Any]) -> str:
    """README.md of a checkpoint from `checkpoints.info(folder)`."""
    run = dict(i["run"])
    lines = [
        "---",
        "library_name: pagdemo",
        "tags:",
        "- adversarial-robustness",
        "- perceptually-aligned-gradients",
        f"datasets:\n- {run.get('dataset', 'unknown')}",
        "---",
        "",
        f"# {i['name']}: {i['arch']} "
        + (
            "imported (trained elsewhere)"
            if run.get("method") == "import"
            else f"trained with `{run.get('method', '?')}`"
        ),
        "",
    ]
    done, planned = run.get("epochs_done"), run.get("epochs")
    if (
        done is not None and planned is not None and done < planned
    ):  # a run stopped (or still going) mid-schedule
        run["epochs"] = f"{done} of {planned} (stopped before the schedule ended)"
    run.setdefault("image_size", i.get("image_size"))
    lines += ["| setting | value |", "|---|---|"]
    lines += [
        f"| {label} | {_value(run[k])} |" for k, label in _settings(run) if run.get(k) not in (None, "")
    ]
    if i.get("notes"):  # what a reader must know that no setting says (a cut-short schedule, say)
        lines += ["", "## Notes", "", i["notes"].strip()]
    lines += ["", "## Evaluations", ""] + _evaluations(i["evaluations"]) + _audits(i)
    lines += [
        "",
        "Load it with `pagdemo.records.checkpoints.load_checkpoint(folder)`; inputs are RGB images in [0, 1], NCHW, "
        f"{i.get('image_size') or 32}x{i.get('image_size') or 32}.",
        "",
    ]
    return "\n".join(lines)
