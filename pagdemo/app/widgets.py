"""The page's building blocks: an image input that hands the upload over undecoded, lenient hidden inputs for the
API, eps sliders that follow the norm, error slots, the example gallery and hidden named endpoints."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import gradio as gr
import pandas as pd
from gradio.data_classes import ImageData

from pagdemo.app.errors import api_errors, log_refusal, public_message
from pagdemo.app.handlers import ALL_TARGETS, Lab
from pagdemo.app.inputs import eval_default, example_paths
from pagdemo.app.page import eps_slider_args, error_note
from pagdemo.data.images import MAX_BYTES
from pagdemo.threat import picture_eps


def raw_upload(payload: ImageData | None) -> str | bytes | None:
    """The uploaded file's path (or the bytes of a data: URL), undecoded: pagdemo.data.images decodes it safely."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        payload = ImageData(**payload)
    if payload.url and payload.url.startswith("data:"):
        encoded = payload.url.partition(",")[2]
        if len(encoded) > MAX_BYTES * 4 // 3 + 4:
            raise gr.Error(f"the image is larger than {MAX_BYTES // 2**20} MB", print_exception=False)
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise gr.Error("the data: URL does not hold valid base64", print_exception=False) from None
    return payload.path


def image_input(label: str, visible: bool = True) -> gr.Image:
    """An image input whose upload reaches the handler undecoded.

    gr.Image would open the file with Pillow itself (any format, no size check); replacing
    its preprocess on this instance (not by subclassing, which makes Gradio write a .pyi stub
    into the source tree) leaves decoding to pagdemo.data.images and its clear errors.
    """
    image = gr.Image(
        type="filepath",
        image_mode=None,
        sources=["upload", "webcam", "clipboard"],
        label=label,
        height=260,
        elem_classes="upload",
        visible=visible,
    )
    image.preprocess = raw_upload
    return image


def lenient(component: gr.components.Component) -> gr.components.Component:
    """An API input passed to the handler as sent: the handler checks it and names what is wrong (Gradio's own
    check of a None would fail with an opaque 'upstream' error)."""
    component.preprocess = lambda value: value
    return component


def api_inputs(lab: Lab, *names: str) -> list[gr.components.Component]:
    """Hidden, lenient inputs of an API endpoint, with the API's defaults (eps None: the threat model's)."""
    make = {
        "image": lambda: image_input("image", visible=False),
        "models": lambda: gr.JSON(value=lab.names[:3], visible=False),
        "target": lambda: gr.Textbox(value=ALL_TARGETS, visible=False),
        "norm": lambda: gr.Textbox(value="l2", visible=False),
        "eps": lambda: gr.Textbox(value="", visible=False),
        "steps": lambda: gr.Number(value=20, visible=False),
        "n": lambda: gr.Number(value=64, visible=False),
        "lam": lambda: gr.Number(value=lab.toy_config.lam, visible=False),
        "seed": lambda: gr.Number(value=0, visible=False),
    }
    return [
        make[n]() if n == "image" else lenient(make[n]()) for n in names
    ]  # the image has its own raw preprocess


def eps_for_norm(kind: str, image_size: int):  # noqa: ANN202
    """A norm change resets the eps slider to that norm's units, range and default."""
    default = picture_eps if kind == "picture" else eval_default

    def update(norm: str) -> gr.Slider:
        return gr.Slider(**eps_slider_args(norm, default(norm, image_size), image_size))

    return update


def error_slot(elem_id: str) -> gr.Markdown:
    """Where a run's error stays until the next run."""
    return gr.Markdown("", elem_id=elem_id)


def examples(lab: Lab, image: gr.Image, elem_id: str) -> None:
    """The gallery: the checkpoints' own test images when the app was given their folder, else CIFAR-10's."""
    gr.Examples(
        example_paths(lab.gallery),
        inputs=image,
        examples_per_page=30,
        label=lab.gallery_label,
        elem_id=elem_id,
    )


def preview_page(lab: Lab):  # noqa: ANN202
    """The preview on the page: a bad upload clears the model input and says why under it."""

    def preview(image: Any) -> tuple[Any, str]:
        try:
            return lab.preview(image)
        except Exception as e:  # noqa: BLE001
            log_refusal(lab.preview, e)
            return None, error_note(public_message(e))

    return preview


def placeholder(text: str, columns: list[str]) -> pd.DataFrame:
    """What a result table says before its first run."""
    return pd.DataFrame([[text] + [""] * (len(columns) - 1)], columns=columns)


def hidden_api(fn, inputs: list, outputs: list, api_name: str, **kw) -> None:
    """A named endpoint on hidden inputs: what gradio_client calls (the page has its own, private event)."""
    gr.Button(visible=False).click(api_errors(fn), inputs, outputs, api_name=api_name, **kw)
