"""The model card (a checkpoint's README.md), rendered from its records: no number in it is typed."""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from pagdemo.records.report import best_record, fmt_number, to_percent, unfinished_verdict
from pagdemo.threat import NORMS, eps_text

TAGS = ["adversarial-robustness", "perceptually-aligned-gradients", "image-classification"]
# what the model-index shows
HUB_ATTACKS = {"pgd-20": "PGD-20", "autoattack-standard": "AutoAttack (standard)"}
# The settings a card lists, in order: what shaped the model (by method), then what every trained run records.
PAG = "lam grad_of pag_impl bn_coupling pag_frame cm_scaling target_info teacher".split()
ADV = "adv_attack adv_norm adv_eps adv_steps".split()
IMPORT = "source citation licence adv_norm adv_eps dataset file file_sha256 command commit date".split()
COMMON = (
    "dataset data_source train_size image_size recipe recipe_settings init epochs batch_size lr schedule "
    "lam_schedule momentum weight_decay amp seed device world_size train_time_s command commit date"
).split()
# a setting's label, where it is not its name with spaces
LABELS = {
    "data_source": "data",
    "train_size": "training images",
    "init": "initialized from",
    "lr": "learning rate",
    "lam_schedule": "lambda schedule",
    "amp": "autocast",
    "world_size": "processes",
    "train_time_s": "training time (s)",
    "date": "finished",
    "adv_attack": "adversarial attack",
    "adv_norm": "threat model",
    "adv_eps": "eps",
    "adv_steps": "attack steps",
    "lam": "lambda",
    "grad_of": "input gradient of",
    "pag_impl": "PAG implementation",
    "bn_coupling": "BatchNorm in the PAG pass",
    "pag_frame": "PAG frame",
    "cm_scaling": "Class Mean scaling",
    "target_info": "target details",
    "file_sha256": "file SHA-256",
}


def _settings(run: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, label) of what shaped this model, then of the run; an import's source, citation, licence."""
    method = run.get("method")
    labels = LABELS | {"date": "imported"} if method == "import" else LABELS
    keys = IMPORT if method == "import" else [*{"adv": ADV, "vanilla": []}.get(method, PAG), *COMMON]
    shown = {"adv_steps": run.get("adv_attack") == "pgd", "cm_scaling": method == "cm"}
    return [(k, labels.get(k, k.replace("_", " "))) for k in ["method", *keys] if shown.get(k, True)]


def _value(value: Any) -> str:
    """A setting as the card shows it: a dict (a recipe's settings) as its fields, not Python's repr."""
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
    for ev in audits:
        score = ev.get("pag_score")
        score = "" if score is None else f"; PAG score {score:.3f} (judge {ev.get('pag_judge')})"
        lines.append(f"- {ev.get('date', '')}, {ev.get('norm', '')}: {ev['verdict']}{score}")
    for norm, a in i["unfinished_audits"].items():
        lines.append(f"- {a.get('date', '')}, {norm}: {unfinished_verdict(a)} (`audit-{norm}.json`)")
    return lines


def _result(dataset: str, ev: dict, what: str, norm: str | None = None) -> EvalResult:
    """A recorded accuracy as the Hub's model-index reads it: in %, the settings and n in name and args."""
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
    """Clean accuracy, PGD-20 and AutoAttack per threat model, at the dataset's radius, on the most images."""
    dataset, evs = str(i["run"].get("dataset", "unknown")), i["evaluations"]
    clean = best_record([ev for ev in evs if ev.get("attack") in HUB_ATTACKS], dataset, None)
    results = [_result(dataset, clean, "clean accuracy")] if clean else []
    for attack, label in HUB_ATTACKS.items():
        for norm in NORMS:
            pool = [e for e in evs if e.get("attack") == attack]
            ev = best_record(pool, dataset, norm, i.get("image_size"))
            results += [_result(dataset, ev, f"{label} robust accuracy", norm)] if ev else []
    return results


def render_card(i: dict[str, Any]) -> str:
    """README.md of a checkpoint from `checkpoints.info(folder)`."""
    run = dict(i["run"])
    method = run.get("method", "?")
    title = "imported (trained elsewhere)" if method == "import" else f"trained with `{method}`"
    done, planned = run.get("epochs_done"), run.get("epochs")
    if done is not None and planned is not None and done < planned:  # stopped (or still going) mid-schedule
        run["epochs"] = f"{done} of {planned} (stopped before the schedule ended)"
    run.setdefault("image_size", i.get("image_size"))
    # the YAML header: what the Hub files the model under, and its recorded results (model-index)
    data = ModelCardData(
        library_name="pagdemo",
        tags=TAGS,
        datasets=[str(i["run"].get("dataset", "unknown"))],
        model_name=i["name"],
        eval_results=model_index(i) or None,
    )
    rows = [f"| {label} | {_value(run[k])} |" for k, label in _settings(run) if run.get(k) not in (None, "")]
    head = f"# {i['name']}: {i['arch']} {title}"
    lines = [f"---\n{data.to_yaml()}\n---", "", head, "", "| setting | value |", "|---|---|", *rows]
    if i.get("notes"):  # what a reader must know that no setting says (a cut-short schedule, say)
        lines += ["", "## Notes", "", i["notes"].strip()]
    lines += ["", "## Evaluations", ""] + _evaluations(i["evaluations"]) + _audits(i)
    side = i.get("image_size") or 32
    load = "Load it with `pagdemo.load(folder)` (or `hf-hub:ORG/NAME`); inputs are RGB images in"
    return "\n".join([*lines, "", f"{load} [0, 1], NCHW, {side}x{side}.", ""])
