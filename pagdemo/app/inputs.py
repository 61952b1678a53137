"""What a request brings in: the gallery of test images, the upload as sent, and the numbers to check before
anything runs. Events skip Gradio's preprocessing, so the handlers get the values as the page or an API client
sent them; a check raises `InputError` naming what is wrong and its field."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pagdemo.app.errors import InputError
from pagdemo.data import DataError
from pagdemo.data.datasets import load_dataset
from pagdemo.data.folder import scan
from pagdemo.data.images import fit_square, load_image, model_input, read_bytes, read_image
from pagdemo.eval.subset import check_classes, data_for_eval
from pagdemo.models import CIFAR10_CLASSES
from pagdemo.threat import NORMS, eps_text, eval_eps, picture_eps_max

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_STEPS = 100


def example_paths(folder: Path = EXAMPLES_DIR) -> list[str]:
    """The gallery's images: CIFAR-10 test images shipped with the app (3 per class), or a data folder's."""
    return [str(p) for p in sorted(folder.glob("*.png"))]


def example_class(path: str | Path) -> str:
    """A gallery image's true class, from its name: cat_3543.png (shipped), <class>_<n>.png (a folder's)."""
    return Path(path).stem.rsplit("_", 1)[0]


def example_labels(folder: Path) -> dict[str, str]:
    """SHA-256 of each gallery image -> its true class."""
    return {hashlib.sha256(p.read_bytes()).hexdigest(): example_class(p) for p in folder.glob("*.png")}


def gallery(first: dict, data_dir: str | None) -> tuple[Path, str, str]:
    """The gallery (folder, data name, label): an image-folder checkpoint's test images, else CIFAR-10's."""
    run, side = first.get("run", {}), int(first.get("image_size", 32))
    own = data_for_eval(run, None, data_dir)[1] if run.get("dataset") == "folder" else None
    try:
        tree = scan(Path(own), "test") if own else None
    except (DataError, OSError):
        tree = None
    if tree is None:
        return EXAMPLES_DIR, "CIFAR-10", "CIFAR-10 test images (3 per class)"
    # the first 3 readable per class (30 in all at most) at the model's side, named so a pick knows its class
    out, per = Path(tempfile.mkdtemp(prefix="pagdemo-gallery-")), max(1, min(3, 30 // len(tree.classes)))
    kept = Counter()
    for f, y in zip(tree.files, tree.labels):
        if kept[y] < per:
            with contextlib.suppress(ValueError, OSError):
                fit_square(read_image(f)[0], side).save(out / f"{tree.classes[y]}_{kept[y]}.png")
                kept[y] += 1
    return out, Path(own).name, f"{Path(own).name} test images ({kept.total()})"


def check_threat(norm: Any) -> str:
    """A threat model from the request: one of NORMS."""
    if norm not in NORMS:
        raise InputError(f"unknown threat model {norm!r}; choose one of {list(NORMS)}")
    return norm


def eval_default(norm: str, image_size: int) -> float:
    """Attack & compare's default radius: the evaluation radius at the models' side."""
    return eval_eps(norm, image_size=image_size)


def check_norm_eps(norm: Any, eps: Any, image_size: int, default: Callable[[str, int], float]) -> float:
    """A radius from the request for a threat model (None: the norm's default), within the page's range."""
    check_threat(norm)
    if eps is None or eps == "":
        return default(norm, image_size)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number, got {eps!r}") from None
    top = picture_eps_max(norm, image_size)
    if not 0 < eps <= top:
        raise InputError(
            f"eps {eps_text(eps, norm)} is out of range for {norm}: choose 0 < eps <= {eps_text(top, norm)}"
        )
    return eps


def check_count(value: Any, top: int = MAX_STEPS, what: str = "steps") -> int:
    """A count from the request (PGD steps, test images): a whole number from 1 to `top`."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a whole number, got {value!r}") from None
    if not 1 <= count <= top or count != float(value):
        raise InputError(f"{what} must be a whole number from 1 to {top}, got {value!r}")
    return count


def upload(payload: dict | None) -> str | bytes | None:
    """A file's path or a data: URL's bytes, undecoded: data.images checks what Gradio's decoding skips."""
    if payload is None:
        return None
    url = payload.get("url") or ""
    if not url.startswith("data:"):
        return payload.get("path")
    try:
        return base64.b64decode(url.partition(",")[2], validate=True)
    except binascii.Error:
        raise InputError("the data: URL does not hold valid base64", "image") from None


def read_upload(
    payload: dict | None, size: int, known: dict[str, str], gallery: str
) -> tuple[torch.Tensor, str | None, str]:
    """The model's view of an upload, its class if a gallery image (`known`: SHA-256 -> class), and notes."""
    image = upload(payload)
    if image is None:
        raise InputError("give an image first: upload one, paste one or pick an example", "image")
    try:
        data = read_bytes(image)
        img, notes = read_image(data)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot use this image: {e}", "image") from None
    label = known.get(hashlib.sha256(data).hexdigest())
    (w, h), side = img.size, min(img.size)
    if label:
        text = f"A {gallery} test image, true class **{label}**."
    elif (w, h) == (size, size):
        text = f"Your image: {w}x{h}, as the model sees it."
    elif w == h:
        text = f"Your image: {w}x{h}, resized to {size}x{size}."
    else:
        text = f"Your image: {w}x{h}, centre-cropped to {side}x{side}, then resized to {size}x{size}."
    notes = [text] + [n[0].upper() + n[1:] + "." for n in notes]
    if max(w, h) < size // 2:  # a model can barely use a tiny image, or a sliver of a long one
        notes.append(
            f"**Warning:** at {w}x{h} the image holds almost nothing: the model sees it blown up to "
            f"{size}x{size}, {size * size // max(1, w * h)} model pixels for each of its pixels."
        )
    if max(w, h) > 4 * min(w, h):
        long, short = ("wide", "tall") if w > h else ("tall", "wide")
        notes.append(
            f"**Warning:** the image is {max(w, h) / min(w, h):.0f} times as {long} as it is {short}: "
            f"the square crop keeps only {100 * min(w, h) / max(w, h):.0f}% of it."
        )
    return model_input(img, size), label, " ".join(notes)


def curve_subset(
    info: dict, n: int, classes: list[str], data_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A fixed class-balanced subset of a checkpoint's test data (CIFAR-10's: else the app's examples)."""
    dataset, data_dir = data_for_eval(info["run"], None, data_dir)
    size = int(info["image_size"])
    try:
        ds = load_dataset(dataset, "test", data_dir=data_dir, limit=n, image_size=size, progress=False)
    except DataError as e:
        if dataset != "cifar10":
            raise InputError(
                f"the {dataset} test images are not on this machine ({e}); start the app with "
                "--data-dir pointing at them"
            ) from None
        paths = example_paths()[:n]
        x = torch.stack([load_image(p, size) for p in paths])
        y = torch.tensor([CIFAR10_CLASSES.index(example_class(p)) for p in paths])
        source = f"only the {len(paths)} example images shipped with the app ({dataset} test data not found)"
        return x, y, source
    try:
        check_classes(classes, ds)
    except DataError as e:
        raise InputError(f"{e}; start the app with --data-dir pointing at it") from None
    return ds.inputs(), ds.labels, f"{len(ds)} {dataset} test images (fixed, class-balanced)"
