"""A number for perceptually aligned gradients (the paper judges PAG by eye, Fig. 1, 4, 5).

PAG score: from each of N test images, a large-eps targeted L2 PGD on the model toward every other class t
(the paper's visualization); an independent robust *judge* classifies the N (C - 1) results, and the score is
the fraction it assigns to t. A model with PAG paints class-t features into the image: score high. A vanilla
model flips its own prediction with imperceptible noise and the judge still sees the source: near 0 (at most
chance, 1/C, for a judge that ignores the image); with the model as its own judge, the attack's success rate
(~1). Beside it, `grad_cosine`: the mean cosine between the model's and the judge's input gradients (of
log-softmax, every class, at the clean images). The judge must not be the model's RIGD teacher, whose
gradients the model was trained to copy (`check_judge` refuses it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import eval_mode, pgd
from pagdemo.eval.accuracy import correct, fraction
from pagdemo.models import class_count
from pagdemo.pag.inputgrads import input_gradients_loop
from pagdemo.threat import strong_step


def _pairs(y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, target class) for every image and every class other than its label."""
    idx = torch.arange(len(y)).repeat_interleave(n_classes)
    t = torch.arange(n_classes).repeat(len(y))
    keep = t != y[idx]
    return idx[keep], t[keep]


def grad_cosine(model: nn.Module, judge: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per image, the cosine between the two models' input gradients of log-softmax, averaged over classes."""
    with eval_mode(model), eval_mode(judge):
        _, gm = input_gradients_loop(model, x, grad_of="logsoftmax", create_graph=False)
        _, gj = input_gradients_loop(judge, x, grad_of="logsoftmax", create_graph=False)
    return F.cosine_similarity(gm.flatten(2), gj.flatten(2), dim=2, eps=1e-12).mean(1)


def pag_score(
    model: nn.Module,
    judge: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "l2",
    steps: int = 100,
    step_size: float | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """The PAG score of `model` as `judge` sees it, on images x in [0, 1] with labels y (module docstring).

    Returns: score, chance (1 / C), attack_success (the model itself says t), judge_keeps_source
    (the judge still says the label), grad_cosine, clean accuracies, and the attack's settings.
    """
    device = torch.device(device)
    model, judge = model.to(device), judge.to(device)
    step_size = strong_step(eps, steps) if step_size is None else step_size
    n_classes = class_count(model)
    idx, t = _pairs(y, n_classes)
    hits = {"score": 0, "attack_success": 0, "judge_keeps_source": 0}
    for i in tqdm(range(0, len(idx), batch_size), desc="pag score", disable=not progress, leave=False):
        b = idx[i : i + batch_size]
        xb, tb, yb = x[b].to(device), t[i : i + batch_size].to(device), y[b].to(device)
        x_adv = pgd(
            model, xb, tb, eps, norm=norm, steps=steps, step_size=step_size, targeted=True, random_init=False
        )
        with torch.no_grad(), eval_mode(model), eval_mode(judge):
            judged, own = judge(x_adv).argmax(1), model(x_adv).argmax(1)
        hits["score"] += int((judged == tb).sum())
        hits["attack_success"] += int((own == tb).sum())
        hits["judge_keeps_source"] += int((judged == yb).sum())
    cos = [grad_cosine(model, judge, xb.to(device)).cpu() for xb in x.split(batch_size)]
    clean_model, clean_judge = [fraction(correct(m, x, y, batch_size, device)) for m in (model, judge)]
    return {
        **{k: v / len(idx) for k, v in hits.items()},
        "chance": 1 / n_classes,
        "grad_cosine": torch.cat(cos).mean().item(),
        "model_clean_acc": clean_model,
        "judge_clean_acc": clean_judge,
        "n_images": len(x),
        "n_pairs": len(idx),
        "norm": norm,
        "eps": eps,
        "steps": steps,
        "step_size": step_size,
    }


def check_judge(checkpoint: str | Path, run: dict, judge: str | Path) -> None:
    """Refuse a judge that is the model itself or the RIGD teacher it was trained to imitate."""
    same = lambda a, b: Path(a).resolve() == Path(b).resolve()  # noqa: E731
    if same(checkpoint, judge):
        raise ValueError(f"judge {judge} is the model itself; its score would be the attack's success rate")
    teacher = run.get("teacher")
    if teacher and (same(teacher, judge) or Path(teacher).name == Path(judge).name):
        raise ValueError(
            f"judge {judge} is the RIGD teacher of {checkpoint}; the model copies its gradients, "
            "so choose an independent robust judge (e.g. the teacher of the other threat model)"
        )


def format_pag_score(s: dict) -> str:
    """One line for the terminal."""
    return (
        f"PAG score {s['score']:.3f} (chance {s['chance']:.3f}; the attack reached its target "
        f"{100 * s['attack_success']:.0f}% of the time; the judge kept the source class "
        f"{100 * s['judge_keeps_source']:.0f}%), "
        f"gradient cosine {s['grad_cosine']:.3f}, L2 eps={s['eps']:.3g}, {s['n_pairs']} pairs"
        + (f", judge {s['judge']}" if "judge" in s else "")
    )
