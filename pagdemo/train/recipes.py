"""Training recipes by name: batch, learning-rate schedule, lambda schedule, start point.

`paper` is App. C.2 of the paper (and the authors' script); the others fit 15-minute GPU windows (their
history is in docs/training.md). The schedules are pure functions of the step: a resumed run needs no
scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SCHEDULES = ("multistep-50-75", "warmup-cosine")
LAM_SCHEDULES = ("constant", "ramp", "late")


@dataclass(frozen=True)
class Recipe:
    summary: str  # one line for --help
    epochs: int
    batch_size: int  # global batch
    lr: float  # peak learning rate (SGD, momentum 0.9, weight decay 1e-4)
    # "multistep-50-75": x0.1 at 50% and 75%; "warmup-cosine": 1 epoch linear warm-up, cosine to 0
    schedule: str
    nesterov: bool = False
    amp: bool = False  # bf16 autocast and channels_last by default on a GPU
    # "ramp": 0 -> lambda over the first half; "late": 0 for a third, ramped over a third
    lam_schedule: str = "constant"
    needs_init: bool = False  # starts from a trained checkpoint (--init): PAG fine-tuning

    def __post_init__(self) -> None:
        """A misspelled schedule would train silently on another one: refuse it when the recipe is built."""
        for what, name, names in (
            ("schedule", self.schedule, SCHEDULES),
            ("lambda schedule", self.lam_schedule, LAM_SCHEDULES),
        ):
            if name not in names:
                raise ValueError(f"unknown {what} {name!r}; choose one of {list(names)}")

    def settings(self) -> dict:
        """What a checkpoint records of its recipe."""
        return asdict(self)


FAST = {"epochs": 30, "batch_size": 256, "schedule": "warmup-cosine", "nesterov": True, "amp": True}
RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        "App. C.2: SGD lr 0.01, batch 64 (32 on STL-10), 100 epochs, lr x0.1 at 50% and 75%, fp32",
        100,
        64,
        0.01,
        "multistep-50-75",
    ),
    "fast": Recipe(
        "batch 256, lr 0.04 (0.01 scaled with the batch), Nesterov, warm-up + cosine, 30 epochs, bf16",
        lr=0.04,
        **FAST,
    ),
    "fast-lr01": Recipe("as fast, but the paper's lr 0.01 unscaled", lr=0.01, **FAST),
    "short-b64": Recipe(
        "the paper's batch 64 and lr 0.01, warm-up + cosine, 30 epochs, bf16",
        30,
        64,
        0.01,
        "warmup-cosine",
        amp=True,
    ),
    "ramp": Recipe(
        "as fast-lr01, with lambda ramped from 0 over the first half", lr=0.01, **FAST, lam_schedule="ramp"
    ),
    "late": Recipe(
        "as fast-lr01, with lambda 0 for the first third, then ramped to its value over the second",
        lr=0.01,
        **FAST,
        lam_schedule="late",
    ),
    "finetune": Recipe(
        "as fast-lr01, starting from a trained checkpoint (--init, e.g. vanilla): PAG fine-tuning",
        lr=0.01,
        **FAST,
        needs_init=True,
    ),
}


def get_recipe(name: str) -> Recipe:
    """A recipe by name; an unknown name is a user error that lists the choices."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def lr_at(recipe: Recipe, lr: float, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate at a global step of `total`."""
    if recipe.schedule == "multistep-50-75":
        return lr * (0.1 ** ((step >= total * 0.5) + (step >= total * 0.75)))
    warm = steps_per_epoch
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def lam_at(recipe: Recipe, lam: float, step: int, total: int) -> float:
    """The PAG weight at a global step: constant, ramped from 0 over the first half, or off for a third and
    then ramped."""
    if recipe.lam_schedule == "ramp":
        return lam * min(1.0, (step + 1) / max(1, total // 2))
    if recipe.lam_schedule == "late":
        third = max(1, total // 3)
        return lam * min(1.0, max(0.0, (step + 1 - third) / third))
    return lam


def help_text() -> str:
    """Every recipe with its settings, for `pagdemo train --help` (generated, so it cannot drift)."""
    return "; ".join(f"{name}: {r.summary}" for name, r in RECIPES.items())
