"""The page's side of each tab: radii in the units people use (linf in /255), and errors that keep the last
good result and stay next to the control that caused them until the next run.

A page event calls `page_call(handler)`: on success its results plus an empty message for every
error slot; on a failure `gr.skip()` for every result (the last grid, panel or table stays), the
message in the slot of the field the error names (the image, or the settings), and any result
the failure must change (a status line that must not read "done").
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import gradio as gr

from pagdemo.app.errors import guarded, log_refusal, public_message
from pagdemo.threat import picture_eps_max

FIELDS = ("image", "settings")  # the error slots of a tab: under the image, under the run button


def to_unit(norm: str, value: Any) -> Any:
    """The page's eps (linf in /255, l2 as is) in the [0, 1] pixel units the handlers take."""
    try:
        return float(value) / 255 if norm == "linf" else value
    except (TypeError, ValueError):
        return value


def eps_slider_args(norm: str, value: float, image_size: int = 32) -> dict:
    """The eps slider for a threat model: linf in whole /255 steps, l2 in tenths, each up to the app's maximum."""
    top = picture_eps_max(norm, image_size)
    if norm == "linf":
        return {
            "minimum": 1,
            "maximum": round(top * 255),
            "step": 1,
            "value": round(value * 255),
            "label": "eps x 255 (linf: per pixel, 8 means 8/255)",
        }
    return {
        "minimum": 0.1,
        "maximum": top,
        "step": 0.1,
        "value": value,
        "label": "eps (l2: per image, pixels in [0, 1])",
    }


def error_note(message: str) -> str:
    """An error as the page shows it: marked, in plain words, kept until the next run."""
    return f'<div class="error-note">Not run: {html.escape(message)}</div>'


def page_call(
    fn: Callable, n_results: int, on_error: dict[int, Callable[[str], Any]] | None = None
) -> Callable:
    """Wrap a handler (plain or generator) for a page event; see the module docstring."""
    on_error = on_error or {}

    def failure(e: Exception) -> tuple:
        log_refusal(fn, e)
        message, field = public_message(e), getattr(e, "field", "settings")
        results = [on_error[i](message) if i in on_error else gr.skip() for i in range(n_results)]
        return (*results, *[error_note(message) if f == field else "" for f in FIELDS])

    return guarded(fn, lambda out: (*(out if isinstance(out, tuple) else (out,)), "", ""), failure)
