"""One handler per tab: check the request, call pagdemo, shape the answer for Gradio.

`Lab` holds what the handlers share (the checkpoint list, loaded models, caches). Every
handler turns a user mistake (a bad image, an unknown model, an out-of-range eps) into a
`gr.Error` with a one-line message; anything unexpected is logged with its traceback and
shown as a short "internal error" so a visitor never sees a stack trace.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np
import pandas as pd
import torch

from pagdemo.checkpoints import list_checkpoints, load_checkpoint
from pagdemo.compare import compare_untargeted, render_compare
from pagdemo.data import CIFAR10_CLASSES, DataError, load_dataset
from pagdemo.evaluate import accuracy_vs_eps, resolve_device
from pagdemo.grid import GridSpec, pag_grid_steps, to_uint8
from pagdemo.images import fit_square, pil_to_tensor, read_image
from pagdemo.plots import curve_plot, figure_to_array, robustness_plot
from pagdemo.report import audit_rows, robustness_rows
from pagdemo.threat import NORMS, eps_grid, eval_eps, picture_eps, picture_eps_max
from pagdemo.toy import ToyConfig, toy_figure

log = logging.getLogger("pagdemo.app")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
ALL_TARGETS = "all classes"
EPS_MAX = {n: picture_eps_max(n) for n in NORMS}
GRID_EPS = {n: picture_eps(n) for n in NORMS}  # large on purpose (the PAG test), as `pagdemo attack`
EVAL_EPS = {n: eval_eps(n, "cifar10") for n in NORMS}
SETTINGS_COLUMNS = ["linf settings", "l2 settings", "paper source"]  # shown in their own, wide table
PREVIEW_SCALE = 8  # the 32x32 input shown at 256x256, pixel for pixel


def user_errors(fn: Callable) -> Callable:
    """Wrap a handler (plain or generator) so errors reach the page as one clear line."""

    def translate(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, ValueError):  # ImageError, CheckpointError, DataError and bad settings
            return gr.Error(str(e))
        log.exception("handler %s failed", fn.__name__)
        return gr.Error(f"internal error ({type(e).__name__}); it has been logged on the server")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise translate(e) from None
        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise translate(e) from None
    return call


def _example_labels() -> dict[str, str]:
    """SHA-256 of each shipped example -> its true class (from the file name, e.g. cat_3543.png)."""
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.stem.rsplit("_", 1)[0] for p in EXAMPLES_DIR.glob("*.png")}


def _display_order(info: dict) -> tuple[int, str]:
    """Vanilla first, then PAG models, then adversarially trained ones, as in the paper's figures."""
    method = info.get("run", {}).get("method")
    return {"vanilla": 0, "adv": 2}.get(method, 1), info["name"]


def example_paths() -> list[str]:
    """The CIFAR-10 test images shipped with the app, three per class."""
    return [str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))]


def _check_eps(norm: str, eps: float) -> float:
    """The components bound eps for the default norm; this bounds it for the chosen one."""
    if norm not in EPS_MAX:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(EPS_MAX)}")
    if not 0 < float(eps) <= EPS_MAX[norm]:
        raise ValueError(f"eps {eps:g} is out of range for {norm}: choose 0 < eps <= {EPS_MAX[norm]:.4g}")
    return float(eps)


def _frame_table(names: list[str], classes: list[str], targets: list[int], probs: np.ndarray) -> pd.DataFrame:
    """p(target) per model and target, rounded for reading."""
    table = pd.DataFrame(np.round(probs.astype(np.float64), 3), columns=[classes[t] for t in targets])
    table.insert(0, "model", names)
    return table


