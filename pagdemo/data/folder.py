"""Your own data in torchvision's ImageFolder layout (README, "Your own data"): the tree scanned and checked,
each file read through the app's hardening (`pagdemo.data.images`) into a square uint8 image, the split cached
in DIR/.pagdemo-cache/ (~/.cache/pagdemo when DIR is read-only), keyed by each file's path, size and times."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pagdemo.data import DataError
from pagdemo.data.images import FORMATS, ImageError, fit_square, read_image

SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
SIDE_LIMITS = (8, 512)  # the sides --image-size accepts, and the most-common-size default is clipped to
TEST_SPLITS = ("test", "val")
ON_BAD = ("skip", "stop")
CACHE_VERSION = 1  # bump when the decoding rule changes
_SKIP_HINT = "(--on-bad-image skip would leave it out)"
# the command line's words on --dataset folder and --data-dir (README, "Your own data"; docs/training.md)
FOLDER_HELP = "folder: your own images, DIR/train/<class>/* and DIR/test/<class>/* (or val/)"
DATA_DIR_HELP = "the data (default: $PAGDEMO_DATA_DIR, else data/<dataset> or ../shared/data/<dataset>)"
ON_BAD_HELP = "folder: an unreadable file is skipped and counted (skip, default) or stops the run (stop)"


@dataclass(frozen=True)
class Tree:
    """One split of an image folder: class names and, per image, its file and label (sorted: reproducible)."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray


def scan(root: Path, split: str) -> Tree:
    """The split's classes (sub-folders) and image files, refusing a layout that cannot train a classifier."""
    names = ("train",) if split == "train" else TEST_SPLITS  # DIR/val when there is no DIR/test
    folder = next((root / s for s in names if (root / s).is_dir()), None)
    if folder is None:
        want = "train/" if split == "train" else "test/ (or val/)"
        raise DataError(f"{root}: no {want} folder; expected {root}/train/<class>/ and .../test/<class>/")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{folder}: {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a classifier "
            "needs at least 2, one sub-folder per class"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not found:
            raise DataError(f"{folder / name}: an empty class (no {', '.join(sorted(SUFFIXES))} files)")
        files += found
        labels += [label] * len(found)
    return Tree(folder, classes, files, np.asarray(labels, dtype=np.int64))


def check_same_classes(train: Tree, test: Tree) -> None:
    """Train and test must name the same classes, or the labels mean different things."""
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DataError(
            f"{train.root} and {test.root} have different classes (only in {train.root.name}: "
            f"{only_train or '-'}; only in {test.root.name}: {only_test or '-'})"
        )


def pick_side(files: list[Path], image_size: int | None) -> int:
    """--image-size (within SIDE_LIMITS), else the images' most common shorter edge (500 sampled), clipped."""
    lo, hi = SIDE_LIMITS
    if image_size:
        if not lo <= image_size <= hi:
            raise DataError(f"--image-size {image_size} is outside {lo}..{hi}")
        return image_size
    sides = []
    for f in files[:: max(1, len(files) // 500)]:  # headers only; unreadable files are reported when decoded
        with contextlib.suppress(Exception), Image.open(f, formats=FORMATS) as img:
            sides.append(min(img.size))
    side = Counter(sides).most_common(1)[0][0] if sides else 32
    return min(max(side, lo), hi)


def available_bytes() -> int:
    """Memory the machine can still give (MemAvailable; physical memory where /proc is missing)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(n: int, side: int, folder: Path) -> None:
    """Refuse, before decoding anything, a split that would not fit in half the available memory as uint8."""
    need, have = n * 3 * side * side, available_bytes()
    if need > have // 2:
        raise DataError(
            f"{folder}: {n:,} images at {side}x{side} need {need / 2**30:.1f} GiB as uint8, over half of "
            f"the {have / 2**30:.1f} GiB this machine has free; choose a smaller --image-size or --limit"
        )


def _cache_file(tree: Tree, idx: np.ndarray, side: int) -> Path:
    """Where the decoded array of these files at this side lives; the name changes whenever the tree does."""
    h = hashlib.sha256(f"v{CACHE_VERSION} side {side}\n".encode())
    for i in idx:
        st, rel = tree.files[i].stat(), tree.files[i].relative_to(tree.root)
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\n".encode())
    root = tree.root.parent / ".pagdemo-cache"
    if not os.access(tree.root.parent, os.W_OK):
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pagdemo"
    return root / f"{tree.root.name}-{side}px-{h.hexdigest()[:16]}.npz"


def decode(
    tree: Tree, idx: np.ndarray, side: int, on_bad: str = "skip", progress: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (k, 3, side, side) uint8, their indices into the tree, 'path: reason' per skipped file)."""
    if on_bad not in ON_BAD:
        raise ValueError(f"unknown on_bad {on_bad!r}; choose one of {list(ON_BAD)}")
    cache = _cache_file(tree, idx, side)
    cached = _read_cache(cache)
    if cached is not None:
        if cached[2] and on_bad == "stop":  # the cache remembers which files failed, and why
            raise DataError(f"{cached[2][0]} {_SKIP_HINT}")
        return cached
    images, kept, skipped = [], [], []
    # a bar on a terminal only (disable=None); closed and cleared on an error too: the error stays one line
    with tqdm(
        idx, desc=f"decode {tree.root.name}", unit="img", disable=None if progress else True, leave=False
    ) as bar:
        for i in bar:
            try:  # through the app's hardening
                img, _ = read_image(tree.files[i])
                images.append(np.asarray(fit_square(img, side), dtype=np.uint8).transpose(2, 0, 1))
                kept.append(i)
            except (ImageError, OSError) as e:
                if on_bad == "stop":
                    raise DataError(f"{tree.files[i]}: {e} {_SKIP_HINT}") from None
                skipped.append(f"{tree.files[i]}: {e}")
    if not images:
        raise DataError(f"{tree.root}: none of the {len(idx)} files could be read, e.g. {skipped[0]}")
    out = np.stack(images), np.asarray(kept, dtype=np.int64), skipped
    _write_cache(cache, *out)
    return out


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """A cached split, or None when there is none or it is damaged (then it is removed and decoded again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["kept"], json.loads(str(z["skipped"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        path.unlink(missing_ok=True)
        return None


def _write_cache(path: Path, images: np.ndarray, kept: np.ndarray, skipped: list[str]) -> None:
    """Atomically, through a temporary file per process (others may decode at once); failing costs time."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, images=images, kept=kept, skipped=np.asarray(json.dumps(skipped)))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] units: the model's normalization for this data."""
    # exact integer sums in float64, accumulated without a float copy of the images
    n = images.size / 3
    mean = images.sum(axis=(0, 2, 3), dtype=np.float64) / 255 / n
    sq = np.einsum("nchw,nchw->c", images, images, dtype=np.float64) / 255**2 / n
    std = np.sqrt(np.maximum(sq - mean**2, 1e-12))
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]
