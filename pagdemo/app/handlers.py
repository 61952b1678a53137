"""The endpoints (`app.ui` wires each once): check the values as sent (radii in [0, 1] pixel units; a user
mistake raises `InputError`), call pagdemo, shape the answer for Gradio."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from huggingface_hub import RepoCard

from pagdemo.app import inputs
from pagdemo.app.errors import InputError
from pagdemo.app.tables import compare_table, curve_table, probability_table, recorded_tables, toy_cells
from pagdemo.eval.evaluate import accuracy_vs_eps
from pagdemo.models import CIFAR10_CLASSES, resolve_device
from pagdemo.records.checkpoints import list_checkpoints, load_checkpoint
from pagdemo.records.files import read_json
from pagdemo.records.report import audit_rows, data_label, display_order, robustness_rows
from pagdemo.threat import eps_grid, eps_text, picture_eps
from pagdemo.toy.experiment import ToyConfig
from pagdemo.toy.plot import seed_figure
from pagdemo.toy.run import toy_seed
from pagdemo.toy.stats import results_table
from pagdemo.viz.compare import compare_untargeted, render_compare
from pagdemo.viz.draw import to_uint8
from pagdemo.viz.grid import GridSpec, pag_grid_steps
from pagdemo.viz.plots import curve_plot, figure_to_array, robustness_plot

ALL_TARGETS = "all classes"
PREVIEW_PX = 256  # the model input is shown enlarged to about this size, pixel for pixel
CURVE_CACHE = 32  # accuracy-vs-eps curves remembered (per model, norm, n, steps)
Stream = Iterator[tuple[Any, pd.DataFrame, str]]  # a picture (or gr.skip() until it is drawn), table, status


class Lab:
    """What the checkpoints' tabs share: the checkpoints (each loaded once, ~45 MB) and recent curves."""

    def __init__(self, root: str | Path, device: str, data_dir: str | None) -> None:
        self.root, self.device, self.data_dir = Path(root), resolve_device(device), data_dir
        infos, self.skipped = list_checkpoints(self.root)
        self.infos = sorted(infos, key=display_order)
        self.by_name = {i["name"]: i for i in self.infos}
        self.names = list(self.by_name)  # in the paper's order
        first = self.infos[0] if self.infos else {}  # the page's classes and side (CIFAR-10's if none)
        self.classes = first.get("classes") or CIFAR10_CLASSES
        self.image_size = int(first.get("image_size", 32))
        self.gallery, self.gallery_name, self.gallery_label = inputs.gallery(first, data_dir)
        self.example_labels = inputs.example_labels(self.gallery)
        self._models: dict[str, torch.nn.Module] = {}
        self._curves = gr.Cache(max_size=CURVE_CACHE)  # least recently used go first
        self._lock = threading.Lock()

    def _models_for(self, names: Any) -> tuple[list[str], list[torch.nn.Module], int]:
        """The chosen checkpoints, loaded once, and their side: one picture holds one dataset's models."""
        if not self.infos:
            raise InputError(
                f"no checkpoints in {self.root}: train one (see the README) or start with --checkpoints DIR"
            )
        names = [names] if isinstance(names, str) else list(names or [])
        if not names:
            raise InputError("choose at least one model")
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            raise InputError(f"unknown model(s) {unknown}; choose from {self.names}")
        infos = [self.by_name[n] for n in names]
        kinds = {n: (tuple(i.get("classes") or ()), i["image_size"]) for n, i in zip(names, infos)}
        if len(set(kinds.values())) > 1:
            what = "; ".join(f"{n}: {len(c)} classes at {s}x{s}" for n, (c, s) in kinds.items())
            raise InputError(
                f"these models were trained on different data ({what}), so one picture cannot hold them: "
                "choose models of one dataset"
            )
        with self._lock:
            for n in names:
                if n not in self._models:
                    self._models[n] = load_checkpoint(self.by_name[n]["path"], self.device)
        return names, [self._models[n] for n in names], int(kinds[names[0]][1])

    def preview(self, image: dict | None) -> tuple[np.ndarray | None, str]:
        """The image the model actually sees (pixel for pixel, enlarged) and what was done to the upload."""
        if image is None:
            return None, ""
        x, _, notes = inputs.read_upload(image, self.image_size, self.example_labels, self.gallery_name)
        return to_uint8(x, max(1, PREVIEW_PX // self.image_size)), notes

    def pag_grid(
        self, image: dict | None, models: Any, target: Any, norm: Any, eps: Any = None, steps: Any = 20
    ) -> Stream:
        """Large-eps targeted PGD toward each class (or one), one row per model, streamed as it forms."""
        names, nets, size = self._models_for(models)
        eps = inputs.check_norm_eps(norm, eps, size, picture_eps)
        steps, classes = inputs.check_count(steps), nets[0].classes
        if target != ALL_TARGETS and target not in classes:
            raise InputError(f"unknown target {target!r}; choose {ALL_TARGETS!r} or one of {classes}")
        targets = list(range(len(classes))) if target == ALL_TARGETS else [classes.index(target)]
        x, _, _ = inputs.read_upload(image, size, self.example_labels, self.gallery_name)
        caption = f"targeted PGD-{steps}, {norm} eps={eps_text(eps, norm)}, step 2*eps/{steps}"
        spec = GridSpec(names, classes, targets, caption, scale=max(1, 128 // size))
        columns = [classes[t] for t in targets]
        start = time.perf_counter()
        for frame in pag_grid_steps(nets, x.to(self.device), spec, norm, eps, steps, min_interval=1.0):
            seconds = time.perf_counter() - start
            status = f"step {frame.step}/{frame.steps} after {seconds:.1f} s on {self.device.type}"
            status += " (done)" if frame.step == steps else ""
            yield frame.image, probability_table(names, columns, frame.probs), status

    def compare(
        self, image: dict | None, models: Any, norm: Any, eps: Any = None, steps: Any = 20
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Untargeted PGD on one image against each model: before/after, the perturbation, fooled or not."""
        names, nets, size = self._models_for(models)
        eps = inputs.check_norm_eps(norm, eps, size, inputs.eval_default)
        steps, classes = inputs.check_count(steps), nets[0].classes
        x, true, _ = inputs.read_upload(image, size, self.example_labels, self.gallery_name)
        label = classes.index(true) if true in classes else None
        results = compare_untargeted(nets, names, x, norm, eps, steps, label=label)
        attacked = "each model's own prediction (no true label)" if label is None else f"true class {true}"
        how = f"untargeted PGD-{steps}, {norm} eps={eps_text(eps, norm)}, random start, step 2*eps/{steps}"
        panel = render_compare(x, results, classes, f"{how}; attacked: {attacked}", scale=max(1, 128 // size))
        return panel, compare_table(results, classes)

    def robustness(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Records, re-read (`pagdemo eval` may have run): accuracy beside the paper's, settings, audits."""
        if not self.infos:
            raise InputError(f"no checkpoints in {self.root}: nothing to compare yet")
        infos = sorted(list_checkpoints(self.root)[0], key=display_order)
        rows = robustness_rows(infos)
        table, settings, audits = recorded_tables(rows, audit_rows(infos))
        return table, settings, figure_to_array(robustness_plot(rows)), audits

    def eps_curve(self, models: Any, norm: Any, n: Any, steps: Any) -> Stream:
        """Accuracy against eps on a small test subset, point by point (a closed page stops it), cached."""
        norm = inputs.check_threat(norm)
        names, nets, size = self._models_for(models)
        n, steps = inputs.check_count(n, 512, "the number of test images"), inputs.check_count(steps, 50)
        grid = eps_grid(norm, size)
        x, y, source = inputs.curve_subset(self.by_name[names[0]], n, nets[0].classes, self.data_dir)
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, net in zip(names, nets):
            key = (self.by_name[name]["path"], norm, n, steps)
            points = (self._curves.get(key) or {}).get("points")
            if points is None:
                points = []
                for point in accuracy_vs_eps(net, x, y, norm, grid, steps=steps):
                    points.append(point)
                    table = curve_table({**curves, name: points}, norm, grid)
                    yield gr.skip(), table, f"{name}: eps {eps_text(point[0], norm)} -> {100 * point[1]:.1f}%"
                self._curves.set(key, points=points)
            curves[name] = points
        caption = f"PGD-{steps} ({norm}, random start, step 2*eps/{steps}) on {source}"
        yield figure_to_array(curve_plot(curves, norm, caption)), curve_table(curves, norm, grid), "done"

    def model_card(self, name: Any) -> str:
        """A checkpoint's model card (rendered from its config and metrics), without the YAML header."""
        if not self.infos:
            return self.notice()
        if name not in self.by_name:
            raise InputError(f"unknown model {name!r}; choose from {self.names}")
        card = RepoCard.load(Path(self.by_name[name]["path"]) / "README.md")
        return data_label(card.text.strip())

    def notice(self) -> str:
        """What the page says about the checkpoints: how many, which were skipped, what to do if none."""
        head = f"{len(self.infos)} checkpoint(s) in `{self.root}`, running on **{self.device.type}**."
        if not self.infos:
            head = (
                f"**No checkpoints found in `{self.root}`.** The PAG explorer, Attack & compare, Robustness "
                "and Models tabs need at least one: train one (`pagdemo train ...`, see the README) or start "
                "the app with `pagdemo app --checkpoints DIR`. The Toy tab works without checkpoints."
            )
        return "\n".join([head] + [f"- skipped: {reason}" for reason in self.skipped])


class ToyRuns:
    """The Toy tab: the 2-D experiment (Sec. 5.1) trained now, beside what `pagdemo toy --out` saved."""

    def __init__(self, config: ToyConfig = ToyConfig(), saved: str | Path = "docs/toy") -> None:
        self.config, self.saved = config, Path(saved)

    def _results(self) -> dict:
        """The saved run's results.json, re-read each time (`pagdemo toy` may have run); {} when none."""
        return read_json(self.saved / "results.json", {}) or {}

    def toy(self, lam: Any, seed: Any) -> Stream:
        """The 2-D experiment for one lambda and seed; the saved run's numbers beside it when it has them."""
        try:
            lam, seed = float(lam), int(seed)
        except (TypeError, ValueError):
            raise InputError(f"lambda and seed must be numbers, got {lam!r} and {seed!r}") from None
        if not 0 <= lam <= 10 or not 0 <= seed <= 999:
            raise InputError(f"choose 0 <= lambda <= 10 and a seed from 0 to 999, got {lam:g} and {seed}")
        note = f"training vanilla and PAG for seed {seed}, lambda {lam:g} ({self.train_time()})..."
        yield gr.skip(), gr.skip(), note
        vanilla, pag, metrics = toy_seed(seed, lam, self.config)
        runs = [("vanilla", "vanilla", metrics), (f"PAG lambda={lam:g}", "pag", metrics)]  # label, model, run
        saved, note = self._saved_seed(seed, lam), "not in the saved run (another seed or lambda)"
        if saved:
            runs += [("vanilla, saved run", "vanilla", saved), ("PAG, saved run", "pag", saved)]
            note = "the saved run (`pagdemo toy`) gave the same numbers for this seed"
            if not all(abs(saved[m]["pgd_acc"] - metrics[m]["pgd_acc"]) < 1e-9 for m in ("vanilla", "pag")):
                note = (
                    "the saved run gave other numbers for this seed: it ran on another CPU, whose rounding "
                    "changes a chaotic 2-D training"
                )
        fig = seed_figure(self.config, vanilla, pag, metrics)
        rows = [{"model": f"{label} (seed {seed})", **toy_cells(run[m])} for label, m, run in runs]
        yield figure_to_array(fig), pd.DataFrame(rows), f"Trained now: seed {seed}, lambda {lam:g}; {note}."

    def _saved_seed(self, seed: int, lam: float) -> dict | None:
        """The saved run's record of one seed, when it ran this lambda with the app's settings."""
        saved = self._results()
        config = saved.get("config", {})
        if config.get("lam") != lam or config.get("epochs") != self.config.epochs:
            return None
        return next((r for r in saved.get("per_seed", []) if r["seed"] == seed), None)

    def train_time(self) -> str:
        """How long one seed trains, from the saved run's own record (never a number typed into the code)."""
        runs = self._results().get("per_seed", [])
        times = [r["vanilla"].get("train_s", 0) + r["pag"].get("train_s", 0) for r in runs]
        if not times:
            return "seconds to a minute"
        return f"the saved run trained each seed in {sum(times) / len(times):.0f} s"

    def saved_result(self) -> tuple[str | None, str]:
        """The figure and summary `pagdemo toy` saved, shown before anyone trains, and what they show."""
        figure, results = self.saved / "decision_boundary.png", self._results()
        if not figure.exists() or not results:
            return None, "Press *Train and draw* to train both models and draw their decision boundaries."
        try:
            cfg = results["config"]
            text = (
                f"**The saved result of `pagdemo toy`** ({len(results['per_seed'])} seeds, lambda "
                f"{cfg['lam']:g}, {cfg['dtype']}; the figure shows seed 0). A single seed is a chaotic "
                "training's outcome: the claim is in the summary.\n\n" + results_table(results)
            )
        except (KeyError, TypeError, IndexError):
            rerun = f"pagdemo toy --out {self.saved}"
            text = f"The saved result in `{self.saved}` is in an older format: rerun `{rerun}`."
        return str(figure), text
