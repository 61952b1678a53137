"""One handler per tab: check the request, call pagdemo, shape the answer for Gradio.

`Lab` holds what the handlers share: the checkpoint list, the loaded models (every checkpoint
at most once, ~45 MB each in fp32) and small bounded caches (accuracy curves: 32 settings; toy
runs: 8, in pagdemo.toy.experiment). A handler raises `InputError` (a ValueError naming the field it is
about) for a user mistake; `app.page` turns that into a message next to the control that caused
it, and `api_errors` into a one-line gr.Error for API clients. Radii are in [0, 1] pixel units
here; the page shows linf in /255. The request checks and the gallery are `app.inputs`; how
tables print numbers, `app.tables`.
"""

from __future__ import annotations

import hashlib
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
    eval_default,
    example_class,
    example_labels,
    example_paths,
    folder_gallery,
)
from pagdemo.app.tables import compare_table, eps_text, num, percent_cell, probability_table, toy_cells
from pagdemo.data import DataError
from pagdemo.data.datasets import load_dataset
from pagdemo.data.images import fit_square, pil_to_tensor, read_image, size_warnings
from pagdemo.eval.evaluate import accuracy_vs_eps
from pagdemo.eval.subset import check_classes, data_for_eval
from pagdemo.models import CIFAR10_CLASSES, resolve_device
from pagdemo.records.checkpoints import list_checkpoints, load_checkpoint
from pagdemo.records.files import read_json
from pagdemo.records.report import audit_rows, data_label, display_order, robustness_rows
from pagdemo.threat import eps_grid, picture_eps
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


