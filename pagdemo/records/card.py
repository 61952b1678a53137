"""The model card (a checkpoint's README.md), rendered from its records: no number in it is typed."""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from pagdemo.records.report import best_record, fmt_number, to_percent, unfinished_verdict
from pagdemo.threat import NORMS, eps_text

TAGS = ["adversarial-robustness", "perceptually-aligned-gradients", "image-classification"]
HUB_ATTACKS = {
    "pgd-20": "PGD-20",
    "autoattack-standard": "AutoAttack (standard)",
}  # what the model-index shows

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


def _result(dataset: str, ev: dict, what: str, norm: str | None = None) -> EvalResult:
    """One recorded accuracy as the Hub's model-index reads it: in %, the settings and n in its name and args."""
    subset = f", {ev['n']} test images" if ev.get("limit") else ""  # no limit: the full test set
    threat = {"norm": norm, "eps": ev["eps"], "steps": ev.get("steps"), "restarts": ev.get("restarts")}
    return EvalResult(
        task_type="image-classification",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split="test",
        metric_type="robust_accuracy" if norm else "accuracy",
        metric_value=to_percent(ev["robust_acc" if norm else "clean_acc"]),
        metric_name=f"{what} (%)" + (f", {norm} eps={eps_text(ev['eps'], norm)}" if norm else "") + subset,
        metric_config=norm,
        metric_args={"n": ev.get("n"), **(threat if norm else {})},
    )


def model_index(i: dict[str, Any]) -> list[EvalResult]:
    """Clean accuracy, then PGD-20 and AutoAttack per threat model, at the dataset's radius, on the most images."""
    dataset, evs = str(i["run"].get("dataset", "unknown")), i["evaluations"]
    clean = best_record([ev for ev in evs if ev.get("attack") in HUB_ATTACKS], dataset, None)
    results = [_result(dataset, clean, "clean accuracy")] if clean else []
    for attack, label in HUB_ATTACKS.items():
        for norm in NORMS:
            pool = [e for e in evs if e.get("attack") == attack]
            ev = best_record(pool, dataset, norm, i.get("image_size"))
            results += [_result(dataset, ev, f"{label} robust accuracy", norm)] if ev else []
    return results


def front_matter(i: dict[str, Any]) -> str:
    """The card's YAML header: what the Hub files the model under, and its recorded results (model-index)."""
    data = ModelCardData(
        library_name="pagdemo",
        tags=TAGS,
        datasets=[str(i["run"].get("dataset", "unknown"))],
        model_name=i["name"],
        eval_results=model_index(i) or None,
    )
    return f"---\n{data.to_yaml()}\n---"


def render_card(i: dict[str, Any]) -> str:
    """README.md of a checkpoint from `checkpoints.info(folder)`."""
    run = dict(i["run"])
    lines = [
        front_matter(i),
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
