"""Datasets decoded once into (N, 3, H, W) uint8 tensors, and the on-device batch iterator (floats in [0, 1]):
CIFAR-10 and STL-10 (docs/training.md), `synthetic` (made in code, for tests), your `folder` (data.folder)."""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pagdemo.data import DataError, folder
from pagdemo.models import STL10_CLASSES
from pagdemo.records.files import read_sha256sums, sha256

SPLITS = ("train", "test")
_NPZ_KEYS = ("encoded", "offsets", "labels", "classes")
_SYNTHETIC_SIZE = {"train": 1000, "test": 500}  # small: a CPU epoch of PAG training in seconds
_SYNTHETIC_COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.9, 0.9, 0.1),
    "cyan": (0.1, 0.9, 0.9),
    "magenta": (0.9, 0.1, 0.9),
    "orange": (0.95, 0.55, 0.1),
    "purple": (0.5, 0.1, 0.7),
    "white": (0.9, 0.9, 0.9),
    "grey": (0.45, 0.45, 0.45),
}
# looked for relative to the working directory, after $PAGDEMO_DATA_DIR
DATA_ROOTS = ("data", "../shared/data")


@dataclass
class Dataset:
    """Images decoded once; `source` (path and format) is recorded in checkpoints for provenance."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    name: str
    source: str
    stats: tuple[list[float], list[float]] | None = None  # normalize by (mean, std); None: the arch's default
    skipped: list[str] = field(default_factory=list)  # "path: reason" of each file that could not be read

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def side(self) -> int:
        """Pixels per side of the (square) images."""
        return int(self.images.shape[-1])

    def inputs(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Images (all, or those at `idx`) as the models take them: floats in [0, 1]."""
        x = self.images if idx is None else self.images[idx]
        return x.float() / 255


@dataclass(frozen=True)
class _Raw:
    """What a loader found: labels first, so a `limit` subset is chosen before any pixel is decoded."""

    labels: np.ndarray
    classes: list[str]
    source: str
    pixels: Callable[[np.ndarray], np.ndarray]  # sorted indices -> (k, 3, H, W) uint8


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed, class-balanced random subset (the packed files are ordered by class)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    lab = labels[order]
    rank = np.empty(len(lab), dtype=np.int64)  # position of each sample among its class, in random order
    for c in np.unique(lab):
        rank[lab == c] = np.arange(int((lab == c).sum()))
    class_tiebreak = rng.permutation(int(labels.max()) + 1)[lab]  # which classes get the remainder
    return np.sort(order[np.lexsort((class_tiebreak, rank))[:limit]])


def _verify_checksums(files: list[Path]) -> None:
    """Refuse files that differ from the folder's SHA256SUMS: a truncated copy must not train silently."""
    sums = files[0].parent / "SHA256SUMS"
    expected = read_sha256sums(sums) if sums.is_file() else {}
    for f in files:
        if f.name in expected and (digest := sha256(f)) != expected[f.name]:
            raise DataError(f"{f}: SHA-256 {digest[:12]}... differs from {sums} ({expected[f.name][:12]}...)")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """One packed file, checked against the schema of shared/data/README.md."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _NPZ_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a packed image file with keys {list(_NPZ_KEYS)} ({e})") from None
    if len(arrays["offsets"]) != len(arrays["labels"]) + 1:
        raise DataError(f"{path}: {len(arrays['offsets'])} offsets for {len(arrays['labels'])} labels")
    return arrays


def _decode(encoded: np.ndarray, offsets: np.ndarray, idx: np.ndarray, desc: str) -> np.ndarray:
    """The PNG/JPEG images at `idx` as (k, H, W, 3) uint8 (~6k images/s on one core; threads do not help)."""
    images = [
        np.asarray(Image.open(io.BytesIO(encoded[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
        for i in tqdm(idx, desc=desc, unit="img", leave=False, disable=None)  # a bar on a terminal only
    ]
    return np.stack(images) if images else np.empty((0, 32, 32, 3), dtype=np.uint8)


def _cifar10_npz(split: str, root: Path) -> _Raw:
    """The packed files: train-*.npz (or train.npz) and test.npz, all read, only the needed images decoded."""
    pattern = "train*.npz" if split == "train" else "test.npz"
    files = sorted(root.glob(pattern))
    if not files:
        raise DataError(f"{root}: no {pattern} for the {split} split")
    _verify_checksums(files)
    packs = [_read_npz(f) for f in files]
    starts = np.cumsum([0] + [len(p["labels"]) for p in packs])
    fmt = "png" if packs[0]["encoded"][:4].tobytes() == b"\x89PNG" else "jpeg"

    def pixels(idx: np.ndarray) -> np.ndarray:
        parts = [
            _decode(p["encoded"], p["offsets"], idx[(idx >= s) & (idx < e)] - s, f"decode {f.name}")
            for p, f, s, e in zip(packs, files, starts[:-1], starts[1:])
        ]
        return np.concatenate(parts).transpose(0, 3, 1, 2)

    labels = np.concatenate([p["labels"] for p in packs]).astype(np.int64)
    return _Raw(labels, [str(c) for c in packs[0]["classes"]], f"{root} (npz, {fmt})", pixels)


def _unpickle(path: Path) -> dict:
    """torchvision's CIFAR batches are Python pickles by nature; keys come back as bytes."""
    if not path.is_file():
        raise DataError(f"{path}: missing; expected the standard cifar-10-batches-py files")
    d = pickle.loads(path.read_bytes(), encoding="bytes")
    return {k.encode() if isinstance(k, str) else k: v for k, v in d.items()}


