"""The page: one tab per experiment, each wired to one `Lab` handler with a named API endpoint.

Endpoints (see the README for a gradio_client example):
    /preview(image) -> (model_input, notes)
    /pag_grid(image, models, target, norm, eps, steps) -> (grid, probabilities, status)   [streams]
    /compare(image, models, norm, eps, steps) -> (panel, table)
    /robustness() -> (table, settings, plot, audits)
    /eps_curve(models, norm, n, steps) -> (plot, table)
    /toy(lam, seed) -> (figure, metrics)
    /model_card(name) -> markdown
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

import gradio as gr
from gradio.data_classes import ImageData

from app.handlers import ALL_TARGETS, EPS_MAX, EVAL_EPS, EXAMPLES_DIR, GRID_EPS, Lab, example_paths
from pagdemo.images import MAX_BYTES
from pagdemo.paper import TABLES, TABLE_NAMES
from pagdemo.toy import ToyConfig

MAX_UPLOAD = "10mb"  # uploads beyond this are refused by Gradio before any handler runs
CSS = """
.pixels img, [id^=examples-] img { image-rendering: pixelated; }
.upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""  # 32x32 images are shown enlarged pixel for pixel, never smoothed
COMPUTE = "compute"  # one concurrency group for everything that runs a model: attacks, curves, toy training
INTRO = """# Perceptually Aligned Gradients: see them, attack them
Ganz, Kawar & Elad, *Do Perceptually Aligned Gradients Imply Adversarial Robustness?* (ICML 2023).
A classifier has **perceptually aligned gradients** when a large-eps targeted attack paints visible features of the
target class into an image; a vanilla classifier only adds noise. The paper trains classifiers to have such gradients,
and finds that they become robust."""


def _raw_upload(payload: ImageData | None) -> str | bytes | None:
    """The uploaded file's path (or the bytes of a data: URL), undecoded: pagdemo.images decodes it safely."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):
        encoded = payload.url.partition(",")[2]
        if len(encoded) > MAX_BYTES * 4 // 3 + 4:
            raise gr.Error(f"the image is larger than {MAX_BYTES // 2**20} MB")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise gr.Error("the data: URL does not hold valid base64") from None
    return payload.path


def _eps_slider(value: float, label: str, elem_id: str) -> gr.Slider:
    """eps in [0, 1] pixel units, starting with l2's range; a norm change updates it (see _eps_for_norm).

    Start on l2, the wider range: the API validates against the initial range, so an API call
    with either norm passes the slider and meets the handler's norm-specific check.
    """
    return gr.Slider(0.0, EPS_MAX["l2"], value=value, step=0.1, label=label, elem_id=elem_id,
                     info="radius in [0, 1] pixel units: l2 per image, linf per pixel (8/255 = 0.031)")


def _eps_for_norm(defaults: dict[str, float]):  # noqa: ANN202
    """A norm change resets the eps slider to that norm's range and default."""
    def update(norm: str) -> gr.Slider:
        return gr.Slider(maximum=EPS_MAX[norm], value=defaults[norm], step=0.1 if norm == "l2" else 1 / 255)
    return update


def _image_input(label: str) -> gr.Image:
    """An image input whose upload reaches the handler undecoded.

    gr.Image would open the file with Pillow itself (any format, no size check); replacing
    its preprocess on this instance (not by subclassing, which makes Gradio write a .pyi stub
    into the source tree) leaves decoding to pagdemo.images and its clear errors.
    """
    image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"], label=label,
                     height=260, elem_classes="upload")
    image.preprocess = _raw_upload
    return image


def _examples(image: gr.Image, elem_id: str) -> None:
    gr.Examples(example_paths(), inputs=image, examples_per_page=30, label="CIFAR-10 test images (3 per class)",
                elem_id=elem_id)


