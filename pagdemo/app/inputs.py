"""What a request brings in: the gallery of test images to pick from, and the numbers to check before anything runs.

A check raises `InputError` naming the field; `app.page` shows it beside the control that caused it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pagdemo.app.errors import InputError
from pagdemo.app.tables import eps_text
from pagdemo.data.images import fit_square, read_image
from pagdemo.threat import NORMS, eval_eps, picture_eps_max

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_STEPS = 100


def example_paths(folder: Path = EXAMPLES_DIR) -> list[str]:
    """The gallery's images: the CIFAR-10 test images shipped with the app (three per class), or a data folder's."""
    return [str(p) for p in sorted(folder.glob("*.png"))]


def example_class(path: str | Path) -> str:
    """A gallery image's true class, from its name: cat_3543.png (shipped), <class>_<n>.png (a data folder's)."""
    return Path(path).stem.rsplit("_", 1)[0]


def example_labels(folder: Path) -> dict[str, str]:
    """SHA-256 of each gallery image -> its true class."""
    return {hashlib.sha256(p.read_bytes()).hexdigest(): example_class(p) for p in folder.glob("*.png")}


def folder_gallery(data_dir: str | Path, side: int, per_class: int = 3, max_total: int = 30) -> Path | None:
    """The first readable test images of each class of an image folder, as PNGs of the model's side in a
    temporary folder (named <class>_<n>.png, so a pick knows its true class); None when it is no image folder."""
    import tempfile

    from pagdemo.data.folder import FolderError, scan

    try:
        tree = scan(Path(data_dir), "test")
    except (FolderError, OSError):
        return None
    out, per = (
        Path(tempfile.mkdtemp(prefix="pagdemo-gallery-")),
        max(1, min(per_class, max_total // len(tree.classes))),
    )
    for label, name in enumerate(tree.classes):
        kept = 0
        for f in (f for f, y in zip(tree.files, tree.labels) if y == label):
            try:
                fit_square(read_image(f)[0], side).save(out / f"{name}_{kept}.png")
            except (ValueError, OSError):
                continue
            kept += 1
            if kept == per:
                break
    return out


def check_threat(norm: Any) -> str:
    """A threat model from the request: one of NORMS."""
    if norm not in NORMS:
        raise InputError(f"unknown threat model {norm!r}; choose one of {list(NORMS)}")
    return norm


def eval_default(norm: str, image_size: int) -> float:
    """Attack & compare's default radius: the evaluation radius at the models' side."""
    return eval_eps(norm, image_size=image_size)


def check_norm_eps(
    norm: Any, eps: Any, image_size: int, default: Callable[[str, int], float]
) -> tuple[str, float]:
    """A threat model and radius from the request (eps None: the norm's default), within the page's range."""
    check_threat(norm)
    if eps is None or eps == "":
        return norm, default(norm, image_size)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number, got {eps!r}") from None
    top = picture_eps_max(norm, image_size)
    if not 0 < eps <= top:
        raise InputError(
            f"eps {eps_text(eps, norm)} is out of range for {norm}: choose 0 < eps <= {eps_text(top, norm)}"
        )
    return norm, eps


def check_count(value: Any, top: int = MAX_STEPS, what: str = "steps") -> int:
    """A count from the request (PGD steps, test images): a whole number from 1 to `top`."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a whole number, got {value!r}") from None
    if not 1 <= count <= top or count != float(value):
        raise InputError(f"{what} must be a whole number from 1 to {top}, got {value!r}")
    return count