def _cifar10_batches(split: str, root: Path) -> _Raw:
    """torchvision's `cifar-10-batches-py`: data_batch_1..5, test_batch, batches.meta."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_unpickle(root / n) for n in names]
    images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    names = _unpickle(root / "batches.meta")[b"label_names"]
    classes = [c.decode() if isinstance(c, bytes) else c for c in names]
    return _Raw(labels, classes, f"{root} (cifar-10-batches-py)", lambda idx: images[idx])


def _cifar10(split: str, root: Path, seed: int, size: int | None) -> _Raw:
    """Accept a folder of .npz files, a folder holding cifar-10-batches-py, or that folder itself."""
    if any(root.glob("*.npz")):
        return _cifar10_npz(split, root)
    if (root / "cifar-10-batches-py").is_dir():
        return _cifar10_batches(split, root / "cifar-10-batches-py")
    if root.name == "cifar-10-batches-py" or (root / "batches.meta").is_file():
        return _cifar10_batches(split, root)
    raise DataError(f"{root}: expected CIFAR-10 .npz files (train-*.npz, test.npz) or cifar-10-batches-py")


def _stl10(split: str, root: Path, seed: int, size: int | None) -> _Raw:
    """torchvision's `stl10_binary` (labelled splits only): 96x96 images stored column-major, labels 1..10."""
    if (root / "stl10_binary").is_dir():
        root = root / "stl10_binary"
    xf, yf = root / f"{split}_X.bin", root / f"{split}_y.bin"
    if not (xf.is_file() and yf.is_file()):
        raise DataError(f"{root}: expected {xf.name} and {yf.name} (a stl10_binary folder or one holding it)")
    labels = np.fromfile(yf, dtype=np.uint8).astype(np.int64) - 1
    x = np.memmap(xf, dtype=np.uint8, mode="r")
    if x.size != len(labels) * 3 * 96 * 96 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{root}: {xf.name} ({x.size} bytes), {yf.name} ({len(labels)} labels, 1..10) clash")
    x = x.reshape(-1, 3, 96, 96)
    names = root / "class_names.txt"
    classes = names.read_text().split() if names.is_file() else STL10_CLASSES
    return _Raw(labels, classes, f"{root} (stl10_binary)", lambda idx: x[idx].transpose(0, 1, 3, 2))


def _synthetic(split: str, root: Path | None, seed: int, size: int | None) -> _Raw:
    """10 learnable classes: a class colour times a class-oriented grating of random phase, plus noise."""
    n = size or _SYNTHETIC_SIZE[split]
    g = torch.Generator().manual_seed(2 * seed + (split == "test"))  # every (seed, split) its own images
    classes, palette = list(_SYNTHETIC_COLOURS), torch.tensor(list(_SYNTHETIC_COLOURS.values()))
    y = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    theta = (y * math.pi / 10).view(-1, 1, 1)  # class prototypes do not depend on the seed
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    wave = torch.sin(2 * math.pi / 8 * (cols * theta.cos() + rows * theta.sin()) + phase)
    noise = 0.08 * torch.randn(n, 3, 32, 32, generator=g)
    img = palette[y].view(n, 3, 1, 1) * (0.55 + 0.35 * wave.unsqueeze(1)) + noise
    pixels = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return _Raw(y.numpy(), classes, f"synthetic(seed={seed}, n={n})", lambda idx: pixels[idx])


