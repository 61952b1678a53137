"""Attack & compare: one untargeted PGD attack per model on one image, before and after, side by side."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from pagdemo.attacks import pgd
from pagdemo.viz.draw import (
    BLACK,
    GREEN,
    GREY,
    RED,
    label_lines,
    load_font,
    model_device,
    probabilities,
    to_uint8,
)


def compare_untargeted(
    models: list[nn.Module],
    names: list[str],
    x: torch.Tensor,
    norm: str,
    eps: float,
    steps: int = 20,
    label: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One untargeted PGD attack per model on one image: prediction before and after, and the perturbation.

    The attacked label is the true `label` when known, else the model's clean prediction (an uploaded photo
    has no label). "fooled": right before the attack, wrong after it; "already wrong": wrong on the clean
    image. PGD is the paper's evaluation (random start, step 2*eps/steps), seeded.
    """
    out = []
    for model, name in zip(models, names):
        dev = model_device(model)
        p0 = probabilities(model, x.unsqueeze(0))[0]
        y = int(p0.argmax()) if label is None else int(label)
        gen = torch.Generator(device=dev).manual_seed(seed)
        xb, yb = x.unsqueeze(0).to(dev), torch.tensor([y], device=dev)
        x_adv = pgd(model, xb, yb, eps, norm=norm, steps=steps, generator=gen)[0].cpu()
        p1 = probabilities(model, x_adv.unsqueeze(0))[0]
        delta = x_adv - x.cpu()
        right_before, right_after = int(p0.argmax()) == y, int(p1.argmax()) == y
        out.append(
            {
                "model": name,
                "label": y,
                "pred": int(p0.argmax()),
                "conf": float(p0.max()),
                "adv_pred": int(p1.argmax()),
                "adv_conf": float(p1.max()),
                "p_label_after": float(p1[y]),
                "fooled": right_before and not right_after,
                "already_wrong": not right_before,
                "l2": float(delta.norm()),
                "linf": float(delta.abs().max()),
                "x_adv": x_adv,
                "delta": delta,
            }
        )
    return out


def amplify(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Map a perturbation to a visible image (grey is zero) and the factor used to stretch it."""
    peak = float(delta.abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + delta * factor).clamp(0, 1), factor


def render_compare(
    x: torch.Tensor, results: list[dict[str, Any]], classes: list[str], caption: str, scale: int = 4
) -> np.ndarray:
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
            canvas[y : y + c, label_w + j * (c + pad) : label_w + j * (c + pad) + c] = pixels
    img = Image.fromarray(canvas)
    draw, font, small = ImageDraw.Draw(img), load_font(15), load_font(13)
    for j, title in enumerate(("clean", "attacked", "perturbation")):
        draw.text((label_w + j * (c + pad) + c // 2, 4), title, fill=GREY, font=font, anchor="ma")
    for i, (r, factor) in enumerate(zip(results, factors)):
        y, tx = head_h + i * (c + pad), label_w + 3 * (c + pad)
        lines = label_lines(r["model"], 16)
        for k, line in enumerate(lines):
            draw.text((pad, y + c // 2 - 10 * len(lines) + 20 * k), line, fill=BLACK, font=font)
        verdict, colour = ("FOOLED", RED) if r["fooled"] else ("not fooled", GREEN)
        if r["already_wrong"]:
            verdict, colour = "already wrong before the attack", GREY
        lines = [
            (verdict, colour, font),
            (f"before: {classes[r['pred']]} {100 * r['conf']:.1f}%", BLACK, small),
            (f"after:  {classes[r['adv_pred']]} {100 * r['adv_conf']:.1f}%", BLACK, small),
            (f"p({classes[r['label']]}) after: {100 * r['p_label_after']:.1f}%", GREY, small),
            (f"|d|2 = {r['l2']:.3f}   |d|inf = {r['linf']:.4f}", BLACK, small),
            (f"perturbation shown x{factor:.1f}", GREY, small),
        ]
        for k, (text, fill, f) in enumerate(lines):
            draw.text((tx, y + 6 + 20 * k), text, fill=fill, font=f)
    draw.text((pad, height - 20), caption, fill=GREY, font=small)
    return np.asarray(img)
