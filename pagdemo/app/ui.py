"""The page: one tab per experiment. Each tab has a page event (units people use, errors shown next to their
control, the last result kept) and a named API endpoint on hidden inputs (radii in [0, 1], errors raised):

    /preview(image) -> (model_input, notes)
    /pag_grid(image, models, target, norm, eps, steps) -> (grid, probabilities, status)   [streams]
    /compare(image, models, norm, eps=None, steps=20) -> (panel, table)
    /robustness() -> (table, settings, plot, audits)
    /eps_curve(models, norm, n, steps) -> (plot, table, status)   [streams]
    /toy(lam, seed) -> (figure, metrics, caption)   [streams]
    /model_card(name) -> markdown

eps None means the threat model's default (the PAG picture's, or the evaluation radius for /compare).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pagdemo.app import widgets
from pagdemo.app.errors import api_errors
from pagdemo.app.handlers import ALL_TARGETS, Lab
from pagdemo.app.inputs import EXAMPLES_DIR, eval_default
from pagdemo.app.page import eps_slider_args, page_call, to_unit
from pagdemo.paper import TABLE_NAMES, TABLES
from pagdemo.records.report import paper_table
from pagdemo.threat import eval_eps, picture_eps
from pagdemo.toy.experiment import ToyConfig

MAX_UPLOAD = "10mb"  # uploads beyond this are refused by Gradio before any handler runs
CSS = """
.pixels img, [id^=examples-] img { image-rendering: pixelated; }
.upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#pag-grid img, #compare-panel img { width: auto !important; max-width: none !important; image-rendering: pixelated; }
#pag-grid .image-container, #compare-panel .image-container { overflow-x: auto; }
#pag-grid .image-container > button, #compare-panel .image-container > button { justify-content: flex-start;
  width: max-content; min-width: 100%; }
