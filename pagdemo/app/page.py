"""What the page says and how it looks: its texts and style, radii in the units people use (linf in /255),
and an error as it stands beside the control that caused it."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from pagdemo.paper import TABLE_NAMES, TABLES
from pagdemo.records.report import paper_table
from pagdemo.threat import eval_eps, picture_eps_max

# images the model sees are shown pixel for pixel; the grid at its own size (scroll sideways when wide)
CSS = """
#model-input img, [id^=examples-] img { image-rendering: pixelated; }
.upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#pag-grid img, #compare-panel img { width: auto !important; max-width: none !important;
  image-rendering: pixelated; }
#pag-grid .image-container, #compare-panel .image-container { overflow-x: auto; }
#pag-grid .image-container > button, #compare-panel .image-container > button { justify-content: flex-start;
  width: max-content; min-width: 100%; }
.error-note { color: #b42318; background: #fef3f2; border: 1px solid #fda29b; border-radius: 6px;
  padding: 6px 10px; }
.card table, .card th, .card td { white-space: nowrap; }
.card table { display: block; overflow-x: auto; }
"""
INTRO = """# Perceptually Aligned Gradients: see them, attack them
Ganz, Kawar & Elad, *Do Perceptually Aligned Gradients Imply Adversarial Robustness?* (ICML 2023). A
classifier has **perceptually aligned gradients** when a large-eps targeted attack paints visible features of
the target class into an image; a vanilla classifier only adds noise. The paper trains classifiers to have
such gradients, and finds that they become robust."""
GRID_LEGEND = """**Reading the grid.** Rows are models, the first column is the input, then one column per
target class. Under each cell, **p** is that model's probability of the column's class for the attacked image:
**green** once it reaches 0.5 (the attack got its target), black below. Beside each model's name, **sees** is
what the model predicts for the clean input, which can differ from the true class: that model is wrong about
this image. Robust and PAG models paint the target's features; a vanilla model adds noise. The grid is shown
at its own size: scroll sideways, or use the full-screen button."""
# the page's own small updates
PAGE = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
TO_UNIT = "(norm, eps) => norm === 'linf' ? eps / 255 : eps"  # the eps slider's linf /255 in pixel units
LINF_LABEL, L2_LABEL = "eps x 255 (linf: per pixel, 8 means 8/255)", "eps (l2: per image, pixels in [0, 1])"


def eps_slider_args(norm: str, value: float, image_size: int = 32) -> dict:
    """The eps slider for a threat model: linf in whole /255 steps, l2 in tenths, up to the app's maximum."""
    top = picture_eps_max(norm, image_size)
    if norm == "linf":
        return dict(minimum=1, maximum=round(top * 255), step=1, value=round(value * 255), label=LINF_LABEL)
    return dict(minimum=0.1, maximum=top, step=0.1, value=value, label=L2_LABEL)


def error_note(message: str) -> str:
    """An error as the page shows it: marked, in plain words, kept until the next run."""
    return f'<div class="error-note">Not run: {html.escape(message)}</div>'


def paper_tables() -> str:
    """The paper's Tables 1 and 2 as Markdown."""
    head = "**Paper, {}** (ResNet-18, PGD-20; linf eps 0.031, l2 eps {:g})\n\n"
    return "\n\n".join(head.format(TABLE_NAMES[d], eval_eps("l2", d)) + paper_table(d) for d in TABLES)


def image_input(label: str, elem_id: str) -> tuple[gr.Image, gr.Markdown]:
    """An image input (its upload reaches the handler undecoded) and the slot for its errors under it."""
    sources = ["upload", "webcam", "clipboard"]
    image = gr.Image(type="filepath", sources=sources, label=label, height=260, elem_classes="upload")
    return image, gr.Markdown(elem_id=elem_id)


def eps_input(norm: gr.Radio, default: Callable[[str, int], float], size: int, **slider: str) -> gr.Number:
    """The eps slider in the units people use (linf in /255), following the norm, and the endpoint's eps in
    pixel units (None: the norm's default, which the slider shows), set from the slider in the browser."""
    shown = gr.Slider(**eps_slider_args("l2", default("l2", size), size), **slider)
    hidden = "eps (pixel units in [0, 1]; none: the threat model's default)"
    eps = gr.Number(None, label=hidden, visible=False)

    def reset(norm: str) -> tuple[gr.Slider, None]:
        return gr.Slider(**eps_slider_args(norm, default(norm, size), size)), None

    norm.change(reset, norm, [shown, eps], **PAGE)
    shown.change(None, [norm, shown], eps, js=TO_UNIT, api_visibility="private")
    return eps


def examples(paths: list[str], label: str, image: gr.Image, elem_id: str) -> None:
    """The gallery: the checkpoints' own test images when the app was given their folder, else CIFAR-10's."""
    gr.Examples(paths, inputs=image, examples_per_page=30, label=label, elem_id=elem_id)


def picture(label: str, elem_id: str, value: Any = None, **kw: Any) -> gr.Image:
    """A picture the app made, as PNG."""
    return gr.Image(value, label=label, format="png", interactive=False, elem_id=elem_id, **kw)


def results(label: str, columns: list[str], waiting: str, **kw: Any) -> gr.Dataframe:
    """A result table, which says what will appear in it until its first run."""
    empty = pd.DataFrame([[waiting] + [""] * (len(columns) - 1)], columns=columns)
    return gr.Dataframe(empty, label=label, interactive=False, **kw)
