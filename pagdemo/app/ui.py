"""The page: one tab per experiment, each event a named endpoint (docs/app.md) wired once (`errors.wire`) on
its visible control. Radii are in [0, 1] pixel units; the eps slider shows linf in /255 (`page.eps_input`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from pagdemo.app import page
from pagdemo.app.errors import wire
from pagdemo.app.handlers import ALL_TARGETS, Lab, ToyRuns
from pagdemo.app.inputs import EXAMPLES_DIR, eval_default, example_paths
from pagdemo.threat import eval_eps, picture_eps
from pagdemo.toy.experiment import ToyConfig

MAX_UPLOAD = "10mb"  # uploads beyond this are refused by Gradio before any handler runs
# one concurrency group for everything that runs a model: attacks, and the longer curves and toy training
COMPUTE = {"concurrency_id": "compute", "time_limit": 600}
LONG = {**COMPUTE, "time_limit": 1800}
LIGHT = {"concurrency_limit": 4, "concurrency_id": "light"}  # previews, cards, recorded tables
SHOW = ["download", "fullscreen"]  # a result picture's buttons


def on_gpu() -> Callable[[Callable], Callable]:
    """`spaces.GPU` where `spaces` is installed (a ZeroGPU Space lends a GPU to each call), else as is."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


def _explorer_tab(lab: Lab, gpu: Callable) -> None:
    """PAG explorer: the paper's Figures 1, 4 and 5 for any image, streamed."""
    with gr.Row():
        with gr.Column(scale=2):
            image, image_error = page.image_input("Your image (upload, webcam or paste)", "pag-image-error")
            with gr.Row():
                seen = page.picture("model input", "model-input", height=160, width=160)
                note = gr.Markdown(label="notes", elem_id="pag-notes")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models (one row each)")
            targets = [ALL_TARGETS] + lab.classes
            target = gr.Dropdown(targets, value=ALL_TARGETS, label="Target class (one column each)")
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                info = "step size 2*eps/steps"
                steps = gr.Slider(1, 100, value=20, step=1, precision=0, label="PGD steps", info=info)
            info = "large on purpose: this is the PAG test, not an evaluation"
            eps = page.eps_input(norm, picture_eps, lab.image_size, elem_id="pag-eps", info=info)
            run = gr.Button("Run targeted PGD", variant="primary", elem_id="run-pag")
            settings_error = gr.Markdown(elem_id="pag-error")
    page.examples(example_paths(lab.gallery), lab.gallery_label, image, "examples-pag")
    status = gr.Markdown("Pick an image and press *Run targeted PGD*.", label="status", elem_id="pag-status")
    grid = page.picture("PAG grid", "pag-grid", buttons=SHOW)
    gr.Markdown(page.GRID_LEGEND)
    waiting = "p(target) of each model appears here after a run"
    columns = ["model"] + lab.classes
    probs = page.results("probabilities of the target class", columns, waiting, elem_id="pag-probs")
    wire(image.change, lab.preview, [image], [seen, note], "preview", {"image": note}, {seen: None}, **LIGHT)
    slots = {"image": image_error, "settings": settings_error}
    stopped = {status: "Stopped: see the message beside the controls."}
    inputs, outputs = [image, models, target, norm, eps, steps], [grid, probs, status]
    wire(run.click, gpu(lab.pag_grid), inputs, outputs, "pag_grid", slots, stopped, **COMPUTE)


def _compare_tab(lab: Lab, gpu: Callable) -> None:
    """Attack & compare: one untargeted attack per model, side by side."""
    size = lab.image_size
    with gr.Row():
        with gr.Column(scale=2):
            image, image_error = page.image_input("Image to attack", "compare-image-error")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                steps = gr.Slider(1, 100, value=20, step=1, precision=0, label="PGD steps")
            l2, linf = eval_default("l2", size), eval_eps("linf") * 255
            info = f"defaults: the evaluation radii at {size}x{size} (l2 {l2:g}, linf {linf:.0f}/255)"
            eps = page.eps_input(norm, eval_default, size, elem_id="compare-eps", info=info)
            run = gr.Button("Attack", variant="primary", elem_id="run-compare")
            settings_error = gr.Markdown(elem_id="compare-error")
    page.examples(example_paths(lab.gallery), lab.gallery_label, image, "examples-compare")
    panel = page.picture("comparison", "compare-panel", buttons=SHOW)
    waiting = "each model's prediction before and after the attack appears here"
    columns = ["model", "before", "after", "verdict"]
    table = page.results("predictions", columns, waiting, elem_id="compare-table")
    inputs, slots = [image, models, norm, eps, steps], {"image": image_error, "settings": settings_error}
    wire(run.click, gpu(lab.compare), inputs, [panel, table], "compare", slots, **COMPUTE)