def _explorer_tab(lab: Lab) -> None:
    """PAG explorer: the paper's Figures 1, 4 and 5 for any image, streamed."""
    with gr.Row():
        with gr.Column(scale=2):
            image = _image_input("Your image (upload, webcam or paste)")
            with gr.Row():
                seen = gr.Image(label="model input", format="png", height=160, width=160, interactive=False,
                                elem_id="model-input", elem_classes="pixels")
                notes = gr.Markdown(label="notes")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models (one row each)")
            target = gr.Dropdown([ALL_TARGETS] + lab.classes, value=ALL_TARGETS, label="Target class (one column each)")
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                steps = gr.Slider(1, 100, value=20, step=1, precision=0, label="PGD steps", info="step size 2*eps/steps")
            eps = _eps_slider(GRID_EPS["l2"], "eps (large on purpose: this is the PAG test, not an evaluation)",
                              "pag-eps")
            run = gr.Button("Run targeted PGD", variant="primary", elem_id="run-pag")
    _examples(image, "examples-pag")
    gr.Markdown("Rows: models; first column: the input; then one column per target class, with the model's "
                "probability for that target under each cell. Robust and PAG models paint the target's features; "
                "a vanilla model adds noise.")
    status = gr.Markdown(label="status", elem_id="pag-status")
    grid = gr.Image(label="PAG grid", format="png", interactive=False, buttons=["download", "fullscreen"],
                    elem_id="pag-grid")
    probs = gr.Dataframe(headers=["model"] + lab.classes, label="probabilities", interactive=False)
    image.change(lab.preview, image, [seen, notes], api_name="preview", concurrency_limit=4, concurrency_id="light")
    norm.change(_eps_for_norm(GRID_EPS), norm, eps, api_visibility="private", queue=False)
    run.click(lab.pag_grid, [image, models, target, norm, eps, steps], [grid, probs, status], api_name="pag_grid",
              concurrency_id=COMPUTE, time_limit=600)


def _compare_tab(lab: Lab) -> None:
    """Attack & compare: one untargeted attack per model, side by side."""
    with gr.Row():
        with gr.Column(scale=2):
            image = _image_input("Image to attack")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                steps = gr.Slider(1, 100, value=20, step=1, precision=0, label="PGD steps")
            eps = _eps_slider(EVAL_EPS["l2"], "eps (defaults: the paper's evaluation radii)", "compare-eps")
            run = gr.Button("Attack", variant="primary", elem_id="run-compare")
    _examples(image, "examples-compare")
    panel = gr.Image(label="comparison", format="png", interactive=False, buttons=["download", "fullscreen"],
                     elem_id="compare-panel")
    table = gr.Dataframe(headers=["model", "before", "after", "fooled"], label="predictions", interactive=False)
    norm.change(_eps_for_norm(EVAL_EPS), norm, eps, api_visibility="private", queue=False)
    run.click(lab.compare, [image, models, norm, eps, steps], [panel, table], api_name="compare",
              concurrency_id=COMPUTE, time_limit=600)


def _paper_tables() -> str:
    """The paper's Tables 1 and 2 as Markdown."""
    out = []
    for dataset, rows in TABLES.items():
        out += [f"**Paper, {TABLE_NAMES[dataset]}** (ResNet-18, PGD-20; linf eps 0.031, l2 eps "
                f"{0.5 if dataset == 'cifar10' else 1.5})", "", "| method | clean % | linf % | l2 % |", "|---|---|---|---|"]
        out += [f"| {name} | {c:.2f} | {li:.2f} | {l2:.2f} |" for name, (c, li, l2) in rows.items()] + [""]
    return "\n".join(out)


def _robustness_tab(lab: Lab) -> None:
    """Robustness: recorded numbers against the paper's, and a live accuracy-vs-eps curve."""
    gr.Markdown("Recorded evaluations from each checkpoint's `metrics.json` (`pagdemo eval`): for each threat model, "
                "the record at the paper's radius with the most test images.")
    refresh = gr.Button("Reload recorded metrics", elem_id="reload-metrics")
    table_now, settings_now, plot_now, audits_now = lab.robustness() if lab.infos else (None, None, None, None)
    table = gr.Dataframe(table_now, label="recorded accuracy", interactive=False, wrap=True)
    settings = gr.Dataframe(settings_now, label="evaluation settings", interactive=False, wrap=True,
                            column_widths=["16%", "32%", "32%", "20%"])
    plot = gr.Image(plot_now, label="recorded accuracy plot", format="png", interactive=False, elem_id="recorded-plot")
    audits = gr.Dataframe(audits_now, label="is it real? AutoAttack vs PGD-20 on the same subset, masking verdict, "
                          "PAG score (pagdemo audit)", interactive=False, wrap=True)
    with gr.Accordion("The paper's numbers", open=False):
        gr.Markdown(_paper_tables())
    gr.Markdown("### Accuracy against eps, computed now on a small test subset (cached per setting)")
    with gr.Row():
        models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
        norm = gr.Radio(["linf", "l2"], value="linf", label="Threat model")
        n = gr.Slider(16, 512, value=64, step=16, precision=0, label="Test images")
        steps = gr.Slider(1, 50, value=10, step=1, precision=0, label="PGD steps")
    go = gr.Button("Compute curve", variant="primary", elem_id="run-curve")
    curve = gr.Image(label="accuracy vs eps", format="png", interactive=False, elem_id="curve-plot")
    points = gr.Dataframe(headers=["eps"] + lab.names[:3], label="accuracy table", interactive=False)
    refresh.click(lab.robustness, None, [table, settings, plot, audits], api_name="robustness", concurrency_limit=4,
                  concurrency_id="light")
    go.click(lab.eps_curve, [models, norm, n, steps], [curve, points], api_name="eps_curve", concurrency_id=COMPUTE,
             time_limit=1800)


