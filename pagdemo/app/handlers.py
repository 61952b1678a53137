"""One handler per tab: check the request, call pagdemo, shape the answer for Gradio.

Each handler is a named endpoint as it stands (`app.ui` wires it once, on the page's own event): it takes the
values as sent (the image as Gradio received it, radii in [0, 1] pixel units; the page converts its linf /255
before sending) and raises `InputError` naming the field for a user mistake (`app.errors`). `Lab` holds what the
handlers share: the checkpoint list, the loaded models (every checkpoint at most once, ~45 MB each in fp32) and
a bounded cache of accuracy curves (32 settings). The Toy tab's handler is `app.toyruns`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch

from pagdemo.app.errors import InputError
from pagdemo.app.inputs import (
    EXAMPLES_DIR,
    check_count,
    check_norm_eps,
    check_threat,
    curve_subset,
    eval_default,
    example_labels,
    example_paths,
    folder_gallery,
    read_upload,
)
from pagdemo.app.tables import (
    compare_table,
    curve_table,
    probability_table,
    recorded_tables,
)
from pagdemo.eval.evaluate import accuracy_vs_eps
from pagdemo.eval.subset import data_for_eval
from pagdemo.models import CIFAR10_CLASSES, resolve_device
from pagdemo.records.checkpoints import list_checkpoints, load_checkpoint
from pagdemo.records.report import audit_rows, data_label, display_order, robustness_rows
from pagdemo.threat import eps_grid, eps_text, picture_eps
from pagdemo.viz.compare import compare_untargeted, render_compare
from pagdemo.viz.draw import to_uint8
from pagdemo.viz.grid import GridSpec, pag_grid_steps
from pagdemo.viz.plots import curve_plot, figure_to_array, robustness_plot

ALL_TARGETS = "all classes"
PREVIEW_PX = 256  # the model input is shown enlarged to about this size, pixel for pixel
CURVE_CACHE = 32  # accuracy-vs-eps curves remembered (per model, norm, n, steps)


class Lab:
    """State shared by the handlers: checkpoints (listed at start, loaded on first use) and bounded caches."""

    def __init__(
        self,
        root: str | Path = "checkpoints",
        device: str = "auto",
        data_dir: str | None = None,
    ) -> None:
        self.root, self.device, self.data_dir = Path(root), resolve_device(device), data_dir
        infos, self.skipped = list_checkpoints(self.root)
        self.infos = sorted(infos, key=display_order)
        self.by_name = {i["name"]: i for i in self.infos}
        run = self.infos[0]["run"] if self.infos else {}
        folder = run.get("dataset") == "folder"
        own = data_for_eval(run, None, data_dir)[1] if folder else None  # the data folder given, or recorded
        self.gallery = (folder_gallery(own, self.image_size) if own else None) or EXAMPLES_DIR
        if self.gallery == EXAMPLES_DIR:
            self.gallery_name, self.gallery_label = "CIFAR-10", "CIFAR-10 test images (3 per class)"
        else:
            self.gallery_name = Path(own).name
            self.gallery_label = f"{self.gallery_name} test images ({len(example_paths(self.gallery))})"
        self.example_labels = example_labels(self.gallery)
        self._models: dict[str, torch.nn.Module] = {}
        self._curves: OrderedDict[tuple, list[tuple[float, float]]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """The checkpoints, in the paper's order."""
        return list(self.by_name)

    @property
    def classes(self) -> list[str]:
        """The class names the page offers: the first checkpoint's (CIFAR-10's when there is none)."""
        return (self.infos[0].get("classes") if self.infos else None) or CIFAR10_CLASSES

    @property
    def image_size(self) -> int:
        """Side of the first checkpoint's inputs (32 when there is none)."""
        return int(self.infos[0]["image_size"]) if self.infos else 32

    def _models_for(self, names: Any) -> tuple[list[str], list[torch.nn.Module]]:
        """Load (once) the chosen checkpoints; they must share classes and input size to share a picture."""
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
        shape = {n: (len(self.by_name[n].get("classes") or ()), self.by_name[n]["image_size"]) for n in names}
        kinds = {(tuple(self.by_name[n].get("classes") or ()), self.by_name[n]["image_size"]) for n in names}
        if len(kinds) > 1:
            what = "; ".join(f"{n}: {c} classes at {s}x{s}" for n, (c, s) in shape.items())
            raise InputError(
                f"these models were trained on different data ({what}), so one picture cannot hold them: "
                "choose models of one dataset"
            )
        with self._lock:
            for n in names:
                if n not in self._models:
                    self._models[n] = load_checkpoint(self.by_name[n]["path"], self.device)
        return names, [self._models[n] for n in names]

    def _size(self, names: list[str]) -> int:
        """Input side of the chosen models (all share it), else of the first checkpoint."""
        return (
            int(self.by_name[names[0]]["image_size"])
            if names and names[0] in self.by_name
            else self.image_size
        )

    def _image(
        self, payload: dict | None, size: int, classes: list[str]
    ) -> tuple[torch.Tensor, int | None, str]:
        """The model's view of an upload, its true label when it is a gallery image, and notes in words."""
        x, label, notes = read_upload(payload, size, self.example_labels, self.gallery_name)
        return x, classes.index(label) if label in classes else None, notes

    def preview(self, image: dict | None) -> tuple[np.ndarray | None, str]:
        """The image the model actually sees (pixel for pixel, enlarged) and what was done to the upload."""
        if image is None:
            return None, ""
        size = self._size(self.names)
        x, _, notes = self._image(image, size, self.classes)
        return to_uint8(x, max(1, PREVIEW_PX // size)), notes

    def pag_grid(
        self, image: dict | None, models: Any, target: Any, norm: Any, eps: Any = None, steps: Any = 20
    ) -> Iterator[tuple[np.ndarray, pd.DataFrame, str]]:
        """Large-eps targeted PGD toward each class (or one), one row per model, streamed as it forms."""
        names, nets = self._models_for(models)
        size, classes = self._size(names), nets[0].classes
        norm, eps = check_norm_eps(norm, eps, size, picture_eps)
        steps = check_count(steps)
        if target != ALL_TARGETS and target not in classes:
            raise InputError(f"unknown target {target!r}; choose {ALL_TARGETS!r} or one of {classes}")
        targets = list(range(len(classes))) if target == ALL_TARGETS else [classes.index(target)]
        x, _, _ = self._image(image, size, classes)
        caption = f"targeted PGD-{steps}, {norm} eps={eps_text(eps, norm)}, step 2*eps/{steps}"
        spec = GridSpec(names, classes, targets, caption, scale=max(1, 128 // size))
        start = time.perf_counter()
        for frame in pag_grid_steps(nets, x.to(self.device), spec, norm, eps, steps, min_interval=1.0):
            status = f"step {frame.step}/{frame.steps} after {time.perf_counter() - start:.1f} s on {self.device.type}"
            status += " (done)" if frame.step == steps else ""
            yield frame.image, probability_table(names, classes, targets, frame.probs), status

    def compare(
        self, image: dict | None, models: Any, norm: Any, eps: Any = None, steps: Any = 20
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Untargeted PGD on one image against each model: before/after, the perturbation, fooled or not."""
        names, nets = self._models_for(models)
        size, classes = self._size(names), nets[0].classes
        norm, eps = check_norm_eps(norm, eps, size, eval_default)
        steps = check_count(steps)
        x, label, _ = self._image(image, size, classes)
        results = compare_untargeted(nets, names, x, norm, eps, steps, label=label)
        attacked = (
            f"true class {classes[label]}"
            if label is not None
            else "each model's own prediction (no true label)"
        )
        caption = f"untargeted PGD-{steps}, {norm} eps={eps_text(eps, norm)}, random start, step 2*eps/{steps}; attacked: {attacked}"
        panel = render_compare(x, results, classes, caption, scale=max(1, 128 // size))
        return panel, compare_table(results, classes)

    def robustness(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Each checkpoint's recorded clean / PGD-20 accuracy beside the paper's, their settings, and its audits."""
        if not self.infos:
            raise InputError(f"no checkpoints in {self.root}: nothing to compare yet")
        infos = sorted(
            list_checkpoints(self.root)[0], key=display_order
        )  # re-read: `pagdemo eval` may have run
        rows = robustness_rows(infos)
        table, settings, audits = recorded_tables(rows, audit_rows(infos))
        return table, settings, figure_to_array(robustness_plot(rows)), audits

    def eps_curve(
        self, models: Any, norm: Any, n: Any, steps: Any
    ) -> Iterator[tuple[Any, pd.DataFrame, str]]:
        """Accuracy against eps on a small test subset, point by point (a closed page stops it), cached per setting."""
        norm = check_threat(norm)
        names, nets = self._models_for(models)
        n, steps, size = (
            check_count(n, 512, "the number of test images"),
            check_count(steps, 50),
            self._size(names),
        )
        grid = eps_grid(norm, size)
        x, y, source = curve_subset(self.by_name[names[0]]["run"], n, size, nets[0].classes, self.data_dir)
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, net in zip(names, nets):
            key = (self.by_name[name]["path"], norm, n, steps)
            if key not in self._curves:
                points = []
                for point in accuracy_vs_eps(net, x, y, norm, grid, steps=steps):
                    points.append(point)
                    table = curve_table({**curves, name: points}, norm, grid)
                    yield gr.skip(), table, f"{name}: eps {eps_text(point[0], norm)} -> {100 * point[1]:.1f}%"
                self._curves[key] = points
                while len(self._curves) > CURVE_CACHE:
                    self._curves.popitem(last=False)
            self._curves.move_to_end(key)
            curves[name] = self._curves[key]
        caption = f"PGD-{steps} ({norm}, random start, step 2*eps/{steps}) on {source}"
        yield figure_to_array(curve_plot(curves, norm, caption)), curve_table(curves, norm, grid), "done"

    def model_card(self, name: Any) -> str:
        """A checkpoint's model card (rendered from its config and metrics), without the YAML header."""
        if not self.infos:
            return self.notice()
        if name not in self.by_name:
            raise InputError(f"unknown model {name!r}; choose from {self.names}")
        card = (Path(self.by_name[name]["path"]) / "README.md").read_text(encoding="utf-8")
        if card.startswith("---"):
            card = card.split("---", 2)[-1]
        return data_label(card.strip())

    def notice(self) -> str:
        """What the page says about the checkpoints folder: how many, which were skipped, what to do if none."""
        if not self.infos:
            head = (
                f"**No checkpoints found in `{self.root}`.** The PAG explorer, Attack & compare, Robustness and "
                "Models tabs need at least one: train one (`pagdemo train ...`, see the README) or start the app "
                "with `pagdemo app --checkpoints DIR`. The Toy tab works without checkpoints."
            )
        else:
            head = f"{len(self.infos)} checkpoint(s) in `{self.root}`, running on **{self.device.type}**."
        return "\n".join([head] + [f"- skipped: {reason}" for reason in self.skipped])
