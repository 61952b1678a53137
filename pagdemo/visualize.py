"""What the app shows, computed here so it can be tested without a browser.

- `pag_grid_steps`: the PAG visualization of Figures 1, 4 and 5 (large-eps targeted PGD toward
  every class, one row per model), streamed as it forms.
- `compare_untargeted` / `render_compare`: one untargeted attack per model, before and after.
- `accuracy_vs_eps`: a robust-accuracy curve on a test subset.
- `robustness_rows` / `robustness_plot`: each checkpoint's recorded evaluations next to the paper.
"""
from __future__ import annotations

import io
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torch import nn  # noqa: E402

from pagdemo.attacks import eval_mode, pgd, pgd_steps  # noqa: E402
from pagdemo.checkpoints import latest_metric, unfinished_verdict  # noqa: E402
from pagdemo.evaluate import robust_accuracy  # noqa: E402
from pagdemo.paper import EPS_TOLERANCE, EVAL_EPS, paper_row  # noqa: E402

INPUT_SIZES = {"cifar10": 32, "stl10": 96}  # pixels per side each dataset's models were trained on
WHITE, BLACK, GREY, RED, GREEN = (255, 255, 255), (20, 20, 20), (110, 110, 110), (200, 30, 30), (20, 130, 40)


def input_size(dataset: str | None) -> int:
    """Side of the square image a checkpoint expects (CIFAR-10 32, STL-10 96)."""
    return INPUT_SIZES.get(str(dataset), 32)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same labels on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


def _label_lines(name: str, width: int) -> list[str]:
    """A row label in at most three lines (long checkpoint names break at hyphens)."""
    lines = textwrap.wrap(name, width) or [""]
    return lines if len(lines) <= 3 else lines[:2] + [lines[2][:width - 3] + "..."]


def _device(model: nn.Module) -> torch.device:
    """Where a model's weights live, so inputs follow them."""
    return next(model.parameters()).device


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, C) of the deployed (eval-mode) model, on the CPU."""
    with eval_mode(model):
        return torch.softmax(model(x.to(_device(model))), dim=1).cpu()


def to_uint8(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(..., 3, h, w) in [0, 1] to (..., h*scale, w*scale, 3) uint8, blown up by pixel repetition.

    Nearest-neighbour on purpose: every pixel the model sees stays visible. One vectorized
    conversion for a whole batch keeps a streamed frame cheap.
    """
    a = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()
    return a.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else a


# ----------------------------------------------------------------------------- PAG grid (Fig. 1, 4, 5)

@dataclass(frozen=True)
class GridFrame:
    """One streamed state of the PAG grid."""

    image: np.ndarray  # (H, W, 3) uint8, the labelled grid
    probs: np.ndarray  # (models, targets): each model's probability of the target, on its own images
    step: int  # PGD steps done so far (0: the clean image)
    steps: int
    images: torch.Tensor  # (models, targets, 3, h, w) the current iterates, in [0, 1], on the CPU


@dataclass(frozen=True)
class GridSpec:
    """Labels of the grid, fixed while PGD runs."""

    names: list[str]  # one per row (model)
    classes: list[str]  # class names of the models
    targets: list[int]  # one per column
    caption: str  # threat model and settings, printed under the grid
    scale: int = 3  # each model pixel becomes scale x scale screen pixels (32 -> 96)