def _compare_table(results: list[dict], classes: list[str]) -> pd.DataFrame:
    """One row per model: predictions and confidences before and after, the verdict, the perturbation's size."""
    return pd.DataFrame([{"model": r["model"], "before": classes[r["pred"]], "conf before %": round(100 * r["conf"], 1),
                          "after": classes[r["adv_pred"]], "conf after %": round(100 * r["adv_conf"], 1),
                          "fooled": r["fooled"], "already wrong": r["already_wrong"],
                          "L2 of perturbation": round(r["l2"], 4), "Linf of perturbation": round(r["linf"], 4)}
                         for r in results])


class Lab:
    """State shared by the handlers: checkpoints (listed at start, loaded on first use) and caches."""

    def __init__(self, root: str | Path = "checkpoints", device: str = "auto", toy_config: ToyConfig = ToyConfig(),
                 data_dir: str | None = None, toy_dir: str | Path = "docs/toy") -> None:
        self.root, self.device, self.toy_config, self.data_dir = Path(root), resolve_device(device), toy_config, data_dir
        self.toy_dir = Path(toy_dir)  # where `pagdemo toy --out` saved the figure shown before anyone trains
        infos, self.skipped = list_checkpoints(self.root)
        self.infos = sorted(infos, key=_display_order)
        self.by_name = {i["name"]: i for i in self.infos}
        self.example_labels = _example_labels()
        self._models: dict[str, torch.nn.Module] = {}
        self._curves: dict[tuple, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ shared helpers

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    @property
    def classes(self) -> list[str]:
        return (self.infos[0].get("classes") if self.infos else None) or CIFAR10_CLASSES

    def _models_for(self, names: list[str] | None) -> tuple[list[str], list[torch.nn.Module]]:
        """Load (once) the chosen checkpoints; they must share classes and input size to share a picture."""
        if not self.infos:
            raise ValueError(f"no checkpoints in {self.root}: train one (see the README) or start with --checkpoints DIR")
        names = list(names or [])
        if not names:
            raise ValueError("choose at least one model")
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; choose from {self.names}")
        infos = [self.by_name[n] for n in names]
        kinds = {(tuple(i.get("classes") or ()), i["image_size"]) for i in infos}
        if len(kinds) > 1:
            raise ValueError("the chosen models were trained on different datasets; choose models of one dataset")
        with self._lock:
            for n in names:
                if n not in self._models:
                    self._models[n] = load_checkpoint(self.by_name[n]["path"], self.device)
        return names, [self._models[n] for n in names]

    def _size(self, names: list[str]) -> int:
        """Input side of the first chosen model (all chosen models share it), 32 when there is none."""
        return self.by_name[names[0]]["image_size"] if names and names[0] in self.by_name else 32

    def _image(self, image: str | bytes | None, size: int, classes: list[str]) -> tuple[torch.Tensor, int | None, str]:
        """The model's view of an upload, its true label when it is a shipped example, and notes."""
        if image is None:
            raise ValueError("give an image first: upload one, paste one or pick an example")
        img, notes = read_image(image)
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        label_name = self.example_labels.get(hashlib.sha256(data).hexdigest())
        label = classes.index(label_name) if label_name in classes else None
        w, h = img.size
        if label_name:
            text = f"CIFAR-10 test image, true class: **{label_name}**."
        elif (w, h) != (size, size):
            text = f"Your image: {w}x{h}, centre-cropped to a square and resized to {size}x{size}."
        else:
            text = f"Your image: {w}x{h}."
        notes = [text] + [n[0].upper() + n[1:] + "." for n in notes]
        return pil_to_tensor(fit_square(img, size)), label, " ".join(notes)

    # ------------------------------------------------------------------ handlers, one per tab

    @user_errors
    def preview(self, image: str | None) -> tuple[np.ndarray | None, str]:
        """The image the model actually sees (pixel for pixel, enlarged) and what was done to the upload."""
        if image is None:
            return None, ""
        size = self._size(self.names)
        x, _, notes = self._image(image, size, self.classes)
        return to_uint8(x, max(1, PREVIEW_SCALE * 32 // size)), notes

    @user_errors
    def pag_grid(self, image: str | None, models: list[str], target: str, norm: str, eps: float,
                 steps: int) -> Iterator[tuple[np.ndarray, pd.DataFrame, str]]:
        """Large-eps targeted PGD toward each class (or one), one row per model, streamed as it forms."""
        eps, steps = _check_eps(norm, eps), int(steps)
        names, nets = self._models_for(models)
        classes = nets[0].classes
        if target != ALL_TARGETS and target not in classes:
            raise ValueError(f"unknown target {target!r}; choose {ALL_TARGETS!r} or one of {classes}")
        targets = list(range(len(classes))) if target == ALL_TARGETS else [classes.index(target)]
        x, _, _ = self._image(image, self._size(names), classes)
        caption = f"targeted PGD-{steps}, {norm} eps={eps:.4g}, step={2 * eps / steps:.3g}"
        spec = GridSpec(names, classes, targets, caption, scale=max(1, 96 // x.shape[-1]))
        start = time.perf_counter()
        for frame in pag_grid_steps(nets, x.to(self.device), spec, norm, eps, steps, min_interval=1.0):
            status = f"step {frame.step}/{frame.steps} after {time.perf_counter() - start:.1f} s on {self.device.type}"
            status += " (done)" if frame.step == steps else ""
            yield frame.image, _frame_table(names, classes, targets, frame.probs), status

    @user_errors
    def compare(self, image: str | None, models: list[str], norm: str, eps: float,
                steps: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Untargeted PGD on one image against each model: before/after, the perturbation, fooled or not."""
        eps, steps = _check_eps(norm, eps), int(steps)
        names, nets = self._models_for(models)
        classes = nets[0].classes
        x, label, _ = self._image(image, self._size(names), classes)
        results = compare_untargeted(nets, names, x, norm, eps, steps, label=label)
        attacked = f"true class {classes[label]}" if label is not None else "each model's own prediction (no true label)"
        caption = (f"untargeted PGD-{steps}, {norm} eps={eps:.4g}, random start, step 2*eps/{steps}; "
                   f"attacked label: {attacked}")
        return render_compare(x, results, classes, caption), _compare_table(results, classes)

    @user_errors
    def robustness(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Each checkpoint's recorded clean / PGD-20 linf / PGD-20 l2 accuracy beside the paper's; their settings;
        and its audits (AutoAttack vs PGD-20, masking verdict, PAG score)."""
        if not self.infos:
            raise ValueError(f"no checkpoints in {self.root}: nothing to compare yet")
        infos = sorted(list_checkpoints(self.root)[0], key=_display_order)  # re-read: `pagdemo eval` may have run
        rows = robustness_rows(infos)
        table, plot = pd.DataFrame(rows), figure_to_array(robustness_plot(rows))
        return (table.drop(columns=SETTINGS_COLUMNS), table[["model"] + SETTINGS_COLUMNS], plot,
                pd.DataFrame(audit_rows(infos)))

    def _test_subset(self, dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A fixed class-balanced test subset, or the shipped examples when the dataset is not on this machine."""
        try:
            ds = load_dataset(dataset, "test", data_dir=self.data_dir, limit=n, seed=0)
            return ds.float(), ds.labels, f"{len(ds)} {dataset} test images (class-balanced, seed 0)"
        except DataError as e:
            if dataset != "cifar10":
                raise
            log.warning("test data unavailable (%s); using the shipped examples", e)
            paths = example_paths()[:n]
            x = torch.stack([pil_to_tensor(read_image(p)[0]) for p in paths])
            y = torch.tensor([CIFAR10_CLASSES.index(Path(p).stem.rsplit("_", 1)[0]) for p in paths])
            return x, y, f"only the {len(paths)} example images shipped with the app ({dataset} test data not found)"

    @user_errors
    def eps_curve(self, models: list[str], norm: str, n: int, steps: int,
                  progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, pd.DataFrame]:
        """Accuracy against eps on a small test subset, computed on demand and cached per setting."""
        if norm not in EPS_MAX:
            raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(EPS_MAX)}")
        names, nets = self._models_for(models)
        n, steps, grid = int(n), int(steps), eps_grid(norm)
        x, y, source = self._test_subset(self.by_name[names[0]]["run"].get("dataset") or "cifar10", n)
        curves, done, total = {}, 0, len(names) * len(grid)
        for name, net in zip(names, nets):
            key = (self.by_name[name]["path"], norm, n, steps)
            if key not in self._curves:
                points = []
                for point in accuracy_vs_eps(net, x, y, norm, grid, steps=steps):
                    points.append(point)
                    done += 1
                    progress(done / total, desc=f"{name}: eps {point[0]:.4g} -> {100 * point[1]:.1f}%")
                self._curves[key] = points
            else:
                done += len(grid)
            curves[name] = self._curves[key]
        caption = f"PGD-{steps} ({norm}, random start, step 2*eps/{steps}) on {source}"
        scale = {"eps x 255": [round(e * 255, 2) for e in grid]} if norm == "linf" else {}
        table = pd.DataFrame({"eps": [round(e, 5) for e in grid], **scale,
                              **{name: [round(100 * a, 2) for _, a in pts] for name, pts in curves.items()}})
        return figure_to_array(curve_plot(curves, norm, caption)), table

    @user_errors
    def toy(self, lam: float, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
        """The 2-D experiment (Sec. 5.1): vanilla vs PAG decision boundaries for one lambda and seed."""
        fig, metrics = toy_figure(int(seed), float(lam), self.toy_config)
        models = (("vanilla", metrics["vanilla"]), (f"PAG lambda={lam:g}", metrics["pag"]))
        table = pd.DataFrame([{"model": name, "clean acc %": round(m["clean_acc"], 1), "PGD acc %": round(m["pgd_acc"], 1),
                               "mean distance to boundary": round(m["boundary_dist"], 2)} for name, m in models])
        return figure_to_array(fig), table

    def toy_precomputed(self) -> tuple[str | None, str]:
        """The figure `pagdemo toy` saved in docs/toy, shown before anyone trains, and what it shows."""
        figure, results = self.toy_dir / "decision_boundary.png", self.toy_dir / "results.json"
        if not figure.exists():
            return None, "Press *Train and draw* to train both models and draw their decision boundaries."
        try:
            lam = json.loads(results.read_text())["config"]["lam"]
            what = f"lambda={lam:g}, seed 0"
        except (OSError, ValueError, KeyError, TypeError):
            what = "settings in docs/toy"
        return str(figure), f"Shown: the saved result of `pagdemo toy` ({what}). Press *Train and draw* for another lambda."

    @user_errors
    def model_card(self, name: str | None) -> str:
        """A checkpoint's model card (README.md, rendered from its config and metrics), without the YAML header."""
        if not self.infos:
            return self.notice()
        if name not in self.by_name:
            raise ValueError(f"unknown model {name!r}; choose from {self.names}")
        card = (Path(self.by_name[name]["path"]) / "README.md").read_text(encoding="utf-8")
        if card.startswith("---"):
            card = card.split("---", 2)[-1]
        return card.strip()

    def notice(self) -> str:
        """What the page says about the checkpoints folder: how many, which were skipped, what to do if none."""
        lines = []
        if not self.infos:
            lines.append(f"**No checkpoints found in `{self.root}`.** The PAG explorer, Attack & compare, Robustness and "
                         "Models tabs need at least one: train one (`pagdemo train ...`, see the README) or start the app "
                         "with `python -m app --checkpoints DIR`. The Toy tab works without checkpoints.")
        else:
            lines.append(f"{len(self.infos)} checkpoint(s) in `{self.root}`, running on **{self.device.type}**.")
        lines += [f"- skipped: {reason}" for reason in self.skipped]
        return "\n".join(lines)