def _toy_tab(lab: Lab) -> None:
    """Toy: the 2-D experiment of Sec. 5.1 (Figure 3), vanilla vs PAG."""
    gr.Markdown("Two classes on the line x2 = 2 x1, three modes each; a 2-32-2 MLP trained with cross-entropy (left) "
                "and with the PAG loss, Nearest Neighbor target (right). The dashed circle is the L2 PGD-10 radius "
                "(eps 15). Each new (lambda, seed) trains both models first (100 epochs each, about 30 s on 2 CPU "
                "cores); a (lambda, seed) seen before is redrawn from memory.")
    with gr.Row():
        lam = gr.Slider(0.0, 4.0, value=lab.toy_config.lam, step=0.05, label="PAG lambda")
        seed = gr.Slider(0, 9, value=0, step=1, precision=0, label="Seed")
        go = gr.Button("Train and draw", variant="primary", elem_id="run-toy")
    saved, caption = lab.toy_precomputed()
    gr.Markdown(caption)
    figure = gr.Image(saved, label="decision boundaries", format="png", interactive=False, elem_id="toy-figure")
    metrics = gr.Dataframe(headers=["model", "clean acc %", "PGD acc %", "mean distance to boundary"],
                           label="toy metrics", interactive=False, elem_id="toy-metrics")
    go.click(lab.toy, [lam, seed], [figure, metrics], api_name="toy", concurrency_id=COMPUTE, time_limit=1800)


def _models_tab(lab: Lab) -> None:
    """Models: each checkpoint's model card."""
    name = gr.Dropdown(lab.names, value=lab.names[0] if lab.names else None, label="Checkpoint")
    card = gr.Markdown(lab.model_card(lab.names[0]) if lab.names else lab.notice(), label="model card",
                       elem_id="model-card")
    name.change(lab.model_card, name, card, api_name="model_card", concurrency_limit=4, concurrency_id="light")


def launch_options(host: str, port: int) -> dict:
    """The launch settings, shared with the tests so they serve exactly what users get."""
    return {"server_name": host, "server_port": port, "max_file_size": MAX_UPLOAD, "allowed_paths": [str(EXAMPLES_DIR)],
            "footer_links": ["api", "gradio"], "show_error": False, "css": CSS}


def build_demo(checkpoints: str | Path = "checkpoints", device: str = "auto", toy_config: ToyConfig = ToyConfig(),
               data_dir: str | None = None, concurrency: int = 1, toy_dir: str | Path = "docs/toy") -> gr.Blocks:
    """The whole app for one checkpoints folder; `concurrency` bounds the model runs at once (1 suits a CPU)."""
    lab = Lab(checkpoints, device, toy_config, data_dir, toy_dir)
    with gr.Blocks(title="pagdemo: Perceptually Aligned Gradients") as demo:
        gr.Markdown(INTRO)
        gr.Markdown(lab.notice(), elem_id="checkpoint-notice")
        with gr.Tab("PAG explorer"):
            _explorer_tab(lab)
        with gr.Tab("Attack & compare"):
            _compare_tab(lab)
        with gr.Tab("Robustness"):
            _robustness_tab(lab)
        with gr.Tab("Toy 2-D"):
            _toy_tab(lab)
        with gr.Tab("Models"):
            _models_tab(lab)
    demo.lab = lab
    return demo.queue(default_concurrency_limit=concurrency, max_size=32)