def _robustness_tab(lab: Lab, gpu: Callable) -> None:
    """Robustness: the records beside the paper's, their settings and audits; a live accuracy-vs-eps curve."""
    gr.Markdown(
        "Recorded evaluations from each checkpoint's `metrics.json` (`pagdemo eval`): for each threat model, "
        "the record at the dataset's evaluation radius with the most test images. Accuracies in %."
    )
    refresh = gr.Button("Reload recorded metrics", elem_id="reload-metrics")
    refresh_error = gr.Markdown(elem_id="robustness-error")
    now = lab.robustness() if lab.infos else (None, None, None, None)
    table = gr.Dataframe(now[0], label="recorded accuracy", interactive=False, wrap=True)
    widths = ["14%", "33%", "33%", "20%"]
    label = "evaluation settings"
    settings = gr.Dataframe(now[1], label=label, interactive=False, wrap=True, column_widths=widths)
    plot = page.picture("recorded accuracy plot", "recorded-plot", now[2])
    label = "is it real? AutoAttack vs PGD-20 on the same subset, masking verdict, PAG score (pagdemo audit)"
    widths = ["11%", "6%", "5%", "8%", "10%", "28%", "8%", "7%", "9%", "8%"]
    audits = gr.Dataframe(now[3], label=label, interactive=False, wrap=True, column_widths=widths)
    with gr.Accordion("The paper's numbers", open=False):
        gr.Markdown(page.paper_tables())
    outputs = [table, settings, plot, audits]
    wire(refresh.click, lab.robustness, [], outputs, "robustness", {"settings": refresh_error}, **LIGHT)
    gr.Markdown("### Accuracy against eps, computed now on a small test subset (cached per setting)")
    with gr.Row():
        models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
        norm = gr.Radio(["linf", "l2"], value="linf", label="Threat model")
        n = gr.Slider(16, 512, value=64, step=16, precision=0, label="Test images")
        steps = gr.Slider(1, 50, value=10, step=1, precision=0, label="PGD steps")
    go = gr.Button("Compute curve", variant="primary", elem_id="run-curve")
    curve_error = gr.Markdown(elem_id="curve-error")
    status = gr.Markdown(label="status", elem_id="curve-status")
    curve = page.picture("accuracy vs eps", "curve-plot")
    waiting = "accuracy at each radius appears here, point by point"
    points = page.results("accuracy table (%)", ["eps"] + lab.names[:3], waiting)
    slots, failed = {"settings": curve_error}, {status: "Not run: see the message above."}
    inputs, outputs = [models, norm, n, steps], [curve, points, status]
    wire(go.click, gpu(lab.eps_curve), inputs, outputs, "eps_curve", slots, failed, **LONG)


def _toy_tab(toys: ToyRuns) -> None:
    """Toy: the 2-D experiment of Sec. 5.1 (Figure 3), vanilla vs PAG, and its summary over seeds."""
    gr.Markdown(
        "Two classes on the line x2 = 2 x1, three modes each; a 2-32-2 MLP trained with cross-entropy (left) "
        "and with the PAG loss, Nearest Neighbor target (right). The dashed circle is the L2 PGD-10 radius "
        f"(eps 15). *Train and draw* trains both models for one seed and lambda ({toys.train_time()}; a "
        "setting seen before is redrawn from memory)."
    )
    saved, summary = toys.saved_result()
    gr.Markdown(summary, elem_id="toy-summary")
    with gr.Row():
        lam = gr.Slider(0.0, 4.0, value=toys.config.lam, step=0.05, label="PAG lambda")
        seed = gr.Slider(0, 99, value=0, step=1, precision=0, label="Seed")
        go = gr.Button("Train and draw", variant="primary", elem_id="run-toy")
    toy_error = gr.Markdown(elem_id="toy-error")
    shown = "Shown: the saved figure (seed 0)." if saved else ""
    caption = gr.Markdown(shown, label="caption", elem_id="toy-caption")
    figure = page.picture("decision boundaries", "toy-figure", saved)
    waiting = "the trained models' numbers appear here"
    metrics = page.results("toy metrics", ["model", "clean %", "PGD-10 %"], waiting, elem_id="toy-metrics")
    slots, failed = {"settings": toy_error}, {caption: "Not run: see the message above."}
    outputs = [figure, metrics, caption]
    wire(go.click, toys.toy, [lam, seed], outputs, "toy", slots, failed, **LONG)


def _models_tab(lab: Lab) -> None:
    """Models: each checkpoint's model card."""
    first = lab.names[0] if lab.names else None  # with none, the card is the notice
    name = gr.Dropdown(lab.names, value=first, label="Checkpoint")
    card = gr.Markdown(lab.model_card(first), label="model card", elem_id="model-card", elem_classes="card")
    wire(name.change, lab.model_card, [name], [card], "model_card", {"settings": card}, **LIGHT)


def launch_options(host: str, port: int, demo: gr.Blocks) -> dict:
    """The launch settings, shared with the tests so they serve exactly what users get."""
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": MAX_UPLOAD,
        "allowed_paths": [str(EXAMPLES_DIR), str(demo.lab.gallery)],
        "footer_links": ["api", "gradio"],
        "show_error": False,
        "css": page.CSS,
    }


def build_demo(
    checkpoints: str | Path = "checkpoints",
    device: str = "auto",
    toy_config: ToyConfig = ToyConfig(),
    data_dir: str | None = None,
    concurrency: int = 1,
    toy_dir: str | Path = "docs/toy",
) -> gr.Blocks:
    """The whole app for one checkpoints folder; `concurrency`: model runs at once (1 suits a CPU)."""
    gpu = on_gpu()  # before any CUDA call: ZeroGPU asks for `spaces` to come first
    lab = Lab(checkpoints, device, data_dir)
    with gr.Blocks(title="pagdemo: Perceptually Aligned Gradients") as demo:
        gr.Markdown(page.INTRO)
        gr.Markdown(lab.notice(), elem_id="checkpoint-notice")
        with gr.Tab("PAG explorer"):
            _explorer_tab(lab, gpu)
        with gr.Tab("Attack & compare"):
            _compare_tab(lab, gpu)
        with gr.Tab("Robustness"):
            _robustness_tab(lab, gpu)
        with gr.Tab("Toy 2-D"):
            _toy_tab(ToyRuns(toy_config, toy_dir))
        with gr.Tab("Models"):
            _models_tab(lab)
    demo.lab = lab
    return demo.queue(default_concurrency_limit=concurrency, max_size=32)