class Lab:
    """State shared by the handlers: checkpoints (listed at start, loaded on first use) and bounded caches."""

    def __init__(
        self,
        root: str | Path = "checkpoints",
        device: str = "auto",
        toy_config: ToyConfig = ToyConfig(),
        data_dir: str | None = None,
        toy_dir: str | Path = "docs/toy",
    ) -> None:
        self.root, self.device, self.toy_config, self.data_dir = (
            Path(root),
            resolve_device(device),
            toy_config,
            data_dir,
        )
        self.toy_dir = Path(toy_dir)  # where `pagdemo toy --out` saved the results shown before anyone trains
        infos, self.skipped = list_checkpoints(self.root)
        self.infos = sorted(infos, key=display_order)
        self.by_name = {i["name"]: i for i in self.infos}
        run = self.infos[0]["run"] if self.infos else {}
        own = (
            data_for_eval(run, None, data_dir)[1] if run.get("dataset") == "folder" else None
        )  # given, or recorded
        self.gallery = (folder_gallery(own, self.image_size) if own else None) or EXAMPLES_DIR
        self.gallery_name = "CIFAR-10" if self.gallery == EXAMPLES_DIR else Path(own).name
        self.gallery_label = (
            f"{self.gallery_name} test images ({len(example_paths(self.gallery))})"
            if self.gallery != EXAMPLES_DIR
            else "CIFAR-10 test images (3 per class)"
        )
        self.example_labels = example_labels(self.gallery)
        self._models: dict[str, torch.nn.Module] = {}
        self._curves: OrderedDict[tuple, list[tuple[float, float]]] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ shared helpers

    @property
    def names(self) -> list[str]:
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
        if isinstance(names, str):
            names = [names]
        names = list(names or [])
        if not names:
            raise InputError("choose at least one model")
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            raise InputError(f"unknown model(s) {unknown}; choose from {self.names}")
        kinds = {(tuple(self.by_name[n].get("classes") or ()), self.by_name[n]["image_size"]) for n in names}
        if len(kinds) > 1:
            what = "; ".join(
                f"{n}: {len(self.by_name[n].get('classes') or ())} classes at "
                f"{self.by_name[n]['image_size']}x{self.by_name[n]['image_size']}"
                for n in names
            )
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
        self, image: str | bytes | None, size: int, classes: list[str]
    ) -> tuple[torch.Tensor, int | None, str]:
        """The model's view of an upload, its true label when it is a shipped example, and notes in words."""
        if image is None:
            raise InputError("give an image first: upload one, paste one or pick an example", "image")
        try:
            img, notes = read_image(image)
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
        except (ValueError, OSError) as e:
            raise InputError(f"cannot use this image: {e}", "image") from None
        label_name = self.example_labels.get(hashlib.sha256(data).hexdigest())
        label = classes.index(label_name) if label_name in classes else None
        w, h = img.size
        if label_name:
            text = f"A {self.gallery_name} test image, true class **{label_name}**."
        elif (w, h) == (size, size):
            text = f"Your image: {w}x{h}, as the model sees it."
        elif w == h:
            text = f"Your image: {w}x{h}, resized to {size}x{size}."
        else:
            side = min(w, h)
            text = f"Your image: {w}x{h}, centre-cropped to {side}x{side}, then resized to {size}x{size}."
        notes = [text] + [n[0].upper() + n[1:] + "." for n in notes] + size_warnings(w, h, size)
        return pil_to_tensor(fit_square(img, size)), label, " ".join(notes)

    # ------------------------------------------------------------------ handlers, one per tab

    def preview(self, image: str | bytes | None) -> tuple[np.ndarray | None, str]:
        """The image the model actually sees (pixel for pixel, enlarged) and what was done to the upload."""
        if image is None:
            return None, ""
        size = self._size(self.names)
        x, _, notes = self._image(image, size, self.classes)
        return to_uint8(x, max(1, PREVIEW_PX // size)), notes

    def pag_grid(
        self, image: str | bytes | None, models: Any, target: Any, norm: Any, eps: Any, steps: Any
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
        self, image: str | bytes | None, models: Any, norm: Any, eps: Any, steps: Any
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
        return render_compare(x, results, classes, caption, scale=max(1, 128 // size)), compare_table(
            results, classes
        )

    def robustness(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Each checkpoint's recorded clean / PGD-20 accuracy beside the paper's, their settings, and its audits."""
        if not self.infos:
            raise InputError(f"no checkpoints in {self.root}: nothing to compare yet")
        infos = sorted(
            list_checkpoints(self.root)[0], key=display_order
        )  # re-read: `pagdemo eval` may have run
        rows = robustness_rows(infos)
        plot = figure_to_array(robustness_plot(rows))
        table = pd.DataFrame(
            [
                {
                    "model": r["model"],
                    "method": r["method"],
                    "lambda": r["lambda"],
                    **{
                        k: percent_cell(r[k])
                        for k in (
                            "clean %",
                            "PGD linf %",
                            "PGD l2 %",
                            "paper clean %",
                            "paper linf %",
                            "paper l2 %",
                        )
                    },
                    "n": r["n clean"],
                }
                for r in rows
            ]
        )
        settings = pd.DataFrame(
            [
                {
                    "model": r["model"],
                    "linf settings": data_label(r["linf settings"]),
                    "l2 settings": data_label(r["l2 settings"]),
                    "paper source": r["paper source"],
                }
                for r in rows
            ]
        )
        audits = pd.DataFrame(
            [
                {
                    "model": a["model"],
                    "norm": a["norm"],
                    "n": a.get("n"),
                    "PGD-20 %": percent_cell(a.get("PGD-20 %")),
                    "AutoAttack %": percent_cell(a.get("AutoAttack %")),
                    "verdict": a["verdict"],
                    "PAG score": num(a.get("PAG score")),
                    "grad cos": num(a.get("gradient cosine")),
                    "judge": Path(a["judge"]).name if a.get("judge") else "",
                    "device": a.get("device") or "",
                }
                for a in audit_rows(infos)
            ]
        )
        return table, settings, plot, audits

    def _test_subset(
        self, run: dict, n: int, size: int, run_classes: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A fixed class-balanced test subset; for CIFAR-10, the shipped examples when its test set is not here."""
        dataset, data_dir = data_for_eval(run, None, self.data_dir)
        try:
            ds = load_dataset(
                dataset, "test", data_dir=data_dir, limit=n, seed=0, image_size=size, progress=False
            )
            try:
                check_classes(run_classes, ds)
            except DataError as e:
                raise InputError(f"{e}; start the app with --data-dir pointing at it") from None
            return ds.inputs(), ds.labels, f"{len(ds)} {dataset} test images (fixed, class-balanced)"
        except DataError as e:
            if dataset != "cifar10":
                raise InputError(
                    f"the {dataset} test images are not on this machine ({e}); start the app with "
                    "--data-dir pointing at them"
                ) from None
            paths = example_paths()[:n]
            x = torch.stack([pil_to_tensor(fit_square(read_image(p)[0], size)) for p in paths])
            y = torch.tensor([CIFAR10_CLASSES.index(example_class(p)) for p in paths])
            return (
                x,
                y,
                f"only the {len(paths)} example images shipped with the app ({dataset} test data not found)",
            )

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
        x, y, source = self._test_subset(self.by_name[names[0]]["run"], n, size, nets[0].classes)
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, net in zip(names, nets):
            key = (self.by_name[name]["path"], norm, n, steps)
            if key not in self._curves:
                points = []
                for point in accuracy_vs_eps(net, x, y, norm, grid, steps=steps):
                    points.append(point)
                    yield (
                        gr.skip(),
                        self._curve_table({**curves, name: points}, norm, grid),
                        f"{name}: eps {eps_text(point[0], norm)} -> {100 * point[1]:.1f}%",
                    )
                self._curves[key] = points
                while len(self._curves) > CURVE_CACHE:
                    self._curves.popitem(last=False)
            self._curves.move_to_end(key)
            curves[name] = self._curves[key]
        caption = f"PGD-{steps} ({norm}, random start, step 2*eps/{steps}) on {source}"
        yield (
            figure_to_array(curve_plot(curves, norm, caption)),
            self._curve_table(curves, norm, grid),
            "done",
        )

    @staticmethod
    def _curve_table(
        curves: dict[str, list[tuple[float, float]]], norm: str, grid: list[float]
    ) -> pd.DataFrame:
        """Accuracy (%) per radius and model; linf radii in /255."""
        col = (
            {"eps x 255": [f"{e * 255:.0f}" for e in grid]}
            if norm == "linf"
            else {"eps": [f"{e:.3g}" for e in grid]}
        )
        return pd.DataFrame(
            {
                **col,
                **{
                    name: [f"{100 * a:.1f}" for _, a in pts] + [""] * (len(grid) - len(pts))
                    for name, pts in curves.items()
                },
            }
        )

    def toy(self, lam: Any, seed: Any) -> Iterator[tuple[Any, pd.DataFrame, str]]:
        """The 2-D experiment (Sec. 5.1) for one lambda and seed; the saved run's numbers beside it when it has them."""
        try:
            lam, seed = float(lam), int(seed)
        except (TypeError, ValueError):
            raise InputError(f"lambda and seed must be numbers, got {lam!r} and {seed!r}") from None
        if not 0 <= lam <= 10 or not 0 <= seed <= 999:
            raise InputError(f"choose 0 <= lambda <= 10 and a seed from 0 to 999, got {lam:g} and {seed}")
        yield (
            gr.skip(),
            gr.skip(),
            f"training vanilla and PAG for seed {seed}, lambda {lam:g} ({self.toy_time()})...",
        )
        vanilla, pag, metrics = toy_seed(seed, lam, self.toy_config)
        saved = self._saved_toy_seed(seed, lam)
        rows = [
            {"model": f"vanilla (seed {seed})", **toy_cells(metrics["vanilla"])},
            {"model": f"PAG lambda={lam:g} (seed {seed})", **toy_cells(metrics["pag"])},
        ]
        if saved:
            rows += [
                {"model": f"vanilla, saved run (seed {seed})", **toy_cells(saved["vanilla"])},
                {"model": f"PAG, saved run (seed {seed})", **toy_cells(saved["pag"])},
            ]
        same = saved and all(
            abs(saved[m]["pgd_acc"] - metrics[m]["pgd_acc"]) < 1e-9 for m in ("vanilla", "pag")
        )
        note = (
            "the saved run (`pagdemo toy`) gave the same numbers for this seed"
            if same
            else "the saved run gave other numbers for this seed: it ran on another CPU, whose rounding changes a "
            "chaotic 2-D training"
            if saved
            else "not in the saved run (another seed or lambda)"
        )
        fig = seed_figure(self.toy_config, vanilla, pag, metrics)
        yield figure_to_array(fig), pd.DataFrame(rows), f"Trained now: seed {seed}, lambda {lam:g}; {note}."

    def _saved_toy_seed(self, seed: int, lam: float) -> dict | None:
        """The saved run's record of one seed, when it ran this lambda with the app's settings."""
        saved = read_json(self.toy_dir / "results.json", {}) or {}
        if (
            saved.get("config", {}).get("lam") != lam
            or saved.get("config", {}).get("epochs") != self.toy_config.epochs
        ):
            return None
        return next((r for r in saved.get("per_seed", []) if r["seed"] == seed), None)

    def toy_time(self) -> str:
        """How long one seed trains, from the saved run's own record (never a number typed into the code)."""
        saved = read_json(self.toy_dir / "results.json", {}) or {}
        times = [
            r["vanilla"].get("train_s", 0) + r["pag"].get("train_s", 0) for r in saved.get("per_seed", [])
        ]
        return (
            f"the saved run trained each seed in {sum(times) / len(times):.0f} s"
            if times
            else "seconds to a minute"
        )

    def toy_saved(self) -> tuple[str | None, str]:
        """The figure and summary `pagdemo toy` saved, shown before anyone trains, and what they show."""
        figure, results = self.toy_dir / "decision_boundary.png", read_json(self.toy_dir / "results.json")
        if not figure.exists() or not results:
            return None, "Press *Train and draw* to train both models and draw their decision boundaries."
        try:
            cfg = results["config"]
            text = (
                f"**The saved result of `pagdemo toy`** ({len(results['per_seed'])} seeds, lambda {cfg['lam']:g}, "
                f"{cfg['dtype']}; the figure shows seed 0). A single seed is a chaotic training's outcome: the "
                "claim is in the summary.\n\n" + results_table(results)
            )
        except (KeyError, TypeError, IndexError):
            text = f"The saved result in `{self.toy_dir}` is in an older format: rerun `pagdemo toy --out {self.toy_dir}`."
        return str(figure), text

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
        lines = []
        if not self.infos:
            lines.append(
                f"**No checkpoints found in `{self.root}`.** The PAG explorer, Attack & compare, Robustness and "
                "Models tabs need at least one: train one (`pagdemo train ...`, see the README) or start the app "
                "with `pagdemo app --checkpoints DIR`. The Toy tab works without checkpoints."
            )
        else:
            lines.append(
                f"{len(self.infos)} checkpoint(s) in `{self.root}`, running on **{self.device.type}**."
            )
        lines += [f"- skipped: {reason}" for reason in self.skipped]
        return "\n".join(lines)