.error-note { color: #b42318; background: #fef3f2; border: 1px solid #fda29b; border-radius: 6px; padding: 6px 10px; }
.card table, .card th, .card td { white-space: nowrap; }
.card table { display: block; overflow-x: auto; }
"""  # images the model sees are shown pixel for pixel; the grid at its own size (scroll sideways when wide)
COMPUTE = "compute"  # one concurrency group for everything that runs a model: attacks, curves, toy training
INTRO = """# Perceptually Aligned Gradients: see them, attack them
Ganz, Kawar & Elad, *Do Perceptually Aligned Gradients Imply Adversarial Robustness?* (ICML 2023).
A classifier has **perceptually aligned gradients** when a large-eps targeted attack paints visible features of the
target class into an image; a vanilla classifier only adds noise. The paper trains classifiers to have such gradients,
and finds that they become robust."""
GRID_LEGEND = """**Reading the grid.** Rows are models, the first column is the input, then one column per target class.
Under each cell, **p** is that model's probability of the column's class for the attacked image: **green** once it
reaches 0.5 (the attack got its target), black below. Beside each model's name, **sees** is what the model predicts for
the clean input, which can differ from the true class: that model is wrong about this image. Robust and PAG models paint
the target's features; a vanilla model adds noise. The grid is shown at its own size: scroll sideways, or use the
full-screen button."""


def _explorer_tab(lab: Lab) -> None:
    """PAG explorer: the paper's Figures 1, 4 and 5 for any image, streamed."""
    size = lab.image_size
    with gr.Row():
        with gr.Column(scale=2):
            image = widgets.image_input("Your image (upload, webcam or paste)")
            image_error = widgets.error_slot("pag-image-error")
            with gr.Row():
                seen = gr.Image(
                    label="model input",
                    format="png",
                    height=160,
                    width=160,
                    interactive=False,
                    elem_id="model-input",
                    elem_classes="pixels",
                )
                notes = gr.Markdown(elem_id="pag-notes")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models (one row each)")
            target = gr.Dropdown(
                [ALL_TARGETS] + lab.classes, value=ALL_TARGETS, label="Target class (one column each)"
            )
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                steps = gr.Slider(
                    1, 100, value=20, step=1, precision=0, label="PGD steps", info="step size 2*eps/steps"
                )
            eps = gr.Slider(
                **eps_slider_args("l2", picture_eps("l2", size), size),
                elem_id="pag-eps",
                info="large on purpose: this is the PAG test, not an evaluation",
            )
            run = gr.Button("Run targeted PGD", variant="primary", elem_id="run-pag")
            settings_error = widgets.error_slot("pag-error")
    widgets.examples(lab, image, "examples-pag")
    status = gr.Markdown("Pick an image and press *Run targeted PGD*.", elem_id="pag-status")
    grid = gr.Image(
        label="PAG grid",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id="pag-grid",
    )
    gr.Markdown(GRID_LEGEND)
    waiting = widgets.placeholder("p(target) of each model appears here after a run", ["model"] + lab.classes)
    probs = gr.Dataframe(
        waiting, label="probabilities of the target class", interactive=False, elem_id="pag-probs"
    )

    def grid_page(image: Any, models: Any, target: Any, norm: Any, eps: Any, steps: Any):  # noqa: ANN202
        yield from lab.pag_grid(image, models, target, norm, to_unit(norm, eps), steps)

    image.change(
        widgets.preview_page(lab),
        image,
        [seen, notes],
        api_name="page_preview",
        api_visibility="private",
        concurrency_limit=4,
        concurrency_id="light",
    )
    norm.change(
        widgets.eps_for_norm("picture", size),
        norm,
        eps,
        api_name="page_pag_norm",
        api_visibility="private",
        queue=False,
    )
    run.click(
        page_call(grid_page, 3, {2: lambda m: "Stopped: see the message beside the controls."}),
        [image, models, target, norm, eps, steps],
        [grid, probs, status, image_error, settings_error],
        api_name="page_pag_grid",
        api_visibility="private",
        concurrency_id=COMPUTE,
        time_limit=600,
    )
    widgets.hidden_api(
        lab.preview,
        widgets.api_inputs(lab, "image"),
        [seen, notes],
        "preview",
        concurrency_limit=4,
        concurrency_id="light",
    )
    widgets.hidden_api(
        lab.pag_grid,
        widgets.api_inputs(lab, "image", "models", "target", "norm", "eps", "steps"),
        [grid, probs, status],
        "pag_grid",
        concurrency_id=COMPUTE,
        time_limit=600,
    )


def _compare_tab(lab: Lab) -> None:
    """Attack & compare: one untargeted attack per model, side by side."""
    size = lab.image_size
    with gr.Row():
        with gr.Column(scale=2):
            image = widgets.image_input("Image to attack")
            image_error = widgets.error_slot("compare-image-error")
        with gr.Column(scale=3):
            models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
            with gr.Row():
                norm = gr.Radio(["l2", "linf"], value="l2", label="Threat model")
                steps = gr.Slider(1, 100, value=20, step=1, precision=0, label="PGD steps")
            eps = gr.Slider(
                **eps_slider_args("l2", eval_default("l2", size), size),
                elem_id="compare-eps",
                info=f"defaults: the evaluation radii at {size}x{size} (l2 {eval_default('l2', size):g}, "
                f"linf {eval_eps('linf') * 255:.0f}/255)",
            )
            run = gr.Button("Attack", variant="primary", elem_id="run-compare")
            settings_error = widgets.error_slot("compare-error")
    widgets.examples(lab, image, "examples-compare")
    panel = gr.Image(
        label="comparison",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id="compare-panel",
    )
    table = gr.Dataframe(
        widgets.placeholder(
            "each model's prediction before and after the attack appears here",
            ["model", "before", "after", "verdict"],
        ),
        label="predictions",
        interactive=False,
    )

    def compare_page(image: Any, models: Any, norm: Any, eps: Any, steps: Any) -> tuple:
        return lab.compare(image, models, norm, to_unit(norm, eps), steps)

    norm.change(
        widgets.eps_for_norm("evaluation", size),
        norm,
        eps,
        api_name="page_compare_norm",
        api_visibility="private",
        queue=False,
    )
    run.click(
        page_call(compare_page, 2),
        [image, models, norm, eps, steps],
        [panel, table, image_error, settings_error],
        api_name="page_compare",
        api_visibility="private",
        concurrency_id=COMPUTE,
        time_limit=600,
    )
    widgets.hidden_api(
        lab.compare,
        widgets.api_inputs(lab, "image", "models", "norm", "eps", "steps"),
        [panel, table],
        "compare",
        concurrency_id=COMPUTE,
        time_limit=600,
    )


def _paper_tables() -> str:
    """The paper's Tables 1 and 2 as Markdown."""
    out = []
    for dataset, _rows in TABLES.items():
        out += [
            f"**Paper, {TABLE_NAMES[dataset]}** (ResNet-18, PGD-20; linf eps 0.031, l2 eps "
            f"{eval_eps('l2', dataset):g})",
            "",
            paper_table(dataset),
            "",
        ]
    return "\n".join(out)


def _robustness_tab(lab: Lab) -> None:
    """Robustness: recorded numbers against the paper's, the audits, and a live accuracy-vs-eps curve."""
    gr.Markdown(
        "Recorded evaluations from each checkpoint's `metrics.json` (`pagdemo eval`): for each threat model, "
        "the record at the dataset's evaluation radius with the most test images. Accuracies in %."
    )
    refresh = gr.Button("Reload recorded metrics", elem_id="reload-metrics")
    refresh_error = widgets.error_slot("robustness-error")
    now = lab.robustness() if lab.infos else (None, None, None, None)
    table = gr.Dataframe(now[0], label="recorded accuracy", interactive=False, wrap=True)
    settings = gr.Dataframe(
        now[1],
        label="evaluation settings",
        interactive=False,
        wrap=True,
        column_widths=["14%", "33%", "33%", "20%"],
    )
    plot = gr.Image(
        now[2], label="recorded accuracy plot", format="png", interactive=False, elem_id="recorded-plot"
    )
    audits = gr.Dataframe(
        now[3],
        label="is it real? AutoAttack vs PGD-20 on the same subset, masking verdict, PAG score "
        "(pagdemo audit)",
        interactive=False,
        wrap=True,
        column_widths=["11%", "6%", "5%", "8%", "10%", "28%", "8%", "7%", "9%", "8%"],
    )
    with gr.Accordion("The paper's numbers", open=False):
        gr.Markdown(_paper_tables())
    gr.Markdown("### Accuracy against eps, computed now on a small test subset (cached per setting)")
    with gr.Row():
        models = gr.CheckboxGroup(lab.names, value=lab.names[:3], label="Models")
        norm = gr.Radio(["linf", "l2"], value="linf", label="Threat model")
        n = gr.Slider(16, 512, value=64, step=16, precision=0, label="Test images")
        steps = gr.Slider(1, 50, value=10, step=1, precision=0, label="PGD steps")
    go = gr.Button("Compute curve", variant="primary", elem_id="run-curve")
    curve_error = widgets.error_slot("curve-error")
    status = gr.Markdown(elem_id="curve-status")
    curve = gr.Image(label="accuracy vs eps", format="png", interactive=False, elem_id="curve-plot")
    waiting = widgets.placeholder(
        "accuracy at each radius appears here, point by point", ["eps"] + lab.names[:3]
    )
    points = gr.Dataframe(waiting, label="accuracy table (%)", interactive=False)
    outputs = [table, settings, plot, audits]
    refresh.click(
        page_call(lab.robustness, 4),
        None,
        outputs + [gr.Markdown(visible=False), refresh_error],
        api_name="page_robustness",
        api_visibility="private",
        concurrency_limit=4,
        concurrency_id="light",
    )
    go.click(
        page_call(lab.eps_curve, 3, {2: lambda m: "Not run: see the message above."}),
        [models, norm, n, steps],
        [curve, points, status, gr.Markdown(visible=False), curve_error],
        api_name="page_eps_curve",
        api_visibility="private",
        concurrency_id=COMPUTE,
        time_limit=1800,
    )
    widgets.hidden_api(lab.robustness, [], outputs, "robustness", concurrency_limit=4, concurrency_id="light")
    widgets.hidden_api(
        lab.eps_curve,
        widgets.api_inputs(lab, "models", "norm", "n", "steps"),
        [curve, points, status],
        "eps_curve",
        concurrency_id=COMPUTE,
        time_limit=1800,
    )


def _toy_tab(lab: Lab) -> None:
    """Toy: the 2-D experiment of Sec. 5.1 (Figure 3), vanilla vs PAG, and its summary over seeds."""
    gr.Markdown(
        "Two classes on the line x2 = 2 x1, three modes each; a 2-32-2 MLP trained with cross-entropy (left) "
        "and with the PAG loss, Nearest Neighbor target (right). The dashed circle is the L2 PGD-10 radius "
        f"(eps 15). *Train and draw* trains both models for one seed and lambda ({lab.toy_time()}; a setting "
        "seen before is redrawn from memory)."
    )
    saved, summary = lab.toy_saved()
    gr.Markdown(summary, elem_id="toy-summary")
    with gr.Row():
        lam = gr.Slider(0.0, 4.0, value=lab.toy_config.lam, step=0.05, label="PAG lambda")
        seed = gr.Slider(0, 99, value=0, step=1, precision=0, label="Seed")
        go = gr.Button("Train and draw", variant="primary", elem_id="run-toy")
    toy_error = widgets.error_slot("toy-error")
    caption = gr.Markdown("Shown: the saved figure (seed 0)." if saved else "", elem_id="toy-caption")
    figure = gr.Image(
        saved, label="decision boundaries", format="png", interactive=False, elem_id="toy-figure"
    )
    waiting = widgets.placeholder("the trained models' numbers appear here", ["model", "clean %", "PGD-10 %"])
    metrics = gr.Dataframe(waiting, label="toy metrics", interactive=False, elem_id="toy-metrics")
    go.click(
        page_call(lab.toy, 3, {2: lambda m: "Not run: see the message above."}),
        [lam, seed],
        [figure, metrics, caption, gr.Markdown(visible=False), toy_error],
        api_name="page_toy",
        api_visibility="private",
        concurrency_id=COMPUTE,
        time_limit=1800,
    )
    widgets.hidden_api(
        lab.toy,
        widgets.api_inputs(lab, "lam", "seed"),
        [figure, metrics, caption],
        "toy",
        concurrency_id=COMPUTE,
        time_limit=1800,
    )


def _models_tab(lab: Lab) -> None:
    """Models: each checkpoint's model card."""
    name = widgets.lenient(
        gr.Dropdown(lab.names, value=lab.names[0] if lab.names else None, label="Checkpoint")
    )
    card = gr.Markdown(
        lab.model_card(lab.names[0]) if lab.names else lab.notice(),
        label="model card",
        elem_id="model-card",
        elem_classes="card",
    )
    name.change(
        api_errors(lab.model_card),
        name,
        card,
        api_name="model_card",
        concurrency_limit=4,
        concurrency_id="light",
    )


def launch_options(host: str, port: int, demo: gr.Blocks | None = None) -> dict:
    """The launch settings, shared with the tests so they serve exactly what users get."""
    gallery = [str(demo.lab.gallery)] if demo is not None else []
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": MAX_UPLOAD,
        "allowed_paths": [str(EXAMPLES_DIR), *gallery],
        "footer_links": ["api", "gradio"],
        "show_error": False,
        "css": CSS,
    }


def build_demo(
    checkpoints: str | Path = "checkpoints",
    device: str = "auto",
    toy_config: ToyConfig = ToyConfig(),
    data_dir: str | None = None,
    concurrency: int = 1,
    toy_dir: str | Path = "docs/toy",
) -> gr.Blocks:
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