def _draw_grid(spec: GridSpec, x: torch.Tensor, clean_probs: torch.Tensor, cells: torch.Tensor,
               probs: torch.Tensor, step: int, steps: int) -> np.ndarray:
    """Rows = models, columns = [input, target 1, ...]; each cell labelled with p(target).

    `cells` is (models, targets, 3, h, w); pixels are blitted with numpy, text drawn with PIL.
    """
    c, pad, label_w, head_h, foot_h = x.shape[-1] * spec.scale, 6, 170, 24, 20
    rows, cols = cells.shape[0], cells.shape[1] + 1
    margin = 60  # blank right edge: Gradio's download / fullscreen buttons sit over the image's top-right corner
    width, height = label_w + cols * (c + pad) + margin, head_h + rows * (c + foot_h + pad) + 26
    canvas = np.full((height, width, 3), 255, np.uint8)
    pixels = to_uint8(torch.cat([x.expand(rows, 1, *x.shape), cells], dim=1), spec.scale)  # (rows, cols, c, c, 3)
    xs = [label_w + pad + j * (c + pad) for j in range(cols)]
    ys = [head_h + i * (c + foot_h + pad) for i in range(rows)]
    for i in range(rows):
        for j in range(cols):
            canvas[ys[i]:ys[i] + c, xs[j]:xs[j] + c] = pixels[i, j]
    img = Image.fromarray(canvas)
    draw, font, small = ImageDraw.Draw(img), _font(14), _font(12)
    for j, title in enumerate(["input"] + [spec.classes[t] for t in spec.targets]):
        draw.text((xs[j] + c // 2, 4), title, fill=GREY if j == 0 else BLACK, font=font, anchor="ma")
    for i, name in enumerate(spec.names):
        pred = int(clean_probs[i].argmax())
        lines = _label_lines(name, 20)
        top = ys[i] + c // 2 - 9 * len(lines) - 9
        for k, line in enumerate(lines):
            draw.text((pad, top + 18 * k), line, fill=BLACK, font=font)
        draw.text((pad, top + 18 * len(lines) + 2), f"sees: {spec.classes[pred]} {100 * clean_probs[i, pred]:.0f}%",
                  fill=GREY, font=small)
        for j in range(1, cols):
            p = float(probs[i, j - 1])
            draw.text((xs[j] + c // 2, ys[i] + c + 2), f"p={p:.2f}", fill=GREEN if p >= 0.5 else BLACK, font=small,
                      anchor="ma")
    draw.text((pad, height - 20), f"{spec.caption} | step {step}/{steps}", fill=GREY, font=small)
    return np.asarray(img)


def pag_grid_steps(
    models: list[nn.Module],
    x: torch.Tensor,
    spec: GridSpec,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    min_interval: float = 0.5,
) -> Iterator[GridFrame]:
    """Large-eps targeted PGD from one image toward each target, for every model: the PAG test.

    All targets of a model form one batch (x repeated per target, targeted, no random start, so
    the picture is deterministic); the models advance one step each in turn, so every row forms
    together. Yields the clean grid first, then at most one frame per `min_interval` seconds
    (rendering costs a forward pass per model), and always the last step.

    Args:
        x: (3, H, W) image in [0, 1].
        eps: radius in [0, 1] pixel units (l2: per image; linf: per pixel).
        step_size: defaults to 2 * eps / steps, as in `pgd_steps`.
    """
    assert x.dim() == 3, f"expected one (3, H, W) image, got shape {tuple(x.shape)}"
    assert len(models) == len(spec.names), "one name per model"
    batch = x.unsqueeze(0).repeat(len(spec.targets), 1, 1, 1)
    y = torch.tensor(spec.targets)
    clean_probs = torch.cat([probabilities(m, x.unsqueeze(0)) for m in models])
    runs = [pgd_steps(m, batch.to(_device(m)), y.to(_device(m)), eps, norm=norm, steps=steps, step_size=step_size,
                      targeted=True, random_init=False) for m in models]
    current = [batch] * len(models)

    def frame(step: int) -> GridFrame:
        probs = torch.stack([probabilities(m, xa)[torch.arange(len(y)), y] for m, xa in zip(models, current)])
        images = torch.stack([xa.cpu() for xa in current])
        return GridFrame(_draw_grid(spec, x.cpu(), clean_probs, images, probs, step, steps), probs.numpy(), step, steps,
                         images)

    yield frame(0)
    last = time.monotonic()
    for step in range(1, steps + 1):
        current = [next(run) for run in runs]
        if step == steps or time.monotonic() - last >= min_interval:
            yield frame(step)
            last = time.monotonic()


# ----------------------------------------------------------------------------- untargeted compare

def compare_untargeted(models: list[nn.Module], names: list[str], x: torch.Tensor, norm: str, eps: float,
                       steps: int = 20, label: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """One untargeted PGD attack per model on one image: prediction before and after, and the perturbation.

    The attacked label is the true `label` when known, else the model's own clean prediction
    (an uploaded photo has no label). "fooled": right before the attack, wrong after it;
    "already wrong": the model missed the true label on the clean image. PGD uses the paper's
    evaluation settings (random start, step 2*eps/steps), seeded.
    """
    out = []
    for model, name in zip(models, names):
        dev = _device(model)
        p0 = probabilities(model, x.unsqueeze(0))[0]
        y = int(p0.argmax()) if label is None else int(label)
        gen = torch.Generator(device=dev).manual_seed(seed)
        x_adv = pgd(model, x.unsqueeze(0).to(dev), torch.tensor([y], device=dev), eps, norm=norm, steps=steps,
                    generator=gen)[0].cpu()
        p1 = probabilities(model, x_adv.unsqueeze(0))[0]
        delta = x_adv - x.cpu()
        right_before, right_after = int(p0.argmax()) == y, int(p1.argmax()) == y
        out.append({"model": name, "label": y, "pred": int(p0.argmax()), "conf": float(p0.max()),
                    "adv_pred": int(p1.argmax()), "adv_conf": float(p1.max()), "p_label_after": float(p1[y]),
                    "fooled": right_before and not right_after, "already_wrong": not right_before,
                    "l2": float(delta.norm()), "linf": float(delta.abs().max()), "x_adv": x_adv, "delta": delta})
    return out


def amplify(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Map a perturbation to a visible image (grey is zero) and the factor used to stretch it."""
    peak = float(delta.abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + delta * factor).clamp(0, 1), factor


def render_compare(x: torch.Tensor, results: list[dict[str, Any]], classes: list[str], caption: str,
                   scale: int = 4) -> np.ndarray:
    """Rows = models: clean image, attacked image, amplified perturbation, and the verdict in words."""
    c, pad, label_w, text_w, head_h = x.shape[-1] * scale, 8, 150, 330, 24
    width, height = label_w + 3 * (c + pad) + text_w, head_h + len(results) * (c + pad) + 26
    canvas = np.full((height, width, 3), 255, np.uint8)
    factors = []
    for i, r in enumerate(results):
        vis, factor = amplify(r["delta"])
        factors.append(factor)
        y = head_h + i * (c + pad)
        for j, pixels in enumerate(to_uint8(torch.stack([x, r["x_adv"], vis]), scale)):
            canvas[y:y + c, label_w + j * (c + pad):label_w + j * (c + pad) + c] = pixels
    img = Image.fromarray(canvas)
    draw, font, small = ImageDraw.Draw(img), _font(15), _font(13)
    for j, title in enumerate(("clean", "attacked", "perturbation")):
        draw.text((label_w + j * (c + pad) + c // 2, 4), title, fill=GREY, font=font, anchor="ma")
    for i, (r, factor) in enumerate(zip(results, factors)):
        y, tx = head_h + i * (c + pad), label_w + 3 * (c + pad)
        lines = _label_lines(r["model"], 16)
        for k, line in enumerate(lines):
            draw.text((pad, y + c // 2 - 10 * len(lines) + 20 * k), line, fill=BLACK, font=font)
        verdict, colour = (("already wrong before the attack", GREY) if r["already_wrong"] else
                           ("FOOLED", RED) if r["fooled"] else ("not fooled", GREEN))
        lines = [(verdict, colour, font),
                 (f"before: {classes[r['pred']]} {100 * r['conf']:.1f}%", BLACK, small),
                 (f"after:  {classes[r['adv_pred']]} {100 * r['adv_conf']:.1f}%", BLACK, small),
                 (f"p({classes[r['label']]}) after: {100 * r['p_label_after']:.1f}%", GREY, small),
                 (f"|d|2 = {r['l2']:.3f}   |d|inf = {r['linf']:.4f}", BLACK, small),
                 (f"perturbation shown x{factor:.1f}", GREY, small)]
        for k, (text, fill, f) in enumerate(lines):
            draw.text((tx, y + 6 + 20 * k), text, fill=fill, font=f)
    draw.text((pad, height - 20), caption, fill=GREY, font=small)
    return np.asarray(img)


# ----------------------------------------------------------------------------- accuracy against eps

def eps_grid(norm: str) -> list[float]:
    """Radii for the curve: around the paper's evaluation points (linf 8/255, l2 0.5) and beyond."""
    if norm == "linf":
        return [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
    return [0.0, 0.125, 0.25, 0.5, 1.0, 2.0]


def accuracy_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps_list: list[float],
                    steps: int = 10, batch_size: int = 256, seed: int = 0) -> Iterator[tuple[float, float]]:
    """Yield (eps, robust accuracy) for each radius; eps 0 is clean accuracy. PGD: random start, step 2*eps/steps."""
    device = _device(model)
    for eps in eps_list:
        clean, robust = robust_accuracy(model, x, y, None if eps == 0 else norm, eps, steps=steps,
                                        batch_size=batch_size, device=device, seed=seed, progress=False)
        yield eps, clean if robust is None else robust


def curve_plot(curves: dict[str, list[tuple[float, float]]], norm: str, caption: str) -> Figure:
    """Accuracy against eps, one line per model."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for name, points in curves.items():
        eps, acc = zip(*points) if points else ((), ())
        ax.plot([e * 255 if norm == "linf" else e for e in eps], [100 * a for a in acc], marker="o", label=name)
    ax.set(xlabel="eps x 255 (linf)" if norm == "linf" else "eps (l2)", ylabel="accuracy (%)", ylim=(-2, 102),
           title=caption)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- recorded metrics

def best_record(evaluations: list[dict], dataset: str | None, norm: str | None) -> dict | None:
    """The record to show: at the paper's radius, the most samples (a full test set beats a newer spot check)."""
    if norm is None:
        pool = [ev for ev in evaluations if ev.get("clean_acc") is not None]
    else:
        eps = EVAL_EPS.get(str(dataset), EVAL_EPS["cifar10"])[norm]
        pool = [ev for ev in evaluations if ev.get("norm") == norm and ev.get("robust_acc") is not None
                and abs(float(ev.get("eps", -1)) - eps) < EPS_TOLERANCE]
    if not pool:
        return latest_metric(evaluations, norm) if norm is None else None
    top = max(int(ev.get("n") or 0) for ev in pool)
    return [ev for ev in pool if int(ev.get("n") or 0) == top][-1]


def _pct(value: float | None) -> float | None:
    """Fraction to a rounded percentage for tables."""
    return None if value is None else round(100 * value, 2)


def _settings(ev: dict | None) -> str:
    """An evaluation's attack settings in one cell, so a number is never shown without them."""
    if ev is None:
        return "not evaluated"
    start = "random start" if ev.get("random_start") else "no random start"
    return (f"{ev.get('attack', 'pgd')}, eps {float(ev['eps']):.4g}, step {float(ev.get('step_size') or 0):.4g}, "
            f"{ev.get('restarts')} restart(s), {start}, n={ev.get('n')} ({ev.get('data', '?')}, {ev.get('date', '?')})")


def robustness_rows(infos: list[dict]) -> list[dict[str, Any]]:
    """One row per checkpoint: recorded clean / PGD linf / PGD l2 accuracy with n and settings, and the paper's."""
    rows = []
    for i in infos:
        run, evs = i.get("run", {}), i.get("evaluations", [])
        clean, linf, l2 = (best_record(evs, run.get("dataset"), n) for n in (None, "linf", "l2"))
        paper = paper_row(run)
        rows.append({
            "model": i["name"], "method": run.get("method"), "lambda": run.get("lam"), "dataset": run.get("dataset"),
            "clean %": _pct(clean and clean["clean_acc"]), "PGD linf %": _pct(linf and linf["robust_acc"]),
            "PGD l2 %": _pct(l2 and l2["robust_acc"]), "paper clean %": paper and paper[1][0],
            "paper linf %": paper and paper[1][1], "paper l2 %": paper and paper[1][2],
            "n clean": clean and clean.get("n"), "n linf": linf and linf.get("n"), "n l2": l2 and l2.get("n"),
            "linf settings": _settings(linf), "l2 settings": _settings(l2),
            "paper source": paper[0] if paper else "no matching row",
        })
    return rows


def audit_rows(infos: list[dict]) -> list[dict[str, Any]]:
    """One row per checkpoint and threat model: AutoAttack beside PGD-20 on the same subset, the verdict, the PAG score.

    A number that PGD alone reports could be inflated by gradient masking; this row says whether
    a stronger attack and the masking checks agree with it (`pagdemo audit`), or that none ran.
    """
    rows = []
    for i in infos:
        evs = i.get("evaluations", [])
        scored = [ev for ev in evs if ev.get("pag_score") is not None]  # the score's attack is l2 whatever the audit's norm,
        pag = scored[-1] if scored else {}  # so one audit per model measures it and both rows show it
        pag_cols = {"PAG score": None if pag.get("pag_score") is None else round(pag["pag_score"], 3),
                    "gradient cosine": None if pag.get("pag_grad_cosine") is None else round(pag["pag_grad_cosine"], 3),
                    "judge": pag.get("pag_judge")}
        for norm in ("linf", "l2"):
            aa = [ev for ev in evs if ev.get("norm") == norm and str(ev.get("attack", "")).startswith("autoattack")]
            audits = [ev for ev in evs if ev.get("norm") == norm and "verdict" in ev]
            record = i.get("audits", {}).get(norm, {})  # audit-<norm>.json, whose PGD-20 shows where AutoAttack never ran
            own_pgd20 = _pct(record.get("checks", {}).get("more_steps", {}).get("pgd20"))
            if not aa and not audits and record.get("finished") is False:  # cut off: not in metrics.json
                rows.append({"model": i["name"], "norm": norm, "n": record.get("n"), "PGD-20 %": own_pgd20,
                             "verdict": unfinished_verdict(record), **pag_cols, "device": record.get("device"),
                             "date": record.get("date")})
                continue
            if not aa and not audits:
                rows.append({"model": i["name"], "norm": norm, "verdict": "not audited"})
                continue
            a = aa[-1] if aa else {}
            pgd = [ev for ev in evs if ev.get("norm") == norm and ev.get("attack") == "pgd-20"
                   and ev.get("n") == a.get("n") and ev.get("subset_seed") == a.get("subset_seed")] if a else []
            audit = audits[-1] if audits else {}
            pgd20 = (_pct(pgd[-1]["robust_acc"]) if pgd else None) if a else own_pgd20
            rows.append({
                "model": i["name"], "norm": norm, "n": a.get("n") or audit.get("n"),
                "PGD-20 %": pgd20, "AutoAttack %": _pct(a.get("robust_acc")),
                "AutoAttack": a.get("attack"), "verdict": audit.get("verdict", "masking checks not run"), **pag_cols,
                "device": a.get("device") or audit.get("device"),
                "date": audit.get("date") or a.get("date"),
            })
    return rows


def robustness_plot(rows: list[dict[str, Any]]) -> Figure:
    """Grouped bars per checkpoint: our clean / linf / l2 (solid) beside the paper's (hatched)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(rows) + 2), 4.2), layout="constrained")
    metrics = (("clean", "clean %", "paper clean %"), ("PGD-20 linf", "PGD linf %", "paper linf %"),
               ("PGD-20 l2", "PGD l2 %", "paper l2 %"))
    width = 0.13
    for k, (label, ours, theirs) in enumerate(metrics):
        colour = f"C{k}"
        xs = np.arange(len(rows)) + (2 * k - 2.5) * width
        ax.bar(xs, [r[ours] or 0 for r in rows], width, color=colour, label=f"{label} (ours)")
        ax.bar(xs + width, [r[theirs] or 0 for r in rows], width, color="white", edgecolor=colour, hatch="//",
               label=f"{label} (paper)")
    ax.set_xticks(np.arange(len(rows)), [r["model"] for r in rows], rotation=15, fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="Recorded accuracy (metrics.json) vs the paper")
    fig.legend(fontsize=8, ncol=3, loc="outside lower center")
    ax.grid(axis="y", alpha=0.3)
    return fig


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a matplotlib figure to an RGB array and free it (the app makes many)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