# every reader takes (split, root, seed, synthetic size)
DATASETS = {"cifar10": _cifar10, "stl10": _stl10, "synthetic": _synthetic}
DATASET_NAMES = (*DATASETS, "folder")  # folder: decoded by pagdemo.data.folder at the side the model needs


def data_root(name: str, data_dir: str | Path | None = None) -> Path | None:
    """`data_dir`, else the first of $PAGDEMO_DATA_DIR(/name), data/<name>, ../shared/data/<name> found."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if name == "synthetic":
        return None
    env = os.environ.get("PAGDEMO_DATA_DIR")
    candidates = ([Path(env) / name, Path(env)] if env else []) + [Path(root) / name for root in DATA_ROOTS]
    return next((p for p in candidates if p.is_dir()), None)


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    synthetic_size: int | None = None,
    image_size: int | None = None,
    on_bad_image: str = "skip",
    progress: bool = True,
) -> Dataset:
    """A split in memory: `limit` keeps a fixed class-balanced subset; a folder is decoded at `image_size`."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    root = data_root(name, data_dir)
    if name != "synthetic" and root is None:
        where = " or ".join(["$PAGDEMO_DATA_DIR"] + [f"{r}/{name}" for r in DATA_ROOTS])
        raise DataError(f"no {name} data in {where} (relative to the working directory); pass --data-dir")
    if name != "synthetic" and not root.is_dir():
        raise DataError(f"{root}: no such folder; expected the {name} data")
    if name == "folder":
        return _load_folder(split, root, limit, seed, image_size, on_bad_image, progress)
    raw = DATASETS[name](split, root, seed, synthetic_size)
    idx = np.arange(len(raw.labels)) if limit is None else stratified_subset(raw.labels, limit, seed)
    images = torch.from_numpy(np.ascontiguousarray(raw.pixels(idx)))
    if image_size is not None and len(images) and images.shape[-1] != image_size:
        raise DataError(
            f"{name} images are {images.shape[-1]}x{images.shape[-1]}, but the model expects "
            f"{image_size}x{image_size}; evaluate it on the dataset it was trained on"
        )
    labels = torch.from_numpy(raw.labels[idx].astype(np.int64))
    return Dataset(images, labels, list(raw.classes), name, raw.source)


def check_splits(name: str, data_dir: str | Path | None, splits: tuple[str, ...]) -> None:
    """An image folder missing a split the run reads fails before anything is decoded."""
    root = data_root(name, data_dir)
    if name == "folder" and root is not None and root.is_dir():
        for split in splits:
            folder.scan(root, split)


def _load_folder(
    split: str, root: Path, limit: int | None, seed: int, image_size: int | None, on_bad: str, progress: bool
) -> Dataset:
    """An ImageFolder split: checked, sized, estimated, then decoded (once: cached) and described."""
    tree = folder.scan(root, split)
    # before any decoding: labels mean the same in both
    if (root / "train").is_dir() and any((root / s).is_dir() for s in folder.TEST_SPLITS):
        folder.check_same_classes(tree, folder.scan(root, "test" if split == "train" else "train"))
    side = folder.pick_side(tree.files, image_size)
    idx = np.arange(len(tree.labels)) if limit is None else stratified_subset(tree.labels, limit, seed)
    folder.check_memory(len(idx), side, tree.root)
    images, kept, skipped = folder.decode(tree, idx, side, on_bad, progress)
    stats = folder.channel_stats(images) if split == "train" else None
    note = f", {len(skipped)} unreadable file(s) skipped" if skipped else ""
    labels = torch.from_numpy(tree.labels[kept])
    source = f"{root} (image folder, {side}x{side}{note})"
    return Dataset(torch.from_numpy(images), labels, tree.classes, "folder", source, stats, skipped)


def batches(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    device: str | torch.device,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (x in [0, 1], y, indices into ds) on `device`; with world_size > 1, this rank's own shard."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1, 0 <= rank < world_size: {batch_size}, {rank}, {world_size}")
    images, labels = ds.images.to(device), ds.labels.to(device)
    n = len(ds)
    gen_device = generator.device if generator is not None else "cpu"
    order = torch.randperm(n, generator=generator, device=gen_device) if shuffle else torch.arange(n)
    # one permutation on every rank (generators seeded alike), cut in equal strided shards: DDP stays in step
    order = order[: n - n % world_size][rank::world_size].to(device)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield images[idx].float() / 255, labels[idx], idx
