"""Threat models and step-size rules: the one home of every radius and PGD step size pagdemo uses.

Radii are in [0, 1] pixel units, linf per pixel, l2 per image. The paper's: linf 0.031 (we use 8/255, the same
threat model within EPS_TOLERANCE), l2 0.5 on CIFAR-10 and 1.5 on STL-10 (96x96); any other image size follows
the same rule: l2 0.5 at 32x32, scaled by side / 32 (so the per-pixel size stays)."""

from __future__ import annotations

NORMS = ("linf", "l2")
LINF_EPS = 8 / 255
EVAL_EPS = {"cifar10": {"linf": LINF_EPS, "l2": 0.5}, "stl10": {"linf": LINF_EPS, "l2": 1.5}}
DATASET_SIDES = {"cifar10": 32, "stl10": 96, "synthetic": 32}  # pixels per side of each built-in dataset
EPS_TOLERANCE = 1e-3  # two radii closer than this are the same threat model (0.031 and 8/255)
FGSM_RS_STEP = 1.25  # FGSM with random start (Wong et al. 2020): one step of 1.25 eps
NFGSM_NOISE = 2.0  # N-FGSM (de Jorge et al. 2022): the step starts from uniform noise in a ball of 2 eps
PICTURE_EPS_AT_32 = {"l2": 4.0, "linf": 16 / 255}  # the PAG picture: large on purpose (l2: 8x eval's)
PICTURE_EPS_MAX_AT_32 = {"l2": 20.0, "linf": 64 / 255}  # the app's limit: l2 20 is ~70% of an image's norm


def check_norm(norm: str) -> None:
    """An unknown threat model is a user error: name it and the choices."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")


def _at_side(eps_at_32: dict[str, float], norm: str, image_size: int | None) -> float:
    """A 32x32 radius at this side: l2 grows with it (per-pixel size kept), linf is per pixel already."""
    check_norm(norm)
    return eps_at_32[norm] * ((image_size or 32) / 32 if norm == "l2" else 1.0)


def eval_eps(norm: str, dataset: str | None = None, image_size: int | None = None) -> float:
    """The evaluation radius: the paper's for CIFAR-10 and STL-10, the same rule for any other image size."""
    check_norm(norm)
    return EVAL_EPS[dataset][norm] if dataset in EVAL_EPS else _at_side(EVAL_EPS["cifar10"], norm, image_size)


def is_eval_eps(eps: float | None, norm: str, dataset: str | None, image_size: int | None = None) -> bool:
    """Whether a recorded radius is the evaluation radius of its dataset."""
    return eps is not None and abs(float(eps) - eval_eps(norm, dataset, image_size)) < EPS_TOLERANCE


def eps_text(eps: float, norm: str) -> str:
    """A radius as people write it: linf in /255."""
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.3g}"


def eval_step(eps: float, steps: int) -> float:
    """The paper's (and TRADES') PGD step, 2 eps / steps: PGD-20 evaluations, the app's attacks."""
    return 2 * eps / steps


def strong_step(eps: float, steps: int) -> float:
    """Madry et al.'s 2.5 eps / steps, which reaches the edge: PGD training and the audit's PGD-100."""
    return 2.5 * eps / steps


def picture_eps(norm: str, image_size: int | None = None) -> float:
    """Default radius of the PAG picture (targeted, large on purpose)."""
    return _at_side(PICTURE_EPS_AT_32, norm, image_size)


def picture_eps_max(norm: str, image_size: int | None = None) -> float:
    """The largest radius the app accepts for a picture."""
    return _at_side(PICTURE_EPS_MAX_AT_32, norm, image_size)


def eps_grid(norm: str, image_size: int | None = None) -> list[float]:
    """Radii of an accuracy-vs-eps curve around the evaluation point: 0, then linf 1..16/255, l2 x1/4..x4."""
    base = eval_eps(norm, image_size=image_size)
    return [0.0] + [base * m for m in ((0.125, 0.25, 0.5, 1, 2) if norm == "linf" else (0.25, 0.5, 1, 2, 4))]
